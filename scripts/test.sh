#!/usr/bin/env bash
# test.sh — set up everything (packages, model, oracles), build, and run the whole test suite:
# every CTest label of the normal build, then the unit tests again under ASan+UBSan, then a short
# libFuzzer run of each fuzz target. Exits non-zero on any failure.
#   scripts/test.sh [--quick]   (--quick: the normal build's tests only)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
quick=0
[ "${1:-}" = "--quick" ] && quick=1
"$here/scripts/setup.sh" --test
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
status=0
ctest --test-dir "$here/build" --output-on-failure -j1 -LE fuzz || status=1
if [ $quick = 0 ]; then
  # The CUDA kernels build (and so cannot rot) in build/; the sanitizer build needs only the C.
  cmake -S "$here" -B "$here/build-asan" -DOMNIKV_SANITIZE=ON -DOMNIKV_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build "$here/build-asan" -j"$(nproc)" >/dev/null
  # Leak checking stays off: Open MPI's dynamically loaded components leak at MPI_Init and
  # LeakSanitizer cannot attribute (or suppress) frames of unloaded modules.
  ASAN_OPTIONS=detect_leaks=0 ctest --test-dir "$here/build-asan" -L unit --output-on-failure || status=1
  ctest --test-dir "$here/build" -L fuzz --output-on-failure || status=1
fi
exit $status
