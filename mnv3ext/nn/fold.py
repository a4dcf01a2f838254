"""BatchNorm folding: conv(x) then BN == conv with scaled weight and shifted bias (inference)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn


@torch.no_grad()
def fold_batchnorm(weight: torch.Tensor, bias: Optional[torch.Tensor],
                   bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the conv that equals ``bn(conv(x))`` with ``bn`` in eval mode.

    Computed in float64 so folding adds no error of its own beyond the final rounding."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn: BatchNorm without running statistics (track_running_stats=False) cannot be folded")
    var = bn.running_var.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    if bias is not None:
        shift = shift + bias.double() * scale
    shape = (-1,) + (1,) * (weight.dim() - 1)
    folded_weight = (weight.double() * scale.reshape(shape)).to(weight.dtype)
    return folded_weight, shift.to(weight.dtype)
