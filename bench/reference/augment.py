#!/usr/bin/env python3
"""torchvision peer of bench/NativeContrast.Bench/AugmentBench.cs: SimCLR views on one CPU thread.

  python3 bench/reference/augment.py --out bench/results/augment-<host>.json [--quick]

Times the same cases as the engine's "augment" suite, from uint8 HWC images to normalised float32 CHW views, with
torch.set_num_threads(1):
  augment-32:  SimCLR's CIFAR recipe, 32x32 views of 32x32 images: RandomResizedCrop (bilinear, antialiased),
               RandomHorizontalFlip, RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8), RandomGrayscale(0.2),
               no blur (SimCLR drops it on CIFAR), then conversion to float32 and Normalize;
  augment-224: SimCLR's ImageNet recipe, 224x224 views of 256x256 images: the same with ColorJitter(0.8, 0.8, 0.8,
               0.2) and RandomApply(GaussianBlur(23, sigma 0.1..2), p=0.5) after the grayscale step.
The tensor pipeline (HWC -> CHW permute inside the timed loop) uses torchvision.transforms.v2 when it is there
("torchvision-v2", torchvision >= 0.16), else the v1 transforms on tensors ("torchvision-v1"); the classic PIL-image
pipeline ("torchvision-pil", PIL images in, ToTensor out) runs too when Pillow is installed. Throughput is views
per second of the thread's CPU time (time.thread_time, as the engine measures), median_ms the wall time per view.
Appends records with the engine's field names; needs no GPU and no network.
"""
import argparse
import datetime
import json
import os
import platform
import time
import warnings

import torch
import torchvision
import torchvision.transforms as T1

try:
    with warnings.catch_warnings():  # 0.15 announces v2 as a beta
        warnings.simplefilter("ignore")
        import torchvision.transforms.v2 as T
    T.ToDtype(torch.float32, scale=True)  # scale= arrived in 0.16; 0.15's v2 is too different to time
    IMPL = "torchvision-v2"
except (ImportError, TypeError):
    T = T1
    IMPL = "torchvision-v1"

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def blur_kernel(size):
    k = max(3, int(0.1 * size))
    return k + 1 if k % 2 == 0 else k


def recipe(api, size, strength, blur):
    """SimCLR's steps in torchvision's order: colour strength s, blur only for ImageNet-size views."""
    steps = [
        api.RandomResizedCrop(size, antialias=True),  # PIL always antialiases; tensors need asking before 0.17
        api.RandomHorizontalFlip(),
        api.RandomApply([api.ColorJitter(0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength)], p=0.8),
        api.RandomGrayscale(p=0.2),
    ]
    if blur:
        steps.append(api.RandomApply([api.GaussianBlur(blur_kernel(size), sigma=(0.1, 2.0))], p=0.5))
    return steps


def simclr(size, strength, blur):
    """uint8 HWC tensor in, normalised float32 CHW tensor out."""
    to_float = T.ToDtype(torch.float32, scale=True) if IMPL == "torchvision-v2" else T.ConvertImageDtype(torch.float32)
    pipeline = T.Compose([*recipe(T, size, strength, blur), to_float, T.Normalize(MEAN, STD)])
    return lambda hwc: pipeline(hwc.permute(2, 0, 1))


def simclr_pil(size, strength, blur):
    return T1.Compose([*recipe(T1, size, strength, blur), T1.ToTensor(), T1.Normalize(MEAN, STD)])


def measure(transform, images, repeats):
    """Median wall ms per view and median views per CPU second of this thread."""
    for img in images:  # warm-up
        transform(img)
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.thread_time()
        for img in images:
            transform(img)
        cpus.append((time.thread_time() - cpu) / len(images))
        walls.append((time.perf_counter() - wall) / len(images))
    walls.sort()
    cpus.sort()
    return walls[len(walls) // 2] * 1e3, 1.0 / max(cpus[len(cpus) // 2], 1e-12)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu-only"
    repeats = 3 if args.quick else 7
    # kernel, recipe, image side, view side, colour strength, blur, images: the same as AugmentBench.cs.
    cases = [
        ("augment-32", "simclr-cifar", 32, 32, 0.5, False, 256 if args.quick else 2048),
        ("augment-224", "simclr", 256, 224, 1.0, True, 16 if args.quick else 128),
    ]
    records = []
    for kernel, name, image_size, view_size, strength, blur, count in cases:
        # Smooth random images (upsampled noise) rather than white noise: the cost does not depend on content.
        low = torch.randint(0, 256, (count, 3, image_size // 4, image_size // 4), dtype=torch.uint8)
        chw = torch.nn.functional.interpolate(low.float(), size=(image_size, image_size), mode="bilinear").round().clamp(0, 255).to(torch.uint8)
        hwc = [img.permute(1, 2, 0).contiguous() for img in chw]
        pipelines = [(IMPL, simclr(view_size, strength, blur), hwc)]
        try:
            from PIL import Image
            pil = [Image.fromarray(img.numpy()) for img in hwc]
            pipelines.append(("torchvision-pil", simclr_pil(view_size, strength, blur), pil))
        except ImportError:
            pass
        for impl, transform, inputs in pipelines:
            ms, per_core = measure(transform, inputs, repeats)
            record = {
                "kernel": kernel,
                "case": f"{name} {image_size}->{view_size} 1 thread",
                "impl": impl,
                "median_ms": ms,
                "peak_bytes": 0,
                "gpu": gpu,
                "throughput": per_core,
                "throughput_unit": "images/s/core",
                "note": f"one image = one SimCLR view normalised to float32 CHW; per thread CPU second ({1e3 / ms:.0f} per wall second); "
                        f"torch {torch.__version__}, torchvision {torchvision.__version__}; {os.cpu_count()} cores on {platform.node()}",
                "timestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            records.append(record)
            print(f"{kernel:<16} {record['case']:<34} {impl:<16} {ms:10.4f} ms  {per_core:10.0f} images/s/core")

    existing = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            existing = json.load(f)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
        json.dump(existing + records, f, indent=2)
    os.replace(args.out + ".tmp", args.out)
    print(f"   {len(records)} records appended to {args.out}")


if __name__ == "__main__":
    main()
