"""``mnv3ext.optimize(model)``: a faster inference copy of any MobileNetV3-style model.

How it works:

1. Refuse what it cannot handle (training mode, quantized / QAT modules, non-float32).
2. Trace the model with ``torch.fx`` (convolutions, BatchNorms and Linear layers -- including
   subclasses such as timm's ``Conv2dSame`` / ``BatchNormAct2d`` -- are single nodes; user
   blocks and Sequentials are flattened, so a block split across containers still matches).
   Modules whose ``forward`` cannot be traced become opaque nodes and are optimized on their
   own (module-level fallback); if the root itself cannot be traced, its children are.
3. Rewrite the graph (``passes.py``): fold every BatchNorm that follows a convolution into it;
   fuse ``x * gate(fc2(act(fc1(mean_hw(x)))))`` into ``FusedSqueezeExcite``; fuse
   [zero pad] -> depthwise conv -> activation into ``FusedDepthwiseConv2d`` (weights packed
   once, here); route 1x1 convs (+ activation) through ``PointwiseConv2d``. Patterns are
   recognised by what the nodes compute, and every rewrite is checked on a probe input.
4. Optionally convert to channels_last (NHWC) weights and activations.
5. Run each chain of consecutive mnv3ext layers (stem, blocks, 1x1 convs, pool, classifier)
   as one ``torch.ops.mnv3ext.sequential`` call (``FusedSequence``; the layers keep their
   places and names, their packed weights are passed in).

The result is an ``fx.GraphModule`` (state_dict keys of untouched modules are unchanged) with
the report in ``model.mnv3ext_summary`` (``print`` it).
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import fx, nn

from ..nn.gemm import FusedConv2d
from .modules import PointwiseConv2d, SameFusedDepthwiseConv2d
from .passes import run_passes
from .sequence_pass import fuse_sequences
from .summary import OptimizeSummary
from .tracing import trace
from .validate import check_optimizable

__all__ = ["optimize", "OptimizeSummary", "DEFAULT_MEMORY_FORMAT", "PointwiseConv2d", "SameFusedDepthwiseConv2d"]

# Chosen by measurement (bench/bench_models.py; docs/performance.md): NHWC end to end is faster on CPU.
DEFAULT_MEMORY_FORMAT = torch.channels_last

_LEAF_ONLY = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)


def to_channels_last(x):
    """Graph input conversion inserted by ``optimize(memory_format=torch.channels_last)``."""
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


torch.fx.wrap("to_channels_last")


def _optimize_module(m: nn.Module, summary: OptimizeSummary, name: str) -> nn.Module:
    if isinstance(m, _LEAF_ONLY) or not any(True for _ in m.children()):
        return m
    traced = trace(m)
    graph = traced["graph"]
    if graph is None:
        summary.fallback.append((name or "<root>", f"{type(m).__name__}.forward is not traceable by torch.fx"))
        _optimize_children(m, summary, name)
        return m
    for node in graph.nodes:
        # ``from __future__ import annotations`` leaves string annotations, which fx would
        # emit as globals that break pickling of the GraphModule
        if not isinstance(node.type, type):
            node.type = None
    gm = fx.GraphModule(m, graph, class_name=type(m).__name__)
    leaves = sorted(traced["leaves"])
    top = [n for n in leaves if not any(n.startswith(o + ".") for o in leaves if o != n)]
    for leaf_name in top:
        full = f"{name}.{leaf_name}" if name else leaf_name
        summary.fallback.append((full, f"{type(m.get_submodule(leaf_name)).__name__}.forward is not "
                                       "traceable by torch.fx; kept as is, its children optimized"))
        try:
            leaf = gm.get_submodule(leaf_name)
        except AttributeError:
            continue  # never called
        _optimize_children(leaf, summary, full)
    sub = OptimizeSummary()
    run_passes(gm, sub)
    summary.merge(sub, name)
    gm.train(False)
    return gm


def _optimize_children(m: nn.Module, summary: OptimizeSummary, name: str) -> None:
    for child_name, child in list(m.named_children()):
        full = f"{name}.{child_name}" if name else child_name
        new = _optimize_module(child, summary, full)
        if new is not child:
            setattr(m, child_name, new)


def _insert_input_conversion(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if node.op != "placeholder" or not node.users:
            continue
        readers = [gm.get_submodule(u.target) if u.op == "call_module" else None for u in node.users]
        if all(isinstance(r, FusedConv2d) and u.args[0] is node and len(u.args) == 1
               for r, u in zip(readers, node.users)):
            # The stem reads any layout in place and writes channels_last itself: no conversion
            # (a torch copy whose OpenMP workers would then spin on the cores our kernels need).
            for r in readers:
                r.channels_last_output = True
            continue
        with gm.graph.inserting_after(node):
            conv = gm.graph.call_function(to_channels_last, (node,))
        node.replace_all_uses_with(conv, delete_user_cb=lambda u: u is not conv)
    gm.recompile()


def optimize(model: nn.Module, *, inplace: bool = False,
             memory_format: Optional[torch.memory_format] = None) -> nn.Module:
    """Return an inference model computing the same outputs as ``model``, faster on CPU.

    Args:
        model: a float32 model in eval mode.
        inplace: if False (default) ``model`` is deep-copied first and left untouched; if
            True its modules and weights are reused and modified (saves memory; do not use
            ``model`` afterwards).
        memory_format: ``torch.channels_last`` (NHWC weights and activations; the input is
            converted on entry) or ``torch.contiguous_format`` (NCHW, as given). ``None``
            picks ``DEFAULT_MEMORY_FORMAT`` (channels_last, the faster one measured).

    Returns the optimized module; ``result.mnv3ext_summary`` is an ``OptimizeSummary``
    listing what was fused, how many ops were removed and what was left alone, and why.

    Raises TypeError / RuntimeError for quantized or quantization-aware models, models in
    training mode and non-float32 models.
    """
    check_optimizable(model)
    if memory_format is None:
        memory_format = DEFAULT_MEMORY_FORMAT
    if memory_format not in (torch.channels_last, torch.contiguous_format):
        raise ValueError(f"memory_format: expected torch.channels_last or torch.contiguous_format, got {memory_format}")
    if not inplace:
        model = copy.deepcopy(model)
    summary = OptimizeSummary()
    with torch.no_grad():
        out = _optimize_module(model, summary, "")
        if memory_format == torch.channels_last:
            out = out.to(memory_format=torch.channels_last)
            if isinstance(out, fx.GraphModule):
                _insert_input_conversion(out)
        # Last: it reads the layers' final settings (the stem's channels_last_output above).
        for name, m in list(out.named_modules()):
            if isinstance(m, fx.GraphModule):
                fuse_sequences(m, summary, name)
    summary.memory_format = "channels_last" if memory_format == torch.channels_last else "contiguous (NCHW)"
    out.mnv3ext_summary = summary
    return out
