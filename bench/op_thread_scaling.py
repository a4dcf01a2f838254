"""How much faster each op of ours runs alone at 2 threads than at 1: every depthwise and SE layer
(channels_last) and every 1x1 convolution, stem and classifier layer of MobileNetV3-Large and
-Small, called through the eager entry points the modules use.

Per op, blocks at 1 and at 2 threads alternate (``torch.set_num_threads`` between blocks; per
block a warm call, then ``--block-calls`` timed calls, back to back), for ``--seconds``; medians.
Nothing else runs in the process, so no other pool spins on the second core (``mnv3ext
bench-ops --threads 1,2`` times ours between eager PyTorch calls, whose OpenMP workers keep the
second core busy after every call: there our 2-thread times are 1-thread times).

    python bench/op_thread_scaling.py --seconds 0.5
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from mnv3ext.bench.gemm_cases import gemm_cases
from mnv3ext.bench.opcases import all_cases


def _scaling(call, seconds: float, block_calls: int):
    times = {1: [], 2: []}
    end = time.perf_counter() + seconds
    block = 0
    while time.perf_counter() < end or block < 6:
        threads = 1 + block % 2
        torch.set_num_threads(threads)
        call()
        for _ in range(block_calls):
            t0 = time.perf_counter()
            call()
            times[threads].append(time.perf_counter() - t0)
        block += 1
    return statistics.median(times[1]) * 1e6, statistics.median(times[2]) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="large,small")
    p.add_argument("--match", default=None, help="only ops whose id contains this text")
    p.add_argument("--seconds", type=float, default=0.5, help="per op")
    p.add_argument("--block-calls", type=int, default=5)
    args = p.parse_args()
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    ops = [(c.id, c.ours) for c in all_cases(models=models, kinds=("dw", "se"), layouts=("channels_last",),
                                                match=args.match)]
    ops += [(c.layer.name, c.ours) for c in gemm_cases(models=models, match=args.match)]
    print("| op | 1 thread µs | 2 threads µs | speed-up |\n|---|---|---|---|")
    rows = []
    with torch.inference_mode():
        for name, call in ops:
            u1, u2 = _scaling(call, args.seconds, args.block_calls)
            rows.append((name, u1, u1 / u2))
            print(f"| {name} | {u1:.1f} | {u2:.1f} | {u1 / u2:.2f} |", flush=True)
    above = [(n, r) for n, u1, r in rows if u1 > 20]
    if above:
        print(f"\nops above 20 µs at 1 thread: {len(above)}, median speed-up "
              f"{statistics.median(r for _, r in above):.2f}x, below 1.5x: "
              f"{', '.join(f'{n} ({r:.2f})' for n, r in above if r < 1.5) or 'none'}")
    print(f"slower at 2 threads than at 1: {', '.join(f'{n} ({r:.2f})' for n, _, r in rows if r < 1) or 'none'}")


if __name__ == "__main__":
    main()
