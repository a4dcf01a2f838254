"""The mnv3ext ops in plain PyTorch: same signatures, float32 or float64.

The tests and ``mnv3ext.check`` compare the fused kernels against these. Activations follow
PyTorch's definitions (hardswish = x * relu6(x + 3) / 6, hardsigmoid = relu6(x + 3) / 6).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

_ACTIVATIONS = {
    "none": lambda x: x,
    "relu": F.relu,
    "relu6": F.relu6,
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
    "sigmoid": torch.sigmoid,
}


def apply_activation(name: str, x: torch.Tensor) -> torch.Tensor:
    try:
        return _ACTIVATIONS[name](x)
    except KeyError:
        raise ValueError(f"activation: unknown value {name!r}") from None


def _pads4(padding: Sequence[int]):
    padding = list(padding)
    if len(padding) == 2:
        return [padding[0], padding[1], padding[0], padding[1]]
    if len(padding) == 4:
        return padding
    raise ValueError("padding: expected 2 or 4 values")


def dwconv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
             stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
             activation: str) -> torch.Tensor:
    top, left, bottom, right = _pads4(padding)
    x = F.pad(input, (left, right, top, bottom)) if (top, left, bottom, right) != (0, 0, 0, 0) else input
    y = F.conv2d(x, weight, bias, tuple(stride), 0, tuple(dilation), groups=input.shape[1])
    return apply_activation(activation, y)


def unpack_dwconv_weight(packed: torch.Tensor, channels: int, kernel_size: Sequence[int]):
    """Inverse of ``pack_dwconv_weight``: (weight (C, 1, kh, kw), bias (C,))."""
    kh, kw = kernel_size
    bias = packed[0, :channels]
    weight = packed[1:, :channels].t().reshape(channels, 1, kh, kw)
    return weight, bias


def dwconv2d_packed(input, packed_weight, conv_params, activation):
    """``conv_params`` = [kh, kw, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right,
    dilation_h, dilation_w], as ``mnv3ext.ops.dwconv_params`` builds it."""
    kernel_size, stride, pads, dilation = conv_params[0:2], conv_params[2:4], conv_params[4:8], conv_params[8:10]
    weight, bias = unpack_dwconv_weight(packed_weight, input.shape[1], kernel_size)
    return dwconv2d(input, weight.to(input.dtype), bias.to(input.dtype), stride, pads, dilation,
                    activation)


def se_gate(input: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: Optional[torch.Tensor],
            fc2_weight: torch.Tensor, fc2_bias: Optional[torch.Tensor], activation: str, gate: str) -> torch.Tensor:
    """The (N, C) gate of a squeeze-excite: gate(fc2(act(fc1(mean_hw(input)))))."""
    hidden = apply_activation(activation, F.linear(input.mean((2, 3)), fc1_weight.flatten(1), fc1_bias))
    return apply_activation(gate, F.linear(hidden, fc2_weight.flatten(1), fc2_bias))


def squeeze_excite(input: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: Optional[torch.Tensor],
                   fc2_weight: torch.Tensor, fc2_bias: Optional[torch.Tensor],
                   activation: str, gate: str) -> torch.Tensor:
    scale = se_gate(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, activation, gate)
    return input * scale[:, :, None, None]


def pointwise_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                     activation: str, residual: Optional[torch.Tensor],
                     input_scale: Optional[torch.Tensor]) -> torch.Tensor:
    x = input if input_scale is None else input * input_scale[:, :, None, None]
    y = apply_activation(activation, F.conv2d(x, weight.reshape(weight.shape[0], -1, 1, 1), bias))
    return y if residual is None else y + residual


def unpack_gemm_weight(packed: torch.Tensor, k: int, n: int):
    """Inverse of ``pack_gemm_weight``: (weight (n, k), bias (n,))."""
    panels = -(-n // 16)
    p = packed.reshape(panels, 1 + k, 16)
    bias = p[:, 0, :].reshape(-1)[:n]
    weight = p[:, 1:, :].permute(0, 2, 1).reshape(panels * 16, k)[:n]
    return weight, bias


def pointwise_conv2d_packed(input, packed_weight, out_channels, activation, residual, input_scale):
    weight, bias = unpack_gemm_weight(packed_weight, input.shape[1], out_channels)
    return pointwise_conv2d(input, weight.to(input.dtype), bias.to(input.dtype), activation, residual,
                            input_scale)


def conv2d_packed(input, packed_weight, out_channels, conv_params, activation, channels_last_output=False):
    """Dense convolution; ``conv_params`` as for ``dwconv2d_packed``; ``packed_weight`` from
    ``pack_gemm_weight(weight.permute(0, 2, 3, 1))`` (taps in NHWC order)."""
    kernel_size, stride, pads, dilation = conv_params[0:2], conv_params[2:4], conv_params[4:8], conv_params[8:10]
    kh, kw = kernel_size
    weight, bias = unpack_gemm_weight(packed_weight, input.shape[1] * kh * kw, out_channels)
    weight = weight.reshape(out_channels, kh, kw, input.shape[1]).permute(0, 3, 1, 2).to(input.dtype)
    top, left, bottom, right = _pads4(pads)
    x = F.pad(input, (left, right, top, bottom)) if (top, left, bottom, right) != (0, 0, 0, 0) else input
    y = apply_activation(activation, F.conv2d(x, weight, bias.to(input.dtype), tuple(stride), 0, tuple(dilation)))
    return y.contiguous(memory_format=torch.channels_last) if channels_last_output else y


def linear_packed(input, packed_weight, out_features, activation):
    weight, bias = unpack_gemm_weight(packed_weight, input.shape[-1], out_features)
    return apply_activation(activation, F.linear(input, weight.to(input.dtype), bias.to(input.dtype)))


def global_avg_pool(input: torch.Tensor) -> torch.Tensor:
    return input.mean((2, 3), keepdim=True)


def unpack_se_weights(packed: torch.Tensor, channels: int, squeeze: int):
    """Inverse of ``pack_se_weights``: (fc1_weight (S, C), fc1_bias, fc2_weight (C, S), fc2_bias)."""
    def up(n):  # sections start at multiples of 16 floats
        return -(-n // 16) * 16
    b1 = up(squeeze * channels)
    w2 = b1 + up(squeeze)
    b2 = w2 + up(channels * squeeze)
    return (packed[:squeeze * channels].reshape(squeeze, channels), packed[b1:b1 + squeeze],
            packed[w2:w2 + channels * squeeze].reshape(channels, squeeze), packed[b2:b2 + channels])


def se_gate_packed(input, packed_weights, squeeze, activation, gate):
    w1, b1, w2, b2 = (t.to(input.dtype) for t in unpack_se_weights(packed_weights, input.shape[1], squeeze))
    return se_gate(input, w1, b1, w2, b2, activation, gate)


_ACTIVATION_NAMES = ("none", "relu", "relu6", "hardswish", "hardsigmoid", "sigmoid")  # config codes


def _block_sections(config):
    """Float offsets of ``pack_inverted_residual``'s sections (as ``mnv3ext._C.block_layout``)."""
    cin, e, kh, kw = config[0], config[1], config[3], config[4]
    has_expand, s = config[11], config[14]

    def up(n):
        return -(-n // 16) * 16
    at, lay = 0, {}
    lay["expand"] = at
    at += (-(-e // 16) * (1 + cin) * 16) if has_expand else 0
    lay["dw"] = at
    at += (1 + kh * kw) * up(e)
    for key, n in (("se_fc1", s * e), ("se_b1", s), ("se_fc2", e * s), ("se_b2", e)):
        lay[key] = at
        at += up(n) if s else 0
    lay["project"] = at
    return lay


def inverted_residual(input, packed_weights, config):
    """One inverted-residual block as the composition of the reference ops; ``config`` from
    ``mnv3ext.ops.block_config``."""
    cin, e, cout, kh, kw, stride, dilation = config[0:7]
    pads = list(config[7:11])
    has_expand, expand_act, dw_act, s, se_act, se_gate_code, residual, project_act = config[11:19]
    lay = _block_sections(config)
    p = packed_weights.to(input.dtype)
    x = input
    if has_expand:
        x = linear_packed_nchw(x, p[lay["expand"]:], e, _ACTIVATION_NAMES[expand_act])
    dw = p[lay["dw"]:lay["dw"] + (1 + kh * kw) * (-(-e // 16) * 16)].reshape(1 + kh * kw, -1)
    x = dwconv2d_packed(x, dw, [kh, kw, stride, stride, *pads, dilation, dilation], _ACTIVATION_NAMES[dw_act])
    scale = None
    if s:
        w1 = p[lay["se_fc1"]:lay["se_fc1"] + s * e].reshape(s, e)
        w2 = p[lay["se_fc2"]:lay["se_fc2"] + e * s].reshape(e, s)
        scale = se_gate(x, w1, p[lay["se_b1"]:lay["se_b1"] + s], w2, p[lay["se_b2"]:lay["se_b2"] + e],
                        _ACTIVATION_NAMES[se_act], _ACTIVATION_NAMES[se_gate_code])
    weight, bias = unpack_gemm_weight(p[lay["project"]:lay["project"] + (-(-cout // 16)) * (1 + e) * 16], e, cout)
    return pointwise_conv2d(x, weight, bias, _ACTIVATION_NAMES[project_act], input if residual else None, scale)


def linear_packed_nchw(input, packed_weight, out_channels, activation):
    """A 1x1 convolution with a ``pack_gemm_weight`` weight (the leading part of ``packed_weight``)."""
    k = input.shape[1]
    weight, bias = unpack_gemm_weight(packed_weight[:(-(-out_channels // 16)) * (1 + k) * 16], k, out_channels)
    return pointwise_conv2d(input, weight, bias, activation, None, None)


def sequential(input, weights, program):
    """The steps of ``program`` (``mnv3ext._program``) as the reference ops one after the other."""
    from ._program import BLOCK, CONV, FLATTEN, LINEAR, POINTWISE, WEIGHTED, parse_program
    x, w = input, iter(weights)
    for kind, p in parse_program(program):
        weight = next(w) if kind in WEIGHTED else None
        if kind == CONV:
            x = conv2d_packed(x, weight, p[0], p[3:], _ACTIVATION_NAMES[p[1]], bool(p[2]))
        elif kind == BLOCK:
            x = inverted_residual(x, weight, p)
        elif kind == POINTWISE:
            x = pointwise_conv2d_packed(x, weight, p[0], _ACTIVATION_NAMES[p[1]], None, None)
        elif kind == FLATTEN:
            x = x.flatten(1)
        elif kind == LINEAR:
            x = linear_packed(x, weight, p[0], _ACTIVATION_NAMES[p[1]])
        else:
            x = global_avg_pool(x)
    return x
