"""``torch.fx`` tracing with leaves chosen for pattern matching, and discovery of untraceable modules."""
from __future__ import annotations

from typing import Dict, Optional, Set

from torch import fx, nn

from ..nn.block import FusedInvertedResidual
from ..nn.fused import FusedDepthwiseConv2d, FusedSqueezeExcite
from ..nn.gemm import FusedConv2d, FusedLinear, FusedPointwiseConv2d, GlobalAvgPool

__all__ = ["MatchTracer", "trace"]

# Modules whose forward is never traced into: their call is the pattern element.
_ALWAYS_LEAF = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, FusedDepthwiseConv2d,
                FusedSqueezeExcite, FusedPointwiseConv2d, FusedConv2d, FusedLinear, GlobalAvgPool,
                FusedInvertedResidual)


class MatchTracer(fx.Tracer):
    """Leaves: torch.nn built-ins, every Conv2d/Linear/BatchNorm subclass (a timm
    ``Conv2dSame`` or ``BatchNormAct2d`` is one call in the graph, analysed by probing), and
    modules found untraceable. Everything else (user blocks, Sequentials) is flattened."""

    def __init__(self, extra_leaves: Optional[Set[int]] = None):
        super().__init__()
        self.extra_leaves: Set[int] = set(extra_leaves or ())

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if id(m) in self.extra_leaves or isinstance(m, _ALWAYS_LEAF):
            return True
        return super().is_leaf_module(m, qualname)


def _try_trace(module: nn.Module, leaves: Set[int]) -> Optional[fx.Graph]:
    try:
        return MatchTracer(leaves).trace(module)
    except Exception:  # noqa: BLE001 - any tracing failure means "not traceable"
        return None


def trace(root: nn.Module) -> Dict[str, object]:
    """Trace ``root``; if that fails, find the smallest modules whose ``forward`` cannot be
    traced, make them leaves and trace again.

    Returns {"graph": fx.Graph or None, "leaves": {qualified name: reason} of untraceable
    modules made leaves}."""
    graph = _try_trace(root, set())
    if graph is not None:
        return {"graph": graph, "leaves": {}}
    leaves: Set[int] = set()
    names: Dict[str, str] = {}
    tracer = MatchTracer()
    # Post-order: children first, so a parent is only blamed for its own forward.
    order = list(root.named_modules())[::-1]
    for name, m in order:
        if m is root or id(m) in leaves or tracer.is_leaf_module(m, name):
            continue
        if _try_trace(m, leaves) is None:
            leaves.add(id(m))
            names[name] = "forward not traceable by torch.fx"
    graph = _try_trace(root, leaves)
    return {"graph": graph, "leaves": names}
