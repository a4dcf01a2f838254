"""The GEMM family of ``torch.ops.mnv3ext`` (schemas, CPU and fake kernels, eager entry points):
1x1 convolutions, dense convolutions (the stem), fully-connected layers, the global average
pool and the gate-only squeeze-excite. Registered on ``mnv3ext.ops``' library; documented in its
module docstring (``help(mnv3ext.ops)``).
"""
from __future__ import annotations

import torch

from . import _C
from . import ops as _ops
from ._checks import (
    DW_ACTIVATIONS, _check_activation, _check_inference, _check_input, _check_tensor, _split_params,
    dwconv_output_size,
)

_lib = _ops._lib
_CODES = _ops._CODES
_PANEL = int(_C.GEMM_PANEL)

_lib.define("pack_gemm_weight(Tensor weight, Tensor? bias) -> Tensor")
_lib.define(
    "pointwise_conv2d(Tensor input, Tensor weight, Tensor? bias, str activation, Tensor? residual, "
    "Tensor? input_scale) -> Tensor"
)
_lib.define(
    "pointwise_conv2d_packed(Tensor input, Tensor packed_weight, int out_channels, str activation, "
    "Tensor? residual, Tensor? input_scale) -> Tensor"
)
_lib.define(
    "conv2d_packed(Tensor input, Tensor packed_weight, int out_channels, int[] conv_params, "
    "str activation, bool channels_last_output=False) -> Tensor"
)
_lib.define("linear_packed(Tensor input, Tensor packed_weight, int out_features, str activation) -> Tensor")
_lib.define("global_avg_pool(Tensor input) -> Tensor")
_lib.define("se_gate_packed(Tensor input, Tensor packed_weights, int squeeze, str activation, str gate) -> Tensor")

_PLANS: dict = {}


def packed_gemm_numel(k: int, n: int) -> int:
    """Length of ``pack_gemm_weight``'s output for ``n`` outputs of ``k`` inputs each."""
    return -(-n // _PANEL) * (1 + k) * _PANEL


def _check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def _check_packed_gemm(packed, k: int, n: int, device, what: str) -> None:
    _check_tensor("packed_weight", packed, (1,), device)
    expected = packed_gemm_numel(k, n)
    if packed.shape[0] != expected:
        raise ValueError(f"packed_weight: expected {expected} floats for {what} (from pack_gemm_weight), "
                         f"got {packed.shape[0]}")


# ---------------------------------------------------------------------------------------------
# pack_gemm_weight

def _check_pack_args(weight, bias):
    _check_tensor("weight", weight, (2, 3, 4))
    n = weight.shape[0]
    k = 1
    for s in weight.shape[1:]:
        k *= s
    if n < 1 or k < 1:
        raise ValueError(f"weight: expected non-empty (out, in, ...) sizes, got {tuple(weight.shape)}")
    if bias is not None:
        _check_tensor("bias", bias, (1,), weight.device)
        if bias.shape[0] != n:
            raise ValueError(f"bias: expected shape ({n},), got {tuple(bias.shape)}")
    return k, n


def _pack_gemm_cpu(weight, bias):
    k, n = _check_pack_args(weight, bias)
    if weight.device.type != "cpu":
        raise ValueError(f"weight: mnv3ext ops run on CPU tensors, got device {weight.device}")
    weight = weight.detach().contiguous()
    bias = None if bias is None else bias.detach().contiguous()
    packed = torch.empty(packed_gemm_numel(k, n), dtype=torch.float32)
    _C.pack_gemm_ptr(weight.data_ptr(), _ops._ptr(bias), k, n, packed.data_ptr())
    return packed


def _pack_gemm_fake(weight, bias):
    return weight.new_empty(packed_gemm_numel(*_check_pack_args(weight, bias)))


# ---------------------------------------------------------------------------------------------
# pointwise_conv2d / pointwise_conv2d_packed

def _check_pointwise_extras(input, out_channels, activation, residual, input_scale):
    n, _, h, w = input.shape
    _check_activation("activation", activation, DW_ACTIVATIONS)
    if residual is not None:
        _check_tensor("residual", residual, (4,), input.device)
        if tuple(residual.shape) != (n, out_channels, h, w):
            raise ValueError(f"residual: expected shape {(n, out_channels, h, w)} (the output's), "
                             f"got {tuple(residual.shape)}")
    if input_scale is not None:
        _check_tensor("input_scale", input_scale, (2,), input.device)
        if tuple(input_scale.shape) != (n, input.shape[1]):
            raise ValueError(f"input_scale: expected shape {(n, input.shape[1])} (N, C_in), "
                             f"got {tuple(input_scale.shape)}")


def _check_pointwise_packed(input, packed_weight, out_channels, activation, residual, input_scale):
    _check_input(input)
    out_channels = _check_int("out_channels", out_channels)
    _check_packed_gemm(packed_weight, input.shape[1], out_channels, input.device,
                       f"{input.shape[1]} input and {out_channels} output channels")
    _check_pointwise_extras(input, out_channels, activation, residual, input_scale)
    return out_channels


def _pointwise_plan(input, out_channels, activation, residual, input_scale):
    n, c, h, w = input.shape
    channels_last = _ops._is_channels_last(input)
    rows = n * h * w
    plan = _C.GemmPlan(rows, c, out_channels, c, out_channels, residual is not None, out_channels,
                       input_scale is not None, max(h * w, 1), _CODES[activation])
    return plan, (n, out_channels, h, w), _ops._output_strides(n, out_channels, h, w, True), channels_last


_CL = torch.channels_last


def _pointwise_packed_cpu(input, packed_weight, out_channels, activation, residual, input_scale):
    # Flat, as the other per-layer hot paths (ops._dwconv2d_packed_cpu).
    try:
        key = ("pw", input.shape, input.stride(), input.dtype, packed_weight.shape, packed_weight.stride(),
               packed_weight.dtype, out_channels, activation, _ops._tensor_key(residual),
               _ops._tensor_key(input_scale))
        entry = _PLANS.get(key)
    except (AttributeError, TypeError, RuntimeError):
        key, entry = None, None
    if entry is None:
        out_channels = _check_pointwise_packed(input, packed_weight, out_channels, activation, residual,
                                               input_scale)
        entry = _pointwise_plan(input, out_channels, activation, residual, input_scale)
        _ops._remember(_PLANS, key, entry)
    if torch.is_grad_enabled():
        _check_inference(input, packed_weight, residual, input_scale)
    plan, size, strides, channels_last = entry
    # The kernel reads NHWC rows: anything else goes through a channels_last copy (and the
    # output back to NCHW); channels_last is the fast path.
    if not channels_last:
        input = input.contiguous(memory_format=_CL)
    if residual is not None and not residual.is_contiguous(memory_format=_CL):
        residual = residual.contiguous(memory_format=_CL)
    if input_scale is not None and not input_scale.is_contiguous():
        input_scale = input_scale.contiguous()
    if not packed_weight.is_contiguous():
        packed_weight = packed_weight.contiguous()
    out = input.new_empty_strided(size, strides)
    if size[0]:
        plan.run(input.data_ptr(), packed_weight.data_ptr(), out.data_ptr(), _ops._ptr(residual),
                 _ops._ptr(input_scale), torch.get_num_threads())
    return out if channels_last else out.clone(memory_format=torch.contiguous_format)


def _pointwise_packed_fake(input, packed_weight, out_channels, activation, residual, input_scale):
    out_channels = _check_pointwise_packed(input, packed_weight, out_channels, activation, residual,
                                           input_scale)
    n, _, h, w = input.shape
    return _ops._empty_like_format(input, (n, out_channels, h, w), _ops._is_channels_last(input))


def _check_pointwise_weight(input, weight, bias):
    _check_tensor("weight", weight, (2, 4), input.device)
    if weight.dim() == 4 and tuple(weight.shape[2:]) != (1, 1):
        raise ValueError(f"weight: expected shape (C_out, C_in, 1, 1) or (C_out, C_in), got {tuple(weight.shape)}")
    if weight.shape[1] != input.shape[1] or weight.shape[0] < 1:
        raise ValueError(f"weight: expected shape (C_out, {input.shape[1]}[, 1, 1]) for {input.shape[1]} "
                         f"input channels, got {tuple(weight.shape)}")
    if bias is not None:
        _check_tensor("bias", bias, (1,), input.device)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias: expected shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    return weight.shape[0]


def _pointwise_cpu(input, weight, bias, activation, residual, input_scale):
    _check_input(input)
    out_channels = _check_pointwise_weight(input, weight, bias)
    _check_pointwise_extras(input, out_channels, activation, residual, input_scale)
    _check_inference(input, weight, bias, residual, input_scale)
    return _pointwise_packed_cpu(input, _pack_gemm_cpu(weight, bias), out_channels, activation, residual,
                                 input_scale)


def _pointwise_fake(input, weight, bias, activation, residual, input_scale):
    _check_input(input)
    out_channels = _check_pointwise_weight(input, weight, bias)
    _check_pointwise_extras(input, out_channels, activation, residual, input_scale)
    n, _, h, w = input.shape
    return _ops._empty_like_format(input, (n, out_channels, h, w), _ops._is_channels_last(input))


# ---------------------------------------------------------------------------------------------
# conv2d_packed: dense convolution (groups = 1), im2col per output row + GEMM

def _check_conv(input, packed_weight, out_channels, conv_params, activation):
    _check_input(input)
    out_channels = _check_int("out_channels", out_channels)
    kernel_size, stride, pads, dilation = _split_params(conv_params)
    for k in kernel_size:
        if not 1 <= k <= 7:
            raise ValueError(f"conv_params: kernel size must be between 1 and 7, got {kernel_size}")
    _check_activation("activation", activation, DW_ACTIVATIONS)
    k = input.shape[1] * kernel_size[0] * kernel_size[1]
    _check_packed_gemm(packed_weight, k, out_channels, input.device,
                       f"{input.shape[1]} input channels, kernel {kernel_size} and {out_channels} outputs")
    out_h, out_w = dwconv_output_size(input.shape[2], input.shape[3], kernel_size, stride, pads, dilation)
    return out_channels, kernel_size, stride, pads, dilation, out_h, out_w


def _check_flag(name: str, value) -> None:
    # what torch.ops' schema parser takes for a bool (None and numbers too); the eager entry point the same
    if value is not None and not isinstance(value, (bool, int, float)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")


def _conv_cpu(input, packed_weight, out_channels, conv_params, activation, channels_last_output=False):
    _check_flag("channels_last_output", channels_last_output)
    try:
        key = ("conv", input.shape, input.stride(), input.dtype, packed_weight.shape, packed_weight.stride(),
               packed_weight.dtype, out_channels, tuple(conv_params), activation, bool(channels_last_output))
        entry = _PLANS.get(key)
    except (AttributeError, TypeError, RuntimeError):
        key, entry = None, None
    if entry is None:
        out_channels, ks, st, pads, dil, out_h, out_w = _check_conv(input, packed_weight, out_channels,
                                                                    conv_params, activation)
        n, c, h, w = input.shape
        plan = _C.ConvPlan(n, c, h, w, out_channels, ks[0], ks[1], st[0], st[1], dil[0], dil[1],
                           pads[0], pads[1], pads[2], pads[3], _CODES[activation], list(input.stride()))
        if (plan.out_h, plan.out_w) != (out_h, out_w):
            raise AssertionError("mnv3ext: output size disagrees between Python and C++")
        size = (n, out_channels, out_h, out_w)
        entry = (plan, size, _ops._output_strides(*size, True),
                 bool(channels_last_output) or _ops._is_channels_last(input))
        _ops._remember(_PLANS, key, entry)
    if torch.is_grad_enabled():
        _check_inference(input, packed_weight)
    plan, size, strides, channels_last = entry
    if not packed_weight.is_contiguous():
        packed_weight = packed_weight.contiguous()
    out = input.new_empty_strided(size, strides)
    if size[0]:  # the kernel reads the input through its strides: no copy in any layout
        plan.run(input.data_ptr(), packed_weight.data_ptr(), out.data_ptr(), torch.get_num_threads())
    # NCHW strides exactly as the fake kernel gives them, also where NHWC ones would count as
    # contiguous too (one channel, 1x1 planes, an empty batch)
    return out if channels_last else out.clone(memory_format=torch.contiguous_format)


def _conv_fake(input, packed_weight, out_channels, conv_params, activation, channels_last_output=False):
    _check_flag("channels_last_output", channels_last_output)
    out_channels, _, _, _, _, out_h, out_w = _check_conv(input, packed_weight, out_channels, conv_params,
                                                         activation)
    return _ops._empty_like_format(input, (input.shape[0], out_channels, out_h, out_w),
                                   bool(channels_last_output) or _ops._is_channels_last(input))


# ---------------------------------------------------------------------------------------------
# linear_packed

def _check_linear(input, packed_weight, out_features, activation):
    _check_tensor("input", input, (1, 2, 3, 4, 5, 6))
    if input.device.type not in ("cpu", "meta"):
        raise ValueError(f"input: mnv3ext ops run on CPU tensors, got device {input.device}")
    if input.shape[-1] < 1:
        raise ValueError(f"input: the last dimension (features) must be >= 1, got shape {tuple(input.shape)}")
    out_features = _check_int("out_features", out_features)
    _check_packed_gemm(packed_weight, input.shape[-1], out_features, input.device,
                       f"{input.shape[-1]} input and {out_features} output features")
    _check_activation("activation", activation, DW_ACTIVATIONS)
    return out_features


def _linear_cpu(input, packed_weight, out_features, activation):
    try:
        key = ("fc", input.shape, input.stride(), input.dtype, packed_weight.shape, packed_weight.stride(),
               packed_weight.dtype, out_features, activation)
        entry = _PLANS.get(key)
    except (AttributeError, TypeError, RuntimeError):
        key, entry = None, None
    if entry is None:
        out_features = _check_linear(input, packed_weight, out_features, activation)
        k = input.shape[-1]
        rows = input.numel() // k
        plan = _C.GemmPlan(rows, k, out_features, k, out_features, False, out_features, False, 1,
                           _CODES[activation])
        entry = (plan, tuple(input.shape[:-1]) + (out_features,), rows, k)
        _ops._remember(_PLANS, key, entry)
    if torch.is_grad_enabled():
        _check_inference(input, packed_weight)
    plan, size, rows, k = entry
    if not input.is_contiguous():
        input = input.contiguous()
    if not packed_weight.is_contiguous():
        packed_weight = packed_weight.contiguous()
    out = input.new_empty(size)
    if rows:
        plan.run(input.data_ptr(), packed_weight.data_ptr(), out.data_ptr(), 0, 0, torch.get_num_threads())
    return out


def _linear_fake(input, packed_weight, out_features, activation):
    out_features = _check_linear(input, packed_weight, out_features, activation)
    return input.new_empty(tuple(input.shape[:-1]) + (out_features,))


# ---------------------------------------------------------------------------------------------
# global_avg_pool

def _pool_cpu(input):
    try:
        key = ("pool", input.shape, input.stride(), input.dtype)
        entry = _PLANS.get(key)
    except (AttributeError, TypeError, RuntimeError):
        key, entry = None, None
    if entry is None:
        _check_input(input)
        n, c, h, w = input.shape
        channels_last = _ops._is_channels_last(input)
        dense = channels_last or input.is_contiguous()
        entry = (_C.PoolPlan(n, c, h * w, channels_last), (n, c, 1, 1), not dense)
        _ops._remember(_PLANS, key, entry)
    if torch.is_grad_enabled():
        _check_inference(input)
    plan, size, copy = entry
    if copy:
        input = input.contiguous()
    out = input.new_empty(size)
    if size[0]:
        plan.run(input.data_ptr(), out.data_ptr(), torch.get_num_threads())
    return out


def _pool_fake(input):
    _check_input(input)
    return input.new_empty((input.shape[0], input.shape[1], 1, 1))


# ---------------------------------------------------------------------------------------------
# se_gate_packed: the squeeze-excite's gate (N, C) without the multiply

def _se_gate_cpu(input, packed_weights, squeeze, activation, gate):
    try:
        key = ("gate", input.shape, input.stride(), input.dtype, packed_weights.shape, packed_weights.stride(),
               packed_weights.dtype, squeeze, activation, gate)
        entry = _PLANS.get(key)
    except (AttributeError, TypeError, RuntimeError):
        key, entry = None, None
    if entry is None:
        offsets = _ops._check_se_packed(input, packed_weights, squeeze, activation, gate)
        plan, _, _, input_copy = _ops._se_input_plan(input, squeeze, activation, gate)
        entry = (plan, (input.shape[0], input.shape[1]), input_copy, tuple(4 * o for o in offsets))
        _ops._remember(_PLANS, key, entry)
    if torch.is_grad_enabled():
        _check_inference(input, packed_weights)
    plan, size, input_copy, (_, b1, w2, b2) = entry
    if input_copy:
        input = input.contiguous()
    if not packed_weights.is_contiguous():
        packed_weights = packed_weights.contiguous()
    out = input.new_empty(size)
    if size[0]:
        base = packed_weights.data_ptr()
        plan.run_gates(input.data_ptr(), base, base + b1, base + w2, base + b2, out.data_ptr(),
                       torch.get_num_threads())
    return out


def _se_gate_fake(input, packed_weights, squeeze, activation, gate):
    _ops._check_se_packed(input, packed_weights, squeeze, activation, gate)
    return input.new_empty((input.shape[0], input.shape[1]))


KERNELS = (
    ("pack_gemm_weight", _pack_gemm_cpu, _pack_gemm_fake),
    ("pointwise_conv2d", _pointwise_cpu, _pointwise_fake),
    ("pointwise_conv2d_packed", _pointwise_packed_cpu, _pointwise_packed_fake),
    ("conv2d_packed", _conv_cpu, _conv_fake),
    ("linear_packed", _linear_cpu, _linear_fake),
    ("global_avg_pool", _pool_cpu, _pool_fake),
    ("se_gate_packed", _se_gate_cpu, _se_gate_fake),
)
_ops._register(KERNELS)


# ---------------------------------------------------------------------------------------------
# Eager entry points (see mnv3ext.ops): the CPU kernel directly when nothing observes the call.

_plain, _unobserved = _ops._plain, _ops._unobserved
_POINTWISE_OP = torch.ops.mnv3ext.pointwise_conv2d.default
_POINTWISE_PACKED_OP = torch.ops.mnv3ext.pointwise_conv2d_packed.default
_CONV_OP = torch.ops.mnv3ext.conv2d_packed.default
_LINEAR_OP = torch.ops.mnv3ext.linear_packed.default
_POOL_OP = torch.ops.mnv3ext.global_avg_pool.default
_SE_GATE_OP = torch.ops.mnv3ext.se_gate_packed.default


def pointwise_conv2d(input, weight, bias, activation, residual, input_scale):
    """``torch.ops.mnv3ext.pointwise_conv2d``; in plain eager mode without the dispatcher round trip."""
    if (_unobserved() and _plain(input) and _plain(weight) and _plain(bias) and _plain(residual)
            and _plain(input_scale)):
        return _pointwise_cpu(input, weight, bias, activation, residual, input_scale)
    return _POINTWISE_OP(input, weight, bias, activation, residual, input_scale)


def pointwise_conv2d_packed(input, packed_weight, out_channels, activation, residual, input_scale):
    """``torch.ops.mnv3ext.pointwise_conv2d_packed``; in plain eager mode without the dispatcher."""
    if _unobserved() and _plain(input) and _plain(packed_weight) and _plain(residual) and _plain(input_scale):
        return _pointwise_packed_cpu(input, packed_weight, out_channels, activation, residual, input_scale)
    return _POINTWISE_PACKED_OP(input, packed_weight, out_channels, activation, residual, input_scale)


def conv2d_packed(input, packed_weight, out_channels, conv_params, activation, channels_last_output=False):
    """``torch.ops.mnv3ext.conv2d_packed``; in plain eager mode without the dispatcher round trip."""
    if _unobserved() and _plain(input) and _plain(packed_weight):
        return _conv_cpu(input, packed_weight, out_channels, conv_params, activation, channels_last_output)
    return _CONV_OP(input, packed_weight, out_channels, conv_params, activation, channels_last_output)


def linear_packed(input, packed_weight, out_features, activation):
    """``torch.ops.mnv3ext.linear_packed``; in plain eager mode without the dispatcher round trip."""
    if _unobserved() and _plain(input) and _plain(packed_weight):
        return _linear_cpu(input, packed_weight, out_features, activation)
    return _LINEAR_OP(input, packed_weight, out_features, activation)


def global_avg_pool(input):
    """``torch.ops.mnv3ext.global_avg_pool``; in plain eager mode without the dispatcher round trip."""
    if _unobserved() and _plain(input):
        return _pool_cpu(input)
    return _POOL_OP(input)


def se_gate_packed(input, packed_weights, squeeze, activation, gate):
    """``torch.ops.mnv3ext.se_gate_packed``; in plain eager mode without the dispatcher round trip."""
    if _unobserved() and _plain(input) and _plain(packed_weights):
        return _se_gate_cpu(input, packed_weights, squeeze, activation, gate)
    return _SE_GATE_OP(input, packed_weights, squeeze, activation, gate)
