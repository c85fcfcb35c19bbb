#!/usr/bin/env bash
# Every benchmark and every PyTorch peer in one run on one GPU, so that each ratio is measured side by side.
# On the GPU machine (no .NET SDK there; see ../shared/device/README.md):
#   bash .device/on-device.sh bash bench/run-gpu.sh [--quick]
# Full run: the engine's suites (all of them) and every peer append their records to
#   bench/results/<family>-<gpu or host>.json, and bench/README.md's tables are refreshed from bench/results.
# --quick: a smoke run for a short device call (about 2-3 minutes on an H200 after the native build): small sizes,
#   partly L2-resident, and few repetitions; no torch.compile peers (cold compiles take minutes) and no CPU-only suites
#   (augment, cpu: bash bench/run-augment.sh / run-cpu.sh run them anywhere). Its records are not results: they go to
#   /tmp/bench-quick/results, never to bench/results, and their table is printed, not written into README.md.
# With $OUT set, two files go there, whatever the run writes (the device tool returns at most 8 files):
#   $OUT/bench.log                  the whole log, written as it goes;
#   $OUT/bench-results.tar.gz       (bench-quick.tar.gz with --quick) rebuilt after every step: the result files this
#                                   run wrote (results/*.json), README.md once refreshed, and torchvision_roundtrip.json;
#                                   unpack a full run's with `tar -xzf bench-results.tar.gz -C bench results README.md`.
#   So a run cut off by the device's time limit still returns every step it finished.
# BENCH_STEP_SECONDS limits each step (default 240 with --quick, none otherwise).
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  --quick) quick=--quick ;;
  "") quick= ;;
  *) echo "usage: bench/run-gpu.sh [--quick]" >&2; exit 2 ;;
esac
export PYTHONUNBUFFERED=1
out=${OUT:-}
scratch=/tmp/bench-run                      # exports and records that are not results; never under $OUT
rm -rf "$scratch" && mkdir -p "$scratch"
if [ -n "$quick" ]; then
  results=/tmp/bench-quick/results
  rm -rf "$(dirname "$results")"
  archive=bench-quick.tar.gz
  step_seconds=${BENCH_STEP_SECONDS:-240}
else
  results="$PWD/bench/results"              # absolute: save() changes directories in tar -C
  archive=bench-results.tar.gz
  step_seconds=${BENCH_STEP_SECONDS:-}
fi
mkdir -p "$results"
stamp="$scratch/started"
touch "$stamp"                              # result files newer than this are this run's
if [ -n "$out" ]; then
  mkdir -p "$out"
  exec 3>&1 4>&2
  exec > >(tee -a "$out/bench.log") 2>&1
  tee_pid=$!
fi

bench_dll=.device/app/NativeContrast.Bench/NativeContrast.Bench.dll
[ -f "$bench_dll" ] || bench_dll=bench/NativeContrast.Bench/bin/Release/net10.0/NativeContrast.Bench.dll
cli_dll=.device/app/NativeContrast.Cli/NativeContrast.Cli.dll
[ -f "$cli_dll" ] || cli_dll=src/NativeContrast.Cli/bin/Release/net10.0/NativeContrast.Cli.dll
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
slug=$(python3 -c 'import re,sys; print("-".join(p for p in re.split(r"[ /()_]+", sys.argv[1].lower()) if p))' "${gpu:-cpu-only}")
# The host and its widest vector ISA, as the engine names CPU-only results (ResultsFile.CpuHost: .NET's MachineName
# is the host name up to its first dot).
host=$(python3 -c 'import re,socket; print("-".join(p for p in re.split(r"[ /()_]+", socket.gethostname().split(".")[0].lower()) if p))')
isa=$(grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo avx512 || { grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo avx2; } || true)
host="$host${isa:+-$isa}"
roundtrip_json="$scratch/torchvision_roundtrip.json"
readme_refreshed=
status=0
failed=()
timeout_cmd=()
[ -n "$step_seconds" ] && timeout_cmd=(timeout --foreground -k 10 "$step_seconds")  # --foreground: an outer timeout (tests/run-gpu.sh) still reaches the step

# This run's records into $OUT/$archive, rebuilt whole through a temporary file.
save() {
  [ -n "$out" ] || return 0
  local members=() f
  while IFS= read -r f; do members+=("results/$f"); done < <(find "$results" -maxdepth 1 -name '*.json' -newer "$stamp" -printf '%f\n' | sort)
  local args=()
  [ ${#members[@]} -gt 0 ] && args+=(-C "$(dirname "$results")" "${members[@]}")
  [ -n "$readme_refreshed" ] && args+=(-C "$PWD/bench" README.md)
  [ -s "$roundtrip_json" ] && args+=(-C "$scratch" "$(basename "$roundtrip_json")")
  [ ${#args[@]} -gt 0 ] || return 0
  tar -czf "$scratch/$archive" "${args[@]}" && mv -f "$scratch/$archive" "$out/$archive"
}

# step NAME COMMAND...: runs the command (under the step limit; a shell function applies it itself), notes a
# failure, and saves the records so far.
step() {
  local name=$1 start=$SECONDS code=0
  shift
  echo "== $name"
  if declare -F "$1" >/dev/null; then "$@" || code=$?; else ${timeout_cmd[@]+"${timeout_cmd[@]}"} "$@" || code=$?; fi
  if [ "$code" -ne 0 ]; then
    status=1
    failed+=("$name")
    echo "!! $name: exit $code$([ "$code" -eq 124 ] && echo " (cut off after $step_seconds s)")"
  fi
  echo "   $name: $((SECONDS - start)) s"
  save
}

# torchvision_roundtrip: the engine's ResNet, trained a few steps on this GPU, must load into torchvision strictly and
# match its eval-mode outputs. The exports (a ResNet-50 is about 95 MB) stay in /tmp; only the records are kept.
roundtrip() {
  local arch=$1 stem=$2 precision=$3 dir="$scratch/torchvision_roundtrip/$1-$2-$3"
  ${timeout_cmd[@]+"${timeout_cmd[@]}"} dotnet "$cli_dll" export-torchvision --arch "$arch" --stem "$stem" --precision "$precision" --device cuda --out "$dir" \
    && ${timeout_cmd[@]+"${timeout_cmd[@]}"} python3 bench/reference/torchvision_roundtrip.py --dir "$dir" --device cuda --out "$roundtrip_json"
}

echo "== bench/run-gpu.sh ${quick:-full} on ${gpu:-no GPU} (host $host); records to $results${out:+; copies in $out}"
if [ -n "$quick" ]; then
  step "engine: GPU suites" dotnet "$bench_dll" gpu --results "$results" --quick
else
  step "engine: all suites" dotnet "$bench_dll" all --results "$results"
fi

for ref in bench/reference/*.py; do
  name=$(basename "$ref" .py)
  case "$name" in
    torchvision_roundtrip) continue ;;            # needs an exported model: run by its own step below
    benchlib) continue ;;                         # helpers the peers import, not a benchmark
    simclr_fashion_mnist) continue ;;             # a quality run (tens of minutes), not a kernel benchmark
    augment|cpu)
      if [ -n "$quick" ]; then
        echo "== torch: $name skipped in --quick (CPU only, as the engine's $name suite)"
        continue
      fi
      records="$results/$name-$host.json" ;;      # CPU-only: named by host, as the engine's suites name them
    *) records="$results/kernels-$slug.json" ;;
  esac
  step "torch: $name" python3 "$ref" --out "$records" $quick
done

for case in "resnet18 cifar fp32" "resnet50 imagenet fp32" "resnet50 imagenet tf32"; do
  read -r arch stem precision <<<"$case"
  step "torchvision_roundtrip: $arch ($stem stem, $precision)" roundtrip "$arch" "$stem" "$precision"
done

if [ -n "$quick" ]; then
  echo "== table of this quick run (smoke numbers: not written into bench/README.md)"
  python3 bench/tables.py --results "$results" --stdout || status=1
else
  echo "== tables"
  if python3 bench/tables.py; then readme_refreshed=1; else status=1; failed+=(tables); fi
  save
fi
echo "== bench/run-gpu.sh done in $SECONDS s; ${#failed[@]} step(s) failed${failed[*]:+: ${failed[*]}}"
if [ -n "$out" ]; then
  exec 1>&3 2>&4 3>&- 4>&-
  wait "$tee_pid" 2>/dev/null
fi
exit $status
