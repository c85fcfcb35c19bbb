#!/usr/bin/env bash
# Every benchmark and every PyTorch peer in one run on one GPU, so that each ratio is measured side by side.
# On the GPU machine (no .NET SDK there; see ../shared/device/README.md):
#   bash .device/on-device.sh bash bench/run-gpu.sh [--quick]
# Records are appended to bench/results/<family>-<gpu>.json and bench/README.md's table is refreshed;
# with $OUT set, the results and the logs are copied there too.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=${1:-}
bench_dll=.device/app/NativeContrast.Bench/NativeContrast.Bench.dll
[ -f "$bench_dll" ] || bench_dll=bench/NativeContrast.Bench/bin/Release/net10.0/NativeContrast.Bench.dll
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
slug=$(python3 -c 'import re,sys; print("-".join(p for p in re.split(r"[ /()_]+", sys.argv[1].lower()) if p))' "${gpu:-cpu-only}")
host=$(python3 -c 'import re,socket; print("-".join(p for p in re.split(r"[ /()_]+", socket.gethostname().lower()) if p))')
# The host and its widest vector ISA, as the engine names CPU-only results (ResultsFile.CpuHost).
isa=$(grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo avx512 || { grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo avx2; } || true)
host="$host${isa:+-$isa}"
status=0

echo "== engine benchmarks ($gpu)"
dotnet "$bench_dll" all --results bench/results $quick || status=1

for ref in bench/reference/*.py; do
  name=$(basename "$ref" .py)
  case "$name" in
    torchvision_roundtrip) continue ;;            # needs an exported model: run by its own step
    benchlib) continue ;;                         # helpers the peers import, not a benchmark
    simclr_fashion_mnist) continue ;;             # a quality run (tens of minutes), not a kernel benchmark
    augment) out="bench/results/augment-$host.json" ;;
    *) out="bench/results/kernels-$slug.json" ;;
  esac
  echo "== torch: $name"
  python3 "$ref" --out "$out" $quick || status=1
done

# torchvision_roundtrip: the engine's ResNets, trained a few steps on this GPU, must load into torchvision strictly
# and match its eval-mode outputs (fp32, and the engine's default tf32). The records (not benchmarks, so not under
# bench/results where tables.py reads) go to DIR/torchvision_roundtrip.json beside the exported files.
cli_dll=.device/app/NativeContrast.Cli/NativeContrast.Cli.dll
[ -f "$cli_dll" ] || cli_dll=src/NativeContrast.Cli/bin/Release/net10.0/NativeContrast.Cli.dll
roundtrip_root=${OUT:-/tmp}/torchvision_roundtrip
for case in "resnet18 cifar fp32" "resnet50 imagenet fp32" "resnet50 imagenet tf32"; do
  read -r arch stem precision <<<"$case"
  dir="$roundtrip_root/$arch-$stem-$precision"
  echo "== torchvision_roundtrip: $arch ($stem stem, $precision)"
  dotnet "$cli_dll" export-torchvision --arch "$arch" --stem "$stem" --precision "$precision" --device cuda --out "$dir" \
    && python3 bench/reference/torchvision_roundtrip.py --dir "$dir" --device cuda || status=1
done

python3 bench/tables.py || status=1
if [ -n "${OUT:-}" ]; then
  cp bench/results/*.json bench/README.md "$OUT"/ 2>/dev/null
fi
exit $status
