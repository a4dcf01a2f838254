"""How much faster ``optimize(m)`` runs at 2 threads than at 1, whole model and per layer, with
nothing else in the process (no other runtime's pool spinning on the second core).

1. Whole model: blocks of calls at 1 and at 2 threads alternate (``torch.set_num_threads``
   switches between blocks; per block a warm call, then ``--block-calls`` timed calls); medians.
2. Per layer inside the model: the sequence's own step times (``recording_step_times``) over the
   same alternating blocks; per layer the median at 1 thread over the median at 2.

    python bench/thread_scaling.py --model large --seconds 20
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

import mnv3ext
from mnv3ext._sequence_ops import recording_step_times
from mnv3ext.bench.models import build_model
from mnv3ext.nn.sequence import FusedSequence


def _measure(model, x, seconds, block_calls):
    wall = {1: [], 2: []}
    steps = {1: defaultdict(list), 2: defaultdict(list)}
    end = time.perf_counter() + seconds
    block = 0
    while time.perf_counter() < end or block < 6:
        threads = 1 + block % 2
        torch.set_num_threads(threads)
        model(x)
        with recording_step_times() as records:
            for _ in range(block_calls):
                t0 = time.perf_counter()
                model(x)
                wall[threads].append(time.perf_counter() - t0)
        for record in records:
            for step, ns in record:
                steps[threads][step].append(ns)
        block += 1
    return wall, steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("large", "small"), default="large")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--block-calls", type=int, default=5)
    args = p.parse_args()
    model = mnv3ext.optimize(build_model(args.model).eval())
    sequences = [m for m in model.modules() if isinstance(m, FusedSequence)]
    if len(sequences) != 1:
        raise SystemExit(f"expected the model as one fused sequence, found {len(sequences)}")
    layers = sequences[0].layer_steps()
    x = torch.randn(args.batch, 3, 224, 224)
    with torch.inference_mode():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for _ in range(5):
                model(x)
        wall, steps = _measure(model, x, args.seconds, args.block_calls)
    t1, t2 = (statistics.median(wall[t]) * 1e3 for t in (1, 2))
    print(f"MobileNetV3-{args.model}, batch {args.batch}, {len(wall[1])} calls per thread count: "
          f"1 thread {t1:.3f} ms, 2 threads {t2:.3f} ms, speed-up {t1 / t2:.2f}x\n")
    print("| layer | 1 thread µs | 2 threads µs | speed-up |\n|---|---|---|---|")
    ratios = []
    for step, name in layers.items():
        u1, u2 = (statistics.median(steps[t][step]) / 1e3 for t in (1, 2))
        ratios.append((u1, u1 / u2))
        print(f"| {name} | {u1:.1f} | {u2:.1f} | {u1 / u2:.2f} |")
    above = [r for u1, r in ratios if u1 > 20]
    print(f"\nlayers above 20 µs at 1 thread: {len(above)}, median speed-up {statistics.median(above):.2f}x, "
          f"below 1.5x: {sum(r < 1.5 for r in above)}, slower at 2 threads: {sum(r < 1 for r in above)}")


if __name__ == "__main__":
    main()
