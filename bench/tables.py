#!/usr/bin/env python3
"""Rewrites the results table in bench/README.md from bench/results/*.json (the latest record per kernel/case/impl/gpu).

Each row shows the median time, the napkin-math floor and how far from it we are, the throughput where the record
has one (CPU suites: images/s per core), and the ratio against ours measured in the same run: the peer's time over
ours, or for records with a throughput ours over the peer's, so that above 1 always means ours is faster. Like is set against like: a peer whose impl names
fp32 (torch-eager-fp32) against ours-fused-fp32, the others against ours-fused (TF32, the engine's default) or ours.
CPU-only records are grouped by the host named in their file (augment-<host>.json). Plain Python, no dependencies.

    python3 bench/tables.py [--results DIR] [--stdout]   (--stdout prints the table and leaves README.md alone)
"""
import argparse
import glob
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
readme = os.path.join(here, "README.md")
begin, end = "<!-- results:begin -->", "<!-- results:end -->"


def load(results_dir):
    latest = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        host = os.path.splitext(os.path.basename(path))[0].split("-", 1)[-1]
        with open(path) as f:
            for r in json.load(f):
                device = f"{r['gpu']} ({host})" if r["gpu"] == "cpu-only" else r["gpu"]
                key = (device, r["kernel"], r["case"], r["impl"])
                if key not in latest or r.get("timestamp", "") >= latest[key].get("timestamp", ""):
                    latest[key] = r
    return latest


def throughput(r):
    return f"{r['throughput']:.0f} {r.get('throughput_unit', '/s')}" if r.get("throughput") else ""


def ratio(r, ours):
    """How many times faster ours is than r: by throughput when both have one (CPU time), else by median time."""
    if not ours or ours is r:
        return ""
    if r.get("throughput") and ours.get("throughput"):
        return f"{ours['throughput'] / r['throughput']:.2f}x"
    return f"{r['median_ms'] / ours['median_ms']:.2f}x" if ours["median_ms"] > 0 else ""


def baseline(latest, key):
    """Ours on the same device, kernel and case at the same precision: "ours-fused-fp32" (or "ours-fp32") for a peer
    whose impl names fp32, else "ours-fused" (or "ours"). bf16 peers (torch-eager-bf16) are set against ours-fused,
    the engine's default, where the engine has no bf16 row of its own (the ResNet steps)."""
    device, kernel, case, impl = key
    if "fp32" in impl.split("-"):
        return latest.get((device, kernel, case, "ours-fused-fp32")) or latest.get((device, kernel, case, "ours-fp32"))
    return latest.get((device, kernel, case, "ours-fused")) or latest.get((device, kernel, case, "ours"))


def table(latest):
    if not latest:
        return "No benchmark has been run yet: see \"Running\" above.\n"
    lines = []
    for gpu in sorted({k[0] for k in latest}):
        lines.append(f"### {gpu}\n")
        lines.append("| kernel | case | impl | median ms | floor ms | x floor | throughput | peak MiB | ours faster by |")
        lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|")
        rows = sorted(((k, r) for k, r in latest.items() if k[0] == gpu), key=lambda kr: kr[0])
        for key, r in rows:
            _, kernel, case, impl = key
            ours = baseline(latest, key)
            floor = r.get("floor_ms")
            floor_ms = "" if floor is None else f"{floor:.4f}"
            times_floor = f"{r['median_ms'] / floor:.2f}" if floor else ""  # nested quotes need Python 3.12: keep apart
            lines.append(
                f"| {kernel} | {case} | {impl} | {r['median_ms']:.4f} | {floor_ms} | {times_floor} | "
                f"{throughput(r)} | {r.get('peak_bytes', 0) / 2**20:.0f} | {ratio(r, ours)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(here, "results"), help="folder of *.json record lists (default: bench/results)")
    parser.add_argument("--stdout", action="store_true", help="print the table instead of rewriting bench/README.md")
    args = parser.parse_args()
    text = table(load(args.results))
    if args.stdout:
        sys.stdout.write(text)
        return
    readme_text = open(readme).read()
    if begin not in readme_text or end not in readme_text:
        sys.exit(f"{readme} has no {begin} ... {end} section")
    head, rest = readme_text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(readme + ".tmp", "w") as f:
        f.write(head + begin + "\n" + text + end + tail)
    os.replace(readme + ".tmp", readme)


if __name__ == "__main__":
    main()
