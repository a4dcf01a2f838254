"""Time of every layer inside ``mnv3ext.optimize(m)``, batch 1 against batch 8 per image, 1 thread,
in one process (batches alternating): which layers pay per call rather than per image (weights
streamed from L3/memory, fresh output pages). The optimized model runs as one ``sequential`` op;
its steps are timed in C++ on every call (``recording_step_times``), wall time per step.

    python bench/module_times.py --model large --rounds 25
"""
from __future__ import annotations

import argparse
import collections

import numpy as np
import torch

import mnv3ext
from mnv3ext._sequence_ops import recording_step_times
from mnv3ext.models import mobilenet_v3_large, mobilenet_v3_small
from mnv3ext.nn import FusedSequence


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("large", "small"), default="large")
    p.add_argument("--rounds", type=int, default=25)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = (mobilenet_v3_large if args.model == "large" else mobilenet_v3_small)().eval()
    fast = mnv3ext.optimize(model)
    (seq,) = [m for m in fast.modules() if isinstance(m, FusedSequence)]
    names = seq.layer_steps()
    times = collections.defaultdict(list)
    x1, x8 = torch.randn(1, 3, 224, 224), torch.randn(8, 3, 224, 224)
    with torch.no_grad():
        for _ in range(args.rounds):
            for x, calls in ((x1, 8), (x8, 1)):
                with recording_step_times() as records:
                    for _ in range(calls):
                        fast(x)
                for record in records:
                    for j, ns in record:
                        times[(j, x.shape[0])].append(ns / 1e3)
    print("| layer | batch 1 µs | batch 8 µs per image | difference |\n|---|---|---|---|")
    for j, name in names.items():
        a = np.median(times[(j, 1)])
        b = np.median(times[(j, 8)]) / 8
        print(f"| {name} | {a:.1f} | {b:.1f} | {a - b:+.1f} |")


if __name__ == "__main__":
    main()
