"""Thread CPU time of every leaf module of ``mnv3ext.optimize(m)``, batch 1 against batch 8 per
image, 1 thread, in one process (batches alternating): which layers pay per call rather than per
image (weights streamed from L3/memory, fresh output pages).

    python bench/module_times.py --model large --rounds 25
"""
from __future__ import annotations

import argparse
import collections
import time

import numpy as np
import torch

import mnv3ext
from mnv3ext.models import mobilenet_v3_large, mobilenet_v3_small


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("large", "small"), default="large")
    p.add_argument("--rounds", type=int, default=25)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = (mobilenet_v3_large if args.model == "large" else mobilenet_v3_small)().eval()
    fast = mnv3ext.optimize(model)
    times, start = collections.defaultdict(list), {}
    leaves = [(n, m) for n, m in fast.named_modules() if n and not list(m.children())]
    for name, mod in leaves:
        mod.register_forward_pre_hook(lambda m, i, name=name: start.__setitem__(name, time.thread_time()))
        mod.register_forward_hook(
            lambda m, i, o, name=name: times[(name, i[0].shape[0])].append(time.thread_time() - start[name]))
    x1, x8 = torch.randn(1, 3, 224, 224), torch.randn(8, 3, 224, 224)
    with torch.no_grad():
        for _ in range(args.rounds):
            for _ in range(8):
                fast(x1)
            fast(x8)
    print("| module | batch 1 µs | batch 8 µs per image | difference |\n|---|---|---|---|")
    for name, _ in leaves:
        if (name, 1) not in times:
            continue
        a = np.median(times[(name, 1)][8:]) * 1e6
        b = np.median(times[(name, 8)][1:]) * 1e6 / 8
        print(f"| {name} | {a:.1f} | {b:.1f} | {a - b:+.1f} |")


if __name__ == "__main__":
    main()
