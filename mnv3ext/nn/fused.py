"""Inference-only modules running the ``torch.ops.mnv3ext.*`` ops, with weights packed once.

Weights live in buffers (``weight``/``bias``, ``fc*_weight``/``fc*_bias``) so ``state_dict``
round-trips; the packed copy is a non-persistent buffer rebuilt whenever a state dict is loaded.
The packed layout is ISA-independent, so a saved module loads on any CPU.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from .. import ops  # registers torch.ops.mnv3ext

# Eager calls go through ops' entry points, which skip the dispatcher round trip when nothing
# observes the call (and call the op when something does: compile, export, modes, ...).
# TorchScript cannot compile those, so scripted modules call the op packets.
@torch.jit.unused
def _dwconv2d_packed(x: torch.Tensor, packed: torch.Tensor, params: List[int], activation: str) -> torch.Tensor:
    return ops.dwconv2d_packed(x, packed, params, activation)


@torch.jit.unused
def _squeeze_excite_packed(x: torch.Tensor, packed: torch.Tensor, squeeze: int, activation: str,
                           gate: str) -> torch.Tensor:
    return ops.squeeze_excite_packed(x, packed, squeeze, activation, gate)


def _as_list(value, count: int) -> List[int]:
    if isinstance(value, int):
        return [value] * count
    return [int(v) for v in value]


class FusedDepthwiseConv2d(nn.Module):
    """Depthwise conv + folded BatchNorm (as bias) + activation in one kernel."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], stride=1, padding=0,
                 dilation=1, activation: str = "none"):
        super().__init__()
        if activation not in ops.DW_ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ops.DW_ACTIVATIONS}, got {activation!r}")
        weight = weight.detach().to(torch.float32).contiguous().clone()
        if bias is None:
            bias = torch.zeros(weight.shape[0])
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias.detach().to(torch.float32).contiguous().clone())
        self.kernel_size: List[int] = [int(weight.shape[2]), int(weight.shape[3])]
        self.stride: List[int] = _as_list(stride, 2)
        self.padding: List[int] = ops.normalize_padding(_as_list(padding, 2))
        self.dilation: List[int] = _as_list(dilation, 2)
        self.activation = activation
        self.conv_params: List[int] = ops.dwconv_params(self.kernel_size, self.stride, self.padding,
                                                        self.dilation)
        self.register_buffer("packed_weight", self._pack(), persistent=False)

    def _pack(self) -> torch.Tensor:
        with torch.no_grad():
            return torch.ops.mnv3ext.pack_dwconv_weight(self.weight, self.bias)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.packed_weight = self._pack()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("FusedDepthwiseConv2d is inference-only: call model.eval() first")
        if torch.jit.is_scripting():
            return torch.ops.mnv3ext.dwconv2d_packed(x, self.packed_weight, self.conv_params, self.activation)
        return _dwconv2d_packed(x, self.packed_weight, self.conv_params, self.activation)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[0]}, kernel_size={tuple(self.kernel_size)}, stride={tuple(self.stride)}, "
                f"padding={tuple(self.padding)}, dilation={tuple(self.dilation)}, activation={self.activation}")


class FusedSqueezeExcite(nn.Module):
    """x * gate(fc2(act(fc1(mean_hw(x))))) in one kernel."""

    def __init__(self, fc1_weight: torch.Tensor, fc1_bias: Optional[torch.Tensor],
                 fc2_weight: torch.Tensor, fc2_bias: Optional[torch.Tensor],
                 activation: str = "relu", gate: str = "hardsigmoid"):
        super().__init__()
        if activation not in ops.SE_ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ops.SE_ACTIVATIONS}, got {activation!r}")
        if gate not in ops.SE_GATES:
            raise ValueError(f"gate: expected one of {ops.SE_GATES}, got {gate!r}")
        fc1 = fc1_weight.detach().to(torch.float32).flatten(1).contiguous().clone()
        fc2 = fc2_weight.detach().to(torch.float32).flatten(1).contiguous().clone()
        zeros = torch.zeros
        self.register_buffer("fc1_weight", fc1)
        self.register_buffer("fc1_bias", (zeros(fc1.shape[0]) if fc1_bias is None else fc1_bias.detach().float().clone()))
        self.register_buffer("fc2_weight", fc2)
        self.register_buffer("fc2_bias", (zeros(fc2.shape[0]) if fc2_bias is None else fc2_bias.detach().float().clone()))
        self.activation = activation
        self.gate = gate
        self.squeeze = int(fc1.shape[0])
        self.register_buffer("packed_weights", self._pack(), persistent=False)

    def _pack(self) -> torch.Tensor:
        with torch.no_grad():
            return torch.ops.mnv3ext.pack_se_weights(self.fc1_weight, self.fc1_bias, self.fc2_weight,
                                                     self.fc2_bias)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.packed_weights = self._pack()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("FusedSqueezeExcite is inference-only: call model.eval() first")
        if torch.jit.is_scripting():
            return torch.ops.mnv3ext.squeeze_excite_packed(x, self.packed_weights, self.squeeze,
                                                           self.activation, self.gate)
        return _squeeze_excite_packed(x, self.packed_weights, self.squeeze, self.activation, self.gate)

    def extra_repr(self) -> str:
        return (f"channels={self.fc1_weight.shape[1]}, squeeze={self.fc1_weight.shape[0]}, "
                f"activation={self.activation}, gate={self.gate}")
