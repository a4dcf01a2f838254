#!/usr/bin/env bash
# Fast incremental build of mnv3ext._C into the source tree, for development:
#   tools/dev_build.sh [build-dir]     then run python/pytest from the repo root.
# Installs its build requirements (scikit-build-core, pybind11, cmake if needed) into the python3
# on PATH first, via tools/install_build_deps.sh. The module is moved into place atomically so
# running processes keep their copy.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build/dev}
bash tools/install_build_deps.sh
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
  -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v python3)" >/dev/null
cmake --build "$build_dir" -j2 >/dev/null
so=$(ls "$build_dir"/_C*.so)
cp "$so" "mnv3ext/.$(basename "$so").tmp.$$"
mv -f "mnv3ext/.$(basename "$so").tmp.$$" "mnv3ext/$(basename "$so")"
echo "built mnv3ext/$(basename "$so")"
