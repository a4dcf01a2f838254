"""Every op against the float64 reference path, on every ISA this machine has."""
import itertools
import zlib

import pytest
import torch

import mnv3ext
from mnv3ext import reference
from mnv3ext.shapes import ALL_DW, ALL_SE

DW_ACTS = ["none", "relu", "relu6", "hardswish"]
CHANNELS = [1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 72, 88, 120, 184, 200, 960, 101]
SIZES = [(1, 1), (2, 2), (7, 7), (13, 13), (14, 14), (28, 28), (56, 56), (112, 112), (7, 13), (13, 6)]
LAYOUTS = ["nchw", "channels_last", "strided"]


def same_padding(size, kernel, stride, dilation):
    """ONNX/TF 'SAME' pads (before, after): the extra pixel goes after, so it is asymmetric."""
    span = dilation * (kernel - 1) + 1
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + span - size)
    return total // 2, total - total // 2


def dw_case(n, c, h, w, k, s, d, act, asymmetric=False, pad=None):
    if pad is None:
        if asymmetric:
            top, bottom = same_padding(h, k[0], s[0], d[0])
            left, right = same_padding(w, k[1], s[1], d[1])
            pad = [top, left, bottom, right]
        else:
            pad = [(k[0] - 1) // 2 * d[0], (k[1] - 1) // 2 * d[1]]
    return dict(n=n, c=c, h=h, w=w, k=k, stride=s, dilation=d, padding=pad, act=act)


def build_dw_cases():
    cases = []
    acts = itertools.cycle(DW_ACTS)
    for i, c in enumerate(CHANNELS):  # channel counts around every SIMD tile edge
        for k, s in [(3, 1), (3, 2), (5, 1), (5, 2)]:
            cases.append(dw_case(1 + 2 * (i % 2), c, 11, 9, (k, k), (s, s), (1, 1), next(acts), asymmetric=(s == 2 and i % 3 == 0)))
    for j, (h, w) in enumerate(SIZES):  # spatial sizes, odd and non-square
        for k, s, d in [(3, 1, 1), (3, 2, 1), (5, 2, 1), (5, 1, 2)]:
            cases.append(dw_case(1 + 2 * (j % 2), 24 if h >= 56 else 17, h, w, (k, k), (s, s), (d, d), next(acts), asymmetric=(j % 2 == 1)))
    # General path: other kernel sizes, strides, dilations, paddings larger than the kernel.
    cases += [
        dw_case(1, 9, 10, 10, (1, 1), (1, 1), (1, 1), "relu"),
        dw_case(3, 16, 9, 12, (2, 2), (1, 1), (1, 1), "hardswish", pad=[0, 1, 1, 0]),
        dw_case(1, 17, 15, 15, (4, 4), (2, 2), (1, 1), "relu6", pad=[1, 2, 2, 1]),
        dw_case(1, 33, 13, 13, (7, 7), (1, 1), (1, 1), "hardswish"),
        dw_case(3, 8, 17, 19, (7, 7), (2, 2), (1, 1), "none"),
        dw_case(1, 15, 12, 12, (6, 6), (3, 3), (1, 1), "relu"),
        dw_case(1, 7, 20, 20, (3, 3), (3, 3), (3, 3), "relu6"),
        dw_case(1, 31, 9, 9, (3, 5), (1, 2), (2, 1), "hardswish"),
        dw_case(1, 16, 5, 5, (3, 3), (1, 1), (1, 1), "relu", pad=[4, 4]),
        dw_case(1, 16, 1, 1, (5, 5), (2, 2), (1, 1), "hardswish", pad=[2, 2]),
        dw_case(1, 9, 2, 3, (7, 7), (1, 1), (1, 1), "relu6", pad=[3, 3]),
        dw_case(3, 120, 14, 14, (3, 3), (1, 1), (2, 2), "hardswish"),
        dw_case(1, 960, 7, 7, (5, 5), (1, 1), (2, 2), "hardswish"),
    ]
    for layer in ALL_DW:  # every MobileNetV3 depthwise layer, as the models run it
        cases.append(dw_case(1, layer.channels, layer.size, layer.size, (layer.kernel,) * 2, (layer.stride,) * 2, (1, 1), layer.activation))
    return cases


DW_CASES = build_dw_cases()


def case_id(case):
    return "n{n}c{c}_{h}x{w}_k{k[0]}x{k[1]}_s{stride[0]}{stride[1]}_d{dilation[0]}{dilation[1]}_p{pads}_{act}".format(
        pads="-".join(map(str, case["padding"])), **case)


def make_input(n, c, h, w, layout, generator):
    if layout == "strided":  # a non-contiguous view: every other column of a wider tensor
        return torch.randn(n, c, h, 2 * w, generator=generator)[..., ::2]
    x = torch.randn(n, c, h, w, generator=generator)
    return x.to(memory_format=torch.channels_last) if layout == "channels_last" else x


def assert_close_to(actual, expected64, rtol, atol):
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected64, rtol=rtol, atol=atol)


# Both dense formats for every case; a non-contiguous view for every third case.
DW_PARAMS = [pytest.param(case, layout, id=f"{case_id(case)}-{layout}")
             for i, case in enumerate(DW_CASES) for layout in LAYOUTS if layout != "strided" or i % 3 == 0]


@pytest.mark.parametrize("case,layout", DW_PARAMS)
def test_dwconv2d_matches_float64_reference(isa, case, layout):
    g = torch.Generator().manual_seed(zlib.crc32(case_id(case).encode()))  # str hash() varies per run
    x = make_input(case["n"], case["c"], case["h"], case["w"], layout, g)
    kh, kw = case["k"]
    weight = torch.randn(case["c"], 1, kh, kw, generator=g) / (kh * kw) ** 0.5
    bias = torch.randn(case["c"], generator=g) if case["c"] % 2 else None
    args = (case["stride"], case["padding"], case["dilation"], case["act"])
    x_before = x.clone()
    out = torch.ops.mnv3ext.dwconv2d(x, weight, bias, *args)
    expected = reference.dwconv2d(x.double(), weight.double(), None if bias is None else bias.double(), *args)
    assert out.shape == expected.shape
    assert_close_to(out, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(x, x_before), "input was modified"
    if layout == "channels_last" and case["c"] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)
    elif layout != "channels_last":
        assert out.is_contiguous()
    packed = torch.ops.mnv3ext.pack_dwconv_weight(weight, bias)
    params = mnv3ext.ops.dwconv_params([kh, kw], *args[:3])
    out_packed = torch.ops.mnv3ext.dwconv2d_packed(x, packed, params, args[3])
    assert torch.equal(out_packed, out)


@pytest.mark.parametrize("act", DW_ACTS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_dwconv2d_activation_edges(isa, act, layout):
    """Values around the activation kinks (-3, 0, 3, 6) and NaN/Inf, through a 1x1 identity conv."""
    values = torch.tensor([-1e30, -7.0, -3.0, -2.999, -1e-7, -0.0, 0.0, 1e-7, 2.999, 3.0, 5.999, 6.0, 6.001, 1e30,
                           float("nan"), float("inf"), float("-inf")])
    c = values.numel()
    x = values.reshape(1, c, 1, 1).repeat(1, 1, 3, 5).contiguous()
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    weight = torch.ones(c, 1, 1, 1)
    out = torch.ops.mnv3ext.dwconv2d(x, weight, None, [1, 1], [0, 0], [1, 1], act)
    torch.testing.assert_close(out, reference.dwconv2d(x, weight, None, [1, 1], [0, 0], [1, 1], act), equal_nan=True)


SE_CASES = (
    [dict(n=1 + 2 * (i % 2), c=c, h=h, w=w, s=s) for i, (c, (h, w), s) in enumerate([
        (1, (1, 1), 1), (7, (2, 3), 2), (8, (7, 7), 8), (9, (7, 7), 3), (15, (14, 14), 4),
        (16, (14, 14), 8), (17, (5, 9), 5), (31, (28, 28), 8), (32, (7, 7), 8), (33, (3, 3), 9),
        (72, (28, 28), 24), (101, (13, 13), 13), (120, (28, 28), 32), (960, (7, 7), 240),
        (200, (1, 1), 56), (16, (56, 56), 8), (3, (112, 112), 2), (88, (2, 2), 22), (184, (14, 14), 46),
    ])]
    + [dict(n=1, c=l.channels, h=l.size, w=l.size, s=l.squeeze) for l in ALL_SE]
)
SE_MODES = [("relu", "hardsigmoid"), ("hardswish", "hardsigmoid"), ("relu", "sigmoid"), ("hardswish", "sigmoid")]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", SE_CASES, ids=lambda c: "n{n}c{c}_{h}x{w}_s{s}".format(**c))
def test_squeeze_excite_matches_float64_reference(isa, case, layout):
    g = torch.Generator().manual_seed(case["c"] * 1000 + case["h"] * 10 + case["s"])
    act, gate = SE_MODES[(case["c"] + case["h"]) % 4]
    x = make_input(case["n"], case["c"], case["h"], case["w"], layout, g)
    fc1 = torch.randn(case["s"], case["c"], 1, 1, generator=g) / case["c"] ** 0.5
    fc2 = torch.randn(case["c"], case["s"], generator=g) / case["s"] ** 0.5  # nn.Linear-style 2-D
    b1 = torch.randn(case["s"], generator=g) if case["c"] % 2 else None
    b2 = torch.randn(case["c"], generator=g) if case["h"] % 2 else None
    x_before = x.clone()
    out = torch.ops.mnv3ext.squeeze_excite(x, fc1, b1, fc2, b2, act, gate)
    expected = reference.squeeze_excite(x.double(), fc1.double(), None if b1 is None else b1.double(),
                                        fc2.double(), None if b2 is None else b2.double(), act, gate)
    assert_close_to(out, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(x, x_before), "input was modified"
    assert out.data_ptr() != x.data_ptr()
    if layout == "channels_last" and case["c"] > 1 and case["h"] * case["w"] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("act,gate", SE_MODES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_squeeze_excite_every_mode(isa, act, gate, layout):
    g = torch.Generator().manual_seed(7)
    x = make_input(3, 40, 9, 11, layout, g) * 4
    fc1, b1 = torch.randn(16, 40, generator=g), torch.randn(16, generator=g)
    fc2, b2 = torch.randn(40, 16, generator=g) / 4, torch.randn(40, generator=g)
    out = torch.ops.mnv3ext.squeeze_excite(x, fc1, b1, fc2, b2, act, gate)
    expected = reference.squeeze_excite(x.double(), fc1.double(), b1.double(), fc2.double(), b2.double(), act, gate)
    assert_close_to(out, expected, rtol=1e-4, atol=1e-4)


def test_every_isa_agrees_with_scalar_on_a_model_layer():
    """Cross-ISA agreement, independent of the reference: paths may differ only by rounding."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 72, 29, 29, generator=g)
    w, b = torch.randn(72, 1, 5, 5, generator=g) / 5, torch.randn(72, generator=g)
    results = {}
    for name in mnv3ext.available_isas():
        with mnv3ext.use_isa(name):
            results[name] = torch.ops.mnv3ext.dwconv2d(x, w, b, [2, 2], [2, 2], [1, 1], "hardswish")
    for name, out in results.items():
        torch.testing.assert_close(out, results["scalar"], rtol=1e-5, atol=1e-5, msg=name)


def test_empty_batch_gives_empty_output():
    x = torch.randn(0, 8, 5, 5)
    out = torch.ops.mnv3ext.dwconv2d(x, torch.randn(8, 1, 3, 3), None, [2, 2], [1, 1], [1, 1], "relu")
    assert out.shape == (0, 8, 3, 3)
    se = torch.ops.mnv3ext.squeeze_excite(x, torch.randn(4, 8), None, torch.randn(8, 4), None, "relu", "sigmoid")
    assert se.shape == (0, 8, 5, 5)
