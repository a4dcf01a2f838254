"""Inference modules that ``optimize`` inserts besides the fused ops of ``mnv3ext.nn``.

* ``PointwiseConv2d``: a 1x1 convolution (BatchNorm already folded into its bias) with its
  following activation applied in the same module, routed through the fastest path measured
  on CPU (see ``POINTWISE_BACKEND`` and the README's benchmark notes).
* ``SameFusedDepthwiseConv2d``: ``FusedDepthwiseConv2d`` whose (possibly asymmetric) padding is
  computed from the input size in ``forward``, as TensorFlow/timm "same" padding does.

Weights live in buffers so ``state_dict``/``torch.save``/``copy.deepcopy`` round-trip.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.fused import FusedDepthwiseConv2d, _dwconv2d_packed

__all__ = ["PointwiseConv2d", "SameFusedDepthwiseConv2d", "POINTWISE_ACTIVATIONS", "tf_same_pads"]

POINTWISE_ACTIVATIONS = ("none", "relu", "relu6", "hardswish")


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return torch.relu_(x)
    if activation == "relu6":
        return F.hardtanh_(x, 0.0, 6.0)
    if activation == "hardswish":
        return F.hardswish(x, inplace=True)
    return x


class PointwiseConv2d(nn.Module):
    """1x1 conv (stride 1, no padding, groups 1) + bias + activation, for inference.

    On channels_last activations ``forward`` runs one ``F.linear`` GEMM on the NHWC view
    (no copies; output NHWC); on NCHW activations ``F.conv2d``. The activation is applied in
    place on the fresh output. At 1 thread and small batches PyTorch sends 1x1 convs to its
    GEMM-based slow path, which for channels_last input copies to NCHW and back around the
    GEMM; the alternatives measured (oneDNN-prepacked ``mkldnn._convolution_pointwise``,
    MKL-packed ``mkl._mkl_linear``, ``mkldnn._linear_pointwise``) were not consistently
    faster than the plain GEMM per layer on the development CPU (README).
    """

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str = "none"):
        super().__init__()
        if activation not in POINTWISE_ACTIVATIONS:
            raise ValueError(f"activation: expected one of {POINTWISE_ACTIVATIONS}, got {activation!r}")
        if weight.dim() != 4 or weight.shape[2:] != (1, 1):
            raise ValueError(f"weight: expected shape (C_out, C_in, 1, 1), got {tuple(weight.shape)}")
        weight = weight.detach().to(torch.float32).clone()
        if bias is None:
            bias = torch.zeros(weight.shape[0])
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias.detach().to(torch.float32).clone())
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("PointwiseConv2d is inference-only: call model.eval() first")
        if x.dim() == 4 and x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last):
            # NHWC: one GEMM (N*H*W, C_in) x (C_in, C_out) on a view, output already NHWC.
            # F.conv2d would copy to NCHW and back around its GEMM at these sizes.
            n, c, h, w = x.shape
            y = F.linear(x.permute(0, 2, 3, 1).reshape(n * h * w, c), self.weight.flatten(1), self.bias)
            y = y.view(n, h, w, -1).permute(0, 3, 1, 2)
        else:
            y = F.conv2d(x, self.weight, self.bias)
        return _activate(y, self.activation)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, activation={self.activation}"


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
