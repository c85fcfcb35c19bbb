#!/usr/bin/env python3
"""PyTorch peers of the "optim" suite (bench/NativeContrast.Bench/OptimBench.cs), on ResNet-50's parameter list.

Cases (kernel / impl), appended to --out in the shared record schema:
  copy      torch-copy                  flat device-to-device copy: the bandwidth every floor uses
  ema       torch-eager-loop            MoCo's per-parameter loop: p_k.data = p_k.data * m + p_q.data * (1 - m)
  ema       torch-foreach               torch._foreach_lerp_(teacher, student, 1 - m)
  sgd       torch-loop|foreach|fused    torch.optim.SGD(momentum 0.9, weight decay 1e-4)
  sgd+clip  torch-foreach|fused         clip_grad_norm_(1.0) then the SGD step
  adamw     torch-loop|foreach|fused    torch.optim.AdamW(weight decay 0.05)
  sgd+ema   torch-fused+foreach-lerp    the SGD step, then _foreach_lerp_ of the teacher
  adamw+ema torch-fused+foreach-lerp    the AdamW step, then _foreach_lerp_ of the teacher
PyTorch has no LARS, so the "lars" rows have no peer here. Floors use the same traffic model as OptimBench.cs
(floats read + written per parameter) over the copy bandwidth measured in this run.

Usage: python3 bench/reference/optim.py --out bench/results/kernels-<gpu>.json [--quick]
Needs torch with CUDA; torchvision is optional (ResNet-50's shapes are generated when it is missing). No network.
"""
import torch

from benchlib import append_records, median_ms, parse_args, peak_since, require_cuda, reset_peak, timestamp

CASE = "resnet50"


def resnet50_shapes():
    """Parameter shapes of torchvision's resnet50 in its parameters() order: 161 tensors, 25,557,032 floats."""
    try:
        import torchvision

        return [tuple(p.shape) for p in torchvision.models.resnet50().parameters()]
    except ImportError:
        shapes = [(64, 3, 7, 7), (64,), (64,)]
        inplanes = 64
        for stage, blocks in enumerate([3, 4, 6, 3]):
            width = 64 << stage
            for b in range(blocks):
                shapes += [(width, inplanes, 1, 1), (width,), (width,)]
                shapes += [(width, width, 3, 3), (width,), (width,)]
                shapes += [(width * 4, width, 1, 1), (width * 4,), (width * 4,)]
                if b == 0:
                    shapes += [(width * 4, inplanes, 1, 1), (width * 4,), (width * 4,)]
                inplanes = width * 4
        return shapes + [(1000, 2048), (1000,)]


def main():
    args = parse_args(__doc__, out_help="JSON list to append records to", quick_help="fewer repetitions")
    require_cuda("optim.py")
    reps = 10 if args.quick else 50
    device = torch.device("cuda")
    gpu = torch.cuda.get_device_name(device)
    torch.manual_seed(0)

    shapes = resnet50_shapes()
    n = sum(torch.Size(s).numel() for s in shapes)
    assert len(shapes) == 161 and n == 25_557_032, (len(shapes), n)
    records = []

    def fresh(scale=0.05):
        return [torch.empty(s, device=device).uniform_(-scale, scale) for s in shapes]

    def record(kernel, impl, ms, floats_per_element, bytes_per_ms, note=None):
        nbytes = floats_per_element * 4 * n
        r = {
            "kernel": kernel,
            "case": CASE,
            "impl": impl,
            "median_ms": ms,
            "peak_bytes": peak_since(),
            "gpu": gpu,
            "floor_ms": nbytes / bytes_per_ms,
            "gbps": nbytes / ms / 1e6,
            "timestamp": timestamp(),
        }
        if note:
            r["note"] = note
        records.append(r)
        print(f"{kernel:<12} {CASE:<10} {impl:<26} {ms:10.4f} ms  floor {r['floor_ms']:9.4f} ms ({ms / r['floor_ms']:.2f}x)  "
              f"peak {r['peak_bytes'] >> 20:6d} MiB")

    def timed(kernel, impl, floats_per_element, bytes_per_ms, setup, note=None):
        """setup() builds the state and returns the work; peak memory counts from before setup."""
        reset_peak(empty_cache=True)
        work = setup()
        ms = median_ms(work, warmup=5, reps=reps)
        record(kernel, impl, ms, floats_per_element, bytes_per_ms, note)

    # Copy bandwidth: read n floats, write n floats.
    src, dst = torch.empty(n, device=device).uniform_(), torch.empty(n, device=device)
    reset_peak()
    copy_ms = median_ms(lambda: dst.copy_(src), warmup=5, reps=reps)
    bytes_per_ms = 2 * 4 * n / copy_ms
    record("copy", "torch-copy", copy_ms, 2, bytes_per_ms, "device-to-device copy: the bandwidth every floor uses")
    del src, dst

    m = 0.996

    def moco_loop():
        teacher, student = fresh(), fresh()

        def work():
            with torch.no_grad():
                for p_k, p_q in zip(teacher, student):
                    p_k.data = p_k.data * m + p_q.data * (1.0 - m)

        return work

    def foreach_lerp():
        teacher, student = fresh(), fresh()
        return lambda: torch._foreach_lerp_(teacher, student, 1.0 - m)

    timed("ema", "torch-eager-loop", 3, bytes_per_ms, moco_loop, "MoCo's per-parameter loop (3 launches per tensor)")
    timed("ema", "torch-foreach", 3, bytes_per_ms, foreach_lerp, "torch._foreach_lerp_ over 161 tensors")

    def optimizer_case(make, clip=False, ema=False):
        def setup():
            params = [torch.nn.Parameter(p) for p in fresh()]
            for p in params:
                p.grad = torch.empty_like(p).uniform_(-1, 1)
            optimizer = make(params)
            teacher = [p.detach().clone() for p in params] if ema else None
            student = [p.detach() for p in params]

            def work():
                if clip:
                    torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
                optimizer.step()
                if ema:
                    torch._foreach_lerp_(teacher, student, 1.0 - m)

            return work

        return setup

    def variants(kernel, factory, floats, impls, clip=False, ema=False):
        for impl, options in impls:
            try:
                setup = optimizer_case(lambda params: factory(params, **options), clip=clip, ema=ema)
                timed(kernel, impl, floats, bytes_per_ms, setup)
            except (TypeError, RuntimeError) as error:  # fused=True needs a recent torch
                print(f"{kernel:<12} {CASE:<10} {impl:<26} unavailable: {error}")

    sgd = lambda params, **o: torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4, **o)
    adamw = lambda params, **o: torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, **o)
    all_impls = [("torch-loop", {"foreach": False}), ("torch-foreach", {"foreach": True}), ("torch-fused", {"fused": True})]
    variants("sgd", sgd, 5, all_impls)
    variants("sgd+clip", sgd, 6, all_impls[1:], clip=True)
    variants("adamw", adamw, 7, all_impls)
    variants("sgd+ema", sgd, 7, [("torch-fused+foreach-lerp", {"fused": True}), ("torch-foreach+foreach-lerp", {"foreach": True})], ema=True)
    variants("adamw+ema", adamw, 9, [("torch-fused+foreach-lerp", {"fused": True}), ("torch-foreach+foreach-lerp", {"foreach": True})], ema=True)

    append_records(args.out, records)
    print(f"{len(records)} records appended to {args.out}")


if __name__ == "__main__":
    main()
