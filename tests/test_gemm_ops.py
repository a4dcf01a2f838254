"""The GEMM family of ops (mnv3ext/_gemm_ops.py): pack_gemm_weight, pointwise_conv2d,
pointwise_conv2d_packed, conv2d_packed, linear_packed, global_avg_pool, se_gate_packed.

Numerics: every op against ``mnv3ext.reference`` in float64 on every ISA this machine has, over
channel counts around the SIMD tile edges, odd spatial sizes, batch 0..3, with and without
bias / residual / input_scale, NCHW, channels_last, sliced, permuted and expanded inputs,
non-contiguous residual / scale / packed weights, every activation. Finite values are held to a
float32 error bound derived per element from the magnitudes summed (as tests/test_fuzz_ops.py
does); NaN / Inf positions must match. Each call also checks: output strides equal the fake
kernel's, channels_last in gives channels_last out and NCHW gives NCHW, the inputs' whole
storages hash the same before and after, the output overlaps no input.

API: opcheck, torch.compile(fullgraph=True), torch.export save / load in a fresh process,
TorchScript, 1 vs 2 threads bit identity, the eager entry points in mnv3ext.ops.
"""
import itertools
import zlib

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import mnv3ext
from mnv3ext import _gemm_ops, ops, reference
from test_fuzz_ops import assert_untouched_and_unaliased, meta_like, snapshot
from test_ops_api import AMBIGUOUS_INPUTS, run_python

pack = torch.ops.mnv3ext.pack_gemm_weight
pw = torch.ops.mnv3ext.pointwise_conv2d
pw_packed = torch.ops.mnv3ext.pointwise_conv2d_packed
conv_packed = torch.ops.mnv3ext.conv2d_packed
linear_packed = torch.ops.mnv3ext.linear_packed
gap = torch.ops.mnv3ext.global_avg_pool
se_gate = torch.ops.mnv3ext.se_gate_packed

ACTS = ["none", "relu", "relu6", "hardswish"]
CIN = [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 70]
COUT = [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 70]
SIZES = [(1, 1), (2, 3), (5, 5), (7, 7), (3, 13), (13, 3), (11, 9), (30, 30), (1, 17), (6, 1)]
BATCHES = [1, 2, 3, 0, 1, 3, 2]
EPS = 2.0 ** -24
LIPSCHITZ = {"none": 1.0, "relu": 1.0, "relu6": 1.0, "hardswish": 1.5}
CL = torch.channels_last


def seeded(*key):
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


def make_input(shape, layout, g, scale=1.0):
    """A float32 (N, C, H, W) tensor in the given stride layout."""
    n, c, h, w = shape
    if layout == "nchw":
        return torch.randn(shape, generator=g) * scale
    if layout == "channels_last":
        return (torch.randn(shape, generator=g) * scale).contiguous(memory_format=CL)
    if layout == "strided":  # every other column and row of a larger tensor, offset
        return (torch.randn(n, c, 2 * h + 1, 2 * w, generator=g) * scale)[:, :, 1::2, ::2]
    if layout == "cl_sliced":  # a channel slice of a channels_last tensor: dense in neither format
        return (torch.randn(n, c + 3, h, w, generator=g) * scale).contiguous(memory_format=CL)[:, 1:c + 1]
    if layout == "permuted":  # a contiguous (H, N, W, C) tensor viewed as NCHW
        return (torch.randn(h, n, w, c, generator=g) * scale).permute(1, 3, 0, 2)
    if layout == "expanded":  # stride 0 over the batch and the rows
        return (torch.randn(1, c, 1, w, generator=g) * scale).expand(n, c, h, w)
    raise AssertionError(layout)


def noncontiguous_1d(t):
    """The same values as a stride-2 view."""
    return torch.stack([t, torch.full_like(t, 777.0)], 1)[:, 0]


def finite_abs(t):
    t = t.double().abs()
    return torch.where(torch.isfinite(t), t, torch.zeros_like(t))


def assert_within_bound(out, ref, magnitude, terms, act="none"):
    """out (float32) vs the float64 reference: same NaN and +-Inf positions; finite values within
    4 (terms + 2) eps M L + 4 eps |ref|, M the float64 sum of the |products| (and |bias|)."""
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.shape == ref.shape, (tuple(out.shape), tuple(ref.shape))
    out64 = out.double()
    assert torch.equal(out64.isnan(), ref.isnan()), "NaN positions differ from the reference"
    for sign in (1, -1):
        assert torch.equal(out64 == sign * float("inf"), ref == sign * float("inf")), "Inf positions differ"
    finite = torch.isfinite(ref)
    bound = 4 * (terms + 2) * EPS * magnitude * LIPSCHITZ[act] + 4 * EPS * ref.abs() + 1e-30
    err = (out64 - ref).abs()
    bad = finite & ~(err <= bound)
    if bad.any():
        i = bad.nonzero()[0].tolist()
        raise AssertionError(f"{int(bad.sum())} of {ref.numel()} values outside the float32 bound; first at {i}: "
                             f"kernel {out64[tuple(i)].item()!r} reference {ref[tuple(i)].item()!r} "
                             f"bound {bound[tuple(i)].item()!r}")


def significant_strides(t):
    """Strides of the dimensions longer than 1 (those of size-1 dimensions address nothing);
    exact stride equality, size-1 dimensions included, is test_strides_of_size_1_dims_equal_the_fake_kernels'."""
    return tuple(s for s, n in zip(t.stride(), t.shape) if n > 1) if t.numel() else ()


def check_format(x, out, layout, fake):
    """Real strides = the fake kernel's; channels_last in -> channels_last out, NCHW in (or dense
    in neither format: made contiguous first) -> NCHW out. Inputs dense in both formats are
    test_output_format_of_inputs_dense_in_both_formats_follows_pytorch's."""
    assert out.shape == fake.shape
    assert significant_strides(out) == significant_strides(fake), \
        f"strides {out.stride()} != fake kernel's {fake.stride()}"
    cl, nchw = x.is_contiguous(memory_format=CL), x.is_contiguous()
    if cl and nchw:
        return
    fmt = CL if cl else torch.contiguous_format
    assert significant_strides(out) == significant_strides(torch.empty(out.shape, memory_format=fmt)), \
        f"{layout} input {x.stride()} gave output strides {out.stride()}"


# ---------------------------------------------------------------------------------------------
# pack_gemm_weight


@pytest.mark.parametrize("shape", [(1, 1), (16, 1), (17, 3), (33, 7, 1, 1), (16, 3, 3, 3), (48, 5), (70, 2, 2, 5)],
                         ids=str)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("contiguous", [True, False])
def test_pack_gemm_weight_layout(shape, bias, contiguous):
    """[bias (16) | K rows of 16 weights] per 16-column panel, padding lanes zero, bit-exact copies."""
    g = seeded("pack", shape, bias)
    weight = torch.randn(shape, generator=g)
    b = torch.randn(shape[0], generator=g) if bias else None
    if not contiguous:
        weight = weight.transpose(0, 1).contiguous().transpose(0, 1)
        b = None if b is None else noncontiguous_1d(b)
    snap = snapshot([weight, b])
    packed = pack(weight, b)
    assert_untouched_and_unaliased(snap, packed)
    n = shape[0]
    k = weight[0].numel()
    assert packed.shape == (ops.packed_gemm_numel(k, n),) == (-(-n // 16) * (1 + k) * 16,)
    w2 = weight.reshape(n, k)
    expected = torch.zeros(-(-n // 16), 1 + k, 16)
    for j in range(n):  # written out element by element, independent of the reference's unpack
        expected[j // 16, 0, j % 16] = 0.0 if b is None else b[j]
        for kk in range(k):
            expected[j // 16, 1 + kk, j % 16] = w2[j, kk]
    assert torch.equal(packed, expected.reshape(-1))
    w_back, b_back = reference.unpack_gemm_weight(packed, k, n)
    assert torch.equal(w_back, w2) and torch.equal(b_back, torch.zeros(n) if b is None else b)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = pack(mode.from_tensor(weight), None if b is None else mode.from_tensor(b))
    assert fake.shape == packed.shape and fake.stride() == packed.stride()


def test_pack_gemm_weight_keeps_nan_payloads_bit_exact():
    weight = torch.tensor([[float("nan"), float("inf")], [-float("inf"), -0.0]])
    weight.view(torch.int32)[0, 0] = 0x7FC01234  # a NaN with a payload
    packed = pack(weight, torch.tensor([1e-45, -3e38]))
    w_back, b_back = reference.unpack_gemm_weight(packed, 2, 2)
    assert torch.equal(w_back.view(torch.int32), weight.view(torch.int32))
    assert torch.equal(b_back.view(torch.int32), torch.tensor([1e-45, -3e38]).view(torch.int32))


# ---------------------------------------------------------------------------------------------
# pointwise_conv2d / pointwise_conv2d_packed


def pw_cases():
    cases = []
    for i, (cin, cout) in enumerate(itertools.product(CIN, COUT)):
        n = BATCHES[i % len(BATCHES)]
        h, w = SIZES[(i * 3 + cin) % len(SIZES)]
        cases.append(dict(n=n, cin=cin, cout=cout, h=h, w=w, bias=bool(i & 1), residual=bool(i & 2),
                          scale=bool(i & 4), act=ACTS[(i >> 3) % 4] if i % 5 else ACTS[i % 4], i=i))
    return cases


def pw_id(c):
    return "n{n}_cin{cin}_cout{cout}_{h}x{w}_b{bias:d}r{residual:d}s{scale:d}_{act}".format(**c)


EXTRA_LAYOUTS = ["strided", "permuted", "cl_sliced"]
PW_PARAMS = [pytest.param(c, layout, id=f"{pw_id(c)}-{layout}")
             for c in pw_cases() for layout in ("nchw", "channels_last", EXTRA_LAYOUTS[c["i"] % 3])]


def pw_magnitude(x, weight, bias, scale):
    xs = finite_abs(x) if scale is None else finite_abs(x) * finite_abs(scale)[:, :, None, None]
    mag = F.conv2d(xs, finite_abs(weight.reshape(weight.shape[0], -1, 1, 1)))
    return mag if bias is None else mag + finite_abs(bias)[None, :, None, None]


def pw_extras(case, x, g):
    """(weight, bias, residual, input_scale) for a case, in varied stride layouts."""
    n, cin, cout, h, w = (case[k] for k in ("n", "cin", "cout", "h", "w"))
    i = case["i"]
    weight = torch.randn(cout, cin, 1, 1, generator=g) / cin ** 0.5
    if i % 3 == 1:
        weight = weight.reshape(cout, cin)  # nn.Linear-style 2-D
    elif i % 3 == 2:
        weight = weight.transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous
    bias = torch.randn(cout, generator=g) if case["bias"] else None
    if bias is not None and i % 4 == 3:
        bias = noncontiguous_1d(bias)
    residual = None
    if case["residual"]:
        residual = make_input((n, cout, h, w), ["nchw", "channels_last", "strided", "permuted"][i % 4], g)
    scale = None
    if case["scale"]:
        scale = torch.rand(n, cin, generator=g) * 2
        if i % 2:  # non-contiguous: a transposed (C, N) tensor viewed back
            scale = scale.t().contiguous().t()
    return weight, bias, residual, scale


@pytest.mark.parametrize("case,layout", PW_PARAMS)
def test_pointwise_conv2d_matches_float64_reference(isa, case, layout):
    g = seeded(pw_id(case), layout)
    x = make_input((case["n"], case["cin"], case["h"], case["w"]), layout, g)
    weight, bias, residual, scale = pw_extras(case, x, g)
    act = case["act"]
    snap = snapshot([x, weight, bias, residual, scale])
    out = pw(x, weight, bias, act, residual, scale)
    d = [None if t is None else t.double() for t in (x, weight, bias, residual, scale)]
    ref = reference.pointwise_conv2d(d[0], d[1], d[2], act, d[3], d[4])
    assert_within_bound(out, ref, pw_magnitude(x, weight, bias, scale), case["cin"], act)
    assert_untouched_and_unaliased(snap, out)
    fake = pw(*(meta_like(t) for t in (x, weight, bias)), act, meta_like(residual), meta_like(scale))
    check_format(x, out, layout, fake)

    # The packed op, with the packed weight contiguous or a stride-2 view: the same bits.
    packed = pack(weight, bias)
    if case["i"] % 2:
        packed = noncontiguous_1d(packed)
    snap = snapshot([x, packed, residual, scale])
    out_packed = pw_packed(x, packed, case["cout"], act, residual, scale)
    assert_untouched_and_unaliased(snap, out_packed)
    assert torch.equal(out_packed, out)
    assert significant_strides(out_packed) == significant_strides(out)
    ref_packed = reference.pointwise_conv2d_packed(d[0], packed, case["cout"], act, d[3], d[4])
    assert_within_bound(out_packed, ref_packed, pw_magnitude(x, weight, bias, scale), case["cin"], act)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("cin,cout", [(1, 1), (9, 17), (16, 16), (33, 48), (70, 7)])
def test_input_scale_equals_the_prescaled_input_bit_for_bit(isa, cin, cout, layout):
    """The folded squeeze-excite gate: pointwise(x, input_scale=s) == pointwise(x * s), exactly."""
    g = seeded("fold", cin, cout, layout)
    x = make_input((3, cin, 7, 9), layout, g)
    weight, bias = torch.randn(cout, cin, generator=g), torch.randn(cout, generator=g)
    residual = torch.randn(3, cout, 7, 9, generator=g)
    s = torch.rand(3, cin, generator=g)
    for act in ACTS:
        folded = pw(x, weight, bias, act, residual, s)
        unfolded = pw(x * s[:, :, None, None], weight, bias, act, residual, None)
        assert torch.equal(folded, unfolded), act


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_activation_edges_and_non_finite_values(isa, act, layout):
    """Values around the activation kinks (-3, 0, 3, 6), NaN and +-Inf through a 1-input-channel
    GEMM (each output = act(x * 1 + 0)), and through the dense conv and the linear op."""
    values = torch.tensor([-1e30, -7.0, -3.0, -2.999, -1e-7, -0.0, 0.0, 1e-7, 2.999, 3.0, 5.999, 6.0,
                           6.001, 1e30, float("nan"), float("inf"), float("-inf"), 0.5])
    x = values.reshape(1, 1, 3, 6).repeat(2, 1, 1, 1)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    weight = torch.ones(17, 1)
    out = pw(x, weight, None, act, None, None)
    expected = reference.pointwise_conv2d(x.double(), weight.double(), None, act, None, None)
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6, equal_nan=True)
    packed = pack(weight.reshape(17, 1, 1, 1), None)
    out = conv_packed(x, packed, 17, [1, 1, 1, 1, 0, 0, 0, 0, 1, 1], act)
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6, equal_nan=True)
    out = linear_packed(values[:, None], packed, 17, act)
    torch.testing.assert_close(out.double(), reference.apply_activation(act, values[:, None].double().expand(-1, 17)),
                               rtol=1e-6, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_non_finite_inputs_propagate_like_the_reference(isa, layout):
    g = seeded("nonfinite", layout)
    x = make_input((2, 20, 5, 7), layout, g)
    x[0, 3, 1, 2] = float("nan")
    x[1, :, 4, 6] = float("inf")       # +Inf in every input channel of one pixel
    x[1, 0, 0, 0] = float("-inf")
    weight = torch.rand(33, 20, generator=g) + 0.1  # positive: Inf stays Inf, no Inf - Inf
    bias, residual = torch.randn(33, generator=g), torch.randn(2, 33, 5, 7, generator=g)
    for act in ACTS:
        out = pw(x, weight, bias, act, residual, None)
        ref = reference.pointwise_conv2d(x.double(), weight.double(), bias.double(), act, residual.double(), None)
        assert_within_bound(out, ref, pw_magnitude(x, weight, bias, None), 20, act)
        assert out[0, :, 1, 2].isnan().all()
        if act != "relu6":  # relu6 clamps +Inf to 6
            assert (out[1, :, 4, 6] == float("inf")).all()


# ---------------------------------------------------------------------------------------------
# conv2d_packed


def conv_cases():
    cases = []
    g = torch.Generator().manual_seed(1234)

    def r(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    for i in range(56):
        kh = 1 + i % 7
        kw = kh if i % 3 else r(1, 7)
        stride = [1 + (i // 7) % 3, 1 + (i // 7) % 3 if i % 2 else r(1, 3)]
        dilation = [1, 1] if i % 4 else [r(1, 2), r(1, 2)]
        if i % 2:  # symmetric, "same"-like
            pads = [(kh - 1) // 2 * dilation[0], (kw - 1) // 2 * dilation[1]]
        else:  # asymmetric (top, left, bottom, right)
            pads = [r(0, 3), r(0, 3), r(0, 3), r(0, 3)]
        h, w = r(1, 17), r(1, 17)
        p4 = ops.normalize_padding(pads)
        h = max(h, dilation[0] * (kh - 1) + 1 - p4[0] - p4[2])
        w = max(w, dilation[1] * (kw - 1) + 1 - p4[1] - p4[3])
        cases.append(dict(n=BATCHES[i % 7], cin=1 + i % 8, cout=[1, 8, 16, 17, 33][i % 5], h=h, w=w,
                          k=[kh, kw], stride=stride, pads=pads, dilation=dilation, act=ACTS[i % 4], i=i))
    # The MobileNetV3 stem (3 -> 16, 3x3 stride 2, pad 1, hardswish) at odd and even sizes.
    for i, size in enumerate([(224, 224), (31, 29), (30, 30)]):
        cases.append(dict(n=1 + i, cin=3, cout=16, h=size[0], w=size[1], k=[3, 3], stride=[2, 2], pads=[1, 1],
                          dilation=[1, 1], act="hardswish", i=100 + i))
    return cases


def conv_id(c):
    return "n{n}_cin{cin}_cout{cout}_{h}x{w}_k{k[0]}{k[1]}_s{stride[0]}{stride[1]}_d{dilation[0]}{dilation[1]}_p{p}_{act}".format(
        p="-".join(map(str, c["pads"])), **c)


CONV_LAYOUTS = ["strided", "permuted", "expanded", "cl_sliced"]
CONV_PARAMS = [pytest.param(c, layout, id=f"{conv_id(c)}-{layout}")
               for c in conv_cases() for layout in ("nchw", "channels_last", CONV_LAYOUTS[c["i"] % 4])]


def conv_magnitude(x, weight, bias, stride, pads, dilation):
    top, left, bottom, right = ops.normalize_padding(pads)
    xp = F.pad(finite_abs(x), (left, right, top, bottom))
    return F.conv2d(xp, finite_abs(weight), finite_abs(bias), stride, 0, dilation)


@pytest.mark.parametrize("case,layout", CONV_PARAMS)
def test_conv2d_packed_matches_float64_reference(isa, case, layout):
    g = seeded(conv_id(case), layout)
    n, cin, cout, h, w = (case[k] for k in ("n", "cin", "cout", "h", "w"))
    kh, kw = case["k"]
    x = make_input((n, cin, h, w), layout, g)
    weight = torch.randn(cout, cin, kh, kw, generator=g) / (cin * kh * kw) ** 0.5
    bias = torch.randn(cout, generator=g)
    packed = pack(weight.permute(0, 2, 3, 1), bias)  # taps in NHWC order, as the op documents
    if case["i"] % 3 == 0:
        packed = noncontiguous_1d(packed)
    params = ops.dwconv_params(case["k"], case["stride"], case["pads"], case["dilation"])
    act = case["act"]
    snap = snapshot([x, packed])
    out = conv_packed(x, packed, cout, params, act)
    assert_untouched_and_unaliased(snap, out)
    ref = reference.conv2d_packed(x.double(), packed, cout, params, act)
    # Independent of the reference's unpacking: F.conv2d on the original weight.
    top, left, bottom, right = ops.normalize_padding(case["pads"])
    direct = reference.apply_activation(act, F.conv2d(F.pad(x.double(), (left, right, top, bottom)), weight.double(),
                                                      bias.double(), case["stride"], 0, case["dilation"]))
    torch.testing.assert_close(ref, direct, rtol=1e-12, atol=1e-12)
    mag = conv_magnitude(x, weight, bias, case["stride"], case["pads"], case["dilation"])
    assert_within_bound(out, ref, mag, cin * kh * kw, act)
    fake = conv_packed(meta_like(x), meta_like(packed), cout, params, act)
    check_format(x, out, layout, fake)


# ---------------------------------------------------------------------------------------------
# linear_packed


LINEAR_SHAPES = [(1,), (17,), (1, 1), (5, 16), (13, 33), (0, 8), (2, 3, 70), (3, 0, 9), (4, 1, 31), (2, 1280)]


# the classifier's 1000 outputs only with the wide inputs (the others add time, not coverage)
LINEAR_CASES = [(shape, n) for shape in LINEAR_SHAPES for n in (1, 15, 16, 17, 33, 48, 1000)
                if n != 1000 or shape[-1] >= 70]


@pytest.mark.parametrize("shape, out_features", LINEAR_CASES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
def test_linear_packed_matches_float64_reference(isa, shape, out_features, layout):
    g = seeded("linear", shape, out_features, layout)
    k = shape[-1]
    if layout == "transposed" and len(shape) >= 2:
        x = torch.randn(tuple(reversed(shape)), generator=g).permute(*reversed(range(len(shape))))
    elif layout == "sliced":
        x = torch.randn(shape[:-1] + (2 * k + 1,), generator=g)[..., 1::2]
    else:
        x = torch.randn(shape, generator=g)
    assert x.shape == shape
    weight, bias = torch.randn(out_features, k, generator=g) / k ** 0.5, torch.randn(out_features, generator=g)
    packed = pack(weight, bias)
    act = ACTS[(len(shape) + out_features) % 4]
    snap = snapshot([x, packed])
    out = linear_packed(x, packed, out_features, act)
    assert_untouched_and_unaliased(snap, out)
    assert out.shape == shape[:-1] + (out_features,) and out.is_contiguous()
    ref = reference.linear_packed(x.double(), packed, out_features, act)
    torch.testing.assert_close(ref, reference.apply_activation(act, F.linear(x.double(), weight.double(), bias.double())),
                               rtol=1e-12, atol=1e-12)
    mag = F.linear(finite_abs(x), finite_abs(weight), finite_abs(bias))
    assert_within_bound(out, ref, mag, k, act)
    fake = linear_packed(meta_like(x), meta_like(packed), out_features, act)
    assert fake.shape == out.shape and fake.stride() == out.stride()


# ---------------------------------------------------------------------------------------------
# global_avg_pool


POOL_LAYOUTS = ["nchw", "channels_last", "strided", "permuted", "cl_sliced", "expanded"]


@pytest.mark.parametrize("layout", POOL_LAYOUTS)
@pytest.mark.parametrize("channels", CIN + [960])
def test_global_avg_pool_matches_float64_reference(isa, channels, layout):
    for j, (h, w) in enumerate(SIZES):
        n = BATCHES[(j + channels) % 7]
        g = seeded("pool", channels, layout, h, w)
        x = make_input((n, channels, h, w), layout, g, scale=3.0)
        snap = snapshot([x])
        out = gap(x)
        assert_untouched_and_unaliased(snap, out)
        ref = reference.global_avg_pool(x.double())
        assert ref.shape == (n, channels, 1, 1)
        assert_within_bound(out, ref, finite_abs(x).mean((2, 3), keepdim=True), h * w)
        fake = gap(meta_like(x))
        assert out.shape == fake.shape and out.stride() == fake.stride()


def test_global_avg_pool_non_finite_and_huge_values(isa):
    x = torch.randn(2, 19, 4, 5)
    x[0, 2, 1, 1] = float("nan")
    x[0, 5, 0, 0] = float("inf")
    x[1, 7, 3, 4] = float("-inf")
    x[1, 8] = 3e38  # the float32 sum overflows; float64's does not: excluded below, counted
    for t in (x, x.contiguous(memory_format=CL)):
        out = gap(t)
        ref = reference.global_avg_pool(t.double())
        keep = torch.ones_like(ref, dtype=torch.bool)
        keep[1, 8] = False
        assert torch.equal(out.isnan()[keep], ref.isnan()[keep])
        assert torch.equal(out.isinf()[keep], ref.isinf()[keep])
        finite = keep & ref.isfinite()
        torch.testing.assert_close(out.double()[finite], ref[finite], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# se_gate_packed


SE_MODES = [("relu", "hardsigmoid"), ("hardswish", "hardsigmoid"), ("relu", "sigmoid"), ("hardswish", "sigmoid")]


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided", "permuted"])
@pytest.mark.parametrize("channels,squeeze,size", [(1, 1, (1, 1)), (7, 3, (2, 3)), (8, 8, (7, 7)), (9, 4, (5, 9)),
                                                   (16, 4, (14, 14)), (17, 5, (3, 3)), (33, 8, (1, 7)),
                                                   (72, 24, (28, 28)), (131, 40, (7, 7))])
def test_se_gate_packed_matches_float64_reference(isa, channels, squeeze, size, layout):
    g = seeded("gate", channels, squeeze, layout)
    x = make_input((3, channels) + size, layout, g)
    w1, b1 = torch.randn(squeeze, channels, generator=g) / channels ** 0.5, torch.randn(squeeze, generator=g)
    w2, b2 = torch.randn(channels, squeeze, generator=g) / squeeze ** 0.5, torch.randn(channels, generator=g)
    packed = torch.ops.mnv3ext.pack_se_weights(w1, b1, w2, b2)
    if channels % 2:
        packed = noncontiguous_1d(packed)
    for act, gate in SE_MODES:
        snap = snapshot([x, packed])
        out = se_gate(x, packed, squeeze, act, gate)
        assert_untouched_and_unaliased(snap, out)
        assert out.shape == (3, channels) and out.is_contiguous()
        ref = reference.se_gate_packed(x.double(), packed, squeeze, act, gate)
        direct = reference.squeeze_excite(x.double(), w1.double(), b1.double(), w2.double(), b2.double(), act, gate)
        torch.testing.assert_close(ref[:, :, None, None] * x.double(), direct, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
        # The gate squeeze_excite_packed multiplies by, bit for bit (what the fold relies on).
        full = torch.ops.mnv3ext.squeeze_excite_packed(x, packed, squeeze, act, gate)
        assert torch.equal(full, x * out[:, :, None, None])
        fake = se_gate(meta_like(x), meta_like(packed), squeeze, act, gate)
        assert fake.shape == out.shape and fake.stride() == out.stride()


# ---------------------------------------------------------------------------------------------
# Memory format, empty batches, threads


@pytest.mark.parametrize("shape, strides", AMBIGUOUS_INPUTS, ids=str)
def test_output_format_of_inputs_dense_in_both_formats_follows_pytorch(shape, strides):
    g = seeded("ambiguous", shape, strides)
    x = torch.empty_strided(shape, strides).normal_(generator=g)
    c = shape[1]
    w1, w3, b = torch.randn(5, c, 1, 1, generator=g), torch.randn(5, c, 3, 3, generator=g), torch.randn(5, generator=g)
    cases = [
        (lambda t, w, bb: pw(t, w, bb, "none", None, None), w1, F.conv2d(x, w1, b)),
        (lambda t, w, bb: ops.pointwise_conv2d(t, w, bb, "none", None, None), w1, F.conv2d(x, w1, b)),
        (lambda t, w, bb: pw_packed(t, pack(w, bb), 5, "none", None, None), w1, F.conv2d(x, w1, b)),
        (lambda t, w, bb: conv_packed(t, pack(w.permute(0, 2, 3, 1), bb), 5, [3, 3, 1, 1, 2, 2, 2, 2, 1, 1], "none"), w3,
         F.conv2d(x, w3, b, padding=2)),
    ]
    for call, w, expected in cases:
        out = call(x, w, b)
        assert out.stride() == expected.stride()
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
            fake = call(mode.from_tensor(x), mode.from_tensor(w), mode.from_tensor(b))
        assert fake.stride() == expected.stride()


@pytest.mark.parametrize("shape", [(2, 8, 4, 5), (2, 8, 1, 1), (1, 1, 3, 4), (0, 8, 4, 5)], ids=str)
@pytest.mark.parametrize("out_channels", [1, 16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_strides_of_size_1_dims_equal_the_fake_kernels(shape, out_channels, channels_last):
    """Real and fake outputs have the same strides, all of them: torch.compile / export trust the
    fake kernel's, and the depthwise ops give exactly those (here: one output channel, a 1x1
    plane or an empty batch, where an NHWC buffer is also "contiguous")."""
    x = torch.randn(shape).contiguous(memory_format=CL if channels_last else torch.contiguous_format)
    c = shape[1]
    w1, w3 = torch.randn(out_channels, c, 1, 1), torch.randn(out_channels, c, 3, 3)
    p1, p3 = pack(w1, None), pack(w3.permute(0, 2, 3, 1), None)
    params = [3, 3, 1, 1, 1, 1, 1, 1, 1, 1]
    calls = {
        "pointwise_conv2d": lambda t, a, b, ww: pw(t, ww, None, "relu", None, None),
        "pointwise_conv2d_packed": lambda t, a, b, ww: pw_packed(t, a, out_channels, "relu", None, None),
        "conv2d_packed": lambda t, a, b, ww: conv_packed(t, b, out_channels, params, "relu"),
        "ops.pointwise_conv2d_packed": lambda t, a, b, ww: ops.pointwise_conv2d_packed(t, a, out_channels, "relu",
                                                                                       None, None),
        "global_avg_pool": lambda t, a, b, ww: gap(t),
    }
    wrong = []
    for name, call in calls.items():
        out = call(x, p1, p3, w1)
        fake = call(meta_like(x), meta_like(p1), meta_like(p3), meta_like(w1))
        if out.stride() != fake.stride():
            wrong.append(f"{name}: real {out.stride()} != fake {fake.stride()} for output {tuple(out.shape)}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("channels_last", [False, True])
def test_empty_batch_keeps_its_memory_format(channels_last):
    # As the depthwise ops (tests/test_ops_api.py): channels_last in, channels_last out; NCHW in,
    # NCHW out; the fake kernel agrees.
    fmt = CL if channels_last else torch.contiguous_format
    x = torch.empty(0, 8, 4, 5, memory_format=fmt)
    w = torch.randn(16, 8, 1, 1)
    p1, p3 = pack(w, None), pack(torch.randn(16, 3, 3, 8), None)
    params = [3, 3, 1, 1, 1, 1, 1, 1, 1, 1]
    calls = {
        "pointwise_conv2d": lambda t, pp1, pp3, ww: pw(t, ww, None, "relu", None, None),
        "pointwise_conv2d_packed": lambda t, pp1, pp3, ww: pw_packed(t, pp1, 16, "relu", None, None),
        "conv2d_packed": lambda t, pp1, pp3, ww: conv_packed(t, pp3, 16, params, "relu"),
        "ops.pointwise_conv2d_packed": lambda t, pp1, pp3, ww: ops.pointwise_conv2d_packed(t, pp1, 16, "relu", None, None),
        "ops.conv2d_packed": lambda t, pp1, pp3, ww: ops.conv2d_packed(t, pp3, 16, params, "relu"),
    }
    wrong = []
    for name, call in calls.items():
        out = call(x, p1, p3, w)
        fake = call(meta_like(x), meta_like(p1), meta_like(p3), meta_like(w))
        want = torch.empty(out.shape, memory_format=fmt).stride()
        assert out.shape == (0, 16, 4, 5)
        if out.stride() != want or fake.stride() != want:
            wrong.append(f"{name}: real {out.stride()}, fake {fake.stride()}, expected {want}")
    assert not wrong, "\n".join(wrong)
    assert gap(x).shape == (0, 8, 1, 1)
    assert linear_packed(torch.empty(0, 8), p1, 16, "relu").shape == (0, 16)
    se = torch.ops.mnv3ext.pack_se_weights(torch.randn(4, 8), None, torch.randn(8, 4), None)
    assert se_gate(x, se, 4, "relu", "sigmoid").shape == (0, 8)


def thread_cases():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 72, 56, 56, generator=g)
    w, b = torch.randn(40, 72, generator=g) / 8, torch.randn(40, generator=g)
    r, s = torch.randn(2, 40, 56, 56, generator=g), torch.rand(2, 72, generator=g)
    stem_x = torch.randn(2, 3, 112, 112, generator=g)
    stem_p = pack(torch.randn(16, 3, 3, 3, generator=g).permute(0, 2, 3, 1), torch.randn(16, generator=g))
    fc_x = torch.randn(3, 1280, generator=g)
    fc_p = pack(torch.randn(1000, 1280, generator=g) / 36, torch.randn(1000, generator=g))
    pool_x = torch.randn(8, 960, 7, 7, generator=g)
    se_p = torch.ops.mnv3ext.pack_se_weights(torch.randn(18, 72, generator=g), None, torch.randn(72, 18, generator=g),
                                             torch.randn(72, generator=g))
    return {
        "pointwise_conv2d": lambda cl: pw(cl(x), w, b, "hardswish", cl(r), s),
        "pointwise_conv2d_few_rows": lambda cl: pw(cl(x[:1, :, :7, :7]), torch.randn(960, 72, generator=g.manual_seed(1)),
                                                   None, "relu6", None, None),
        "conv2d_packed": lambda cl: conv_packed(cl(stem_x), stem_p, 16, [3, 3, 2, 2, 1, 1, 1, 1, 1, 1], "hardswish"),
        "linear_packed": lambda cl: linear_packed(fc_x, fc_p, 1000, "relu"),
        "global_avg_pool": lambda cl: gap(cl(pool_x)),
        "se_gate_packed": lambda cl: se_gate(cl(x), se_p, 18, "relu", "hardsigmoid"),
    }


@pytest.mark.parametrize("op", list(thread_cases()))
@pytest.mark.parametrize("channels_last", [False, True])
def test_one_and_two_threads_bit_identical(isa, op, channels_last):
    call = thread_cases()[op]

    def cl(t):
        return t.contiguous(memory_format=CL) if channels_last else t

    previous = torch.get_num_threads()
    outputs = []
    try:
        for threads in (1, 2, 1, 2, 3):
            torch.set_num_threads(threads)
            outputs.append(call(cl))
    finally:
        torch.set_num_threads(previous)
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])


# ---------------------------------------------------------------------------------------------
# The op surface: opcheck, compile, export, TorchScript, gradients, reference signatures


def op_args(channels_last=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 24, 9, 11, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=CL)
    w, b = torch.randn(40, 24, 1, 1, generator=g), torch.randn(40, generator=g)
    r, s = torch.randn(2, 40, 9, 11, generator=g), torch.rand(2, 24, generator=g)
    w3 = torch.randn(16, 24, 3, 3, generator=g)
    se_p = torch.ops.mnv3ext.pack_se_weights(torch.randn(8, 24, generator=g), torch.randn(8, generator=g),
                                             torch.randn(24, 8, generator=g), None)
    return dict(x=x, w=w, b=b, r=r, s=s, w3=w3, se_p=se_p)


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(channels_last):
    a = op_args(channels_last)
    x, w, b, r, s = a["x"], a["w"], a["b"], a["r"], a["s"]
    p = pack(w, b)
    opcheck = torch.library.opcheck
    opcheck(pack.default, (w, b))
    opcheck(pack.default, (w.flatten(1), None))
    opcheck(pack.default, (a["w3"], None))
    opcheck(pw.default, (x, w, b, "hardswish", r, s))
    opcheck(pw.default, (x, w.flatten(1), None, "relu", None, None))
    opcheck(pw_packed.default, (x, p, 40, "relu6", r.contiguous(memory_format=CL), s))
    opcheck(pw_packed.default, (x, p, 40, "none", None, None))
    opcheck(conv_packed.default, (x, pack(a["w3"].permute(0, 2, 3, 1), None), 16, [3, 3, 2, 1, 1, 0, 2, 1, 1, 2], "hardswish"))
    opcheck(linear_packed.default, (x.mean((2, 3)), pack(w.flatten(1), b), 40, "relu"))
    opcheck(linear_packed.default, (torch.randn(2, 3, 24), p, 40, "none"))
    opcheck(gap.default, (x,))
    opcheck(se_gate.default, (x, a["se_p"], 8, "hardswish", "hardsigmoid"))


class GemmBlock(torch.nn.Module):
    """A stem conv, an SE gate folded into a 1x1 projection with a residual, pooling and a
    classifier, through the raw ops."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.register_buffer("stem", pack(torch.randn(16, 3, 3, 3, generator=g).permute(0, 2, 3, 1) / 5,
                                          torch.randn(16, generator=g)))
        self.register_buffer("se", torch.ops.mnv3ext.pack_se_weights(torch.randn(8, 16, generator=g) / 4, None,
                                                                     torch.randn(16, 8, generator=g) / 3, None))
        self.register_buffer("w", torch.randn(16, 16, 1, 1, generator=g) / 4)
        self.register_buffer("b", torch.randn(16, generator=g))
        self.register_buffer("proj", pack(torch.randn(16, 16, generator=g) / 4, None))
        self.register_buffer("fc", pack(torch.randn(10, 16, generator=g) / 4, torch.randn(10, generator=g)))

    def forward(self, x):
        y = torch.ops.mnv3ext.conv2d_packed(x, self.stem, 16, [3, 3, 2, 2, 1, 1, 1, 1, 1, 1], "hardswish")
        gate = torch.ops.mnv3ext.se_gate_packed(y, self.se, 8, "relu", "hardsigmoid")
        z = torch.ops.mnv3ext.pointwise_conv2d(y, self.w, self.b, "relu", None, gate)
        z = torch.ops.mnv3ext.pointwise_conv2d_packed(z, self.proj, 16, "none", y, None)
        pooled = torch.ops.mnv3ext.global_avg_pool(z).flatten(1)
        return torch.ops.mnv3ext.linear_packed(pooled, self.fc, 10, "hardswish")


def block_reference(m, x):
    x = x.double()
    y = reference.conv2d_packed(x, m.stem, 16, [3, 3, 2, 2, 1, 1, 1, 1, 1, 1], "hardswish")
    gate = reference.se_gate_packed(y, m.se, 8, "relu", "hardsigmoid")
    z = reference.pointwise_conv2d(y, m.w.double(), m.b.double(), "relu", None, gate)
    z = reference.pointwise_conv2d_packed(z, m.proj, 16, "none", y, None)
    return reference.linear_packed(reference.global_avg_pool(z).flatten(1), m.fc, 10, "hardswish")


def test_gemm_block_matches_reference():
    m = GemmBlock().eval()
    x = torch.randn(2, 3, 19, 21)
    torch.testing.assert_close(m(x).double(), block_reference(m, x), rtol=1e-4, atol=1e-4)


def test_torch_compile_fullgraph_inductor():
    torch._dynamo.reset()
    m = GemmBlock().eval()
    compiled = torch.compile(m, fullgraph=True, backend="inductor")
    for shape, cl in [((1, 3, 20, 20), False), ((3, 3, 13, 17), True)]:
        x = torch.randn(shape)
        if cl:
            x = x.contiguous(memory_format=CL)
        out = compiled(x)
        torch.testing.assert_close(out.double(), block_reference(m, x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out, m(x), rtol=1e-6, atol=1e-6)


def test_torch_export_save_and_load_in_fresh_process(tmp_path):
    m = GemmBlock().eval()
    x = torch.randn(2, 3, 15, 15)
    exported = torch.export.export(m, (x,))
    graph = str(exported.graph)
    for name in ("conv2d_packed", "se_gate_packed", "pointwise_conv2d", "pointwise_conv2d_packed", "global_avg_pool",
                 "linear_packed"):
        assert f"mnv3ext.{name}" in graph, name
    path = tmp_path / "gemm.pt2"
    torch.export.save(exported, str(path))
    torch.save({"x": x, "expected": m(x)}, tmp_path / "io.pt")
    result = run_python(f"""
        import torch, mnv3ext
        program = torch.export.load({str(path)!r})
        io = torch.load({str(tmp_path / 'io.pt')!r})
        torch.testing.assert_close(program.module()(io["x"]), io["expected"], rtol=1e-6, atol=1e-6)
        print("ok")
    """)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_torchscript_of_each_op(tmp_path):
    @torch.jit.script
    def scripted(x, w, b, r, s, stem, fc, se_p):
        y = torch.ops.mnv3ext.pointwise_conv2d(x, w, b, "relu6", r, s)
        packed = torch.ops.mnv3ext.pack_gemm_weight(w, b)
        y2 = torch.ops.mnv3ext.pointwise_conv2d_packed(x, packed, 40, "relu6", r, s)
        c = torch.ops.mnv3ext.conv2d_packed(x, stem, 16, [3, 3, 1, 1, 1, 1, 1, 1, 1, 1], "relu")
        pooled = torch.ops.mnv3ext.global_avg_pool(y)
        z = torch.ops.mnv3ext.linear_packed(pooled.flatten(1), fc, 10, "none")
        gate = torch.ops.mnv3ext.se_gate_packed(x, se_p, 8, "hardswish", "sigmoid")
        return y, y2, c, pooled, z, gate

    a = op_args()
    stem = pack(a["w3"].permute(0, 2, 3, 1), None)
    fc = pack(torch.randn(10, 40), torch.randn(10))
    args = (a["x"], a["w"], a["b"], a["r"], a["s"], stem, fc, a["se_p"])
    y, y2, c, pooled, z, gate = scripted(*args)
    assert torch.equal(y, pw(a["x"], a["w"], a["b"], "relu6", a["r"], a["s"])) and torch.equal(y2, y)
    assert torch.equal(c, conv_packed(a["x"], stem, 16, [3, 3, 1, 1, 1, 1, 1, 1, 1, 1], "relu"))
    assert torch.equal(pooled, gap(y)) and torch.equal(z, linear_packed(pooled.flatten(1), fc, 10, "none"))
    assert torch.equal(gate, se_gate(a["x"], a["se_p"], 8, "hardswish", "sigmoid"))
    path = tmp_path / "gemm.ts"
    torch.jit.save(scripted, str(path))
    for got, want in zip(torch.jit.load(str(path))(*args), (y, y2, c, pooled, z, gate)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["pointwise_conv2d", "pointwise_conv2d_packed", "conv2d_packed", "linear_packed",
                                  "global_avg_pool", "se_gate_packed"])
def test_reference_and_entry_points_have_the_op_signatures(name):
    import inspect
    schema_names = [a.name for a in getattr(torch.ops.mnv3ext, name).default._schema.arguments]
    assert list(inspect.signature(getattr(reference, name)).parameters) == schema_names
    assert list(inspect.signature(getattr(ops, name)).parameters) == schema_names


def test_gradients_are_refused_clearly():
    a = op_args()
    w = a["w"].clone().requires_grad_(True)
    for call in (lambda: pw(a["x"], w, a["b"], "relu", None, None),
                 lambda: ops.pointwise_conv2d(a["x"], w, a["b"], "relu", None, None),
                 lambda: pw_packed(a["x"].clone().requires_grad_(True), pack(a["w"], None), 40, "relu", None, None),
                 lambda: conv_packed(a["x"].clone().requires_grad_(True), pack(a["w3"].permute(0, 2, 3, 1), None), 16,
                                     [3, 3, 1, 1, 1, 1, 1, 1, 1, 1], "relu"),
                 lambda: linear_packed(torch.randn(2, 40, requires_grad=True), pack(torch.randn(3, 40), None), 3, "relu"),
                 lambda: se_gate(a["x"].clone().requires_grad_(True), a["se_p"], 8, "relu", "sigmoid")):
        with pytest.raises(RuntimeError, match="inference-only"):
            call()
    with torch.no_grad():
        pw(a["x"], w, a["b"], "relu", None, None)


# ---------------------------------------------------------------------------------------------
# Eager entry points (mnv3ext.ops.*): bit-identical to torch.ops, skip the dispatcher only
# when nothing observes the call.


ENTRY_OPS = ("_POINTWISE_OP", "_POINTWISE_PACKED_OP", "_CONV_OP", "_LINEAR_OP", "_POOL_OP", "_SE_GATE_OP")


def entry_calls(channels_last=False):
    a = op_args(channels_last)
    p, p3 = pack(a["w"], a["b"]), pack(a["w3"].permute(0, 2, 3, 1), None)
    fc = pack(torch.randn(10, 24), None)
    params = [3, 3, 2, 1, 1, 0, 2, 1, 1, 2]
    return {
        "pointwise_conv2d": (a["x"], a["w"], a["b"], "hardswish", a["r"], a["s"]),
        "pointwise_conv2d_packed": (a["x"], p, 40, "relu", a["r"], None),
        "conv2d_packed": (a["x"], p3, 16, params, "relu6"),
        "linear_packed": (a["x"].mean((2, 3)), fc, 10, "none"),
        "global_avg_pool": (a["x"],),
        "se_gate_packed": (a["x"], a["se_p"], 8, "relu", "hardsigmoid"),
    }


class OpCounter:
    def __init__(self, monkeypatch):
        self.calls = 0
        for name in ENTRY_OPS:
            monkeypatch.setattr(_gemm_ops, name, self._counting(getattr(_gemm_ops, name)))

    def _counting(self, fn):
        def call(*args):
            self.calls += 1
            return fn(*args)
        return call


class OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("channels_last", [False, True])
def test_entry_points_equal_the_ops_bit_for_bit(isa, channels_last):
    for name, args in entry_calls(channels_last).items():
        with torch.inference_mode():
            direct = getattr(ops, name)(*args)
        via_op = getattr(torch.ops.mnv3ext, name)(*args)
        assert torch.equal(direct, via_op), name
        assert direct.stride() == via_op.stride(), name


def test_plain_eager_skips_the_dispatcher(monkeypatch):
    counter = OpCounter(monkeypatch)
    for _ in range(2):  # the first call of a signature and a cached one
        for name, args in entry_calls().items():
            getattr(ops, name)(*args)
    assert counter.calls == 0


def test_observed_calls_go_through_the_op(monkeypatch):
    calls = entry_calls()
    with OpLog() as log:
        for name, args in calls.items():
            getattr(ops, name)(*args)
    for name in calls:
        assert f"mnv3ext.{name}.default" in log.names, name
    counter = OpCounter(monkeypatch)
    with torch.device("cpu"):
        for name, args in calls.items():
            getattr(ops, name)(*args)
    assert counter.calls == len(calls)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        ops.pointwise_conv2d_packed(*calls["pointwise_conv2d_packed"])
    assert any(e.name == "mnv3ext::pointwise_conv2d_packed" for e in prof.events())


def test_meta_and_fake_tensors_get_the_fake_kernel():
    from torch._subclasses.fake_tensor import FakeTensorMode

    for name, args in entry_calls(channels_last=True).items():
        real = getattr(torch.ops.mnv3ext, name)(*args)
        meta = getattr(ops, name)(*(t.to("meta") if isinstance(t, torch.Tensor) else t for t in args))
        assert meta.device.type == "meta" and meta.shape == real.shape and meta.stride() == real.stride(), name
        with FakeTensorMode() as mode:
            fake = getattr(ops, name)(*(mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in args))
        assert fake.shape == real.shape and fake.stride() == real.stride(), name


def test_negative_bit_view_and_subclass_are_resolved(monkeypatch):
    class Tagged(torch.Tensor):
        pass

    for name, args in entry_calls().items():
        x = args[0]
        neg = getattr(ops, name)(torch._neg_view(x), *args[1:])
        assert torch.equal(neg, getattr(ops, name)(-x, *args[1:])), name
        tagged = getattr(ops, name)(x.as_subclass(Tagged), *args[1:])
        assert torch.equal(torch.Tensor(tagged) if type(tagged) is not torch.Tensor else tagged,
                           getattr(torch.ops.mnv3ext, name)(*args)), name


def test_jit_trace_records_the_ops():
    m = GemmBlock().eval()
    x = torch.randn(1, 3, 16, 16)
    traced = torch.jit.trace(m, x)
    graph = str(traced.inlined_graph)
    for name in ("conv2d_packed", "se_gate_packed", "pointwise_conv2d_packed", "global_avg_pool", "linear_packed"):
        assert f"mnv3ext::{name}" in graph, name
    y = torch.randn(1, 3, 16, 16)
    assert torch.equal(traced(y), m(y))


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_conv2d_channels_last_output(layout):
    """``channels_last_output=True``: a channels_last output for any input layout, the same values
    as the reference, and the fake kernel's strides."""
    torch.manual_seed(11)
    w, b = torch.randn(16, 3, 3, 3), torch.randn(16)
    packed = torch.ops.mnv3ext.pack_gemm_weight(w.permute(0, 2, 3, 1), b)
    x = torch.randn(2, 3, 15, 26)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = x[..., ::2]
    params = [3, 3, 2, 2, 1, 1, 1, 1, 1, 1]
    got = torch.ops.mnv3ext.conv2d_packed(x, packed, 16, params, "hardswish", True)
    assert got.is_contiguous(memory_format=torch.channels_last)
    ref = F.hardswish(F.conv2d(x.double(), w.double(), b.double(), 2, 1))
    assert (got.double() - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()
    assert torch.equal(ops.conv2d_packed(x, packed, 16, params, "hardswish", True), got)
    expected = reference.conv2d_packed(x.double(), packed.double(), 16, params, "hardswish", True)
    assert expected.is_contiguous(memory_format=torch.channels_last)
    assert (got.double() - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fake = torch.ops.mnv3ext.conv2d_packed(mode.from_tensor(x), mode.from_tensor(packed), 16, params,
                                               "hardswish", True)
    assert fake.stride() == got.stride()


@pytest.mark.parametrize("value", ["yes", [True]])
def test_conv2d_channels_last_output_must_be_a_bool(value):
    packed = torch.ops.mnv3ext.pack_gemm_weight(torch.randn(16, 3, 3, 3).permute(0, 2, 3, 1), None)
    x = torch.randn(1, 3, 8, 8)
    args = (x, packed, 16, [3, 3, 1, 1, 1, 1, 1, 1, 1, 1], "none", value)
    with pytest.raises(TypeError, match="channels_last_output"):
        ops.conv2d_packed(*args)
    with pytest.raises((TypeError, RuntimeError), match="channels_last_output"):
        torch.ops.mnv3ext.conv2d_packed(*args)
