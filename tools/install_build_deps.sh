#!/usr/bin/env bash
# Installs into the python3 on PATH (activate your venv first) what a build outside pip's
# isolated build needs: the [build-system].requires of pyproject.toml (scikit-build-core,
# pybind11; read from the file, so the versions are the ones `pip install .` builds with) and
# CMake >= 3.18 when the cmake on PATH is missing or older (the pip "cmake" package).
#   tools/install_build_deps.sh             build requirements + cmake
#   tools/install_build_deps.sh --cmake     cmake only (C++-only builds: tools/ci/sanitize.sh)
# Used by tools/dev_build.sh and tools/ci/*.sh; cheap when everything is already there (pip
# only checks what is installed). A C++17 compiler and make or ninja must already exist
# (Debian: apt-get install g++ make).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
cmake_min=3.18

die() { echo "!! install_build_deps: $*" >&2; exit 1; }

command -v "$py" >/dev/null || die "no $py on PATH"
command -v c++ >/dev/null || command -v g++ >/dev/null || command -v clang++ >/dev/null ||
  die "no C++ compiler (c++, g++ or clang++) on PATH; Debian: apt-get install g++ make"
command -v make >/dev/null || command -v ninja >/dev/null ||
  die "neither make nor ninja on PATH; Debian: apt-get install make"

want=()
if [ "${1:-}" != "--cmake" ]; then
  # [build-system].requires, as pip's isolated build reads it (tomllib: Python >= 3.11; a plain
  # parse of the one list otherwise).
  mapfile -t want < <("$py" - <<'PY'
import re
text = open("pyproject.toml", encoding="utf-8").read()
try:
    import tomllib
    reqs = tomllib.loads(text)["build-system"]["requires"]
except ImportError:
    block = re.search(r"^\[build-system\](.*?)(?=^\[)", text, re.S | re.M).group(1)
    reqs = re.findall(r'"([^"]+)"', re.search(r"requires\s*=\s*\[(.*?)\]", block, re.S).group(1))
print("\n".join(reqs))
PY
  )
  [ ${#want[@]} -gt 0 ] || die "no [build-system].requires found in pyproject.toml"
fi

cmake_ok() {
  command -v cmake >/dev/null || return 1
  local v
  v=$(cmake --version | sed -n '1s/^cmake version \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
  [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$cmake_min" "$v" | sort -V | head -n1)" = "$cmake_min" ]
}
cmake_ok || want+=("cmake>=$cmake_min")

if [ ${#want[@]} -gt 0 ]; then
  echo "== install_build_deps: $py -m pip install (if missing) ${want[*]}"
  "$py" -m pip install -q --disable-pip-version-check "${want[@]}"
fi
hash -r
cmake_ok || die "cmake >= $cmake_min still not on PATH after pip install cmake (is $py's bin directory on PATH?)"
