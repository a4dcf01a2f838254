#!/usr/bin/env bash
# C++ kernel tests under AddressSanitizer + UndefinedBehaviorSanitizer (with leak detection) on
# this machine, through every ISA path it supports (scalar, avx2, avx512 on x86-64). The tests
# hand the kernels exact-size heap buffers, so any read or write past a buffer end is reported.
# Fails on any test failure or sanitizer report.
#   tools/ci/sanitize.sh [build-dir]      (default build/asan)
set -euo pipefail
cd "$(dirname "$0")/../.."
build_dir=${1:-build/asan}
bash tools/install_build_deps.sh --cmake  # cmake >= 3.18 if this machine has none

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMNV3EXT_SANITIZE=ON \
  -DMNV3EXT_BUILD_TESTS=ON -DMNV3EXT_BUILD_PYTHON=OFF >/dev/null
cmake --build "$build_dir" -j2 >/dev/null

log=$build_dir/sanitize.log
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
(cd "$build_dir" && ctest --output-on-failure) >"$log" 2>&1 || status=$?
cat "$log"
if [ $status -ne 0 ] || grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$log"; then
  echo "!! sanitize: FAILED (see above)" >&2
  exit 1
fi
echo "== sanitize: kernel tests clean under ASan+UBSan (detect_leaks=1)"
