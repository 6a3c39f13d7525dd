#!/usr/bin/env python3
"""Fails when a workspace crate depends on one the layering forbids.

The layers point one way (ARCHITECTURE.md's code map, "must not depend on"):

    domain <- store <- app, messaging <- services, readmodels <- server <- bench
    domain <- simulate <- server, bench

Each crate may depend (normally, or for its tests and benches) only on the crates listed
for it below. Reads `cargo metadata`, so it sees exactly what cargo builds.
"""
import json
import subprocess
import sys

ALLOWED = {
    "cornershop-domain": set(),
    "cornershop-store": {"cornershop-domain"},
    "cornershop-app": {"cornershop-domain", "cornershop-store"},
    "cornershop-messaging": {"cornershop-domain", "cornershop-store"},
    "cornershop-services": {"cornershop-domain", "cornershop-store", "cornershop-app",
                            "cornershop-messaging"},
    # The read side: no workflow crate (services) and no server.
    "cornershop-readmodels": {"cornershop-domain", "cornershop-store", "cornershop-app",
                              "cornershop-messaging"},
    # A client of the HTTP API: its token comes from the server, never the other way.
    "cornershop-simulate": {"cornershop-domain"},
    "cornershop-server": {"cornershop-domain", "cornershop-store", "cornershop-app",
                          "cornershop-messaging", "cornershop-services",
                          "cornershop-readmodels", "cornershop-simulate"},
    # A leaf: it measures everything.
    "cornershop-bench": {"cornershop-domain", "cornershop-store", "cornershop-app",
                         "cornershop-messaging", "cornershop-services",
                         "cornershop-readmodels", "cornershop-server",
                         "cornershop-simulate"},
}


def main():
    metadata = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--locked"],
        check=True, capture_output=True, text=True).stdout)
    ours = {p["name"] for p in metadata["packages"]}
    problems = []
    for package in metadata["packages"]:
        name = package["name"]
        if name not in ALLOWED:
            problems.append(f"{name} is not in scripts/check-layers.py: give it its layer")
            continue
        for dep in package["dependencies"]:
            # A crate's tests may depend on the crate itself, to turn on a test feature:
            # that is no edge between layers.
            if dep["name"] == name and dep.get("kind") == "dev":
                continue
            if dep["name"] in ours and dep["name"] not in ALLOWED[name]:
                kind = dep.get("kind") or "normal"
                problems.append(f"{name} depends on {dep['name']} ({kind}): the layering "
                                f"forbids it (see ARCHITECTURE.md's code map)")
    for problem in problems:
        print(f"check-layers: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check-layers: {len(metadata['packages'])} crates, every dependency points down")


if __name__ == "__main__":
    main()
