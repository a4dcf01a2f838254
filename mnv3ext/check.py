"""``mnv3ext.check(model, example_input)``: is the optimized model right, layer by layer?

Optimizes ``model`` (or takes an already optimized one), runs the original and the optimized
model on ``example_input``, and reports

* per fused layer (depthwise, squeeze-excite or its gate, 1x1 conv with its residual and
  gate, stem conv, linear, global pool, inverted-residual block) the max absolute and
  relative error of the fused op against the plain-PyTorch reference op
  (``mnv3ext.reference``) computed in float64 on the *actual* activations reaching that layer
  in the optimized model, with the layer's (folded) weights. The layers of a ``FusedSequence``
  (one ``sequential`` call) are run one by one on the sequence's input for this, and the
  sequence itself gets a row: its output against those layers' composition;
* overall output agreement: max absolute / relative error per output tensor, and for
  classifier outputs (2-D ``(N, classes)``) the top-1 agreement.

Tolerances (``ok`` is True when all hold):

* every fused layer: ``max|fused - reference| <= LAYER_RTOL * max|reference|`` (1e-4);
* every output tensor: ``max|optimized - original| <= OUTPUT_RTOL * max|original|`` (1e-4);
* top-1 agreement on every sample, except where the original's top two logits are closer
  than ``OUTPUT_RTOL * max|logits|`` (a genuine tie that float32 rounding may break either way).

Relative errors are normalised by the largest magnitude of the reference, not element-wise,
because element-wise relative error is meaningless near zero crossings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import reference
from ._program import parse_program
from .nn.fused import FusedDepthwiseConv2d, FusedSqueezeExcite
from .optimize import optimize
from .nn.block import FusedInvertedResidual
from .nn.gemm import FusedConv2d, FusedLinear, FusedPointwiseConv2d, GlobalAvgPool, SqueezeExciteGate
from .nn.sequence import FusedSequence
from .optimize.modules import SameFusedConv2d, SameFusedDepthwiseConv2d, tf_same_pads

__all__ = ["check", "CheckReport", "LayerError", "OutputError", "LAYER_RTOL", "OUTPUT_RTOL"]

LAYER_RTOL = 1e-4
OUTPUT_RTOL = 1e-4


@dataclass
class LayerError:
    name: str
    kind: str
    shape: tuple
    max_abs: float
    max_rel: float
    calls: int = 1

    @property
    def ok(self) -> bool:
        return self.max_rel <= LAYER_RTOL


@dataclass
class OutputError:
    name: str
    shape: tuple
    max_abs: float
    max_rel: float
    top1_agreement: Optional[float] = None  # fraction of samples, classifier outputs only
    top1_ok: bool = True

    @property
    def ok(self) -> bool:
        return self.max_rel <= OUTPUT_RTOL and self.top1_ok


@dataclass
class CheckReport:
    layers: List[LayerError] = field(default_factory=list)
    outputs: List[OutputError] = field(default_factory=list)
    summary: Any = None  # the OptimizeSummary of the optimized model, if available

    @property
    def ok(self) -> bool:
        return all(layer.ok for layer in self.layers) and all(o.ok for o in self.outputs) and bool(self.outputs)

    @property
    def worst_layer(self) -> Optional[LayerError]:
        return max(self.layers, key=lambda l: l.max_rel, default=None)

    def __str__(self) -> str:
        lines = [f"mnv3ext.check: {'OK' if self.ok else 'FAILED'} "
                 f"(layer tol {LAYER_RTOL:g}, output tol {OUTPUT_RTOL:g}, relative to max |reference|)"]
        if self.layers:
            width = max(len(l.name) for l in self.layers)
            lines.append(f"  {'fused layer':<{width}}  {'kind':<14} {'max abs err':>11} {'max rel err':>11}")
            for l in self.layers:
                flag = "" if l.ok else "  <-- over tolerance"
                lines.append(f"  {l.name:<{width}}  {l.kind:<14} {l.max_abs:11.3e} {l.max_rel:11.3e}{flag}")
        else:
            lines.append("  no fused layers were run")
        for o in self.outputs:
            t = "" if o.top1_agreement is None else f", top-1 agreement {o.top1_agreement * 100:.1f}%"
            flag = "" if o.ok else "  <-- FAILED"
            lines.append(f"  output {o.name} {tuple(o.shape)}: max abs err {o.max_abs:.3e}, "
                         f"max rel err {o.max_rel:.3e}{t}{flag}")
        return "\n".join(lines)

    __repr__ = __str__


def _errors(got: torch.Tensor, ref: torch.Tensor):
    diff = (got.double() - ref.double()).abs().max().item() if got.numel() else 0.0
    scale = ref.double().abs().max().item() if ref.numel() else 0.0
    return diff, diff / scale if scale > 0 else diff


def _activation(x: torch.Tensor, name: str) -> torch.Tensor:
    return reference.apply_activation(name, x)


def _double(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.double()


@torch.no_grad()
def _reference_of(m: nn.Module, x: torch.Tensor, kwargs: dict) -> Optional[torch.Tensor]:
    x = x.double()
    if isinstance(m, FusedDepthwiseConv2d):
        pads = m.padding
        if isinstance(m, SameFusedDepthwiseConv2d):
            pads = tf_same_pads(x.shape[-2], x.shape[-1], m.kernel_size, m.stride, m.dilation)
        return reference.dwconv2d(x, m.weight.double(), m.bias.double(), m.stride, pads, m.dilation, m.activation)
    if isinstance(m, SqueezeExciteGate):
        pooled = x.mean((2, 3))
        hidden = _activation(F.linear(pooled, m.fc1_weight.double(), m.fc1_bias.double()), m.activation)
        return _activation(F.linear(hidden, m.fc2_weight.double(), m.fc2_bias.double()), m.gate)
    if isinstance(m, FusedSqueezeExcite):
        return reference.squeeze_excite(x, m.fc1_weight.double(), m.fc1_bias.double(), m.fc2_weight.double(),
                                        m.fc2_bias.double(), m.activation, m.gate)
    if isinstance(m, FusedPointwiseConv2d):
        return reference.pointwise_conv2d(x, m.weight.double(), m.bias.double(), m.activation,
                                          _double(kwargs.get("residual")), _double(kwargs.get("input_scale")))
    if isinstance(m, FusedConv2d):
        pads = m.padding
        if isinstance(m, SameFusedConv2d):
            pads = tf_same_pads(x.shape[-2], x.shape[-1], m.kernel_size, m.stride, m.dilation)
        top, left, bottom, right = pads
        y = F.conv2d(F.pad(x, (left, right, top, bottom)), m.weight.double(), m.bias.double(), m.stride, 0,
                     m.dilation)
        return _activation(y, m.activation)
    if isinstance(m, FusedLinear):
        return _activation(F.linear(x, m.weight.double(), m.bias.double()), m.activation)
    if isinstance(m, FusedInvertedResidual):
        config = m._same_config(x.shape[-2], x.shape[-1]) if m.same_padding else m.config
        # packed afresh from the module's weights: a corrupted packed tensor must not be its own reference
        return reference.inverted_residual(x, m._pack().double(), config)
    if isinstance(m, GlobalAvgPool):
        return x.mean((2, 3), keepdim=m.keepdim)
    return None


_KINDS = ((SameFusedDepthwiseConv2d, "depthwise(same)"), (FusedDepthwiseConv2d, "depthwise"),
          (SqueezeExciteGate, "SE gate"), (FusedSqueezeExcite, "squeeze-excite"),
          (FusedPointwiseConv2d, "1x1 conv"), (SameFusedConv2d, "conv(same)"), (FusedConv2d, "conv"),
          (FusedLinear, "linear"), (GlobalAvgPool, "global pool"), (FusedInvertedResidual, "block"),
          (FusedSequence, "sequence"))


def _replay(model: nn.Module, name: str, seq: FusedSequence, x: torch.Tensor) -> torch.Tensor:
    """The layers ``seq`` stands for, called one by one on its input (their own hooks fire)."""
    owner = name.rpartition(".")[0]
    layers = seq.layer_steps()
    for j in range(len(parse_program(seq.program))):
        if j in layers:
            x = model.get_submodule(f"{owner}.{layers[j]}" if owner else layers[j])(x)
        else:  # a flatten: (N, C, 1, 1) -> (N, C); after GlobalAvgPool(keepdim=False), already flat
            x = x.flatten(1)
    return x


def _flatten(out: Any, prefix: str = "") -> List[tuple]:
    if isinstance(out, torch.Tensor):
        return [(prefix or "output", out)]
    if isinstance(out, dict):
        return [t for k, v in out.items() for t in _flatten(v, f"{prefix}[{k!r}]")]
    if isinstance(out, (list, tuple)):
        return [t for i, v in enumerate(out) for t in _flatten(v, f"{prefix}[{i}]")]
    return []


def check(model: nn.Module, example_input: Any, *, optimized: Optional[nn.Module] = None,
          memory_format: Optional[torch.memory_format] = None) -> CheckReport:
    """Compare ``optimize(model)`` (or ``optimized``) with ``model`` on ``example_input``.

    ``example_input`` is a tensor or a tuple of positional arguments. ``model`` is not
    modified. Returns a :class:`CheckReport`; ``print`` it, test ``report.ok``.
    """
    if optimized is None:
        optimized = optimize(model, memory_format=memory_format)
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    layers: dict = {}
    handles = []

    def hook(name, kind):
        def fn(mod, inputs, kwargs, output):
            extra = dict(kwargs)
            if isinstance(mod, FusedPointwiseConv2d):  # residual / input_scale passed positionally
                extra.update(zip(("residual", "input_scale"), inputs[1:]))
            if isinstance(mod, FusedSequence):
                ref = _replay(optimized, name, mod, inputs[0])
            else:
                ref = _reference_of(mod, inputs[0], extra)
            if ref is None:
                return
            max_abs, max_rel = _errors(output, ref)
            prev = layers.get(name)
            if prev is None:
                layers[name] = LayerError(name, kind, tuple(inputs[0].shape), max_abs, max_rel)
            else:
                prev.max_abs, prev.max_rel = max(prev.max_abs, max_abs), max(prev.max_rel, max_rel)
                prev.calls += 1
        return fn

    for name, mod in optimized.named_modules():
        for cls, kind in _KINDS:
            if isinstance(mod, cls):
                handles.append(mod.register_forward_hook(hook(name, kind), with_kwargs=True))
                break
    try:
        with torch.no_grad():
            want = model(*args)
            got = optimized(*args)
    finally:
        for h in handles:
            h.remove()
    report = CheckReport(layers=list(layers.values()), summary=getattr(optimized, "mnv3ext_summary", None))
    got_flat = dict(_flatten(got))
    for name, ref in _flatten(want):
        out = got_flat.get(name)
        if out is None or out.shape != ref.shape:
            report.outputs.append(OutputError(name, tuple(ref.shape), float("inf"), float("inf"), None, False))
            continue
        max_abs, max_rel = _errors(out, ref)
        agreement, top1_ok = None, True
        if ref.dim() == 2 and ref.shape[1] > 1 and ref.is_floating_point():
            a, b = ref.argmax(1), out.argmax(1)
            agreement = (a == b).double().mean().item()
            tol = OUTPUT_RTOL * ref.abs().max().item()
            for i in torch.nonzero(a != b).flatten().tolist():
                if (ref[i, a[i]] - ref[i, b[i]]).item() > tol:
                    top1_ok = False
        report.outputs.append(OutputError(name, tuple(ref.shape), max_abs, max_rel, agreement, top1_ok))
    return report
