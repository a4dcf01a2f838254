"""How an op's time depends on what ran just before it (``python -m mnv3ext bench-neighbours``).

In the interleaved per-op table our op often runs right after the eager sequence, whose
temporaries push our input and output out of L2. This times our op (the entry point the fused
modules call) right after one call of each neighbour, the neighbours shuffled each round:

* ``ours``: another call of our op (its data as warm as it gets);
* ``eager``: the eager sequence it replaces, as in the op table's rounds;
* ``sweep``: an in-place add over a 16 MiB tensor (nothing of ours left in L2).

Only our call is timed; per neighbour the median in microseconds.
"""
from __future__ import annotations

import random
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .opcases import OpCase

__all__ = ["NEIGHBOURS", "SWEEP_BYTES", "measure_neighbours", "format_neighbours"]

NEIGHBOURS = ("ours", "eager", "sweep")
SWEEP_BYTES = 16 << 20


def measure_neighbours(cases: Sequence[OpCase], *, rounds: int = 150, warmup: int = 5, seed: int = 0,
                       progress: Optional[Callable[[float, str], None]] = None) -> List[Dict[str, object]]:
    """One row per case: ``{"id": ..., "after_<neighbour>_us": median, ...}``."""
    if rounds < 1:
        raise ValueError(f"rounds: must be >= 1, got {rounds}")
    sweep = torch.zeros(SWEEP_BYTES // 4)
    rng = random.Random(seed)
    rows = []
    with torch.inference_mode():
        for i, case in enumerate(cases):
            if progress is not None:
                progress(i / max(len(cases), 1), case.id)
            before = {"ours": case.ours, "eager": case.eager, "sweep": lambda: sweep.add_(1.0)}
            samples: Dict[str, List[float]] = {name: [] for name in NEIGHBOURS}
            for r in range(warmup + rounds):
                order = list(NEIGHBOURS)
                rng.shuffle(order)
                for name in order:
                    before[name]()
                    t0 = time.perf_counter()
                    case.ours()
                    elapsed = time.perf_counter() - t0
                    if r >= warmup:
                        samples[name].append(elapsed)
            row: Dict[str, object] = {"id": case.id}
            for name in NEIGHBOURS:
                row[f"after_{name}_us"] = statistics.median(samples[name]) * 1e6
            rows.append(row)
    if progress is not None:
        progress(1.0, "")
    return rows


def format_neighbours(rows: Sequence[Dict[str, object]]) -> str:
    lines = ["| case | after ours µs | after eager µs | after 16 MiB sweep µs | eager / ours |",
             "|---|---|---|---|---|"]
    for row in rows:
        ours, eager, sweep = (float(row[f"after_{n}_us"]) for n in NEIGHBOURS)
        lines.append(f"| {row['id']} | {ours:.1f} | {eager:.1f} | {sweep:.1f} | {eager / ours:.2f}× |")
    lines += ["", "Our op timed right after one call of each neighbour (shuffled each round), medians."]
    return "\n".join(lines)
