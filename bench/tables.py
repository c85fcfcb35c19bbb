#!/usr/bin/env python3
"""Rewrites the results table in bench/README.md from bench/results/*.json (the latest record per kernel/case/impl/gpu).

Each row shows the median time, the napkin-math floor and how far from it we are, and the ratio against the
PyTorch peers measured in the same run. Plain Python, no dependencies.
"""
import glob
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
readme = os.path.join(here, "README.md")
begin, end = "<!-- results:begin -->", "<!-- results:end -->"


def load():
    latest = {}
    for path in sorted(glob.glob(os.path.join(here, "results", "*.json"))):
        with open(path) as f:
            for r in json.load(f):
                key = (r["gpu"], r["kernel"], r["case"], r["impl"])
                if key not in latest or r.get("timestamp", "") >= latest[key].get("timestamp", ""):
                    latest[key] = r
    return latest


def table(latest):
    if not latest:
        return "No benchmark has been run on a GPU yet: see \"Running\" above.\n"
    lines = []
    for gpu in sorted({k[0] for k in latest}):
        lines.append(f"### {gpu}\n")
        lines.append("| kernel | case | impl | median ms | floor ms | x floor | peak MiB | vs ours-fused |")
        lines.append("|---|---|---|---:|---:|---:|---:|---:|")
        rows = sorted((k, r) for k, r in latest.items() if k[0] == gpu)
        for (g, kernel, case, impl), r in rows:
            ours = latest.get((g, kernel, case, "ours-fused")) or latest.get((g, kernel, case, "ours"))
            floor = r.get("floor_ms")
            ratio = f"{r['median_ms'] / ours['median_ms']:.2f}x" if ours and ours is not r and ours["median_ms"] > 0 else ""
            lines.append(
                f"| {kernel} | {case} | {impl} | {r['median_ms']:.4f} | "
                f"{'' if floor is None else f'{floor:.4f}'} | "
                f"{'' if not floor else f'{r['median_ms'] / floor:.2f}'} | "
                f"{r.get('peak_bytes', 0) / 2**20:.0f} | {ratio} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main():
    text = open(readme).read()
    if begin not in text or end not in text:
        sys.exit(f"{readme} has no {begin} ... {end} section")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(readme + ".tmp", "w") as f:
        f.write(head + begin + "\n" + table(load()) + end + tail)
    os.replace(readme + ".tmp", readme)


if __name__ == "__main__":
    main()
