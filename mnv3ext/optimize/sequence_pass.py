"""The last rewrite of ``optimize``: every run of consecutive mnv3ext layers (stem, blocks, 1x1
convolutions, pool, flatten, classifier), each feeding only the next, becomes one
``FusedSequence`` call (``torch.ops.mnv3ext.sequential``): one Python call and one op per model
instead of one per layer. The layers stay in the model; the sequence reads their packed weights
on every call.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import fx, nn

from .. import ops
from .._program import BLOCK, CONV, FLATTEN, LINEAR, POINTWISE, POOL, parse_program
from ..nn.block import FusedInvertedResidual
from ..nn.gemm import FusedConv2d, FusedLinear, FusedPointwiseConv2d, GlobalAvgPool
from ..nn.sequence import FusedSequence, no_module_hooks
from .summary import OptimizeSummary

__all__ = ["fuse_sequences"]

_CODES = ops._CODES
_IDENTITIES = (nn.Dropout, nn.Identity)


def _single_input(node: fx.Node) -> Optional[fx.Node]:
    if len(node.args) == 1 and not node.kwargs and isinstance(node.args[0], fx.Node):
        return node.args[0]
    return None


def _module_step(m: nn.Module) -> Optional[Tuple[List[int], Optional[str]]]:
    """(program steps, packed-weight attribute) of a module the sequence can run, else None.
    Exact types: subclasses (timm's "same" padding variants) compute their parameters per call."""
    if type(m) is FusedConv2d:
        return [CONV, m.out_channels, _CODES[m.activation], int(m.channels_last_output), *m.conv_params], \
            "packed_weight"
    if type(m) is FusedInvertedResidual and not m.same_padding:
        return [BLOCK, *m.config], "packed_weights"
    if type(m) is FusedPointwiseConv2d:
        return [POINTWISE, m.out_channels, _CODES[m.activation]], "packed_weight"
    if type(m) is GlobalAvgPool:
        return ([POOL] if m.keepdim else [POOL, FLATTEN]), None
    if type(m) is FusedLinear:
        return [LINEAR, m.out_channels, _CODES[m.activation]], "packed_weight"
    if isinstance(m, _IDENTITIES):
        return [], None
    return None


def _is_flatten_1(node: fx.Node) -> bool:
    """torch.flatten(x, 1) / x.flatten(1) (end_dim -1 allowed), positionally or by keyword."""
    flatten = ((node.op == "call_function" and node.target is torch.flatten)
               or (node.op == "call_method" and node.target == "flatten"))
    if not flatten or not set(node.kwargs) <= {"start_dim", "end_dim"}:
        return False
    return list(node.args[1:]) + list(node.kwargs.values()) in ([1], [1, -1])


def _step(gm: fx.GraphModule, node: fx.Node, previous_kind: Optional[int]):
    """(steps, packed-weight buffer name, input node) if ``node`` can join a sequence whose last step is
    ``previous_kind`` (None: it would start one), else None."""
    if node.op == "call_module":
        source = _single_input(node)
        found = _module_step(gm.get_submodule(node.target)) if source is not None else None
        if found is None:
            return None
        steps, attr = found
        # A linear step reads (N, features): only after a flatten or another linear is that sure.
        if steps and steps[0] == LINEAR and previous_kind not in (FLATTEN, LINEAR):
            return None
        if not steps and previous_kind is None:
            return None  # a sequence does not start with an identity
        return steps, attr, source
    if _is_flatten_1(node) and previous_kind == POOL:  # (N, C, 1, 1) -> (N, C)
        return [FLATTEN], None, node.args[0]
    return None


def fuse_sequences(gm: fx.GraphModule, summary: OptimizeSummary, prefix: str = "") -> None:
    """Replaces every run of two or more compute layers in ``gm``'s graph; ``prefix``: ``gm``'s
    name in the optimized model (for the summary)."""
    runs, current, last_kind = [], [], None
    for node in gm.graph.nodes:
        found = _step(gm, node, last_kind) if current else _step(gm, node, None)
        if current and (found is None or found[2] is not current[-1][0] or len(current[-1][0].users) != 1):
            runs.append(current)
            current, last_kind = [], None
            found = _step(gm, node, None)
        if found is not None:
            current.append((node, *found))
            if found[0]:
                last_kind = parse_program(found[0])[-1][0]
    if current:
        runs.append(current)
    for run in runs:
        _replace(gm, run, summary, prefix)
    gm.graph.lint()
    gm.recompile()
    _call_sequence_directly(gm)


def _call_sequence_directly(gm: fx.GraphModule) -> None:
    """When ``gm``'s whole forward is one sequence on its input (torchvision's and timm's
    classifiers), calling ``gm`` calls the sequence at once in plain eager mode, skipping
    GraphModule's call wrapper, Module.__call__ and the generated forward (~60 us per
    inference right after the kernels, when the interpreter's data is out of the caches).
    Installed on the graph module's own class (fx makes one per instance), only while its
    forward is the one compiled here: a later ``recompile`` replaces it."""
    nodes = list(gm.graph.nodes)
    cls = type(gm)
    if not (len(nodes) == 3 and [n.op for n in nodes] == ["placeholder", "call_module", "output"]
            and nodes[1].args == (nodes[0],) and not nodes[1].kwargs and nodes[2].args == (nodes[1],)
            and isinstance(gm.get_submodule(nodes[1].target), FusedSequence)
            and cls.__qualname__.split(".")[-1] == "GraphModuleImpl" and "_wrapped_call" in vars(cls)):
        return
    name, forward = str(nodes[1].target), cls.forward

    def __call__(self, *args, **kwargs):
        if not ops._unobserved():  # a compiler or tracer: Module.__call__, as fx's wrapper would call
            return super(cls, self).__call__(*args, **kwargs)
        if len(args) == 1 and not kwargs and type(self).forward is forward and no_module_hooks(self):
            sequence = self._modules.get(name)
            if type(sequence) is FusedSequence:
                return sequence(args[0])
        return self._wrapped_call(self, *args, **kwargs)

    cls.__call__ = __call__


def _replace(gm: fx.GraphModule, run, summary: OptimizeSummary, prefix: str) -> None:
    while run and not run[-1][1]:  # trailing identities stay as they are
        run = run[:-1]
    compute = [r for r in run if r[1] and r[0].op == "call_module"]  # layers, not flattens
    if len(compute) < 2:
        return
    program = [v for _, steps, _, _ in run for v in steps]
    layers = [str(node.target) for node, _, _, _ in compute]
    k = sum(1 for n, _ in gm.named_children() if n.startswith("mnv3ext_sequence"))
    name = "mnv3ext_sequence" + (str(k) if k else "")
    sources = [(gm.get_submodule(node.target), attr) for node, _, attr, _ in run if attr]
    gm.add_submodule(name, FusedSequence(program, layers, sources).train(gm.training))
    first, last = run[0][0], run[-1][0]
    with gm.graph.inserting_after(last):
        seq = gm.graph.call_module(name, (first.args[0],))  # as rewired by earlier runs
    last.replace_all_uses_with(seq)
    for node, _, _, _ in reversed(run):
        gm.graph.erase_node(node)
    p = f"{prefix}." if prefix else ""
    summary.sequences.append((p + name, f"{len(layers)} layers in one call: {p}{layers[0]} .. {p}{layers[-1]}"))
