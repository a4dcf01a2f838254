"""What Python costs per inference of an optimized classifier, and what its direct call path saves.

1. Back-to-back calls of ``optimize(m)`` with the sequence's C++ plan timed from inside: the
   rest of each call is Python (module call, checks, output allocation).
2. In-process A/B, alternating blocks of calls: the sequence's validated fast path against the
   ``Module.__call__`` -> ``forward`` -> checked-op path, and the classifier's direct ``__call__``
   against fx's call wrapper.

    python bench/python_overhead.py --model large --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import mnv3ext
from mnv3ext.models import mobilenet_v3_large, mobilenet_v3_small


class _TimedPlan:
    """Stands in for the sequence's C++ plan and times its run."""

    def __init__(self, plan, times):
        self.plan, self.times = plan, times

    def run(self, *args):
        t0 = time.perf_counter()
        self.plan.run(*args)
        self.times.append(time.perf_counter() - t0)


def _ab(call, variants, blocks, calls=4):
    """Median seconds per call of each variant (a setup function), alternating in blocks."""
    times = {name: [] for name in variants}
    names = list(variants)
    for b in range(blocks):
        for name in names[b % 2:] + names[:b % 2]:
            variants[name]()
            call()
            for _ in range(calls):
                t0 = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("large", "small"), default="large")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--blocks", type=int, default=400)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = (mobilenet_v3_large if args.model == "large" else mobilenet_v3_small)().eval()
    fast = mnv3ext.optimize(model)
    seq = fast.get_submodule("mnv3ext_sequence")
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        fast(x)
        validated = seq._validated
        if validated is None or not validated.plain:
            raise SystemExit("the model's sequence has no fast path for this input")
        inner, outer = [], []
        seq._validated = validated._replace(entry=(_TimedPlan(validated.entry[0], inner),) + validated.entry[1:])
        for _ in range(args.calls):
            t0 = time.perf_counter()
            fast(x)
            outer.append(time.perf_counter() - t0)
        seq._validated = validated
        python_us = statistics.median(o - i for o, i in zip(outer, inner)) * 1e6
        print(f"MobileNetV3-{args.model}, batch 1, {args.threads} thread(s): median call "
              f"{statistics.median(outer) * 1e3:.3f} ms, of it Python {python_us:.1f} us")

        def sequence_path(on):
            return lambda: setattr(seq, "_validated", validated._replace(plain=on))
        m = _ab(lambda: fast(x), {"fast path": sequence_path(True), "Module path": sequence_path(False)},
                args.blocks)
        print(f"sequence fast path: {m['fast path'] * 1e3:.3f} ms, Module path {m['Module path'] * 1e3:.3f} ms: "
              f"{(m['Module path'] - m['fast path']) * 1e6:.1f} us less per call")
        cls = type(fast)
        direct = cls.__dict__.get("__call__")
        if direct is None or direct.__name__ == "call_wrapped":
            return

        def wrapped(self, *a, **k):
            return self._wrapped_call(self, *a, **k)

        def top_path(on):
            return lambda: setattr(cls, "__call__", direct if on else wrapped)
        try:
            m = _ab(lambda: fast(x), {"direct": top_path(True), "fx wrapper": top_path(False)}, args.blocks)
        finally:
            cls.__call__ = direct
        print(f"classifier direct call: {m['direct'] * 1e3:.3f} ms, fx wrapper {m['fx wrapper'] * 1e3:.3f} ms: "
              f"{(m['fx wrapper'] - m['direct']) * 1e6:.1f} us less per call")


if __name__ == "__main__":
    main()
