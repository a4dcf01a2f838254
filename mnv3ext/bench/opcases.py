"""Per-op benchmark cases: each depthwise / SE layer of ``mnv3ext.shapes`` as (eager, ours) callables.

Shared by the op table (``python -m mnv3ext bench-ops``) and the pytest-benchmark suite
(``bench/bench_ops.py``), so both time exactly the same work.

* depthwise, eager: ``F.conv2d(groups=C)`` -> ``F.batch_norm`` (eval, running stats) ->
  in-place activation, i.e. what an eager MobileNetV3 block runs (functional calls, so the
  baseline carries no ``nn.Module.__call__`` overhead); ours: ``mnv3ext.ops.dwconv2d_packed``, the
  eager entry point the fused modules call, with the BatchNorm folded and the weight packed once
  by ``torch.ops.mnv3ext.pack_dwconv_weight``; via_ops: the same through
  ``torch.ops.mnv3ext.dwconv2d_packed`` (the dispatcher round trip the entry point skips).
* SE, eager: ``adaptive_avg_pool2d`` -> 1x1 conv -> ReLU -> 1x1 conv -> hardsigmoid -> multiply
  (torchvision's ``SqueezeExcitation``); ours: ``mnv3ext.ops.squeeze_excite_packed``, as
  FusedSqueezeExcite calls it, with the weights packed once by
  ``torch.ops.mnv3ext.pack_se_weights``; via_ops: ``torch.ops.mnv3ext.squeeze_excite_packed``.

Bytes moved (the roofline numerator) are the minimum a kernel must touch once: input read,
output written, weights and biases read, all float32. Depthwise: ``(N*C*H*W + N*C*Ho*Wo +
C*(k*k + 1)) * 4``; SE: ``(2*N*C*H*W + 2*S*C + S + C) * 4``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .. import ops, shapes
from ..nn.fold import fold_batchnorm

__all__ = ["OpCase", "LAYOUTS", "dw_case", "se_case", "all_cases", "case_id"]

LAYOUTS = ("nchw", "channels_last")
FLOAT = 4


@dataclass
class OpCase:
    kind: str  # "dw" or "se"
    layer: Union[shapes.DwLayer, shapes.SeLayer]
    layout: str  # "nchw" or "channels_last"
    eager: Callable[[], torch.Tensor]
    ours: Callable[[], torch.Tensor]
    via_ops: Callable[[], torch.Tensor]
    bytes_moved: int
    input_shape: tuple

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def id(self) -> str:
        return case_id(self.layer, self.layout)

    def max_abs_error(self) -> float:
        """Largest difference of ours from eager; ours and via_ops must agree bit for bit."""
        with torch.inference_mode():
            ours = self.ours()
            if not torch.equal(ours, self.via_ops()):
                raise AssertionError(f"{self.id}: the entry point and torch.ops disagree")
            return float((ours - self.eager()).abs().max())


def case_id(layer, layout: str) -> str:
    return f"{layer.name}-{'cl' if layout == 'channels_last' else 'nchw'}"


def _fmt(layout: str):
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def _act_inplace(name: str):
    if name == "relu":
        return lambda t: F.relu(t, inplace=True)
    if name == "hardswish":
        return lambda t: F.hardswish(t, inplace=True)
    if name == "relu6":
        return lambda t: F.relu6(t, inplace=True)
    if name == "none":
        return lambda t: t
    raise ValueError(f"activation: unknown {name!r}")


def dw_case(layer: shapes.DwLayer, layout: str, batch: int = 1, seed: int = 0) -> OpCase:
    g = torch.Generator().manual_seed(seed + layer.index)
    c, k, s, p = layer.channels, layer.kernel, layer.stride, layer.padding
    fmt = _fmt(layout)
    x = torch.randn(batch, c, layer.size, layer.size, generator=g).contiguous(memory_format=fmt)
    weight = (torch.randn(c, 1, k, k, generator=g) / k).contiguous(memory_format=fmt)
    bn = torch.nn.BatchNorm2d(c, eps=1e-3).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5, generator=g)
        bn.running_var.uniform_(0.5, 2.0, generator=g)
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.uniform_(-0.25, 0.25, generator=g)
    mean, var, gamma, beta, eps = bn.running_mean, bn.running_var, bn.weight.detach(), bn.bias.detach(), bn.eps
    act = _act_inplace(layer.activation)

    def eager() -> torch.Tensor:
        y = F.conv2d(x, weight, None, s, p, 1, c)
        y = F.batch_norm(y, mean, var, gamma, beta, False, 0.0, eps)
        return act(y)

    fw, fb = fold_batchnorm(weight.contiguous(), None, bn)
    packed = torch.ops.mnv3ext.pack_dwconv_weight(fw.contiguous(), fb.contiguous())
    entry, dwop = ops.dwconv2d_packed, torch.ops.mnv3ext.dwconv2d_packed.default
    params, a = ops.dwconv_params([k, k], [s, s], [p, p], [1, 1]), layer.activation

    def ours() -> torch.Tensor:  # as FusedDepthwiseConv2d calls it
        return entry(x, packed, params, a)

    def via_ops() -> torch.Tensor:
        return dwop(x, packed, params, a)

    o = layer.out_size
    moved = (batch * c * layer.size ** 2 + batch * c * o * o + c * (k * k + 1)) * FLOAT
    return OpCase("dw", layer, layout, eager, ours, via_ops, moved, tuple(x.shape))


def se_case(layer: shapes.SeLayer, layout: str, batch: int = 1, seed: int = 0) -> OpCase:
    g = torch.Generator().manual_seed(seed + 100 + layer.index)
    c, sq = layer.channels, layer.squeeze
    fmt = _fmt(layout)
    x = torch.randn(batch, c, layer.size, layer.size, generator=g).contiguous(memory_format=fmt)
    w1 = torch.randn(sq, c, 1, 1, generator=g) / c ** 0.5
    b1 = torch.rand(sq, generator=g) * 0.5 - 0.25
    w2 = torch.randn(c, sq, 1, 1, generator=g) / sq ** 0.5
    b2 = torch.rand(c, generator=g) * 0.5 - 0.25
    if layer.activation != "relu" or layer.gate != "hardsigmoid":  # not in MobileNetV3, but be exact
        raise ValueError(f"{layer.name}: the eager baseline implements relu/hardsigmoid only")

    def eager() -> torch.Tensor:
        t = F.adaptive_avg_pool2d(x, 1)
        t = F.conv2d(t, w1, b1)
        t = F.relu(t, inplace=True)
        t = F.conv2d(t, w2, b2)
        t = F.hardsigmoid(t, inplace=True)
        return t * x

    packed = torch.ops.mnv3ext.pack_se_weights(w1, b1, w2, b2)
    entry, seop = ops.squeeze_excite_packed, torch.ops.mnv3ext.squeeze_excite_packed.default

    def ours() -> torch.Tensor:  # as FusedSqueezeExcite calls it
        return entry(x, packed, sq, "relu", "hardsigmoid")

    def via_ops() -> torch.Tensor:
        return seop(x, packed, sq, "relu", "hardsigmoid")

    moved = (2 * batch * c * layer.size ** 2 + 2 * sq * c + sq + c) * FLOAT
    return OpCase("se", layer, layout, eager, ours, via_ops, moved, tuple(x.shape))


def all_cases(models: Sequence[str] = ("large", "small"), kinds: Sequence[str] = ("dw", "se"),
              layouts: Sequence[str] = LAYOUTS, batch: int = 1,
              match: Optional[str] = None) -> List[OpCase]:
    """Cases in shape-list order: per kind, per layer, per layout. ``match``: substring filter."""
    out: List[OpCase] = []
    for kind in kinds:
        layers = shapes.ALL_DW if kind == "dw" else shapes.ALL_SE
        make = dw_case if kind == "dw" else se_case
        for layer in layers:
            if layer.model not in models:
                continue
            for layout in layouts:
                if match and match not in case_id(layer, layout):
                    continue
                out.append(make(layer, layout, batch))
    return out
