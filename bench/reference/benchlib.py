"""Helpers shared by the PyTorch peer benchmarks in this folder (core, contrastive, sinkhorn, optim, resnet).

CUDA-event median timing (loops of calls, as the engine's GpuTimer), the device-to-device copy bandwidth that
memory-bound floors use, peak-memory reset/read, the record timestamp, the --out/--quick command line, and
appending records to a JSON list atomically. The scripts import it with `from benchlib import ...`: run as files, their own folder is on sys.path.
Running this file does nothing.
"""
import argparse
import datetime
import json
import math
import os
import statistics

import torch

# Each timed repetition is a loop of calls between one pair of CUDA events, sized to take about TARGET_LOOP_MS,
# so that a microsecond kernel is not timed as one launch's latency: the same rule as the engine's GpuTimer.cs.
TARGET_LOOP_MS = 1.0
MAX_CALLS_PER_LOOP = 1000


def calls_per_loop(fn, start, end):
    """Calls per timed loop: ceil(TARGET_LOOP_MS / one timed call), at least 1 and at most MAX_CALLS_PER_LOOP."""
    start.record()
    fn()
    end.record()
    end.synchronize()
    once = start.elapsed_time(end)
    return 1 if once >= TARGET_LOOP_MS else max(1, min(MAX_CALLS_PER_LOOP, math.ceil(TARGET_LOOP_MS / max(once, 1e-4))))


def median_ms(fn, warmup, reps, upper=False):
    """Median milliseconds of one call of fn() over `reps` timed loops, after `warmup` untimed calls.

    Each repetition times a loop of calls_per_loop() calls between two CUDA events and divides by the count, as the
    engine's GpuTimer does; work of a millisecond or more is timed call by call. upper=True takes the upper median
    (sorted[reps // 2], as GpuTimer does) instead of statistics.median, which averages the two middle values when
    reps is even.
    """
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    calls = calls_per_loop(fn, start, end)
    times = []
    for _ in range(reps):
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return sorted(times)[len(times) // 2] if upper else statistics.median(times)


def copy_bandwidth(source, warmup, reps, upper=False):
    """Bytes per second of copying `source` into a new tensor like it on the device (read + write counted)."""
    destination = torch.empty_like(source)
    ms = median_ms(lambda: destination.copy_(source), warmup, reps, upper=upper)
    return 2.0 * source.numel() * source.element_size() / (ms * 1e-3)


def reset_peak(empty_cache=False):
    """Synchronise, optionally release the allocator's cached blocks, reset the peak counter; returns the bytes allocated now."""
    torch.cuda.synchronize()
    if empty_cache:
        torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def peak_since(base=0):
    """Peak bytes allocated since the last reset_peak, less `base`."""
    return torch.cuda.max_memory_allocated() - base


def timestamp():
    """UTC now as the records write it: 2025-01-31T12:00:00Z."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_args(description, out_help="JSON list to append the records to", quick_help="smaller sizes and fewer repetitions"):
    """The peers' command line: --out (required) and --quick."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    return parser.parse_args()


def require_cuda(script):
    """Exit with '<script> needs a CUDA device' when torch sees no CUDA device."""
    if not torch.cuda.is_available():
        raise SystemExit(f"{script} needs a CUDA device")


def append_records(path, records):
    """Append records to the JSON list at path (created if missing) through a temporary file and os.replace."""
    existing = []
    if os.path.exists(path):
        with open(path) as f:
            existing = json.load(f)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        json.dump(existing + list(records), f, indent=2)
    os.replace(temporary, path)
