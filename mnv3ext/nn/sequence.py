"""``FusedSequence``: consecutive layers of an optimized model (stem, blocks, 1x1 convolutions,
pool, classifier) run as one ``torch.ops.mnv3ext.sequential`` call.

The layers stay where they are in the model (their buffers, ``state_dict`` keys and packed
weights unchanged); the model passes their packed weights to this module on every call, so a
``load_state_dict`` that re-packs them is seen at once.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from .. import ops
from .._program import STEP_NAMES, parse_program

__all__ = ["FusedSequence"]


@torch.jit.unused
def _sequential(x: torch.Tensor, weights: List[torch.Tensor], program: List[int]) -> torch.Tensor:
    return ops.sequential(x, weights, program)


class FusedSequence(nn.Module):
    """``forward(x, weights)``: the steps of ``program`` on ``x``; ``layers`` names the modules
    the steps stand for (for printing and the optimize summary)."""

    def __init__(self, program: List[int], layers: List[str]):
        super().__init__()
        parse_program(program)
        self.program: List[int] = [int(v) for v in program]
        self.layers: List[str] = list(layers)

    def forward(self, x: torch.Tensor, weights: List[torch.Tensor]) -> torch.Tensor:
        if self.training:
            raise RuntimeError("FusedSequence is inference-only: call model.eval() first")
        if torch.jit.is_scripting():
            return torch.ops.mnv3ext.sequential(x, weights, self.program)
        return _sequential(x, weights, self.program)

    def extra_repr(self) -> str:
        kinds = [STEP_NAMES[k] for k, _ in parse_program(self.program)]
        counts = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
        return (f"{len(self.layers)} layers ({self.layers[0]} .. {self.layers[-1]}): "
                + ", ".join(f"{n} {k}" for k, n in counts.items()))
