"""Argument validation shared by the ops' CPU and fake kernels (mnv3ext.ops): every error names
the argument it is about."""
from __future__ import annotations

import operator
from typing import List, Optional, Sequence

import torch

DW_ACTIVATIONS = ("none", "relu", "relu6", "hardswish")
SE_ACTIVATIONS = ("relu", "hardswish")
SE_GATES = ("hardsigmoid", "sigmoid")
MAX_KERNEL = 7
MAX_INT32 = 2**31 - 1  # stride, padding and dilation reach the kernels as 32-bit ints



def _check_tensor(name: str, t, ndims: Sequence[int], device: Optional[torch.device] = None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(t).__name__}")
    if t.is_nested or t.layout != torch.strided:
        raise ValueError(f"{name}: expected a dense (strided) tensor, got layout {t.layout}"
                         f"{' (nested)' if t.is_nested else ''}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name}: expected dtype float32, got {t.dtype}")
    if t.dim() not in ndims:
        raise ValueError(f"{name}: expected {' or '.join(map(str, ndims))} dimensions, got shape {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name}: expected device {device} (same as input), got {t.device}")


def _check_input(t):
    _check_tensor("input", t, (4,))
    if t.device.type not in ("cpu", "meta"):
        raise ValueError(f"input: mnv3ext ops run on CPU tensors, got device {t.device}")
    if t.shape[1] < 1 or t.shape[2] < 1 or t.shape[3] < 1:
        raise ValueError(f"input: C, H and W must be >= 1, got shape {tuple(t.shape)}")


def _check_int_values(name: str, values: List, minimum: int) -> List[int]:
    """Each value an integer in [minimum, MAX_INT32]; errors name the argument."""
    checked = []
    for v in values:
        try:  # ints and int-likes (numpy integers, bools), as the op schema's int[] takes them
            v = operator.index(v)
        except TypeError:
            raise TypeError(f"{name}: expected integers, got {values!r}") from None
        if v < minimum:
            raise ValueError(f"{name}: values must be >= {minimum}, got {values}")
        if v > MAX_INT32:
            raise ValueError(f"{name}: values must be <= {MAX_INT32}, got {values}")
        checked.append(v)
    return checked


def _check_ints(name: str, values, count: int, minimum: int) -> List[int]:
    values = list(values)
    if len(values) != count:
        raise ValueError(f"{name}: expected {count} values, got {len(values)}")
    return _check_int_values(name, values, minimum)


def normalize_padding(padding) -> List[int]:
    """2 symmetric values (pad_h, pad_w) or 4 values (top, left, bottom, right) -> 4 values."""
    padding = list(padding)
    if len(padding) == 2:
        padding = [padding[0], padding[1], padding[0], padding[1]]
    elif len(padding) != 4:
        raise ValueError(
            f"padding: expected 2 (symmetric) or 4 (top, left, bottom, right) values, got {len(padding)}"
        )
    return _check_int_values("padding", padding, 0)


def dwconv_params(kernel_size, stride, padding, dilation) -> List[int]:
    """``conv_params`` of ``dwconv2d_packed``: [kh, kw, stride_h, stride_w, pad_top, pad_left,
    pad_bottom, pad_right, dilation_h, dilation_w]; padding as 2 (symmetric) or 4 values."""
    return (_check_ints("kernel_size", kernel_size, 2, 1) + _check_ints("stride", stride, 2, 1)
            + normalize_padding(padding) + _check_ints("dilation", dilation, 2, 1))


def _split_params(conv_params):
    """conv_params -> (kernel_size, stride, padding, dilation), errors naming conv_params."""
    params = list(conv_params)
    if len(params) != 10:
        raise ValueError(
            "conv_params: expected 10 values [kh, kw, stride_h, stride_w, pad_top, pad_left, "
            f"pad_bottom, pad_right, dilation_h, dilation_w] (see dwconv_params), got {len(params)}"
        )
    try:
        return (_check_ints("kernel_size", params[0:2], 2, 1), _check_ints("stride", params[2:4], 2, 1),
                normalize_padding(params[4:8]), _check_ints("dilation", params[8:10], 2, 1))
    except (ValueError, TypeError) as e:
        raise type(e)(f"conv_params: {e}") from None


def _check_activation(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")


def dwconv_output_size(in_h, in_w, kernel_size, stride, pads, dilation):
    out = []
    for size, k, s, d, before, after in zip(
        (in_h, in_w), kernel_size, stride, dilation, pads[:2], pads[2:]
    ):
        span = d * (k - 1) + 1
        if size + before + after < span:
            raise ValueError(
                f"padding: padded input ({size + before + after}) is smaller than the dilated "
                f"kernel ({span}); the output would be empty"
            )
        out.append((size + before + after - span) // s + 1)
    return out


def _check_dw_geometry(input, kernel_size, stride, padding, dilation, activation):
    kernel_size = list(kernel_size)
    for k in kernel_size:
        if not 1 <= k <= MAX_KERNEL:
            raise ValueError(f"weight: kernel size must be between 1 and {MAX_KERNEL}, got {kernel_size}")
    stride = _check_ints("stride", stride, 2, 1)
    dilation = _check_ints("dilation", dilation, 2, 1)
    pads = normalize_padding(padding)
    _check_activation("activation", activation, DW_ACTIVATIONS)
    out_h, out_w = dwconv_output_size(input.shape[2], input.shape[3], kernel_size, stride, pads, dilation)
    return stride, pads, dilation, out_h, out_w


def _check_dw_weight(input, weight, bias):
    _check_tensor("weight", weight, (4,), input.device)
    channels = input.shape[1]
    if weight.shape[0] != channels or weight.shape[1] != 1:
        raise ValueError(
            f"weight: expected shape ({channels}, 1, kh, kw) for a depthwise conv over {channels} "
            f"channels, got {tuple(weight.shape)}"
        )
    if bias is not None:
        _check_tensor("bias", bias, (1,), input.device)
        if bias.shape[0] != channels:
            raise ValueError(f"bias: expected shape ({channels},), got {tuple(bias.shape)}")
    return [weight.shape[2], weight.shape[3]]


def _se_weight_2d(name: str, w, rows_name: str):
    _check_tensor(name, w, (2, 4))
    if w.dim() == 4 and (w.shape[2] != 1 or w.shape[3] != 1):
        raise ValueError(f"{name}: expected shape ({rows_name}) or ({rows_name}, 1, 1), got {tuple(w.shape)}")
    return w.shape[0], w.shape[1]


def _check_se_biases(fc1_bias, fc2_bias, squeeze: int, channels: int, device) -> None:
    for name, b, size in (("fc1_bias", fc1_bias, squeeze), ("fc2_bias", fc2_bias, channels)):
        if b is not None:
            _check_tensor(name, b, (1,), device)
            if b.shape[0] != size:
                raise ValueError(f"{name}: expected shape ({size},), got {tuple(b.shape)}")


def _check_se(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, activation, gate):
    _check_input(input)
    channels = input.shape[1]
    s1, c1 = _se_weight_2d("fc1_weight", fc1_weight, "S, C")
    c2, s2 = _se_weight_2d("fc2_weight", fc2_weight, "C, S")
    if c1 != channels:
        raise ValueError(f"fc1_weight: expected shape (S, {channels}), got {tuple(fc1_weight.shape)}")
    if c2 != channels or s2 != s1:
        raise ValueError(
            f"fc2_weight: expected shape ({channels}, {s1}) to match input channels and fc1_weight, "
            f"got {tuple(fc2_weight.shape)}"
        )
    for name, t in (("fc1_weight", fc1_weight), ("fc2_weight", fc2_weight)):
        if t.device != input.device:
            raise ValueError(f"{name}: expected device {input.device} (same as input), got {t.device}")
    _check_se_biases(fc1_bias, fc2_bias, s1, channels, input.device)
    _check_activation("activation", activation, SE_ACTIVATIONS)
    _check_activation("gate", gate, SE_GATES)
    return s1


def _check_inference(*tensors) -> None:
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise RuntimeError(
            "mnv3ext ops are inference-only and have no backward: call them under "
            "torch.no_grad() / torch.inference_mode(), or with tensors that do not require grad"
        )
