#!/usr/bin/env bash
# ARM (aarch64) part of CI, without ARM hardware: cross-compile with Debian's gcc cross toolchain
# and run under qemu-user, on two emulated CPUs:
#   cortex-a53  plain Armv8.0-A (Raspberry Pi 3/4 class): the NEON baseline
#   max         every feature qemu knows (fp16, dotprod, i8mm, bf16, SVE...)
# Stages (all by default; name some to run only those):
#   cpp    C++ kernel tests (tests/cpp) cross-built, run by ctest under qemu on both CPUs
#   wheel  the aarch64 wheel cross-built with scikit-build-core; its numpy-level tests
#          (tests/test_numpy_api.py) under the emulated Debian Python on both CPUs
#   torch  torch.ops.mnv3ext.* against mnv3ext.reference under emulated torch 2.9.1
#          (tests/test_arm_torch_smoke.py) on both CPUs
#   board  the README's "ARM boards" steps under emulated torch 2.9.1 on both CPUs, on a small
#          configuration (MobileNetV3-Small, 64x64, 2 timed rounds): `mnv3ext info` reports
#          the NEON path; optimize() matches eager and fuses everything (tools/ci/arm_board.py);
#          `mnv3ext bench --json` with eager, mnv3ext and ONNX Runtime (its aarch64 wheel) writes
#          a file that validates against the schema; then `mnv3ext report` on this x86 host
#          merges both emulated runs with an x86 run (needs mnv3ext installed on the host, as
#          .ci/run does, plus jsonschema; --plot when matplotlib is there)
# Needs root (apt-get, mmdebstrap --mode=root) and network access to Debian and PyPI. Everything
# it downloads or builds stays under build/: the root file system, the pip cache and the
# emulated torch are reused by later runs. Never time anything here: emulated NEON code says
# nothing about real ARM speed.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(cpp wheel torch board)
want() { local s; for s in "${stages[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

# Every `say` starts a section; the wall time of each is printed when the next one starts and
# all of them at exit (CI logs show where the minutes go).
sections=() section_secs=() section="" section_t0=$SECONDS script_t0=$SECONDS
end_section() {
  [ -n "$section" ] || return 0
  sections+=("$section") section_secs+=($((SECONDS - section_t0)))
  echo "== [arm] ($((SECONDS - section_t0)) s)"
  section=""
}
say() { end_section; section=$*; section_t0=$SECONDS; echo "== [arm] $*"; }
section_times() {
  local status=$? i
  end_section
  echo "== [arm] wall times"
  for i in "${!sections[@]}"; do printf '   %5d s  %s\n' "${section_secs[$i]}" "${sections[$i]}"; done
  printf '   %5d s  total\n' $((SECONDS - script_t0))
  return $status
}
trap section_times EXIT
die() {
  echo "" >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  echo "!! [arm] FAILED: $*" >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  exit 1
}
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

cpus=(cortex-a53 max)
build=$repo/build
rootfs=$build/aarch64-rootfs
site=$build/aarch64-site        # the wheel, installed for the emulated Python
torch_site=$build/aarch64-torch  # torch 2.9.1 for aarch64 and its pure-Python dependencies
ort_site=$build/aarch64-ort      # onnxruntime for aarch64 and its dependencies (board stage)
board_out=$build/aarch64-board   # the board stage's bench JSON files and merged report
torch_version=2.9.1
# onnxruntime for the emulated board stage, and onnx (torch 2.9.1's ONNX exporter needs it; the
# 1.17 line needs no ml_dtypes) with a protobuf both accept. The newest onnxruntime aarch64 wheel
# (1.32.0) crashes with SIGSEGV while loading onnxruntime_pybind11_state under qemu-user on both
# emulated CPUs, before any of our code runs; 1.19.2, 1.22.1, 1.23.2 and 1.24.1 load.
ort_version=1.24.1
onnx_version=1.17.0
protobuf_version=5.29.5
export PIP_CACHE_DIR=$build/pip-cache PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export MNV3EXT_ARM_ROOTFS=$rootfs

# ---------------------------------------------------------------------------------------------
say "tools"
if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null ||
   ! command -v mmdebstrap >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends g++-aarch64-linux-gnu qemu-user mmdebstrap >/dev/null
fi
# The wheel is built without build isolation (the cross-compile settings must reach CMake), so
# scikit-build-core, pybind11 and CMake must be in this python3: install them if missing.
bash tools/install_build_deps.sh

# ---------------------------------------------------------------------------------------------
# An aarch64 Debian root file system: the target's Python, numpy, pytest, headers, libraries.
# Extracted only (maintainer scripts never run), hence the fix-ups below.
packages="python3.11,libpython3.11-dev,python3-numpy,python3-pytest,libstdc++6,libgcc-s1"
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || die "no Debian mirror found in the apt sources of this machine (needed by mmdebstrap)"
stamp="bookworm arm64 $packages fixups-1"
if [ "$(cat "$rootfs/.mnv3ext-stamp" 2>/dev/null)" != "$stamp" ]; then
  say "root file system (mmdebstrap from $mirror)"
  rm -rf "$rootfs" "$rootfs.tmp"
  mkdir -p "$build"
  mmdebstrap --quiet --mode=root --arch=arm64 --variant=extract --include="$packages" \
    bookworm "$rootfs.tmp" "$mirror"
  # 1. Absolute symlinks point into the host when followed from outside: make them relative.
  while IFS= read -r link; do
    target=$(readlink "$link")
    ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$rootfs.tmp$target")" "$link"
  done < <(find "$rootfs.tmp" -type l -lname '/*')
  # 2. update-alternatives never ran: expose the reference BLAS/LAPACK numpy links against.
  lib=$rootfs.tmp/usr/lib/aarch64-linux-gnu
  ln -sfn blas/libblas.so.3 "$lib/libblas.so.3"
  ln -sfn lapack/liblapack.so.3 "$lib/liblapack.so.3"
  # 3. libstdc++6 is in the package list on purpose (extract does not pull it for python).
  [ -e "$lib/libstdc++.so.6" ] || die "libstdc++.so.6 missing from the root file system"
  echo "$stamp" > "$rootfs.tmp/.mnv3ext-stamp"
  mv "$rootfs.tmp" "$rootfs"
else
  say "root file system (cached)"
fi
py_arm() {  # the emulated Python; QEMU_CPU chooses the CPU model
  qemu-aarch64 -L "$rootfs" "$rootfs/usr/bin/python3.11" "$@"
}
[ "$(QEMU_CPU=cortex-a53 py_arm -c 'import platform; print(platform.machine())')" = aarch64 ] ||
  die "the emulated Python does not run"

# ---------------------------------------------------------------------------------------------
if want cpp; then
  say "C++ kernel tests: cross build"
  cmake -S . -B build/aarch64-tests -DCMAKE_TOOLCHAIN_FILE="$repo/cmake/aarch64-linux-gnu.cmake" \
    -DCMAKE_BUILD_TYPE=Release -DMNV3EXT_BUILD_TESTS=ON -DMNV3EXT_BUILD_PYTHON=OFF >/dev/null
  cmake --build build/aarch64-tests -j2 >/dev/null
  for cpu in "${cpus[@]}"; do
    say "C++ kernel tests under qemu, QEMU_CPU=$cpu"
    (cd build/aarch64-tests && QEMU_CPU=$cpu ctest --output-on-failure) ||
      die "C++ kernel tests failed on emulated $cpu"
  done
fi

# ---------------------------------------------------------------------------------------------
if want wheel || want torch || want board; then
  say "aarch64 wheel: cross build (scikit-build-core)"
  rm -rf build/aarch64-dist
  _PYTHON_HOST_PLATFORM=linux-aarch64 SETUPTOOLS_EXT_SUFFIX=.cpython-311-aarch64-linux-gnu.so \
  python3 -m pip wheel . --no-build-isolation --no-deps -q -w build/aarch64-dist \
    -Cbuild-dir=build/aarch64-wheel-build \
    -Ccmake.define.CMAKE_TOOLCHAIN_FILE="$repo/cmake/aarch64-linux-gnu.cmake" \
    -Ccmake.define.PYBIND11_USE_CROSSCOMPILING=ON \
    -Ccmake.define.Python_INCLUDE_DIR="$rootfs/usr/include/python3.11" \
    -Ccmake.define.pybind11_DIR="$(python3 -m pybind11 --cmakedir)"
  wheel=$(ls build/aarch64-dist/mnv3ext-*-linux_aarch64.whl 2>/dev/null | head -n1)
  [ -n "$wheel" ] || die "no linux_aarch64 wheel was produced"
  say "built $(basename "$wheel")"
  rm -rf "$site"
  python3 -m pip install -q --no-deps --platform linux_aarch64 --target "$site" "$wheel"
  so=$(ls "$site"/mnv3ext/_C.cpython-311-aarch64-linux-gnu.so)
  file -b "$so" 2>/dev/null | grep -q aarch64 || [ "$(od -An -tx1 -j18 -N2 "$so" | tr -d ' ')" = b700 ] ||
    die "$so is not an aarch64 object"
fi

# Tests run from an empty directory so the source tree's mnv3ext (the x86 build) is not imported.
run_dir=$build/aarch64-run
mkdir -p "$run_dir"

if want wheel; then
  for cpu in "${cpus[@]}"; do
    say "numpy-level tests of the wheel under qemu, QEMU_CPU=$cpu"
    (cd "$run_dir" && QEMU_CPU=$cpu PYTHONPATH="$site" MNV3EXT_EXPECT_ISAS=scalar,neon \
       py_arm -m pytest -q -p no:cacheprovider --noconftest --rootdir="$repo" -c /dev/null "$repo/tests/test_numpy_api.py") ||
      die "numpy-level tests failed on emulated $cpu"
  done
fi

# ---------------------------------------------------------------------------------------------
if want torch || want board; then
  torch_stamp="torch==$torch_version cp311 manylinux_2_28_aarch64"
  if [ "$(cat "$torch_site/.mnv3ext-stamp" 2>/dev/null)" != "$torch_stamp" ]; then
    say "torch $torch_version for aarch64 (download)"
    rm -rf "$torch_site" "$torch_site.tmp"
    # Binary wheels for the target; the dependencies are pure Python except MarkupSafe, whose
    # aarch64 wheel the platform options select. numpy comes from the root file system.
    python3 -m pip install -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
      --python-version 3.11 --implementation cp --abi cp311 --target "$torch_site.tmp" \
      "torch==$torch_version" filelock typing-extensions sympy mpmath networkx jinja2 \
      MarkupSafe fsspec
    echo "$torch_stamp" > "$torch_site.tmp/.mnv3ext-stamp"
    mv "$torch_site.tmp" "$torch_site"
  else
    say "torch $torch_version for aarch64 (cached)"
  fi
fi
if want torch; then
  for cpu in "${cpus[@]}"; do
    say "torch ops vs mnv3ext.reference under qemu, QEMU_CPU=$cpu"
    (cd "$run_dir" && QEMU_CPU=$cpu PYTHONPATH="$site:$torch_site" MNV3EXT_EXPECT_ISAS=scalar,neon \
       MNV3EXT_TEST_ISAS=neon \
       py_arm -m pytest -q -p no:cacheprovider --noconftest --rootdir="$repo" -c /dev/null \
       "$repo/tests/test_arm_torch_smoke.py") ||
      die "torch-level tests failed on emulated $cpu"
  done
fi

# ---------------------------------------------------------------------------------------------
if want board; then
  # The host side (x86 bench, report, schema check) uses the mnv3ext installed in python3, run
  # from the empty directory so the source tree is not imported instead.
  (cd "$run_dir" && python3 -c 'import mnv3ext._C, jsonschema') ||
    die "board: the host python3 needs mnv3ext and jsonschema installed (pip install torch==2.13.0 '.[test]')"
  ort_stamp="onnxruntime==$ort_version onnx==$onnx_version protobuf==$protobuf_version cp311 manylinux_2_28_aarch64"
  if [ "$(cat "$ort_site/.mnv3ext-stamp" 2>/dev/null)" != "$ort_stamp" ]; then
    say "onnxruntime $ort_version for aarch64 (download)"
    rm -rf "$ort_site" "$ort_site.tmp"
    # With their dependencies for the target; numpy, sympy and typing-extensions come from the
    # root file system and the torch site. No aarch64 wheel: the board stage runs without the
    # onnxruntime backend and says so.
    if python3 -m pip install -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
         --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp --abi cp311 \
         --target "$ort_site.tmp" "onnxruntime==$ort_version" "onnx==$onnx_version" \
         "protobuf==$protobuf_version" flatbuffers packaging coloredlogs humanfriendly; then
      echo "$ort_stamp" > "$ort_site.tmp/.mnv3ext-stamp"
      mv "$ort_site.tmp" "$ort_site"
    else
      echo "== [arm] no onnxruntime wheel for aarch64/cp311: the board stage runs without it"
      rm -rf "$ort_site.tmp"
    fi
  else
    say "onnxruntime $ort_version for aarch64 (cached)"
  fi
  board_path="$site:$torch_site"
  backends=eager,mnv3ext
  if [ -d "$ort_site" ]; then
    board_path="$board_path:$ort_site"
    backends=$backends,onnxruntime
  fi
  rm -rf "$board_out"
  mkdir -p "$board_out"
  for cpu in "${cpus[@]}"; do
    # One emulated process per CPU (each start of Python under qemu pays about a minute for
    # importing torch): mnv3ext info, the optimize() check, mnv3ext bench --json; see
    # tools/ci/arm_board.py. The README's two bench commands: one thread on cortex-a53, all
    # threads with --per-layer on max.
    bench_args=(--threads 1)
    [ "$cpu" = max ] && bench_args=(--per-layer)
    say "board steps under qemu, QEMU_CPU=$cpu: mnv3ext info, optimize() vs eager, mnv3ext bench --json ${bench_args[*]}"
    (cd "$run_dir" && QEMU_CPU=$cpu PYTHONPATH="$board_path" py_arm "$repo/tools/ci/arm_board.py" board \
       --isa neon --size 64 --json "$board_out/qemu-$cpu.json" --model small --warmup 1 --runs 2 --block-calls 1 \
       --backends "$backends" "${bench_args[@]}" --label "qemu-$cpu (emulated: times meaningless)") ||
      die "board steps failed on emulated $cpu"
    (cd "$run_dir" && python3 "$repo/tools/ci/arm_board.py" validate "$board_out/qemu-$cpu.json" \
       --arch aarch64 --isa neon --backends "$backends") || die "the bench JSON of emulated $cpu is not right"
  done
  say "board steps: x86 host run and mnv3ext report merging it with the emulated runs"
  host_backends=eager,mnv3ext
  (cd "$run_dir" && python3 -c 'import onnxruntime' 2>/dev/null) && host_backends=$host_backends,onnxruntime
  (cd "$run_dir" && python3 -m mnv3ext bench --model small --size 64 --warmup 1 --runs 2 --block-calls 1 --threads 1 \
     --backends "$host_backends" --label "host-$(uname -m)" --json "$board_out/host.json" --quiet >/dev/null) ||
    die "mnv3ext bench failed on the host"
  host_isa=$(cd "$run_dir" && python3 -c 'import mnv3ext; print(mnv3ext.current_isa())')
  (cd "$run_dir" && python3 "$repo/tools/ci/arm_board.py" validate "$board_out/host.json" --arch "$(uname -m)" \
     --isa "$host_isa" --backends "$host_backends") || die "the host's bench JSON is not right"
  plot=()
  (cd "$run_dir" && python3 -c 'import matplotlib' 2>/dev/null) && plot=(--plot "$board_out/boards.png")
  (cd "$run_dir" && python3 -m mnv3ext report "$board_out"/qemu-*.json "$board_out/host.json" \
     -o "$board_out/report.md" "${plot[@]}") || die "mnv3ext report failed"
  cat "$board_out/report.md"
  for label in qemu-cortex-a53 qemu-max "host-$(uname -m)"; do
    grep -q "^| \[[0-9]\] $label" "$board_out/report.md" || die "the merged report has no row for $label"
  done
  [ ${#plot[@]} -eq 0 ] || [ "$(head -c 4 "$board_out/boards.png" | od -An -tx1 | tr -d ' ')" = 89504e47 ] ||
    die "report --plot wrote no PNG"
fi

say "all ARM checks passed (${stages[*]}) on ${cpus[*]}"
