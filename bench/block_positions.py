"""Latency of each call position inside ``mnv3ext bench``'s alternating blocks, per backend, in one
process: per block and backend, once no other thread of the process is busy
(``wait_until_idle``), ``--calls`` timed calls; blocks in a shuffled order. Shows how fast each
backend is on its first calls after the process idled and how far it gets within a block.

    python bench/block_positions.py --model small --threads 2 --blocks 60
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

import torch

from mnv3ext.bench.backends import BackendUnavailable, Context, prepare
from mnv3ext.bench.timing import wait_until_idle
from mnv3ext.models import mobilenet_v3_large, mobilenet_v3_small


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("large", "small"), default="small")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--blocks", type=int, default=60)
    p.add_argument("--calls", type=int, default=6)
    p.add_argument("--backends", default="mnv3ext,onnxruntime,openvino")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = (mobilenet_v3_large if args.model == "large" else mobilenet_v3_small)().eval()
    ctx = Context(model=model, x=torch.randn(1, 3, 224, 224), threads=args.threads, workdir=tempfile.mkdtemp())
    calls = {}
    for name in args.backends.split(","):
        try:
            calls[name] = prepare(name, ctx).call
        except BackendUnavailable as e:
            print(f"{name}: skipped ({e})")
    times = {n: [[] for _ in range(args.calls)] for n in calls}
    order, rng = list(calls), random.Random(0)
    with torch.inference_mode():
        for _ in range(args.blocks):
            rng.shuffle(order)
            for name in order:
                wait_until_idle()
                for i in range(args.calls):
                    t0 = time.perf_counter()
                    calls[name]()
                    times[name][i].append(time.perf_counter() - t0)
    print(f"MobileNetV3-{args.model}, batch 1, {args.threads} threads; median ms per call position 1..{args.calls}, "
          f"{args.blocks} blocks; last column: positions 2..{args.calls} together")
    for name, positions in times.items():
        rest = [t for pos in positions[1:] for t in pos]
        print(f"{name:12s} " + " ".join(f"{statistics.median(pos) * 1e3:.2f}" for pos in positions)
              + f"   {statistics.median(rest) * 1e3:.3f}")


if __name__ == "__main__":
    main()
