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


def squeeze_excite(input: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: Optional[torch.Tensor],
                   fc2_weight: torch.Tensor, fc2_bias: Optional[torch.Tensor],
                   activation: str, gate: str) -> torch.Tensor:
    pooled = input.mean((2, 3))
    hidden = apply_activation(activation, F.linear(pooled, fc1_weight.flatten(1), fc1_bias))
    scale = apply_activation(gate, F.linear(hidden, fc2_weight.flatten(1), fc2_bias))
    return input * scale[:, :, None, None]
