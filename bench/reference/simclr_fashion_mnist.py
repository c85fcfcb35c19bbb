#!/usr/bin/env python3
"""PyTorch peer of the engine's SimCLR recipe on Fashion-MNIST, for a side-by-side quality comparison (CPU).

  /usr/bin/python3 bench/reference/simclr_fashion_mnist.py --epochs E --out bench/results/simclr-fmnist-torch.json
  /usr/bin/python3 bench/reference/simclr_fashion_mnist.py --subset 2048 --epochs 1 --probe-epochs 2   # smoke test
  /usr/bin/python3 bench/reference/simclr_fashion_mnist.py --epochs E --max-steps 25                   # speed only

The recipe is the engine's `nativecontrast train --method simclr --dataset fashion-mnist` (Trainer.cs, SimClr.cs):
  data       Debian's /usr/share/datasets/fashion-mnist IDX files (60,000 train, 10,000 test, 28x28x1), read with
             numpy; every view and every evaluation image normalised with the fixed Fashion-MNIST statistics
             (IdxDataset.FashionStats: mean 0.2860, std 0.3530), the training split's, for both splits.
  views      "simclr-cifar" (AugmentationPresets.SimClrCifar) at 28 px, two per image, on uint8 CHW tensors as the
             engine's ImageOps mirror torchvision's uint8 path: RandomResizedCrop(28, (0.08, 1), (3/4, 4/3),
             bilinear, antialias=True) -> RandomHorizontalFlip(0.5) -> RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1),
             0.8) -> RandomGrayscale(0.2) -> ConvertImageDtype(float32) -> Normalize. On one channel torchvision
             0.14 applies brightness and contrast (contrast blends with the image's float mean, as the engine) and
             leaves saturation, hue and grayscale as identities, as the engine does.
  backbone   ResNet-18 x0.25, CIFAR stem (3x3 s1 conv 1->16, BN, ReLU, no max pool), basic blocks 16/32/64/128,
             1x1 conv + BN downsample, global average pool -> 128-d; torchvision's names and init (kaiming_normal_
             fan_out/relu, BN 1/0, zero_init_residual False), so the engine's exported encoder loads into it.
  projector  Linear(128, 128) -> ReLU -> Linear(128, 128), biases, nn.Linear's default init (= Nn/Linear.cs).
  loss       NT-Xent, tau 0.2 (the engine's default for images of 64 px or less; --temperature), the two views as
             ONE batch of 2N (view a rows 0..N-1, view b N..2N-1).
  optimiser  LARS as Optim/Lars.cs + CpuBackend.LarsStep: per tensor trust = 0.001*|w| / (|g| + wd*|w|) (1 if a norm
             is 0), v <- 0.9*v + lr*trust*(g + wd*w), w <- w - v; biases and BN parameters: no decay, trust 1.
             wd 1e-6. lr peak 0.3*batch/256, linear warm-up from 0 over W = round(min(10, E/10) * steps/epoch)
             steps, then cosine to 0 at the last step (LearningRateSchedule.cs). steps/epoch = 60000 // batch
             (last partial batch dropped), order reshuffled every epoch.
  monitor    after every epoch: kNN (KnnClassifier.cs: k 200, T 0.1, cosine, votes exp(sim/T)) of the clean test
             images against all 60,000 train images, backbone features in eval mode.
  final      linear probe (LinearProbe.cs: features standardised with the train mean/std, Linear(128, 10) trained
             with SGD momentum 0.9 Nesterov, wd 1e-5 on the weight only, lr 0.1 cosine to 0 over all steps, batch
             256, last partial batch dropped, 100 epochs), and the raw-pixel kNN and linear probe on the same split.

images/s counts N training images per step (both views of an image count once, as the engine's metric does) over
training steps only; "epoch_images_per_s_with_knn" also counts the kNN monitor inside the epoch's time, as the
engine's EpochMetrics do. The result is one JSON object (not a list of benchmark records).
"""
import argparse
import gzip
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T

DATA_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530  # IdxDataset.FashionStats (train split)

RECIPE = {
    "name": "simclr-v1 fashion-mnist (engine peer)",
    "backbone": "resnet18 x0.25, cifar stem (3x3 s1, no max pool), 128-d features",
    "projector": "Linear(128,128)-ReLU-Linear(128,128), biases, no BN",
    "loss": "nt-xent",
    "temperature": 0.2,
    "augmentations": "simclr-cifar @28: RandomResizedCrop(28,(0.08,1),(3/4,4/3),bilinear,antialias) -> "
                     "HFlip(0.5) -> RandomApply(ColorJitter(0.4,0.4,0.4,0.1),0.8) -> RandomGrayscale(0.2) -> "
                     "Normalize; uint8 tensor path; on 1 channel saturation/hue/grayscale are identities",
    "normalization": {"mean": MEAN, "std": STD},
    "optimizer": "lars",
    "base_lr_per_256": 0.3,
    "momentum": 0.9,
    "weight_decay": 1e-6,
    "trust_coefficient": 0.001,
    "exclude_bias_and_norm": True,
    "schedule": "linear warm-up from 0 over round(min(10, epochs/10) * steps_per_epoch) steps, cosine to 0",
    "knn": {"k": 200, "temperature": 0.1, "bank": "all train images"},
    "linear_probe": {"optimizer": "sgd nesterov", "momentum": 0.9, "weight_decay": 1e-5, "decay_on_bias": False,
                     "lr": 0.1, "schedule": "cosine to 0", "batch": 256, "standardize": "train mean/std"},
}


# ---------------------------------------------------------------------------------------------------------- data

def read_idx(path):
    """An IDX file (gzip or not) as a numpy array; magic 0x0803 images (n, rows, cols), 0x0801 labels (n)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic not in (0x0801, 0x0803):
        raise ValueError(f"{path}: wrong IDX magic 0x{magic:08x}")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise ValueError(f"{path}: {len(data) - offset} bytes of data for dimensions {dims}")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims).copy()


def load_split(split):
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(DATA_DIR, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(DATA_DIR, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)
    if images.shape[0] != labels.shape[0] or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{split}: {images.shape[0]} images, {labels.shape[0]} labels in {labels.min()}..{labels.max()}")
    return images, labels


def view_transform(size=28):
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0),
                            interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.RandomHorizontalFlip(0.5),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(0.2),
        T.ConvertImageDtype(torch.float32),
        T.Normalize((MEAN,), (STD,)),
    ])


class TwoViews(torch.utils.data.Dataset):
    """Two independent views of each uint8 28x28 image, as normalised float32 [1, 28, 28] tensors."""

    def __init__(self, images, transform):
        self.images = images
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = torch.from_numpy(self.images[i]).unsqueeze(0)  # uint8 [1, H, W]
        return self.transform(image), self.transform(image)


def normalized(images):
    """The evaluation transform: (x / 255 - mean) / std, float32 [n, 1, H, W]."""
    x = torch.from_numpy(images).to(torch.float32).div_(255.0).unsqueeze(1)
    return x.sub_(MEAN).div_(STD)


# --------------------------------------------------------------------------------------------------------- model

class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18Cifar(nn.Module):
    """torchvision's resnet18 layout with a width multiplier and the CIFAR stem; output: pooled features."""

    def __init__(self, width=0.25, in_channels=1, layers=(2, 2, 2, 2)):
        super().__init__()

        def w(base):  # ResNetOptions.Width: max(1, round(base * multiplier)); C# and Python both round half to even
            return max(1, int(round(base * width)))

        stem = w(64)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        inplanes = stem
        for i, blocks in enumerate(layers):
            planes = w(64 << i)
            stage = []
            for b in range(blocks):
                stage.append(BasicBlock(inplanes, planes, 2 if i > 0 and b == 0 else 1))
                inplanes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def projector(dim, hidden, out):
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


def nt_xent(z, tau):
    """NT-Xent over 2N rows: positive of row i is (i + N) mod 2N, softmax over the other 2N - 1 rows, mean."""
    z = F.normalize(z, dim=1)  # x / max(|x|, 1e-12), as the engine
    rows = z.shape[0]
    n = rows // 2
    logits = (z @ z.t()) / tau
    self_mask = torch.eye(rows, dtype=torch.bool)
    logits = logits.masked_fill(self_mask, float("-inf"))
    target = (torch.arange(rows) + n) % rows
    loss = F.cross_entropy(logits, target)
    with torch.no_grad():
        positive = (logits[torch.arange(rows), target] * tau).mean().item()
        top1 = (logits.argmax(dim=1) == target).float().mean().item()
    return loss, positive, top1


# ----------------------------------------------------------------------------------------------------- optimiser

class Lars(torch.optim.Optimizer):
    """The engine's two LARS forms (Optim/Lars.cs, CpuBackend.LarsStep); groups with exclude=True get no decay, trust 1.

    simclr (google-research/simclr's optimiser): trust = eta*|w| / |g + wd*w|, v <- mu*v + lr*trust*(g + wd*w), w -= v.
    solo (solo-learn's solo/utils/lars.py): trust = eta*|w| / (|g| + wd*|w| + eps), min(trust/lr, 1) with clip_lr,
      d = trust*(g + wd*w), b <- mu*b + d, w -= lr*b; a tensor with a zero weight or gradient norm is left to plain SGD.
    """

    def __init__(self, params, lr=0.0, momentum=0.9, weight_decay=1e-6, trust_coefficient=0.001, variant="simclr",
                 eps=1e-8, clip_lr=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, exclude=False,
                                      trust_coefficient=trust_coefficient, variant=variant, eps=eps, clip_lr=clip_lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, mu, wd, eta = group["lr"], group["momentum"], group["weight_decay"], group["trust_coefficient"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p)
                v = state["velocity"]
                w_norm = torch.linalg.vector_norm(p).item()
                if group["variant"] == "simclr":
                    d = g if group["exclude"] or wd == 0 else g.add(p, alpha=wd)
                    d_norm = torch.linalg.vector_norm(d).item()
                    trust = eta * w_norm / d_norm if not group["exclude"] and w_norm > 0 and d_norm > 0 else 1.0
                    v.mul_(mu).add_(d, alpha=lr * trust)
                    p.sub_(v)
                else:
                    g_norm = torch.linalg.vector_norm(g).item()
                    if group["exclude"] or w_norm == 0 or g_norm == 0:
                        d = g
                    else:
                        trust = eta * (w_norm / (g_norm + wd * w_norm + group["eps"]))
                        if group["clip_lr"]:
                            trust = min(trust / lr, 1.0) if lr > 0 else 1.0
                        d = g.add(p, alpha=wd).mul_(trust)
                    v.mul_(mu).add_(d)
                    p.sub_(v, alpha=lr)


def split_decay(named_parameters):
    """Biases and BatchNorm parameters (the 1-d tensors of this model) apart from weights (ParameterKind)."""
    decay, exclude = [], []
    for _, p in named_parameters:
        (exclude if p.ndim <= 1 else decay).append(p)
    return decay, exclude


def warmup_cosine(step, peak, total, warmup, start=0.0, floor=0.0):
    """LearningRateSchedule.At: computed in double, rounded to float32 once."""
    if step < warmup:
        value = start + (peak - start) * step / warmup
    elif step >= total:
        value = floor
    else:
        progress = (step - warmup) / (total - warmup)
        value = floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return float(np.float32(value))


# ---------------------------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def extract(backbone, x, batch=256):
    backbone.eval()
    out = [backbone(x[i:i + batch]) for i in range(0, len(x), batch)]
    return torch.cat(out)


@torch.no_grad()
def knn(train_x, train_y, test_x, test_y, k=200, temperature=0.1, classes=10, block=256):
    """KnnClassifier.Evaluate: returns (top-1, top-5) as fractions."""
    bank = F.normalize(train_x.float(), dim=1, eps=1e-12)
    queries = F.normalize(test_x.float(), dim=1, eps=1e-12)
    k = min(k, len(bank))
    top1 = top5 = 0
    for start in range(0, len(queries), block):
        sims = queries[start:start + block] @ bank.t()
        values, indices = sims.topk(k, dim=1)
        weights = torch.exp(values.double() / temperature)
        votes = torch.zeros(len(values), classes, dtype=torch.float64).scatter_add_(1, train_y[indices], weights)
        # Ranked best first; ties go to the lower class (stable sort), as the engine.
        ranked = torch.sort(votes, dim=1, descending=True, stable=True).indices
        y = test_y[start:start + block].unsqueeze(1)
        top1 += (ranked[:, :1] == y).sum().item()
        top5 += (ranked[:, :5] == y).any(dim=1).sum().item()
    return top1 / len(queries), top5 / len(queries)


def linear_probe(train_x, train_y, test_x, test_y, epochs=100, batch=256, lr=0.1, momentum=0.9, weight_decay=1e-5,
                 seed=0, classes=10):
    """LinearProbe.Train: returns (top-1, top-5, final epoch's mean train loss)."""
    tr = train_x.double()
    mean = tr.mean(dim=0)
    variance = (tr * tr).mean(dim=0) - mean * mean
    scale = torch.where(variance > 1e-12, 1 / variance.clamp_min(1e-300).sqrt(), torch.zeros_like(variance))
    xs = ((tr - mean) * scale).float()
    xt = ((test_x.double() - mean) * scale).float()
    torch.manual_seed(seed)
    head = nn.Linear(xs.shape[1], classes)
    sgd = torch.optim.SGD([{"params": [head.weight], "weight_decay": weight_decay},
                           {"params": [head.bias], "weight_decay": 0.0}],
                          lr=lr, momentum=momentum, nesterov=True)
    batch = min(batch, len(xs))
    steps = len(xs) // batch
    total = epochs * steps
    generator = torch.Generator().manual_seed(seed ^ 0x5EED)
    step = 0
    epoch_loss = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(xs), generator=generator)
        epoch_loss = 0.0
        for s in range(steps):
            rows = order[s * batch:(s + 1) * batch]
            current = warmup_cosine(step, lr, total, 0)
            for group in sgd.param_groups:
                group["lr"] = current
            loss = F.cross_entropy(head(xs[rows]), train_y[rows])
            sgd.zero_grad(set_to_none=False)
            loss.backward()
            sgd.step()
            epoch_loss += loss.item()
            step += 1
    with torch.no_grad():
        logits = head(xt)
        ranked = torch.sort(logits, dim=1, descending=True, stable=True).indices
        y = test_y.unsqueeze(1)
        top1 = (ranked[:, :1] == y).sum().item() / len(xt)
        top5 = (ranked[:, :5] == y).any(dim=1).sum().item() / len(xt)
    return top1, top5, epoch_loss / max(1, steps)


# ----------------------------------------------------------------------------------------------------------- run

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pct(x):
    return f"{100 * x:.2f}%"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, required=True, help="SimCLR epochs (required: no default run)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--optimizer", choices=["lars", "lars-solo"], default="lars-solo",
                        help="the engine's --optimizer: lars-solo is its choice for images of 64 px or less")
    parser.add_argument("--temperature", type=float, default=0.2, help="NT-Xent tau (the engine's default here: 0.2)")
    parser.add_argument("--wd", type=float, help="weight decay; by default the optimiser recipe's (1e-5 / 1e-6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads of the training process")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (augmentation)")
    parser.add_argument("--out", help="JSON file to write at the end")
    parser.add_argument("--probe-epochs", type=int, default=100)
    parser.add_argument("--subset", type=int, help="first N train images and first min(N, 10000) test images")
    parser.add_argument("--max-steps", type=int, help="stop after this many training steps, skip evaluation (speed)")
    parser.add_argument("--log-every", type=int, default=20, help="print a step line every this many steps")
    args = parser.parse_args()
    if args.epochs < 1 or args.batch < 2 or args.threads < 1 or args.workers < 0 or args.probe_epochs < 1:
        parser.error("--epochs, --threads, --probe-epochs >= 1, --batch >= 2, --workers >= 0")

    load_start = os.getloadavg()
    wall = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    train_images, train_labels = load_split("train")
    test_images, test_labels = load_split("test")
    if args.subset:
        train_images, train_labels = train_images[:args.subset], train_labels[:args.subset]
        test_images, test_labels = test_images[:min(args.subset, 10000)], test_labels[:min(args.subset, 10000)]
    if len(train_images) < args.batch:
        parser.error(f"{len(train_images)} training images, fewer than one batch of {args.batch}")
    train_y = torch.from_numpy(train_labels)
    test_y = torch.from_numpy(test_labels)
    train_clean = normalized(train_images)
    test_clean = normalized(test_images)

    backbone = ResNet18Cifar(width=0.25, in_channels=1)
    head = projector(backbone.feature_dim, backbone.feature_dim, 128)
    model = nn.Sequential(backbone, head)
    decay, exclude = split_decay(model.named_parameters())
    steps_per_epoch = len(train_images) // args.batch
    total_steps = steps_per_epoch * args.epochs
    solo = args.optimizer == "lars-solo"
    base_lr = 0.4 if solo else 0.3
    weight_decay = args.wd if args.wd is not None else (1e-5 if solo else 1e-6)
    peak = float(np.float32(np.float32(base_lr) * args.batch / 256))
    warmup_epochs = min(10.0, args.epochs / 10.0)
    warmup = min(total_steps, int(round(warmup_epochs * steps_per_epoch)))
    optimizer = Lars([{"params": decay}, {"params": exclude, "exclude": True}], lr=0.0, momentum=0.9,
                     weight_decay=weight_decay, trust_coefficient=0.02 if solo else 0.001,
                     variant="solo" if solo else "simclr", clip_lr=solo)
    RECIPE.update(optimizer=args.optimizer, base_lr_per_256=base_lr, weight_decay=weight_decay,
                  trust_coefficient=0.02 if solo else 0.001, clip_lr=solo)

    loader = torch.utils.data.DataLoader(
        TwoViews(train_images, view_transform(28)), batch_size=args.batch, shuffle=True, drop_last=True,
        num_workers=args.workers, persistent_workers=args.workers > 0,
        generator=torch.Generator().manual_seed(args.seed))

    params = sum(p.numel() for p in model.parameters())
    print(f"simclr (torch {torch.__version__}, torchvision {torchvision.__version__}) on fashion-mnist: "
          f"{len(train_images)} train / {len(test_images)} test, resnet18 x0.25 cifar stem "
          f"({backbone.feature_dim}-d, {params:,} parameters), batch {args.batch}, lars lr {peak:g} "
          f"(warm-up {warmup} steps, cosine), {args.optimizer} wd {weight_decay:g}, {args.epochs} epochs x {steps_per_epoch} steps, "
          f"{args.threads} threads + {args.workers} loader worker(s); load {load_start[0]:.2f} {load_start[1]:.2f} "
          f"{load_start[2]:.2f}", flush=True)

    history = []
    step = 0
    train_seconds = 0.0
    window = []
    knn1 = knn5 = None
    features = None
    stopped = False
    for epoch in range(args.epochs):
        model.train()
        epoch_start = time.perf_counter()
        epoch_train = 0.0
        loss_sum = pos_sum = acc_sum = 0.0
        epoch_steps = 0
        last = time.perf_counter()
        for a, b in loader:
            x = torch.cat([a, b])  # view a rows 0..N-1, view b rows N..2N-1: one batch of 2N
            lr = warmup_cosine(step, peak, total_steps, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, positive, top1 = nt_xent(model(x), args.temperature)
            value = loss.item()
            if not math.isfinite(value):
                raise SystemExit(f"non-finite loss {value} at step {step}")
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            optimizer.step()
            now = time.perf_counter()
            window.append(now - last)
            epoch_train += now - last
            last = now
            del window[:-20]
            loss_sum += value
            pos_sum += positive
            acc_sum += top1
            epoch_steps += 1
            step += 1
            if args.log_every and (step % args.log_every == 0 or step == 1):
                print(f"  step {step}/{total_steps}  loss {value:.4f}  pos-cos {positive:.4f}  top-1 {100 * top1:.1f}%  "
                      f"lr {lr:.4g}  {args.batch * len(window) / sum(window):.1f} images/s (last {len(window)} steps)  "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
            if args.max_steps and step >= args.max_steps:
                stopped = True
                break
        train_seconds += epoch_train
        record = {"epoch": epoch, "steps": epoch_steps, "loss": loss_sum / max(1, epoch_steps),
                  "positive_cosine": pos_sum / max(1, epoch_steps), "contrastive_top1": acc_sum / max(1, epoch_steps),
                  "train_seconds": epoch_train, "images_per_s": epoch_steps * args.batch / max(epoch_train, 1e-9),
                  "load_1min": os.getloadavg()[0]}
        if stopped:
            print(f"stopped after {step} steps: {record['images_per_s']:.1f} images/s over all of them, "
                  f"{args.batch * len(window) / sum(window):.1f} images/s over the last {len(window)}; "
                  f"load {os.getloadavg()}", flush=True)
            return
        knn_start = time.perf_counter()
        features = (extract(backbone, train_clean), extract(backbone, test_clean))
        knn1, knn5 = knn(features[0], train_y, features[1], test_y)
        record.update(knn_top1=knn1, knn_top5=knn5, knn_seconds=time.perf_counter() - knn_start,
                      epoch_seconds=time.perf_counter() - epoch_start)
        record["epoch_images_per_s_with_knn"] = epoch_steps * args.batch / record["epoch_seconds"]
        history.append(record)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {record['loss']:.4f}  kNN top-1 {pct(knn1)} top-5 {pct(knn5)}  "
              f"{record['images_per_s']:.1f} images/s  train {epoch_train:.0f} s, kNN {record['knn_seconds']:.0f} s, "
              f"wall {time.time() - wall:.0f} s  load {record['load_1min']:.2f}", flush=True)

    eval_start = time.perf_counter()
    lin1, lin5, lin_loss = linear_probe(features[0], train_y, features[1], test_y, epochs=args.probe_epochs, seed=args.seed)
    print(f"linear probe ({args.probe_epochs} epochs): top-1 {pct(lin1)} top-5 {pct(lin5)}  train loss {lin_loss:.4f}  "
          f"({time.perf_counter() - eval_start:.0f} s)", flush=True)
    raw_train = train_clean.flatten(1)
    raw_test = test_clean.flatten(1)
    raw_knn1, raw_knn5 = knn(raw_train, train_y, raw_test, test_y)
    print(f"raw pixels kNN: top-1 {pct(raw_knn1)} top-5 {pct(raw_knn5)}", flush=True)
    raw_lin1, raw_lin5, raw_lin_loss = linear_probe(raw_train, train_y, raw_test, test_y, epochs=args.probe_epochs,
                                                    seed=args.seed)
    print(f"raw pixels linear probe: top-1 {pct(raw_lin1)} top-5 {pct(raw_lin5)}  train loss {raw_lin_loss:.4f}", flush=True)
    load_end = os.getloadavg()
    images_per_s = total_steps * args.batch / max(train_seconds, 1e-9)
    print(f"done: {total_steps} steps in {train_seconds:.0f} s of training ({images_per_s:.1f} images/s), "
          f"{time.time() - wall:.0f} s wall; kNN {pct(knn1)} vs raw {pct(raw_knn1)}, linear {pct(lin1)} vs raw "
          f"{pct(raw_lin1)}; load {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}", flush=True)

    result = {
        "recipe": dict(RECIPE, batch=args.batch, peak_lr=peak, warmup_steps=warmup, steps_per_epoch=steps_per_epoch,
                       total_steps=total_steps, train_images=len(train_images), test_images=len(test_images),
                       parameters=params, probe_epochs=args.probe_epochs, seed=args.seed,
                       subset=args.subset),
        "impl": "torch",
        "epochs": args.epochs,
        "train_seconds": train_seconds,
        "wall_seconds": time.time() - wall,
        "images_per_s": images_per_s,
        "knn_top1": knn1, "knn_top5": knn5,
        "linear_top1": lin1, "linear_top5": lin5, "linear_train_loss": lin_loss,
        "raw_knn_top1": raw_knn1, "raw_knn_top5": raw_knn5,
        "raw_linear_top1": raw_lin1, "raw_linear_top5": raw_lin5, "raw_linear_train_loss": raw_lin_loss,
        "accuracy_unit": "fraction",
        "history": history,
        "torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": np.__version__,
        "python": sys.version.split()[0],
        "threads": args.threads, "workers": args.workers,
        "host": {"node": platform.node(), "cpu": cpu_model(), "cores": os.cpu_count()},
        "loadavg_start": list(load_start), "loadavg_end": list(load_end),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        os.replace(tmp, args.out)
        print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
