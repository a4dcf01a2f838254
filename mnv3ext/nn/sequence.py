"""``FusedSequence``: consecutive layers of an optimized model (stem, blocks, 1x1 convolutions,
pool, classifier) run as one ``torch.ops.mnv3ext.sequential`` call.

The layers stay where they are in the model (their buffers, ``state_dict`` keys and packed
weights unchanged). This module keeps plain references to them (not submodules: nothing is
registered or saved twice) and reads their packed weights on every call, so a
``load_state_dict`` that re-packs them is seen at once; ``copy.deepcopy`` and pickling keep the
references pointing into the copied model.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import ops
from .._program import STEP_NAMES, parse_program

__all__ = ["FusedSequence"]


@torch.jit.unused
def _sequential(x: torch.Tensor, weights: List[torch.Tensor], program: List[int]) -> torch.Tensor:
    return ops.sequential(x, weights, program)


class FusedSequence(nn.Module):
    """``forward(x, weights=None)``: the steps of ``program`` on ``x``. ``layers``: the names of
    the modules the steps stand for (printing, the optimize summary, ``mnv3ext.check``);
    ``sources``: (module, packed-weight buffer name) per step that takes a weight, read when
    ``weights`` is not given."""

    __jit_ignored_attributes__ = ["_sources"]

    def __init__(self, program: List[int], layers: List[str],
                 sources: Sequence[Tuple[nn.Module, str]] = ()):
        super().__init__()
        parse_program(program)
        self.program: List[int] = [int(v) for v in program]
        self.layers: List[str] = list(layers)
        self._sources = [(m, str(name)) for m, name in sources]

    @torch.jit.unused
    def _weights(self) -> List[torch.Tensor]:
        return [m._buffers[name] for m, name in self._sources]

    def forward(self, x: torch.Tensor, weights: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        if self.training:
            raise RuntimeError("FusedSequence is inference-only: call model.eval() first")
        if torch.jit.is_scripting():
            if weights is None:
                raise RuntimeError("FusedSequence under TorchScript needs its weights passed in")
            return torch.ops.mnv3ext.sequential(x, weights, self.program)
        return _sequential(x, self._weights() if weights is None else weights, self.program)

    def extra_repr(self) -> str:
        kinds = [STEP_NAMES[k] for k, _ in parse_program(self.program)]
        counts = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
        return (f"{len(self.layers)} layers ({self.layers[0]} .. {self.layers[-1]}): "
                + ", ".join(f"{n} {k}" for k, n in counts.items()))
