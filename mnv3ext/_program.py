"""The ``program`` of ``torch.ops.mnv3ext.sequential``: a flat list of ints, one step after the
other, each its kind then that kind's fixed number of parameters. Activations are the ops'
integer codes (none 0, relu 1, relu6 2, hardswish 3, as in ``block_config``). Plain Python: the op layer and the reference
path both read it.

=========  ====  ========================================================================
step       kind  parameters
=========  ====  ========================================================================
conv       1     out_channels, activation, channels_last_output, conv_params (10 values,
                 as ``conv2d_packed``); takes the next weight
block      2     config (19 values, ``block_config``); takes the next weight
pointwise  3     out_channels, activation (``pointwise_conv2d_packed``, no residual or
                 scale); takes the next weight
pool       4     none: ``global_avg_pool``, (N, C, H, W) -> (N, C, 1, 1)
flatten    5     none: (N, C, 1, 1) -> (N, C)
linear     6     out_features, activation (``linear_packed`` on (N, C)); takes the next weight
=========  ====  ========================================================================
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

CONV, BLOCK, POINTWISE, POOL, FLATTEN, LINEAR = 1, 2, 3, 4, 5, 6
STEP_NAMES = {CONV: "conv", BLOCK: "block", POINTWISE: "pointwise", POOL: "pool", FLATTEN: "flatten",
              LINEAR: "linear"}
PARAM_COUNTS = {CONV: 13, BLOCK: 19, POINTWISE: 2, POOL: 0, FLATTEN: 0, LINEAR: 2}
WEIGHTED = frozenset((CONV, BLOCK, POINTWISE, LINEAR))


def parse_program(program: Sequence[int]) -> List[Tuple[int, List[int]]]:
    """[(kind, params)] of a program; ValueError/TypeError naming ``program`` if malformed."""
    try:
        values = list(program)
    except TypeError:
        raise TypeError(f"program: expected a list of ints, got {type(program).__name__}") from None
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            try:
                if int(v) != v:
                    raise ValueError
            except (TypeError, ValueError):
                raise TypeError(f"program: expected ints, got {v!r}") from None
    values = [int(v) for v in values]
    steps, at = [], 0
    while at < len(values):
        kind = values[at]
        if kind not in PARAM_COUNTS:
            raise ValueError(f"program: unknown step kind {kind} at position {at} (expected one of "
                             f"{', '.join(f'{k} ({n})' for k, n in STEP_NAMES.items())})")
        count = PARAM_COUNTS[kind]
        if at + 1 + count > len(values):
            raise ValueError(f"program: step {len(steps)} ({STEP_NAMES[kind]}) needs {count} parameters, "
                             f"the program ends after {len(values) - at - 1}")
        steps.append((kind, values[at + 1:at + 1 + count]))
        at += 1 + count
    if not steps:
        raise ValueError("program: expected at least one step, got an empty list")
    return steps
