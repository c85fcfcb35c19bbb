#!/usr/bin/env bash
# The augmentation benchmark and its torchvision peer back to back on this CPU, into the same
# bench/results/augment-<host>.json, so that the per-core ratio is measured in one run:
#   bash bench/run-augment.sh [--quick]
# Needs the .NET SDK and a Python with torch + torchvision ($PYTHON; on Debian /usr/bin/python3 has them).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${1:-}
python=${PYTHON:-python3}
"$python" -c 'import torchvision' 2>/dev/null || python=/usr/bin/python3
host=$("$python" -c 'import re,socket; print("-".join(p for p in re.split(r"[ /()_]+", socket.gethostname().split(".")[0].lower()) if p))')
# The host (up to its first dot, as .NET's MachineName) and its widest vector ISA, as the engine names CPU-only
# results (ResultsFile.CpuHost).
isa=$(grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo avx512 || { grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo avx2; } || true)
host="$host${isa:+-$isa}"

echo "== engine: augment ($(nproc) cores on $host)"
dotnet run -c Release --project bench/NativeContrast.Bench -- augment --results bench/results $quick
echo "== torchvision: augment ($python)"
"$python" bench/reference/augment.py --out "bench/results/augment-$host.json" $quick
python3 bench/tables.py
