#!/usr/bin/env bash
# A lent GPU's first check in one call (see ../shared/device/README.md): every GPU test (category Gpu, plus the
# fixtures whose GPU branches are not in it: backend selection, `info`, NCCL's library), where a missing driver,
# device, cuBLAS, kernel module or NCCL fails instead of skipping, then the benchmarks.
#   here:  bash ../shared/device/pack.sh
#   there: bash .device/on-device.sh bash tests/run-gpu.sh [quick|full|none]   (the benchmarks; default quick)
# The test log goes to $OUT/gpu-tests.log (or /tmp/gpu-check); bench/run-gpu.sh copies its results to $OUT.
# The tests are cut off after NATIVECONTRAST_GPU_TEST_SECONDS (default 330) and the benchmarks get the rest of
# NATIVECONTRAST_DEVICE_SECONDS (default 570), so that both fit in one 10-minute device command.
set -uo pipefail
cd "$(dirname "$0")/.."
bench=${1:-quick}
case "$bench" in quick|full|none) ;; *) echo "usage: tests/run-gpu.sh [quick|full|none]" >&2; exit 2 ;; esac
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
tests_dll=
for candidate in .device/app/NativeContrast.Tests/NativeContrast.Tests.dll tests/NativeContrast.Tests/bin/{Release,Debug}/net10.0/NativeContrast.Tests.dll; do
  [ -f "$candidate" ] && { tests_dll=$candidate; break; }
done
[ -n "$tests_dll" ] || { echo "tests/run-gpu.sh: no test build (pack with ../shared/device/pack.sh, or dotnet build)" >&2; exit 2; }
status=0

echo "== GPU tests ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
NATIVECONTRAST_REQUIRE_GPU=1 timeout "${NATIVECONTRAST_GPU_TEST_SECONDS:-330}" \
  dotnet "$tests_dll" --filter "TestCategory=Gpu|FullyQualifiedName~BackendSelectionTests|FullyQualifiedName~InfoCommandTests|FullyQualifiedName~NcclLibraryTests" 2>&1 | tee "$out/gpu-tests.log"
code=${PIPESTATUS[0]}
[ "$code" -eq 124 ] && echo "tests/run-gpu.sh: the GPU tests were cut off after ${NATIVECONTRAST_GPU_TEST_SECONDS:-330} s"
[ "$code" -eq 0 ] || status=1

# The benchmarks get what is left of one device command (10 minutes), less a margin for the files to come back.
left=$(( ${NATIVECONTRAST_DEVICE_SECONDS:-570} - SECONDS ))
if [ "$bench" != none ] && [ "$left" -lt 60 ]; then
  echo "tests/run-gpu.sh: ${left} s left of the device command: no benchmarks (run bench/run-gpu.sh in a call of its own)"
elif [ "$bench" != none ]; then
  echo "== benchmarks ($bench, at most ${left} s)"
  timeout "$left" bash bench/run-gpu.sh $([ "$bench" = quick ] && echo --quick) || status=1
fi
exit $status
