"""``FusedInvertedResidual``: a whole MobileNetV3 block (1x1 expand -> depthwise -> squeeze-excite ->
1x1 project + residual) as one ``torch.ops.mnv3ext.inverted_residual`` call.

Weights live in buffers (state_dict round-trips); the packed copy is a non-persistent buffer
rebuilt on load; the packed layout is ISA-independent.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import nn

from .. import ops

__all__ = ["FusedInvertedResidual"]


@torch.jit.unused
def _block(x: torch.Tensor, packed: torch.Tensor, config: List[int]) -> torch.Tensor:
    return ops.inverted_residual(x, packed, config)


def _buffer(t: Optional[torch.Tensor], shape=None) -> Optional[torch.Tensor]:
    if t is None:
        return None
    t = t.detach().to(torch.float32)
    return (t.reshape(shape) if shape is not None else t).contiguous().clone()


class FusedInvertedResidual(nn.Module):
    """One inverted-residual block in one kernel call; ``same_padding`` computes TensorFlow
    "SAME" padding of the depthwise conv per input size (timm's tf_ models)."""

    def __init__(self, *, dw_weight: torch.Tensor, dw_bias: Optional[torch.Tensor], stride: int = 1,
                 padding=(0, 0, 0, 0), dilation: int = 1, dw_activation: str = "hardswish",
                 expand_weight: Optional[torch.Tensor] = None, expand_bias: Optional[torch.Tensor] = None,
                 expand_activation: str = "hardswish",
                 se_fc1_weight: Optional[torch.Tensor] = None, se_fc1_bias: Optional[torch.Tensor] = None,
                 se_fc2_weight: Optional[torch.Tensor] = None, se_fc2_bias: Optional[torch.Tensor] = None,
                 se_activation: str = "relu", se_gate: str = "hardsigmoid",
                 project_weight: torch.Tensor, project_bias: Optional[torch.Tensor],
                 project_activation: str = "none", residual: bool = False, same_padding: bool = False):
        super().__init__()
        e = int(dw_weight.shape[0])
        cout = int(project_weight.shape[0])
        cin = int(expand_weight.shape[1]) if expand_weight is not None else e
        s = int(se_fc1_weight.shape[0]) if se_fc1_weight is not None else 0
        zeros = torch.zeros
        self.register_buffer("expand_weight", _buffer(expand_weight, (e, cin, 1, 1)))
        self.register_buffer("expand_bias", None if expand_weight is None else
                             _buffer(expand_bias if expand_bias is not None else zeros(e)))
        self.register_buffer("dw_weight", _buffer(dw_weight))
        self.register_buffer("dw_bias", _buffer(dw_bias if dw_bias is not None else zeros(e)))
        self.register_buffer("se_fc1_weight", _buffer(se_fc1_weight, (s, e)) if s else None)
        self.register_buffer("se_fc1_bias", _buffer(se_fc1_bias if se_fc1_bias is not None else zeros(s)) if s else None)
        self.register_buffer("se_fc2_weight", _buffer(se_fc2_weight, (e, s)) if s else None)
        self.register_buffer("se_fc2_bias", _buffer(se_fc2_bias if se_fc2_bias is not None else zeros(e)) if s else None)
        self.register_buffer("project_weight", _buffer(project_weight, (cout, e, 1, 1)))
        self.register_buffer("project_bias", _buffer(project_bias if project_bias is not None else zeros(cout)))
        self.same_padding = same_padding
        self.config: List[int] = ops.block_config(
            cin, e, cout, list(dw_weight.shape[2:]), stride, padding, dilation,
            expand_activation if expand_weight is not None else None, dw_activation, s, se_activation, se_gate,
            residual, project_activation)
        self.register_buffer("packed_weights", self._pack(), persistent=False)

    def _pack(self) -> torch.Tensor:
        with torch.no_grad():
            return torch.ops.mnv3ext.pack_inverted_residual(
                self.expand_weight, self.expand_bias, self.dw_weight, self.dw_bias, self.se_fc1_weight,
                self.se_fc1_bias, self.se_fc2_weight, self.se_fc2_bias, self.project_weight, self.project_bias,
                self.config)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.packed_weights = self._pack()

    def _same_config(self, h: int, w: int) -> List[int]:
        c = self.config
        pads: List[int] = []
        for size, k in ((h, c[3]), (w, c[4])):
            total = max((math.ceil(size / c[5]) - 1) * c[5] + (k - 1) * c[6] + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return c[:7] + [pads[0], pads[2], pads[1], pads[3]] + c[11:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("FusedInvertedResidual is inference-only: call model.eval() first")
        config = self._same_config(x.shape[-2], x.shape[-1]) if self.same_padding else self.config
        if torch.jit.is_scripting():
            return torch.ops.mnv3ext.inverted_residual(x, self.packed_weights, config)
        return _block(x, self.packed_weights, config)

    def extra_repr(self) -> str:
        d = ops.describe_config(self.config)
        parts = [f"{d['in_channels']}->{d['expanded_channels']}->{d['out_channels']}",
                 f"kernel={d['kernel_h']}x{d['kernel_w']}", f"stride={d['stride']}"]
        if d["dilation"] != 1:
            parts.append(f"dilation={d['dilation']}")
        parts.append("padding=same(tf)" if self.same_padding else
                     f"padding={(d['pad_top'], d['pad_left'], d['pad_bottom'], d['pad_right'])}")
        parts.append(f"expand={d['expand_activation'] if d['has_expand'] else 'none'}")
        parts.append(f"dw={d['dw_activation']}")
        if d["se_squeeze"]:
            parts.append(f"se={d['se_squeeze']} {d['se_activation']}/{d['se_gate']}")
        if d["has_residual"]:
            parts.append("residual")
        return ", ".join(parts)
