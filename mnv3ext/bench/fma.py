"""One core's FMA peak (G multiply-adds/s), the ceiling the GEMM table's "share of peak" is read against.

Where the number comes from, first that works:

1. ``MNV3EXT_FMA_PEAK`` in the environment (G multiply-adds/s of one core), or ``--fma-peak``;
2. ``bench/cpp/fma_peak.cpp`` (``mnv3ext_fma_peak``: 12 independent register-only FMA chains per
   vector width, best of 40 short stretches, x86): an already built binary under the checkout's ``build/*/`` (not older than the source), else built once
   with cmake (``-DMNV3EXT_BUILD_BENCH=ON``, target ``mnv3ext_fma_peak``) into ``build/fma-peak``;
   the line of the ISA in use (``avx512`` or ``avx2``) is taken;
3. otherwise (no checkout, no compiler, not x86) measured in-process a simpler way: the best rate
   of a one-thread ``torch.mm`` on L1/L2-resident 128x128 matrices. That is a GEMM's rate, not
   the FMA ports' bound, so it under-states the peak (over-states the shares); the source says so.

The peak of ``t`` threads is taken as ``min(t, physical cores)`` times one core's.
"""
from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
import time
from typing import Dict, Optional, Tuple

__all__ = ["fma_peak", "parse_fma_peak_output", "peak_for_threads"]

_LINE = re.compile(r"^(avx2|avx512)\s+FMA peak:\s*([0-9.]+)\s*G", re.M)


def parse_fma_peak_output(text: str) -> Dict[str, float]:
    """``{"avx2": G, "avx512": G}`` from mnv3ext_fma_peak's output."""
    return {m.group(1): float(m.group(2)) for m in _LINE.finditer(text)}


def _checkout_root() -> Optional[str]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return root if os.path.isfile(os.path.join(root, "bench", "cpp", "fma_peak.cpp")) else None


def _find_binary(root: str) -> Optional[str]:
    """The newest build/*/mnv3ext_fma_peak not older than its source (an older one may predate a fix)."""
    source = os.path.getmtime(os.path.join(root, "bench", "cpp", "fma_peak.cpp"))
    found = sorted((p for p in glob.glob(os.path.join(root, "build", "*", "mnv3ext_fma_peak"))
                    if os.path.getmtime(p) >= source), key=os.path.getmtime)
    return found[-1] if found else None


def _build_binary(root: str) -> Optional[str]:
    cmake = shutil.which("cmake")
    if cmake is None:
        return None
    out = os.path.join(root, "build", "fma-peak")
    try:
        subprocess.run([cmake, "-S", root, "-B", out, "-DMNV3EXT_BUILD_PYTHON=OFF", "-DMNV3EXT_BUILD_BENCH=ON",
                        "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True, timeout=300)
        subprocess.run([cmake, "--build", out, "--target", "mnv3ext_fma_peak", "-j2"], check=True,
                       capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError):
        return None
    path = os.path.join(out, "mnv3ext_fma_peak")
    return path if os.path.isfile(path) else None


def _torch_mm_rate() -> float:
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        n = 128
        a, b = torch.randn(n, n), torch.randn(n, n)
        c = torch.empty(n, n)
        best = float("inf")
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(50):
                torch.mm(a, b, out=c)
            best = min(best, (time.perf_counter() - t0) / 50)
        return n ** 3 / best / 1e9
    finally:
        torch.set_num_threads(old)


@functools.lru_cache(maxsize=None)
def fma_peak(isa: str, override: Optional[float] = None) -> Tuple[float, str]:
    """(one core's G multiply-adds/s for kernels of ``isa``, where the number comes from)."""
    if override is not None:
        return float(override), "--fma-peak"
    env = os.environ.get("MNV3EXT_FMA_PEAK")
    if env:
        return float(env), "MNV3EXT_FMA_PEAK"
    key = "avx512" if isa.startswith("avx512") else "avx2" if isa.startswith("avx2") else None
    root = _checkout_root()
    if key is not None and root is not None:
        binary = _find_binary(root)
        built = False
        if binary is None:
            binary, built = _build_binary(root), True
        if binary is not None:
            try:
                text = subprocess.run([binary], check=True, capture_output=True, text=True, timeout=120).stdout
                peaks = parse_fma_peak_output(text)
            except (OSError, subprocess.SubprocessError):
                peaks = {}
            if key in peaks:
                how = "built with cmake" if built else "run"
                return peaks[key], f"bench/cpp/fma_peak.cpp ({key} line, {how} now)"
    return _torch_mm_rate(), "in-process 1-thread torch.mm 128x128 rate (a GEMM, below the true FMA peak)"


def peak_for_threads(per_core: float, threads: int) -> float:
    from .machine import physical_cores

    cores = physical_cores() or threads
    return per_core * max(1, min(threads, cores))
