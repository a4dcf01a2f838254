"""Inference modules that ``optimize`` inserts besides the fused ops of ``mnv3ext.nn``.

* ``PointwiseConv2d``: ``mnv3ext.nn.FusedPointwiseConv2d`` (a 1x1 convolution on mnv3ext's GEMM
  kernels, with its activation, residual add and squeeze-excite gate fused).
* ``SameFusedDepthwiseConv2d``: ``FusedDepthwiseConv2d`` whose (possibly asymmetric) padding is
  computed from the input size in ``forward``, as TensorFlow/timm "same" padding does.

Weights live in buffers so ``state_dict``/``torch.save``/``copy.deepcopy`` round-trip.
"""
from __future__ import annotations

import math
from typing import List

import torch

from ..nn.fused import FusedDepthwiseConv2d, _dwconv2d_packed
from ..nn.gemm import FusedConv2d, FusedPointwiseConv2d, _conv

__all__ = ["PointwiseConv2d", "SameFusedDepthwiseConv2d", "SameFusedConv2d", "POINTWISE_ACTIVATIONS", "tf_same_pads"]

POINTWISE_ACTIVATIONS = ("none", "relu", "relu6", "hardswish")

# The 1x1 convolution module optimize emits: mnv3ext's own GEMM with fused epilogues.
PointwiseConv2d = FusedPointwiseConv2d


def tf_same_pads(in_h: int, in_w: int, kernel_size: List[int], stride: List[int],
                 dilation: List[int]) -> List[int]:
    """(top, left, bottom, right) of TensorFlow "SAME" padding (the extra pixel at bottom/right)."""
    pads = []
    for size, k, s, d in zip((in_h, in_w), kernel_size, stride, dilation):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    return [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]


class SameFusedDepthwiseConv2d(FusedDepthwiseConv2d):
    """``FusedDepthwiseConv2d`` with TensorFlow "SAME" padding computed per input size."""

    def __init__(self, weight, bias, stride=1, dilation=1, activation: str = "none"):
        super().__init__(weight, bias, stride=stride, padding=0, dilation=dilation, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("SameFusedDepthwiseConv2d is inference-only: call model.eval() first")
        pads = tf_same_pads(x.shape[-2], x.shape[-1], self.kernel_size, self.stride, self.dilation)
        params = self.kernel_size + self.stride + pads + self.dilation
        if torch.jit.is_scripting():
            return torch.ops.mnv3ext.dwconv2d_packed(x, self.packed_weight, params, self.activation)
        return _dwconv2d_packed(x, self.packed_weight, params, self.activation)

    def extra_repr(self) -> str:
        return super().extra_repr().replace(f"padding={tuple(self.padding)}", "padding=same(tf)")


class SameFusedConv2d(FusedConv2d):
    """``FusedConv2d`` with TensorFlow "SAME" padding computed per input size (timm's tf_ stems)."""

    def __init__(self, weight, bias, stride=1, dilation=1, activation: str = "none"):
        super().__init__(weight, bias, stride=stride, padding=0, dilation=dilation, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("SameFusedConv2d is inference-only: call model.eval() first")
        pads = tf_same_pads(x.shape[-2], x.shape[-1], self.kernel_size, self.stride, self.dilation)
        params = self.kernel_size + self.stride + pads + self.dilation
        if torch.jit.is_scripting():
            return torch.ops.mnv3ext.conv2d_packed(x, self.packed_weight, self.out_channels, params, self.activation,
                                                   self.channels_last_output)
        return _conv(x, self.packed_weight, self.out_channels, params, self.activation, self.channels_last_output)

    def extra_repr(self) -> str:
        return super().extra_repr().replace(f"padding={tuple(self.padding)}", "padding=same(tf)")
