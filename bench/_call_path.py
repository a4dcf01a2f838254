"""Shared by compile_overhead.py and call_overhead.py: the optimized model on one thread, its
sequence with the kernels stubbed out (so only the Python call path is timed), and the warm / cold
median timer."""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

import mnv3ext
from mnv3ext.bench.models import build_model


def optimized_model(description, rounds):
    """Parses --model and --rounds (default `rounds`); one thread, no grad; returns the parsed
    arguments, optimize(model) and a batch-1 input."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", choices=("large", "small"), default="large")
    p.add_argument("--rounds", type=int, default=rounds)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    return args, mnv3ext.optimize(build_model(args.model).eval()), torch.randn(1, 3, 224, 224)


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
