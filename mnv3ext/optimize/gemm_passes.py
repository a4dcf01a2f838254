"""Rewrites that put the rest of a MobileNetV3 on mnv3ext's GEMM kernels, after the depthwise, SE
and 1x1 passes (``passes.py``): dense convolutions (the stem), fully-connected layers (the
classifier), global average pools (the head), residual adds fused into the 1x1 convolution
before them, squeeze-excite gates folded into the 1x1 convolution after them, then whole
inverted-residual blocks into one op each; and the report of every compute layer left on PyTorch.
"""
from __future__ import annotations

import operator
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..nn.block import FusedInvertedResidual
from ..nn.fused import FusedDepthwiseConv2d, FusedSqueezeExcite
from ..nn.gemm import (GEMM_ACTIVATIONS, FusedConv2d, FusedLinear, FusedPointwiseConv2d, GlobalAvgPool,
                       SqueezeExciteGate)
from .modules import SameFusedConv2d, SameFusedDepthwiseConv2d
from .passes import _agrees, _commit, _describe, _install, _module_uses, _order_of, _scope, _single_user
from .patterns import classify_activation, conv_spec, linear_spec, module_of, pool_input, zero_pad_spec
from .summary import OptimizeSummary

__all__ = ["convert_dense_convs", "convert_linears", "convert_pools", "fuse_residual_adds",
           "fold_se_into_pointwise", "fuse_blocks", "report_left_on_pytorch"]


def find_activation(gm: fx.GraphModule, node: fx.Node, allowed):
    """(name, nodes) of the activation applied to ``node`` alone -- also a composite one that uses
    ``node`` twice, as ``x * relu6(x + 3) / 6`` does -- or None."""
    candidates, frontier = [], list(node.users)
    for _ in range(4):  # composite activations are at most 4 nodes deep
        candidates += frontier
        frontier = [u for n in frontier for u in n.users]
    for end in candidates:
        act = classify_activation(gm, end)
        if act is None or act[1] is not node or act[0] not in allowed:
            continue
        inside = set(act[2])
        if set(node.users) <= inside and all(set(n.users) <= inside for n in act[2][:-1]):
            return act[0], act[2]
    return None


def _take_activation(gm: fx.GraphModule, node: fx.Node):
    """(nodes, out, name) of the activation applied to ``node`` alone, if the GEMM epilogue has it."""
    found = find_activation(gm, node, GEMM_ACTIVATIONS)
    if found is None:
        return [], node, "none"
    return found[1], found[1][-1], found[0]


def remove_identities(gm: fx.GraphModule) -> None:
    """Calls of stock ``nn.Identity`` modules (timm's absent SE and drop_path) are dropped, so the
    patterns around them match."""
    for node in list(gm.graph.nodes):
        m = module_of(gm, node)
        if type(m) is nn.Identity and len(node.args) == 1 and not node.kwargs and isinstance(node.args[0], fx.Node):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)


def convert_dense_convs(gm: fx.GraphModule, summary: OptimizeSummary) -> None:
    """groups=1 convolutions left after the 1x1 pass (the stem) -> FusedConv2d (+ pad, + act)."""
    uses = _module_uses(gm.graph)
    for node in list(gm.graph.nodes):
        if node not in gm.graph.nodes:
            continue
        spec, _ = conv_spec(gm, node)
        if spec is None or spec.groups != 1:
            continue
        where = _describe(node)
        if max(spec.kernel_size) > 7:
            summary.unfused.append((where, "conv", f"kernel {spec.kernel_size} > 7"))
            continue
        if node.op == "call_module" and uses.get(node.target, 0) != 1:
            summary.unfused.append((where, "conv", "module called more than once"))
            continue
        nodes, inp, pads = [node], spec.input, spec.padding
        pad = zero_pad_spec(gm, inp)
        if pad is not None and pads != "tf_same" and len(inp.users) == 1:
            nodes.insert(0, inp)
            inp = pad[0]
            pads = [a + b for a, b in zip(pads, pad[1])]
        act_nodes, out, activation = _take_activation(gm, node)
        nodes += act_nodes
        if pads == "tf_same":
            new = SameFusedConv2d(spec.weight, spec.bias, spec.stride, spec.dilation, activation)
        else:
            new = FusedConv2d(spec.weight, spec.bias, spec.stride, pads, spec.dilation, activation)
        k = spec.kernel_size
        min_hw = max(spec.dilation[0] * (k[0] - 1), spec.dilation[1] * (k[1] - 1)) + 5
        ok, why = _agrees(gm, inp, nodes, out, new, spec.weight.shape[1], min_hw=min_hw)
        if not ok:
            summary.unfused.append((where, "conv", why))
            continue
        preferred = node.target if node.op == "call_module" else None
        target = _install(gm, preferred, f"{_scope(node) or 'conv'}_fused", new)
        _commit(gm, nodes, out, target, inp)
        summary.dense_conv.append((target, f"{spec.weight.shape[1]}->{spec.weight.shape[0]} k{k[0]}x{k[1]} "
                                           f"s{spec.stride[0]} +{activation}"))


@torch.no_grad()
def _linear_agrees(gm, inp, nodes, out, new, in_features: int):
    g = torch.Generator().manual_seed(3)
    probes = [torch.randn(2, in_features, generator=g), torch.randn(3, in_features, generator=g)]
    return _agrees(gm, inp, nodes, out, new, in_features, probes=probes)


def convert_linears(gm: fx.GraphModule, summary: OptimizeSummary) -> None:
    """nn.Linear / F.linear with constant weights (+ activation) -> FusedLinear."""
    uses = _module_uses(gm.graph)
    for node in list(gm.graph.nodes):
        if node not in gm.graph.nodes:
            continue
        spec = linear_spec(gm, node)
        if spec is None or spec[3] or spec[1].dim() != 2:
            continue
        if node.op == "call_module" and uses.get(node.target, 0) != 1:
            summary.unfused.append((_describe(node), "linear", "module called more than once"))
            continue
        inp, weight, bias, _ = spec
        act_nodes, out, activation = _take_activation(gm, node)
        new = FusedLinear(weight, bias, activation)
        ok, why = _linear_agrees(gm, inp, [node] + act_nodes, out, new, weight.shape[1])
        if not ok:
            summary.unfused.append((_describe(node), "linear", why))
            continue
        preferred = node.target if node.op == "call_module" else None
        target = _install(gm, preferred, f"{_scope(node) or 'linear'}_fused", new)
        _commit(gm, [node] + act_nodes, out, target, inp)
        summary.linear.append((target, f"{weight.shape[1]}->{weight.shape[0]} +{activation}"))


def convert_pools(gm: fx.GraphModule, summary: OptimizeSummary) -> None:
    """Global average pools (AdaptiveAvgPool2d(1), mean over H, W) -> GlobalAvgPool."""
    for node in list(gm.graph.nodes):
        if node not in gm.graph.nodes or isinstance(module_of(gm, node), GlobalAvgPool):
            continue
        found = pool_input(gm, node)
        if found is None:
            continue
        inp, keepdim = found
        new = GlobalAvgPool(keepdim)
        ok, why = _agrees(gm, inp, [node], node, new, 8, min_hw=3)
        if not ok:
            summary.unfused.append((_describe(node), "global average pool", why))
            continue
        preferred = node.target if node.op == "call_module" else None
        target = _install(gm, preferred, f"{_scope(node) or 'pool'}_fused", new)
        _commit(gm, [node], node, target, inp)
        summary.pooling.append((target, "keepdim" if keepdim else "flattened"))


_ADDS = (operator.add, operator.iadd, torch.add)


def _is_plain_add(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in _ADDS:
        return len(node.args) == 2 and not node.kwargs
    return node.op == "call_method" and node.target in ("add", "add_") and len(node.args) == 2 and not node.kwargs


def _pointwise_node(gm: fx.GraphModule, node) -> bool:
    return isinstance(node, fx.Node) and isinstance(module_of(gm, node), FusedPointwiseConv2d)


def fuse_residual_adds(gm: fx.GraphModule, summary: OptimizeSummary) -> None:
    """``pointwise(x) + r`` -> ``pointwise(x, residual=r)``: the add happens in the GEMM's epilogue.
    (A residual of another shape is added outside the kernel at run time, as PyTorch would.)"""
    order = _order_of(gm)
    for node in list(gm.graph.nodes):
        if node not in gm.graph.nodes or not _is_plain_add(node):
            continue
        for pw, other in (node.args, node.args[::-1]):
            if not _pointwise_node(gm, pw) or len(pw.users) != 1 or not isinstance(other, fx.Node):
                continue
            if len(pw.args) > 1 or pw.kwargs.get("residual") is not None or order(other) > order(pw):
                continue
            pw.kwargs = {**pw.kwargs, "residual": other}
            node.replace_all_uses_with(pw)
            gm.graph.erase_node(node)
            summary.residual_fused.append(str(pw.target))
            break


def fold_se_into_pointwise(gm: fx.GraphModule, summary: OptimizeSummary) -> None:
    """``pointwise(se(x))`` -> ``pointwise(x, input_scale=gate(x))``: the gated tensor is never written."""
    for node in list(gm.graph.nodes):
        se = module_of(gm, node)
        if type(se) is not FusedSqueezeExcite or len(node.users) != 1:
            continue
        pw = next(iter(node.users))
        if not _pointwise_node(gm, pw) or pw.args[0] is not node or node in pw.args[1:] \
                or node in pw.kwargs.values() or pw.kwargs.get("input_scale") is not None:
            continue
        gm.add_submodule(node.target, SqueezeExciteGate.from_fused(se))
        pw.args = (node.args[0],) + tuple(pw.args[1:])
        pw.kwargs = {**pw.kwargs, "input_scale": node}
        summary.se_folded.append((str(node.target), str(pw.target)))


# Modules and functions that compute something (as opposed to reshapes, dropout in eval, ...).
_COMPUTE_MODULES = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.ReLU, nn.ReLU6, nn.Hardswish,
                    nn.Hardsigmoid, nn.Sigmoid, nn.SiLU, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d)
_COMPUTE_FUNCTIONS = (F.conv2d, torch.conv2d, F.linear, F.relu, F.relu6, F.hardswish, F.hardsigmoid,
                      torch.sigmoid, F.adaptive_avg_pool2d, F.avg_pool2d, torch.mean, F.batch_norm)
_OURS = (FusedDepthwiseConv2d, FusedSqueezeExcite, FusedPointwiseConv2d, FusedConv2d, FusedLinear,
         GlobalAvgPool, FusedInvertedResidual)


def report_left_on_pytorch(gm: fx.GraphModule, summary: OptimizeSummary) -> None:
    """Every compute layer still run by PyTorch, with the reason recorded by the pass that left it
    (or that mnv3ext has no kernel for it)."""
    reasons = {where: f"{what}: {why}" for where, what, why in summary.unfused}
    for node in gm.graph.nodes:
        m = module_of(gm, node)
        if m is not None:
            if isinstance(m, _OURS) or not isinstance(m, _COMPUTE_MODULES):
                continue
        elif not (node.op == "call_function" and node.target in _COMPUTE_FUNCTIONS):
            continue
        where = _describe(node)
        summary.left_on_pytorch.append((where, reasons.get(where, "no mnv3ext kernel for this op here")))


def run_gemm_passes(gm: fx.GraphModule, summary: OptimizeSummary) -> None:
    remove_identities(gm)
    convert_dense_convs(gm, summary)
    convert_linears(gm, summary)
    convert_pools(gm, summary)
    fuse_residual_adds(gm, summary)
    fold_se_into_pointwise(gm, summary)
    fuse_blocks(gm, summary)
    gm.graph.lint()


# ---------------------------------------------------------------------------------------------
# whole inverted-residual blocks: [expand 1x1] -> depthwise -> [SE gate] -> project 1x1 (+ x)

def _match_block(gm: fx.GraphModule, project: fx.Node):
    """(nodes, input node, FusedInvertedResidual) for the block ending at ``project``, or None
    with a reason when the nodes look like a block that cannot be fused, or (None, None) when
    they are not a block at all."""
    p = module_of(gm, project)
    dw_node = project.args[0] if project.args else None
    dw = module_of(gm, dw_node) if isinstance(dw_node, fx.Node) else None
    if not isinstance(dw, FusedDepthwiseConv2d) or len(project.args) > 1:
        return None, None
    gate_node = project.kwargs.get("input_scale")
    gate = module_of(gm, gate_node) if isinstance(gate_node, fx.Node) else None
    if gate_node is not None and not (isinstance(gate, SqueezeExciteGate) and gate_node.args[0] is dw_node):
        return None, "the 1x1 convolution's input scale is not the depthwise output's SE gate"
    if set(dw_node.users) != ({project, gate_node} if gate is not None else {project}):
        return None, "the depthwise output is used outside the block"
    if dw.stride[0] != dw.stride[1] or dw.dilation[0] != dw.dilation[1]:
        return None, "different strides or dilations along H and W"
    nodes = [dw_node] + ([gate_node] if gate is not None else []) + [project]
    x = dw_node.args[0]
    expand_node = x if isinstance(x, fx.Node) and len(x.users) == 1 else None
    e = module_of(gm, expand_node) if expand_node is not None else None
    if isinstance(e, FusedPointwiseConv2d) and len(expand_node.args) == 1 and not expand_node.kwargs:
        nodes.insert(0, expand_node)
        x = expand_node.args[0]
    else:
        e = None
    residual = project.kwargs.get("residual")
    if residual is not None and residual is not x:
        return None, "the residual added is not the block's input"
    same = isinstance(dw, SameFusedDepthwiseConv2d)
    new = FusedInvertedResidual(
        dw_weight=dw.weight, dw_bias=dw.bias, stride=dw.stride[0], padding=[0, 0, 0, 0] if same else dw.padding,
        dilation=dw.dilation[0], dw_activation=dw.activation,
        expand_weight=e.weight if e is not None else None, expand_bias=e.bias if e is not None else None,
        expand_activation=e.activation if e is not None else "none",
        se_fc1_weight=gate.fc1_weight if gate is not None else None,
        se_fc1_bias=gate.fc1_bias if gate is not None else None,
        se_fc2_weight=gate.fc2_weight if gate is not None else None,
        se_fc2_bias=gate.fc2_bias if gate is not None else None,
        se_activation=gate.activation if gate is not None else "relu",
        se_gate=gate.gate if gate is not None else "hardsigmoid",
        project_weight=p.weight, project_bias=p.bias, project_activation=p.activation,
        residual=residual is not None, same_padding=same)
    return (nodes, x, new), None


def fuse_blocks(gm: fx.GraphModule, summary: OptimizeSummary) -> None:
    """Each [1x1 expand] -> depthwise -> [SE gate] -> 1x1 project (+ input) chain -> FusedInvertedResidual."""
    from .passes import _common_scope, _scope_exclusive, remove_dead_pure_nodes
    remove_dead_pure_nodes(gm)  # shape queries left by the SE fusion would look like other users
    for node in list(gm.graph.nodes):
        if node not in gm.graph.nodes or not _pointwise_node(gm, node):
            continue
        found, why = _match_block(gm, node)
        if found is None:
            if why is not None:
                summary.unfused.append((_describe(node), "inverted-residual block", why))
            continue
        nodes, x, new = found
        k = new.config[3:5]
        d = new.config[6]
        min_hw = d * (max(k) - 1) + 5
        ok, why = _agrees(gm, x, nodes, node, new, new.config[0], min_hw=min_hw)
        if not ok:
            summary.unfused.append((_describe(node), "inverted-residual block", why))
            continue
        scope = _common_scope(nodes)
        preferred = scope if scope and _scope_exclusive(gm, scope, nodes) else None
        target = _install(gm, preferred, f"{scope or 'block'}_fused", new)
        _commit(gm, nodes, node, target, x)
        summary.blocks.append((target, new.extra_repr()))
