#!/usr/bin/env python3
"""PyTorch peers of the "contrastive" bench suite (bench/NativeContrast.Bench/ContrastiveBench.cs).

NT-Xent as SimCLR's common PyTorch implementations compose it (normalise, matmul, mask the diagonal,
cross-entropy over the 2N - 1 others) and MoCo v2's InfoNCE (l_pos by einsum, l_neg against the queue,
concatenate, cross-entropy with the positive first), forward + backward, in eager mode and under
torch.compile, for the same cases and precisions as the engine's suite. Times are medians of CUDA-event
timings; peak memory is torch.cuda.max_memory_allocated over the case. Floors are measured in the same run,
as the engine does: FLOPs over the rate torch.matmul reaches on an 8192^3 GEMM of the precision, bytes over
the bandwidth of a device-to-device copy.

usage: python3 bench/reference/contrastive.py --out bench/results/kernels-<gpu>.json [--quick]
Records are appended to the JSON list in --out with the engine's field names.
"""
import torch
import torch.nn.functional as F

from benchlib import append_records, copy_bandwidth, median_ms, parse_args, peak_since, require_cuda, reset_peak, timestamp

DIM = 128
TEMPERATURE = 0.1


def ntxent(z, tau):
    z = F.normalize(z, dim=1)
    logits = z @ z.t() / tau
    rows = z.shape[0]
    self_mask = torch.eye(rows, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    targets = (torch.arange(rows, device=z.device) + rows // 2) % rows
    return F.cross_entropy(logits, targets)


def moco_infonce(q, k, queue, tau):
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
    l_neg = torch.einsum("nc,kc->nk", q, queue)
    logits = torch.cat([l_pos, l_neg], dim=1) / tau
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


def gemm_rate(precision, quick):
    n = 2048 if quick else 8192
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.rand(n, n, device="cuda", dtype=dtype)
    b = torch.rand(n, n, device="cuda", dtype=dtype)
    ms = median_ms(lambda: a @ b, 3, 5 if quick else 20)
    return 2.0 * n**3 / (ms * 1e-3)


def floor_ms(flops, rate, bytes_, bandwidth):
    return max(flops / rate, bytes_ / bandwidth) * 1e3


class Runner:
    def __init__(self, quick):
        self.quick = quick
        self.repetitions = 5 if quick else 30
        self.gpu = torch.cuda.get_device_name()
        self.records = []

    def record(self, kernel, case, impl, ms, peak, flops, floor, note):
        row = {
            "kernel": kernel, "case": case, "impl": impl, "median_ms": ms, "peak_bytes": int(peak),
            "gpu": self.gpu, "floor_ms": floor, "tflops": flops / (ms * 1e-3) / 1e12, "note": note,
            "timestamp": timestamp(),
        }
        self.records.append(row)
        print(f"{kernel:<16} {case:<34} {impl:<14} {ms:10.4f} ms  floor {floor:9.4f} ms ({ms / floor:.2f}x)"
              f"  peak {peak / (1 << 20):6.0f} MiB")

    def measure(self, make_inputs, loss_fn, precision):
        """Median ms and peak bytes of forward + backward; inputs are made after the peak counter is reset."""
        base = reset_peak(empty_cache=True)
        inputs, grad_input = make_inputs()

        def step():
            grad_input.grad = None
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(*inputs)
            loss.backward()

        ms = median_ms(step, 3, self.repetitions)
        peak = peak_since(base)
        del inputs, grad_input
        return ms, peak

    def run_impls(self, kernel, case, loss_fn, make_inputs, precision, flops, floor, note):
        impls = (("torch-eager", loss_fn),) if self.quick else (("torch-eager", loss_fn), ("torch-compile", None))
        for impl, fn in impls:
            try:
                if fn is None:
                    torch._dynamo.reset()
                    fn = torch.compile(loss_fn)
                ms, peak = self.measure(make_inputs, fn, precision)
                self.record(kernel, case, impl, ms, peak, flops, floor, note)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                print(f"   {case} {impl}: out of memory, skipped")
            except Exception as error:  # torch.compile without a working Triton, for one
                print(f"   {case} {impl}: skipped ({type(error).__name__}: {error})")


def main():
    args = parse_args(__doc__, quick_help="smaller sizes, fewer repetitions, no torch.compile (smoke run)")
    require_cuda("contrastive.py")

    runner = Runner(args.quick)
    if args.quick:  # one cold compile per case and precision: minutes in all
        print("torch-compile skipped in --quick (cold compiles); nothing recorded for it")
    bandwidth = copy_bandwidth(torch.rand((16 if args.quick else 128) << 20, device="cuda"), 3, 5 if args.quick else 20)
    print(f"device: {runner.gpu}; device-to-device copy {bandwidth / 1e9:.0f} GB/s")
    rates = {}
    for precision in ("tf32", "bf16"):
        torch.backends.cuda.matmul.allow_tf32 = True
        rates[precision] = gemm_rate(precision, args.quick)
        print(f"   torch.matmul {precision}: {rates[precision] / 1e12:.0f} TFLOP/s")

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    for rows in ((2048, 16384) if args.quick else (8192, 262144)):
        for precision in ("tf32", "bf16"):
            case = f"2N={rows} d={DIM} {precision} fwd+bwd"
            flops = 3.0 * 2.0 * rows * rows * DIM
            floor = floor_ms(flops, rates[precision], 3.0 * rows * DIM * 4, bandwidth)
            needed = 3.0 * rows * rows * 4  # logits, masked logits and their gradient, fp32
            if needed > 0.8 * torch.cuda.mem_get_info()[0]:
                print(f"   {case}: skipped, the composition needs {needed / (1 << 30):.0f} GiB for 2N x 2N matrices")
                continue

            def make_inputs(rows=rows):
                z = torch.rand(rows, DIM, device="cuda") * 2 - 1
                z.requires_grad_(True)
                return (z, TEMPERATURE), z

            runner.run_impls("ntxent", case, ntxent, make_inputs, precision, flops, floor, "SimCLR composition")

    batch, queue_length = 256, (8192 if args.quick else 65536)
    for precision in ("tf32", "bf16"):
        case = f"B={batch} K={queue_length} d={DIM} {precision} loss+dq"
        flops = 2.0 * 2.0 * batch * queue_length * DIM
        queue_bytes = queue_length * DIM * 4
        floor = floor_ms(flops, rates[precision], queue_bytes, bandwidth)
        note = f"MoCo v2 composition; reading the fp32 queue once: {queue_bytes / bandwidth * 1e3:.4f} ms"

        def make_inputs():
            q = (torch.rand(batch, DIM, device="cuda") * 2 - 1).requires_grad_(True)
            k = torch.rand(batch, DIM, device="cuda") * 2 - 1
            queue = F.normalize(torch.rand(queue_length, DIM, device="cuda") * 2 - 1, dim=1)
            return (q, k, queue, TEMPERATURE), q

        runner.run_impls("infonce", case, moco_infonce, make_inputs, precision, flops, floor, note)

    append_records(args.out, runner.records)
    print(f"   {len(runner.records)} records appended to {args.out}")


if __name__ == "__main__":
    main()
