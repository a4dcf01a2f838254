"""``torch.ops.mnv3ext.inverted_residual`` / ``pack_inverted_residual`` (one MobileNetV3 block
per call): numerics, API surface and bad input.

Expected values are never computed by the code under test: ``block_ref64`` composes the block in
float64 from the *raw* (unpacked) weights with plain ``torch.nn.functional`` calls. The
project's own reference (``mnv3ext.reference.inverted_residual``, which reads the packed tensor)
is checked against it too, so a packing bug shows up in both places.

Tolerance: the float32 error bound of every layer (``4 (k + 2) eps M L`` for a k-term sum whose
float64 magnitude is M, activation Lipschitz constant L, as tests/test_fuzz_ops.py derives it),
propagated through expand -> depthwise -> squeeze-excite -> project (+ input); see
``block_tolerance``.

Band coverage: the executor (csrc/kernels/block/inverted_residual.cpp) walks output rows in
bands whose size comes from ``kBandBytes`` / ``kWholeImageBytes``; ``band_rows`` re-derives the
band height from those constants (read from the source), and ``test_cases_cover_several_bands``
asserts that some of the cases here run in more than one band (and with more than one thread
range), so band boundaries and the reuse of expanded rows between bands are exercised.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import zlib

import pytest
import torch
import torch.nn.functional as F

import mnv3ext
from mnv3ext import reference
from mnv3ext.nn import FusedInvertedResidual

OPS = torch.ops.mnv3ext
ISAS = mnv3ext.available_isas()
EPS = 2.0 ** -24
CL = torch.channels_last
LIPSCHITZ = {"none": 1.0, "relu": 1.0, "relu6": 1.0, "hardswish": 1.5, "hardsigmoid": 1 / 6, "sigmoid": 0.25}
ACT = {"none": lambda x: x, "relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish,
       "hardsigmoid": F.hardsigmoid, "sigmoid": torch.sigmoid}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def torch_threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _one_thread_for_the_reference():
    with torch_threads(1):
        yield


# ---------------------------------------------------------------------------------------------
# A block: a plain dict (spec), its raw weights, its config, its float64 expected output


def spec(cin, e, cout, k=3, stride=1, dilation=1, pads=None, expand="hardswish", dw="relu", se=0,
         se_act="relu", se_gate="hardsigmoid", residual=False, project="none"):
    kh, kw = (k, k) if isinstance(k, int) else k
    if pads is None:  # "same"-like symmetric padding
        pads = [dilation * (kh - 1) // 2, dilation * (kw - 1) // 2] * 2
    elif len(pads) == 2:
        pads = [pads[0], pads[1], pads[0], pads[1]]
    if expand is None:
        e = cin
    return dict(cin=cin, e=e, cout=cout, kh=kh, kw=kw, stride=stride, dilation=dilation, pads=list(pads),
                expand=expand, dw=dw, se=se, se_act=se_act, se_gate=se_gate, residual=residual, project=project)


def config_of(s):
    return mnv3ext.ops.block_config(s["cin"], s["e"], s["cout"], [s["kh"], s["kw"]], s["stride"], s["pads"],
                                    s["dilation"], s["expand"], s["dw"], s["se"], s["se_act"], s["se_gate"],
                                    s["residual"], s["project"])


def make_weights(s, g, conv_shapes=True):
    """Raw float32 weights (fan-in scaled so values stay O(1) through the block)."""
    cin, e, cout, kh, kw, sq = s["cin"], s["e"], s["cout"], s["kh"], s["kw"], s["se"]

    def r(*shape, fan):
        return torch.randn(shape, generator=g) / math.sqrt(fan)
    w = dict(expand_weight=None, expand_bias=None, se_fc1_weight=None, se_fc1_bias=None, se_fc2_weight=None,
             se_fc2_bias=None)
    if s["expand"] is not None:
        w["expand_weight"] = r(e, cin, 1, 1, fan=cin) if conv_shapes else r(e, cin, fan=cin)
        w["expand_bias"] = r(e, fan=4)
    w["dw_weight"] = r(e, 1, kh, kw, fan=kh * kw)
    w["dw_bias"] = r(e, fan=4)
    if sq:
        w["se_fc1_weight"] = r(sq, e, fan=e) if not conv_shapes else r(sq, e, 1, 1, fan=e)
        w["se_fc1_bias"] = r(sq, fan=4)
        w["se_fc2_weight"] = r(e, sq, fan=sq) if not conv_shapes else r(e, sq, 1, 1, fan=sq)
        w["se_fc2_bias"] = r(e, fan=1) + 1.0
    w["project_weight"] = r(cout, e, 1, 1, fan=e) if conv_shapes else r(cout, e, fan=e)
    w["project_bias"] = r(cout, fan=4)
    return w


PACK_ORDER = ("expand_weight", "expand_bias", "dw_weight", "dw_bias", "se_fc1_weight", "se_fc1_bias",
              "se_fc2_weight", "se_fc2_bias", "project_weight", "project_bias")


def pack(w, config):
    return OPS.pack_inverted_residual(*(w[k] for k in PACK_ORDER), config)


def out_size(s, h, w):
    t, l, b, r = s["pads"]
    d = s["dilation"]
    return ((h + t + b - d * (s["kh"] - 1) - 1) // s["stride"] + 1,
            (w + l + r - d * (s["kw"] - 1) - 1) // s["stride"] + 1)


def _d(t):
    return None if t is None else t.double()


def block_stages64(x, w, s, absolute=False):
    """The block in float64 from the raw weights, layer by layer; with ``absolute`` every weight
    and input is replaced by its absolute value (the magnitudes M of the error bound) and
    activations by the identity."""
    f = (lambda t: None if t is None else t.double().abs()) if absolute else _d
    act = (lambda name, t: t) if absolute else (lambda name, t: ACT[name](t))
    x64 = f(x)
    stages = {}
    y = x64
    if s["expand"] is not None:
        y = act(s["expand"], F.conv2d(y, f(w["expand_weight"]).reshape(s["e"], s["cin"], 1, 1), f(w["expand_bias"])))
    stages["expanded"] = y
    t, l, b, r = s["pads"]
    y = F.conv2d(F.pad(y, (l, r, t, b)), f(w["dw_weight"]), f(w["dw_bias"]), s["stride"], 0, s["dilation"],
                 groups=s["e"])
    y = act(s["dw"], y)
    stages["depthwise"] = y
    if s["se"]:
        pooled = y.mean((2, 3))
        hidden = act(s["se_act"], F.linear(pooled, f(w["se_fc1_weight"]).reshape(s["se"], s["e"]), f(w["se_fc1_bias"])))
        gate = F.linear(hidden, f(w["se_fc2_weight"]).reshape(s["e"], s["se"]), f(w["se_fc2_bias"]))
        gate = gate if absolute else ACT[s["se_gate"]](gate)
        stages["pooled"], stages["hidden"], stages["gate"] = pooled, hidden, gate
        y = y * gate[:, :, None, None]
    stages["scaled"] = y
    out = act(s["project"], F.conv2d(y, f(w["project_weight"]).reshape(s["cout"], s["e"], 1, 1), f(w["project_bias"])))
    if s["residual"]:
        out = out + x64
    stages["out"] = out
    return stages


def block_ref64(x, w, s):
    return block_stages64(x, w, s)["out"]


def block_tolerance(x, w, s):
    """Per-element float32 error bound of the block's output, propagated layer by layer.

    A k-term float32 sum with float64 magnitude M errs by at most 4 (k + 2) eps M (any order,
    FMA or not); the activation multiplies errors by its Lipschitz constant L; an error e of a
    layer's input reaches its output through |W| e. Intermediates stored in float32 add eps |v|.
    Squeeze-excite: mean over HW, fc1, act, fc2, gate (L 1/6 or 1/4), then the product y * g."""
    x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
    val = block_stages64(x, w, s)
    mag = block_stages64(x, w, s, absolute=True)  # sum of |terms| of every layer

    def absw(name):
        return w[name].double().abs()
    e, cout = s["e"], s["cout"]
    err = torch.zeros_like(x, dtype=torch.float64)
    if s["expand"] is not None:
        err = LIPSCHITZ[s["expand"]] * 4 * (s["cin"] + 2) * EPS * mag["expanded"] + EPS * val["expanded"].abs()
    t, l, b, r = s["pads"]
    k = s["kh"] * s["kw"]
    bound_in = val["expanded"].abs() + err  # |dw input| bound
    dw_mag = F.conv2d(F.pad(bound_in, (l, r, t, b)), absw("dw_weight"), absw("dw_bias"), s["stride"], 0,
                      s["dilation"], groups=e)
    dw_err_in = F.conv2d(F.pad(err, (l, r, t, b)), absw("dw_weight"), None, s["stride"], 0, s["dilation"], groups=e)
    err = LIPSCHITZ[s["dw"]] * (4 * (k + 2) * EPS * dw_mag + dw_err_in) + EPS * val["depthwise"].abs()
    y_abs = val["depthwise"].abs()
    if s["se"]:
        sq = s["se"]
        hw = y_abs.shape[2] * y_abs.shape[3]
        pooled = y_abs.mean((2, 3)) if hw else torch.zeros(y_abs.shape[:2], dtype=torch.float64)
        e0 = (hw + 2) * 4 * EPS * (pooled + err.mean((2, 3)) if hw else pooled) + (err.mean((2, 3)) if hw else 0)
        w1, w2 = absw("se_fc1_weight").reshape(sq, e), absw("se_fc2_weight").reshape(e, sq)
        a1 = (pooled + e0) @ w1.t() + absw("se_fc1_bias")
        e1 = LIPSCHITZ[s["se_act"]] * (4 * (e + 2) * EPS * a1 + e0 @ w1.t())
        a2 = (a1 + e1) @ w2.t() + absw("se_fc2_bias")
        e2 = 4 * (sq + 2) * EPS * a2 + e1 @ w2.t()
        eg = (LIPSCHITZ[s["se_gate"]] * e2 + 8 * EPS)[:, :, None, None]
        g = val["gate"].abs()[:, :, None, None]
        err = (y_abs + err) * eg + err * g + 2 * EPS * y_abs * g
        y_abs = val["scaled"].abs()
    pw = absw("project_weight").reshape(cout, e, 1, 1)
    p_mag = F.conv2d(y_abs + err, pw, absw("project_bias"))
    err = LIPSCHITZ[s["project"]] * (4 * (e + 2) * EPS * p_mag + F.conv2d(err, pw))
    out = val["out"]
    if s["residual"]:
        err = err + 4 * EPS * (out.abs() + x.double().abs())
    return err + 4 * EPS * out.abs() + 1e-30


def assert_block_close(out, ref, tol, label=""):
    """NaN / ±Inf positions as the reference's; finite values within ``tol``."""
    out64 = out.double()
    assert out.shape == ref.shape, f"{label}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    nan_o, nan_r = torch.isnan(out64), torch.isnan(ref)
    assert torch.equal(nan_o, nan_r), (f"{label}: NaN positions differ: kernel {nan_o.nonzero()[:5].tolist()} "
                                       f"vs reference {nan_r.nonzero()[:5].tolist()}")
    for sign in (1, -1):
        io, ir = out64 == sign * math.inf, ref == sign * math.inf
        assert torch.equal(io, ir), f"{label}: {sign:+d}*Inf positions differ: {io.nonzero()[:5].tolist()} vs {ir.nonzero()[:5].tolist()}"
    finite = torch.isfinite(ref)
    if finite.any():
        err = (out64 - ref).abs()[finite]
        bound = tol.expand_as(ref)[finite]
        bad = err > bound
        if bad.any():
            i = int(bad.nonzero()[0])
            idx = finite.nonzero()[i].tolist()
            raise AssertionError(f"{label}: {int(bad.sum())} of {err.numel()} values outside tolerance; worst ratio "
                                 f"{float((err / bound).max()):.3g}; first at {idx}: kernel {float(out64[finite][i])!r} "
                                 f"reference {float(ref[finite][i])!r} tol {float(bound[i])!r}")


# For finite randn inputs the worst-case bound above is loose through squeeze-excite (a mean of
# 3,136 terms bounded as 3,138 eps); every such case is also held to this error relative to the
# output's scale (observed: <= 5.1e-7 on scalar, AVX2 and AVX-512), which a wrong bias or tap of
# 1e-3 exceeds.
SCALED_RTOL = 1e-5


def assert_scaled_close(out, ref, label=""):
    if ref.numel() == 0:
        return
    err = float((out.double() - ref).abs().max())
    scale = float(ref.abs().max())
    assert err <= SCALED_RTOL * scale + 1e-30, f"{label}: max error {err:.3g} > {SCALED_RTOL} x max |ref| {scale:.3g}"


def storage_digest(t):
    raw = torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage())
    return hashlib.blake2b(raw.numpy().tobytes(), digest_size=16).digest()


def assert_unaliased(out, *tensors):
    s = out.untyped_storage()
    lo, hi = s.data_ptr(), s.data_ptr() + s.nbytes()
    for t in tensors:
        ts = t.untyped_storage()
        tlo, thi = ts.data_ptr(), ts.data_ptr() + ts.nbytes()
        assert out.numel() == 0 or hi <= tlo or thi <= lo, "the output's storage overlaps an input"


# ---------------------------------------------------------------------------------------------
# Band geometry (mirrors Geometry in csrc/kernels/block/inverted_residual.cpp)


def _band_constants():
    path = os.path.join(REPO, "csrc", "kernels", "block", "inverted_residual.cpp")
    if not os.path.exists(path):
        return None
    text = open(path).read()
    found = {}
    for name in ("kBandBytes", "kWholeImageBytes"):
        m = re.search(rf"{name}\s*=\s*([0-9 *]+);", text)
        found[name] = eval(m.group(1)) if m else None  # noqa: S307 - an integer product like 384 * 1024
    return found if all(found.values()) else None


BAND = _band_constants()


def band_rows(s, h, w):
    """Output rows per band of the executor for this block and input size (None: source not found)."""
    if BAND is None:
        return None
    oh, ow = out_size(s, h, w)

    def band_bytes(rows):
        in_rows = min(h, (rows - 1) * s["stride"] + (s["kh"] - 1) * s["dilation"] + 1)
        return (in_rows * w * s["e"] * 4 if s["expand"] is not None else 0) + \
               (0 if s["se"] else rows * ow * s["e"] * 4)
    if band_bytes(oh) <= BAND["kWholeImageBytes"]:
        return oh
    rows = 1
    while rows < oh and band_bytes(rows + 1) <= BAND["kBandBytes"]:
        rows += 1
    return rows


def band_count(s, h, w):
    rows = band_rows(s, h, w)
    return None if rows is None else -(-out_size(s, h, w)[0] // rows)


# ---------------------------------------------------------------------------------------------
# Cases: (id, spec, (n, h, w))

def _cases():
    cases = []
    # Channel counts around the SIMD tiles (8 / 16 lanes, 16-wide GEMM panels); expansion 1..6.
    chans = [1, 7, 8, 9, 15, 16, 17, 33]
    for i, cin in enumerate(chans):
        cout = chans[(i * 3 + 1) % len(chans)]
        cases.append((f"ch{cin}x{i % 6 + 1}-{cout}", spec(cin, cin * (i % 6 + 1), cout), (2, 7, 7)))
        cases.append((f"ch{cin}-{cin}-res", spec(cin, cin * ((i + 3) % 6 + 1), cin, residual=True, dw="hardswish"),
                      (1, 5, 6)))
    for cout in chans:
        cases.append((f"out{cout}", spec(8, 24, cout, expand="relu6", project="none"), (1, 6, 5)))
    # Kernel 1..7 x stride 1/2 x dilation 1..3, symmetric and asymmetric padding, odd planes.
    for k in range(1, 8):
        for stride in (1, 2):
            d = 1 + (k + stride) % 3
            span = d * (k - 1)
            asym = [span // 3, span - span // 3, span - span // 3, span // 3]
            cases.append((f"k{k}s{stride}d{d}", spec(9, 18, 17, k=k, stride=stride, dilation=d), (1, 13, 17)))
            cases.append((f"k{k}s{stride}d{d}-asym", spec(7, 21, 16, k=k, stride=stride, dilation=d, pads=asym,
                                                          se=5, dw="relu6"), (2, 13, 17)))
    cases.append(("rect-k3x5", spec(8, 16, 9, k=(3, 5), pads=[1, 2, 0, 1]), (1, 9, 11)))
    cases.append(("rect-k7x1-s2", spec(16, 32, 8, k=(7, 1), stride=2, pads=[3, 0, 2, 0], se=8), (1, 13, 17)))
    cases.append(("pad-large", spec(8, 16, 8, k=3, pads=[4, 0, 5, 3]), (1, 3, 4)))
    # Tiny planes.
    for h, w in [(1, 1), (2, 3), (7, 7), (13, 17)]:
        cases.append((f"plane{h}x{w}", spec(16, 48, 16, k=3, residual=True, se=12), (2, h, w)))
        cases.append((f"plane{h}x{w}-k5s2", spec(17, 34, 9, k=5, stride=2, expand=None, se=4), (1, h, w)))
    # Every activation of expand / depthwise / project, both SE activations and gates, with and
    # without expand, SE and residual.
    acts = ["none", "relu", "relu6", "hardswish"]
    for i in range(16):
        se = [0, 6][i % 2]
        cases.append((f"act{i}", spec(16, 64 if i % 4 else 16, 16, k=[3, 5][i % 2],
                                      expand=None if i % 4 == 0 else acts[i % 4], dw=acts[i // 4],
                                      project=acts[(i + 1) % 4], se=se, se_act=["relu", "hardswish"][(i // 2) % 2],
                                      se_gate=["hardsigmoid", "sigmoid"][(i // 4) % 2], residual=i % 3 == 0),
                      (2, 9, 8)))
    # Batch 0..3.
    for n in range(4):
        cases.append((f"batch{n}", spec(8, 32, 8, residual=True), (n, 6, 7)))
        cases.append((f"batch{n}-se", spec(8, 32, 16, se=8, stride=2), (n, 6, 7)))
    # Several bands (sizes from the band budget; test_cases_cover_several_bands checks it).
    cases.append(("bands-112x112x64", spec(16, 64, 24, k=3, stride=2, dw="relu", expand="relu"), (1, 112, 112)))
    cases.append(("bands-112-res", spec(16, 64, 16, k=3, residual=True, dw="relu", expand="relu"), (1, 112, 112)))
    cases.append(("bands-56x56x72-res", spec(24, 72, 24, k=3, residual=True), (2, 56, 56)))
    cases.append(("bands-56x56x72-se-k5s2", spec(24, 72, 40, k=5, stride=2, se=24), (1, 56, 56)))
    cases.append(("bands-56-se-res", spec(24, 72, 24, k=5, se=24, residual=True, se_gate="sigmoid"), (2, 56, 56)))
    cases.append(("bands-dil2-k5", spec(24, 96, 24, k=5, dilation=2, residual=True), (1, 60, 58)))
    cases.append(("bands-dil3-k7-asym", spec(16, 64, 17, k=7, dilation=3, pads=[8, 9, 10, 9]), (1, 61, 50)))
    cases.append(("bands-noexpand", spec(64, 64, 32, k=3, expand=None), (1, 80, 80)))
    cases.append(("bands-noexpand-s2", spec(72, 72, 24, k=5, stride=2, expand=None), (1, 120, 117)))
    # SE blocks whose whole image is one band, large enough that 2 threads split their expand (by
    # pixels: 49 = 24 + 25, 182 = 91 + 91) and their depthwise rows: Large's 7x7 and 14x14 SE
    # blocks, scaled down.
    cases.append(("whole-7x7-se", spec(64, 320, 64, k=5, se=80, residual=True), (2, 7, 7)))
    cases.append(("whole-14x13-se-s2", spec(48, 288, 56, k=5, stride=2, se=72), (1, 14, 13)))
    # ... and with >= 16 channel tiles per thread, split by channel tiles instead (33 tiles:
    # 16 + 17, the last one partial; 37: 18 + 19).
    cases.append(("whole-7x7-se-channels", spec(40, 520, 48, k=3, se=32, se_gate="sigmoid"), (1, 7, 7)))
    cases.append(("whole-9x8-se-channels-s2", spec(56, 584, 56, k=5, stride=2, se=40), (2, 9, 8)))
    return cases


CASES = _cases()
BAND_CASES = [c for c in CASES if c[0].startswith("bands")]


def test_cases_cover_several_bands():
    if BAND is None:
        pytest.skip("csrc/kernels/block/inverted_residual.cpp not found (not a source checkout)")
    counts = {cid: band_count(s, h, w) for cid, s, (n, h, w) in CASES}
    multi = [cid for cid, c in counts.items() if c > 1]
    assert len(multi) >= 6, f"only {multi} run in more than one band (band constants {BAND})"
    assert any(s["se"] and counts[cid] > 1 for cid, s, _ in CASES), "no SE case with several bands"
    assert any(s["expand"] is None and counts[cid] > 1 for cid, s, _ in CASES), "no no-expand case with bands"
    assert any(s["residual"] and counts[cid] > 1 for cid, s, _ in CASES), "no residual case with bands"
    assert any(s["stride"] == 2 and counts[cid] > 1 for cid, s, _ in CASES), "no stride-2 case with bands"
    assert any(s["dilation"] > 1 and counts[cid] > 1 for cid, s, _ in CASES), "no dilated case with bands"
    assert all(c == 1 for cid, c in counts.items() if not cid.startswith("bands")) or True
    print({cid: counts[cid] for cid in multi})


def _build(case, seed, layout="nchw"):
    cid, s, (n, h, w) = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, s["cin"], h, w, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    elif layout == "strided":  # a view: offset, channel slice, row and column steps
        base = torch.randn(n + 1, s["cin"] + 3, 2 * h + 1, 2 * w, generator=g)
        x = base[1:, 2:2 + s["cin"], 1::2, ::2]
        assert x.shape == (n, s["cin"], h, w) and not x.is_contiguous()
    elif layout == "strided_cl":
        base = torch.randn(n, h, w + 1, s["cin"] + 2, generator=g)
        x = base[:, :, 1:, 1:1 + s["cin"]].permute(0, 3, 1, 2)
    weights = make_weights(s, g, conv_shapes=seed % 2 == 0)
    return s, x, weights


def _check_on_every_isa(s, x, weights, threads=1, label=""):
    config = config_of(s)
    packed = pack(weights, config)
    ref = block_ref64(x, weights, s)
    tol = block_tolerance(x, weights, s)
    # The project's reference (reads the packed tensor) agrees with the raw-weight composition.
    ref_pkg = reference.inverted_residual(x.double(), packed, config)
    assert_block_close(ref_pkg, ref, tol, f"{label} mnv3ext.reference.inverted_residual")
    outs = {}
    for isa in ISAS:
        digests = (storage_digest(x), storage_digest(packed))
        with mnv3ext.use_isa(isa), torch_threads(threads):
            out = OPS.inverted_residual(x, packed, config)
        assert (storage_digest(x), storage_digest(packed)) == digests, f"{label} [{isa}]: an input was written"
        assert_unaliased(out, x, packed)
        assert out.dtype == torch.float32
        assert_block_close(out, ref, tol, f"{label} [{isa}]")
        if bool(torch.isfinite(x).all()):
            assert_scaled_close(out, ref, f"{label} [{isa}]")
        outs[isa] = out
    return outs, ref


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_numerics_every_isa(case):
    s, x, weights = _build(case, seed=zlib.crc32(case[0].encode()) % 1000)
    outs, ref = _check_on_every_isa(s, x, weights, label=case[0])
    if x.shape[0]:
        assert ref.abs().max() > 0.05, "degenerate case: the block's output is ~0"


LAYOUT_CASES = [c for c in CASES if c[0] in ("ch9x4-33", "k5s2d2-asym", "act5", "batch3-se", "plane2x3",
                                             "bands-56x56x72-se-k5s2", "bands-112-res")]


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided", "strided_cl"])
@pytest.mark.parametrize("case", LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_memory_formats_and_strided_inputs(case, layout):
    s, x, weights = _build(case, seed=7, layout=layout)
    outs, _ = _check_on_every_isa(s, x, weights, label=f"{case[0]} {layout}")
    for isa, out in outs.items():
        if layout in ("nchw", "channels_last"):
            fmt = CL if layout == "channels_last" else torch.contiguous_format
            assert out.is_contiguous(memory_format=fmt), f"[{isa}] output format does not follow the input's {layout}"
        else:
            assert out.is_contiguous() or out.is_contiguous(memory_format=CL)
    # Same values in any layout: the result of a contiguous copy is bit-identical.
    config = config_of(s)
    packed = pack(weights, config)
    for isa in ISAS:
        with mnv3ext.use_isa(isa):
            a = OPS.inverted_residual(x, packed, config)
            b = OPS.inverted_residual(x.contiguous(), packed, config)
        assert torch.equal(a, b), f"[{isa}] {layout} input gives other values than its contiguous copy"


@pytest.mark.parametrize("case", BAND_CASES + [c for c in CASES if c[0] in ("batch3-se", "act1", "act6")
                                                 or c[0].startswith("whole-")],
                         ids=lambda c: c[0])
def test_one_and_two_threads_bit_identical(case):
    s, x, weights = _build(case, seed=11)
    config = config_of(s)
    packed = pack(weights, config)
    for isa in ISAS:
        with mnv3ext.use_isa(isa):
            with torch_threads(1):
                one = OPS.inverted_residual(x, packed, config)
            with torch_threads(2):
                two = OPS.inverted_residual(x, packed, config)
                again = OPS.inverted_residual(x.contiguous(memory_format=CL), packed, config)
        assert torch.equal(one, two), f"[{isa}] 1 vs 2 threads differ: max {float((one - two).abs().max())}"
        assert torch.equal(one, again)


def test_two_threads_numerics_on_band_cases():
    """Thread ranges cut bands at other rows: still within tolerance on every ISA."""
    for case in BAND_CASES[:4]:
        s, x, weights = _build(case, seed=13)
        _check_on_every_isa(s, x, weights, threads=2, label=case[0] + " 2 threads")


def test_band_buffer_reuse_across_calls_and_shapes():
    """The per-thread band buffers outlive a call: a big call, then smaller and differently shaped
    ones (and back) on the same thread must not see stale rows."""
    seq = [BAND_CASES[0], ("small", spec(16, 64, 24, k=3, stride=2, dw="relu", expand="relu"), (1, 9, 10)),
           BAND_CASES[3], ("tiny-se", spec(24, 72, 40, k=5, stride=2, se=24), (2, 3, 3)), BAND_CASES[7],
           BAND_CASES[0]]
    built = [_build(c, seed=17 + i) for i, c in enumerate(seq)]
    for isa in ISAS:
        with mnv3ext.use_isa(isa):
            for (s, x, weights), case in zip(built, seq):
                config = config_of(s)
                packed = pack(weights, config)
                out = OPS.inverted_residual(x, packed, config)
                ref = block_ref64(x, weights, s)
                assert_block_close(out, ref, block_tolerance(x, weights, s), f"{case[0]} [{isa}] after other shapes")
                assert_scaled_close(out, ref, f"{case[0]} [{isa}] after other shapes")


@pytest.mark.parametrize("where", ["nan", "inf", "-inf", "mixed"])
@pytest.mark.parametrize("se", [0, 6])
def test_nonfinite_inputs_propagate_as_in_the_reference(where, se):
    s = spec(8, 24, 9, k=3, se=se, residual=False, dw="relu6", expand="hardswish", project="none")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 8, 9, 10, generator=g)
    weights = make_weights(s, g)
    if where == "nan":
        x[0, 3, 4, 5] = math.nan
    elif where == "inf":
        x[1, 0, 0, 0] = math.inf
    elif where == "-inf":
        x[1, 7, 8, 9] = -math.inf
    else:
        x[0, 1, 2, 2] = math.inf
        x[0, 2, 6, 7] = -math.inf
        x[2, 5, 1, 9] = math.nan
    ref = block_ref64(x, weights, s)
    assert not torch.isfinite(ref).all(), "the case does not reach the output"
    assert torch.isfinite(ref[2 if where in ("nan", "inf", "-inf") and where != "nan" else 1]).all() or where == "mixed"
    tol = block_tolerance(x, weights, s)
    config = config_of(s)
    packed = pack(weights, config)
    for isa in ISAS:
        with mnv3ext.use_isa(isa):
            out = OPS.inverted_residual(x, packed, config)
        assert_block_close(out, ref, tol, f"{where} se={se} [{isa}]")
    # A residual adds the input: a non-finite input element shows at its own position.
    s2 = spec(8, 24, 8, k=3, residual=True, se=se)
    w2 = make_weights(s2, g)
    config2 = config_of(s2)
    packed2 = pack(w2, config2)
    ref2 = block_ref64(x, w2, s2)
    for isa in ISAS:
        with mnv3ext.use_isa(isa):
            out = OPS.inverted_residual(x, packed2, config2)
        assert_block_close(out, ref2, block_tolerance(x, w2, s2), f"{where} residual se={se} [{isa}]")


def test_output_never_aliases_input_even_when_shapes_agree():
    s = spec(16, 16, 16, k=1, pads=[0, 0], expand=None, residual=True)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 16, 5, 5, generator=g).contiguous(memory_format=CL)
    w = make_weights(s, g)
    config = config_of(s)
    packed = pack(w, config)
    for isa in ISAS:
        with mnv3ext.use_isa(isa):
            out = OPS.inverted_residual(x, packed, config)
            out2 = mnv3ext.ops.inverted_residual(x, packed, config)
        assert_unaliased(out, x, packed)
        assert_unaliased(out2, x, packed)
        assert out.data_ptr() != out2.data_ptr()


# ---------------------------------------------------------------------------------------------
# pack / config


def test_block_config_fields_and_codes():
    c = mnv3ext.ops.block_config(16, 64, 24, [5, 3], 2, [1, 2, 3, 4], 2, None, "relu6", 16, "hardswish",
                                 "sigmoid", False, "relu")
    assert len(c) == 19 == len(mnv3ext.ops.CONFIG_FIELDS)
    d = mnv3ext.ops.describe_config(c)
    assert d == dict(in_channels=16, expanded_channels=64, out_channels=24, kernel_h=5, kernel_w=3, stride=2,
                     dilation=2, pad_top=1, pad_left=2, pad_bottom=3, pad_right=4, has_expand=0,
                     expand_activation="none", dw_activation="relu6", se_squeeze=16, se_activation="hardswish",
                     se_gate="sigmoid", has_residual=0, project_activation="relu")
    sym = mnv3ext.ops.block_config(8, 8, 8, [3, 3], 1, [1, 2])
    assert sym[7:11] == [1, 2, 1, 2]


def test_packing_is_a_copy_of_the_raw_weights():
    """The sections of the packed tensor hold the raw weights (read back with the layout the
    C++ side reports); two packings of the same weights are bit-identical."""
    s = spec(9, 27, 17, k=(3, 5), se=7)
    g = torch.Generator().manual_seed(2)
    w = make_weights(s, g)
    config = config_of(s)
    packed = pack(w, config)
    lay = mnv3ext._C.block_layout(config)
    assert packed.shape == (lay["total"],) and lay["total"] % 16 == 0
    assert all(lay[k] % 16 == 0 for k in lay)
    sq, e = 7, 27
    assert torch.equal(packed[lay["se_fc1"]:lay["se_fc1"] + sq * e], w["se_fc1_weight"].reshape(-1))
    assert torch.equal(packed[lay["se_b1"]:lay["se_b1"] + sq], w["se_fc1_bias"])
    assert torch.equal(packed[lay["se_fc2"]:lay["se_fc2"] + e * sq], w["se_fc2_weight"].reshape(-1))
    assert torch.equal(packed[lay["se_b2"]:lay["se_b2"] + e], w["se_fc2_bias"])
    ew, eb = reference.unpack_gemm_weight(packed[lay["expand"]:lay["dw"]], 9, 27)
    assert torch.equal(ew, w["expand_weight"].reshape(27, 9)) and torch.equal(eb, w["expand_bias"])
    pw, pb = reference.unpack_gemm_weight(packed[lay["project"]:], 27, 17)
    assert torch.equal(pw, w["project_weight"].reshape(17, 27)) and torch.equal(pb, w["project_bias"])
    assert torch.equal(pack(w, config), packed)


# ---------------------------------------------------------------------------------------------
# API surface


def _opcheck_args(channels_last, se, residual):
    s = spec(8, 24, 8 if residual else 12, k=3, stride=1 if residual else 2, se=se, residual=residual)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 8, 9, 7, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=CL)
    w = make_weights(s, g)
    return s, x, w, config_of(s)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("se, residual", [(0, False), (6, True)])
def test_opcheck(channels_last, se, residual):
    s, x, w, config = _opcheck_args(channels_last, se, residual)
    torch.library.opcheck(OPS.pack_inverted_residual.default, tuple(w[k] for k in PACK_ORDER) + (config,))
    packed = pack(w, config)
    torch.library.opcheck(OPS.inverted_residual.default, (x, packed, config))


def _module(s, g, same_padding=False):
    w = make_weights(s, g)
    return FusedInvertedResidual(
        dw_weight=w["dw_weight"], dw_bias=w["dw_bias"], stride=s["stride"], padding=s["pads"],
        dilation=s["dilation"], dw_activation=s["dw"], expand_weight=w["expand_weight"],
        expand_bias=w["expand_bias"], expand_activation=s["expand"] or "none",
        se_fc1_weight=w["se_fc1_weight"], se_fc1_bias=w["se_fc1_bias"], se_fc2_weight=w["se_fc2_weight"],
        se_fc2_bias=w["se_fc2_bias"], se_activation=s["se_act"], se_gate=s["se_gate"],
        project_weight=w["project_weight"], project_bias=w["project_bias"], project_activation=s["project"],
        residual=s["residual"], same_padding=same_padding).eval(), w


def _same_pads(size, k, stride, d):
    total = max((-(-size // stride) - 1) * stride + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def test_fused_module_matches_reference_incl_tf_same_padding():
    g = torch.Generator().manual_seed(8)
    for stride, k, (h, w_) in [(2, 5, (13, 16)), (2, 3, (14, 9)), (1, 3, (7, 8))]:
        s = spec(8, 32, 16, k=k, stride=stride, se=8, dw="hardswish")
        m, w = _module(s, g, same_padding=True)
        x = torch.randn(2, 8, h, w_, generator=g)
        t, b = _same_pads(h, k, stride, 1)
        l, r = _same_pads(w_, k, stride, 1)
        s_same = dict(s, pads=[t, l, b, r])
        with torch.no_grad():
            out = m(x)
        assert_block_close(out, block_ref64(x, w, s_same), block_tolerance(x, w, s_same), f"same k{k} s{stride}")
        assert out.shape[2:] == (-(-h // stride), -(-w_ // stride))
    assert "same" in repr(m)


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(9)
    m, w = _module(spec(8, 32, 8, k=3, se=8, residual=True), g)
    ms, _ = _module(spec(8, 24, 12, k=5, stride=2), g, same_padding=True)
    seq = torch.nn.Sequential(m, ms).eval()
    compiled = torch.compile(seq, fullgraph=True)
    for shape in [(1, 8, 12, 12), (2, 8, 11, 13)]:
        x = torch.randn(shape, generator=g)
        with torch.no_grad():
            expected = seq(x)
            got = compiled(x)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def run_python(code):
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(mnv3ext.__file__)))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tempfile.gettempdir(),
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": package_parent})


def test_torch_export_save_and_load_in_fresh_process(tmp_path):
    g = torch.Generator().manual_seed(10)
    s = spec(8, 32, 8, k=3, se=8, residual=True)
    m, w = _module(s, g)
    x = torch.randn(2, 8, 10, 9, generator=g)
    exported = torch.export.export(m, (x,))
    path = tmp_path / "block.pt2"
    torch.export.save(exported, str(path))
    ref = block_ref64(x, w, s)
    torch.save({"x": x, "ref": ref, "tol": block_tolerance(x, w, s)}, tmp_path / "io.pt")
    result = run_python(f"""
        import torch, mnv3ext
        program = torch.export.load({str(path)!r})
        io = torch.load({str(tmp_path / 'io.pt')!r})
        out = program.module()(io["x"])
        err = (out.double() - io["ref"]).abs()
        assert bool((err <= io["tol"]).all()), float(err.max())
        print("ok")
    """)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_torchscript_of_the_module(tmp_path):
    g = torch.Generator().manual_seed(12)
    for same in (False, True):
        s = spec(8, 24, 8, k=3, se=6, residual=not same, stride=2 if same else 1)
        m, _ = _module(s, g, same_padding=same)
        scripted = torch.jit.script(m)
        x = torch.randn(1, 8, 11, 10, generator=g)
        with torch.no_grad():
            assert torch.equal(scripted(x), m(x))
        path = tmp_path / f"block{same}.ts"
        torch.jit.save(scripted, str(path))
        with torch.no_grad():
            assert torch.equal(torch.jit.load(str(path))(x), m(x))


def test_state_dict_round_trip_repacks():
    g = torch.Generator().manual_seed(14)
    s = spec(9, 27, 9, k=5, se=7, residual=True)
    a, _ = _module(s, g)
    b, _ = _module(s, g)  # other random weights
    x = torch.randn(2, 9, 8, 8, generator=g)
    sd = a.state_dict()
    assert "packed_weights" not in sd, "the packed copy must not be saved"
    assert not torch.equal(a.packed_weights, b.packed_weights)
    b.load_state_dict(sd)
    assert torch.equal(b.packed_weights, a.packed_weights), "packed weights not rebuilt on load"
    with torch.no_grad():
        assert torch.equal(b(x), a(x))
    import io
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    c, _ = _module(s, g)
    c.load_state_dict(torch.load(buf))
    with torch.no_grad():
        assert torch.equal(c(x), a(x))


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_eager_entry_point_equals_torch_op(layout):
    case = next(c for c in CASES if c[0] == "act7")
    s, x, w = _build(case, seed=15, layout=layout)
    config = config_of(s)
    packed = pack(w, config)
    for isa in ISAS:
        with mnv3ext.use_isa(isa):
            a = mnv3ext.ops.inverted_residual(x, packed, config)
            b = OPS.inverted_residual(x, packed, config)
            with torch.no_grad():
                c = mnv3ext.ops.inverted_residual(x, packed, config)
        assert torch.equal(a, b) and torch.equal(a, c), f"[{isa}] entry point and torch op differ"
        assert a.stride() == b.stride()


def test_fake_kernel_matches_real_shapes_and_strides():
    for cid, s, (n, h, w) in [c for c in CASES if c[0] in ("k7s2d3-asym", "plane1x1", "batch0-se", "act2")]:
        config = config_of(s)
        g = torch.Generator().manual_seed(1)
        wts = make_weights(s, g)
        packed = pack(wts, config)
        for cl in (False, True):
            x = torch.randn(n, s["cin"], h, w, generator=g)
            if cl:
                x = x.contiguous(memory_format=CL)
            real = OPS.inverted_residual(x, packed, config)
            meta = OPS.inverted_residual(x.to("meta"), packed.to("meta"), config)
            assert meta.shape == real.shape == (n, s["cout"], *out_size(s, h, w)), cid
            assert meta.stride() == real.stride(), f"{cid} cl={cl}: fake strides {meta.stride()} != {real.stride()}"
            assert meta.is_contiguous(memory_format=CL) == real.is_contiguous(memory_format=CL)


@pytest.mark.parametrize("n, cin, cout, h, w", [(2, 16, 16, 1, 1), (2, 8, 1, 5, 6), (0, 8, 16, 6, 7)])
def test_fake_and_real_strides_identical_for_outputs_dense_in_both_formats(n, cin, cout, h, w):
    s = spec(cin, cin * 3, cout, k=3)
    config = config_of(s)
    packed = pack(make_weights(s, torch.Generator().manual_seed(0)), config)
    x = torch.randn(n, cin, h, w)
    real = OPS.inverted_residual(x, packed, config)
    meta = OPS.inverted_residual(x.to("meta"), packed.to("meta"), config)
    assert meta.stride() == real.stride(), f"fake strides {meta.stride()} != real {real.stride()}"


# ---------------------------------------------------------------------------------------------
# Bad input: errors name the argument, never a crash

_BAD_S = spec(8, 24, 8, k=3, se=6, residual=True)


def _bad_setup():
    g = torch.Generator().manual_seed(0)
    w = make_weights(_BAD_S, g)
    config = config_of(_BAD_S)
    return torch.randn(1, 8, 6, 6, generator=g), pack(w, config), config, w


def _cfg(**changes):
    c = config_of(_BAD_S)
    for k, v in changes.items():
        c[mnv3ext.ops.CONFIG_FIELDS.index(k)] = v
    return c


BAD_CALLS = {
    # config
    "config too short": (lambda x, p, c: (x, p, c[:18]), ValueError, "config"),
    "config too long": (lambda x, p, c: (x, p, c + [0]), ValueError, "config"),
    "config negative": (lambda x, p, c: (x, p, _cfg(stride=-1)), ValueError, "config"),
    "config negative channels": (lambda x, p, c: (x, p, _cfg(out_channels=-8)), ValueError, "config"),
    "config zero channels": (lambda x, p, c: (x, p, _cfg(expanded_channels=0)), ValueError, "config"),
    "config kernel 8": (lambda x, p, c: (x, p, _cfg(kernel_h=8)), ValueError, "config"),
    "config kernel 0": (lambda x, p, c: (x, p, _cfg(kernel_w=0)), ValueError, "config"),
    "config stride 0": (lambda x, p, c: (x, p, _cfg(stride=0)), ValueError, "config"),
    "config dilation 0": (lambda x, p, c: (x, p, _cfg(dilation=0)), ValueError, "config"),
    "config residual stride 2": (lambda x, p, c: (x, p, _cfg(stride=2)), ValueError, "config"),
    "config residual in != out": (lambda x, p, c: (x, p, _cfg(out_channels=9)), ValueError, "config"),
    "config has_expand 2": (lambda x, p, c: (x, p, _cfg(has_expand=2)), ValueError, "config"),
    "config no expand, e != in": (lambda x, p, c: (x, p, _cfg(has_expand=0)), ValueError, "config"),
    "config activation code 9": (lambda x, p, c: (x, p, _cfg(dw_activation=9)), ValueError, "config"),
    "config dw sigmoid": (lambda x, p, c: (x, p, _cfg(dw_activation=5)), ValueError, "config"),
    "config se gate relu": (lambda x, p, c: (x, p, _cfg(se_gate=1)), ValueError, "config"),
    "config se act none": (lambda x, p, c: (x, p, _cfg(se_activation=0)), ValueError, "config"),
    "config huge": (lambda x, p, c: (x, p, _cfg(pad_top=2**40)), ValueError, "config"),
    "config huge channels": (lambda x, p, c: (x, p, _cfg(expanded_channels=2**45)), ValueError, "config"),
    "config kernel larger than input": (lambda x, p, c: (x, p, _cfg(pad_top=0, pad_bottom=0, pad_left=0, pad_right=0,
                                                                        dilation=4, has_residual=0)),
                                        ValueError, "config"),
    "config residual changes size": (lambda x, p, c: (x, p, _cfg(pad_top=0)), ValueError, "config"),
    # packed_weights
    "packed too short": (lambda x, p, c: (x, p[:-16], c), ValueError, "packed_weights"),
    "packed too long": (lambda x, p, c: (x, torch.cat([p, p[:1]]), c), ValueError, "packed_weights"),
    "packed empty": (lambda x, p, c: (x, p[:0], c), ValueError, "packed_weights"),
    "packed 2-D": (lambda x, p, c: (x, p.reshape(-1, 16), c), ValueError, "packed_weights"),
    "packed float64": (lambda x, p, c: (x, p.double(), c), TypeError, "packed_weights"),
    "packed meta": (lambda x, p, c: (x, p.to("meta"), c), ValueError, "packed_weights"),
    # input
    "input channels": (lambda x, p, c: (x[:, :7], p, c), ValueError, "input"),
    "input float64": (lambda x, p, c: (x.double(), p, c), TypeError, "input"),
    "input float16": (lambda x, p, c: (x.half(), p, c), TypeError, "input"),
    "input int": (lambda x, p, c: (x.int(), p, c), TypeError, "input"),
    "input 3-D": (lambda x, p, c: (x[0], p, c), ValueError, "input"),
    "input 5-D": (lambda x, p, c: (x[None], p, c), ValueError, "input"),
    "input empty H": (lambda x, p, c: (x[:, :, :0], p, c), ValueError, "input"),
    "input meta, packed cpu": (lambda x, p, c: (x.to("meta"), p, c), ValueError, "packed_weights"),
}


@pytest.mark.parametrize("entry", ["torch.ops", "mnv3ext.ops"])
@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_input_is_rejected_naming_the_argument(name, entry):
    x, p, c, _ = _bad_setup()
    make, exc, arg = BAD_CALLS[name]
    args = make(x, p, c)
    fn = OPS.inverted_residual if entry == "torch.ops" else mnv3ext.ops.inverted_residual
    with pytest.raises(exc, match=rf"^{arg}\b"):
        fn(*args)
    # The fake kernel (torch.compile / export) refuses the same way.
    if args[0].device.type == "cpu" and args[1].device.type == "cpu":
        with pytest.raises(exc, match=rf"^{arg}\b"):
            OPS.inverted_residual(args[0].to("meta"), args[1].to("meta"), args[2])


def test_bad_config_types():
    x, p, c, _ = _bad_setup()
    for bad in ([1.5] + c[1:], ["8"] + c[1:]):
        with pytest.raises((TypeError, RuntimeError), match="config"):
            OPS.inverted_residual(x, p, bad)
    with pytest.raises(TypeError, match="^config"):
        mnv3ext.ops.inverted_residual(x, p, 8)
    with pytest.raises(TypeError, match="^config"):
        mnv3ext.ops.inverted_residual(x, p, [1.5] + c[1:])


def test_bad_input_leaves_the_op_usable():
    x, p, c, _ = _bad_setup()
    good = OPS.inverted_residual(x, p, c)
    for name, (make, exc, _) in BAD_CALLS.items():
        with pytest.raises(exc):
            OPS.inverted_residual(*make(x, p, c))
    assert torch.equal(OPS.inverted_residual(x, p, c), good)


def _pack_with(w, config, **changes):
    args = {**w, **changes}
    return OPS.pack_inverted_residual(*(args[k] for k in PACK_ORDER), config)


BAD_PACKS = {
    "missing expand_weight": (dict(expand_weight=None), ValueError, "expand_weight"),
    "missing project_weight": (dict(project_weight=None), (ValueError, RuntimeError, TypeError), "project_weight"),
    "missing dw_weight": (dict(dw_weight=None), (ValueError, RuntimeError, TypeError), "dw_weight"),
    "missing se_fc1_weight": (dict(se_fc1_weight=None), ValueError, "se_fc1_weight"),
    "missing se_fc2_weight": (dict(se_fc2_weight=None), ValueError, "se_fc2_weight"),
    "wrong dw_weight kernel": (dict(dw_weight=torch.randn(24, 1, 3, 5)), ValueError, "dw_weight"),
    "wrong dw_weight channels": (dict(dw_weight=torch.randn(23, 1, 3, 3)), ValueError, "dw_weight"),
    "wrong dw_weight dims": (dict(dw_weight=torch.randn(24, 3, 3)), ValueError, "dw_weight"),
    "wrong dw_bias": (dict(dw_bias=torch.randn(25)), ValueError, "dw_bias"),
    "wrong expand_weight": (dict(expand_weight=torch.randn(24, 7, 1, 1)), ValueError, "expand_weight"),
    "3x3 expand_weight": (dict(expand_weight=torch.randn(24, 8, 3, 3)), ValueError, "expand_weight"),
    "wrong expand_bias": (dict(expand_bias=torch.randn(24, 1)), ValueError, "expand_bias"),
    "wrong se_fc1_weight": (dict(se_fc1_weight=torch.randn(5, 24)), ValueError, "se_fc1_weight"),
    "transposed se_fc2_weight": (dict(se_fc2_weight=torch.randn(6, 24)), ValueError, "se_fc2_weight"),
    "wrong se_fc2_bias": (dict(se_fc2_bias=torch.randn(6)), ValueError, "se_fc2_bias"),
    "wrong project_weight": (dict(project_weight=torch.randn(8, 23, 1, 1)), ValueError, "project_weight"),
    "wrong project_bias": (dict(project_bias=torch.randn(9)), ValueError, "project_bias"),
    "float64 project_weight": (dict(project_weight=torch.randn(8, 24, 1, 1, dtype=torch.float64)), TypeError,
                               "project_weight"),
    "int dw_bias": (dict(dw_bias=torch.zeros(24, dtype=torch.int32)), TypeError, "dw_bias"),
    "meta se_fc1_bias": (dict(se_fc1_bias=torch.randn(6, device="meta")), ValueError, "se_fc1_bias"),
}


@pytest.mark.parametrize("name", list(BAD_PACKS))
def test_bad_pack_is_rejected_naming_the_weight(name):
    _, _, config, w = _bad_setup()
    changes, exc, arg = BAD_PACKS[name]
    with pytest.raises(exc, match=arg):
        _pack_with(w, config, **changes)


def test_pack_extra_weights_for_absent_layers_are_rejected():
    s = spec(8, 8, 8, k=3, expand=None, se=0)
    g = torch.Generator().manual_seed(1)
    w = make_weights(s, g)
    config = config_of(s)
    pack(w, config)  # fine as is
    for name, t in [("expand_weight", torch.randn(8, 8, 1, 1)), ("expand_bias", torch.randn(8)),
                    ("se_fc1_weight", torch.randn(2, 8)), ("se_fc1_bias", torch.randn(2)),
                    ("se_fc2_weight", torch.randn(8, 2)), ("se_fc2_bias", torch.randn(8))]:
        with pytest.raises(ValueError, match=f"^{name}"):
            _pack_with(w, config, **{name: t})
    for bad in (config[:5], _cfg(kernel_h=8)):
        with pytest.raises(ValueError, match="^config"):
            pack(w, bad)


def test_pack_missing_biases_pack_as_zero():
    s = spec(8, 24, 8, k=3, se=6)
    g = torch.Generator().manual_seed(6)
    w = make_weights(s, g)
    config = config_of(s)
    no_bias = {k: (None if k.endswith("bias") else v) for k, v in w.items()}
    zero_bias = {k: (torch.zeros_like(v) if k.endswith("bias") and v is not None else v) for k, v in w.items()}
    assert torch.equal(_pack_with(no_bias, config), _pack_with(zero_bias, config))


def test_strided_and_offset_packed_weights_give_the_same_result():
    case = next(c for c in CASES if c[0] == "act5")
    s, x, w = _build(case, seed=21)
    config = config_of(s)
    packed = pack(w, config)
    strided = torch.stack([packed, torch.full_like(packed, math.nan)], 1)[:, 0]  # stride 2, NaN between
    offset = torch.cat([torch.full((3,), math.nan), packed])[3:]  # storage offset 3 (unaligned)
    for isa in ISAS:
        with mnv3ext.use_isa(isa):
            want = OPS.inverted_residual(x, packed, config)
            got_strided = OPS.inverted_residual(x, strided, config)
            got_offset = OPS.inverted_residual(x, offset, config)
        assert torch.equal(got_strided, want), f"[{isa}] strided packed_weights"
        assert torch.equal(got_offset, want), f"[{isa}] packed_weights at storage offset 3"


def test_gradients_are_refused_clearly():
    _, p, c, _ = _bad_setup()
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference-only"):
        OPS.inverted_residual(x, p, c)
    with pytest.raises(RuntimeError, match="inference-only"):
        mnv3ext.ops.inverted_residual(x, p, c)
    with torch.no_grad():
        OPS.inverted_residual(x, p, c)
    m, _ = _module(_BAD_S, torch.Generator().manual_seed(1))
    with pytest.raises(RuntimeError, match="inference-only"):
        m.train()(x.detach())
