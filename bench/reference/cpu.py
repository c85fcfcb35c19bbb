#!/usr/bin/env python3
"""PyTorch CPU peer of bench/NativeContrast.Bench/CpuBench.cs: whole fp32 training steps on every core.

  python3 bench/reference/cpu.py --out bench/results/cpu-<host>.json [--quick]

The same cases as the engine's "cpu" suite, torch.set_num_threads(cores), eager mode, default (NCHW) layout:
  resnet18-step:     torchvision ResNet-18 with the CIFAR stem (3x3 s1 conv, no max pool), 10 classes, 32x32x3,
                     batch 32 and 128: zero_grad, forward, cross-entropy, backward, SGD (lr 0.01, momentum 0.9);
  resnet18w025-step: the same network at width 0.25 (16-32-64-128 channels), batch 128;
  simclr-step:       two views of 64 images through ResNet-18 width 0.25 + Linear(128, 512)-ReLU-Linear(512, 128),
                     NT-Xent (tau 0.5) and LARS (SimCLR's: trust eta*|w|/(|g| + wd*|w|), biases and BN excluded);
  infonce-queue:     MoCo's loss alone: 128 queries against a queue of 16,384 unit keys, d 128, tau 0.2, loss + dq.
  masked-infonce:    PiCO's loss alone (its SupConLoss): 256 queries and keys against a queue of 8,192 labelled keys,
                     10 classes, d 128, tau 0.07, loss + dq.
median_ms is the wall-clock median of several steps after two untimed ones; throughput counts images (both views).
The engine asks OpenMP to sleep when idle (OMP_WAIT_POLICY=PASSIVE, see CpuLibraries.cs); run with that variable set,
this peer records itself as "pytorch-passive" so both settings can be compared (bench/run-cpu.sh runs both).
"""
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock, ResNet

from benchlib import append_records, parse_args, timestamp


class WideResNet18(ResNet):
    """torchvision's ResNet-18 with the CIFAR stem and every width scaled by `width`."""

    def __init__(self, width=1.0, num_classes=10):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        w = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self.inplanes = w[0]
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(BasicBlock, w[0], 2)
        self.layer2 = self._make_layer(BasicBlock, w[1], 2, stride=2)
        self.layer3 = self._make_layer(BasicBlock, w[2], 2, stride=2)
        self.layer4 = self._make_layer(BasicBlock, w[3], 2, stride=2)
        self.fc = nn.Linear(w[3], num_classes)
        self.feature_dim = w[3]


class Lars:
    """SimCLR's LARS: v <- mu*v + lr*trust*(g + wd*w), w <- w - v; 1-d parameters get no decay and trust 1."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=1e-6, eta=0.001):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.mu, self.wd, self.eta = lr, momentum, weight_decay, eta
        self.velocity = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p, v in zip(self.params, self.velocity):
            g = p.grad
            if p.ndim > 1:
                w_norm, g_norm = p.norm(), g.norm()
                denominator = g_norm + self.wd * w_norm
                trust = torch.where((w_norm > 0) & (g_norm > 0), self.eta * w_norm / denominator, torch.ones_like(w_norm))
                g = g.add(p, alpha=self.wd).mul_(trust)
            v.mul_(self.mu).add_(g, alpha=self.lr)
            p.sub_(v)


def nt_xent(z, tau):
    """SimCLR's loss over 2N rows: row i's positive is row (i + N) mod 2N, negatives the other 2N - 2 rows."""
    z = F.normalize(z, dim=1)
    n2 = z.shape[0]
    logits = z @ z.t() / tau
    logits.fill_diagonal_(float("-inf"))
    targets = (torch.arange(n2) + n2 // 2) % n2
    return F.cross_entropy(logits, targets)


def median_ms(step, reps):
    step()
    step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def classifier_step(width, batch, reps):
    torch.manual_seed(0)
    model = WideResNet18(width)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, 32, 32)
    labels = torch.randint(0, 10, (batch,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return median_ms(step, reps)


def simclr_step(view_batch, reps):
    torch.manual_seed(0)
    encoder = WideResNet18(0.25)
    dim = encoder.feature_dim
    encoder.fc = nn.Identity()
    model = nn.Sequential(encoder, nn.Linear(dim, 512), nn.ReLU(inplace=True), nn.Linear(512, 128))
    model.train()
    optimizer = Lars(model.parameters(), lr=0.3)
    views = torch.randn(2 * view_batch, 3, 32, 32)

    def step():
        optimizer.zero_grad()
        nt_xent(model(views), 0.5).backward()
        optimizer.step()

    return median_ms(step, reps)


def infonce_queue(queries, queue_length, dim, reps):
    """MoCo's loss alone: normalised q and k, logits [q.k | q.queue^T] / 0.2, cross-entropy with the positive first, dq."""
    torch.manual_seed(0)
    q = torch.randn(queries, dim, requires_grad=True)
    k = torch.randn(queries, dim)
    queue = F.normalize(torch.randn(queue_length, dim), dim=1)
    targets = torch.zeros(queries, dtype=torch.long)

    def step():
        q.grad = None
        qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = torch.cat([(qn * kn).sum(1, keepdim=True), qn @ queue.t()], dim=1) / 0.2
        F.cross_entropy(logits, targets).backward()

    return median_ms(step, reps)


def masked_infonce(queries, queue_length, dim, classes, reps):
    """PiCO's SupConLoss: anchors q against cat(q, k, queue), positives = same label, self excluded, dq."""
    torch.manual_seed(0)
    q = torch.randn(queries, dim, requires_grad=True)
    k = torch.randn(queries, dim)
    queue = F.normalize(torch.randn(queue_length, dim), dim=1)
    labels = torch.randint(classes, (queries,))
    queue_labels = torch.randint(classes, (queue_length,))
    all_labels = torch.cat([labels, labels, queue_labels])
    mask = (labels[:, None] == all_labels[None, :]).float()
    logits_mask = torch.ones_like(mask).scatter_(1, torch.arange(queries)[:, None], 0)
    mask = mask * logits_mask

    def step():
        q.grad = None
        qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
        features = torch.cat([qn, kn, queue], dim=0)
        logits = qn @ features.t() / 0.07
        logits = logits - logits.max(dim=1, keepdim=True)[0].detach()
        log_prob = logits - torch.log((torch.exp(logits) * logits_mask).sum(1, keepdim=True) + 1e-12)
        loss = -((mask * log_prob).sum(1) / mask.sum(1)).mean()
        loss.backward()

    return median_ms(step, reps)


def load_average():
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "unknown"


def main():
    args = parse_args(__doc__)
    cores = os.cpu_count()
    torch.set_num_threads(cores)
    reps = 2 if args.quick else 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, mkldnn {torch.backends.mkldnn.is_available()}, load {load_average()}")
    cases = [
        ("resnet18-step", 1.0, 32),
        ("resnet18-step", 1.0, 64 if args.quick else 128),
        ("resnet18w025-step", 0.25, 64 if args.quick else 128),
    ]
    records = []
    impl = "pytorch-passive" if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" else "pytorch"

    def add(kernel, case, ms, images, unit="images/s"):
        record = {
            "kernel": kernel, "case": case, "impl": impl, "median_ms": ms, "peak_bytes": 0, "gpu": "cpu-only",
            "throughput": images / (ms / 1000), "throughput_unit": unit,
            "note": f"torch {torch.__version__} eager, NCHW, {torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load {load_average()}",
            "timestamp": timestamp(),
        }
        records.append(record)
        print(f"{kernel:<18} {case:<28} {impl} {ms:10.1f} ms  {record['throughput']:8.1f} {unit}")

    for kernel, width, batch in cases:
        add(kernel, f"cifar-32x32x3-b{batch}", classifier_step(width, batch, reps), batch)
    view_batch = 32 if args.quick else 64
    add("simclr-step", f"r18w025-32x32x3-2x{view_batch}", simclr_step(view_batch, reps), 2 * view_batch)
    add("infonce-queue", "B=128 K=16384 d=128 loss+dq", infonce_queue(128, 16384, 128, reps), 128, "queries/s")
    add("masked-infonce", "B=256 K=8192 d=128 classes=10 loss+dq", masked_infonce(256, 8192, 128, 10, reps), 256, "queries/s")
    append_records(args.out, records)


if __name__ == "__main__":
    main()
