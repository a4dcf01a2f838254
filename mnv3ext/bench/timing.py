"""Interleaved round-robin timing of several callables in one process.

Every round calls each callable once (or ``number`` times in a row for very short ones, timed as
one sample and divided), in a fresh shuffled order, so slow drifts of the machine (frequency,
other tenants, thermal) hit all candidates alike. Warm-up rounds are run first and excluded.
Summaries are medians and percentiles, never means alone.

:func:`alternating_blocks` times in short blocks instead of single calls: per block and callable
one warm (untimed) call, then several timed calls back to back, the blocks rotating between the
callables. Runtimes whose thread pools spin after a call (ONNX Runtime's default) steal the cores
of whatever runs next; call-by-call interleaving would charge that to the next candidate, a block
charges it to the block's warm call only, and each candidate is timed as its users run it (call
after call of the same model). A spin can outlast a whole block, though: ONNX Runtime's worker
kept spinning ~45 ms after its last call at 2 threads (2026-12-02, onnxruntime 1.32), and the
scheduler gave it the second core while our worker waited (`bench/after_other_runtime.py`). So
before each block the main thread waits until no other thread of the process is busy
(:func:`wait_until_idle`, Linux; at most a quarter second): every candidate starts on cores no
other runtime is spinning on, as when it runs alone.
"""
from __future__ import annotations

import gc
import math
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence

__all__ = ["Stats", "summarize", "percentile", "interleaved", "alternating_blocks", "calibrate_number",
           "wait_until_idle", "other_threads_cpu_ns"]


def other_threads_cpu_ns() -> Optional[Dict[str, int]]:
    """CPU nanoseconds so far of every thread of this process but the calling one (Linux), else None."""
    me = str(threading.get_native_id())
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    used = {}
    for tid in tids:
        if tid == me:
            continue
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                used[tid] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended
    return used


def wait_until_idle(max_seconds: float = 0.25, window: float = 0.01, busy_share: float = 0.1) -> float:
    """Sleeps until no other thread of this process used more than ``busy_share`` of a core over a
    ``window`` (a thread pool spinning after its last call), or ``max_seconds`` passed. Returns the
    seconds waited; 0 where threads cannot be observed (not Linux). The window spans several
    scheduler ticks: the kernel adds a running thread's time in tick-sized steps (4 ms at 250 Hz),
    so a shorter window can see a spinning thread use nothing."""
    start = time.perf_counter()
    before = other_threads_cpu_ns()
    if before is None:
        return 0.0
    while time.perf_counter() - start < max_seconds:
        time.sleep(window)
        after = other_threads_cpu_ns() or {}
        if all(ns - before.get(tid, 0) <= busy_share * window * 1e9 for tid, ns in after.items()):
            break
        before = after
    return time.perf_counter() - start


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in [0, 100]) of an already sorted sequence."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo] * (1.0 - frac) + sorted_values[hi] * frac)


@dataclass
class Stats:
    """Summary of one callable's samples, in seconds per call."""

    samples: List[float] = field(repr=False)
    number: int  # calls per sample
    median: float
    p10: float
    p90: float
    mean: float
    min: float
    max: float
    blocks: Optional[int] = None  # alternating_blocks: blocks run (same for every callable)

    @property
    def n(self) -> int:
        return len(self.samples)

    def as_dict(self, unit: float = 1e-3, with_samples: bool = False) -> Dict[str, float]:
        """Summary in ``unit`` seconds (default milliseconds)."""
        d = {k: v / unit for k, v in asdict(self).items() if k not in ("samples", "number", "blocks")}
        d["n"] = self.n
        d["number"] = self.number
        if with_samples:
            d["samples"] = [s / unit for s in self.samples]
        return d


def summarize(samples: Sequence[float], number: int = 1) -> Stats:
    s = sorted(float(v) for v in samples)
    if not s:
        raise ValueError("samples: need at least one sample")
    return Stats(
        samples=list(samples), number=number, median=percentile(s, 50), p10=percentile(s, 10),
        p90=percentile(s, 90), mean=sum(s) / len(s), min=s[0], max=s[-1],
    )


def calibrate_number(fn: Callable[[], object], min_sample_seconds: float, max_number: int = 10000) -> int:
    """Smallest power-of-two-ish call count whose back-to-back time reaches ``min_sample_seconds``."""
    if min_sample_seconds <= 0:
        return 1
    number = 1
    while number < max_number:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_sample_seconds:
            break
        # Aim a little above the target from the measured rate.
        guess = int(number * min_sample_seconds / max(elapsed, 1e-9) * 1.2) + 1
        number = min(max_number, max(number * 2, guess))
    return number


def interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 3,
    runs: Optional[int] = None,
    seconds: Optional[float] = None,
    min_runs: int = 3,
    max_runs: int = 1_000_000,
    min_sample_seconds: float = 0.0,
    shuffle: bool = True,
    seed: int = 0,
    progress: Optional[Callable[[float, str], None]] = None,
) -> Dict[str, Stats]:
    """Time ``fns`` round-robin; returns per-name :class:`Stats` (seconds per call).

    Exactly one of ``runs`` (number of timed rounds) or ``seconds`` (time budget for the timed
    rounds, at least ``min_runs`` rounds) should be given; ``runs`` defaults to 20.
    ``warmup`` rounds come first and are discarded (the first call of each is also where lazy
    initialisation happens). With ``min_sample_seconds`` > 0, very short callables are called
    ``number`` times per sample (calibrated after warm-up) so that timer overhead stays negligible.
    ``progress(fraction, message)`` is called after every round. The garbage collector is off
    during the timed rounds (as in ``timeit``).
    """
    if runs is not None and seconds is not None:
        raise ValueError("runs/seconds: give one of them, not both")
    if runs is None and seconds is None:
        runs = 20
    if runs is not None and runs < 1:
        raise ValueError(f"runs: must be >= 1, got {runs}")
    if seconds is not None and seconds <= 0:
        raise ValueError(f"seconds: must be > 0, got {seconds}")
    if warmup < 0:
        raise ValueError(f"warmup: must be >= 0, got {warmup}")
    names = list(fns)
    if not names:
        return {}
    rng = random.Random(seed)
    order = list(names)
    for i in range(warmup):
        for name in order:
            fns[name]()
        if progress is not None:
            progress(0.0, f"warm-up {i + 1}/{warmup}")
    numbers = {name: calibrate_number(fns[name], min_sample_seconds) for name in names}
    samples: Dict[str, List[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # as timeit does: no collector pauses inside samples
    try:
        _rounds(fns, names, order, numbers, samples, rng, runs, seconds, min_runs, max_runs, shuffle, progress)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: summarize(samples[name], numbers[name]) for name in names}


def _rounds(fns, names, order, numbers, samples, rng, runs, seconds, min_runs, max_runs, shuffle, progress):
    clock = time.perf_counter
    start = clock()
    done = 0
    while True:
        if runs is not None and done >= runs:
            break
        if seconds is not None and done >= min_runs and (clock() - start >= seconds or done >= max_runs):
            break
        if shuffle:
            rng.shuffle(order)
        for name in order:
            fn, number = fns[name], numbers[name]
            if number == 1:
                t0 = clock()
                fn()
                samples[name].append(clock() - t0)
            else:
                t0 = clock()
                for _ in range(number):
                    fn()
                samples[name].append((clock() - t0) / number)
        done += 1
        if progress is not None:
            if runs is not None:
                frac = done / runs
            else:
                frac = min(1.0, (clock() - start) / seconds)
            progress(frac, f"round {done}" + (f"/{runs}" if runs is not None else ""))


def alternating_blocks(
    fns: Mapping[str, Callable[[], object]],
    *,
    block_calls: int = 5,
    warm_calls: int = 1,
    warmup: int = 3,
    runs: Optional[int] = None,
    seconds: Optional[float] = None,
    min_blocks: int = 3,
    max_blocks: int = 1_000_000,
    shuffle: bool = True,
    seed: int = 0,
    quiesce: bool = True,
    progress: Optional[Callable[[float, str], None]] = None,
) -> Dict[str, Stats]:
    """Time ``fns`` in alternating blocks; returns per-name :class:`Stats` (seconds per call).

    ``warmup`` untimed calls of each callable come first. Then blocks: in each, every callable
    (in an order shuffled per block unless ``shuffle`` is false, then rotated) gets ``warm_calls``
    untimed calls followed by ``block_calls`` timed calls, each call one sample. ``runs``: timed
    calls per callable in all (the last block is shortened to hit it exactly); ``seconds``: time
    budget of the blocks (at least ``min_blocks`` blocks); ``runs`` defaults to 20. The number of
    blocks run is ``Stats.blocks`` of every result. The garbage collector is off while timing.
    ``quiesce``: before each callable's block, :func:`wait_until_idle` (the wait is not timed and
    not counted in ``seconds``).
    """
    if runs is not None and seconds is not None:
        raise ValueError("runs/seconds: give one of them, not both")
    if runs is None and seconds is None:
        runs = 20
    if runs is not None and runs < 1:
        raise ValueError(f"runs: must be >= 1, got {runs}")
    if seconds is not None and seconds <= 0:
        raise ValueError(f"seconds: must be > 0, got {seconds}")
    if block_calls < 1:
        raise ValueError(f"block_calls: must be >= 1, got {block_calls}")
    if warm_calls < 0 or warmup < 0:
        raise ValueError("warm_calls/warmup: must be >= 0")
    names = list(fns)
    if not names:
        return {}
    rng = random.Random(seed)
    order = list(names)
    for i in range(warmup):
        for name in order:
            fns[name]()
        if progress is not None:
            progress(0.0, f"warm-up {i + 1}/{warmup}")
    samples: Dict[str, List[float]] = {name: [] for name in names}
    clock = time.perf_counter
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    blocks = 0
    try:
        start = clock()
        while True:
            if runs is not None:
                left = runs - blocks * block_calls
                if left <= 0:
                    break
                calls = min(block_calls, left)
            else:
                if blocks >= min_blocks and (clock() - start >= seconds or blocks >= max_blocks):
                    break
                calls = block_calls
            if shuffle:
                rng.shuffle(order)
            elif blocks:
                order.append(order.pop(0))
            for name in order:
                fn, out = fns[name], samples[name]
                if quiesce:
                    start += wait_until_idle()
                for _ in range(warm_calls):
                    fn()
                for _ in range(calls):
                    t0 = clock()
                    fn()
                    out.append(clock() - t0)
            blocks += 1
            if progress is not None:
                frac = (blocks * block_calls / runs) if runs is not None else (clock() - start) / seconds
                progress(min(1.0, frac), f"block {blocks}")
    finally:
        if gc_was_enabled:
            gc.enable()
    stats = {name: summarize(samples[name]) for name in names}
    for s in stats.values():
        s.blocks = blocks
    return stats
