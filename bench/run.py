#!/usr/bin/python3
"""Runs every benchmark of one configuration and writes the table (issue 8).

    bench/run.sh [--embedded | --production] [--quick] [--out DIR]

Each figure stands beside the same machine's limit measured in the same run, as the
ratio ours/limit. Figures are reported, never asserted: a figure short of its aim is
marked "short" in the table and the run still succeeds. Python 3 standard library only.

Embedded (default): the SQLite store in a temporary directory with the settings `serve`
uses (WAL, synchronous=FULL), one `cornershop serve` process.
Production: PostgreSQL + Kafka from `scripts/stack.sh` (CORNERSHOP_TEST_DATABASE_URL and
CORNERSHOP_TEST_KAFKA_BROKERS, or --database-url and --kafka-brokers); every database and
topic it makes is new (a random name) and dropped at the end.

Authentication is on, as `serve` has it by default: the shop is its own issuer, every
`serve` process of one shop gets the same --signing-key-file (a file in the run's
temporary directory), `simulate` mints its admin token with that key, and the script's
own requests to protected routes send an admin token minted once with `cornershop token`.
The cost of one check is measured alone (`cargo bench -p cornershop-bench -- auth`:
Authenticator::verify beside jsonwebtoken's decode without the signature and ring's raw
P-256 verify); the embedded configuration also runs the max-rate lifecycle once more on
a fresh shop with `--auth off`, the baseline for the orders/s with authentication on.
"""

import argparse
import datetime
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
CORNERSHOP = os.path.join(TARGET, "release", "cornershop")


def percentile(ordered, p):
    """The nearest-rank percentile `p` (0 to 1) of an ascending, non-empty list."""
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * p + 0.999999) - 1))]


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(cmd, check=True, capture=True, timeout=None, env=None, cwd=None):
    """Runs a command; returns (exit code, stdout, stderr)."""
    proc = subprocess.run(
        cmd,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited with {proc.returncode}\n{proc.stdout or ''}\n{proc.stderr or ''}"
        )
    return proc.returncode, proc.stdout or "", proc.stderr or ""


def json_lines(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def rand_suffix(n=8):
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))


# ---------------------------------------------------------------- build


def build():
    log("building release binaries (cargo build --release, cargo bench --no-run)")
    run(["cargo", "build", "--release", "-p", "cornershop-server"], capture=False, cwd=REPO)
    _, out, _ = run(
        ["cargo", "bench", "-p", "cornershop-bench", "--no-run", "--message-format=json"],
        cwd=REPO,
    )
    for msg in json_lines(out):
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and \
                msg.get("target", {}).get("kind") == ["bench"]:
            return msg["executable"]
    raise RuntimeError("cargo bench --no-run named no bench executable")


def build_baseline(rev):
    """The `cornershop` binary of an earlier commit (`--baseline-rev`), built in a git
    worktree with the same target directory (its dependencies are already built) and
    copied aside; the caller builds this checkout's afterwards."""
    log(f"building the baseline binary of {rev} (cargo build --release in a worktree)")
    worktree = tempfile.mkdtemp(prefix="cornershop-baseline-")
    run(["git", "-C", REPO, "worktree", "add", "--detach", worktree, rev])
    # The two checkouts' crates share names and artifact files in the one target dir, and
    # cargo judges freshness by times: the workspace's own crates are cleaned before and
    # after, so that each build compiles its own sources (the dependencies stay built).
    ours = ["cargo", "clean", "--release"]
    for crate in ("domain", "store", "app", "messaging", "services", "readmodels", "server",
                  "simulate", "bench"):
        ours += ["-p", f"cornershop-{crate}"]
    env = dict(os.environ, CARGO_TARGET_DIR=TARGET)
    try:
        run(ours, cwd=REPO, env=env)
        run(["cargo", "build", "--release", "-p", "cornershop-server"], capture=False,
            cwd=worktree, env=env)
        exe = os.path.join(tempfile.gettempdir(), f"cornershop-baseline-{rev}")
        shutil.copy2(CORNERSHOP, exe)
    finally:
        run(ours, cwd=REPO, env=env, check=False)
        run(["git", "-C", REPO, "worktree", "remove", "--force", worktree], check=False)
    _, commit, _ = run(["git", "-C", REPO, "rev-parse", "--short", rev])
    return exe, commit.strip()


def bench(exe, *args, timeout=1800):
    _, out, err = run([exe, *args], timeout=timeout)
    return json_lines(out)


def has_simulate():
    code, _, _ = run([CORNERSHOP, "simulate", "--help"], check=False)
    return code == 0


# ---------------------------------------------------------------- authentication


def mint_token(key_file, ttl="4h"):
    """An admin bearer token signed with `key_file` (created when missing), from
    `cornershop token`: what the script's own requests to protected routes send."""
    _, out, _ = run([CORNERSHOP, "token", "--role", "admin", "--sub", "bench",
                     "--ttl", ttl, "--signing-key-file", key_file])
    token = out.strip()
    if token.count(".") != 2:
        raise RuntimeError("cornershop token printed no JWT")
    return token


def get(url, token=None, timeout=10):
    """urlopen with the bearer token, when one is given."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    return urllib.request.urlopen(request, timeout=timeout)


OPEN_ROUTES = ("/health/", "/metrics", "/api/openapi.json", "/.well-known/")


def protected_requests(api_url):
    """Requests the shop has answered on routes that check a token (http_requests_total
    from /metrics, an open route), or None when it cannot be read."""
    try:
        with get(f"{api_url}/metrics") as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    total = 0
    for line in text.splitlines():
        m = re.match(r'http_requests_total\{(.*)\}\s+([\d.e+]+)$', line)
        if m:
            route = re.search(r'route="([^"]*)"', m.group(1))
            if route and not route.group(1).startswith(OPEN_ROUTES):
                total += float(m.group(2))
    return int(total)


# ---------------------------------------------------------------- machine


def machine():
    facts = {"nproc": os.cpu_count(), "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    facts["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    facts["memTotalKiB"] = meminfo("MemTotal")
    _, out, _ = run(["df", "-h", "--output=source,fstype,size,avail", tempfile.gettempdir()],
                    check=False)
    facts["tmpDisk"] = " ".join(out.split("\n")[1].split()) if "\n" in out else ""
    facts["load1"] = os.getloadavg()[0]
    return facts


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_snapshot(ours):
    """CPU seconds so far of every process, grouped: our shop processes (by pid), the
    simulator, PostgreSQL, the Kafka broker, everything else; and of the machine."""
    tick = os.sysconf("SC_CLK_TCK")
    groups = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if int(pid) in ours:
            group = ours[int(pid)]
        elif "cornershop simulate" in cmdline or " simulate --target" in cmdline:
            group = "simulator"
        elif cmdline.startswith("postgres") or "/postgresql/" in cmdline:
            group = "postgresql"
        elif "kafka.Kafka" in cmdline:
            group = "kafka"
        else:
            group = "other (incl. other users' builds and tests)"
        groups[(group, int(pid))] = seconds
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    busy = (sum(values[:8]) - values[3] - values[4]) / tick
    # The simulator starts and ends between two snapshots: it counts as a waited child.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    groups[("simulator", 0)] = children.ru_utime + children.ru_stime
    return time.time(), groups, busy


def cpu_usage(before, after):
    """Cores used per group between two snapshots (processes present in both)."""
    wall = after[0] - before[0]
    usage = {}
    for key, seconds in after[1].items():
        if key in before[1]:
            usage[key[0]] = usage.get(key[0], 0) + (seconds - before[1][key]) / wall
    return {"seconds": round(wall, 1), "machineBusyCores": round((after[2] - before[2]) / wall, 2),
            "cores": {k: round(v, 2) for k, v in sorted(usage.items(), key=lambda kv: -kv[1])}}


# ---------------------------------------------------------------- the shop


class Shop:
    """One `cornershop serve` process on a free port; its log goes to a file. `key_file`:
    the embedded issuer's signing key (--signing-key-file), shared by the processes of
    one shop; None with `--auth off` among `args`."""

    def __init__(self, args, logfile, key_file=None, env=None, exe=None):
        self.logfile = logfile
        self.key_file = key_file
        self.out = open(logfile, "w")
        cmd = [exe or CORNERSHOP, "serve", "--listen", "127.0.0.1:0", "--log-format", "json",
               *args]
        if key_file:
            cmd += ["--signing-key-file", key_file]
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT, env=env)
        self.address = self._wait_listening()
        self._wait_ready()

    def _wait_listening(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cornershop serve exited early; see {self.logfile}")
            with open(self.logfile) as f:
                for line in f:
                    if "cornershop is listening" in line:
                        try:
                            return json.loads(line)["address"]
                        except (json.JSONDecodeError, KeyError):
                            m = re.search(r"address[=\":\s]+([\d.]+:\d+)", line)
                            if m:
                                return m.group(1)
            time.sleep(0.1)
        raise RuntimeError(f"cornershop serve did not start; see {self.logfile}")

    def _wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.address}/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"cornershop at {self.address} never became ready; see {self.logfile}")

    @property
    def url(self):
        return f"http://{self.address}"

    def peak_kib(self):
        return vm_hwm_kib(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def simulate(url, key_file, duration, concurrency, rate=None, poll_interval=None):
    """`cornershop simulate`; it mints its own admin token with `key_file`."""
    cmd = [CORNERSHOP, "simulate", "--target", url, "--duration", duration,
           "--concurrency", str(concurrency), "--json", "--no-progress",
           "--signing-key-file", key_file]
    if rate:
        cmd += ["--rate", str(rate)]
    if poll_interval:
        cmd += ["--poll-interval", poll_interval]
    log(" ".join(cmd[1:]))
    code, out, err = run(cmd, check=False, timeout=600)
    if code != 0:
        raise RuntimeError(f"simulate exited with {code}: {err.strip()[-2000:]}")
    start, end = out.find("{"), out.rfind("}")
    return json.loads(out[start:end + 1])


def drain(api_url, token, quiet=3, timeout=180):
    """Waits until the workflow has caught up: the store's event count unchanged for
    `quiet` polls half a second apart (an admin route: `token`). Returns the seconds
    waited."""
    start, last, same = time.time(), None, 0
    while time.time() - start < timeout:
        try:
            with get(f"{api_url}/api/eventstore/stats", token, timeout=10) as r:
                total = json.load(r).get("totalEvents")
        except (urllib.error.URLError, OSError, ValueError):
            total = None
        same = same + 1 if total is not None and total == last else 0
        if same >= quiet:
            break
        last = total
        time.sleep(0.5)
    return round(time.time() - start, 1)


# The workflow's hops, from one event to the event its consumer's reaction writes, and
# that consumer (None: the next event is written by the same reaction as the first).
STAGES = [
    ("CartCheckedOut", "OrderCreated", "order saga: the order from the checkout", "order-saga"),
    ("OrderCreated", "StockReserved", "inventory service: the first reservation",
     "inventory-service"),
    ("StockReserved", "OrderValidated", "inventory service: the other lines, then validation",
     None),
    ("OrderValidated", "PaymentInitiated", "order saga: the payment", "order-saga"),
    ("PaymentInitiated", "PaymentAuthorized", "payment service: authorization",
     "payment-service"),
    ("PaymentAuthorized", "PaymentCompleted", "payment service: capture", "payment-service"),
    ("PaymentCompleted", "OrderConfirmed", "order saga: the confirmation", "order-saga"),
    ("CartCheckedOut", "OrderConfirmed", "the whole chain, checkout to confirmation", None),
]

# The consumer that keeps the read models.
READ_MODELS = "reporting-service"

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def shop_log_lines(logfiles, since):
    """The JSON lines of the shop's logs written at or after `since` (a datetime)."""
    for logfile in logfiles:
        with open(logfile) as f:
            for line in f:
                if not line.startswith("{"):
                    continue
                try:
                    entry = json.loads(line)
                    at = datetime.datetime.fromisoformat(entry["timestamp"])
                except (ValueError, KeyError):
                    continue
                if at >= since:
                    yield entry


def spans_of_the_run(logfiles, since):
    """What the shop's log lines say about a run since `since`: each consumer's first
    handling of each (correlation id, event type) (its `waited_ms`, from the event's
    timestamp to the start of the handling, and `elapsed_ms`, the handling, the next
    command's append and commit included), the relay's first publication of each
    (`relayed_ms`, from the event's timestamp to the broker's acknowledgement), the read
    models' handling of every event, and each request's handling by route."""
    handled, relayed, read_models, requests = {}, {}, [], {}
    for e in shop_log_lines(logfiles, since):
        message = e.get("message")
        if message == "event handled" and "waited_ms" in e:
            key = (e.get("consumer"), e.get("correlationId"), e.get("eventType"))
            handled.setdefault(key, (e["waited_ms"], e["elapsed_ms"]))
            if e.get("consumer") == READ_MODELS:
                read_models.append(e["waited_ms"] + e["elapsed_ms"])
        elif message == "Event published successfully" and "relayed_ms" in e:
            relayed.setdefault((e.get("correlationId"), e.get("eventType")), e["relayed_ms"])
        elif message == "request handled" and "elapsed_ms" in e:
            route = f"{e.get('method')} {UUID.sub('{id}', e.get('path', ''))}"
            requests.setdefault(route, []).append(e["elapsed_ms"])
    return handled, relayed, read_models, requests


def p50_p99(values):
    ordered = sorted(values)
    return (round(percentile(ordered, 0.50), 1), round(percentile(ordered, 0.99), 1)) \
        if ordered else (None, None)


def head_position(api_url, token):
    with get(f"{api_url}/api/eventstore/stats", token, timeout=30) as r:
        return json.load(r)["headPosition"]


def order_stages(api_url, token, after, case, results, logfiles=(), since=None):
    """Where an order waits: for every business transaction (correlation id) whose events
    are past `after`, the time from each hop's event to the next (their timestamps, taken
    when the command that wrote each was decided), so each figure holds the previous
    append's commit, the delivery to the next consumer (embedded: the head watch; on
    Kafka: the relay, the broker, the consumer's poll) and the reaction up to its
    decision. p50 and p99 per hop; with the shop's `logfiles` since `since`, each hop
    split into its stages (see spans_of_the_run), and the read models' catch-up and the
    requests' handling."""
    first = {}
    while True:
        with get(f"{api_url}/api/eventstore/events?after={after}&limit=1000", token,
                 timeout=60) as r:
            page = json.load(r)
        for e in page["events"]:
            at = datetime.datetime.fromisoformat(e["timestamp"])
            first.setdefault(e["metadata"]["correlationId"], {}).setdefault(e["eventType"], at)
        if page.get("nextAfter") is None:
            break
        after = page["nextAfter"]

    handled, relayed, read_models, requests = spans_of_the_run(logfiles, since) \
        if since else ({}, {}, [], {})
    for start, end, what, consumer in STAGES:
        took, split = [], {"relay": [], "pickUp": [], "reaction": []}
        for correlation, times in first.items():
            if start not in times or end not in times:
                continue
            took.append((times[end] - times[start]).total_seconds() * 1000)
            if (correlation, start) in relayed:
                split["relay"].append(relayed[(correlation, start)])
            if (consumer, correlation, start) in handled:
                waited, elapsed = handled[(consumer, correlation, start)]
                split["pickUp"].append(waited)
                split["reaction"].append(elapsed)
        if took:
            row = {"kind": "stage", "case": case, "from": start, "to": end,
                   "what": what, "orders": len(took)}
            row["p50Ms"], row["p99Ms"] = p50_p99(took)
            for stage, values in split.items():
                if consumer and values:
                    row[f"{stage}P50Ms"], row[f"{stage}P99Ms"] = p50_p99(values)
            results.append(row)
    if read_models:
        p50, p99 = p50_p99(read_models)
        results.append({"kind": "catch-up", "case": case, "events": len(read_models),
                        "p50Ms": p50, "p99Ms": p99})
    for route, took in sorted(requests.items(), key=lambda kv: -len(kv[1])):
        p50, p99 = p50_p99(took)
        results.append({"kind": "request-stage", "case": case, "route": route,
                        "requests": len(took), "p50Ms": p50, "p99Ms": p99})


def stages_table(results):
    """The hops of an order at half rate (see order_stages)."""
    stages = [r for r in results if r.get("kind") == "stage"]
    if not stages:
        return ""
    def pair(r, stage):
        p50, p99 = r.get(f"{stage}P50Ms"), r.get(f"{stage}P99Ms")
        return "—" if p50 is None else f"{fmt(p50)} / {fmt(p99)}"

    lines = ["\nWhere an order waits, at half the max rate: from each event's timestamp to "
             "the next one's (ms, p50 / p99). The stages of a hop, from the shop's log "
             "lines: **relay**, from the first event's timestamp to the broker's "
             "acknowledgement (Kafka only); **pick-up**, from that timestamp to the start of "
             "the consumer's handling (the first event's commit, its way to the consumer, the "
             "consumer's queue; the relay included); **reaction**, the handling (load, "
             "decide, the next event's append and commit)\n",
             "| hop | from → to | orders | hop p50 / p99 | relay | pick-up | reaction |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in stages:
        lines.append(f"| {r['what']} | {r['from']} → {r['to']} | {fmt(r['orders'])} | "
                     f"{fmt(r['p50Ms'])} / {fmt(r['p99Ms'])} | {pair(r, 'relay')} | "
                     f"{pair(r, 'pickUp')} | {pair(r, 'reaction')} |")
    catch_up = [r for r in results if r.get("kind") == "catch-up"]
    for r in catch_up:
        lines.append(f"\nRead-model catch-up, from an event's timestamp to the end of its "
                     f"projection ({READ_MODELS}), {fmt(r['events'])} events: p50 "
                     f"{fmt(r['p50Ms'])} ms, p99 {fmt(r['p99Ms'])} ms.")
    routes = [r for r in results if r.get("kind") == "request-stage"][:8]
    if routes:
        lines += ["\nRequest handling in the shop (its `request handled` lines), the busiest "
                  "routes (ms)\n", "| route | requests | p50 | p99 |", "|---|---:|---:|---:|"]
        for r in routes:
            lines.append(f"| `{r['route']}` | {fmt(r['requests'])} | {fmt(r['p50Ms'])} | "
                         f"{fmt(r['p99Ms'])} |")
    return "\n".join(lines) + "\n"


def lifecycle(shops, api_url, key_file, token, results, opts):
    """Max rate (as many orders as `--concurrency` shoppers complete), then half of it for
    the p99; peak memory of every process after. The simulator's own defaults otherwise
    (its polls back off, and it takes checkout-to-confirmed from the events' timestamps).
    Authentication on: the simulator signs its token with `key_file`, the drain sends
    `token`."""
    ours = {shop.proc.pid: f"cornershop serve ({name})" for name, shop in shops.items()}
    requests_before = protected_requests(api_url)
    before = cpu_snapshot(ours)
    peak = simulate(api_url, key_file, opts.duration, opts.concurrency,
                    poll_interval=opts.max_poll_interval)
    results.append({"kind": "cpu", "case": "max", **cpu_usage(before, cpu_snapshot(ours))})
    requests_after = protected_requests(api_url)
    if requests_before is not None and requests_after is not None:
        # Every one of these carried a token the shop verified.
        peak["checkedRequests"] = requests_after - requests_before
    results.append({"kind": "lifecycle", "case": "max", "auth": "on", **peak})
    # The max-rate run leaves work queued in the consumers; the half-rate run starts on an
    # idle shop, or its latencies would measure the backlog.
    results.append({"kind": "drain", "seconds": drain(api_url, token)})
    half = max(1, round(peak.get("ordersPerSecond", 0) / 2, 1))
    head = head_position(api_url, token)
    before = cpu_snapshot(ours)
    half_started = datetime.datetime.now(datetime.timezone.utc)
    at_half = simulate(api_url, key_file, opts.duration, opts.concurrency, rate=half)
    results.append({"kind": "cpu", "case": "half", **cpu_usage(before, cpu_snapshot(ours))})
    results.append({"kind": "lifecycle", "case": "half", "auth": "on", "rate": half, **at_half})
    drain(api_url, token)
    try:
        order_stages(api_url, token, head, "half", results,
                     [shop.logfile for shop in shops.values()], half_started)
    except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
        log(f"cannot read the events for the stages of an order: {e}")
    memory = {name: shop.peak_kib() for name, shop in shops.items()}
    results.append({"kind": "memory", "processes": memory,
                    "totalKiB": sum(v or 0 for v in memory.values())})


def lifecycle_auth_off(data, logfile, key_file, results, opts):
    """The baseline of the orders/s with authentication on: the same max-rate run
    (concurrency, duration, poll interval) on a fresh shop started with `--auth off`.
    The simulator still signs and sends its token (the same client work); the shop reads
    none."""
    shop = Shop(["--data-dir", data, "--auth", "off"], logfile)
    try:
        ours = {shop.proc.pid: "cornershop serve (--auth off)"}
        before = cpu_snapshot(ours)
        peak = simulate(shop.url, key_file, opts.duration, opts.concurrency,
                        poll_interval=opts.max_poll_interval)
        results.append({"kind": "lifecycle", "case": "max", "auth": "off", **peak})
        results.append({"kind": "cpu", "case": "max-auth-off",
                        **cpu_usage(before, cpu_snapshot(ours))})
    finally:
        shop.stop()


def lifecycle_baseline(data, logfile, key_file, results, opts):
    """The same max-rate run on a fresh shop of the baseline build (`--baseline-rev`):
    the figures before a change, measured in the same run as after it. The simulator is
    this build's (the same client work)."""
    shop = Shop(["--data-dir", data], logfile, key_file=key_file, exe=opts.baseline_exe)
    try:
        ours = {shop.proc.pid: "cornershop serve (baseline)"}
        before = cpu_snapshot(ours)
        peak = simulate(shop.url, key_file, opts.duration, opts.concurrency,
                        poll_interval=opts.max_poll_interval)
        results.append({"kind": "lifecycle", "case": "max", "auth": "on",
                        "build": opts.baseline_commit, **peak})
        results.append({"kind": "cpu", "case": "max-baseline",
                        **cpu_usage(before, cpu_snapshot(ours))})
    finally:
        shop.stop()


# ---------------------------------------------------------------- PostgreSQL and Kafka


def db_url(base, name):
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def psql(url, sql):
    run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql])


def create_db(base, name):
    psql(base, f"CREATE DATABASE {name}")
    return db_url(base, name)


def drop_db(base, name):
    # A connection of ours may take a moment to go; FORCE cannot end another role's
    # session (autovacuum), so a refusal is tried again.
    for attempt in range(10):
        try:
            psql(base, f"DROP DATABASE IF EXISTS {name}" + (" WITH (FORCE)" if attempt % 2 else ""))
            return
        except Exception as e:  # noqa: BLE001 - tidying up must not hide the results
            error = e
            time.sleep(1)
    log(f"could not drop database {name}: {error}")


# The row the store appends (an ItemAddedToCart of bench.rs's shape). A space follows every
# colon inside the JSON: pgbench would take `:name` for one of its variables.
PG_ROW = ("gen_random_uuid(), 'ItemAddedToCart', 'Cart', 'raw-' || :client_id || '-' || :aid, "
          "nextval('raw_version'), 1, now(), "
          "'{\"cartId\": \"raw-cart-0000000000\", \"sku\": \"SKU-0042\", "
          "\"name\": \"Enamel mug, 350 ml\", \"quantity\": 2, \"unitPrice\": \"9.99\"}'::json, "
          "'{\"correlationId\": \"5f0c2b1e-8d4a-4a53-9a4e-0c6f2d1b7e11\", "
          "\"causationId\": \"5f0c2b1e-8d4a-4a53-9a4e-0c6f2d1b7e11\", \"userId\": null, "
          "\"source\": \"CartService\"}'::json, "
          "gen_random_uuid()::text, gen_random_uuid()::text, replace(gen_random_uuid()::text, '-', '')")
PG_COLUMNS = ("event_id, event_type, aggregate_type, aggregate_id, version, schema_version, "
              "occurred_at, data, metadata, correlation_id, causation_id, trace_id")


def pgbench(url, workdir, results, seconds):
    """PostgreSQL's own limit for the same rows: the store's migrations (the same events
    table, columns, indexes and constraints) in a database of its own, plain INSERTs with pgbench,
    one transaction per row or per 100 rows."""
    migrations = os.path.join(REPO, "crates/store/migrations/postgres")
    for name in sorted(n for n in os.listdir(migrations) if n.endswith(".sql")):
        # One transaction per file, as sqlx runs them (0005 locks the events table).
        run(["psql", "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", url, "-f",
             os.path.join(migrations, name)])
    psql(url, "CREATE SEQUENCE raw_version")
    single = os.path.join(workdir, "insert1.sql")
    with open(single, "w") as f:
        f.write("\\set aid random(1, 10000)\n")
        f.write(f"INSERT INTO events ({PG_COLUMNS}) VALUES ({PG_ROW});\n")
    batch = os.path.join(workdir, "insert100.sql")
    with open(batch, "w") as f:
        f.write("\\set aid random(1, 10000)\n")
        f.write(f"INSERT INTO events ({PG_COLUMNS}) SELECT {PG_ROW} FROM generate_series(1, 100);\n")
    # The same row with a pg_notify in its transaction: PostgreSQL takes one database-wide
    # lock while it commits a transaction that notified, which would serialize appends
    # that notified (the store's appends do not: one announcer coalesces the notices).
    notifying = os.path.join(workdir, "insert1-notify.sql")
    with open(notifying, "w") as f:
        f.write("\\set aid random(1, 10000)\nBEGIN;\n")
        f.write(f"INSERT INTO events ({PG_COLUMNS}) VALUES ({PG_ROW});\n")
        f.write("SELECT pg_notify('cornershop_bench', :aid::text);\nEND;\n")
    cases = [("raw insert, 1 row/transaction", single, 1, 1),
             ("raw insert, 100 rows/transaction", batch, 100, 1),
             ("raw insert, 1 row/transaction, 64 clients", single, 1, 64),
             ("raw insert and pg_notify, 1 row/transaction, 64 clients", notifying, 1, 64)]
    for n, (label, script, rows, clients) in enumerate(cases):
        prefix = os.path.join(workdir, f"pgbench-{n}-{rows}-{clients}")
        cmd = ["pgbench", "-n", "-M", "prepared", "-f", script, "-c", str(clients),
               "-j", str(min(clients, 2)), "-T", str(max(1, int(round(seconds)))),
               "-l", "--log-prefix", prefix, url]
        log(" ".join(cmd[:-1]) + " <url>")
        _, out, _ = run(cmd, timeout=600)
        tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
        latencies = []
        for name in os.listdir(workdir):
            if name.startswith(os.path.basename(prefix) + "."):
                with open(os.path.join(workdir, name)) as f:
                    latencies += [int(line.split()[2]) for line in f if line.strip()]
        latencies.sort()

        def pct(p):
            return percentile(latencies, p) / 1000 if latencies else 0

        results.append({"kind": "raw-insert" if script != notifying else "raw-insert-notify",
                        "backend": "postgres", "case": label,
                        "batch": rows, "clients": clients,
                        "transactionsPerSecond": tps, "eventsPerSecond": round(tps * rows, 1),
                        "p50Ms": pct(0.5), "p99Ms": pct(0.99), "transactions": len(latencies)})


def kafka_libs():
    run_dir = os.environ.get("KAFKA_RUN_DIR") or os.path.join(
        os.environ.get("CORNERSHOP_DEPLOY_RUN") or os.path.join(REPO, ".deploy-run"), "kafka")
    libs = os.path.join(run_dir, "libs")
    if not (os.path.isdir(libs) and any(n.startswith("kafka-tools-") for n in os.listdir(libs))):
        run([os.path.join(REPO, "scripts/kafka.sh"), "install"], capture=False)
    return run_dir, libs


def kafka_tool(*args):
    return run([os.path.join(REPO, "scripts/kafka.sh"), "tool", *args], timeout=300)


def producer_performance(brokers, topic, records, size, results):
    """Kafka's own producer benchmark with our producer's settings: acks=all,
    idempotence, linger.ms=5; the record size is our average envelope."""
    run_dir, libs = kafka_libs()
    kafka_tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", brokers, "--create",
               "--topic", topic, "--partitions", "3", "--replication-factor", "1")
    cmd = ["java", "-Xmx512m", "-XX:+UseG1GC",
           f"-Dlog4j2.configurationFile={os.path.join(run_dir, 'log4j2-tools.properties')}",
           "-cp", os.path.join(libs, "*"), "org.apache.kafka.tools.ProducerPerformance",
           "--topic", topic, "--num-records", str(records), "--record-size", str(size),
           "--throughput", "-1", "--producer-props", "acks=all", "enable.idempotence=true",
           "linger.ms=5", f"bootstrap.servers={brokers}"]
    log(" ".join(cmd[cmd.index("org.apache.kafka.tools.ProducerPerformance"):]))
    _, out, _ = run(cmd, timeout=600)
    last = [l for l in out.splitlines() if "records sent" in l][-1]
    m = re.search(r"([\d.]+) records/sec.*?([\d.]+) ms avg latency.*?([\d.]+) ms max latency", last)
    results.append({"kind": "producer-performance", "records": records, "recordSize": size,
                    "eventsPerSecond": float(m.group(1)), "avgLatencyMs": float(m.group(2)),
                    "summary": last.strip()})


def delete_topics(brokers, namespace):
    try:
        kafka_tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", brokers,
                   "--delete", "--if-exists", "--topic", re.escape(namespace) + ".*")
    except Exception as e:  # noqa: BLE001
        log(f"could not delete topics {namespace}*: {e}")


# ---------------------------------------------------------------- the table


def fmt(x, unit=""):
    if x is None:
        return "—"
    if isinstance(x, float) and x < 100:
        s = f"{x:,.2f}" if x < 10 else f"{x:,.1f}"
    else:
        s = f"{x:,.0f}"
    return s + unit


def find(results, kind, **match):
    for r in results:
        if r.get("kind") == kind and all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def table(results, config):
    """Rows: (benchmark, ours, limit, limit's description, ratio, aim)."""
    backend = "sqlite" if config == "embedded" else "postgres"
    rows = []
    raw_single = find(results, "raw-insert", backend=backend, batch=1, clients=1)
    raw_batch = find(results, "raw-insert", backend=backend, batch=100, clients=1)
    raw_64 = find(results, "raw-insert", backend=backend, batch=1, clients=64)
    engine = "SQLite" if backend == "sqlite" else "PostgreSQL (pgbench)"

    def ratio_aim(ratio, minimum):
        if ratio is None:
            return "—"
        return f"≥ {minimum:.0%} of the limit: " + ("met" if ratio >= minimum else "**short**")

    def abs_aim(value, minimum, unit="/s"):
        if value is None:
            return "—"
        return f"≥ {minimum:,}{unit}: " + ("met" if value >= minimum else "**short**")

    for r in [x for x in results if x.get("kind") == "append"]:
        raw = raw_batch if r["batch"] > 1 else (raw_64 if r["clients"] > 1 else raw_single)
        ours = r["eventsPerSecond"]
        limit = raw["eventsPerSecond"] if raw else None
        ratio = ours / limit if limit else None
        if config == "production":
            aim = ratio_aim(ratio, 0.5)
        elif r["batch"] > 1:
            aim = abs_aim(ours, 100_000, " events/s")
        elif r["clients"] == 64:
            aim = abs_aim(ours, 10_000, " events/s")
        else:
            aim = "—"
        rows.append((f"append: {r['case']} (events/s; p99 {fmt(r['p99Ms'])} ms)", fmt(ours),
                     fmt(limit), f"{engine} raw insert, {raw['case'].split(', ', 1)[1]}" if raw else "",
                     ratio, aim))
    notify = find(results, "raw-insert-notify", backend=backend)
    if notify and raw_64:
        rows.append((f"what a pg_notify in every transaction costs: {notify['case']} "
                     f"(events/s; p99 {fmt(notify['p99Ms'])} ms; the store's appends do not "
                     f"notify, one announcer does)", fmt(notify["eventsPerSecond"]),
                     fmt(raw_64["eventsPerSecond"]), f"{engine} raw insert, 1 row/transaction, "
                     "64 clients, without the pg_notify",
                     notify["eventsPerSecond"] / raw_64["eventsPerSecond"], "—"))

    peak = find(results, "lifecycle", case="max", auth="on")
    half = find(results, "lifecycle", case="half", auth="on")
    auth_off = find(results, "lifecycle", case="max", auth="off")
    if peak:
        ops = peak.get("ordersPerSecond")
        epo = peak.get("eventsPerSecond", 0) / ops if ops else None
        limit = raw_64["transactionsPerSecond"] / epo if raw_64 and epo else None
        aim_orders = 1000 if config == "embedded" else 300
        errors = peak.get("errors") or {}
        errors = sum(errors.values()) if isinstance(errors, dict) else errors
        rows.append((f"order lifecycle (authentication on): completed orders/s at max rate, "
                     f"{peak.get('concurrency')} clients ({fmt(peak.get('completedOrders'))} orders, "
                     f"{errors} errors)",
                     fmt(ops), fmt(limit),
                     f"raw 1-row commits/s with 64 clients ÷ {fmt(epo)} events per order",
                     ops / limit if limit else None, abs_aim(ops, aim_orders, " orders/s")))
    if half:
        p99 = half.get("checkoutToConfirmedP99Ms")
        commit = raw_single["p99Ms"] if raw_single else None
        aim = ("≤ 50 ms: " + ("met" if p99 is not None and p99 <= 50 else "**short**")) \
            if config == "embedded" and p99 is not None else "—"
        rows.append((f"order lifecycle (authentication on): checkout-to-confirmed p99 at "
                     f"{fmt(half.get('rate'))} orders/s (half the max; "
                     f"p50 {fmt(half.get('checkoutToConfirmedP50Ms'))} ms; "
                     f"achieved {fmt(half.get('ordersPerSecond'))} orders/s)",
                     fmt(p99, " ms"), fmt(commit, " ms"), "one raw durable commit, p99 (1 client)",
                     p99 / commit if p99 is not None and commit else None, aim))
    cpu_max = find(results, "cpu", case="max")
    if peak and cpu_max and peak.get("completedOrders"):
        # CPU time ÷ completed orders over the max-rate run: other load on the machine
        # moves this far less than it moves a rate. Orders still in flight when the run
        # ends cost CPU in it without being counted, so this errs on the high side.
        done = peak["completedOrders"]

        def ms_per_order(cores):
            return cores * cpu_max["seconds"] * 1000 / done

        cores = cpu_max["cores"]
        shop = ms_per_order(sum(v for k, v in cores.items() if k.startswith("cornershop serve")))
        machine = ms_per_order(cpu_max["machineBusyCores"])
        infra = ms_per_order(sum(cores.get(k, 0) for k in ("postgresql", "kafka")))
        simulator = ms_per_order(cores.get("simulator", 0))
        besides = f"PostgreSQL and Kafka {fmt(infra)} ms, " if config == "production" else ""
        aim = ("≤ 4 ms: " + ("met" if shop <= 4 else "**short**")) if config == "embedded" else "—"
        rows.append((f"CPU per completed order at max rate, the shop's processes (ms; "
                     f"{besides}the simulator {fmt(simulator)} ms; {fmt(done)} orders "
                     f"in {cpu_max['seconds']} s)",
                     fmt(shop, " ms"), fmt(machine, " ms"),
                     "the whole machine's busy CPU per completed order, same run",
                     shop / machine if machine else None, aim))
    if peak and auth_off:
        ops, off = peak.get("ordersPerSecond"), auth_off.get("ordersPerSecond")
        errors = auth_off.get("errors") or {}
        errors = sum(errors.values()) if isinstance(errors, dict) else errors
        checked, done = peak.get("checkedRequests"), peak.get("completedOrders")
        per_order = f"{fmt(checked / done)} checked requests per completed order; " \
            if checked and done else ""
        rows.append((f"order lifecycle, authentication on against off: completed orders/s at max "
                     f"rate, {auth_off.get('concurrency')} clients ({per_order}baseline: "
                     f"{fmt(auth_off.get('completedOrders'))} orders, {errors} errors)",
                     fmt(ops), fmt(off),
                     "the same max-rate run on a fresh shop with `--auth off` (no token checked)",
                     ops / off if ops is not None and off else None, "—"))

    before = next((r for r in results if r.get("kind") == "lifecycle" and r.get("build")), None)
    cpu_before = find(results, "cpu", case="max-baseline")
    if peak and before:
        ops, then = peak.get("ordersPerSecond"), before.get("ordersPerSecond")
        rows.append((f"order lifecycle, this build against {before['build']} (the build "
                     f"before): completed orders/s at max rate, {before.get('concurrency')} "
                     f"clients (baseline: {fmt(before.get('completedOrders'))} orders)",
                     fmt(ops), fmt(then),
                     f"the same max-rate run on a fresh shop of {before['build']}",
                     ops / then if ops is not None and then else None, "—"))
        if cpu_max and cpu_before and peak.get("completedOrders") and before.get("completedOrders"):
            def shop_ms(cpu, done):
                cores = sum(v for k, v in cpu["cores"].items() if k.startswith("cornershop serve"))
                return cores * cpu["seconds"] * 1000 / done
            now_ms = shop_ms(cpu_max, peak["completedOrders"])
            then_ms = shop_ms(cpu_before, before["completedOrders"])
            rows.append((f"CPU per completed order at max rate, this build against "
                         f"{before['build']} (ms)", fmt(now_ms, " ms"), fmt(then_ms, " ms"),
                         f"the same, the shop of {before['build']}", now_ms / then_ms, "—"))

    sealing = find(results, "seal", case="seal-checkout")
    encoding = find(results, "seal", case="encode-checkout")
    opening = find(results, "seal", case="open-checkout")
    first_seal = find(results, "seal", case="seal-new-customer")
    if sealing and encoding:
        for r, what in ((sealing, "sealing a checkout's 7 personal values (key cached)"),
                        (opening, "opening them again (the notification sender, an answer)"),
                        (first_seal, "a new customer's first seal (a data key made, wrapped and "
                                     "stored on SQLite)")):
            if r:
                rows.append((f"{what} (µs per event)", fmt(r["nsPerOp"] / 1000, " µs"),
                             fmt(encoding["nsPerOp"] / 1000, " µs"),
                             "writing the same event's payload as JSON, which every append does",
                             r["nsPerOp"] / encoding["nsPerOp"], "—"))

    verify = find(results, "auth", case="verify")
    unverified = find(results, "auth", case="decode-unverified")
    floor = find(results, "auth", case="ring-p256")

    def each(r):
        return fmt(r["nsPerOp"] / 1000, " µs") if r else "—"

    if verify:
        ours = verify["opsPerSecond"]
        for base, what in ((floor, "ring ECDSA P-256 (ECDSA_P256_SHA256_FIXED) verify of the same "
                                   "signature over its signing input, one task: the crypto floor"),
                           (unverified, "jsonwebtoken decode of the same token with signature "
                                        "validation off, one task: parsing and claim checks only")):
            if base:
                rows.append((f"token check: `Authenticator::verify` of an ES256 token, one task "
                             f"(verifications/s; {each(verify)} each)", fmt(ours),
                             fmt(base["opsPerSecond"]), f"{what} ({each(base)} each)",
                             ours / base["opsPerSecond"] if base["opsPerSecond"] else None, "—"))
    lifecycle_skipped = find(results, "skipped", what="lifecycle")
    if lifecycle_skipped:
        rows.append(("order lifecycle", "not run", "—", lifecycle_skipped["why"], None, "—"))

    rb = find(results, "rebuild")
    gen = find(results, "generate")
    scan = find(results, "scan", case="raw scan")
    if rb:
        limit = scan["eventsPerSecond"] if scan else None
        rows.append((f"projection rebuild, {fmt(rb['events'])} events of {fmt(gen['orders'] if gen else None)} "
                     "orders (events/s)", fmt(rb["eventsPerSecond"]),
                     fmt(limit), "raw scan of the same events table (pages of 2,000)",
                     rb["eventsPerSecond"] / limit if limit else None,
                     abs_aim(rb["eventsPerSecond"], 200_000, " events/s")))

    relay = find(results, "relay")
    perf = find(results, "producer-performance")
    if relay:
        limit = perf["eventsPerSecond"] if perf else None
        ratio = relay["eventsPerSecond"] / limit if limit else None
        rows.append((f"relay to Kafka, {fmt(relay['events'])} events (events/s)", fmt(relay["eventsPerSecond"]),
                     fmt(limit), f"ProducerPerformance, {perf['recordSize']} B records, acks=all, idempotent"
                     if perf else "", ratio, ratio_aim(ratio, 0.5)))

    mem = find(results, "memory")
    if mem:
        total = mem["totalKiB"]
        mem_total = meminfo("MemTotal")
        detail = ", ".join(f"{k} {fmt((v or 0) / 1024)} MiB" for k, v in mem["processes"].items())
        rows.append((f"peak memory of the server under load (VmHWM; {detail})", fmt(total / 1024, " MiB"),
                     fmt(mem_total / 1024, " MiB"), "the machine's memory (MemTotal)",
                     total / mem_total if mem_total else None, "—"))

    lines = ["| benchmark | ours | limit | limit (what it is) | ours/limit | aim |",
             "|---|---:|---:|---|---:|---|"]
    for name, ours, limit, what, ratio, aim in rows:
        r = "—" if ratio is None else (f"{ratio:.3f}" if ratio < 0.1 else f"{ratio:.2f}")
        lines.append(f"| {name} | {ours} | {limit} | {what} | {r} | {aim} |")
    for case, label in (("max", "the max-rate run"), ("half", "the half-rate run"),
                        ("max-auth-off", "the max-rate run with `--auth off`"),
                        ("max-baseline", "the max-rate run of the build before")):
        cpu = find(results, "cpu", case=case)
        if cpu:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu["cores"].items() if v >= 0.01)
            lines.append(f"\nCPU during {label} ({cpu['seconds']} s), in cores of {os.cpu_count()}: "
                         f"machine busy {cpu['machineBusyCores']:.2f}; {parts}.")
    return "\n".join(lines)


def scaling_table(results):
    """Each read and write of the store at each size of the log (median ms), and the ratio
    of the largest size to the smallest (the aim: within 2x)."""
    measured = [r for r in results if r.get("kind") == "scaling"]
    if not measured:
        return ""
    sizes = sorted({r["events"] for r in measured})
    operations = list(dict.fromkeys(r["operation"] for r in measured))
    backend = measured[0]["backend"]
    lines = [f"\nScaling of the event store ({backend}; median of {measured[0]['samples']} timings, ms; "
             "p90 in brackets):\n",
             "| operation | " + " | ".join(f"{fmt(n)} events" for n in sizes)
             + " | largest/smallest | aim |",
             "|---|" + "---:|" * len(sizes) + "---:|---|"]
    for operation in operations:
        cells, medians = [], []
        for n in sizes:
            r = find(results, "scaling", operation=operation, events=n)
            cells.append(f"{r['medianMs']:.2f} ({r['p90Ms']:.2f})" if r else "—")
            medians.append(r["medianMs"] if r else None)
        ratio = medians[-1] / medians[0] if medians[0] and medians[-1] else None
        aim = "—" if ratio is None else ("within 2x: met" if ratio <= 2 else "within 2x: **short**")
        lines.append(f"| {operation} | " + " | ".join(cells)
                     + f" | {'—' if ratio is None else f'{ratio:.2f}'} | {aim} |")
    return "\n".join(lines)


def scaling(exe, opts, results, *backend_args):
    log(f"the store's reads and writes at {opts.scaling_sizes} events")
    results += bench(exe, "scaling", *backend_args, "--sizes", opts.scaling_sizes,
                     "--samples", "21")


# ---------------------------------------------------------------- configurations


def embedded(exe, opts, workdir, results):
    log("event store appends on SQLite (and raw SQLite inserts of the same rows)")
    results += bench(exe, "append", "--backend", "sqlite", "--dir", workdir,
                     "--seconds", str(opts.seconds))
    log(f"projection rebuild of {opts.rebuild_orders} orders (and a raw scan of the same events)")
    results += bench(exe, "rebuild", "--dir", workdir, "--orders", str(opts.rebuild_orders))
    scaling(exe, opts, results, "--backend", "sqlite", "--dir", workdir)
    auth_bench(exe, opts, results)
    seal_bench(exe, opts, results)
    data = os.path.join(workdir, "shop")
    if not has_simulate():
        why = "`cornershop simulate` is not in this build yet"
        log(f"skipping the order lifecycle and peak memory: {why}")
        results.append({"kind": "skipped", "what": "lifecycle", "why": why})
        return
    key_file = os.path.join(workdir, "signing-key.pem")
    token = mint_token(key_file)
    shop = Shop(["--data-dir", data], os.path.join(workdir, "shop.log"), key_file=key_file)
    try:
        lifecycle({"cornershop": shop}, shop.url, key_file, token, results, opts)
    finally:
        shop.stop()
    log("the max-rate order lifecycle again, on a fresh shop with --auth off (the baseline)")
    lifecycle_auth_off(os.path.join(workdir, "shop-auth-off"),
                       os.path.join(workdir, "shop-auth-off.log"), key_file, results, opts)
    if opts.baseline_exe:
        log(f"the max-rate order lifecycle again, on a fresh shop of {opts.baseline_commit} "
            "(the build before)")
        lifecycle_baseline(os.path.join(workdir, "shop-baseline"),
                           os.path.join(workdir, "shop-baseline.log"), key_file, results, opts)


def seal_bench(exe, opts, results):
    log("the cost of sealing personal data: a checkout's seven values sealed and opened, "
        "beside writing its payload as JSON")
    results += bench(exe, "seal", "--seconds", str(opts.seconds))


def auth_bench(exe, opts, results):
    log("the cost of a token check: Authenticator::verify, jsonwebtoken without the "
        "signature, ring's P-256 verify")
    results += bench(exe, "auth", "--seconds", str(opts.seconds))


def production(exe, opts, workdir, results):
    base, brokers = opts.database_url, opts.kafka_brokers
    tag = rand_suffix()
    dbs = {k: f"cs_bench_{tag}_{k}" for k in ("store", "raw", "rebuild", "scaling", "relay", "shop")}
    namespace_relay, namespace_shop = f"bench{tag}relay.", f"bench{tag}shop."
    created = []
    try:
        log("event store appends on PostgreSQL")
        created.append(dbs["store"])
        url = create_db(base, dbs["store"])
        results += bench(exe, "append", "--backend", "postgres", "--database-url", url,
                         "--seconds", str(opts.seconds))
        drop_db(base, dbs["store"])
        log("raw PostgreSQL inserts of the same rows (pgbench)")
        created.append(dbs["raw"])
        pgbench(create_db(base, dbs["raw"]), workdir, results, opts.seconds)
        drop_db(base, dbs["raw"])

        log(f"projection rebuild of {opts.rebuild_orders} orders (and a raw scan of the same events)")
        created.append(dbs["rebuild"])
        results += bench(exe, "rebuild", "--database-url", create_db(base, dbs["rebuild"]),
                         "--orders", str(opts.rebuild_orders))
        drop_db(base, dbs["rebuild"])

        created.append(dbs["scaling"])
        scaling(exe, opts, results, "--backend", "postgres", "--database-url",
                create_db(base, dbs["scaling"]))
        drop_db(base, dbs["scaling"])

        log(f"relay to Kafka: {opts.relay_events} events")
        created.append(dbs["relay"])
        url = create_db(base, dbs["relay"])
        load = bench(exe, "load", "--database-url", url, "--events", str(opts.relay_events))[0]
        results.append(load)
        relay = Shop(["--roles", "relay", "--database-url", url, "--kafka-brokers", brokers,
                      "--kafka-namespace", namespace_relay], os.path.join(workdir, "relay.log"),
                     key_file=os.path.join(workdir, "relay-signing-key.pem"))
        try:
            results += bench(exe, "relay-wait", "--database-url", url,
                             "--events", str(opts.relay_events))
        finally:
            relay.stop()
        drop_db(base, dbs["relay"])
        tools_brokers = getattr(opts, "kafka_plaintext_brokers", brokers)
        producer_performance(tools_brokers, f"{namespace_relay}perf", opts.relay_events,
                             load["avgPayloadBytes"], results)
        delete_topics(tools_brokers, namespace_relay)

        auth_bench(exe, opts, results)
        if not has_simulate():
            why = "`cornershop simulate` is not in this build yet"
            log(f"skipping the order lifecycle and peak memory: {why}")
            results.append({"kind": "skipped", "what": "lifecycle", "why": why})
            return
        created.append(dbs["shop"])
        url = create_db(base, dbs["shop"])
        common = ["--database-url", url, "--kafka-brokers", brokers,
                  "--kafka-namespace", namespace_shop]
        # One signing key for the three processes (the README's layout), and the script's
        # admin token signed with it.
        key_file = os.path.join(workdir, "signing-key.pem")
        token = mint_token(key_file)
        shops = {}
        try:
            # The layout of the README: three processes, two relays (one active by lease).
            for name, roles in (("api,relay", "api,relay"),
                                ("order,inventory,reporting", "order,inventory,reporting"),
                                ("payment,notification,relay", "payment,notification,relay")):
                shops[name] = Shop(["--roles", roles, *common],
                                   os.path.join(workdir, f"shop-{roles.replace(',', '-')}.log"),
                                   key_file=key_file)
            lifecycle(shops, shops["api,relay"].url, key_file, token, results, opts)
        finally:
            for shop in shops.values():
                shop.stop()
    finally:
        for name in created:
            drop_db(base, name)
        delete_topics(getattr(opts, "kafka_plaintext_brokers", brokers), f"bench{tag}")


def stack_env():
    code, out, _ = run([os.path.join(REPO, "scripts/stack.sh"), "env"], check=False)
    env = {}
    for line in out.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip().strip("'\"")
    return env


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--embedded", action="store_true", help="SQLite, one process (default)")
    g.add_argument("--production", action="store_true", help="PostgreSQL + Kafka, a process per role group")
    p.add_argument("--quick", action="store_true", help="short runs, for a smoke check (< 2 min)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results"), help="where the table goes")
    p.add_argument("--database-url", help="PostgreSQL (default: CORNERSHOP_TEST_DATABASE_URL)")
    p.add_argument("--kafka-brokers", help="Kafka (default: CORNERSHOP_TEST_KAFKA_BROKERS)")
    p.add_argument("--concurrency", type=int, default=64, help="simulated clients (default 64)")
    p.add_argument("--max-poll-interval",
                   help="the simulator's --poll-interval in the max-rate run (default: its own)")
    p.add_argument("--baseline-rev",
                   help="also run the max-rate lifecycle on the binary of this earlier commit "
                        "(embedded), for figures before and after a change in one run")
    opts = p.parse_args()
    config = "production" if opts.production else "embedded"
    opts.seconds = 1.0 if opts.quick else 5.0
    opts.duration = "5s" if opts.quick else "30s"
    opts.relay_events = 10_000 if opts.quick else 100_000
    opts.rebuild_orders = 1_000 if opts.quick else 10_000
    opts.scaling_sizes = "1000,10000" if opts.quick else "10000,100000,1000000"
    if config == "production":
        env = stack_env()
        opts.database_url = opts.database_url or os.environ.get("CORNERSHOP_TEST_DATABASE_URL") \
            or env.get("CORNERSHOP_TEST_DATABASE_URL")
        opts.kafka_brokers = opts.kafka_brokers or os.environ.get("CORNERSHOP_TEST_KAFKA_BROKERS") \
            or env.get("CORNERSHOP_TEST_KAFKA_BROKERS")
        if not opts.database_url or not opts.kafka_brokers:
            sys.exit("bench: --production needs PostgreSQL and Kafka: run scripts/stack.sh start")
        # The stack's Kafka is SASL_SSL (SCRAM-SHA-512): the shops get its security settings
        # as CORNERSHOP_KAFKA_* (inherited by every `cornershop serve`); Kafka's own producer
        # benchmark, a baseline of the broker, uses the loopback PLAINTEXT listener.
        for name in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD",
                     "CA_FILE"):
            value = os.environ.get(f"CORNERSHOP_TEST_KAFKA_{name}") or \
                env.get(f"CORNERSHOP_TEST_KAFKA_{name}")
            if value and not os.environ.get(f"CORNERSHOP_KAFKA_{name}"):
                os.environ[f"CORNERSHOP_KAFKA_{name}"] = value
        opts.kafka_plaintext_brokers = os.environ.get("CORNERSHOP_TEST_KAFKA_PLAINTEXT_BROKERS") \
            or env.get("CORNERSHOP_TEST_KAFKA_PLAINTEXT_BROKERS") or opts.kafka_brokers

    started = time.time()
    opts.baseline_exe, opts.baseline_commit = None, None
    if opts.baseline_rev:
        opts.baseline_exe, opts.baseline_commit = build_baseline(opts.baseline_rev)
    exe = build()
    facts = machine()
    results = []
    workdir = tempfile.mkdtemp(prefix=f"cornershop-bench-{config}-")
    try:
        (production if config == "production" else embedded)(exe, opts, workdir, results)
    finally:
        if os.environ.get("BENCH_KEEP_WORKDIR"):
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    facts["load1After"] = os.getloadavg()[0]
    md = table(results, config) + "\n" + stages_table(results) + "\n" + scaling_table(results)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    _, commit, _ = run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], check=False)
    header = (f"# CornerShop benchmarks: {config}{' (quick)' if opts.quick else ''}, {stamp}\n\n"
              f"Machine: {facts['nproc']} cores ({facts.get('cpu', '?')}), "
              f"{facts['memTotalKiB'] / 1048576:.1f} GiB, kernel {facts['kernel']}, "
              f"temp dir on {facts['tmpDisk']}; load average {facts['load1']:.2f} before, "
              f"{facts['load1After']:.2f} after. Commit {commit.strip()}. "
              f"Run time {time.time() - started:.0f} s.\n\n")
    os.makedirs(opts.out, exist_ok=True)
    name = os.path.join(opts.out, f"{stamp}-{config}{'-quick' if opts.quick else ''}")
    with open(name + ".md", "w") as f:
        f.write(header + md + "\n\n<details><summary>raw measurements (JSON lines)</summary>\n\n```\n"
                + "\n".join(json.dumps(r) for r in results) + "\n```\n</details>\n")
    print(header + md)
    log(f"wrote {name}.md")


if __name__ == "__main__":
    main()
