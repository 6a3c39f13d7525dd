#!/usr/bin/env python3
"""Fails when the workspace's rust-version is not the one Cargo.lock needs.

`rust-version` in Cargo.toml's [workspace.package] (inherited by every crate) must equal
the highest `rust-version` declared by a package that cargo builds on Linux from the lock
file: lower, and a user with that toolchain gets a build error from a dependency instead of
cargo's clear "requires rustc X" message; higher, and it refuses toolchains that work.
"""
import json
import subprocess
import sys
import tomllib


def version(text):
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    with open("Cargo.toml", "rb") as manifest:
        declared = tomllib.load(manifest)["workspace"]["package"]["rust-version"]
    metadata = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked",
         "--filter-platform", "x86_64-unknown-linux-gnu"],
        check=True, capture_output=True, text=True).stdout)
    built = {node["id"] for node in metadata["resolve"]["nodes"]}
    members = set(metadata["workspace_members"])
    needs = [(version(p["rust_version"]), f"{p['name']} {p['version']}")
             for p in metadata["packages"]
             if p["id"] in built and p["id"] not in members and p.get("rust_version")]
    highest, by = max(needs)
    problems = []
    if version(declared) != highest:
        problems.append(f"Cargo.toml says rust-version {declared}, but Cargo.lock needs "
                        f"{'.'.join(map(str, highest[:2]))} ({by}): set it to that")
    for p in metadata["packages"]:
        if p["id"] in members and p.get("rust_version") != declared:
            problems.append(f"{p['name']} does not inherit the workspace's rust-version "
                            f"(add `rust-version.workspace = true`)")
    for problem in problems:
        print(f"check-rust-version: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"check-rust-version: {declared}, as {by} needs, inherited by every crate")


if __name__ == "__main__":
    main()
