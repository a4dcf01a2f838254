"""Property-based fuzzing of the fused ops against the float64 reference, on every ISA path.

What is generated (hypothesis; tensor data comes from a drawn seed so examples stay cheap):

* ``dwconv2d`` / ``dwconv2d_packed``: N 0..3, C 1..70 (tile edges and primes favoured), H, W 1..24,
  rectangular kernels 1..7, stride 1..3, dilation 1..3 per axis, symmetric (2 values) or
  asymmetric (top, left, bottom, right) padding 0..10, every activation, bias or none.
  Geometries whose padded input is smaller than the dilated kernel are *not* filtered out: the
  test asserts that the op (and its fake/meta kernel) raises ``ValueError`` for them.
* ``squeeze_excite``: N 0..3, C 1..70, S 1..40, H, W 1..24, every activation x gate, 2-D
  (``nn.Linear``) or 4-D (1x1 ``Conv2d``) fc weights, contiguous or transposed, biases or none.
* Input layouts: NCHW, channels_last, sliced views (offset + steps), any permutation of a
  differently laid-out tensor permuted back to NCHW shape (channels_last is one of them),
  expanded views (stride 0 on a size-1 batch / channel / row / column), and dense tensors with
  arbitrary strides on their size-1 dimensions. Weights and biases are also non-contiguous at times.
* Values: randn at scales 1e-3 .. 1e3 with ±0, denormals, ±1e30, ±3e38, NaN and ±Inf mixed in
  (inputs and biases always may carry them; weights carry finite specials often and non-finite
  ones rarely).

Every example runs on every ISA in ``mnv3ext.available_isas()`` and checks:

* shape, and strides equal to the fake (meta) kernel's (so torch.compile sees the real layout);
* the inputs (the whole underlying storage of every tensor argument, including bytes outside a
  view) hash identically before and after the call; the output's storage overlaps none of them;
* NaN positions equal the reference's; ±Inf positions and signs equal the reference's;
* finite values within a tolerance derived from float32 error analysis, computed per element.

Tolerance. The reference runs in float64 on the same float32 values. For a sum of k terms
float32 accumulation (any order, with or without FMA) errs by at most ~k*eps*M where
M = sum |x_i*w_i| (+|bias|) is computed in float64, eps = 2**-24. The test allows
``4*(k+2)*eps*M*L + 4*eps*|ref| + 1e-37`` where L is the
activation's Lipschitz constant (1.5 for hardswish, else 1). So huge magnitudes (1e30) get an
error bound relative to the magnitudes that were summed, which is exactly what float32
cancellation can lose, while ordinary values are held to a few ulps per tap. For
squeeze-excite the same bound is propagated through mean -> fc1 -> act -> fc2 -> gate
(Lipschitz 1/4 for sigmoid, 1/6 for hardsigmoid) -> multiply.

Where float32 and float64 semantics legitimately differ, elements are excluded (and counted
with ``hypothesis.event``), never silently accepted:

* overflow: where the finite magnitude bound M (or a squeeze-excite intermediate) exceeds 1e37,
  float32 partial sums may overflow to ±Inf (or Inf-Inf=NaN) where float64 does not;
* non-finite *weights* on taps that fall into the zero padding: PyTorch computes 0*Inf = NaN
  there, kernels that skip padding taps give the sum of the in-bounds taps; both are accepted
  (the C++ kernel tests made the same decision). Non-finite *inputs* never fall in padding and
  must propagate exactly.
* the sign of zero is not compared (-0.0 == 0.0).

Profiles (environment variable ``MNV3EXT_HYPOTHESIS_PROFILE``):

* ``ci`` (default): 700 + 500 + 700 examples (dwconv2d, dwconv2d_packed, squeeze_excite),
  each on every ISA; a couple of minutes on a 2-core machine.
* ``long``: 10,000 examples per op (``MNV3EXT_HYPOTHESIS_EXAMPLES`` overrides the count)::

      MNV3EXT_HYPOTHESIS_PROFILE=long python3 -m pytest tests/test_fuzz_ops.py -q \\
          -p no:cacheprovider --hypothesis-show-statistics

Failures print a ``@reproduce_failure`` blob and the drawn seed.
"""
from __future__ import annotations

import contextlib
import hashlib
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import mnv3ext
from mnv3ext import reference

ISAS = mnv3ext.available_isas()
# torch.set_num_threads value for the kernel calls (the kernels split work by it); the float64
# reference always runs on 1 thread (float64 grouped conv with several OpenMP threads on a busy
# machine is ~50x slower).
KERNEL_THREADS = [1, 2, 3]
PROFILE = os.environ.get("MNV3EXT_HYPOTHESIS_PROFILE", "ci")
_COUNTS = {
    "ci": {"dwconv2d": 700, "dwconv2d_packed": 500, "squeeze_excite": 700},
    "long": {"dwconv2d": 10_000, "dwconv2d_packed": 10_000, "squeeze_excite": 10_000},
}
if PROFILE not in _COUNTS:
    raise ValueError(f"MNV3EXT_HYPOTHESIS_PROFILE: expected one of {sorted(_COUNTS)}, got {PROFILE!r}")
for _name in _COUNTS:
    settings.register_profile(
        f"mnv3ext-{_name}", deadline=None, print_blob=True, derandomize=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
_BASE = settings.get_profile(f"mnv3ext-{PROFILE}")


def examples(op: str) -> settings:
    count = int(os.environ.get("MNV3EXT_HYPOTHESIS_EXAMPLES", _COUNTS[PROFILE][op]))
    return settings(_BASE, max_examples=count)


EPS = 2.0 ** -24
OVERFLOW_BOUND = 1e37
TINY = 1e-37
DW_ACTS = ["none", "relu", "relu6", "hardswish"]
LIPSCHITZ = {"none": 1.0, "relu": 1.0, "relu6": 1.0, "hardswish": 1.5, "hardsigmoid": 1 / 6, "sigmoid": 0.25}
EDGE_CHANNELS = [1, 2, 3, 5, 7, 8, 9, 11, 13, 15, 16, 17, 23, 29, 31, 32, 33, 37, 41, 47, 48, 49,
                 53, 59, 61, 63, 64, 65, 67, 70]
SPECIAL_FINITE = [0.0, -0.0, 1e30, -1e30, 3e38, -3e38, 1e-40, -1e-45, 1.0]
SPECIAL_NONFINITE = [float("nan"), float("inf"), float("-inf")]
LAYOUTS = ["nchw", "channels_last", "slice", "slice_cl", "permute", "expand", "size1_strides"]

channels = st.one_of(st.sampled_from(EDGE_CHANNELS), st.integers(1, 70))


# ---------------------------------------------------------------------------------------------
# Tensor construction


@st.composite
def value_spec(draw, nonfinite=True):
    """How to fill a tensor: scale, fraction of special values, which specials."""
    pool = SPECIAL_FINITE + (SPECIAL_NONFINITE if nonfinite else [])
    return dict(
        scale=draw(st.sampled_from([1.0, 1.0, 1e-3, 1e3])),
        special_fraction=draw(st.sampled_from([0.0, 0.0, 0.01, 0.1, 0.5, 1.0])),
        specials=draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4)),
        zero=draw(st.integers(0, 15)) == 0,  # an all-zero tensor now and then
    )


def fill(shape, spec, g) -> torch.Tensor:
    t = torch.randn(shape, generator=g) * spec["scale"]
    if spec["zero"]:
        t.zero_()
    if spec["special_fraction"] and t.numel():
        flat = t.view(-1)
        mask = torch.rand(flat.shape, generator=g) < spec["special_fraction"]
        pool = torch.tensor(spec["specials"], dtype=torch.float32)
        picks = pool[torch.randint(len(spec["specials"]), flat.shape, generator=g)]
        flat[mask] = picks[mask]
    return t


def make_input(shape, layout, spec, g, perm) -> torch.Tensor:
    n, c, h, w = shape
    if layout == "nchw":
        return fill(shape, spec, g)
    if layout == "channels_last":
        return fill(shape, spec, g).contiguous(memory_format=torch.channels_last)
    if layout in ("slice", "slice_cl"):
        base = fill((n + 1, c + 2, 2 * h + 1, 3 * w), spec, g)
        if layout == "slice_cl":
            base = base.contiguous(memory_format=torch.channels_last)
        return base[1:, 1:c + 1, 1::2, ::3]
    if layout == "permute":  # a contiguous tensor in another dim order, viewed back as NCHW
        inverse = [perm.index(i) for i in range(4)]
        base = fill(tuple(shape[p] for p in perm), spec, g)
        return base.permute(inverse)
    if layout == "expand":  # stride 0 over batch / channel / rows / columns (size-1 source dims)
        src = list(shape)
        for d in perm[:2]:
            src[d] = 1
        return fill(tuple(src), spec, g).expand(*shape)
    if layout == "size1_strides":  # dense, but junk strides on size-1 dims (still "contiguous")
        base = fill(shape, spec, g)
        if perm[0] % 2:
            base = base.contiguous(memory_format=torch.channels_last)
        strides = [s if size != 1 else 1000 + 7 * i for i, (s, size) in enumerate(zip(base.stride(), shape))]
        return base.as_strided(shape, strides)
    raise AssertionError(layout)


def maybe_noncontiguous_1d(t: torch.Tensor, strided: bool) -> torch.Tensor:
    if not strided:
        return t
    return torch.stack([t, torch.full_like(t, 12345.0)], 1)[:, 0]  # stride 2


@contextlib.contextmanager
def torch_threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def meta_like(t):
    if t is None:
        return None
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


# ---------------------------------------------------------------------------------------------
# Input safety


def storage_digest(t: torch.Tensor) -> bytes:
    """Hash of the whole storage under ``t`` (bytes outside a view included)."""
    storage = t.untyped_storage()
    raw = torch.empty(0, dtype=torch.uint8).set_(storage)
    return hashlib.blake2b(raw.numpy().tobytes(), digest_size=16).digest()


def storage_range(t: torch.Tensor):
    s = t.untyped_storage()
    return s.data_ptr(), s.data_ptr() + s.nbytes()


def snapshot(tensors):
    return [(t, storage_digest(t)) for t in tensors if t is not None]


def assert_untouched_and_unaliased(snap, out):
    for t, digest in snap:
        assert storage_digest(t) == digest, "an input tensor was written"
    if out.numel():
        lo, hi = storage_range(out)
        for t, _ in snap:
            tlo, thi = storage_range(t)
            assert hi <= tlo or thi <= lo or thi == tlo, "output storage overlaps an input"


# ---------------------------------------------------------------------------------------------
# Comparison


def finite_abs(t: torch.Tensor) -> torch.Tensor:
    t = t.double().abs()
    return torch.where(torch.isfinite(t), t, torch.zeros_like(t))


def assert_matches(out, ref, tol, excluded, label):
    """NaN / ±Inf positions as the reference; finite values within ``tol``; except ``excluded``."""
    out64 = out.double()
    keep = ~excluded
    if excluded.any():
        event(f"{label}: elements excluded (float32 overflow / padding x non-finite weight)")
    nan_o, nan_r = torch.isnan(out64) & keep, torch.isnan(ref) & keep
    assert torch.equal(nan_o, nan_r), (
        f"NaN positions differ: kernel {nan_o.nonzero()[:5].tolist()} vs reference {nan_r.nonzero()[:5].tolist()}"
    )
    for sign, name in ((1, "+Inf"), (-1, "-Inf")):
        io, ir = (out64 == sign * float("inf")) & keep, (ref == sign * float("inf")) & keep
        assert torch.equal(io, ir), (
            f"{name} positions differ: kernel {io.nonzero()[:5].tolist()} vs reference {ir.nonzero()[:5].tolist()}"
        )
    finite = torch.isfinite(ref) & keep
    if finite.any():
        err = (out64 - ref).abs()[finite]
        bound = tol[finite]
        bad = err > bound
        if bad.any():
            i = int(bad.nonzero()[0])
            raise AssertionError(
                f"{int(bad.sum())} values outside tolerance; worst ratio {float((err / bound).max()):.3g}; "
                f"first: kernel {float(out64[finite][i])!r} reference {float(ref[finite][i])!r} tol {float(bound[i])!r}"
            )
    if nan_r.any() or (ref.isinf() & keep).any():
        event(f"{label}: non-finite values propagated")


def dw_tolerance(x, weight, bias, stride, pads, dilation, act):
    """Per-element float32 error bound and exclusion mask for a dwconv2d output."""
    top, left, bottom, right = pads
    c = x.shape[1]
    k = weight.shape[2] * weight.shape[3]
    ax, aw = finite_abs(x), finite_abs(weight)
    xp = F.pad(ax, (left, right, top, bottom))
    magnitude = F.conv2d(xp, aw, None, stride, 0, dilation, groups=c)
    if bias is not None:
        magnitude = magnitude + finite_abs(bias)[None, :, None, None]
    excluded = magnitude > OVERFLOW_BOUND
    bad_w = (~torch.isfinite(weight)).double()
    if bad_w.any():
        inside = torch.zeros((1, c) + tuple(x.shape[2:]), dtype=torch.float64)
        border = F.pad(inside, (left, right, top, bottom), value=1.0)
        hits = F.conv2d(border, bad_w, None, stride, 0, dilation, groups=c) > 0
        excluded = excluded | hits.expand_as(excluded)
    lip = LIPSCHITZ[act]
    # hardswish's own rounding (x+3, x*r, /6) is a few eps of |x| <= magnitude: inside the bound.
    tol = 4 * (k + 2) * EPS * magnitude * lip + TINY
    return tol, excluded


def dw_reference(x, weight, bias, stride, pads, dilation, act):
    return reference.dwconv2d(x.double(), weight.double(), None if bias is None else bias.double(),
                              stride, pads, dilation, act)


# ---------------------------------------------------------------------------------------------
# dwconv2d / dwconv2d_packed


@st.composite
def dw_cases(draw):
    case = dict(
        n=draw(st.integers(0, 3)), c=draw(channels),
        h=draw(st.integers(1, 24)), w=draw(st.integers(1, 24)),
        kh=draw(st.integers(1, 7)), kw=draw(st.integers(1, 7)),
        stride=[draw(st.integers(1, 3)), draw(st.integers(1, 3))],
        dilation=[draw(st.integers(1, 3)), draw(st.integers(1, 3))],
        act=draw(st.sampled_from(DW_ACTS)),
        layout=draw(st.sampled_from(LAYOUTS)),
        perm=draw(st.permutations(range(4))),
        bias=draw(st.sampled_from(["none", "dense", "strided"])),
        weight_layout=draw(st.sampled_from(["dense", "dense", "channels_last", "transposed"])),
        x_values=draw(value_spec()),
        w_values=draw(value_spec(nonfinite=draw(st.integers(0, 9)) == 0)),
        b_values=draw(value_spec()),
        seed=draw(st.integers(0, 2**31 - 1)),
        threads=draw(st.sampled_from(KERNEL_THREADS)),
    )
    if draw(st.booleans()):
        ph, pw = draw(st.integers(0, 10)), draw(st.integers(0, 10))
        case["padding"] = [ph, pw]
    else:
        case["padding"] = [draw(st.integers(0, 10)) for _ in range(4)]
    return case


def build_dw(case):
    g = torch.Generator().manual_seed(case["seed"])
    n, c, h, w, kh, kw = (case[k] for k in ("n", "c", "h", "w", "kh", "kw"))
    x = make_input((n, c, h, w), case["layout"], case["x_values"], g, case["perm"])
    weight = fill((c, 1, kh, kw), case["w_values"], g) / (kh * kw) ** 0.5
    if case["weight_layout"] == "channels_last":
        weight = weight.contiguous(memory_format=torch.channels_last)
    elif case["weight_layout"] == "transposed":
        weight = weight.transpose(2, 3).contiguous().transpose(2, 3)
    bias = None
    if case["bias"] != "none":
        bias = maybe_noncontiguous_1d(fill((c,), case["b_values"], g), case["bias"] == "strided")
    return x, weight, bias


def geometry_valid(case) -> bool:
    pads = mnv3ext.ops.normalize_padding(case["padding"])
    for size, k, d, before, after in ((case["h"], case["kh"], case["dilation"][0], pads[0], pads[2]),
                                      (case["w"], case["kw"], case["dilation"][1], pads[1], pads[3])):
        if size + before + after < d * (k - 1) + 1:
            return False
    return True


def check_dw_on_every_isa(call, meta_call, case, x, weight, bias, tensors):
    args = (case["stride"], case["padding"], case["dilation"], case["act"])
    if not geometry_valid(case):
        event("invalid geometry: ValueError asserted")
        for isa in ISAS:
            with mnv3ext.use_isa(isa), torch_threads(case["threads"]), pytest.raises(ValueError, match="padding: padded input"):
                call(*args)
        with pytest.raises(ValueError, match="padding: padded input"):
            meta_call(*args)
        return
    pads = mnv3ext.ops.normalize_padding(case["padding"])
    ref = dw_reference(x, weight, bias, case["stride"], pads, case["dilation"], case["act"])
    tol, excluded = dw_tolerance(x, weight, bias, case["stride"], pads, case["dilation"], case["act"])
    tol = tol + 4 * EPS * ref.abs().nan_to_num(0.0, 0.0, 0.0)
    fake = meta_call(*args)
    event(f"layout {case['layout']}")
    for isa in ISAS:
        snap = snapshot(tensors)
        with mnv3ext.use_isa(isa), torch_threads(case["threads"]):
            out = call(*args)
        note(f"isa={isa}")
        assert out.dtype == torch.float32 and out.device.type == "cpu"
        assert out.shape == ref.shape, (out.shape, ref.shape)
        assert out.stride() == fake.stride(), f"strides {out.stride()} != fake kernel's {fake.stride()}"
        assert_untouched_and_unaliased(snap, out)
        assert_matches(out, ref, tol, excluded, "dwconv2d")


@examples("dwconv2d")
@given(case=dw_cases())
def test_fuzz_dwconv2d(case):
    note(repr(case))
    x, weight, bias = build_dw(case)
    op = torch.ops.mnv3ext.dwconv2d
    check_dw_on_every_isa(
        lambda *a: op(x, weight, bias, *a),
        lambda *a: op(meta_like(x), meta_like(weight), meta_like(bias), *a),
        case, x, weight, bias, [x, weight, bias],
    )


@examples("dwconv2d_packed")
@given(case=dw_cases(), packed_layout=st.sampled_from(["dense", "transposed"]))
def test_fuzz_dwconv2d_packed(case, packed_layout):
    note(repr(case))
    x, weight, bias = build_dw(case)
    w_snap = snapshot([weight, bias])
    packed = torch.ops.mnv3ext.pack_dwconv_weight(weight, bias)
    assert_untouched_and_unaliased(w_snap, packed)
    unpacked_w, unpacked_b = reference.unpack_dwconv_weight(packed, case["c"], [case["kh"], case["kw"]])
    # Packing is a bit-exact copy (NaN payloads included); a missing bias packs as zeros.
    assert torch.equal(unpacked_w.view(torch.int32), weight.contiguous().view(torch.int32))
    expected_b = torch.zeros(case["c"]) if bias is None else bias
    assert torch.equal(unpacked_b.view(torch.int32), expected_b.contiguous().view(torch.int32))
    assert not packed[1:, case["c"]:].any() and not packed[0, case["c"]:].any(), "padding lanes not zero"
    if packed_layout == "transposed":
        packed = packed.t().contiguous().t()
    op = torch.ops.mnv3ext.dwconv2d_packed
    ks = [case["kh"], case["kw"]]
    check_dw_on_every_isa(
        lambda st, pad, dil, act: op(x, packed, mnv3ext.ops.dwconv_params(ks, st, pad, dil), act),
        lambda st, pad, dil, act: op(meta_like(x), meta_like(packed), mnv3ext.ops.dwconv_params(ks, st, pad, dil), act),
        case, x, weight, expected_b, [x, packed],
    )


# ---------------------------------------------------------------------------------------------
# squeeze_excite


@st.composite
def se_cases(draw):
    return dict(
        n=draw(st.integers(0, 3)), c=draw(channels), s=draw(st.integers(1, 40)),
        h=draw(st.integers(1, 24)), w=draw(st.integers(1, 24)),
        act=draw(st.sampled_from(["relu", "hardswish"])),
        gate=draw(st.sampled_from(["hardsigmoid", "sigmoid"])),
        layout=draw(st.sampled_from(LAYOUTS)),
        perm=draw(st.permutations(range(4))),
        fc_forms=[draw(st.sampled_from(["2d", "4d", "transposed"])) for _ in range(2)],
        biases=[draw(st.sampled_from(["none", "dense", "strided"])) for _ in range(2)],
        x_values=draw(value_spec()),
        w_values=draw(value_spec(nonfinite=draw(st.integers(0, 9)) == 0)),
        b_values=draw(value_spec()),
        seed=draw(st.integers(0, 2**31 - 1)),
        threads=draw(st.sampled_from(KERNEL_THREADS)),
    )


def se_weight(rows, cols, form, spec, g):
    w = fill((rows, cols), spec, g) / cols ** 0.5
    if form == "4d":
        return w[:, :, None, None]
    if form == "transposed":
        return w.t().contiguous().t()
    return w


def se_tolerance(x, w1, b1, w2, b2, act, gate):
    """Per-element bound propagated through mean -> fc1 -> act -> fc2 -> gate -> multiply."""
    n, c, h, w = x.shape
    s = w1.shape[0]
    ax = finite_abs(x)
    pooled = ax.mean((2, 3))                                     # (N, C)
    e0 = (h * w + 2) * EPS * pooled
    aw1, aw2 = finite_abs(w1.flatten(1)), finite_abs(w2.flatten(1))
    a1 = pooled @ aw1.t() + (0 if b1 is None else finite_abs(b1))  # |fc1| bound, (N, S)
    e1 = LIPSCHITZ[act] * ((c + 2) * EPS * a1 + e0 @ aw1.t())
    a2 = a1 @ aw2.t() + (0 if b2 is None else finite_abs(b2))    # |act| <= |z|, (N, C)
    e2 = (s + 2) * EPS * a2 + e1 @ aw2.t()
    e_gate = LIPSCHITZ[gate] * e2 + 8 * EPS
    tol = ax * e_gate[:, :, None, None] + TINY
    overflow = ((pooled * h * w).amax(1) > OVERFLOW_BOUND) | (a1.amax(1) > OVERFLOW_BOUND) | (a2.amax(1) > OVERFLOW_BOUND)
    # A gate within its float32 error of 0 may be exactly 0 in float32 (sigmoid(-600) is 0 there,
    # ~1e-261 in float64; a hardsigmoid just above -3 rounds to 0): a non-finite input times it is
    # Inf in float64 but Inf*0 = NaN in float32, as in eager float32 PyTorch.
    gate64 = reference.se_gate(x.double(), *(None if t is None else t.double() for t in (w1, b1, w2, b2)), act, gate)
    underflow = (gate64.abs() <= e_gate)[:, :, None, None] & ~torch.isfinite(x)
    return tol, overflow[:, None, None, None].expand(x.shape) | underflow


@examples("squeeze_excite")
@given(case=se_cases())
def test_fuzz_squeeze_excite(case):
    note(repr(case))
    g = torch.Generator().manual_seed(case["seed"])
    n, c, s, h, w = (case[k] for k in ("n", "c", "s", "h", "w"))
    x = make_input((n, c, h, w), case["layout"], case["x_values"], g, case["perm"])
    w1 = se_weight(s, c, case["fc_forms"][0], case["w_values"], g)
    w2 = se_weight(c, s, case["fc_forms"][1], case["w_values"], g)
    b1, b2 = (None if kind == "none" else maybe_noncontiguous_1d(fill((size,), case["b_values"], g), kind == "strided")
              for kind, size in zip(case["biases"], (s, c)))
    args = (case["act"], case["gate"])
    op = torch.ops.mnv3ext.squeeze_excite
    ref = reference.squeeze_excite(x.double(), w1.double(), None if b1 is None else b1.double(), w2.double(),
                                   None if b2 is None else b2.double(), *args)
    tol, excluded = se_tolerance(x, w1, b1, w2, b2, *args)
    tol = tol + 4 * EPS * ref.abs().nan_to_num(0.0, 0.0, 0.0)
    fake = op(*(meta_like(t) for t in (x, w1, b1, w2, b2)), *args)
    event(f"layout {case['layout']}")
    for isa in ISAS:
        snap = snapshot([x, w1, b1, w2, b2])
        with mnv3ext.use_isa(isa), torch_threads(case["threads"]):
            out = op(x, w1, b1, w2, b2, *args)
        note(f"isa={isa}")
        assert out.shape == x.shape and out.dtype == torch.float32
        assert out.stride() == fake.stride(), f"strides {out.stride()} != fake kernel's {fake.stride()}"
        assert_untouched_and_unaliased(snap, out)
        assert_matches(out, ref, tol, excluded, "squeeze_excite")


@pytest.mark.parametrize("isa", ISAS)
def test_squeeze_excite_gate_underflow_matches_float32_torch(isa):
    """The case the float64 comparison must exclude: sigmoid(-579) is 0 in float32, so -Inf x gate is NaN."""
    x = torch.zeros(2, 2, 1, 11)
    x[1, :, 0, 1] = float("-inf")
    w1, w2 = torch.tensor([[0.543, 0.0404]]), torch.tensor([[0.224], [0.552]])
    b2 = torch.tensor([-578.798, 17.7221])
    args = (x, w1, None, w2, b2, "relu", "sigmoid")
    with mnv3ext.use_isa(isa):
        out = torch.ops.mnv3ext.squeeze_excite(*args)
    want = reference.squeeze_excite(*args)
    assert torch.isnan(want[1, 0, 0, 1]) and want[1, 1, 0, 1] == float("-inf")
    torch.testing.assert_close(out, want, equal_nan=True)


def test_profile_is_known_and_every_isa_is_fuzzed():
    assert PROFILE in _COUNTS
    assert "scalar" in ISAS and len(ISAS) >= 1


@pytest.fixture(autouse=True)
def _one_thread_for_the_reference():
    with torch_threads(1):
        yield
