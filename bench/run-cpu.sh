#!/usr/bin/env bash
# The CPU training-step benchmark and its PyTorch CPU peer back to back on this machine, into the same
# bench/results/cpu-<host>.json, so that the ratio is measured in one run:
#   bash bench/run-cpu.sh [--quick]
# Needs the .NET SDK and a Python with torch + torchvision ($PYTHON; on Debian /usr/bin/python3 has them).
# Both sides use every core; the load average is printed and recorded, since a busy host slows both.
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

echo "== engine: cpu ($(nproc) cores on $host; $(uptime))"
dotnet run -c Release --project bench/NativeContrast.Bench -- cpu --results bench/results $quick
echo "== pytorch: cpu ($python; $(uptime))"
"$python" bench/reference/cpu.py --out "bench/results/cpu-$host.json" $quick
# The engine makes OpenMP sleep when idle; the peer once more with the same setting.
echo "== pytorch, OMP_WAIT_POLICY=PASSIVE ($(uptime))"
OMP_WAIT_POLICY=PASSIVE "$python" bench/reference/cpu.py --out "bench/results/cpu-$host.json" $quick
python3 bench/tables.py
