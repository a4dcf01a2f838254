#!/usr/bin/env bash
# The kernels under AddressSanitizer + UndefinedBehaviorSanitizer, through every ISA path this
# machine supports (scalar, avx2, avx512 on x86-64), in two ways from one build:
#   1. the C++ kernel tests (tests/cpp, with leak detection): exact-size heap buffers, so any
#      read or write past a buffer end is reported;
#   2. the Python suites that reach the kernels through torch (fuzzing, bad input, the GEMM and
#      block ops, the numpy surface) against an ASan build of mnv3ext._C, in a staged copy of
#      the package: buffers torch allocates, strides and sizes the C++ tests never make.
# Fails on any test failure or sanitizer report.
#   tools/ci/sanitize.sh [build-dir]      (default build/asan)
set -euo pipefail
cd "$(dirname "$0")/../.."
build_dir=${1:-build/asan}
bash tools/install_build_deps.sh  # scikit-build-core, pybind11, cmake >= 3.18 if missing

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMNV3EXT_SANITIZE=ON \
  -DMNV3EXT_BUILD_TESTS=ON -DMNV3EXT_BUILD_PYTHON=ON \
  -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v python3)" >/dev/null
cmake --build "$build_dir" -j2 >/dev/null

failed() { echo "!! sanitize: FAILED: $*" >&2; exit 1; }
reported() { grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$@"; }
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# 1. C++ kernel tests.
log=$build_dir/sanitize.log
status=0
(cd "$build_dir" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
  ctest --output-on-failure) >"$log" 2>&1 || status=$?
cat "$log"
{ [ $status -eq 0 ] && ! reported "$log"; } || failed "C++ kernel tests (see above)"
echo "== sanitize: C++ kernel tests clean under ASan+UBSan (detect_leaks=1)"

# 2. Python suites. The package's Python files plus the ASan _C in a directory of their own,
# first on sys.path (plain `pytest` does not put the current directory there). The ASan
# runtime must be the first library loaded, and libstdc++ before it resolves __cxa_throw
# (python itself does not link libstdc++). No leak detection: CPython and torch keep
# allocations alive until exit by design. Not here: test_fuzz_bad_input (its workers run
# under an address-space limit, too small for ASan's shadow memory) and the RSS tests of
# test_threads_memory (ASan's quarantine holds freed memory).
stage=$(realpath -m "$build_dir/python-stage")
reports=$(realpath -m "$build_dir/python-reports")  # a report per process (pytest captures stderr)
rm -rf "$stage" "$reports" && mkdir -p "$stage" "$reports"
cp -r mnv3ext "$stage/"
find "$stage" \( -name '__pycache__' -o -name '_C*.so' \) -prune -exec rm -rf {} +
cp "$build_dir"/_C*.so "$stage/mnv3ext/"
pylog=$build_dir/sanitize-python.log
asan_runtime="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
run_python() {
  LD_PRELOAD="$asan_runtime" PYTHONPATH="$stage" MNV3EXT_HYPOTHESIS_PROFILE=ci \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=$reports/asan \
    UBSAN_OPTIONS=$UBSAN_OPTIONS:log_path=$reports/ubsan "$@"
}
where=$(cd "$stage" && run_python python3 -c 'import mnv3ext; print(mnv3ext._C.__file__)')
case $where in "$stage"/*) ;; *) failed "imported mnv3ext._C from $where, not the ASan build";; esac
status=0
run_python pytest -q -p no:cacheprovider -rs \
  tests/test_fuzz_ops.py tests/test_fuzz_gemm_ops.py tests/test_fuzz_block_op.py tests/test_fuzz_sequence_op.py \
  tests/test_ops_bad_input.py tests/test_gemm_bad_input.py tests/test_ops_numerics.py \
  tests/test_gemm_ops.py tests/test_block_op.py tests/test_se_packed.py tests/test_sequence_op.py tests/test_numpy_api.py \
  tests/test_threads_memory.py -k "not rss" >"$pylog" 2>&1 || status=$?
tail -n 40 "$pylog"
cat "$reports"/* 2>/dev/null || true
{ [ $status -eq 0 ] && [ -z "$(ls -A "$reports")" ] && ! reported "$pylog"; } || failed "Python suites against the ASan _C (log: $pylog)"
echo "== sanitize: Python suites clean against an ASan+UBSan build of mnv3ext._C"
