"""Copy bandwidth at a given working-set size: the denominator of the per-op roofline.

``copy_bandwidth(nbytes)`` copies ``nbytes / 2`` bytes from one buffer into another (so the working
set -- source plus destination -- is ``nbytes`` and ``nbytes`` bytes are moved: read + written),
repeatedly in a hot loop as the op benchmarks do, and returns the median rate in bytes/s.
Single-threaded (numpy ``copyto``, or torch ``Tensor.copy_`` with ``impl="torch"``).

By default the fixed per-call overhead (the median time of copying 64 bytes) is subtracted, so the
roofline is that of the memory system, not of a Python call: a slightly stricter target.
"""
from __future__ import annotations

import functools
import time
from typing import Callable, Dict, Tuple

import numpy as np

from .timing import calibrate_number, percentile

__all__ = ["copier", "copy_bandwidth", "copy_call_overhead", "copy_time", "without_call_time"]

_MIN_SAMPLE_SECONDS = 2e-4


def copier(nbytes: int, impl: str = "numpy") -> Callable[[], object]:
    """A callable copying ``nbytes / 2`` bytes between two buffers of its own (working set ``nbytes``)."""
    elems = max(1, int(nbytes) // 8)  # float32 elements per buffer: nbytes/2 bytes each
    if impl == "numpy":
        src = np.random.default_rng(0).standard_normal(elems, dtype=np.float32)
        dst = np.empty_like(src)
        return lambda: np.copyto(dst, src)
    if impl == "torch":
        import torch

        src = torch.randn(elems)
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)
    raise ValueError(f"impl: expected 'numpy' or 'torch', got {impl!r}")


def copy_time(nbytes: int, repeats: int = 15, impl: str = "numpy") -> float:
    """Median seconds per copy of a ``nbytes`` working set (``nbytes / 2`` read + written)."""
    if nbytes < 8:
        raise ValueError(f"nbytes: must be >= 8, got {nbytes}")
    fn = copier(nbytes, impl)
    for _ in range(3):
        fn()
    number = calibrate_number(fn, _MIN_SAMPLE_SECONDS)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
    samples.sort()
    return percentile(samples, 50)


@functools.lru_cache(maxsize=None)
def copy_call_overhead(impl: str = "numpy") -> float:
    """Median seconds of one copy call on a tiny (64-byte) working set."""
    return copy_time(64, repeats=25, impl=impl)


def without_call_time(seconds: float, impl: str = "numpy") -> float:
    """A copy's time minus the fixed cost of one copy call; never less than half of it, so that
    noise cannot make the copy look free."""
    return max(seconds - copy_call_overhead(impl), seconds * 0.5)


_cache: Dict[Tuple[int, str, bool], float] = {}


def copy_bandwidth(nbytes: int, impl: str = "numpy", subtract_overhead: bool = True,
                   repeats: int = 15, cached: bool = True) -> float:
    """Median copy bandwidth in bytes/s (bytes read + bytes written) at working set ``nbytes``."""
    nbytes = int(nbytes)
    key = (nbytes, impl, subtract_overhead)
    if cached and key in _cache:
        return _cache[key]
    t = copy_time(nbytes, repeats=repeats, impl=impl)
    moved = (max(1, nbytes // 8)) * 8  # what was really copied (two float32 buffers)
    if subtract_overhead:
        t = without_call_time(t, impl)
    bw = moved / t
    _cache[key] = bw
    return bw
