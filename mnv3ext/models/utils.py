"""Test helpers for models whose pretrained weights are not available."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["randomize_batchnorm_"]


@torch.no_grad()
def randomize_batchnorm_(model: nn.Module, seed: int = 0, conv_bias: bool = False) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, in place.

    Freshly initialised BatchNorms (mean 0, var 1, weight 1, bias 0) hide folding bugs, so:
    running_mean ~ U(-0.5, 0.5), running_var ~ U(0.5, 2), weight ~ U(0.5, 1.5),
    bias ~ U(-0.25, 0.25). With ``conv_bias=True`` the biases of convolutions and linear
    layers that have one (squeeze-excite fc1/fc2, classifiers), zero after initialisation,
    are also drawn from U(-0.25, 0.25). Deterministic for a given ``seed`` and model
    structure. Returns ``model``.
    """
    g = torch.Generator().manual_seed(seed)

    def uniform(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g, dtype=torch.float64).mul_(hi - lo).add_(lo).to(t.dtype))

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.running_mean is not None:
                uniform(m.running_mean, -0.5, 0.5)
                uniform(m.running_var, 0.5, 2.0)
            if m.weight is not None:
                uniform(m.weight, 0.5, 1.5)
                uniform(m.bias, -0.25, 0.25)
        elif conv_bias and isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            uniform(m.bias, -0.25, 0.25)
    return model
