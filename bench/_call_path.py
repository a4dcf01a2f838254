"""Shared by compile_overhead.py and call_overhead.py: an optimized model whose sequence runs no
kernels (so only the Python call path is timed), and the warm / cold median timer."""
from __future__ import annotations

import contextlib
import statistics
import time

import torch


class NoRun:
    """Stands in for the sequence's C++ plan on the eager fast path: runs nothing."""

    def run(self, *args):
        pass


@contextlib.contextmanager
def kernels_stubbed(sequence):
    """Within the block, the sequence's eager fast path skips its kernels; yields its validated plan."""
    validated = sequence._validated
    if validated is None or not validated.plain:
        raise SystemExit("the model's sequence has no eager fast path for this input")
    sequence._validated = validated._replace(entry=(NoRun(),) + validated.entry[1:])
    try:
        yield validated
    finally:
        sequence._validated = validated


def median_us(call, rounds, sweep=None):
    """Median µs of `call()`; with `sweep`, each call after an in-place add over it (cold caches)."""
    times = []
    for _ in range(rounds):
        if sweep is not None:
            sweep.add_(1.0)
        t0 = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e3


def sweep_buffer():
    """64 MiB: more than L2 and this VM's share of L3."""
    return torch.empty(16 << 20)
