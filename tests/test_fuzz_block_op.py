"""Property-based fuzzing of ``torch.ops.mnv3ext.inverted_residual`` against a float64
composition of the block from its raw weights, on every ISA path.

Generated (hypothesis; tensor data from a drawn seed): N 0..3; in / out channels from the SIMD
tile edges (1, 7, 8, 9, 15, 16, 17, 33) or 1..40; expanded = in x 1..6 (or no expand);
kernel 1..7 (rectangular), stride 1/2, dilation 1..3, symmetric or asymmetric padding 0..8;
H, W 1..20 (and now and then a plane large enough for several bands); SE (squeeze 1..24, both
activations and gates) or none; residual when the geometry allows; every activation of expand /
depthwise / project; NCHW, channels_last and strided input views; 1, 2 or 3 kernel threads.
Input values: randn at scales 1e-3..1e3, ±0 and denormals, and now and then NaN / ±Inf.
Geometries whose padded input is smaller than the dilated kernel (or residual blocks whose
output size differs) are *not* filtered out: the op (and its fake kernel) must raise
``ValueError`` naming ``config``.

Checks on every ISA: shape; strides equal the fake kernel's;
the input and packed tensors are not written (storage hash) and the output does not overlap
them; NaN / ±Inf positions equal the reference's; finite values within the propagated float32
bound of ``tests/test_block_op.block_tolerance`` (the same per-layer derivation as
``tests/test_fuzz_ops.py``: 4 (k + 2) eps M L per k-term sum).

Profiles: those of ``tests/test_fuzz_ops.py`` (``MNV3EXT_HYPOTHESIS_PROFILE`` = ``ci`` (default)
/ ``long``; ``MNV3EXT_HYPOTHESIS_EXAMPLES`` overrides the count): ci 300 examples (~10 s idle, ~45 s on a
loaded 2-core machine), long 10,000::

    MNV3EXT_HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz_block_op.py -q -p no:cacheprovider
"""
from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

import mnv3ext
from test_block_op import (
    OPS, assert_block_close, assert_unaliased, block_ref64, block_tolerance, config_of, make_weights, out_size, pack,
    spec, storage_digest, torch_threads,
)
from test_fuzz_ops import _BASE, PROFILE  # the shared hypothesis profiles

ISAS = mnv3ext.available_isas()
_COUNTS = {"ci": 300, "long": 10_000}
EXAMPLES = int(os.environ.get("MNV3EXT_HYPOTHESIS_EXAMPLES", _COUNTS.get(PROFILE, 300)))
ACTS = ["none", "relu", "relu6", "hardswish"]
EDGES = [1, 7, 8, 9, 15, 16, 17, 33]
channels = st.one_of(st.sampled_from(EDGES), st.integers(1, 40))


@st.composite
def block_cases(draw):
    cin = draw(channels)
    residual = draw(st.integers(0, 2)) == 0
    cout = cin if residual else draw(channels)
    expand = draw(st.sampled_from([None] + ACTS + ACTS))
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    stride = 1 if residual else draw(st.sampled_from([1, 2]))
    dilation = draw(st.sampled_from([1, 1, 2, 3]))
    if residual and draw(st.integers(0, 3)):  # usually "same" padding so the residual applies
        ph, pw = dilation * (kh - 1), dilation * (kw - 1)
        top, left = draw(st.integers(0, ph)), draw(st.integers(0, pw))
        pads = [top, left, ph - top, pw - left]
    elif draw(st.booleans()):
        pads = [draw(st.integers(0, 8)), draw(st.integers(0, 8))]
    else:
        pads = [draw(st.integers(0, 8)) for _ in range(4)]
    big = draw(st.integers(0, 24)) == 0
    h, w = (draw(st.integers(40, 72)), draw(st.integers(40, 72))) if big else \
        (draw(st.integers(1, 20)), draw(st.integers(1, 20)))
    se = draw(st.sampled_from([0, 0, draw(st.integers(1, 24))]))
    s = spec(cin, cin * draw(st.integers(1, 6)), cout, k=(kh, kw), stride=stride, dilation=dilation, pads=pads,
             expand=expand, dw=draw(st.sampled_from(ACTS)), se=se,
             se_act=draw(st.sampled_from(["relu", "hardswish"])), se_gate=draw(st.sampled_from(["hardsigmoid", "sigmoid"])),
             residual=residual, project=draw(st.sampled_from(ACTS)))
    if big:
        s["e"] = min(s["e"], 64) if expand is not None else s["e"]
    return dict(spec=s, n=draw(st.integers(0, 3)) if not big else 1, h=h, w=w,
                layout=draw(st.sampled_from(["nchw", "channels_last", "strided", "strided_cl"])),
                scale=draw(st.sampled_from([1.0, 1.0, 1e-3, 1e3])),
                specials=draw(st.sampled_from(["none", "none", "none", "zeros", "denormal", "nonfinite"])),
                threads=draw(st.sampled_from([1, 2, 3])), seed=draw(st.integers(0, 2**31 - 1)))


def make_input(case, g):
    s, n, h, w = case["spec"], case["n"], case["h"], case["w"]
    c = s["cin"]
    layout = case["layout"]
    if layout == "strided":
        x = torch.randn(n + 1, c + 2, 2 * h, w + 3, generator=g)[1:, 1:c + 1, ::2, 2:w + 2]
    elif layout == "strided_cl":
        x = torch.randn(n, h, w + 1, c + 3, generator=g)[:, :, 1:, 2:c + 2].permute(0, 3, 1, 2)
    else:
        x = torch.randn(n, c, h, w, generator=g)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        x.mul_(case["scale"])
        if x.numel() and case["specials"] != "none":
            mask = torch.rand(x.shape, generator=g) < 0.05
            if case["specials"] == "zeros":
                x[mask] = 0.0
            elif case["specials"] == "denormal":
                x[mask] = 1e-40
            else:
                pool = torch.tensor([math.nan, math.inf, -math.inf, -0.0])
                x[mask] = pool[torch.randint(4, x.shape, generator=g)][mask]
    return x


def geometry_ok(s, h, w):
    t, l, b, r = s["pads"]
    d = s["dilation"]
    if h + t + b < d * (s["kh"] - 1) + 1 or w + l + r < d * (s["kw"] - 1) + 1:
        return False
    return not s["residual"] or out_size(s, h, w) == (h, w)


@settings(_BASE, max_examples=EXAMPLES)
@given(case=block_cases())
def test_fuzz_inverted_residual(case):
    note(repr(case))
    s = case["spec"]
    g = torch.Generator().manual_seed(case["seed"])
    x = make_input(case, g)
    weights = make_weights(s, g, conv_shapes=case["seed"] % 2 == 0)
    config = config_of(s)
    packed = pack(weights, config)
    if not geometry_ok(s, case["h"], case["w"]):
        event("invalid geometry: ValueError asserted")
        for isa in ISAS:
            with mnv3ext.use_isa(isa), pytest.raises(ValueError, match="^config"):
                OPS.inverted_residual(x, packed, config)
        with pytest.raises(ValueError, match="^config"):
            OPS.inverted_residual(x.to("meta"), packed.to("meta"), config)
        return
    event(f"layout {case['layout']}; se {bool(s['se'])}; expand {s['expand'] is not None}; "
          f"residual {s['residual']}")
    ref = block_ref64(x, weights, s)
    tol = block_tolerance(x, weights, s)
    fake = OPS.inverted_residual(torch.empty_strided(x.shape, x.stride(), device="meta"), packed.to("meta"), config)
    for isa in ISAS:
        digests = (storage_digest(x), storage_digest(packed))
        with mnv3ext.use_isa(isa), torch_threads(case["threads"]):
            out = OPS.inverted_residual(x, packed, config)
        note(f"isa={isa}")
        assert (storage_digest(x), storage_digest(packed)) == digests, "an input was written"
        assert_unaliased(out, x, packed)
        assert out.shape == ref.shape == fake.shape
        assert out.stride() == fake.stride(), f"strides {out.stride()} != fake kernel's {fake.stride()}"
        assert_block_close(out, ref, tol, f"[{isa}]")
    if not torch.isfinite(ref).all():
        event("non-finite values propagated")


def test_profile_and_isas():
    assert PROFILE in _COUNTS and "scalar" in ISAS


@pytest.fixture(autouse=True)
def _one_thread_for_the_reference():
    with torch_threads(1):
        yield
