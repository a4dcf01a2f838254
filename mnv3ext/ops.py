"""Custom torch ops ``torch.ops.mnv3ext.*``: schemas, CPU kernels calling ``mnv3ext._C``, fake kernels.

Ops (all inference-only, float32, CPU; none modifies its inputs):

``dwconv2d(input, weight, bias, stride, padding, dilation, activation)``
    Depthwise conv (weight ``(C, 1, kh, kw)`` as ``nn.Conv2d(C, C, k, groups=C).weight``) + per-channel
    bias (a folded BatchNorm) + activation, one pass over the data. ``padding`` is 2 values
    (symmetric, as ``nn.Conv2d``) or 4 values ``(top, left, bottom, right)`` as ONNX ``pads``.
``pack_dwconv_weight(weight, bias)`` / ``dwconv2d_packed(input, packed_weight, conv_params, activation)``
    The same op with weights packed once ahead of time (the fused modules pack at optimize time).
    The packed layout is ISA-independent: ``(1 + kh*kw, round_up(C, 16))`` rows of [bias | taps].
    ``conv_params`` is one list, ``dwconv_params(kernel_size, stride, padding, dilation)`` =
    ``[kh, kw, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, dilation_h,
    dilation_w]``: every list argument costs the dispatcher about 1.5 us per call, and this op
    is the one models call once per layer.
``squeeze_excite(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, activation, gate)``
    ``input * gate(fc2(act(fc1(mean_hw(input)))))``; fc weights ``(S, C)``/``(C, S)``, optionally with
    trailing ``1, 1`` dims (straight from a 1x1 ``Conv2d``) — or from an ``nn.Linear``.
``pack_se_weights(fc1_weight, fc1_bias, fc2_weight, fc2_bias)`` / ``squeeze_excite_packed(input,
    packed_weights, squeeze, activation, gate)``
    The same op with its four weight tensors packed once into one (what FusedSqueezeExcite calls):
    per call one tensor to check instead of four. 1-D, sections [fc1 weight (S*C) | fc1 bias (S) |
    fc2 weight (C*S) | fc2 bias (C)], each starting at a multiple of 16 floats (64 bytes); a
    missing bias is packed as zeros.

``pack_gemm_weight(weight, bias)``
    Packs a 1x1 conv ``(C_out, C_in, 1, 1)``, a dense conv ``(C_out, C_in, kh, kw)`` or a Linear
    ``(out, in)`` weight (+ bias) once for the GEMM ops below: 1-D, ``ceil(C_out / 16)`` panels of
    ``[bias (16) | K rows of 16 weights]`` (K = C_in * kh * kw), padding lanes zero;
    ISA-independent. Length ``packed_gemm_numel(K, C_out)``.
``pointwise_conv2d(input, weight, bias, activation, residual, input_scale)``
    1x1 convolution as a GEMM on NHWC pixels, with the epilogue fused: ``act(conv(input *
    input_scale[:, :, None, None]) + bias) + residual``. ``weight`` ``(C_out, C_in, 1, 1)`` or
    ``(C_out, C_in)``; ``residual`` ``(N, C_out, H, W)`` or None (the projection of an inverted
    residual block); ``input_scale`` ``(N, C_in)`` or None (a squeeze-excite gate folded in, so the
    gated tensor is never written); ``activation`` none, relu, relu6 or hardswish.
    channels_last is the fast path; NCHW goes through a channels_last copy.
``pointwise_conv2d_packed(input, packed_weight, out_channels, activation, residual, input_scale)``
    The same with the weight packed once (what the optimized modules call).
``conv2d_packed(input, packed_weight, out_channels, conv_params, activation, channels_last_output=False)``
    Dense convolution (groups 1; the stem) + bias + activation: windows inside the image read in
    place, im2col for the border; reads the input through its strides (no layout copy), and with
    ``channels_last_output`` gives a channels_last output whatever the input's format (the stem
    of an optimized model takes the user's NCHW image as it is). ``conv_params`` as for
    ``dwconv2d_packed``; ``packed_weight`` is ``pack_gemm_weight(weight.permute(0, 2, 3, 1))``
    of a ``(C_out, C_in, kh, kw)`` weight: its taps in NHWC order, ``k = (ky * kw + kx) * C_in + c``.
``linear_packed(input, packed_weight, out_features, activation)``
    ``act(input @ W.T + b)`` over the last dimension (the classifier's Linear layers).
``global_avg_pool(input)``
    ``(N, C, H, W) -> (N, C, 1, 1)`` mean over the pixels, as ``nn.AdaptiveAvgPool2d(1)``.
``se_gate_packed(input, packed_weights, squeeze, activation, gate)``
    The squeeze-excite gate ``gate(fc2(act(fc1(mean_hw(input)))))`` as an ``(N, C)`` tensor,
    without the multiply (``pointwise_conv2d_packed``'s ``input_scale`` applies it).
``block_config(in_channels, expanded_channels, out_channels, kernel_size, stride, padding, dilation,
    expand_activation, dw_activation, se_squeeze, se_activation, se_gate, residual, project_activation)``
    The ``config`` of an inverted-residual block: 19 ints (``CONFIG_FIELDS``); ``expand_activation``
    None = no expand conv (expansion 1), ``se_squeeze`` 0 = no squeeze-excite.
``pack_inverted_residual(expand_weight, expand_bias, dw_weight, dw_bias, se_fc1_weight, se_fc1_bias,
    se_fc2_weight, se_fc2_bias, project_weight, project_bias, config)``
    A block's weights (BatchNorms folded) packed once into one ISA-independent 1-D tensor:
    [expand (as pack_gemm_weight) | depthwise (as pack_dwconv_weight) | SE fc1, b1, fc2, b2 |
    project (as pack_gemm_weight)], each section starting on 16 floats; absent layers take no room.
``inverted_residual(input, packed_weights, config)``
    A whole MobileNetV3 block in one call: ``project(se(dw(expand(x)))) (+ x)``. Output rows are
    computed in bands that keep the expanded tensor in cache (it never exists in full); with SE,
    one image's depthwise output is kept (L2-sized), then the gate is folded into the projection.
``sequential(input, weights, program)``
    A chain of the packed ops above (conv, block, pointwise without residual/scale, pool,
    flatten, linear) in one call, each step reading the previous step's output: what a whole
    optimized MobileNetV3 runs. Same results as the ops one by one; ``program`` is a flat int
    list of steps (format in ``mnv3ext._program``), ``weights`` one packed tensor per step that
    takes one. The intermediates live in per-thread buffers reused across calls.

Outputs keep the input's memory format (channels_last in, channels_last out); inputs in any other
stride layout are made contiguous first.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _C
from ._checks import (  # noqa: F401  (constants and public helpers re-exported as this module's API)
    DW_ACTIVATIONS, MAX_KERNEL, SE_ACTIVATIONS, SE_GATES, _check_activation, _check_dw_geometry,
    _check_dw_weight, _check_inference, _check_input, _check_ints, _check_se, _check_se_biases,
    _check_tensor, _se_weight_2d, _split_params, dwconv_output_size, dwconv_params, normalize_padding,
)

__all__ = [
    "CONFIG_FIELDS",
    "block_config",
    "conv2d_packed",
    "describe_config",
    "global_avg_pool",
    "inverted_residual",
    "linear_packed",
    "packed_gemm_numel",
    "pointwise_conv2d",
    "pointwise_conv2d_packed",
    "se_gate_packed",
    "sequential",
    "DW_ACTIVATIONS",
    "SE_ACTIVATIONS",
    "SE_GATES",
    "dwconv_output_size",
    "dwconv_params",
    "normalize_padding",
]

_CODES = dict(_C.ACTIVATION_CODES)
_ALIGN = int(_C.CHANNEL_ALIGN)

_lib = torch.library.Library("mnv3ext", "DEF")
_lib.define(
    "dwconv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[] padding, "
    "int[2] dilation, str activation) -> Tensor"
)
_lib.define("pack_dwconv_weight(Tensor weight, Tensor? bias) -> Tensor")
_lib.define(
    "dwconv2d_packed(Tensor input, Tensor packed_weight, int[] conv_params, str activation) -> Tensor"
)
_lib.define(
    "squeeze_excite(Tensor input, Tensor fc1_weight, Tensor? fc1_bias, Tensor fc2_weight, "
    "Tensor? fc2_bias, str activation, str gate) -> Tensor"
)
_lib.define("pack_se_weights(Tensor fc1_weight, Tensor? fc1_bias, Tensor fc2_weight, Tensor? fc2_bias) -> Tensor")
_lib.define(
    "squeeze_excite_packed(Tensor input, Tensor packed_weights, int squeeze, str activation, str gate) -> Tensor"
)


def _strides_like_channels_last(t: torch.Tensor) -> bool:
    """PyTorch's reading of a 4-d tensor's strides (c10's is_channels_last_strides_2d), which
    decides e.g. F.conv2d's output format when the input is dense in both formats; except that an
    empty batch with channels_last strides stays channels_last (PyTorch reads any empty tensor
    as NCHW, so channels_last in would give NCHW out)."""
    sizes, strides = t.shape, t.stride()
    if strides[1] == 0:
        return False
    smallest = 0
    for d in (1, 3, 2, 0):
        if (sizes[d] == 0 and d != 0) or strides[d] < smallest:  # an empty batch keeps its format
            return False
        if d == 0 and smallest == strides[1]:  # N111 and sliced N11W tensors: NCHW
            return False
        smallest = strides[d] * (sizes[d] if sizes[d] > 1 else 1)
    return True


def _is_channels_last(t: torch.Tensor) -> bool:
    # A tensor dense in both formats (C == 1 or H == W == 1) is read as PyTorch reads it, so the
    # output's format is the one F.conv2d would give.
    if not t.is_contiguous(memory_format=torch.channels_last):
        return False
    return not t.is_contiguous() or _strides_like_channels_last(t)


def _empty_like_format(input: torch.Tensor, shape, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=fmt)


# Per distinct call signature (shapes, strides, dtypes and static arguments): a validated plan,
# so repeated calls (a model's layers) pay for validation once. Bounded.
_DW_PLANS: dict = {}
_SE_PLANS: dict = {}
_CACHE_LIMIT = 4096


def _remember(cache: dict, key, value) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def _tensor_key(t: Optional[torch.Tensor]):
    # The dispatcher passes None through for a required Tensor: it must reach the full validation
    # (TypeError naming the argument), not fail building the cache key.
    return None if t is None else (t.shape, t.stride(), t.dtype)


def _output_strides(n: int, c: int, h: int, w: int, channels_last: bool):
    return (c * h * w, 1, w * c, c) if channels_last else (c * h * w, h * w, w, 1)


def _ptr(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


# ---------------------------------------------------------------------------------------------
# dwconv2d / pack_dwconv_weight / dwconv2d_packed

def _round_up(n: int) -> int:
    """n rounded up to whole 64-byte lines of floats (the packed layouts' alignment)."""
    return -(-n // _ALIGN) * _ALIGN


def _packed_shape(channels: int, kernel_h: int, kernel_w: int):
    return (1 + kernel_h * kernel_w, _round_up(channels))


def _check_packed(input, packed, kernel_size):
    _check_tensor("packed_weight", packed, (2,), input.device)
    kernel_size = _check_ints("kernel_size", kernel_size, 2, 1)
    expected = _packed_shape(input.shape[1], kernel_size[0], kernel_size[1])
    if tuple(packed.shape) != expected:
        raise ValueError(
            f"packed_weight: expected shape {expected} for {input.shape[1]} channels and kernel "
            f"{kernel_size} (from pack_dwconv_weight), got {tuple(packed.shape)}"
        )
    return kernel_size


def _check_pack_args(weight, bias):
    """Validates pack_dwconv_weight's arguments (CPU and fake alike); returns (C, kh, kw)."""
    _check_tensor("weight", weight, (4,))
    channels, kh, kw = weight.shape[0], weight.shape[2], weight.shape[3]
    if weight.shape[1] != 1:
        raise ValueError(f"weight: expected shape (C, 1, kh, kw), got {tuple(weight.shape)}")
    if channels < 1 or not (1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL):
        raise ValueError(f"weight: expected C >= 1 and kernel sizes 1..{MAX_KERNEL}, got {tuple(weight.shape)}")
    if bias is not None:
        _check_tensor("bias", bias, (1,), weight.device)
        if bias.shape[0] != channels:
            raise ValueError(f"bias: expected shape ({channels},), got {tuple(bias.shape)}")
    return channels, kh, kw


def _pack_validated(weight, bias, channels, kh, kw):
    bias = None if bias is None else bias.detach().contiguous()
    weight = weight.detach().contiguous()
    packed = torch.empty(_packed_shape(channels, kh, kw), dtype=torch.float32)
    _C.pack_dwconv_ptr(weight.data_ptr(), _ptr(bias), channels, kh, kw, packed.data_ptr())
    return packed


def _pack_cpu(weight, bias):
    channels, kh, kw = _check_pack_args(weight, bias)
    if weight.device.type != "cpu":
        raise ValueError(f"weight: mnv3ext ops run on CPU tensors, got device {weight.device}")
    return _pack_validated(weight, bias, channels, kh, kw)


def _pack_fake(weight, bias):
    return weight.new_empty(_packed_shape(*_check_pack_args(weight, bias)))


def _dw_plan(input, kernel_size, stride, pads, dilation, out_h, out_w, activation):
    """(plan, output size, output strides, input needs .contiguous()) for a validated call."""
    channels_last = _is_channels_last(input)
    n, c, h, w = input.shape
    plan = _C.DwConvPlan(
        n, c, h, w, kernel_size[0], kernel_size[1], stride[0], stride[1], dilation[0], dilation[1],
        pads[0], pads[1], pads[2], pads[3], _CODES[activation], channels_last,
    )
    if (plan.out_h, plan.out_w) != (out_h, out_w):
        raise AssertionError("mnv3ext: output size disagrees between Python and C++")
    dense = channels_last or input.is_contiguous()
    return plan, (n, c, out_h, out_w), _output_strides(n, c, out_h, out_w, channels_last), not dense


def _dwconv2d_cpu(input, weight, bias, stride, padding, dilation, activation):
    _check_input(input)
    kernel_size = _check_dw_weight(input, weight, bias)
    _check_dw_geometry(input, kernel_size, stride, padding, dilation, activation)
    _check_inference(input, weight, bias)
    packed = _pack_validated(weight, bias, input.shape[1], kernel_size[0], kernel_size[1])
    return _dwconv2d_packed_cpu(input, packed, dwconv_params(kernel_size, stride, padding, dilation),
                                activation)


def _dw_fake_output(input, kernel_size, stride, padding, dilation, activation):
    _, _, _, out_h, out_w = _check_dw_geometry(input, kernel_size, stride, padding, dilation, activation)
    return _empty_like_format(input, (input.shape[0], input.shape[1], out_h, out_w), _is_channels_last(input))


def _dwconv2d_fake(input, weight, bias, stride, padding, dilation, activation):
    _check_input(input)
    kernel_size = _check_dw_weight(input, weight, bias)
    return _dw_fake_output(input, kernel_size, stride, padding, dilation, activation)


def _dwconv2d_packed_cpu(input, packed_weight, conv_params, activation):
    # The fused modules call this once per layer per inference: full validation runs once per
    # distinct signature, later calls check only what the key cannot (grad). Written out flat:
    # this is the per-layer hot path, every Python call in it costs ~0.1 us.
    try:
        # An integral float (1.0) equal to a cached int hits that int's plan and gives its result;
        # telling them apart here would cost ~0.4 us per call (torch.ops refuses floats).
        key = (input.shape, input.stride(), input.dtype, packed_weight.shape, packed_weight.stride(),
               packed_weight.dtype, tuple(conv_params), activation)
        entry = _DW_PLANS.get(key)
    except (AttributeError, TypeError, RuntimeError):  # not dense tensors / not a list: the full
        key, entry = None, None                          # checks below say which argument
    if entry is None:
        _check_input(input)
        kernel_size, stride, padding, dilation = _split_params(conv_params)
        _check_packed(input, packed_weight, kernel_size)
        stride, pads, dilation, out_h, out_w = _check_dw_geometry(
            input, kernel_size, stride, padding, dilation, activation)
        entry = _dw_plan(input, kernel_size, stride, pads, dilation, out_h, out_w, activation)
        entry = entry + (not packed_weight.is_contiguous(),)
        _remember(_DW_PLANS, key, entry)
    if torch.is_grad_enabled():
        _check_inference(input, packed_weight)
    plan, size, strides, input_copy, packed_copy = entry
    if input_copy:
        input = input.contiguous()
    if packed_copy:
        packed_weight = packed_weight.contiguous()
    out = input.new_empty_strided(size, strides)  # float32 CPU (validated); ~0.4 us cheaper than torch.empty_strided
    if size[0]:
        plan.run(input.data_ptr(), packed_weight.data_ptr(), out.data_ptr(), torch.get_num_threads())
    return out


def _dwconv2d_packed_fake(input, packed_weight, conv_params, activation):
    _check_input(input)
    kernel_size, stride, padding, dilation = _split_params(conv_params)
    _check_packed(input, packed_weight, kernel_size)
    return _dw_fake_output(input, kernel_size, stride, padding, dilation, activation)


# ---------------------------------------------------------------------------------------------
# squeeze_excite

def _se_input_plan(input, squeeze, activation, gate):
    """(plan, output size, output strides, input needs .contiguous()) for a validated SE call."""
    channels_last = _is_channels_last(input)
    n, c, h, w = input.shape
    plan = _C.SePlan(n, c, h * w, squeeze, _CODES[activation], _CODES[gate], channels_last)
    return (plan, (n, c, h, w), _output_strides(n, c, h, w, channels_last),
            not (channels_last or input.is_contiguous()))


def _se_plan(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, activation, gate):
    squeeze = _check_se(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, activation, gate)
    plan, size, strides, input_copy = _se_input_plan(input, squeeze, activation, gate)
    # Which of input, fc1_weight, fc1_bias, fc2_weight, fc2_bias need .contiguous() first.
    copies = (input_copy,) + tuple(t is not None and not t.is_contiguous()
                                   for t in (fc1_weight, fc1_bias, fc2_weight, fc2_bias))
    return plan, size, strides, any(copies), copies


def _squeeze_excite_cpu(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, activation, gate):
    try:  # flat: the per-layer hot path (see _dwconv2d_packed_cpu)
        key = (input.shape, input.stride(), input.dtype, fc1_weight.shape, fc1_weight.stride(),
               fc1_weight.dtype, _tensor_key(fc1_bias), fc2_weight.shape, fc2_weight.stride(),
               fc2_weight.dtype, _tensor_key(fc2_bias), activation, gate)
        entry = _SE_PLANS.get(key)
    except (AttributeError, TypeError, RuntimeError):  # not dense tensors: the full checks say which
        key, entry = None, None
    if entry is None:
        entry = _se_plan(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, activation, gate)
        _remember(_SE_PLANS, key, entry)
    if torch.is_grad_enabled():
        _check_inference(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    plan, size, strides, any_copy, copies = entry
    if any_copy:
        input, fc1_weight, fc1_bias, fc2_weight, fc2_bias = (
            t.contiguous() if copy else t
            for t, copy in zip((input, fc1_weight, fc1_bias, fc2_weight, fc2_bias), copies))
    out = input.new_empty_strided(size, strides)  # float32 CPU (validated); ~0.4 us cheaper than torch.empty_strided
    if size[0]:
        plan.run(input.data_ptr(), fc1_weight.data_ptr(), 0 if fc1_bias is None else fc1_bias.data_ptr(),
                 fc2_weight.data_ptr(), 0 if fc2_bias is None else fc2_bias.data_ptr(), out.data_ptr(),
                 torch.get_num_threads())
    return out


def _squeeze_excite_fake(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, activation, gate):
    _check_se(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, activation, gate)
    return _empty_like_format(input, tuple(input.shape), _is_channels_last(input))


# ---------------------------------------------------------------------------------------------
# pack_se_weights / squeeze_excite_packed

def _se_sections(channels: int, squeeze: int):
    """Float offsets of [fc1 weight | fc1 bias | fc2 weight | fc2 bias] and the total length."""
    b1 = _round_up(squeeze * channels)
    w2 = b1 + _round_up(squeeze)
    b2 = w2 + _round_up(channels * squeeze)
    return (0, b1, w2, b2), b2 + _round_up(channels)


def _check_pack_se(fc1_weight, fc1_bias, fc2_weight, fc2_bias):
    """Validates pack_se_weights' arguments (CPU and fake alike); returns (C, S)."""
    s1, c1 = _se_weight_2d("fc1_weight", fc1_weight, "S, C")
    c2, s2 = _se_weight_2d("fc2_weight", fc2_weight, "C, S")
    if s1 < 1 or c1 < 1:
        raise ValueError(f"fc1_weight: expected S >= 1 and C >= 1, got {tuple(fc1_weight.shape)}")
    if (c2, s2) != (c1, s1):
        raise ValueError(f"fc2_weight: expected shape ({c1}, {s1}) to match fc1_weight, got {tuple(fc2_weight.shape)}")
    _check_se_biases(fc1_bias, fc2_bias, s1, c1, fc1_weight.device)
    if fc2_weight.device != fc1_weight.device:
        raise ValueError(f"fc2_weight: expected device {fc1_weight.device} (same as fc1_weight), got {fc2_weight.device}")
    return c1, s1


def _pack_se_cpu(fc1_weight, fc1_bias, fc2_weight, fc2_bias):
    channels, squeeze = _check_pack_se(fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    if fc1_weight.device.type != "cpu":
        raise ValueError(f"fc1_weight: mnv3ext ops run on CPU tensors, got device {fc1_weight.device}")
    offsets, total = _se_sections(channels, squeeze)
    packed = torch.zeros(total, dtype=torch.float32)
    for offset, t in zip(offsets, (fc1_weight, fc1_bias, fc2_weight, fc2_bias)):
        if t is not None:
            packed[offset:offset + t.numel()] = t.detach().reshape(-1)
    return packed


def _pack_se_fake(fc1_weight, fc1_bias, fc2_weight, fc2_bias):
    return fc1_weight.new_empty(_se_sections(*_check_pack_se(fc1_weight, fc1_bias, fc2_weight, fc2_bias))[1])


def _check_se_packed(input, packed_weights, squeeze, activation, gate):
    _check_input(input)
    _check_tensor("packed_weights", packed_weights, (1,), input.device)
    if not isinstance(squeeze, int) or squeeze < 1:
        raise ValueError(f"squeeze: expected an int >= 1, got {squeeze!r}")
    offsets, total = _se_sections(input.shape[1], squeeze)
    if packed_weights.shape[0] != total:
        raise ValueError(
            f"packed_weights: expected {total} floats for {input.shape[1]} channels and squeeze "
            f"{squeeze} (from pack_se_weights), got {packed_weights.shape[0]}")
    _check_activation("activation", activation, SE_ACTIVATIONS)
    _check_activation("gate", gate, SE_GATES)
    return offsets


def _squeeze_excite_packed_cpu(input, packed_weights, squeeze, activation, gate):
    try:  # flat: the per-layer hot path (see _dwconv2d_packed_cpu)
        key = (input.shape, input.stride(), input.dtype, packed_weights.shape, packed_weights.stride(),
               packed_weights.dtype, squeeze, activation, gate)
        entry = _SE_PLANS.get(key)
    except (AttributeError, TypeError, RuntimeError):  # not dense tensors: the full checks say which
        key, entry = None, None
    if entry is None:
        offsets = _check_se_packed(input, packed_weights, squeeze, activation, gate)
        entry = _se_input_plan(input, squeeze, activation, gate) + (
            not packed_weights.is_contiguous(), tuple(4 * o for o in offsets))
        _remember(_SE_PLANS, key, entry)
    if torch.is_grad_enabled():
        _check_inference(input, packed_weights)
    plan, size, strides, input_copy, packed_copy, (_, b1, w2, b2) = entry
    if input_copy:
        input = input.contiguous()
    if packed_copy:
        packed_weights = packed_weights.contiguous()
    out = input.new_empty_strided(size, strides)
    if size[0]:
        base = packed_weights.data_ptr()
        plan.run(input.data_ptr(), base, base + b1, base + w2, base + b2, out.data_ptr(),
                 torch.get_num_threads())
    return out


def _squeeze_excite_packed_fake(input, packed_weights, squeeze, activation, gate):
    _check_se_packed(input, packed_weights, squeeze, activation, gate)
    return _empty_like_format(input, tuple(input.shape), _is_channels_last(input))


_KERNELS = (
    ("dwconv2d", _dwconv2d_cpu, _dwconv2d_fake),
    ("pack_dwconv_weight", _pack_cpu, _pack_fake),
    ("dwconv2d_packed", _dwconv2d_packed_cpu, _dwconv2d_packed_fake),
    ("squeeze_excite", _squeeze_excite_cpu, _squeeze_excite_fake),
    ("pack_se_weights", _pack_se_cpu, _pack_se_fake),
    ("squeeze_excite_packed", _squeeze_excite_packed_cpu, _squeeze_excite_packed_fake),
)


def _other_backend_kernel(op_name: str, cpu_kernel):
    """For arguments of a backend without a kernel here (CUDA, sparse, MKL-DNN, quantized, no
    tensor at all, ...): an error naming the argument, instead of the dispatcher's 'Could not run
    ... backend'."""
    names = [a.name for a in getattr(torch.ops.mnv3ext, op_name).default._schema.arguments]

    def kernel(*args):
        # Device and layout are checked here, before the CPU kernel: its plan caches are keyed by
        # shape, strides and dtype only, so a CUDA tensor shaped like a cached CPU call would run.
        for name, value in zip(names, args):
            if not isinstance(value, torch.Tensor):
                continue
            if value.layout != torch.strided:  # as _check_tensor says it
                raise ValueError(f"{name}: expected a dense (strided) tensor, got layout {value.layout}")
            if value.device.type != "cpu":
                raise ValueError(f"{name}: mnv3ext ops run on CPU tensors, got device {value.device}")
        # Dense CPU tensors that did not dispatch to CPU (quantized ones) or no tensor at all: the
        # CPU kernel's checks, which run before it touches any data, name the argument.
        return cpu_kernel(*args)
    return kernel


def _register(kernels) -> None:
    """(name, CPU kernel, fake kernel) triples: the CPU and fake kernels, and for every other
    backend an error naming the argument."""
    for name, cpu, fake in kernels:
        _lib.impl(name, cpu, "CPU")
        torch.library.register_fake(f"mnv3ext::{name}", fake, lib=_lib)
        _lib.impl(name, _other_backend_kernel(name, cpu), "CompositeExplicitAutograd")


_register(_KERNELS)


# ---------------------------------------------------------------------------------------------
# Eager entry points: the same ops, without the dispatcher round trip when nothing needs it.
#
# Through torch.ops, a Python kernel costs 3-25 us per call beyond its own work (measured): the
# arguments are converted to IValues and back, and after a large kernel has evicted the caches,
# the dispatcher's own code and data miss in them. In plain eager mode nobody observes the call,
# so these run the CPU kernel directly. Whenever something may observe or reroute it -- dynamo
# (torch.compile / torch.export), jit.trace, a TorchFunctionMode or TorchDispatchMode (e.g.
# FakeTensorMode, `with torch.device(...)`), functorch transforms, the profiler, a Tensor
# subclass, a non-CPU tensor or a negative-bit view -- they call the op, which sees exactly what
# torch.ops would. The fused modules call these.

_DWCONV2D_OP = torch.ops.mnv3ext.dwconv2d.default
_DWCONV2D_PACKED_OP = torch.ops.mnv3ext.dwconv2d_packed.default
_SQUEEZE_EXCITE_OP = torch.ops.mnv3ext.squeeze_excite.default
_SQUEEZE_EXCITE_PACKED_OP = torch.ops.mnv3ext.squeeze_excite_packed.default
_Tensor = torch.Tensor


def _plain(t) -> bool:
    """A dense CPU torch.Tensor the kernels read as is (None, an optional bias, counts as plain)."""
    return t is None or (type(t) is _Tensor and t.is_cpu and not t.is_neg())


try:  # private torch hooks, present in the torch versions we test (2.9, 2.13)
    _is_compiling = torch.compiler.is_compiling
    _function_modes = torch._C._len_torch_function_stack
    _dispatch_modes = torch._C._len_torch_dispatch_stack
    _tracing_state = torch._C._get_tracing_state
    _transforms_active = torch._C._are_functorch_transforms_active
    _profiling = torch._C._autograd._profiler_enabled

    def _unobserved() -> bool:
        """No tracer, mode, transform or profiler that must see the call as an op."""
        return not (_is_compiling() or _function_modes() or _dispatch_modes() or _transforms_active()
                    or _profiling() or _tracing_state() is not None)
except AttributeError:  # a torch without one of them: always take the op, which is always right
    def _unobserved() -> bool:
        return False


def dwconv2d(input, weight, bias, stride, padding, dilation, activation):
    """``torch.ops.mnv3ext.dwconv2d``; in plain eager mode without the dispatcher round trip."""
    if _unobserved() and _plain(input) and _plain(weight) and _plain(bias):
        return _dwconv2d_cpu(input, weight, bias, stride, padding, dilation, activation)
    return _DWCONV2D_OP(input, weight, bias, stride, padding, dilation, activation)


def dwconv2d_packed(input, packed_weight, conv_params, activation):
    """``torch.ops.mnv3ext.dwconv2d_packed``; in plain eager mode without the dispatcher round trip."""
    if _unobserved() and _plain(input) and _plain(packed_weight):
        return _dwconv2d_packed_cpu(input, packed_weight, conv_params, activation)
    return _DWCONV2D_PACKED_OP(input, packed_weight, conv_params, activation)


def squeeze_excite(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, activation, gate):
    """``torch.ops.mnv3ext.squeeze_excite``; in plain eager mode without the dispatcher round trip."""
    if (_unobserved() and _plain(input) and _plain(fc1_weight) and _plain(fc1_bias)
            and _plain(fc2_weight) and _plain(fc2_bias)):
        return _squeeze_excite_cpu(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, activation, gate)
    return _SQUEEZE_EXCITE_OP(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, activation, gate)


def squeeze_excite_packed(input, packed_weights, squeeze, activation, gate):
    """``torch.ops.mnv3ext.squeeze_excite_packed``; in plain eager mode without the dispatcher round trip."""
    if _unobserved() and _plain(input) and _plain(packed_weights):
        return _squeeze_excite_packed_cpu(input, packed_weights, squeeze, activation, gate)
    return _SQUEEZE_EXCITE_PACKED_OP(input, packed_weights, squeeze, activation, gate)


# The GEMM family (1x1 / dense conv, linear, pool, SE gate) lives in its own module on this library.
from ._gemm_ops import (  # noqa: E402
    conv2d_packed, global_avg_pool, linear_packed, packed_gemm_numel, pointwise_conv2d,
    pointwise_conv2d_packed, se_gate_packed,
)
from ._block_ops import CONFIG_FIELDS, block_config, describe_config, inverted_residual  # noqa: E402
from ._sequence_ops import sequential  # noqa: E402
