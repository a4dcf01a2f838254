"""What ``torch.compile(optimize(m))`` adds around the one op it calls, with the kernels taken out
so only the call path is timed.

The sequence's C++ run is replaced by stubs (the compiled path's returns a ready output). Then,
warm (back to back) and cold (after a 64 MiB sweep, as a call finds the caches after the model's
own kernels), the median microseconds of: the eager model's call, the compiled model's Dynamo
guard check alone, the compiled model's call, and the op through ``torch.ops.mnv3ext.sequential``.

    python bench/compile_overhead.py --model large
"""
from __future__ import annotations

import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list

from mnv3ext import _sequence_ops

from _call_path import kernels_stubbed, median_us, optimized_model, sweep_buffer


def main() -> None:
    args, model, x = optimized_model(__doc__.split("\n")[0], rounds=200)
    compiled = torch.compile(model)
    out = model(x)
    for _ in range(3):
        compiled(x)
    entries = _debug_get_cache_entry_list(type(model).__call__.__code__)
    if len(entries) != 1:
        raise SystemExit(f"expected one compiled entry for the model's call, found {len(entries)}")
    guards = entries[0].guard_manager
    frame = {"self": model, "args": (x,), "kwargs": {}, "cls": type(model)}
    info = guards.check_verbose(frame)
    if not info.result:
        raise SystemExit(f"the guards reject the model's own call: {info.verbose_code_parts}")
    sequence = model.get_submodule("mnv3ext_sequence")
    weights, program = sequence._weights(), sequence.program
    op = torch.ops.mnv3ext.sequential.default
    real = _sequence_ops.run_checked
    _sequence_ops.run_checked = lambda entry, input, weights: out  # the kernels out of the way
    try:
        with kernels_stubbed(sequence):
            sweep = sweep_buffer()
            print(f"MobileNetV3-{args.model}: {info.num_guards_executed} guards; median µs over {args.rounds} calls")
            print("| path | warm | cold |\n|---|---|---|")
            for name, call in (("optimize(m)(x)", lambda: model(x)),
                               ("Dynamo's guard check", lambda: guards.check(frame)),
                               ("torch.compile(optimize(m))(x)", lambda: compiled(x)),
                               ("torch.ops.mnv3ext.sequential", lambda: op(x, weights, program))):
                print(f"| {name} | {median_us(call, args.rounds):.1f} | {median_us(call, args.rounds, sweep):.1f} |")
    finally:
        _sequence_ops.run_checked = real


if __name__ == "__main__":
    main()
