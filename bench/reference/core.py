#!/usr/bin/env python3
"""PyTorch peers of bench/NativeContrast.Bench/CoreBench.cs: the same core ops on the same cases, eager mode.

  python3 bench/reference/core.py --out bench/results/kernels-<gpu>.json [--quick]

Appends one record per case (impl "torch-eager") with the engine's fields; floor_ms is bytes over the
device-to-device copy bandwidth measured here, in the same run, as the engine does.
"""
import torch
import torch.nn.functional as F

from benchlib import append_records, copy_bandwidth, median_ms, parse_args, peak_since, require_cuda, reset_peak, timestamp


def main():
    args = parse_args(__doc__.splitlines()[0])
    require_cuda("core.py")

    quick = args.quick
    reps = 5 if quick else 50
    n = 1 << 20 if quick else 1 << 26
    tall = (4096, 256) if quick else (65536, 1024)
    wide = (16, 8192) if quick else (256, 65536)
    logits = (512, 512) if quick else (8192, 8192)
    embed = (1024, 128) if quick else (8192, 128)
    gpu = torch.cuda.get_device_name()
    dev = "cuda"
    records = []

    bandwidth = copy_bandwidth(torch.empty(n, device=dev), 5, reps, upper=True)
    print(f"   device-to-device copy: {bandwidth / 1e9:.0f} GB/s")

    def record(kernel, case, fn, nbytes):
        base = reset_peak()
        ms = median_ms(fn, 5, reps, upper=True)
        r = {
            "kernel": kernel, "case": case, "impl": "torch-eager", "median_ms": ms,
            "peak_bytes": peak_since(base) + nbytes, "gpu": gpu,
            "floor_ms": nbytes / bandwidth * 1e3, "gbps": nbytes / (ms * 1e-3) / 1e9,
            "timestamp": timestamp(),
        }
        records.append(r)
        print(f"{kernel:<22} {case:<16} torch-eager {ms:10.4f} ms  floor {r['floor_ms']:9.4f} ms")

    with torch.no_grad():
        x, y, z = torch.randn(n, device=dev), torch.randn(n, device=dev), torch.empty(n, device=dev)
        b, case = n * 4, f"n={n}"
        record("add", case, lambda: torch.add(x, y, out=z), 3 * b)
        record("axpy", case, lambda: y.add_(x, alpha=1e-3), 3 * b)
        record("relu", case, lambda: torch.clamp(x, min=0, out=z), 2 * b)
        # What autograd runs for ReLU's backward: grad where the output is positive.
        record("relu_backward", case, lambda: torch.ops.aten.threshold_backward(y, z, 0.0), 3 * b)
        record("sum", case, lambda: y.sum(), b)
        record("philox_uniform", case, lambda: z.uniform_(), b)
        record("philox_normal", case, lambda: z.normal_(), b)
        del x, y, z

        for rows, cols in (tall, wide):
            x = torch.randn(rows, cols, device=dev)
            b, case = rows * cols * 4, f"{rows}x{cols}"
            record("sum_rows", case, lambda: x.sum(1), b + rows * 4)
            record("sum_columns", case, lambda: x.sum(0), b + cols * 4)
            del x

        for rows, cols in (logits, (embed[0], 1000)):
            x = torch.randn(rows, cols, device=dev) * 5
            b, case = rows * cols * 4, f"{rows}x{cols}"
            record("softmax_rows", case, lambda: torch.softmax(x, 1), 2 * b)
            record("logsumexp_rows", case, lambda: torch.logsumexp(x, 1), b + rows * 4)
            del x

    for rows, cols in (embed, (tall[0], 2048)):
        x = torch.randn(rows, cols, device=dev, requires_grad=True)
        dy = torch.randn(rows, cols, device=dev)
        b, case = rows * cols * 4, f"{rows}x{cols}"
        with torch.no_grad():
            record("l2_normalize", case, lambda: F.normalize(x, dim=1), 2 * b)
        y = F.normalize(x, dim=1)
        record("l2_normalize_backward", case, lambda: torch.autograd.grad(y, x, dy, retain_graph=True), 3 * b)
        del x, dy, y

    append_records(args.out, records)
    print(f"   {len(records)} records appended to {args.out}")


if __name__ == "__main__":
    main()
