"""``optimize(m)`` with and without its last pass (layers chained into one ``sequential`` op), in
one process, alternating blocks of calls: what running the whole model as one op saves.

    python bench/sequence_ab.py --model large --threads 1 --batch 1
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import mnv3ext
from mnv3ext.models import mobilenet_v3_large, mobilenet_v3_small


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("large", "small"), default="large")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--blocks", type=int, default=60)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = (mobilenet_v3_large if args.model == "large" else mobilenet_v3_small)().eval()
    chained = mnv3ext.optimize(model)
    optimize_module = sys.modules["mnv3ext.optimize"]
    fuse = optimize_module.fuse_sequences
    optimize_module.fuse_sequences = lambda *a, **k: None
    try:
        layer_by_layer = mnv3ext.optimize(model)
    finally:
        optimize_module.fuse_sequences = fuse
    x = torch.randn(args.batch, 3, 224, 224)
    times = {"one sequential op": [], "layer by layer": []}
    with torch.inference_mode():
        if not torch.equal(chained(x), layer_by_layer(x)):
            raise SystemExit("the two models disagree")
        for _ in range(args.blocks):
            for name, m in (("one sequential op", chained), ("layer by layer", layer_by_layer)):
                m(x)
                for _ in range(5):
                    t0 = time.perf_counter()
                    m(x)
                    times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:18s} median {v:.3f} ms")
    print(f"ratio {med['one sequential op'] / med['layer by layer']:.3f}")


if __name__ == "__main__":
    main()
