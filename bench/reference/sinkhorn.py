#!/usr/bin/env python3
"""PyTorch peer of the "sinkhorn" bench suite (bench/NativeContrast.Bench/SinkhornBench.cs).

SwAV's distributed_sinkhorn (facebookresearch/swav main_swav.py) on one process (no all_reduce), and SwAV's
swapped-prediction loss with its backward, in eager mode and under torch.compile, on the cases of the C# suite.
Timed with CUDA events (median), peak memory from torch.cuda.max_memory_allocated, floor_ms from one read of the
inputs and one write of the outputs at the device-to-device copy bandwidth measured in the same run.
Records are appended to --out (a JSON list) with the fields of BenchRecord.

    python3 bench/reference/sinkhorn.py --out bench/results/kernels-<gpu>.json [--quick]
"""
import torch
import torch.nn.functional as F

from benchlib import append_records, copy_bandwidth, median_ms, parse_args, peak_since, require_cuda, reset_peak, timestamp

CASES = [(4096, 3000, 3), (1024, 3000, 3), (8192, 3000, 3), (1024, 65536, 3)]
QUICK_CASES = [(1024, 3000, 3)]
EPSILON = 0.05
TEMPERATURE = 0.1


@torch.no_grad()
def distributed_sinkhorn(out, iterations, epsilon=EPSILON):
    """SwAV's distributed_sinkhorn with world size 1 (the all_reduce calls are identities)."""
    Q = torch.exp(out / epsilon).t()  # Q is K-by-B, as in the paper
    B = Q.shape[1]
    K = Q.shape[0]
    sum_Q = torch.sum(Q)
    Q /= sum_Q
    for _ in range(iterations):
        # normalize each row: total weight per prototype must be 1/K
        sum_of_rows = torch.sum(Q, dim=1, keepdim=True)
        Q /= sum_of_rows
        Q /= K
        # normalize each column: total weight per sample must be 1/B
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B  # the columns must sum to 1 so that Q is an assignment
    return Q.t()


def swapped_loss(scores, codes, temperature=TEMPERATURE):
    """One (prediction, codes) pair of SwAV's loss: -mean_b sum_k q log softmax(p / tau)."""
    return -torch.mean(torch.sum(codes * F.log_softmax(scores / temperature, dim=1), dim=1))


def peak_bytes(fn):
    """Peak bytes allocated (absolute, not above a base) over one more call of fn."""
    reset_peak()
    fn()
    torch.cuda.synchronize()
    return peak_since()


def record(kernel, case, impl, ms, peak, floor_ms, moved_bytes, note):
    return {
        "kernel": kernel,
        "case": case,
        "impl": impl,
        "median_ms": ms,
        "peak_bytes": peak,
        "gpu": torch.cuda.get_device_name(),
        "floor_ms": floor_ms,
        "gbps": moved_bytes / (ms * 1e-3) / 1e9,
        "note": note,
        "timestamp": timestamp(),
    }


def compiled_or_none(fn):
    try:
        return torch.compile(fn)
    except Exception as error:  # no compiler toolchain on this machine
        print(f"   torch.compile unavailable: {error}")
        return None


def run(quick):
    repetitions = 10 if quick else 50
    bandwidth = copy_bandwidth(torch.empty(64 << 20, device="cuda"), 5, repetitions, upper=True)  # 256 MiB
    print(f"   device-to-device copy: {bandwidth / 1e9:.0f} GB/s")
    version = f"torch {torch.__version__}"
    records = []
    if quick:  # cold compiles: minutes in all
        print("   torch-compile skipped in --quick (cold compiles); nothing recorded for it")
    sinkhorn_compiled = None if quick else compiled_or_none(distributed_sinkhorn)
    for rows, cols, iterations in QUICK_CASES if quick else CASES:
        case = f"B{rows} K{cols} it{iterations}"
        scores = torch.rand(rows, cols, device="cuda") * 2 - 1
        matrix_bytes = rows * cols * 4
        floor_ms = 2.0 * matrix_bytes / bandwidth * 1e3
        impls = [("torch-eager", distributed_sinkhorn)]
        if sinkhorn_compiled is not None:
            impls.append(("torch-compile", sinkhorn_compiled))
        for impl, fn in impls:
            try:
                call = lambda: fn(scores, iterations)  # noqa: E731
                ms = median_ms(call, 5, repetitions, upper=True)  # the upper median, as GpuTimer takes it
                peak = peak_bytes(call)
            except Exception as error:  # out of memory or a compile failure: record nothing for it
                print(f"   {case} {impl}: failed ({type(error).__name__}: {error})")
                continue
            records.append(record("sinkhorn", case, impl, ms, peak, floor_ms, 2 * matrix_bytes, version))
            print(f"   sinkhorn {case:<24} {impl:<14} {ms:10.4f} ms  floor {floor_ms:9.4f} ms ({ms / floor_ms:.2f}x)  peak {peak >> 20} MiB")
        del scores

    rows, cols = (1024, 3000) if quick else (4096, 3000)
    case = f"B{rows} K{cols}"
    scores = (torch.rand(rows, cols, device="cuda") * 2 - 1).requires_grad_()
    codes = torch.rand(rows, cols, device="cuda") * (2.0 / cols)
    matrix_bytes = rows * cols * 4
    floor_ms = 3.0 * matrix_bytes / bandwidth * 1e3
    loss_compiled = None if quick else compiled_or_none(swapped_loss)
    impls = [("torch-eager", swapped_loss)]
    if loss_compiled is not None:
        impls.append(("torch-compile", loss_compiled))
    for impl, fn in impls:
        def step(fn=fn):
            scores.grad = None
            fn(scores, codes).backward()
        try:
            ms = median_ms(step, 5, repetitions, upper=True)
            peak = peak_bytes(step)
        except Exception as error:
            print(f"   swapped-loss {case} {impl}: failed ({type(error).__name__}: {error})")
            continue
        records.append(record("swapped-loss", case, impl, ms, peak, floor_ms, 3 * matrix_bytes, f"{version}; forward + backward"))
        print(f"   swapped-loss {case:<20} {impl:<14} {ms:10.4f} ms  floor {floor_ms:9.4f} ms ({ms / floor_ms:.2f}x)  peak {peak >> 20} MiB")
    return records


def main():
    args = parse_args(__doc__, quick_help="one small case, fewer repetitions, no torch.compile")
    require_cuda("sinkhorn.py")
    records = run(args.quick)
    append_records(args.out, records)
    print(f"   {len(records)} records appended to {args.out}")


if __name__ == "__main__":
    main()
