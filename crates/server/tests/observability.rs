//! Observability: the provisioning in `deploy/` checked by Prometheus's own tools and
//! against a real Prometheus (Debian's `prometheus`, `promtool` and
//! `prometheus-postgres-exporter`, installed by `scripts/stack.sh`) scraping the running
//! shop; and every metric name of the seed in `/metrics` after one order, on the
//! embedded default and on Kafka.
//!
//! The tests that need PostgreSQL and Kafka read `CORNERSHOP_TEST_DATABASE_URL` and
//! `CORNERSHOP_TEST_KAFKA_BROKERS` (set by `scripts/stack.sh start`) and fail when they are
//! missing. They pick their backends themselves, whatever `CORNERSHOP_TEST_BACKEND` says.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{cluster, TestApp};
use cornershop_messaging::{Handler, HandlerError};
use cornershop_store::StoredEvent;
use futures::FutureExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::panic::AssertUnwindSafe;

/// The seed's metrics (section 6, "Observability"), by their exact names.
const SEED_METRICS: [&str; 16] = [
    "events_published_total",
    "event_publish_duration_seconds",
    "events_publish_errors_total",
    "events_consumed_total",
    "event_consume_duration_seconds",
    "events_consume_errors_total",
    "events_stored_total",
    "event_store_size",
    "events_replayed_total",
    "notifications_sent_total",
    "notification_send_duration_seconds",
    "notification_send_errors_total",
    "read_models_updated_total",
    "read_model_update_duration_seconds",
    "kafka_consumer_lag",
    "kafka_producer_queue_size",
];

/// What the issue adds to the seed's metrics and one confirmed order shows: HTTP rate and
/// duration, saga outcomes, orders and revenue, projection lag.
const ADDED_METRICS: [&str; 6] = [
    "http_requests_total",
    "http_request_duration_seconds",
    "saga_outcomes_total",
    "orders_total",
    "revenue_cents_total",
    "projection_lag_events",
];

const DASHBOARDS: [&str; 4] = [
    "event-flow.json",
    "performance.json",
    "business-metrics.json",
    "infrastructure.json",
];

/// The production split used here: every role runs in one of the processes, so that every
/// metric has a process that emits it.
const LAYOUT: &[&[&str]] = &[
    &["api", "relay"],
    &["order", "inventory", "reporting"],
    &["payment", "notification", "relay"],
];

/// An SMS provider that refuses every connection (nothing listens on port 1): SMS
/// notifications fail, so the notification error metrics and dead letters are real.
const REFUSING_SMS_URL: &str = "http://127.0.0.1:1/sms";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A Debian tool the tests need; a clear failure when it is not installed.
fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed: run scripts/stack.sh start (it installs Debian's \
             prometheus and prometheus-postgres-exporter), or apt-get install prometheus \
             prometheus-postgres-exporter"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

// ---------------------------------------------------------------------------------------
// promtool

fn promtool(args: &[&str]) -> String {
    let output = std::process::Command::new(tool("promtool"))
        .args(args)
        .current_dir(deploy("prometheus"))
        .stdin(Stdio::null())
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

/// The alert names of alerts.yml (`- alert: Name` lines).
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

/// For each alert of alerts_test.yml: (a case where it fires, a case where it is quiet).
fn tested_alerts(tests: &str) -> BTreeMap<String, (bool, bool)> {
    let mut seen: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("alertname:") else {
            continue;
        };
        let expectation = lines[i + 1..]
            .iter()
            .find_map(|l| l.strip_prefix("exp_alerts:"))
            .unwrap_or_else(|| panic!("alertname {name} without exp_alerts"));
        let entry = seen.entry(name.trim().to_string()).or_default();
        if expectation.trim() == "[]" {
            entry.1 = true;
        } else {
            entry.0 = true;
        }
    }
    seen
}

#[test]
fn promtool_accepts_the_configs_the_rules_and_a_unit_test_of_every_alert() {
    for config in ["prometheus.yml", "prometheus.local.yml"] {
        let out = promtool(&["check", "config", config]);
        assert!(
            out.contains("rule files found"),
            "{config} loads no rules:\n{out}"
        );
    }
    promtool(&["check", "rules", "alerts.yml"]);
    let out = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");

    let alerts = alert_names(&read(&deploy("prometheus/alerts.yml")));
    assert!(alerts.len() >= 9, "too few alerts: {alerts:?}");
    let tested = tested_alerts(&read(&deploy("prometheus/alerts_test.yml")));
    for alert in &alerts {
        match tested.get(alert) {
            Some((true, true)) => {}
            Some((fires, quiet)) => panic!(
                "alert {alert} is not tested both ways in alerts_test.yml (a case where it \
                 fires: {fires}, a case where it stays quiet: {quiet})"
            ),
            None => panic!("alert {alert} has no unit test in alerts_test.yml"),
        }
    }
    for name in tested.keys() {
        assert!(
            alerts.contains(name),
            "alerts_test.yml tests an unknown alert {name}"
        );
    }
}

/// Each alert of alerts.yml with its `runbook_url` annotation, if it has one (the
/// annotation's line between its `- alert:` line and the next).
fn runbook_urls(rules: &str) -> Vec<(String, Option<String>)> {
    let mut alerts: Vec<(String, Option<String>)> = Vec::new();
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert:") {
            alerts.push((name.trim().to_string(), None));
        } else if let Some(url) = line.strip_prefix("runbook_url:") {
            let (name, slot) = alerts
                .last_mut()
                .expect("a runbook_url before the first alert");
            assert!(slot.is_none(), "alert {name} has two runbook_urls");
            *slot = Some(
                url.trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_string(),
            );
        }
    }
    alerts
}

#[test]
fn every_alert_has_a_runbook_that_exists() {
    let rules = read(&deploy("prometheus/alerts.yml"));
    let alerts = runbook_urls(&rules);
    assert_eq!(
        alerts
            .iter()
            .map(|(name, _)| name.clone())
            .collect::<Vec<_>>(),
        alert_names(&rules)
    );
    let index = read(&repo().join("docs/runbooks/README.md"));
    for (alert, url) in &alerts {
        let url = url
            .as_deref()
            .unwrap_or_else(|| panic!("alert {alert} has no annotations.runbook_url"));
        // A path relative to the repository's root, to a runbook in docs/runbooks.
        let file = url
            .strip_prefix("docs/runbooks/")
            .filter(|f| f.ends_with(".md") && !f.contains('/'))
            .unwrap_or_else(|| {
                panic!("alert {alert}: runbook_url {url} is not docs/runbooks/<file>.md")
            });
        let path = repo().join(url);
        assert!(
            path.is_file(),
            "alert {alert}: its runbook {url} does not exist"
        );
        let title = read(&path)
            .lines()
            .find(|l| l.starts_with("# "))
            .unwrap_or_else(|| panic!("{url} has no title"))
            .to_string();
        assert!(
            title.contains(alert.as_str()),
            "{url}: the title {title:?} does not name the alert {alert}"
        );
        assert!(
            index.contains(&format!("]({file})")),
            "docs/runbooks/README.md does not link {file}"
        );
    }
}

#[test]
fn every_runbook_is_in_the_index_and_every_runbook_link_leads_to_one() {
    let dir = repo().join("docs/runbooks");
    let index = read(&dir.join("README.md"));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md") && name != "README.md")
        .collect();
    files.sort();
    assert!(files.contains(&"roll-out-event-version.md".to_string()));
    for file in &files {
        assert!(
            index.contains(&format!("]({file})")),
            "docs/runbooks/README.md does not link {file}"
        );
    }
    // Every link from one runbook (or the index) to another names a file that is there.
    for page in files.iter().map(String::as_str).chain(["README.md"]) {
        let text = read(&dir.join(page));
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap_or("");
            if target.ends_with(".md") && !target.contains('/') {
                assert!(
                    dir.join(target).is_file(),
                    "{page} links {target}, which does not exist"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Grafana provisioning

fn dashboard(file: &str) -> Value {
    let path = deploy(&format!("grafana/dashboards/{file}"));
    serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every (panel title, PromQL expression) of a dashboard, rows included.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_string()));
                }
            }
            if let Some(inner) = panel["panels"].as_array() {
                walk(inner, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        dashboard["panels"]
            .as_array()
            .map_or(&[][..], Vec::as_slice),
        &mut out,
    );
    out
}

#[test]
fn grafana_provisions_the_data_source_and_the_four_dashboards() {
    let datasource = read(&deploy("grafana/provisioning/datasources/prometheus.yaml"));
    assert!(datasource.contains("uid: prometheus"), "{datasource}");
    assert!(datasource.contains("type: prometheus"), "{datasource}");
    let provider = read(&deploy("grafana/provisioning/dashboards/cornershop.yaml"));
    let compose = read(&deploy("compose.yaml"));
    // The provider reads the directory that compose mounts the dashboards into.
    let path = provider
        .lines()
        .find_map(|l| l.trim().strip_prefix("path:"))
        .expect("the provider's path")
        .trim();
    assert!(
        compose.contains(&format!("./grafana/dashboards:{path}")),
        "compose.yaml does not mount deploy/grafana/dashboards at {path}"
    );
    let mut titles = BTreeSet::new();
    let mut uids = BTreeSet::new();
    for file in DASHBOARDS {
        let d = dashboard(file);
        titles.insert(d["title"].as_str().expect("title").to_string());
        uids.insert(d["uid"].as_str().expect("uid").to_string());
        let queries = dashboard_queries(&d);
        assert!(queries.len() >= 5, "{file}: {queries:?}");
        for (title, expr) in &queries {
            // Plain PromQL, so that the tests can evaluate it as it is.
            assert!(
                !expr.contains('$'),
                "{file} / {title}: a Grafana variable in {expr}"
            );
        }
        for panel in d["panels"].as_array().unwrap() {
            if panel["type"] != "row" {
                assert_eq!(
                    panel["datasource"]["uid"], "prometheus",
                    "{file} / {}",
                    panel["title"]
                );
            }
        }
    }
    assert_eq!(uids.len(), 4, "{uids:?}");
    for wanted in [
        "Event Flow",
        "Performance",
        "Business Metrics",
        "Infrastructure",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no {wanted} dashboard in {titles:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// PromQL: the metric names an expression reads

/// The metric names in a PromQL expression: identifiers that are not functions,
/// aggregations, keywords, label names (in braces or grouping lists), strings, numbers or
/// durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let c: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let skip_string = |mut i: usize| {
        let quote = c[i];
        i += 1;
        while i < c.len() && c[i] != quote {
            if c[i] == '\\' {
                i += 1;
            }
            i += 1;
        }
        i + 1
    };
    let skip_until = |mut i: usize, close: char| {
        while i < c.len() && c[i] != close {
            if matches!(c[i], '"' | '\'' | '`') {
                i = skip_string(i);
            } else {
                i += 1;
            }
        }
        i + 1
    };
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if matches!(ch, '"' | '\'' | '`') {
            i = skip_string(i);
        } else if ch == '{' {
            i = skip_until(i, '}');
        } else if ch == '[' {
            i = skip_until(i, ']');
        } else if ch.is_ascii_digit() || ch == '.' {
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let mut j = i;
            while j < c.len() && c[j].is_whitespace() {
                j += 1;
            }
            let call = j < c.len() && c[j] == '(';
            if GROUPING.contains(&word.as_str()) && call {
                i = skip_until(j, ')');
            } else if call
                || AGGREGATIONS.contains(&word.as_str())
                || KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
            {
                // A function, an aggregation or a keyword.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.95, sum by (route, le) (rate(http_request_duration_seconds_bucket{route=~"/a|{b}"}[5m])))"#
        ),
        ["http_request_duration_seconds_bucket"]
    );
    assert_eq!(
        names("sum by (t) (rate(a_total[10m])) / (sum by (t) (rate(a_total[10m])) + (sum by (t) (rate(b_total[10m])) or sum by (t) (rate(a_total[10m])) * 0)) > 0.2"),
        ["a_total", "b_total"]
    );
    assert_eq!(
        names(r#"up{job=~"x|y"} == 0 or g unless g offset 15m"#),
        ["g", "up"]
    );
    assert_eq!(
        names(r#"(sum(rate(h{status=~"5.."}[5m])) or vector(0)) / sum(rate(h[5m]))"#),
        ["h"]
    );
}

// ---------------------------------------------------------------------------------------
// Processes: Prometheus, the PostgreSQL exporter, the shop's binary

/// A child process killed when dropped, with its output in a file.
struct Child {
    name: String,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Child {
    fn spawn(name: &str, command: &mut tokio::process::Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        Self {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits (at most `limit`) until `url` answers 2xx.
    async fn wait_ready(&mut self, url: &str, limit: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(r) = client.get(url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready at {url} after {limit:?}:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// prometheus-postgres-exporter on a free port, reading the PostgreSQL of `database_url`.
async fn start_postgres_exporter(database_url: &str, dir: &Path) -> (Child, u16) {
    let port = free_port();
    let dsn = if database_url.contains("sslmode=") {
        database_url.to_string()
    } else if database_url.contains('?') {
        format!("{database_url}&sslmode=disable")
    } else {
        format!("{database_url}?sslmode=disable")
    };
    let mut exporter = Child::spawn(
        "prometheus-postgres-exporter",
        tokio::process::Command::new(tool("prometheus-postgres-exporter"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .env("DATA_SOURCE_NAME", dsn),
        dir.join("postgres-exporter.log"),
    );
    exporter
        .wait_ready(
            &format!("http://127.0.0.1:{port}/metrics"),
            Duration::from_secs(20),
        )
        .await;
    (exporter, port)
}

/// A scrape target of the generated Prometheus config: `source` names it in the results.
struct Target {
    job: &'static str,
    address: String,
    source: String,
}

/// Debian's Prometheus on a free port, scraping `targets` every second and evaluating
/// deploy/prometheus/alerts.yml; its storage in `dir`.
async fn start_prometheus(targets: &[Target], dir: &Path) -> (Child, String) {
    let port = free_port();
    let mut jobs: BTreeMap<&str, Vec<&Target>> = BTreeMap::new();
    for t in targets {
        jobs.entry(t.job).or_default().push(t);
    }
    let mut config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {:?}\nscrape_configs:\n",
        deploy("prometheus/alerts.yml").display().to_string()
    );
    for (job, targets) in jobs {
        config.push_str(&format!("  - job_name: {job}\n    static_configs:\n"));
        for t in targets {
            config.push_str(&format!(
                "      - targets: [{:?}]\n        labels:\n          source: {:?}\n",
                t.address, t.source
            ));
        }
    }
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, &config).expect("write the Prometheus config");
    let storage = dir.join("tsdb");
    let mut prometheus = Child::spawn(
        "prometheus",
        tokio::process::Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn"),
        dir.join("prometheus.log"),
    );
    let base = format!("http://127.0.0.1:{port}");
    prometheus
        .wait_ready(&format!("{base}/-/ready"), Duration::from_secs(30))
        .await;
    (prometheus, base)
}

/// One instant query through Prometheus's HTTP API: Ok(result) or Err(the error).
async fn query(
    client: &reqwest::Client,
    prometheus: &str,
    expr: &str,
) -> Result<Vec<Value>, String> {
    let response = client
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("not JSON: {e}"))?;
    if body["status"] != "success" {
        return Err(format!("{}: {}", body["errorType"], body["error"]));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

// ---------------------------------------------------------------------------------------
// Load

/// A consumer that cannot handle PaymentFailed (twice, then the event is dead-lettered):
/// real consume errors and dead letters through the consumer machinery.
struct FailingProbe;

#[async_trait]
impl Handler for FailingProbe {
    fn name(&self) -> &'static str {
        "observability-probe"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type == "PaymentFailed"
    }
    async fn handle(&self, _event: &StoredEvent) -> Result<(), HandlerError> {
        Err(HandlerError::Transient(
            "the observability probe never handles PaymentFailed".into(),
        ))
    }
}

/// Stock, paid orders (one leaves a product low on stock, one is shipped and delivered), a
/// declined card, an out-of-stock line, client errors and a replay: every kind of event
/// and request the dashboards show. Waits until the orders are final.
async fn drive_load(app: &TestApp) {
    app.stock("OBS-MUG", "9.99", 100).await;
    app.stock("OBS-LOW", "4.50", 3).await;
    let mut paid = Vec::new();
    for _ in 0..3 {
        paid.push(app.order(&[("OBS-MUG", 1)], "tok_visa").await);
    }
    // Leaves 1 of OBS-LOW, below its lowStockThreshold of 2: LowStockAlert.
    paid.push(app.order(&[("OBS-LOW", 2)], "tok_visa").await);
    let declined = app.order(&[("OBS-MUG", 2)], "tok_chargeDeclined").await;
    let short = app.order(&[("OBS-LOW", 5)], "tok_visa").await;
    for id in &paid {
        app.wait_for_order(id, &["Confirmed"]).await;
    }
    for id in [&declined, &short] {
        app.wait_for_order(id, &["Cancelled"]).await;
    }
    let shipped = &paid[0];
    let r = app
        .post(
            &format!("/api/orders/{shipped}/ship"),
            &json!({"carrier": "DHL"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "ship");
    let r = app
        .post(&format!("/api/orders/{shipped}/deliver"), &json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "deliver");
    // 4xx for the HTTP panels.
    let r = app.get("/api/orders/no-such-order").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app
        .put("/api/inventory/OBS-MUG", &json!({"quantity": -1}))
        .await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = app
        .get(&format!("/api/eventstore/replay/Order/{shipped}"))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "replay");
}

/// Flags of the production processes beyond the default workflow settings (which
/// `cluster::start_shop` passes already).
fn panic_text(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn kafka_flags() -> Vec<String> {
    vec![
        format!("--sms-url={REFUSING_SMS_URL}"),
        "--notification-max-attempts=1".to_string(),
    ]
}

// ---------------------------------------------------------------------------------------
// The live test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_running_shop_and_every_dashboard_and_alert_query_works() {
    let started = Instant::now();
    cluster::required_env(cluster::DATABASE_ENV);
    cluster::required_env(cluster::BROKERS_ENV);
    let dir = tempfile::tempdir().expect("temp dir");

    // The embedded default, in this process, with a consumer that fails and a refusing
    // SMS provider; and the production path on PostgreSQL + Kafka in separate processes.
    let embedded = common::spawn_app_with(
        |args| {
            args.notifications.sms_url = Some(REFUSING_SMS_URL.to_string());
            args.notifications.notification_max_attempts = 1;
            args.workflow.consumer_max_attempts = 2;
            args.workflow.consumer_retry_delay = Duration::from_millis(10).into();
        },
        vec![Arc::new(FailingProbe)],
    )
    .await;
    assert!(
        embedded.cluster.is_none(),
        "unset CORNERSHOP_TEST_BACKEND: this test runs both backends itself"
    );
    let (kafka_app, kafka) = cluster::start_shop(LAYOUT, &kafka_flags()).await;
    let (_exporter, exporter_port) = start_postgres_exporter(&kafka.database_url, dir.path()).await;

    let mut targets = vec![
        Target {
            job: "cornershop",
            address: embedded.base.trim_start_matches("http://").to_string(),
            source: "embedded".into(),
        },
        Target {
            job: "postgres",
            address: format!("127.0.0.1:{exporter_port}"),
            source: "postgres-exporter".into(),
        },
    ];
    for p in &kafka.processes {
        targets.push(Target {
            job: "cornershop",
            address: format!("127.0.0.1:{}", p.port),
            source: format!("kafka:{}", p.name),
        });
    }
    let (_prometheus, prometheus) = start_prometheus(&targets, dir.path()).await;
    let client = reqwest::Client::new();
    // Prometheus scrapes a few seconds after it is ready (target discovery): the load
    // starts once every target has been scraped, so that rates see it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let up = query(&client, &prometheus, "up == 1")
            .await
            .unwrap_or_default();
        if up.len() == targets.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus scrapes only {} of {} targets: {up:?}",
            up.len(),
            targets.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("[{:?}] shop, exporter and Prometheus up", started.elapsed());

    let (on_embedded, on_kafka) = tokio::join!(
        AssertUnwindSafe(drive_load(&embedded)).catch_unwind(),
        AssertUnwindSafe(drive_load(&kafka_app)).catch_unwind()
    );
    if let Err(e) = on_kafka {
        panic!(
            "the load on PostgreSQL + Kafka failed: {}\n{}",
            panic_text(&e),
            kafka.log_tails(30)
        );
    }
    if let Err(e) = on_embedded {
        panic!(
            "the load on the embedded default failed: {}",
            panic_text(&e)
        );
    }
    eprintln!("[{:?}] load done", started.elapsed());

    // Every dashboard query, and what it reads.
    let mut dashboard_exprs: Vec<(String, String)> = Vec::new();
    for file in DASHBOARDS {
        for (panel, expr) in dashboard_queries(&dashboard(file)) {
            dashboard_exprs.push((format!("{file} / {panel}"), expr));
        }
    }

    // Prometheus loaded every alert of alerts.yml.
    let rules: Value = client
        .get(format!("{prometheus}/api/v1/rules"))
        .send()
        .await
        .expect("rules API")
        .json()
        .await
        .expect("rules JSON");
    let loaded: Vec<Value> = rules["data"]["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    let alerts = alert_names(&read(&deploy("prometheus/alerts.yml")));
    let loaded_names: Vec<&str> = loaded.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(loaded_names, alerts, "the alerts Prometheus loaded");
    let alert_exprs: Vec<(String, String)> = loaded
        .iter()
        .map(|r| {
            (
                format!("alert {}", r["name"].as_str().unwrap()),
                r["query"].as_str().expect("rule query").to_string(),
            )
        })
        .collect();

    let mut metrics: BTreeSet<String> = BTreeSet::new();
    for (_, expr) in dashboard_exprs.iter().chain(&alert_exprs) {
        metrics.extend(metric_names(expr));
    }

    // Scrapes every second: wait until every dashboard query has data and every metric a
    // query reads has series (the store-read gauges refresh every 10 s, Kafka lag too).
    let deadline = Instant::now() + Duration::from_secs(45);
    let (failures, empty, absent) = loop {
        let mut failures = Vec::new();
        let mut empty = Vec::new();
        for (name, expr) in dashboard_exprs.iter().chain(&alert_exprs) {
            match query(&client, &prometheus, expr).await {
                Err(e) => failures.push(format!("{name}: {expr}\n    {e}")),
                Ok(result) if result.is_empty() && !name.starts_with("alert ") => {
                    empty.push(format!("{name}: {expr}"))
                }
                Ok(_) => {}
            }
        }
        let mut absent = Vec::new();
        for metric in &metrics {
            let expr = format!("count({{__name__=\"{metric}\"}})");
            if query(&client, &prometheus, &expr)
                .await
                .unwrap_or_default()
                .is_empty()
            {
                absent.push(metric.clone());
            }
        }
        if (failures.is_empty() && empty.is_empty() && absent.is_empty())
            || Instant::now() > deadline
        {
            break (failures, empty, absent);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    // Which process provides each metric (printed: `--nocapture` shows it).
    let mut sources: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for metric in &metrics {
        let expr = format!("count by (source) ({{__name__=\"{metric}\"}})");
        let result = query(&client, &prometheus, &expr).await.unwrap_or_default();
        let mut from: Vec<String> = result
            .iter()
            .filter_map(|s| s["metric"]["source"].as_str().map(str::to_string))
            .collect();
        from.sort();
        sources.insert(metric.clone(), from);
    }
    eprintln!("metric -> the scrape targets that expose it:");
    for (metric, from) in &sources {
        eprintln!("  {metric}: {}", from.join(", "));
    }
    // Queries whose data is all zero (or NaN) are reported, not failed.
    for (name, expr) in &dashboard_exprs {
        let result = query(&client, &prometheus, expr).await.unwrap_or_default();
        let nonzero = result.iter().any(|s| {
            s["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v != 0.0 && !v.is_nan())
        });
        let needs: BTreeSet<String> = metric_names(expr)
            .iter()
            .flat_map(|m| sources.get(m).cloned().unwrap_or_default())
            .map(|s| s.split(':').next().unwrap_or("").to_string())
            .collect();
        eprintln!(
            "  {} series{} [{}] {name}",
            result.len(),
            if nonzero { "" } else { " (all zero)" },
            needs.into_iter().collect::<Vec<_>>().join("+")
        );
    }

    assert!(
        failures.is_empty(),
        "queries Prometheus refuses:\n{}",
        failures.join("\n")
    );
    assert!(
        absent.is_empty(),
        "metrics the dashboards or alerts read that no scrape target exposes: {absent:?}"
    );
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );

    // Every rule was evaluated without error.
    let rules: Value = client
        .get(format!("{prometheus}/api/v1/rules"))
        .send()
        .await
        .expect("rules API")
        .json()
        .await
        .expect("rules JSON");
    for group in rules["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(
                rule["health"], "ok",
                "alert {} evaluates with an error: {}",
                rule["name"], rule["lastError"]
            );
        }
    }
    eprintln!("[{:?}] done", started.elapsed());
    drop(kafka);
}

// ---------------------------------------------------------------------------------------
// Every seed metric after one order

/// The metric names in a Prometheus text exposition, with their types.
fn exposed(text: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                names.insert(name.to_string(), kind.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| names.get(*b).is_some_and(|k| k == "histogram"))
                .unwrap_or(name);
            names
                .entry(base.to_string())
                .or_insert_with(|| "untyped".to_string());
        }
    }
    names
}

async fn scrape(client: &reqwest::Client, base: &str) -> BTreeMap<String, String> {
    let response = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {base}/metrics: {e}"));
    assert_eq!(response.status(), StatusCode::OK, "GET {base}/metrics");
    exposed(&response.text().await.expect("metrics text"))
}

/// Scrapes every process until every seed metric is exposed by one of them (at most
/// `limit`); then checks each one's type (Prometheus naming: `_total` counters,
/// `_seconds` histograms, gauges otherwise).
async fn assert_every_seed_metric(processes: &[(String, String)], limit: Duration) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + limit;
    loop {
        let mut union: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (name, base) in processes {
            for (metric, kind) in scrape(&client, base).await {
                union.entry(metric).or_default().insert(name.clone(), kind);
            }
        }
        let missing: Vec<&str> = SEED_METRICS
            .iter()
            .chain(&ADDED_METRICS)
            .copied()
            .filter(|m| !union.contains_key(*m))
            .collect();
        if missing.is_empty() {
            for metric in SEED_METRICS.iter().chain(&ADDED_METRICS) {
                let want = if metric.ends_with("_total") {
                    "counter"
                } else if metric.ends_with("_seconds") {
                    "histogram"
                } else {
                    "gauge"
                };
                for (process, kind) in &union[*metric] {
                    assert_eq!(kind, want, "{metric} on {process}");
                }
            }
            return;
        }
        if Instant::now() > deadline {
            let present: Vec<String> = SEED_METRICS
                .iter()
                .chain(&ADDED_METRICS)
                .filter_map(|m| {
                    union.get(*m).map(|by| {
                        format!(
                            "{m} ({})",
                            by.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    })
                })
                .collect();
            panic!(
                "seed metrics missing from /metrics of every process after {limit:?}: \
                 {missing:?}\npresent: {present:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One order through a shop's HTTP API (stock, cart, item, checkout, wait until
/// Confirmed), without the in-process helpers.
async fn one_order(base: &str, client: &reqwest::Client) {
    let ok = |r: reqwest::Response, what: &str| {
        assert!(r.status().is_success(), "{what}: {}", r.status());
        r
    };
    ok(
        client
            .put(format!("{base}/api/inventory/OBS-ONE"))
            .json(&json!({"name": "One", "unitPrice": "3.00", "quantity": 10}))
            .send()
            .await
            .expect("stock"),
        "stock",
    );
    let cart: Value = ok(
        client
            .post(format!("{base}/api/carts"))
            .json(&json!({"customerId": "cust-obs"}))
            .send()
            .await
            .expect("cart"),
        "cart",
    )
    .json()
    .await
    .unwrap();
    let cart = cart["cartId"].as_str().expect("cartId");
    ok(
        client
            .post(format!("{base}/api/carts/{cart}/items"))
            .json(&json!({"sku": "OBS-ONE", "quantity": 1}))
            .send()
            .await
            .expect("item"),
        "item",
    );
    let order: Value = ok(
        client
            .post(format!("{base}/api/carts/{cart}/checkout"))
            .json(
                &json!({"paymentToken": "tok_visa", "shippingAddress": common::address(),
                          "email": "ada@example.com", "phone": "+44 20 7946 0000"}),
            )
            .send()
            .await
            .expect("checkout"),
        "checkout",
    )
    .json()
    .await
    .unwrap();
    let order = order["orderId"].as_str().expect("orderId");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client
            .get(format!("{base}/api/orders/{order}"))
            .send()
            .await
            .expect("order");
        if r.status() == StatusCode::OK {
            let view: Value = r.json().await.unwrap();
            if view["status"] == "Confirmed" {
                return;
            }
        }
        assert!(Instant::now() < deadline, "order {order} never confirmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seed_metric_is_exposed_after_one_order_on_the_embedded_default() {
    // The real binary in its own process: this test binary's in-process shops share one
    // metrics recorder, which would mix other tests' metrics in.
    let dir = tempfile::tempdir().expect("temp dir");
    let shop = cluster::Process::start(
        "embedded",
        vec![format!("--data-dir={}", dir.path().join("data").display())],
        dir.path().join("shop.log"),
    )
    .await;
    let base = shop.base();
    one_order(&base, &shop.client()).await;
    assert_every_seed_metric(
        &[("embedded".to_string(), base.clone())],
        Duration::from_secs(15),
    )
    .await;

    // The business figures count what happened: one order of one OBS-ONE at 3.00.
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let sample = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
    };
    assert_eq!(sample("revenue_cents_total "), 300.0);
    assert_eq!(sample("refunds_cents_total "), 0.0);
    assert_eq!(sample(r#"orders_total{status="created"} "#), 1.0);
    assert_eq!(sample(r#"orders_total{status="confirmed"} "#), 1.0);
    assert_eq!(sample(r#"orders_total{status="cancelled"} "#), 0.0);
    assert_eq!(
        sample(r#"saga_outcomes_total{saga="order",outcome="confirmed",reason="paid"} "#),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seed_metric_is_exposed_after_one_order_on_kafka() {
    let (app, kafka) = cluster::start_shop(LAYOUT, &[]).await;
    one_order(&app.base, &app.client).await;
    let processes: Vec<(String, String)> = kafka
        .processes
        .iter()
        .map(|p| (p.name.clone(), p.base()))
        .collect();
    assert_every_seed_metric(&processes, Duration::from_secs(30)).await;
}

// ---------------------------------------------------------------------------------------
// Trace context across processes

/// The log lines of one process, each parsed as JSON (a line that is not JSON fails).
fn json_log(process: &cluster::Process) -> Vec<Value> {
    process
        .log_lines()
        .iter()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{}: a log line is not JSON ({e}): {line}", process.name)
            })
        })
        .collect()
}

/// What a log line is about, for failure messages and coverage: its consumer, or its
/// message.
fn line_role(line: &Value) -> String {
    match line["consumer"].as_str() {
        Some(consumer) => format!("{consumer}: {}", line["message"].as_str().unwrap_or("")),
        None => line["message"].as_str().unwrap_or("").to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_orders_log_lines_share_its_correlation_and_trace_id_across_processes() {
    let (app, kafka) = cluster::start_shop(LAYOUT, &[]).await;
    let db = kafka.db().await;
    app.stock("TRACE-MUG", "4.00", 10).await;
    let cart = app.new_cart("cust-trace").await;
    assert_eq!(
        app.add(&cart, "TRACE-MUG", 2).await.status(),
        StatusCode::OK
    );

    // The client starts the trace: its traceparent on the checkout request.
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let correlation_id = format!("trace-test-{}", uuid::Uuid::new_v4());
    let response = app
        .client
        .post(format!("{}/api/carts/{cart}/checkout", app.base))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .header("X-Correlation-Id", &correlation_id)
        .json(
            &json!({"paymentToken": "tok_visa", "shippingAddress": common::address(),
                      "email": "ada@example.com", "phone": "+44 20 7946 0000"}),
        )
        .send()
        .await
        .expect("checkout");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let order: Value = response.json().await.unwrap();
    let order_id = order["orderId"].as_str().expect("orderId").to_string();
    app.wait_for_order(&order_id, &["Confirmed"]).await;
    // Ship and deliver without trace headers: order commands join the order's trace.
    let shipped = app
        .post(
            &format!("/api/orders/{order_id}/ship"),
            &json!({"carrier": "DHL"}),
        )
        .await;
    assert_eq!(shipped.status(), StatusCode::OK);
    let delivered = app
        .post(&format!("/api/orders/{order_id}/deliver"), &json!({}))
        .await;
    assert_eq!(delivered.status(), StatusCode::OK);

    // The store keeps the client's trace on every event of the order's transaction.
    let traces: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT event_type, trace_id FROM events WHERE correlation_id = $1")
            .bind(&correlation_id)
            .fetch_all(&db)
            .await
            .expect("events of the order");
    let types: BTreeSet<&str> = traces.iter().map(|(t, _)| t.as_str()).collect();
    for expected in [
        "CartCheckedOut",
        "OrderCreated",
        "PaymentCompleted",
        "OrderDelivered",
    ] {
        assert!(types.contains(expected), "no {expected} in {types:?}");
    }
    for (event_type, trace) in &traces {
        assert_eq!(trace.as_deref(), Some(trace_id.as_str()), "{event_type}");
    }

    // Every process logs its part: the API the checkout, the relay each publication, and
    // each consumer group the events it handles, down to the last one (OrderDelivered).
    let expected_roles = [
        "request handled",
        "Event published successfully",
        "order-saga: event handled",
        "inventory-service: event handled",
        "payment-service: event handled",
        "reporting-service: event handled",
        "notification-service: event handled",
        "notification sent",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let (lines, roles) = loop {
        let mut lines = Vec::new();
        for process in &kafka.processes {
            for line in json_log(process) {
                lines.push((process.name.clone(), line));
            }
        }
        let ours: Vec<&(String, Value)> = lines
            .iter()
            .filter(|(_, l)| l["correlationId"] == correlation_id.as_str())
            .collect();
        let roles: BTreeSet<String> = ours.iter().map(|(_, l)| line_role(l)).collect();
        let delivered_everywhere =
            ["reporting-service", "notification-service"]
                .iter()
                .all(|consumer| {
                    ours.iter().any(|(_, l)| {
                        l["consumer"] == *consumer && l["eventType"] == "OrderDelivered"
                    })
                });
        if expected_roles.iter().all(|r| roles.contains(*r)) && delivered_everywhere {
            break (lines, roles);
        }
        assert!(
            Instant::now() < deadline,
            "after 30 s the order's log lines cover only {roles:?}\n{}",
            kafka.log_tails(15)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // All lines of the order's business transaction carry the client's trace id, in
    // every process; and no line about the order or its payment lacks the correlation id.
    let processes: BTreeSet<&str> = lines
        .iter()
        .filter(|(_, l)| l["correlationId"] == correlation_id.as_str())
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(
        processes.len(),
        kafka.processes.len(),
        "the order's lines come from {processes:?} only"
    );
    let mut checked = 0;
    for (process, line) in &lines {
        let about_order =
            line["aggregateId"] == order_id.as_str() || line["orderId"] == order_id.as_str();
        if about_order {
            assert_eq!(
                line["correlationId"],
                correlation_id.as_str(),
                "{process}: a line about the order without its correlationId: {line}"
            );
        }
        if line["correlationId"] == correlation_id.as_str() {
            assert_eq!(
                line["traceId"],
                trace_id.as_str(),
                "{process}: a line of the order without its trace id: {line}"
            );
            checked += 1;
        }
    }
    eprintln!(
        "{checked} log lines of order {order_id} ({} events) share trace {trace_id}; \
         roles: {roles:?}",
        traces.len()
    );
    db.close().await;
    kafka.dispose().await;
}

// ---------------------------------------------------------------------------------------
// OTLP export

/// A stand-in for an OpenTelemetry collector: keeps every span posted to `/v1/traces`
/// (OTLP/HTTP JSON), each with its resource's `service.name` added as `serviceName`.
async fn start_otlp_sink() -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    let spans: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
    let collected = spans.clone();
    let receive = move |body: axum::body::Bytes| {
        let collected = collected.clone();
        async move {
            let request: Value = serde_json::from_slice(&body).expect("an OTLP JSON body");
            for resource in request["resourceSpans"].as_array().into_iter().flatten() {
                let service = resource["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == "service.name")
                    .map(|a| a["value"]["stringValue"].clone())
                    .unwrap_or(Value::Null);
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    for span in scope["spans"].as_array().into_iter().flatten() {
                        let mut span = span.clone();
                        span["serviceName"] = service.clone();
                        collected.lock().unwrap().push(span);
                    }
                }
            }
            ([("content-type", "application/json")], "{}")
        }
    };
    let router = axum::Router::new().route("/v1/traces", axum::routing::post(receive));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port for the OTLP sink");
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.ok() });
    (format!("http://{address}"), spans)
}

/// A span attribute's string value.
fn span_attribute<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_otlp_endpoint_spans_are_exported_in_the_clients_trace() {
    let (endpoint, spans) = start_otlp_sink().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let shop = cluster::Process::start_with_env(
        "otlp",
        vec![
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--otlp-endpoint={endpoint}"),
            "--otlp-service-name=cornershop-otlp-test".to_string(),
        ],
        // Export every 100 ms instead of every 5 s.
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
        dir.path().join("shop.log"),
    )
    .await;
    let base = shop.base();
    let client = shop.client();
    let r = client
        .put(format!("{base}/api/inventory/OTLP-1"))
        .json(&json!({"name": "Traced", "unitPrice": "2.00", "quantity": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cart: Value = client
        .post(format!("{base}/api/carts"))
        .json(&json!({"customerId": "cust-otlp"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cart = cart["cartId"].as_str().expect("cartId");
    let r = client
        .post(format!("{base}/api/carts/{cart}/items"))
        .json(&json!({"sku": "OTLP-1", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let client_span = "00f067aa0ba902b7";
    let r = client
        .post(format!("{base}/api/carts/{cart}/checkout"))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .json(
            &json!({"paymentToken": "tok_visa", "shippingAddress": common::address(),
                      "email": "ada@example.com", "phone": "+44 20 7946 0000"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // The checkout request's span is a child of the client's span; each consumer's
    // handling of the order's events, and the notifications, are spans of the same trace.
    let expected_consumers = ["order-saga", "inventory-service", "payment-service"];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ours: Vec<Value> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s["traceId"] == trace_id.as_str())
            .cloned()
            .collect();
        let request = ours
            .iter()
            .find(|s| s["name"] == "request" && s["parentSpanId"] == client_span);
        let consumers: BTreeSet<&str> = ours
            .iter()
            .filter(|s| s["name"] == "consume")
            .filter_map(|s| span_attribute(s, "consumer"))
            .collect();
        let notified = ours.iter().any(|s| s["name"] == "notify");
        // Every parent is in the collector too (the client's own span aside): the events'
        // spans link the request to the consumers and the consumers to each other.
        let exported: BTreeSet<&str> = ours.iter().filter_map(|s| s["spanId"].as_str()).collect();
        let orphans: Vec<&Value> = ours
            .iter()
            .filter(|s| {
                let parent = s["parentSpanId"].as_str().unwrap_or("");
                !parent.is_empty() && parent != client_span && !exported.contains(parent)
            })
            .collect();
        let done = request.is_some()
            && expected_consumers.iter().all(|c| consumers.contains(c))
            && notified
            && orphans.is_empty();
        if done {
            assert!(ours
                .iter()
                .all(|s| s["serviceName"] == "cornershop-otlp-test"));
            // A consume span's parent is the span of the event it handles, and that span
            // is the event's: named for it, with the span id its traceparent carries.
            let by_id: BTreeMap<&str, &Value> = ours
                .iter()
                .filter_map(|s| Some((s["spanId"].as_str()?, s)))
                .collect();
            let consume = ours.iter().find(|s| s["name"] == "consume").unwrap();
            let event = by_id[consume["parentSpanId"].as_str().unwrap()];
            let event_type = span_attribute(consume, "eventType").expect("consume eventType");
            assert_eq!(event["name"], format!("event {event_type}"), "{event}");
            let event_id = span_attribute(event, "eventId").expect("event span eventId");
            assert_eq!(
                event["spanId"].as_str().unwrap(),
                &event_id.replace('-', "")[..16]
            );
            // The checkout's event is a child of the request that appended it.
            let checked_out = ours
                .iter()
                .find(|s| s["name"] == "event CartCheckedOut")
                .expect("the CartCheckedOut span");
            assert_eq!(
                by_id[checked_out["parentSpanId"].as_str().unwrap()]["name"],
                "request"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 30 s the collector has, in trace {trace_id}: request as the client's \
             child: {}, consumers {consumers:?}, notify: {notified}, spans whose parent \
             is missing: {orphans:#?}; {} spans in all\n{}",
            request.is_some(),
            spans.lock().unwrap().len(),
            shop.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
