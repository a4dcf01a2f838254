"""Inference modules over the GEMM-family ops: 1x1 convolutions with fused epilogues, dense
convolutions (the stem), fully-connected layers, the global average pool and the gate-only
squeeze-excite.

As in ``mnv3ext.nn.fused``: weights live in buffers (state_dict round-trips), the packed copy is
a non-persistent buffer rebuilt on load, and the packed layout is ISA-independent.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from .. import ops
from .fused import FusedSqueezeExcite, _as_list

__all__ = ["FusedPointwiseConv2d", "FusedConv2d", "FusedLinear", "GlobalAvgPool", "SqueezeExciteGate",
           "GEMM_ACTIVATIONS"]

GEMM_ACTIVATIONS = ops.DW_ACTIVATIONS  # none, relu, relu6, hardswish


# Eager calls go through ops' entry points (no dispatcher round trip when nothing observes the
# call); TorchScript cannot compile those, so scripted modules call the ops.
@torch.jit.unused
def _pointwise(x: torch.Tensor, packed: torch.Tensor, out_channels: int, activation: str,
               residual: Optional[torch.Tensor], scale: Optional[torch.Tensor]) -> torch.Tensor:
    return ops.pointwise_conv2d_packed(x, packed, out_channels, activation, residual, scale)


@torch.jit.unused
def _conv(x: torch.Tensor, packed: torch.Tensor, out_channels: int, params: List[int],
          activation: str, channels_last_output: bool = False) -> torch.Tensor:
    return ops.conv2d_packed(x, packed, out_channels, params, activation, channels_last_output)


@torch.jit.unused
def _linear(x: torch.Tensor, packed: torch.Tensor, out_features: int, activation: str) -> torch.Tensor:
    return ops.linear_packed(x, packed, out_features, activation)


@torch.jit.unused
def _pool(x: torch.Tensor) -> torch.Tensor:
    return ops.global_avg_pool(x)


@torch.jit.unused
def _gate(x: torch.Tensor, packed: torch.Tensor, squeeze: int, activation: str, gate: str) -> torch.Tensor:
    return ops.se_gate_packed(x, packed, squeeze, activation, gate)


def _check_activation(activation: str) -> None:
    if activation not in GEMM_ACTIVATIONS:
        raise ValueError(f"activation: expected one of {GEMM_ACTIVATIONS}, got {activation!r}")


class _PackedGemm(nn.Module):
    """weight/bias buffers and their packed form (pack_gemm_weight)."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str):
        super().__init__()
        _check_activation(activation)
        weight = weight.detach().to(torch.float32).contiguous().clone()
        if bias is None:
            bias = torch.zeros(weight.shape[0])
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias.detach().to(torch.float32).contiguous().clone())
        self.activation = activation
        self.out_channels = int(weight.shape[0])
        self._class_name = type(self).__name__  # for TorchScript, which has no type(self)
        self.register_buffer("packed_weight", self._pack(), persistent=False)

    def _pack(self) -> torch.Tensor:
        with torch.no_grad():
            return torch.ops.mnv3ext.pack_gemm_weight(self.weight, self.bias)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.packed_weight = self._pack()

    def _inference_only(self) -> None:
        if self.training:
            raise RuntimeError(self._class_name + " is inference-only: call model.eval() first")


class FusedPointwiseConv2d(_PackedGemm):
    """1x1 conv (BatchNorm folded into the bias) + activation, then ``+ residual``, with an
    optional per-image input-channel ``input_scale`` (a squeeze-excite gate) applied to the
    input inside the GEMM: one pass, nothing intermediate written.

    ``forward(x, residual=None, input_scale=None)``. A residual whose shape is not the output's
    (a broadcasting add in the original model) is added outside the kernel, as PyTorch would.
    """

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str = "none"):
        if weight.dim() != 4 or tuple(weight.shape[2:]) != (1, 1):
            raise ValueError(f"weight: expected shape (C_out, C_in, 1, 1), got {tuple(weight.shape)}")
        super().__init__(weight, bias, activation)
        self.in_channels = int(weight.shape[1])

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
                input_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        self._inference_only()
        if residual is not None and (residual.dim() != 4 or residual.shape[0] != x.shape[0]
                                     or residual.shape[1] != self.out_channels
                                     or residual.shape[2:] != x.shape[2:]):
            return self.forward(x, None, input_scale) + residual
        if torch.jit.is_scripting():
            return torch.ops.mnv3ext.pointwise_conv2d_packed(x, self.packed_weight, self.out_channels,
                                                             self.activation, residual, input_scale)
        return _pointwise(x, self.packed_weight, self.out_channels, self.activation, residual, input_scale)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, activation={self.activation}"


class FusedConv2d(_PackedGemm):
    """Dense convolution (groups 1; e.g. the 3x3 stride-2 stem) + bias + activation."""

    def _pack(self) -> torch.Tensor:  # taps in NHWC order (conv2d_packed)
        with torch.no_grad():
            return torch.ops.mnv3ext.pack_gemm_weight(self.weight.permute(0, 2, 3, 1), self.bias)

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], stride=1, padding=0, dilation=1,
                 activation: str = "none"):
        if weight.dim() != 4:
            raise ValueError(f"weight: expected shape (C_out, C_in, kh, kw), got {tuple(weight.shape)}")
        super().__init__(weight, bias, activation)
        self.kernel_size: List[int] = [int(weight.shape[2]), int(weight.shape[3])]
        self.stride: List[int] = _as_list(stride, 2)
        self.padding: List[int] = ops.normalize_padding(_as_list(padding, 2))
        self.dilation: List[int] = _as_list(dilation, 2)
        self.conv_params: List[int] = ops.dwconv_params(self.kernel_size, self.stride, self.padding,
                                                        self.dilation)
        # Set by optimize when this conv reads the model's input: the user's NCHW image is read
        # in place and the output is channels_last, with no conversion of the input first.
        self.channels_last_output = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._inference_only()
        if torch.jit.is_scripting():
            return torch.ops.mnv3ext.conv2d_packed(x, self.packed_weight, self.out_channels, self.conv_params,
                                                   self.activation, self.channels_last_output)
        return _conv(x, self.packed_weight, self.out_channels, self.conv_params, self.activation,
                     self.channels_last_output)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1]}, {self.out_channels}, kernel_size={tuple(self.kernel_size)}, "
                f"stride={tuple(self.stride)}, padding={tuple(self.padding)}, dilation={tuple(self.dilation)}, "
                f"activation={self.activation}")


class FusedLinear(_PackedGemm):
    """Fully-connected layer + activation (the classifier); weights streamed once per call."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str = "none"):
        if weight.dim() != 2:
            raise ValueError(f"weight: expected shape (out_features, in_features), got {tuple(weight.shape)}")
        super().__init__(weight, bias, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._inference_only()
        if torch.jit.is_scripting():
            return torch.ops.mnv3ext.linear_packed(x, self.packed_weight, self.out_channels, self.activation)
        return _linear(x, self.packed_weight, self.out_channels, self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.out_channels}, activation={self.activation}"


class GlobalAvgPool(nn.Module):
    """Mean over H and W: ``(N, C, H, W) -> (N, C, 1, 1)``, or ``(N, C)`` with ``keepdim=False``."""

    def __init__(self, keepdim: bool = True):
        super().__init__()
        self.keepdim = keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            y = torch.ops.mnv3ext.global_avg_pool(x)
        else:
            y = _pool(x)
        return y if self.keepdim else y.flatten(1)

    def extra_repr(self) -> str:
        return f"keepdim={self.keepdim}"


class SqueezeExciteGate(FusedSqueezeExcite):
    """The squeeze-excite's gate ``(N, C)`` alone: the multiply happens in the following 1x1
    convolution (``FusedPointwiseConv2d``'s ``input_scale``). Same buffers as FusedSqueezeExcite."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("SqueezeExciteGate is inference-only: call model.eval() first")
        if torch.jit.is_scripting():
            return torch.ops.mnv3ext.se_gate_packed(x, self.packed_weights, self.squeeze, self.activation,
                                                    self.gate)
        return _gate(x, self.packed_weights, self.squeeze, self.activation, self.gate)

    @classmethod
    def from_fused(cls, se: FusedSqueezeExcite) -> "SqueezeExciteGate":
        return cls(se.fc1_weight, se.fc1_bias, se.fc2_weight, se.fc2_bias, se.activation, se.gate)
