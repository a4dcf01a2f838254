"""How fast mnv3ext's calls run right after another runtime's block of calls, in one process.

For each predecessor (ONNX Runtime, OpenVINO, mnv3ext itself, nothing) and round: 6 calls of the
predecessor, then 8 timed calls of ``optimize(m)``; prints the median time of each of the 8 call
positions, and the CPU time every other thread of the process used meanwhile (Linux). Shows
whether a runtime's thread pool slows down whatever runs after it, and for how long.

    python bench/after_other_runtime.py --model large --threads 2 --rounds 20
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from mnv3ext.bench.backends import BackendUnavailable, Context, prepare
from mnv3ext.bench.timing import other_threads_cpu_ns
from mnv3ext.models import mobilenet_v3_large, mobilenet_v3_small


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("large", "small"), default="large")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    if other_threads_cpu_ns() is None:
        p.error("needs Linux: it reads each thread's CPU time from /proc/self/task")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = (mobilenet_v3_large if args.model == "large" else mobilenet_v3_small)().eval()
    ctx = Context(model=model, x=torch.randn(1, 3, 224, 224), threads=args.threads, workdir=tempfile.mkdtemp())
    backends = {}
    for name in ("mnv3ext", "onnxruntime", "openvino"):
        try:
            backends[name] = prepare(name, ctx)
        except BackendUnavailable as e:
            print(f"{name}: skipped ({e})")
    for b in backends.values():
        for _ in range(10):
            b.call()
    ours = backends["mnv3ext"].call
    print(f"MobileNetV3-{args.model}, batch 1, {args.threads} threads; ms per call position 1..8")
    for before in [n for n in ("onnxruntime", "openvino", "mnv3ext") if n in backends] + [None]:
        per_call, others = [[] for _ in range(8)], []
        for _ in range(args.rounds):
            if before:
                for _ in range(6):
                    backends[before].call()
            c0 = other_threads_cpu_ns()
            for i in range(8):
                t0 = time.perf_counter()
                ours()
                per_call[i].append((time.perf_counter() - t0) * 1e3)
            c1 = other_threads_cpu_ns()
            others.append(sorted((c1[t] - c0.get(t, 0)) / 1e6 for t in c1))
        busy = [round(statistics.median(sorted(o)[-k] for o in others), 1) for k in (1, 2, 3) if all(len(o) >= k for o in others)]
        print(f"after {before or 'nothing':12s}", " ".join(f"{statistics.median(v):.2f}" for v in per_call),
              f"| busiest other threads, ms CPU during the 8 calls: {busy}")


if __name__ == "__main__":
    main()
