"""``torch.ops.mnv3ext.inverted_residual``: one MobileNetV3 block (1x1 expand -> depthwise ->
squeeze-excite -> 1x1 project + residual) per call, with its weights packed once into one tensor
(``pack_inverted_residual``) and its shape in a small integer ``config`` (``block_config``).
Registered on ``mnv3ext.ops``' library; documented in its module docstring.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from . import _C
from . import ops as _ops
from ._checks import (
    DW_ACTIVATIONS, MAX_KERNEL, SE_ACTIVATIONS, SE_GATES, _check_activation, _check_inference, _check_input,
    _check_int_values, _check_tensor, normalize_padding,
)

_lib = _ops._lib
_CODES = _ops._CODES
_NAMES = {v: k for k, v in _CODES.items()}

_lib.define("inverted_residual(Tensor input, Tensor packed_weights, int[] config) -> Tensor")
_lib.define(
    "pack_inverted_residual(Tensor? expand_weight, Tensor? expand_bias, Tensor dw_weight, Tensor? dw_bias, "
    "Tensor? se_fc1_weight, Tensor? se_fc1_bias, Tensor? se_fc2_weight, Tensor? se_fc2_bias, "
    "Tensor project_weight, Tensor? project_bias, int[] config) -> Tensor"
)

CONFIG_FIELDS = ("in_channels", "expanded_channels", "out_channels", "kernel_h", "kernel_w", "stride", "dilation",
                 "pad_top", "pad_left", "pad_bottom", "pad_right", "has_expand", "expand_activation",
                 "dw_activation", "se_squeeze", "se_activation", "se_gate", "has_residual", "project_activation")


def block_config(in_channels: int, expanded_channels: int, out_channels: int, kernel_size: Sequence[int],
                 stride: int = 1, padding: Sequence[int] = (0, 0), dilation: int = 1,
                 expand_activation: Optional[str] = "hardswish", dw_activation: str = "hardswish",
                 se_squeeze: int = 0, se_activation: str = "relu", se_gate: str = "hardsigmoid",
                 residual: bool = False, project_activation: str = "none") -> List[int]:
    """The ``config`` of ``inverted_residual``: 19 ints (``CONFIG_FIELDS``). ``expand_activation``
    None means the block has no expand conv (expansion 1); ``se_squeeze`` 0 means no SE; padding
    2 (symmetric) or 4 (top, left, bottom, right) values."""
    for name, act in (("dw_activation", dw_activation), ("project_activation", project_activation)):
        _check_activation(name, act, DW_ACTIVATIONS)
    if expand_activation is not None:
        _check_activation("expand_activation", expand_activation, DW_ACTIVATIONS)
    if se_squeeze:
        _check_activation("se_activation", se_activation, SE_ACTIVATIONS)
        _check_activation("se_gate", se_gate, SE_GATES)
    kh, kw = _check_int_values("kernel_size", list(kernel_size), 1)
    pads = normalize_padding(padding)
    return [int(in_channels), int(expanded_channels), int(out_channels), kh, kw, int(stride), int(dilation),
            *pads, int(expand_activation is not None), _CODES[expand_activation or "none"],
            _CODES[dw_activation], int(se_squeeze), _CODES[se_activation if se_squeeze else "relu"],
            _CODES[se_gate if se_squeeze else "hardsigmoid"], int(bool(residual)), _CODES[project_activation]]


def describe_config(config: Sequence[int]) -> dict:
    """``config`` as a dict of named fields (activations by name)."""
    d = dict(zip(CONFIG_FIELDS, config))
    for f in ("expand_activation", "dw_activation", "se_activation", "se_gate", "project_activation"):
        d[f] = _NAMES.get(d[f], d[f])
    return d


def _check_config(config) -> List[int]:
    try:
        values = list(config)
    except TypeError:
        raise TypeError(f"config: expected a list of {len(CONFIG_FIELDS)} ints (block_config), got "
                        f"{type(config).__name__}") from None
    if len(values) != len(CONFIG_FIELDS):
        raise ValueError(f"config: expected {len(CONFIG_FIELDS)} values (block_config), got {len(values)}")
    values = _check_int_values("config", values, 0)
    c = dict(zip(CONFIG_FIELDS, values))
    if max(c["kernel_h"], c["kernel_w"]) > MAX_KERNEL or min(c["kernel_h"], c["kernel_w"]) < 1:
        raise ValueError(f"config: kernel size must be between 1 and {MAX_KERNEL}, got {c['kernel_h']}x{c['kernel_w']}")
    try:
        _C.block_layout(values)  # every remaining rule, in one place (C++), errors name config
    except ValueError as e:
        raise ValueError(str(e)) from None
    return values


def _layout(config) -> dict:
    return _C.block_layout(list(config))


# ---------------------------------------------------------------------------------------------
# pack_inverted_residual

_PACK_ARGS = ("expand_weight", "expand_bias", "dw_weight", "dw_bias", "se_fc1_weight", "se_fc1_bias",
              "se_fc2_weight", "se_fc2_bias", "project_weight", "project_bias")


def _check_pack(tensors, config):
    config = _check_config(config)
    c = dict(zip(CONFIG_FIELDS, config))
    cin, e, cout, s = c["in_channels"], c["expanded_channels"], c["out_channels"], c["se_squeeze"]
    kh, kw = c["kernel_h"], c["kernel_w"]
    expected = {
        "expand_weight": ((e, cin, 1, 1), (e, cin)) if c["has_expand"] else None,
        "expand_bias": ((e,),) if c["has_expand"] else None,
        "dw_weight": ((e, 1, kh, kw),),
        "dw_bias": ((e,),),
        "se_fc1_weight": ((s, e), (s, e, 1, 1)) if s else None,
        "se_fc1_bias": ((s,),) if s else None,
        "se_fc2_weight": ((e, s), (e, s, 1, 1)) if s else None,
        "se_fc2_bias": ((e,),) if s else None,
        "project_weight": ((cout, e, 1, 1), (cout, e)),
        "project_bias": ((cout,),),
    }
    device = tensors[2].device if isinstance(tensors[2], torch.Tensor) else None
    for name, t in zip(_PACK_ARGS, tensors):
        shapes = expected[name]
        if t is None:
            if shapes is not None and not name.endswith("bias"):
                raise ValueError(f"{name}: required by config, got None")
            continue
        if shapes is None:
            raise ValueError(f"{name}: config has no such layer, expected None")
        _check_tensor(name, t, sorted({len(sh) for sh in shapes}), device)
        if tuple(t.shape) not in shapes:
            raise ValueError(f"{name}: expected shape {' or '.join(map(str, shapes))}, got {tuple(t.shape)}")
    return config


def _pack_cpu(expand_weight, expand_bias, dw_weight, dw_bias, se_fc1_weight, se_fc1_bias, se_fc2_weight,
              se_fc2_bias, project_weight, project_bias, config):
    config = _check_pack((expand_weight, expand_bias, dw_weight, dw_bias, se_fc1_weight, se_fc1_bias,
                          se_fc2_weight, se_fc2_bias, project_weight, project_bias), config)
    if dw_weight.device.type != "cpu":
        raise ValueError(f"dw_weight: mnv3ext ops run on CPU tensors, got device {dw_weight.device}")
    lay = _layout(config)
    packed = torch.zeros(lay["total"], dtype=torch.float32)
    ops = torch.ops.mnv3ext
    with torch.no_grad():
        if expand_weight is not None:
            p = ops.pack_gemm_weight(expand_weight, expand_bias)
            packed[lay["expand"]:lay["expand"] + p.numel()] = p
        p = ops.pack_dwconv_weight(dw_weight, dw_bias).reshape(-1)
        packed[lay["dw"]:lay["dw"] + p.numel()] = p
        for key, t in (("se_fc1", se_fc1_weight), ("se_b1", se_fc1_bias), ("se_fc2", se_fc2_weight),
                       ("se_b2", se_fc2_bias)):
            if t is not None:
                packed[lay[key]:lay[key] + t.numel()] = t.detach().reshape(-1)
        p = ops.pack_gemm_weight(project_weight, project_bias)
        packed[lay["project"]:lay["project"] + p.numel()] = p
    return packed


def _pack_fake(*args):
    return args[2].new_empty(_layout(_check_pack(args[:-1], args[-1]))["total"])  # args[2]: dw_weight


# ---------------------------------------------------------------------------------------------
# inverted_residual

_PLANS: dict = {}
_CL = torch.channels_last


def _check_block(input, packed_weights, config):
    _check_input(input)
    config = _check_config(config)
    if input.shape[1] != config[0]:
        raise ValueError(f"input: expected {config[0]} channels (config), got shape {tuple(input.shape)}")
    _check_tensor("packed_weights", packed_weights, (1,), input.device)
    total = _layout(config)["total"]
    if packed_weights.shape[0] != total:
        raise ValueError(f"packed_weights: expected {total} floats for this config (from pack_inverted_residual), "
                         f"got {packed_weights.shape[0]}")
    c = dict(zip(CONFIG_FIELDS, config))
    _, _, h, w = input.shape
    span_h = c["dilation"] * (c["kernel_h"] - 1) + 1
    span_w = c["dilation"] * (c["kernel_w"] - 1) + 1
    if h + c["pad_top"] + c["pad_bottom"] < span_h or w + c["pad_left"] + c["pad_right"] < span_w:
        raise ValueError("config: padded input is smaller than the dilated kernel; the output would be empty")
    out_h = (h + c["pad_top"] + c["pad_bottom"] - span_h) // c["stride"] + 1
    out_w = (w + c["pad_left"] + c["pad_right"] - span_w) // c["stride"] + 1
    if c["has_residual"] and (out_h, out_w) != (h, w):
        raise ValueError(f"config: a residual needs the output size to equal the input's, got {(out_h, out_w)} "
                         f"from {(h, w)}")
    return config, out_h, out_w


def _block_cpu(input, packed_weights, config):
    try:
        key = (input.shape, input.stride(), input.dtype, packed_weights.shape, packed_weights.stride(),
               packed_weights.dtype, tuple(config))
        entry = _PLANS.get(key)
    except (AttributeError, TypeError, RuntimeError):
        key, entry = None, None
    if entry is None:
        config, out_h, out_w = _check_block(input, packed_weights, config)
        n = input.shape[0]
        plan = _C.BlockPlan(config, n, input.shape[2], input.shape[3])
        if (plan.out_h, plan.out_w) != (out_h, out_w):
            raise AssertionError("mnv3ext: output size disagrees between Python and C++")
        size = (n, config[2], out_h, out_w)
        entry = (plan, size, _ops._output_strides(*size, True), _ops._is_channels_last(input))
        _ops._remember(_PLANS, key, entry)
    if torch.is_grad_enabled():
        _check_inference(input, packed_weights)
    plan, size, strides, channels_last = entry
    if not channels_last:  # the kernel reads NHWC: NCHW goes through a copy (and back)
        input = input.contiguous(memory_format=_CL)
    if not packed_weights.is_contiguous():
        packed_weights = packed_weights.contiguous()
    out = input.new_empty_strided(size, strides)
    if size[0]:
        plan.run(input.data_ptr(), packed_weights.data_ptr(), out.data_ptr(), torch.get_num_threads())
    return out if channels_last else out.clone(memory_format=torch.contiguous_format)


def _block_fake(input, packed_weights, config):
    config, out_h, out_w = _check_block(input, packed_weights, config)
    return _ops._empty_like_format(input, (input.shape[0], config[2], out_h, out_w), _ops._is_channels_last(input))


KERNELS = (
    ("pack_inverted_residual", _pack_cpu, _pack_fake),
    ("inverted_residual", _block_cpu, _block_fake),
)
_ops._register(KERNELS)

_BLOCK_OP = torch.ops.mnv3ext.inverted_residual.default


def inverted_residual(input, packed_weights, config):
    """``torch.ops.mnv3ext.inverted_residual``; in plain eager mode without the dispatcher round trip."""
    if _ops._unobserved() and _ops._plain(input) and _ops._plain(packed_weights):
        return _block_cpu(input, packed_weights, config)
    return _BLOCK_OP(input, packed_weights, config)
