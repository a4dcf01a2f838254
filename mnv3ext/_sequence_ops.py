"""``torch.ops.mnv3ext.sequential``: a chain of the packed-weight ops (stem conv, inverted-residual
blocks, 1x1 convolutions, global pool, flatten, linear) in one call, each step reading the one
before's output. Same kernels and results as calling the ops one by one; what goes is the cost
between them (one Python call and one output allocation instead of one per layer; the
intermediates stay in per-thread buffers, warm in cache). The steps are described by
``program`` (``mnv3ext._program``). Registered on ``mnv3ext.ops``' library.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Tuple

import torch

from . import _C
from . import ops as _ops
from ._block_ops import _block_fake
from ._checks import _check_inference, _check_tensor
from ._gemm_ops import _conv_fake, _linear_fake, _pointwise_packed_fake, _pool_fake
from ._program import BLOCK, CONV, FLATTEN, LINEAR, POINTWISE, POOL, STEP_NAMES, WEIGHTED, parse_program

_lib = _ops._lib
CL = torch.channels_last
_NAMES = {v: k for k, v in _ops._CODES.items()}

_lib.define("sequential(Tensor input, Tensor[] weights, int[] program) -> Tensor")


def _activation(code: int) -> str:
    return _NAMES.get(code, f"<unknown activation code {code}>")  # the op's own check names it


def _apply_fake(kind, params, x, w):
    """One step's output through the single op's fake kernel (its checks and shape rules)."""
    if kind == CONV:
        return _conv_fake(x, w, params[0], params[3:], _activation(params[1]), bool(params[2]))
    if kind == BLOCK:
        return _block_fake(x, w, params)
    if kind == POINTWISE:
        return _pointwise_packed_fake(x, w, params[0], _activation(params[1]), None, None)
    if kind == POOL:
        return _pool_fake(x)
    if kind == FLATTEN:
        if x.dim() != 4 or x.shape[2] != 1 or x.shape[3] != 1:
            raise ValueError(f"input: expected (N, C, 1, 1) (a pool's output), got shape {tuple(x.shape)}")
        return x.new_empty((x.shape[0], x.shape[1]))
    if x.dim() != 2:
        raise ValueError(f"input: a linear step reads (N, features) (flatten first), got shape {tuple(x.shape)}")
    return _linear_fake(x, w, params[0], _activation(params[1]))


def _check_weights_list(weights) -> None:
    if not isinstance(weights, (list, tuple)):
        raise TypeError(f"weights: expected a list of Tensors, got {type(weights).__name__}")


def _walk(input, weights, program):
    """[(kind, params, step input, step output)] through the fake kernels, validating every step;
    errors name the step and its weight."""
    steps = parse_program(program)
    _check_weights_list(weights)
    needed = sum(kind in WEIGHTED for kind, _ in steps)
    if len(weights) != needed:
        raise ValueError(f"weights: the program has {needed} steps with weights, got {len(weights)} tensors")
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input: expected a Tensor, got {type(input).__name__}")
    walked, x, wi = [], input, 0
    for j, (kind, params) in enumerate(steps):
        w = weights[wi] if kind in WEIGHTED else None
        where = f"program step {j} ({STEP_NAMES[kind]}{f', weights[{wi}]' if w is not None else ''})"
        try:
            if w is not None:
                _check_tensor(f"weights[{wi}]", w, (1, 2), x.device)
            y = _apply_fake(kind, params, x, w)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{where}: {e}") from None
        walked.append((kind, params, x, y))
        wi += w is not None
        x = y
    return walked


def _meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def _nhwc_strides(shape):
    if len(shape) == 2:
        return (shape[1], 1)
    n, c, h, w = shape
    return _ops._output_strides(n, c, h, w, True)


def _step_plan(kind, params, x, first_input):
    """The single op's C++ plan for one step reading dense NHWC (a first conv or pool: the input
    as the op alone would read it)."""
    if kind == CONV:
        n, c, h, w = x.shape
        p = params[3:]
        strides = list(first_input.stride()) if first_input is not None else list(_nhwc_strides(x.shape))
        return _C.ConvPlan(n, c, h, w, params[0], p[0], p[1], p[2], p[3], p[8], p[9], p[4], p[5], p[6], p[7],
                           params[1], strides)
    if kind == BLOCK:
        return _C.BlockPlan(list(params), x.shape[0], x.shape[2], x.shape[3])
    if kind == POINTWISE:
        n, c, h, w = x.shape
        return _C.GemmPlan(n * h * w, c, params[0], c, params[0], False, params[0], False, 1, params[1])
    if kind == POOL:
        # The pool's kernel path (NHWC or NCHW: another summation order) as the op alone would
        # take it: the first step's input as given; later, the NHWC buffer, read as NCHW where the
        # op would see an NCHW tensor with the same memory order (one channel or one pixel).
        n, c, h, w = x.shape
        if first_input is not None:
            return _C.PoolPlan(n, c, h * w, _ops._is_channels_last(first_input))
        return _C.PoolPlan(n, c, h * w, _ops._is_channels_last(x) or not (c == 1 or h * w == 1))
    if kind == LINEAR:
        n, k = x.shape
        return _C.GemmPlan(n, k, params[0], k, params[0], False, params[0], False, 1, params[1])
    return None  # flatten: nothing to run


def _sequence_plan(input, weights, program):
    """(plan, final size, NHWC-dense strides, the op's output strides, input conversion, weights
    to copy) for a validated call."""
    _check_weights_list(weights)
    if isinstance(input, torch.Tensor) and input.device.type != "cpu":
        raise ValueError(f"input: mnv3ext ops run on CPU tensors, got device {input.device}")
    for i, w in enumerate(weights):
        if isinstance(w, torch.Tensor) and w.device.type != "cpu":
            raise ValueError(f"weights[{i}]: expected device cpu (same as input), got {w.device}")
    walked = _walk(_meta(input) if isinstance(input, torch.Tensor) else input,
                   [_meta(w) if isinstance(w, torch.Tensor) else w for w in weights], program)
    first_kind = walked[0][0]
    # As the ops alone: a first conv reads any layout through its strides, a first pool a dense
    # tensor in its own format; every other step reads dense NHWC.
    if first_kind == CONV:
        convert = None
    elif first_kind == POOL:
        convert = CL if _ops._is_channels_last(input) else torch.contiguous_format
    elif input.dim() == 4:
        convert = CL
    else:
        convert = torch.contiguous_format
    plans = [_step_plan(kind, params, x, input if j == 0 else None)
             for j, (kind, params, x, _) in enumerate(walked)]
    plan = _C.SequencePlan([p for p in plans if p is not None])
    timed = tuple(j for j, p in enumerate(plans) if p is not None)  # program steps the C++ steps are
    final = walked[-1][3]
    size = tuple(final.shape)
    dense = _nhwc_strides(size)
    copy_weights = any(not w.is_contiguous() for w in weights)
    return plan, size, dense, tuple(final.stride()), convert, copy_weights, timed


_PLANS: dict = {}
_recording: Optional[List] = None


@contextlib.contextmanager
def recording_step_times() -> Iterator[List[List[Tuple[int, int]]]]:
    """Within the block, every eager ``sequential`` call on this process appends one record to
    the yielded list: [(program step index, wall nanoseconds)] of its steps (flattens, which run
    nothing, left out) -- per-layer times inside the whole model, where the layers find their
    inputs as the model leaves them (the bench's in-model per-layer column)."""
    global _recording
    previous, records = _recording, []
    _recording = records
    try:
        yield records
    finally:
        _recording = previous


def plan_for(input, weights, program):
    """The validated plan entry of a call (cached per input layout, program and weight layouts)."""
    try:
        key = (input.shape, input.stride(), input.dtype, tuple(program),
               tuple((w.shape, w.stride(), w.dtype) for w in weights))
        entry = _PLANS.get(key)
    except (AttributeError, TypeError, RuntimeError):
        key, entry = None, None
    if entry is None:
        entry = _sequence_plan(input, weights, program)
        if key is not None:
            _ops._remember(_PLANS, key, entry)
    return entry


def run_checked(entry, input, weights):
    """Runs a call validated by ``plan_for`` (with these very tensors, or ones of the same layouts),
    refusing tensors that require grad under grad mode."""
    if torch.is_grad_enabled():
        _check_inference(input, *weights)
    plan, size, dense, strides, convert, copy_weights, timed = entry
    if convert is not None and not input.is_contiguous(memory_format=convert):
        input = input.contiguous(memory_format=convert)
    if copy_weights:
        weights = [w.contiguous() for w in weights]
    out = input.new_empty_strided(size, dense)
    if size[0]:
        ns = None if _recording is None else torch.zeros(len(timed), dtype=torch.int64)
        plan.run(input.data_ptr(), [w.data_ptr() for w in weights], out.data_ptr(), torch.get_num_threads(),
                 0 if ns is None else ns.data_ptr())
        if ns is not None:
            _recording.append(list(zip(timed, ns.tolist())))
    if strides != dense:  # a 4-d NCHW result (the ops keep an NCHW input's format)
        out = torch.empty_strided(size, strides, dtype=out.dtype).copy_(out)
    return out


def _sequential_cpu(input, weights, program):
    return run_checked(plan_for(input, weights, program), input, weights)


def _sequential_fake(input, weights, program):
    return _walk(input, weights, program)[-1][3]


KERNELS = (("sequential", _sequential_cpu, _sequential_fake),)
_ops._register(KERNELS)

_SEQUENTIAL_OP = torch.ops.mnv3ext.sequential.default


def sequential(input, weights, program):
    """``torch.ops.mnv3ext.sequential``; in plain eager mode without the dispatcher round trip."""
    if _ops._unobserved() and _ops._plain(input) and all(_ops._plain(w) for w in weights):
        return _sequential_cpu(input, weights, program)
    return _SEQUENTIAL_OP(input, weights, program)
