#!/usr/bin/env python3
"""Checks that Cargo.toml's rust-version is the real minimum: the newest `rust-version` declared by
the locked dependencies that Herald (and loadtest) build on Linux. Only one Rust toolchain can be
installed on the build machines, so this reads the dependencies' own declarations instead of
building with an older compiler. Exit 1 with the offending crates when rust-version is lower."""
import json
import subprocess
import sys


def version(text):
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def used_packages(package):
    tree = subprocess.run(
        ["cargo", "tree", "-p", package, "-e", "normal,build", "--prefix", "none", "--locked",
         "--target", "x86_64-unknown-linux-gnu"],
        check=True, capture_output=True, text=True).stdout
    used = set()
    for line in tree.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            used.add((parts[0], parts[1].lstrip("v")))
    return used


def main():
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        check=True, capture_output=True, text=True).stdout)
    declared = {(p["name"], p["version"]): p.get("rust_version") for p in meta["packages"]}
    members = {p["name"]: p for p in meta["packages"] if p["id"] in meta["workspace_members"]}
    failed = False
    for name, member in sorted(members.items()):
        ours = member.get("rust_version")
        if not ours:
            print(f"{name}: Cargo.toml has no rust-version")
            failed = True
            continue
        needs = [(declared.get(used) or "0", used) for used in used_packages(name)]
        newest = max(version(v) for v, _ in needs)
        too_new = sorted(f"{n} {v} needs {rv}" for rv, (n, v) in needs
                         if version(rv) > version(ours))
        if too_new:
            print(f"{name}: rust-version = {ours}, but " + "; ".join(too_new))
            failed = True
        else:
            shown = ".".join(str(x) for x in newest[:2])
            print(f"{name}: rust-version = {ours} (newest dependency requirement: {shown})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
