"""Structural recognisers on a ``torch.fx`` graph: convolutions, BatchNorms, activations, pools.

Everything here looks at what a node computes (module type *and* that its ``forward`` is the
stock one, or a probe of the module on a random input), never at class names, so that
torchvision-, timm- and hand-written models are all recognised.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import fx, nn

from .modules import tf_same_pads

__all__ = ["ConvSpec", "conv_spec", "bn_spec", "classify_activation", "pool_input", "linear_spec"]

Pads = Union[List[int], str]  # (top, left, bottom, right) or "tf_same"


def module_of(gm: fx.GraphModule, node: fx.Node) -> Optional[nn.Module]:
    if node.op != "call_module":
        return None
    try:
        return gm.get_submodule(node.target)
    except AttributeError:
        return None


def attr_of(gm: fx.GraphModule, node: Any) -> Optional[torch.Tensor]:
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    obj: Any = gm
    for part in node.target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, torch.Tensor) else None


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _pair(v) -> List[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def _const_ints(v) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)


def _stock_forward(m: nn.Module, base: type) -> bool:
    return type(m).forward is base.forward


# ---------------------------------------------------------------------------------------------
# convolutions

@dataclass
class ConvSpec:
    node: fx.Node
    input: fx.Node
    weight: torch.Tensor
    bias: Optional[torch.Tensor]
    stride: List[int]
    padding: Pads
    dilation: List[int]
    groups: int
    module: Optional[nn.Module] = None  # call_module convs
    extra: List[fx.Node] = field(default_factory=list)  # merged F.pad nodes

    @property
    def kernel_size(self) -> List[int]:
        return [int(self.weight.shape[2]), int(self.weight.shape[3])]

    @property
    def is_depthwise(self) -> bool:
        c = self.weight.shape[0]
        return self.weight.shape[1] == 1 and self.groups == c and c >= 1

    @property
    def is_pointwise(self) -> bool:
        return (self.kernel_size == [1, 1] and self.stride == [1, 1] and self.groups == 1
                and self.padding == [0, 0, 0, 0])


def _static_pads(padding, kernel, dilation) -> Optional[List[int]]:
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0, 0, 0]
        if padding == "same":
            before, after = [], []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                before.append(total // 2)
                after.append(total - total // 2)
            return [before[0], before[1], after[0], after[1]]
        return None
    ph, pw = _pair(padding)
    return [ph, pw, ph, pw]


@torch.no_grad()
def _probe_conv(m: nn.Conv2d) -> Tuple[Optional[Pads], str]:
    """How a Conv2d subclass with its own ``forward`` pads: its static padding, TF-"same", or unknown."""
    w, b = m.weight, m.bias
    k, s, d = list(w.shape[2:]), _pair(m.stride), _pair(m.dilation)
    static = _static_pads(m.padding, k, d)
    g = torch.Generator().manual_seed(0)
    matches_static = static is not None
    matches_same = True
    for dh, dw in ((6, 7), (7, 6)):
        h, wd = d[0] * (k[0] - 1) + dh, d[1] * (k[1] - 1) + dw
        x = torch.randn(2, w.shape[1] * m.groups, h, wd, generator=g)
        try:
            out = m(x)
        except Exception as exc:  # noqa: BLE001 - any failure means "unknown"
            return None, f"probe call failed: {type(exc).__name__}"
        if not isinstance(out, torch.Tensor):
            return None, "forward does not return a tensor"

        def ref(p):
            xp = F.pad(x, (p[1], p[3], p[0], p[2]))
            return F.conv2d(xp, w, b, s, 0, d, m.groups)

        if matches_static:
            r = ref(static)
            matches_static = r.shape == out.shape and torch.allclose(out, r, rtol=1e-4, atol=1e-5)
        if matches_same:
            r = ref(tf_same_pads(h, wd, k, s, d))
            matches_same = r.shape == out.shape and torch.allclose(out, r, rtol=1e-4, atol=1e-5)
    if matches_static:
        return static, ""
    if matches_same:
        return "tf_same", ""
    return None, f"{type(m).__name__}.forward computes something other than a zero-padded convolution"


def _conv_module_spec(gm, node, m: nn.Conv2d) -> Tuple[Optional[ConvSpec], str]:
    if m.padding_mode != "zeros":
        return None, f"padding_mode={m.padding_mode!r} (only zero padding is fused)"
    if len(node.args) != 1 or node.kwargs:
        return None, "called with extra arguments"
    k, d = list(m.weight.shape[2:]), _pair(m.dilation)
    if _stock_forward(m, nn.Conv2d) and type(m)._conv_forward is nn.Conv2d._conv_forward:
        pads = _static_pads(m.padding, k, d)
        why = ""
    else:
        pads, why = _probe_conv(m)
    if pads is None:
        return None, why or f"unsupported padding {m.padding!r}"
    return ConvSpec(node, node.args[0], m.weight, m.bias, _pair(m.stride), pads, d, int(m.groups), m), ""


_CONV_FNS = (F.conv2d, torch.conv2d)


def conv_spec(gm: fx.GraphModule, node: fx.Node) -> Tuple[Optional[ConvSpec], str]:
    """A 2-D convolution with constant weights, and why not if it is not one."""
    m = module_of(gm, node)
    if m is not None:
        if isinstance(m, nn.Conv2d):
            return _conv_module_spec(gm, node, m)
        return None, "not a convolution"
    if node.op == "call_function" and node.target in _CONV_FNS:
        weight = attr_of(gm, arg(node, 1, "weight"))
        bias_node = arg(node, 2, "bias")
        bias = attr_of(gm, bias_node)
        if weight is None or (bias_node is not None and bias is None):
            return None, "functional conv with non-constant weight or bias"
        if weight.dim() != 4:
            return None, "not a 2-D convolution"
        k = list(weight.shape[2:])
        stride, padding, dilation, groups = (arg(node, 3, "stride", 1), arg(node, 4, "padding", 0),
                                             arg(node, 5, "dilation", 1), arg(node, 6, "groups", 1))
        if isinstance(groups, fx.Node) and weight.shape[1] == 1:
            # groups=x.shape[1] with a (C, 1, kh, kw) weight: only valid as depthwise over C
            # (the rewrite is checked on a probe input before it is committed)
            groups = int(weight.shape[0])
        if not all(_const_ints(v) for v in (stride, padding, dilation, groups)) and not isinstance(padding, str):
            return None, "functional conv with non-constant hyperparameters"
        stride, dilation, groups = _pair(stride), _pair(dilation), int(groups)
        pads = _static_pads(padding, k, dilation)
        if pads is None:
            return None, "unsupported padding"
        return ConvSpec(node, node.args[0], weight, bias, stride, pads, dilation, groups), ""
    return None, "not a convolution"


def zero_pad_spec(gm: fx.GraphModule, node: Any) -> Optional[Tuple[fx.Node, List[int]]]:
    """``F.pad(x, (l, r, t, b))`` with constant zero, or ``nn.ZeroPad2d``/``ConstantPad2d(0)`` ->
    (x, [top, left, bottom, right])."""
    if not isinstance(node, fx.Node):
        return None
    pad = None
    if node.op == "call_function" and node.target in (F.pad, torch.nn.functional.pad):
        mode = arg(node, 2, "mode", "constant")
        value = arg(node, 3, "value", None)
        pad = arg(node, 1, "pad")
        if mode != "constant" or value not in (None, 0, 0.0):
            return None
    else:
        m = module_of(gm, node)
        if isinstance(m, nn.modules.padding._ConstantPadNd) and len(getattr(m, "padding", ())) == 4 \
                and type(m).forward is nn.modules.padding._ConstantPadNd.forward:
            if m.value != 0:
                return None
            pad = m.padding
    if pad is None or not isinstance(pad, (list, tuple)) or len(pad) != 4:
        return None
    if not all(isinstance(p, int) and p >= 0 for p in pad):
        return None
    left, right, top, bottom = pad
    return node.args[0], [top, left, bottom, right]


# ---------------------------------------------------------------------------------------------
# BatchNorm

@torch.no_grad()
def bn_spec(gm: fx.GraphModule, node: fx.Node) -> Tuple[Optional[Tuple[nn.Module, Optional[nn.Module]]], str]:
    """(bn, post) for a BatchNorm2d-like module: ``post`` is the module applied after the
    normalisation inside the BN's own forward (timm's BatchNormAct2d), or None."""
    m = module_of(gm, node)
    if not isinstance(m, nn.modules.batchnorm._BatchNorm):
        return None, "not a BatchNorm"
    if m.running_mean is None or m.running_var is None:
        return None, "BatchNorm without running statistics"
    if len(node.args) != 1 or node.kwargs:
        return None, "called with extra arguments"
    if _stock_forward(m, nn.BatchNorm2d) or type(m).forward is nn.modules.batchnorm._BatchNorm.forward:
        return (m, None), ""
    c = m.running_mean.shape[0]
    x = torch.randn(2, c, 3, 5, generator=torch.Generator().manual_seed(1)) * 2
    try:
        out = m(x)
    except Exception as exc:  # noqa: BLE001
        return None, f"probe call failed: {type(exc).__name__}"
    ref = F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        return None, f"{type(m).__name__}.forward does not return a BatchNorm-shaped tensor"
    if torch.allclose(out, ref, rtol=1e-5, atol=1e-5):
        return (m, None), ""
    for _, child in m.named_children():
        if isinstance(child, (nn.Dropout, nn.Identity)) or any(True for _ in child.parameters()):
            continue
        try:
            got = child(ref.clone())
        except Exception:  # noqa: BLE001
            continue
        if isinstance(got, torch.Tensor) and got.shape == out.shape and torch.allclose(out, got, rtol=1e-5, atol=1e-5):
            return (m, stock_equivalent(child) or child), ""
    return None, f"{type(m).__name__}.forward is not BatchNorm followed by one of its child modules"


# ---------------------------------------------------------------------------------------------
# activations

_STOCK = (nn.Identity, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid)


@torch.no_grad()
def stock_equivalent(m: nn.Module) -> Optional[nn.Module]:
    """A torch.nn activation computing the same as the parameter-free module ``m`` (probed on
    inputs spanning every kink of these functions), or None."""
    if any(True for _ in m.parameters()) or type(m) in _STOCK:
        return None
    x = torch.cat([torch.linspace(-8, 8, 321), torch.randn(199, generator=torch.Generator().manual_seed(3)) * 4])
    x = x.reshape(1, 520, 1, 1)
    try:
        got = m(x.clone())
    except Exception:  # noqa: BLE001
        return None
    if not isinstance(got, torch.Tensor) or got.shape != x.shape:
        return None
    for cls in _STOCK:
        cand = cls()
        if torch.allclose(got, cand(x.clone()), rtol=1e-5, atol=1e-6):
            return cand
    return None

_MODULE_ACTS = (
    (nn.ReLU, "relu"), (nn.ReLU6, "relu6"), (nn.Hardswish, "hardswish"), (nn.Hardsigmoid, "hardsigmoid"),
    (nn.Sigmoid, "sigmoid"), (nn.Identity, "none"),
)
_FN_ACTS = {
    F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu_: "relu",
    F.relu6: "relu6", F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid",
    torch.sigmoid: "sigmoid", torch.sigmoid_: "sigmoid", F.sigmoid: "sigmoid",
}
_METHOD_ACTS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid"}
_ADD = (operator.add, operator.iadd, torch.add)
_DIV = (operator.truediv, operator.itruediv, torch.div, torch.true_divide)
_MUL = (operator.mul, operator.imul, torch.mul)


def _is_num(v, value: float) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(float(v) - value) < 1e-12


def _relu6_input(gm, node) -> Optional[fx.Node]:
    """x for relu6(x) / hardtanh(x, 0, 6) / clamp(x, 0, 6) and their in-place forms."""
    if not isinstance(node, fx.Node):
        return None
    m = module_of(gm, node)
    if m is not None:
        if isinstance(m, nn.Hardtanh) and _stock_forward(m, nn.Hardtanh) and m.min_val == 0 and m.max_val == 6:
            return node.args[0]
        return None
    if node.op == "call_function":
        if node.target is F.relu6:
            return node.args[0]
        if node.target in (F.hardtanh, F.hardtanh_, torch.clamp, torch.clip, torch.clamp_):
            lo = arg(node, 1, "min_val" if node.target in (F.hardtanh, F.hardtanh_) else "min")
            hi = arg(node, 2, "max_val" if node.target in (F.hardtanh, F.hardtanh_) else "max")
            if node.target in (F.hardtanh, F.hardtanh_) and lo is None and hi is None:
                return None
            if _is_num(lo, 0) and _is_num(hi, 6):
                return node.args[0]
    if node.op == "call_method" and node.target in ("clamp", "clamp_", "clip", "clip_"):
        if _is_num(arg(node, 1, "min"), 0) and _is_num(arg(node, 2, "max"), 6):
            return node.args[0]
    return None


def _plus3_input(node) -> Optional[fx.Node]:
    if not isinstance(node, fx.Node):
        return None
    if (node.op == "call_function" and node.target in _ADD) or (node.op == "call_method" and node.target in ("add", "add_")):
        if len(node.args) == 2 and not node.kwargs:
            a, b = node.args
            if isinstance(a, fx.Node) and _is_num(b, 3):
                return a
            if isinstance(b, fx.Node) and _is_num(a, 3):
                return b
    return None


def _hardsigmoid_composite(gm, node) -> Optional[Tuple[fx.Node, List[fx.Node]]]:
    """relu6(x + 3) / 6 (timm's ``hard_sigmoid``), also as ``* (1/6)`` and in-place forms."""
    is_div = (node.op == "call_function" and node.target in _DIV) or (node.op == "call_method" and node.target in ("div", "div_"))
    is_mul = (node.op == "call_function" and node.target in _MUL) or (node.op == "call_method" and node.target in ("mul", "mul_"))
    if not (is_div or is_mul) or len(node.args) != 2 or node.kwargs:
        return None
    a, b = node.args
    if is_mul and isinstance(b, fx.Node):
        a, b = b, a
    if not isinstance(a, fx.Node) or not (_is_num(b, 6) if is_div else _is_num(b, 1 / 6)):
        return None
    inner = _relu6_input(gm, a)
    x = _plus3_input(inner)
    if x is None or len(a.users) != 1 or len(inner.users) != 1:
        return None
    return x, [inner, a, node]


def classify_activation(gm: fx.GraphModule, node: Any) -> Optional[Tuple[str, fx.Node, List[fx.Node]]]:
    """(name, input, nodes) if ``node`` is a pointwise activation of its input ``input``.

    name in relu, relu6, hardswish, hardsigmoid, sigmoid, none; ``nodes`` ends with ``node``
    and lists every node of a composite form (timm's ``hard_sigmoid``/``hard_swish``)."""
    if not isinstance(node, fx.Node):
        return None
    m = module_of(gm, node)
    if m is not None:
        for cls, name in _MODULE_ACTS:
            if isinstance(m, cls) and _stock_forward(m, cls) and len(node.args) == 1 and not node.kwargs:
                if name == "relu6" and not (m.min_val == 0 and m.max_val == 6):
                    return None
                return name, node.args[0], [node]
        if _relu6_input(gm, node) is not None:
            return "relu6", node.args[0], [node]
        return None
    if node.op == "call_function" and node.target in _FN_ACTS and isinstance(node.args[0], fx.Node):
        return _FN_ACTS[node.target], node.args[0], [node]
    if node.op == "call_method" and node.target in _METHOD_ACTS and len(node.args) == 1:
        return _METHOD_ACTS[node.target], node.args[0], [node]
    x = _relu6_input(gm, node)
    if x is not None:
        return "relu6", x, [node]
    hs = _hardsigmoid_composite(gm, node)
    if hs is not None:
        return "hardsigmoid", hs[0], hs[1]
    # hardswish: (x * relu6(x + 3)) / 6
    is_div = (node.op == "call_function" and node.target in _DIV) or (node.op == "call_method" and node.target in ("div", "div_"))
    if is_div and len(node.args) == 2 and _is_num(node.args[1], 6) and isinstance(node.args[0], fx.Node):
        prod = node.args[0]
        is_mul = (prod.op == "call_function" and prod.target in _MUL) or (prod.op == "call_method" and prod.target in ("mul", "mul_"))
        if is_mul and len(prod.args) == 2 and len(prod.users) == 1:
            for x, r in (prod.args, prod.args[::-1]):
                if isinstance(x, fx.Node) and isinstance(r, fx.Node) and len(r.users) == 1:
                    inner = _relu6_input(gm, r)
                    if inner is not None and len(inner.users) == 1 and _plus3_input(inner) is x:
                        return "hardswish", x, [inner, r, prod, node]
    # hardswish: x * hardsigmoid(x)
    if ((node.op == "call_function" and node.target in _MUL) or (node.op == "call_method" and node.target == "mul")) \
            and len(node.args) == 2 and not node.kwargs:
        for x, g in (node.args, node.args[::-1]):
            if not isinstance(x, fx.Node) or not isinstance(g, fx.Node) or len(g.users) != 1:
                continue
            inner = classify_activation(gm, g)
            if inner is not None and inner[0] == "hardsigmoid" and inner[1] is x:
                return "hardswish", x, inner[2] + [node]
    return None


# ---------------------------------------------------------------------------------------------
# global average pool and fully-connected layers (squeeze-excite)

def _is_hw_dims(dims) -> bool:
    if isinstance(dims, int) or not isinstance(dims, (list, tuple)) or len(dims) != 2:
        return False
    return sorted(d % 4 if isinstance(d, int) else -99 for d in dims) == [2, 3]


def pool_input(gm: fx.GraphModule, node: Any) -> Optional[Tuple[fx.Node, bool]]:
    """(x, keepdim) if ``node`` is a global average pool over H, W of a 4-D ``x``."""
    if not isinstance(node, fx.Node):
        return None
    m = module_of(gm, node)
    if m is not None:
        if isinstance(m, nn.AdaptiveAvgPool2d) and _stock_forward(m, nn.AdaptiveAvgPool2d) \
                and m.output_size in (1, (1, 1), [1, 1]):
            return node.args[0], True
        return None
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
        if arg(node, 1, "output_size") in (1, (1, 1), [1, 1]):
            return node.args[0], True
        return None
    if (node.op == "call_function" and node.target is torch.mean) or (node.op == "call_method" and node.target == "mean"):
        dims = arg(node, 1, "dim")
        keepdim = bool(arg(node, 2, "keepdim", False))
        if _is_hw_dims(dims) and node.kwargs.get("dtype") is None:
            return node.args[0], keepdim
    return None


def linear_spec(gm: fx.GraphModule, node: Any) -> Optional[Tuple[fx.Node, torch.Tensor, Optional[torch.Tensor], bool]]:
    """(input, weight (out, in), bias, is_conv) for a 1x1 conv or a fully-connected layer."""
    if not isinstance(node, fx.Node):
        return None
    m = module_of(gm, node)
    if isinstance(m, nn.Linear) and _stock_forward(m, nn.Linear) and len(node.args) == 1:
        return node.args[0], m.weight, m.bias, False
    if node.op == "call_function" and node.target is F.linear:
        w = attr_of(gm, arg(node, 1, "weight"))
        b_node = arg(node, 2, "bias")
        b = attr_of(gm, b_node)
        if w is not None and (b_node is None or b is not None):
            return node.args[0], w, b, False
        return None
    spec, _ = conv_spec(gm, node)
    if spec is not None and spec.kernel_size == [1, 1] and spec.groups == 1 and spec.padding == [0, 0, 0, 0] \
            and spec.stride == [1, 1]:
        return spec.input, spec.weight.flatten(1), spec.bias, True
    return None
