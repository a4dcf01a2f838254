"""Where the Python time of ``optimize(m)(x)`` goes: the whole call with the kernels stubbed out,
and each check of its fast path (``FusedSequence.__call__``) alone, warm (back to back) and cold
(after a 64 MiB sweep, as a call finds the caches after the model's own kernels); median µs.

    python bench/call_overhead.py --model large
"""
from __future__ import annotations

import operator

import torch

from mnv3ext import ops
from mnv3ext.nn import sequence

from _call_path import kernels_stubbed, median_us, optimized_model, sweep_buffer


def main() -> None:
    args, model, x = optimized_model(__doc__.split("\n")[0], rounds=300)
    model(x)
    seq = model.get_submodule("mnv3ext_sequence")
    weights = seq._weights()
    with kernels_stubbed(seq) as v:
        size, dense = v.entry[1], v.entry[2]
        parts = {
            "an empty call (the timing's own cost)": lambda: None,
            "`optimize(m)(x)`, kernels stubbed": lambda: model(x),
            "hooks unset (`no_module_hooks`)": lambda: sequence.no_module_hooks(seq),
            "no tracer, mode or profiler (`ops._unobserved`)": ops._unobserved,
            "input shape and strides as validated": lambda: (x.shape == v.shape, x.stride() == v.stride),
            "program as validated": lambda: v.program == seq.program,
            "the modules' weight tensors as validated": lambda: all(map(
                operator.is_, map(dict.__getitem__, v.buffers, v.names), v.weights)),
            "the weights' data pointers": lambda: list(map(torch.Tensor.data_ptr, weights)),
            "the output's allocation": lambda: x.new_empty_strided(size, dense),
        }
        sweep = sweep_buffer()
        print(f"MobileNetV3-{args.model}, batch 1, 1 thread; median µs over {args.rounds} calls")
        print("| part | warm | cold |\n|---|---|---|")
        for name, call in parts.items():
            print(f"| {name} | {median_us(call, args.rounds):.1f} | {median_us(call, args.rounds, sweep):.1f} |")


if __name__ == "__main__":
    main()
