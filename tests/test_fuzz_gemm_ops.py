"""Property-based fuzzing of the GEMM-family ops against the float64 reference, on every ISA.

Shares tests/test_fuzz_ops.py's machinery: its profile (``MNV3EXT_HYPOTHESIS_PROFILE`` ci / long,
``MNV3EXT_HYPOTHESIS_EXAMPLES`` overrides the count), value generation (randn at 1e-3..1e3 with
±0, denormals, ±1e30, ±3e38, NaN and ±Inf mixed in), input layouts (NCHW, channels_last, sliced,
permuted, expanded, junk strides on size-1 dims), the storage-hash / no-aliasing checks and the
comparison (NaN / ±Inf positions as the reference's; finite values within
4 (k + 2) eps M L + 4 eps |ref|, M the float64 sum of |products|; elements whose magnitude exceeds
the float32 range are excluded and counted with ``hypothesis.event``).

Generated: pointwise_conv2d / pointwise_conv2d_packed with C_in / C_out 1..70 (primes and tile
edges favoured), planes 1x1..30x30, batch 0..3, bias / residual / input_scale or none (residual
and scale contiguous, channels_last or strided), every activation, 1-3 threads; conv2d_packed
with kernels 1..7, strides 1..3, dilation 1..2, symmetric or asymmetric padding, C_in 1..8;
linear_packed on 1-3-d inputs; global_avg_pool. Invalid conv geometries must raise ValueError.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import event, example, given, note, settings
from hypothesis import strategies as st

import mnv3ext
from mnv3ext import reference
from test_fuzz_ops import (  # noqa: F401  (the profile is registered on import)
    _BASE, DW_ACTS, EPS, ISAS, KERNEL_THREADS, LAYOUTS, LIPSCHITZ, OVERFLOW_BOUND, PROFILE, TINY, assert_matches,
    assert_untouched_and_unaliased, channels, fill, finite_abs, make_input, maybe_noncontiguous_1d, meta_like,
    snapshot, torch_threads, value_spec,
)

_COUNTS = {"ci": {"pointwise": 300, "conv": 200, "linear": 150, "pool": 150},
           "long": {"pointwise": 10_000, "conv": 5_000, "linear": 3_000, "pool": 3_000}}


def examples(op: str) -> settings:
    import os
    count = int(os.environ.get("MNV3EXT_HYPOTHESIS_EXAMPLES", _COUNTS[PROFILE][op]))
    return settings(_BASE, max_examples=count)


pack = torch.ops.mnv3ext.pack_gemm_weight
sizes = st.one_of(st.integers(1, 8), st.integers(1, 30))


def gemm_tolerance(magnitude, ref, terms, act):
    tol = 4 * (terms + 2) * EPS * magnitude * LIPSCHITZ[act] + 4 * EPS * ref.abs().nan_to_num(0.0, 0.0, 0.0) + TINY
    return tol, magnitude > OVERFLOW_BOUND


def check_on_every_isa(call, fake, ref, tol, excluded, tensors, threads, label):
    for isa in ISAS:
        snap = snapshot(tensors)
        with mnv3ext.use_isa(isa), torch_threads(threads):
            out = call()
        note(f"isa={isa}")
        assert out.dtype == torch.float32 and out.shape == ref.shape, (out.shape, ref.shape)
        assert [s for s, n in zip(out.stride(), out.shape) if n > 1] == \
            [s for s, n in zip(fake.stride(), fake.shape) if n > 1] or not out.numel(), \
            f"strides {out.stride()} != fake kernel's {fake.stride()}"
        assert_untouched_and_unaliased(snap, out)
        assert_matches(out, ref, tol, excluded, label)


@st.composite
def pointwise_cases(draw):
    return dict(
        n=draw(st.integers(0, 3)), cin=draw(channels), cout=draw(channels), h=draw(sizes), w=draw(sizes),
        act=draw(st.sampled_from(DW_ACTS)), layout=draw(st.sampled_from(LAYOUTS)),
        perm=draw(st.permutations(range(4))),
        bias=draw(st.sampled_from(["none", "dense", "strided"])),
        residual=draw(st.sampled_from(["none", "nchw", "channels_last", "slice"])),
        scale=draw(st.sampled_from(["none", "dense", "transposed"])),
        weight_form=draw(st.sampled_from(["4d", "2d", "transposed"])),
        packed=draw(st.sampled_from(["no", "dense", "strided"])),
        x_values=draw(value_spec()), w_values=draw(value_spec(nonfinite=draw(st.integers(0, 9)) == 0)),
        b_values=draw(value_spec()), seed=draw(st.integers(0, 2**31 - 1)),
        threads=draw(st.sampled_from(KERNEL_THREADS)),
    )


# Found by the fuzzer: a denormal input gated to 0 in float32 meets an infinite weight (0 * Inf =
# NaN), where float64 keeps the product nonzero (+-Inf).
_GATE_UNDERFLOW = {
    'n': 1, 'cin': 19, 'cout': 11, 'h': 1, 'w': 4, 'act': 'none', 'layout': 'nchw', 'perm': [0, 1, 2, 3],
    'bias': 'none', 'residual': 'none', 'scale': 'dense', 'weight_form': '4d', 'packed': 'no',
    'x_values': {'scale': 1.0, 'special_fraction': 0.01, 'specials': [-1e-45], 'zero': True},
    'w_values': {'scale': 1.0, 'special_fraction': 0.01, 'specials': [float("inf")], 'zero': True},
    'b_values': {'scale': 1.0, 'special_fraction': 0.0, 'specials': [0.0], 'zero': False}, 'seed': 2, 'threads': 1}


@examples("pointwise")
@example(case=_GATE_UNDERFLOW)
@given(case=pointwise_cases())
def test_fuzz_pointwise_conv2d(case):
    note(repr(case))
    g = torch.Generator().manual_seed(case["seed"])
    n, cin, cout, h, w = (case[k] for k in ("n", "cin", "cout", "h", "w"))
    x = make_input((n, cin, h, w), case["layout"], case["x_values"], g, case["perm"])
    weight = fill((cout, cin), case["w_values"], g) / cin ** 0.5
    if case["weight_form"] == "4d":
        weight = weight[:, :, None, None]
    elif case["weight_form"] == "transposed":
        weight = weight.t().contiguous().t()
    bias = None if case["bias"] == "none" else maybe_noncontiguous_1d(fill((cout,), case["b_values"], g),
                                                                     case["bias"] == "strided")
    residual = None
    if case["residual"] != "none":
        residual = make_input((n, cout, h, w), case["residual"], case["b_values"], g, case["perm"])
    scale = None
    if case["scale"] != "none":
        scale = fill((n, cin), case["b_values"], g)
        if case["scale"] == "transposed":
            scale = scale.t().contiguous().t()
    act = case["act"]
    d = [None if t is None else t.double() for t in (x, weight, bias, residual, scale)]
    ref = reference.pointwise_conv2d(d[0], d[1], d[2], act, d[3], d[4])
    xs = finite_abs(x) if scale is None else finite_abs(x) * finite_abs(scale)[:, :, None, None]
    mag = F.conv2d(xs, finite_abs(weight.reshape(cout, cin, 1, 1)))
    if bias is not None:
        mag = mag + finite_abs(bias)[None, :, None, None]
    tol, excluded = gemm_tolerance(mag, ref, cin, act)
    if scale is not None:
        # float32 x * s may land among the denormals, whose spacing is absolute (2**-149): each
        # product then carries up to that much error times |w|
        tol = tol + 4 * 2.0 ** -149 * F.conv2d(torch.ones_like(xs), finite_abs(weight.reshape(cout, cin, 1, 1))) \
            * LIPSCHITZ[act]
        # float32 x * s may overflow where float64 does not
        excluded = excluded | ((finite_abs(x) * finite_abs(scale)[:, :, None, None]).amax(1, keepdim=True)
                               > OVERFLOW_BOUND)
        # ... and may underflow to zero where float64 does not: against a non-finite weight that
        # is 0 * Inf = NaN in float32 and +-Inf in float64
        gated = x * scale[:, :, None, None]
        underflow = ((gated == 0) & (d[0] * d[4][:, :, None, None] != 0)).float()
        nonfinite_w = (~torch.isfinite(weight.reshape(cout, cin, 1, 1))).float()
        excluded = excluded | (F.conv2d(underflow, nonfinite_w) > 0)
    if residual is not None:
        excluded = excluded | (finite_abs(residual) > OVERFLOW_BOUND)
    # Non-finite weights meet zero inputs: 0 * Inf = NaN in both, kept. Nothing is padding here.
    event(f"layout {case['layout']}, residual {case['residual']}, scale {case['scale']}")
    if case["packed"] == "no":
        op = torch.ops.mnv3ext.pointwise_conv2d
        call = lambda: op(x, weight, bias, act, residual, scale)  # noqa: E731
        fake = op(meta_like(x), meta_like(weight), meta_like(bias), act, meta_like(residual), meta_like(scale))
        tensors = [x, weight, bias, residual, scale]
    else:
        packed = pack(weight, bias)
        if case["packed"] == "strided":
            packed = maybe_noncontiguous_1d(packed, True)
        op = torch.ops.mnv3ext.pointwise_conv2d_packed
        call = lambda: op(x, packed, cout, act, residual, scale)  # noqa: E731
        fake = op(meta_like(x), meta_like(packed), cout, act, meta_like(residual), meta_like(scale))
        tensors = [x, packed, residual, scale]
    check_on_every_isa(call, fake, ref, tol, excluded, tensors, case["threads"], "pointwise_conv2d")


@st.composite
def conv_cases(draw):
    case = dict(
        n=draw(st.integers(0, 3)), cin=draw(st.integers(1, 8)), cout=draw(channels),
        h=draw(st.integers(1, 24)), w=draw(st.integers(1, 24)),
        kh=draw(st.integers(1, 7)), kw=draw(st.integers(1, 7)),
        stride=[draw(st.integers(1, 3)), draw(st.integers(1, 3))],
        dilation=[draw(st.integers(1, 2)), draw(st.integers(1, 2))],
        act=draw(st.sampled_from(DW_ACTS)), layout=draw(st.sampled_from(LAYOUTS)),
        perm=draw(st.permutations(range(4))),
        x_values=draw(value_spec()), w_values=draw(value_spec(nonfinite=False)), b_values=draw(value_spec()),
        seed=draw(st.integers(0, 2**31 - 1)), threads=draw(st.sampled_from(KERNEL_THREADS)),
    )
    if draw(st.booleans()):
        case["padding"] = [draw(st.integers(0, 4)), draw(st.integers(0, 4))]
    else:
        case["padding"] = [draw(st.integers(0, 4)) for _ in range(4)]
    return case


@examples("conv")
@given(case=conv_cases())
def test_fuzz_conv2d_packed(case):
    note(repr(case))
    g = torch.Generator().manual_seed(case["seed"])
    n, cin, cout, h, w, kh, kw = (case[k] for k in ("n", "cin", "cout", "h", "w", "kh", "kw"))
    x = make_input((n, cin, h, w), case["layout"], case["x_values"], g, case["perm"])
    weight = fill((cout, cin, kh, kw), case["w_values"], g) / (cin * kh * kw) ** 0.5
    bias = fill((cout,), case["b_values"], g)
    packed = pack(weight.permute(0, 2, 3, 1), bias)
    params = mnv3ext.ops.dwconv_params([kh, kw], case["stride"], case["padding"], case["dilation"])
    op = torch.ops.mnv3ext.conv2d_packed
    pads = mnv3ext.ops.normalize_padding(case["padding"])
    top, left, bottom, right = pads
    valid = all(size + a + b >= d * (k - 1) + 1 for size, a, b, d, k in
                ((h, top, bottom, case["dilation"][0], kh), (w, left, right, case["dilation"][1], kw)))
    if not valid:
        event("invalid geometry: ValueError asserted")
        with pytest.raises(ValueError, match="padding: padded input"):
            op(x, packed, cout, params, case["act"])
        with pytest.raises(ValueError, match="padding: padded input"):
            op(meta_like(x), meta_like(packed), cout, params, case["act"])
        return
    ref = reference.apply_activation(case["act"], F.conv2d(F.pad(x.double(), (left, right, top, bottom)),
                                                           weight.double(), bias.double(), case["stride"], 0,
                                                           case["dilation"]))
    mag = F.conv2d(F.pad(finite_abs(x), (left, right, top, bottom)), finite_abs(weight), finite_abs(bias),
                   case["stride"], 0, case["dilation"])
    tol, excluded = gemm_tolerance(mag, ref, cin * kh * kw, case["act"])
    # Non-finite inputs never fall into padding; finite weights only: no 0 * Inf on padding taps.
    fake = op(meta_like(x), meta_like(packed), cout, params, case["act"])
    event(f"layout {case['layout']}")
    check_on_every_isa(lambda: op(x, packed, cout, params, case["act"]), fake, ref, tol, excluded, [x, packed],
                       case["threads"], "conv2d_packed")


@examples("linear")
@given(lead=st.lists(st.integers(0, 5), min_size=0, max_size=2), k=channels, out=channels,
       act=st.sampled_from(DW_ACTS), transposed=st.booleans(), x_values=value_spec(),
       w_values=value_spec(nonfinite=False), seed=st.integers(0, 2**31 - 1), threads=st.sampled_from(KERNEL_THREADS))
def test_fuzz_linear_packed(lead, k, out, act, transposed, x_values, w_values, seed, threads):
    g = torch.Generator().manual_seed(seed)
    shape = tuple(lead) + (k,)
    x = fill(shape, x_values, g)
    if transposed and len(shape) >= 2:
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    weight, bias = fill((out, k), w_values, g) / k ** 0.5, fill((out,), x_values, g)
    packed = pack(weight, bias)
    ref = reference.apply_activation(act, F.linear(x.double(), weight.double(), bias.double()))
    tol, excluded = gemm_tolerance(F.linear(finite_abs(x), finite_abs(weight), finite_abs(bias)), ref, k, act)
    op = torch.ops.mnv3ext.linear_packed
    fake = op(meta_like(x), meta_like(packed), out, act)
    check_on_every_isa(lambda: op(x, packed, out, act), fake, ref, tol, excluded, [x, packed], threads,
                       "linear_packed")


@examples("pool")
@given(n=st.integers(0, 3), c=channels, h=sizes, w=sizes, layout=st.sampled_from(LAYOUTS),
       perm=st.permutations(range(4)), x_values=value_spec(), seed=st.integers(0, 2**31 - 1),
       threads=st.sampled_from(KERNEL_THREADS))
def test_fuzz_global_avg_pool(n, c, h, w, layout, perm, x_values, seed, threads):
    g = torch.Generator().manual_seed(seed)
    x = make_input((n, c, h, w), layout, x_values, g, perm)
    ref = reference.global_avg_pool(x.double())
    magnitude = finite_abs(x).mean((2, 3), keepdim=True)
    tol, _ = gemm_tolerance(magnitude, ref, h * w, "none")
    excluded = finite_abs(x).sum((2, 3), keepdim=True) > OVERFLOW_BOUND
    op = torch.ops.mnv3ext.global_avg_pool
    check_on_every_isa(lambda: op(x), op(meta_like(x)), ref, tol, excluded, [x], threads, "global_avg_pool")


@pytest.fixture(autouse=True)
def _one_thread_for_the_reference():
    with torch_threads(1):
        yield
