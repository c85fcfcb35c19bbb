#!/usr/bin/env python3
"""PyTorch peer of the engine's "resnet" suite (bench/NativeContrast.Bench/ResNetBench.cs).

One training step of a torchvision ResNet with its classifier: zero the gradients, forward, cross-entropy, backward,
plain SGD (lr 0.01, no momentum: the engine's step is one Axpy over its parameter arena).
  resnet18-step: resnet18(num_classes=10) with the CIFAR stem (conv1 3x3 stride 1, maxpool = Identity), 32x32x3, b512
  resnet50-step: resnet50(num_classes=1000), 224x224x3, b128
Implementations, all channels_last: torch-eager-fp32, torch-eager-tf32, torch-eager-bf16 (autocast, TF32 elsewhere),
torch-compile (TF32) and torch-compile-bf16. Timed with CUDA events (benchlib.median_ms: the median after a warm-up);
peak memory from torch.cuda.max_memory_allocated. The floor is the step's FLOPs (2 per MAC forward, twice that
backward, the stem without its input gradient: the same count as the engine) over a large GEMM's measured
throughput at the same precision.

usage: python3 bench/reference/resnet.py --out bench/results/kernels-<gpu>.json [--quick]
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from benchlib import append_records, median_ms, parse_args, peak_since, require_cuda, reset_peak, timestamp


def build(kernel, classes):
    if kernel == "resnet18-step":
        model = torchvision.models.resnet18(num_classes=classes)
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model = torchvision.models.resnet50(num_classes=classes)
    return model


def step_flops(model, x):
    """FLOPs of a training step from the MACs of every convolution and linear layer in one forward."""
    macs = {}

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs[module] = output.numel() * (module.in_channels // module.groups) * k
        elif isinstance(module, nn.Linear):
            macs[module] = output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    stem = macs.pop(model.conv1)
    return 2 * stem * 2 + 2 * sum(macs.values()) * 3


def set_tf32(enabled):
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def gemm_tflops(n, dtype):
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    ms = median_ms(lambda: torch.matmul(a, b), 3, 10)
    return 2 * n ** 3 / (ms * 1e9)


def run_case(kernel, size, batch, classes, impl, quick):
    bf16 = impl.endswith("bf16")
    compiled = impl.startswith("torch-compile")
    set_tf32(impl != "torch-eager-fp32")
    base = reset_peak(empty_cache=True)

    model = build(kernel, classes).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device="cuda")
    flops = step_flops(model, x)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.0)
    forward = torch.compile(model) if compiled else model

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()

    ms = median_ms(step, warmup=5 if compiled else 3, reps=5 if quick else 20)
    peak = peak_since(base)
    peak_tflops = gemm_tflops(4096 if quick else 8192, torch.bfloat16 if bf16 else torch.float32)
    del forward, model, optimizer, x, y
    return {
        "kernel": kernel,
        "case": f"{'cifar' if kernel == 'resnet18-step' else 'imagenet'}-{size}x{size}x3-b{batch}",
        "impl": impl,
        "median_ms": ms,
        "peak_bytes": int(peak),
        "gpu": torch.cuda.get_device_name(),
        "floor_ms": flops / (peak_tflops * 1e9),
        "tflops": flops / (ms * 1e9),
        "throughput": batch / (ms / 1000),
        "throughput_unit": "images/s",
        "note": f"torch {torch.__version__}, torchvision {torchvision.__version__}, channels_last; "
                f"floor = FLOPs at {peak_tflops:.0f} TFLOP/s (measured GEMM)",
        "timestamp": timestamp(),
    }


def main():
    args = parse_args(__doc__, out_help="JSON list of records to append to", quick_help="small batches, few repetitions, no torch.compile (smoke run)")
    require_cuda("resnet.py")

    cases = [("resnet18-step", 32, 64 if args.quick else 512, 10), ("resnet50-step", 224, 16 if args.quick else 128, 1000)]
    impls = ["torch-eager-fp32", "torch-eager-tf32", "torch-eager-bf16", "torch-compile", "torch-compile-bf16"]
    if args.quick:  # each torch.compile peer is a cold compile of a forward and a backward graph: minutes in all
        print("torch-compile and torch-compile-bf16 skipped in --quick (cold compiles); nothing recorded for them")
        impls = [impl for impl in impls if not impl.startswith("torch-compile")]
    records = []
    for kernel, size, batch, classes in cases:
        for impl in impls:
            try:
                r = run_case(kernel, size, batch, classes, impl, args.quick)
            except Exception as e:  # one failing implementation (e.g. no compiler toolchain) must not lose the others
                print(f"{kernel:16} {impl:20} failed: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            records.append(r)
            print(f"{r['kernel']:16} {r['case']:26} {impl:20} {r['median_ms']:9.3f} ms  floor {r['floor_ms']:8.3f} ms  "
                  f"{r['throughput']:9.0f} images/s  peak {r['peak_bytes'] / 2**20:7.0f} MiB")
    append_records(args.out, records)
    print(f"{len(records)} records appended to {args.out}")


if __name__ == "__main__":
    main()
