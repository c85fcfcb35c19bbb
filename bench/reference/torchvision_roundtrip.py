#!/usr/bin/env python3
"""Proves that an encoder exported by NativeContrast is a torchvision ResNet.

Reads DIR/encoder.safetensors (weights and BatchNorm buffers under PyTorch's names) and DIR/io.safetensors (an
input batch "input" [N, C, H, W] and the engine's eval-mode outputs for it: "features" [N, D] after the global
average pool and optionally "logits" [N, classes] after fc; metadata "arch", "stem" (cifar | imagenet),
"in_channels", "num_classes", "precision" (fp32 | tf32 | bf16), "engine"). It builds the torchvision model
(CIFAR stem: conv1 = 3x3 stride 1 padding 1, maxpool = Identity), calls load_state_dict(strict=True), runs the
input in eval mode in float64 (the reference) and in float32 (to show PyTorch's own fp32 error beside ours),
and compares the engine's outputs with the float64 reference:

    rel_l2  = ||engine - reference|| / ||reference||
    max_rel = max |engine - reference| / max |reference|

Both must be within the tolerance of the engine's precision (see TOLERANCES; --tolerance overrides).
Exit status: 0 match, 1 mismatch or a strict load failure, 2 unusable input or environment.

    python3 bench/reference/torchvision_roundtrip.py --dir DIR [--out JSON] [--device cpu|cuda]
    python3 bench/reference/torchvision_roundtrip.py [--self-test] [--quick] [--out JSON]

Without --dir the script checks itself (--self-test): it exports random torchvision models with its own
safetensors writer, expects each to pass, and expects a perturbed copy to fail. --out appends the records to a
JSON list (created if absent), as the other reference scripts do.
The files are parsed with the standard library and torch.frombuffer; the safetensors package is not needed.
"""

import argparse
import ctypes
import json
import math
import os
import struct
import sys
import tempfile

# Whole-network tolerances on rel_l2 and max_rel against float64. PyTorch's own fp32 forward is within 2e-7 to
# 7e-7 of float64 on the self-test's ResNet-18/50, so fp32 keeps the op tests' 1e-5; tf32 (10-bit mantissa)
# and bf16 (7-bit) are set by their rounding compounded over the network.
TOLERANCES = {"fp32": 1e-5, "tf32": 1e-2, "bf16": 5e-2}

MAX_HEADER_BYTES = 100_000_000


class CheckError(Exception):
    """A file that cannot be used (exit status 2)."""


def _dtypes():
    import torch

    return {
        "BOOL": torch.bool,
        "U8": torch.uint8,
        "I8": torch.int8,
        "I16": torch.int16,
        "I32": torch.int32,
        "I64": torch.int64,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "F32": torch.float32,
        "F64": torch.float64,
    }


def read_safetensors(path):
    """Returns ({name: tensor}, metadata) for a safetensors file, validating lengths and offsets."""
    import torch

    if sys.byteorder != "little":
        raise CheckError("safetensors data is little-endian; this host is not")
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise CheckError(f"{path}: truncated ({len(data)} bytes)")
    (header_length,) = struct.unpack("<Q", data[:8])
    if header_length > MAX_HEADER_BYTES or 8 + header_length > len(data):
        raise CheckError(f"{path}: header length {header_length} does not fit a file of {len(data)} bytes")
    header = json.loads(data[8 : 8 + header_length].decode("utf-8"))
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + header_length
    dtypes = _dtypes()
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in dtypes:
            raise CheckError(f"{path}: tensor '{name}': dtype {info['dtype']} is not supported here")
        dtype = dtypes[info["dtype"]]
        shape = [int(d) for d in info["shape"]]
        begin, end = (int(o) for o in info["data_offsets"])
        count = math.prod(shape)
        item = torch.empty((), dtype=dtype).element_size()
        if end - begin != count * item or data_start + end > len(data):
            raise CheckError(f"{path}: tensor '{name}': data_offsets [{begin}, {end}] do not hold {shape} of {info['dtype']} in the file")
        if count == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            # bytearray: a writable, private copy (frombuffer warns on read-only buffers and would alias `data`).
            raw = bytearray(data[data_start + begin : data_start + end])
            tensors[name] = torch.frombuffer(raw, dtype=dtype).reshape(shape)
    return tensors, metadata


def write_safetensors(path, tensors, metadata):
    """Minimal writer for the self-test: largest elements first, header space-padded to 8 bytes."""
    ordered = sorted(tensors.items(), key=lambda kv: -kv[1].element_size())
    names = {v: k for k, v in _dtypes().items()}
    header = {"__metadata__": dict(metadata)} if metadata else {}
    blobs = []
    offset = 0
    for name, tensor in ordered:
        t = tensor.detach().to("cpu").contiguous()
        size = t.numel() * t.element_size()
        blobs.append(ctypes.string_at(t.data_ptr(), size) if size else b"")
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def build_model(arch, stem, in_channels, num_classes):
    """torchvision's ResNet with the stem the engine trained; fc = Identity when the encoder has no classifier."""
    import torch.nn as nn
    import torchvision

    if not arch.startswith("resnet") or not hasattr(torchvision.models, arch):
        raise CheckError(f"arch '{arch}' is not a torchvision ResNet")
    model = getattr(torchvision.models, arch)(num_classes=max(num_classes, 1))
    if stem == "cifar":
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif stem == "imagenet":
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        raise CheckError(f"stem '{stem}' is neither cifar nor imagenet")
    if num_classes == 0:
        model.fc = nn.Identity()
    return model


def forward(model, x):
    """torchvision's ResNet._forward_impl, keeping the pooled features as well as the logits."""
    import torch

    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    features = torch.flatten(model.avgpool(x), 1)
    return features, model.fc(features)


def compare(engine, reference):
    import torch

    diff = engine.to(torch.float64) - reference.to(torch.float64)
    max_abs = diff.abs().max().item() if diff.numel() else 0.0
    scale = reference.abs().max().item() if reference.numel() else 0.0
    return {
        "max_abs": max_abs,
        "max_abs_reference": scale,
        "max_rel": max_abs / max(scale, 1e-300),
        "rel_l2": diff.norm().item() / max(reference.to(torch.float64).norm().item(), 1e-300),
    }


def check(directory, device="cpu", tolerance=None):
    """Runs the round trip on DIR and returns the record; record["passed"] says whether it matched."""
    import torch
    import torchvision

    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    state, encoder_meta = read_safetensors(os.path.join(directory, "encoder.safetensors"))
    io, meta = read_safetensors(os.path.join(directory, "io.safetensors"))
    for key in ("arch", "stem", "in_channels"):
        if key not in meta:
            raise CheckError(f"io.safetensors: metadata '{key}' is missing")
        if key in encoder_meta and encoder_meta[key] != meta[key]:
            raise CheckError(f"metadata '{key}' differs: encoder '{encoder_meta[key]}', io '{meta[key]}'")
    for key in ("input", "features"):
        if key not in io:
            raise CheckError(f"io.safetensors: tensor '{key}' is missing")
    arch, stem, in_channels = meta["arch"], meta["stem"], int(meta["in_channels"])
    precision = meta.get("precision", "fp32")
    tol = tolerance if tolerance is not None else TOLERANCES.get(precision)
    if tol is None:
        raise CheckError(f"precision '{precision}' has no tolerance; pass --tolerance")
    num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else 0
    if "logits" in io and num_classes == 0:
        raise CheckError("io.safetensors has logits but the encoder has no fc.weight")

    record = {
        "check": "torchvision_roundtrip",
        "dir": directory,
        "arch": arch,
        "stem": stem,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "input_shape": list(io["input"].shape),
        "precision": precision,
        "tolerance": tol,
        "engine": meta.get("engine", ""),
        "device": device,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "load": "strict",
        "passed": False,
    }
    model = build_model(arch, stem, in_channels, num_classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        record["error"] = f"load_state_dict(strict=True) failed: {e}"
        return record
    model.eval()
    x = io["input"].to(torch.float32)
    with torch.no_grad():
        reference = forward(model.to(device=device, dtype=torch.float64), x.to(device=device, dtype=torch.float64))
        torch_fp32 = forward(model.to(dtype=torch.float32), x.to(device))
    reference = [t.cpu() for t in reference]
    record["features"] = compare(io["features"], reference[0])
    record["torch_fp32_features"] = compare(torch_fp32[0].cpu(), reference[0])
    passed = record["features"]["rel_l2"] <= tol and record["features"]["max_rel"] <= tol
    if "logits" in io:
        record["logits"] = compare(io["logits"], reference[1])
        record["torch_fp32_logits"] = compare(torch_fp32[1].cpu(), reference[1])
        passed = passed and record["logits"]["rel_l2"] <= tol and record["logits"]["max_rel"] <= tol
    if list(io["features"].shape) != list(reference[0].shape):
        record["error"] = f"features shape {list(io['features'].shape)} differs from torchvision's {list(reference[0].shape)}"
        passed = False
    record["passed"] = passed
    return record


def report(record):
    status = "PASS" if record["passed"] else "FAIL"
    print(f"{status} {record['arch']} ({record['stem']} stem, {record['in_channels']} channels, input {record.get('input_shape')}, "
          f"{record['precision']}, tolerance {record['tolerance']:.0e})")
    if "error" in record:
        print(f"  {record['error']}")
    for key in ("features", "logits", "torch_fp32_features", "torch_fp32_logits"):
        if key in record:
            r = record[key]
            print(f"  {key:20s} rel_l2 {r['rel_l2']:.3e}  max_rel {r['max_rel']:.3e}  max_abs {r['max_abs']:.3e} (max |ref| {r['max_abs_reference']:.3e})")


def _randomise(model, generator):
    """Weights at a trained network's scale and BatchNorm statistics away from (0, 1), so eval mode is exercised."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(c, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                module.num_batches_tracked.fill_(123)


def self_test(quick, device):
    import torch

    cases = [("resnet18", "cifar", 3, 10, (4, 3, 32, 32))]
    if not quick:
        cases += [("resnet50", "imagenet", 3, 0, (2, 3, 64, 64)), ("resnet18", "imagenet", 1, 7, (2, 1, 48, 48))]
    records = []
    ok = True
    for arch, stem, channels, classes, shape in cases:
        generator = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        model = build_model(arch, stem, channels, classes)
        _randomise(model, generator)
        model.eval()
        x = torch.randn(shape, generator=generator)
        with torch.no_grad():
            features, logits = forward(model, x)
        io = {"input": x, "features": features}
        if classes:
            io["logits"] = logits
        meta = {"arch": arch, "stem": stem, "in_channels": str(channels), "num_classes": str(classes), "precision": "fp32", "engine": "torch self-test"}
        for perturb in (False, True):
            with tempfile.TemporaryDirectory() as directory:
                state = {k: v.clone() for k, v in model.state_dict().items()}
                if perturb:
                    # 0.1% on the stem reaches every output: ten times the fp32 tolerance.
                    state["conv1.weight"] *= 1.001
                write_safetensors(os.path.join(directory, "encoder.safetensors"), state, {"format": "pt", "arch": arch, "stem": stem, "in_channels": str(channels)})
                write_safetensors(os.path.join(directory, "io.safetensors"), io, meta)
                record = check(directory, device)
            record["self_test"] = "perturbed" if perturb else "exact"
            report(record)
            records.append(record)
            if record["passed"] == perturb:
                print(f"  self-test failed: the {'perturbed' if perturb else 'exact'} export {'passed' if perturb else 'failed'}")
                ok = False
    return ok, records


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="folder with encoder.safetensors and io.safetensors")
    parser.add_argument("--out", help="JSON list to append the records to (default with --dir: DIR/torchvision_roundtrip.json)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--tolerance", type=float, help="override the precision's tolerance")
    parser.add_argument("--self-test", action="store_true", help="check this script on torchvision models it exports itself (the default without --dir)")
    parser.add_argument("--quick", action="store_true", help="self-test: one small case")
    args = parser.parse_args()
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as e:
        print(f"torchvision_roundtrip: needs torch and torchvision ({e})", file=sys.stderr)
        return 2
    try:
        if args.dir and not args.self_test:
            record = check(args.dir, args.device, args.tolerance)
            report(record)
            ok, records = record["passed"], [record]
            out = args.out or os.path.join(args.dir, "torchvision_roundtrip.json")
        else:
            ok, records = self_test(args.quick, args.device)
            out = args.out
        if out:
            append_records(out, records)
    except (CheckError, OSError, ValueError, KeyError) as e:
        print(f"torchvision_roundtrip: {e}", file=sys.stderr)
        return 2
    return 0 if ok else 1


def append_records(path, records):
    existing = []
    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open(path) as f:
            existing = json.load(f)
        if not isinstance(existing, list):
            raise CheckError(f"{path}: expected a JSON list of records to append to")
    with open(path, "w") as f:
        json.dump(existing + records, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
