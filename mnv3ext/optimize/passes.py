"""Rewrites on a traced ``fx.GraphModule``: fold BN, fuse squeeze-excite, fuse depthwise, 1x1 convs.

Each rewrite is checked before it is committed: the matched subgraph and the replacement
module are run on the same random input and must agree (so a structural match that computes
something else -- a reshape we misread, an odd module -- is left alone and reported).
"""
from __future__ import annotations

import operator
from typing import Dict, List, Optional, Tuple

import torch
from torch import fx, nn

from .. import ops
from ..nn.fold import fold_batchnorm
from ..nn.fused import FusedDepthwiseConv2d, FusedSqueezeExcite
from .modules import POINTWISE_ACTIVATIONS, PointwiseConv2d, SameFusedDepthwiseConv2d
from .patterns import (
    _MUL,
    arg,
    bn_spec,
    classify_activation,
    conv_spec,
    linear_spec,
    module_of,
    pool_input,
    zero_pad_spec,
)
from .summary import OptimizeSummary

__all__ = ["run_passes", "count_ops"]

_OPS = ("call_module", "call_function", "call_method")


def count_ops(graph: fx.Graph) -> int:
    return sum(1 for n in graph.nodes if n.op in _OPS)


def _module_uses(graph: fx.Graph) -> Dict[str, int]:
    uses: Dict[str, int] = {}
    for n in graph.nodes:
        if n.op == "call_module":
            uses[n.target] = uses.get(n.target, 0) + 1
    return uses


def _scope(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.keys())[-1] if stack else ""


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    name = getattr(node.target, "__name__", str(node.target))
    where = _scope(node)
    return f"{where}:{name}" if where else f"{name} ({node.name})"


def _unique_name(gm: fx.GraphModule, base: str) -> str:
    base = base.replace(".", "_") or "mnv3ext"
    name, i = base, 0
    while hasattr(gm, name):
        i += 1
        name = f"{base}_{i}"
    return name


def _install(gm: fx.GraphModule, preferred: Optional[str], base: str, module: nn.Module) -> str:
    """Put ``module`` at ``preferred`` (replacing the module there) or at a fresh name."""
    if preferred:
        gm.add_submodule(preferred, module)
        return preferred
    name = _unique_name(gm, base)
    gm.add_submodule(name, module)
    return name


# ---------------------------------------------------------------------------------------------
# verification by running the matched subgraph

def _subgraph_module(gm: fx.GraphModule, inp: fx.Node, nodes: List[fx.Node], out: fx.Node) -> fx.GraphModule:
    g = fx.Graph()
    env: Dict[fx.Node, fx.Node] = {inp: g.placeholder("x")}
    wanted = set(nodes)

    def lookup(n: fx.Node) -> fx.Node:
        if n not in env:
            if n.op == "get_attr":
                env[n] = g.get_attr(n.target)
            elif n in wanted:
                raise KeyError(n)
            else:  # a value derived from the input only (x.size() etc.) or an outside value
                for a in n.all_input_nodes:
                    lookup(a)
                env[n] = g.node_copy(n, lambda a: env[a])
        return env[n]

    for n in sorted(nodes, key=_order_of(gm)):
        for a in n.all_input_nodes:
            lookup(a)
        env[n] = g.node_copy(n, lambda a: env[a])
    g.output(env[out])
    return fx.GraphModule(gm, g)


def _order_of(gm: fx.GraphModule):
    index = {n: i for i, n in enumerate(gm.graph.nodes)}
    return lambda n: index[n]


@torch.no_grad()
def _agrees(gm: fx.GraphModule, inp: fx.Node, nodes: List[fx.Node], out: fx.Node, new: nn.Module,
            channels: int, min_hw: int = 9, probes: Optional[List[torch.Tensor]] = None) -> Tuple[bool, str]:
    try:
        sub = _subgraph_module(gm, inp, nodes, out).eval()
        new.eval()
    except Exception as exc:  # noqa: BLE001
        return False, f"could not isolate the matched subgraph ({type(exc).__name__})"
    g = torch.Generator().manual_seed(2)
    if probes is None:
        probes = [torch.randn(2, channels, h, w, generator=g)
                  for h, w in ((min_hw, min_hw + 2), (min_hw + 1, min_hw + 3))]
    for x in probes:
        try:
            ref = sub(x.clone())
            got = new(x.clone())
        except Exception as exc:  # noqa: BLE001
            return False, f"probe run failed: {type(exc).__name__}: {exc}"
        if not isinstance(ref, torch.Tensor) or ref.shape != got.shape:
            return False, "replacement changes the output shape"
        scale = ref.abs().max().clamp_min(1e-6)
        if ((ref - got).abs().max() / scale) > 1e-4:
            return False, "replacement does not reproduce the matched subgraph on a probe input"
    return True, ""


def _commit(gm: fx.GraphModule, nodes: List[fx.Node], out: fx.Node, target: str, inp: fx.Node) -> fx.Node:
    with gm.graph.inserting_after(out):
        new = gm.graph.call_module(target, (inp,))
    new.meta = dict(out.meta)
    out.replace_all_uses_with(new)
    for n in sorted(nodes, key=_order_of(gm), reverse=True):
        if not n.users:
            gm.graph.erase_node(n)
    return new


def _single_user(node: fx.Node) -> Optional[fx.Node]:
    return next(iter(node.users)) if len(node.users) == 1 else None


# ---------------------------------------------------------------------------------------------
# pass 1: fold BatchNorm into the preceding convolution (any conv: stem, 1x1, depthwise, SE)

@torch.no_grad()
def _set_param(owner: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(owner, name, None)
    rg = bool(old.requires_grad) if isinstance(old, torch.Tensor) else False
    setattr(owner, name, nn.Parameter(value.detach().clone(), requires_grad=rg))


def _attr_owner(gm: fx.GraphModule, target: str) -> Tuple[nn.Module, str]:
    *path, name = target.split(".")
    owner = gm.get_submodule(".".join(path)) if path else gm
    return owner, name


def fold_batchnorms(gm: fx.GraphModule, summary: OptimizeSummary) -> None:
    uses = _module_uses(gm.graph)
    for node in list(gm.graph.nodes):
        spec_bn, why_bn = bn_spec(gm, node)
        if spec_bn is None:
            if why_bn not in ("not a BatchNorm",):
                summary.unfused.append((_describe(node), "BatchNorm", why_bn))
            continue
        bn, post = spec_bn
        prev = node.args[0]
        if not isinstance(prev, fx.Node):
            continue
        conv, why = conv_spec(gm, prev)
        reason = None
        if conv is None:
            reason = "not directly after a convolution" if why == "not a convolution" else f"preceding conv: {why}"
        elif len(prev.users) != 1:
            reason = "the convolution's output is also used elsewhere"
        elif uses.get(node.target, 0) != 1 or (prev.op == "call_module" and uses.get(prev.target, 0) != 1):
            reason = "module called more than once"
        elif conv.weight.shape[0] != bn.running_mean.shape[0]:
            reason = "channel count mismatch"
        if reason is not None:
            summary.unfused.append((_describe(node), "BatchNorm", reason))
            continue
        weight, bias = fold_batchnorm(conv.weight, conv.bias, bn)
        if conv.module is not None:
            _set_param(conv.module, "weight", weight)
            _set_param(conv.module, "bias", bias)
        else:  # functional conv on get_attr tensors
            w_node = arg(prev, 1, "weight")
            owner, name = _attr_owner(gm, w_node.target)
            if len(w_node.users) != 1:
                summary.unfused.append((_describe(node), "BatchNorm", "conv weight shared"))
                continue
            _set_param(owner, name, weight)
            b_node = arg(prev, 2, "bias")
            if b_node is not None and len(b_node.users) == 1:
                b_owner, b_name = _attr_owner(gm, b_node.target)
                _set_param(b_owner, b_name, bias)
            else:
                b_name = _unique_name(gm, f"{w_node.target}_folded_bias")
                gm.register_parameter(b_name, nn.Parameter(bias, requires_grad=False))
                with gm.graph.inserting_before(prev):
                    b_node = gm.graph.get_attr(b_name)
                args = list(prev.args) + [None] * max(0, 3 - len(prev.args))
                args[2] = b_node
                prev.args = tuple(args)
                prev.kwargs = {k: v for k, v in prev.kwargs.items() if k != "bias"}
        summary.folded_batchnorm.append(str(node.target))
        if post is None:
            node.replace_all_uses_with(prev)
            gm.graph.erase_node(node)
        else:  # the BN subclass applied an activation itself: keep only that
            gm.add_submodule(node.target, post)


# ---------------------------------------------------------------------------------------------
# pass 2: squeeze-excite  x * gate(fc2(act(fc1(mean_hw(x)))))

_RESHAPE_METHODS = ("view", "reshape", "unsqueeze", "expand_as", "expand", "flatten", "squeeze", "view_as")


def _is_reshape(node: fx.Node) -> bool:
    if node.op == "call_method" and node.target in _RESHAPE_METHODS:
        return True
    if node.op == "call_function" and node.target in (torch.flatten, torch.reshape, torch.unsqueeze, torch.squeeze):
        return True
    if node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[0], fx.Node):
        return isinstance(node.args[1], tuple)  # [:, :, None, None]
    return False


def _strip_reshapes(node: fx.Node, chain: List[fx.Node]) -> fx.Node:
    while isinstance(node, fx.Node) and _is_reshape(node) and len(node.users) == 1:
        chain.append(node)
        node = node.args[0]
    return node


def _match_se(gm: fx.GraphModule, mul: fx.Node, x: fx.Node, s: fx.Node):
    nodes: List[fx.Node] = []
    if not isinstance(s, fx.Node) or len(s.users) != 1:
        return None
    s = _strip_reshapes(s, nodes)
    gate = classify_activation(gm, s)
    if gate is None or gate[0] not in ops.SE_GATES:
        return None
    nodes += gate[2]
    fc2_out = _strip_reshapes(gate[1], nodes)
    fc2 = linear_spec(gm, fc2_out)
    if fc2 is None or len(fc2_out.users) != 1:
        return None
    nodes.append(fc2_out)
    act_out = _strip_reshapes(fc2[0], nodes)
    act = classify_activation(gm, act_out)
    if act is None or act[0] not in ops.SE_ACTIVATIONS or len(act_out.users) != 1:
        return None
    nodes += act[2]
    fc1_out = _strip_reshapes(act[1], nodes)
    fc1 = linear_spec(gm, fc1_out)
    if fc1 is None or len(fc1_out.users) != 1:
        return None
    nodes.append(fc1_out)
    pool_out = _strip_reshapes(fc1[0], nodes)
    pool = pool_input(gm, pool_out)
    if pool is None or pool[0] is not x or len(pool_out.users) != 1:
        return None
    nodes.append(pool_out)
    nodes.append(mul)
    # inner nodes must not be used outside the pattern
    inner = set(nodes)
    for n in nodes:
        if n is not mul and any(u not in inner for u in n.users):
            return None
    w1, b1, w2, b2 = fc1[1], fc1[2], fc2[1], fc2[2]
    if w1.dim() != 2 or w2.dim() != 2 or w2.shape[1] != w1.shape[0] or w2.shape[0] != w1.shape[1]:
        return None
    return nodes, (w1, b1, w2, b2, act[0], gate[0])


def fuse_squeeze_excite(gm: fx.GraphModule, summary: OptimizeSummary) -> None:
    for node in list(gm.graph.nodes):
        if node.graph is None or node not in gm.graph.nodes:
            continue
        is_mul = (node.op == "call_function" and node.target in _MUL) or (node.op == "call_method" and node.target == "mul")
        if not is_mul or len(node.args) != 2 or node.kwargs:
            continue
        for x, s in (node.args, node.args[::-1]):
            if not isinstance(x, fx.Node):
                continue
            found = _match_se(gm, node, x, s)
            if found is None:
                continue
            nodes, (w1, b1, w2, b2, act, gate) = found
            new = FusedSqueezeExcite(w1, b1, w2, b2, act, gate)
            ok, why = _agrees(gm, x, nodes, node, new, w1.shape[1], min_hw=3)
            scope = _common_scope(nodes)
            if not ok:
                summary.unfused.append((scope or _describe(node), "squeeze-excite", why))
                break
            preferred = scope if scope and _scope_exclusive(gm, scope, nodes) else None
            target = _install(gm, preferred, f"{scope or 'se'}_fused", new)
            _commit(gm, nodes, node, target, x)
            summary.fused_se.append((target, f"{act}/{gate}, {w1.shape[1]}->{w1.shape[0]} channels"))
            break
    # leftover SE-looking pools: global pools feeding a fully-connected layer, not fused
    for node in gm.graph.nodes:
        pool = pool_input(gm, node)
        if pool is None:
            continue
        users = list(node.users)
        if any(linear_spec(gm, u) is not None and linear_spec(gm, u)[3] for u in users) and len(pool[0].users) > 1:
            summary.unfused.append((_describe(node), "squeeze-excite",
                                    "global pool -> 1x1 conv not in the supported form "
                                    f"x * {{{'|'.join(ops.SE_GATES)}}}(fc2({{{'|'.join(ops.SE_ACTIVATIONS)}}}(fc1(pool(x)))))"))


def _common_scope(nodes: List[fx.Node]) -> str:
    scopes = [list((n.meta.get("nn_module_stack") or {}).keys()) for n in nodes]
    common: List[str] = []
    for level in zip(*scopes):
        if all(s == level[0] for s in level):
            common.append(level[0])
        else:
            break
    return common[-1] if common else ""


def _scope_exclusive(gm: fx.GraphModule, scope: str, nodes: List[fx.Node]) -> bool:
    inside = set(nodes)
    for n in gm.graph.nodes:
        if n in inside:
            continue
        if scope in (n.meta.get("nn_module_stack") or {}):
            return False
        if n.op in ("call_module", "get_attr") and (n.target == scope or n.target.startswith(scope + ".")):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# pass 3: depthwise conv (+ folded BN as bias) (+ preceding zero pad) + activation

def fuse_depthwise(gm: fx.GraphModule, summary: OptimizeSummary) -> None:
    uses = _module_uses(gm.graph)
    for node in list(gm.graph.nodes):
        if node not in gm.graph.nodes:
            continue
        spec, why_conv = conv_spec(gm, node)
        if spec is None:
            m = module_of(gm, node)
            if isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels and m.groups > 1:
                summary.unfused.append((_describe(node), "depthwise conv", why_conv))
            continue
        if not spec.is_depthwise:
            continue
        where = _describe(node)
        if max(spec.kernel_size) > ops.MAX_KERNEL:
            summary.unfused.append((where, "depthwise conv", f"kernel {spec.kernel_size} > {ops.MAX_KERNEL}"))
            continue
        if node.op == "call_module" and uses.get(node.target, 0) != 1:
            summary.unfused.append((where, "depthwise conv", "module called more than once"))
            continue
        nodes = [node]
        inp = spec.input
        pads = spec.padding
        pad = zero_pad_spec(gm, inp)
        if pad is not None and pads != "tf_same" and len(inp.users) == 1:
            nodes.insert(0, inp)
            inp = pad[0]
            pads = [a + b for a, b in zip(pads, pad[1])]
        out, activation = node, "none"
        user = _single_user(node)
        act = classify_activation(gm, user) if user is not None else None
        if act is not None and act[1] is node and act[0] in ops.DW_ACTIVATIONS \
                and all(len(n.users) == 1 for n in act[2][:-1]):
            nodes += act[2]
            out, activation = act[2][-1], act[0]
        if pads == "tf_same":
            new = SameFusedDepthwiseConv2d(spec.weight, spec.bias, spec.stride, spec.dilation, activation)
        else:
            new = FusedDepthwiseConv2d(spec.weight, spec.bias, spec.stride, pads, spec.dilation, activation)
        k = spec.kernel_size
        min_hw = max(spec.dilation[0] * (k[0] - 1), spec.dilation[1] * (k[1] - 1)) + 5
        ok, why = _agrees(gm, inp, nodes, out, new, spec.weight.shape[0], min_hw=min_hw)
        if not ok:
            summary.unfused.append((where, "depthwise conv", why))
            continue
        preferred = node.target if node.op == "call_module" else None
        target = _install(gm, preferred, f"{_scope(node) or 'dw'}_fused", new)
        _commit(gm, nodes, out, target, inp)
        pad_txt = "same(tf)" if pads == "tf_same" else pads
        summary.fused_depthwise.append(
            (target, f"{spec.weight.shape[0]}ch k{k[0]}x{k[1]} s{spec.stride[0]} pad{pad_txt} +{activation}"))


# ---------------------------------------------------------------------------------------------
# pass 4: 1x1 convolutions (+ activation) -> PointwiseConv2d

def reroute_pointwise(gm: fx.GraphModule, summary: OptimizeSummary) -> None:
    uses = _module_uses(gm.graph)
    for node in list(gm.graph.nodes):
        if node not in gm.graph.nodes or node.op != "call_module":
            continue
        m = module_of(gm, node)
        if type(m) is not nn.Conv2d or uses.get(node.target, 0) != 1:
            continue
        spec, _ = conv_spec(gm, node)
        if spec is None or not spec.is_pointwise:
            continue
        from .gemm_passes import find_activation
        nodes, out, activation = [node], node, "none"
        act = find_activation(gm, node, POINTWISE_ACTIVATIONS)
        if act is not None:
            nodes += act[1]
            out, activation = act[1][-1], act[0]
        new = PointwiseConv2d(spec.weight, spec.bias, activation)
        ok, why = _agrees(gm, spec.input, nodes, out, new, spec.weight.shape[1], min_hw=2)
        if not ok:
            summary.unfused.append((_describe(node), "1x1 conv", why))
            continue
        _install(gm, node.target, "", new)
        _commit(gm, nodes, out, node.target, spec.input)
        summary.pointwise.append((node.target, f"{spec.weight.shape[1]}->{spec.weight.shape[0]} +{activation}"))


_PURE_FUNCTIONS = (operator.getitem, getattr, len)
_PURE_METHODS = ("size", "dim")


def remove_dead_pure_nodes(gm: fx.GraphModule) -> None:
    """Erase unused nodes that cannot have side effects (shape queries left behind by a
    fused pattern, get_attr of folded-away tensors); never in-place ops or module calls."""
    changed = True
    while changed:
        changed = False
        for n in reversed(list(gm.graph.nodes)):
            if n.users:
                continue
            pure = (n.op == "get_attr"
                    or (n.op == "call_function" and n.target in _PURE_FUNCTIONS)
                    or (n.op == "call_method" and n.target in _PURE_METHODS))
            if pure:
                gm.graph.erase_node(n)
                changed = True


def run_passes(gm: fx.GraphModule, summary: OptimizeSummary, pointwise: bool = True) -> fx.GraphModule:
    summary.ops_before += count_ops(gm.graph)
    fold_batchnorms(gm, summary)
    fuse_squeeze_excite(gm, summary)
    fuse_depthwise(gm, summary)
    if pointwise:
        from .gemm_passes import report_left_on_pytorch, run_gemm_passes
        reroute_pointwise(gm, summary)
        run_gemm_passes(gm, summary)
    remove_dead_pure_nodes(gm)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    summary.ops_after += count_ops(gm.graph)
    if pointwise:
        report_left_on_pytorch(gm, summary)
    return gm
