"""Property-based fuzzing of ``torch.ops.mnv3ext.sequential`` on every ISA path.

Generated (hypothesis; weights and data from a drawn seed): a chain of an optional stem conv
(kernel 1..3, stride 1/2, 1..4 input channels), 0..3 inverted-residual blocks (channels from the
SIMD tile edges or 1..40, expansion 1..4 or none, kernel 1..5, stride 1/2, SE or not, residual
where the shape allows), an optional 1x1 conv, and an optional head (pool, flatten, 0..2
linear layers); at least two steps; N 0..2; H, W 1..19; NCHW, channels_last or strided input;
1 or 2 kernel threads; now and then NaN / +-Inf in the input. Chains whose geometry is invalid
for a step (a plane smaller than a kernel) must raise ``ValueError`` naming that step, as the
ops alone raise for it.

Checks on every ISA: the output equals the same layers called one by one through their own ops
bit for bit (NaN where they give NaN; where the ops alone pool an NCHW tensor, summed plane by
plane, which the sequence pools in NHWC: within the propagated bound of the two summation orders), with the same strides; the fake kernel's shape and
strides; the input is not written. The float64 reference composition is the oracle of
``tests/test_sequence_op.py``; here the single ops are (each fuzzed against float64 in its own
suite).

Profiles as ``tests/test_fuzz_ops.py`` (``MNV3EXT_HYPOTHESIS_PROFILE`` ci (default, 150
examples) / long (5,000); ``MNV3EXT_HYPOTHESIS_EXAMPLES`` overrides).
"""
from __future__ import annotations

import os

import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st

import mnv3ext
from test_fuzz_ops import _BASE, EPS, PROFILE, TINY
from test_sequence_op import FLATTEN, POOL, block, chain, linear, pointwise, stem

OPS = torch.ops.mnv3ext
ISAS = mnv3ext.available_isas()
EXAMPLES = int(os.environ.get("MNV3EXT_HYPOTHESIS_EXAMPLES", {"ci": 150, "long": 5000}.get(PROFILE, 150)))
EDGES = [1, 7, 8, 9, 15, 16, 17, 33]
channels = st.one_of(st.sampled_from(EDGES), st.integers(1, 40))


@st.composite
def chains(draw):
    seed = draw(st.integers(0, 2 ** 31 - 1))
    g = torch.Generator().manual_seed(seed)
    parts, desc = [], []
    c = draw(st.integers(1, 4))
    in_c = c
    if draw(st.booleans()):
        out = draw(channels)
        parts.append(stem(g, c, out, stride=draw(st.sampled_from([1, 2])),
                          channels_last_output=draw(st.booleans()), act=draw(st.sampled_from(["none", "hardswish"]))))
        desc.append(f"stem {c}->{out}")
        c = out
    for _ in range(draw(st.integers(0, 3))):
        expand = draw(st.booleans())
        e = c * draw(st.integers(1, 4)) if expand else c
        residual = draw(st.booleans())
        out = c if residual else draw(channels)
        stride = 1 if residual else draw(st.sampled_from([1, 2]))
        k = draw(st.sampled_from([1, 3, 5]))
        se = draw(st.sampled_from([0, 0, 4, 8]))
        parts.append(block(g, c, e, out, k=k, stride=stride, se=se, residual=residual, expand=expand,
                           dw=draw(st.sampled_from(["relu", "hardswish", "none"]))))
        desc.append(f"block {c}->{e}->{out} k{k} s{stride} se{se}{' res' if residual else ''}")
        c = out
    if draw(st.booleans()):
        out = draw(channels)
        parts.append(pointwise(g, c, out, draw(st.sampled_from(["none", "relu6", "hardswish"]))))
        desc.append(f"1x1 {c}->{out}")
        c = out
    if draw(st.booleans()):
        parts += [POOL, FLATTEN]
        desc.append("pool flatten")
        for _ in range(draw(st.integers(0, 2))):
            out = draw(channels)
            parts.append(linear(g, c, out, draw(st.sampled_from(["none", "hardswish"]))))
            desc.append(f"linear {c}->{out}")
            c = out
    if len(parts) < 2:
        parts.append(pointwise(g, c, 5))
        desc.append(f"1x1 {c}->5")
    n = draw(st.integers(0, 2))
    h, w = draw(st.integers(1, 19)), draw(st.integers(1, 19))
    x = torch.randn(n, in_c, h, w, generator=g) * draw(st.sampled_from([1e-2, 1.0, 30.0]))
    if n and draw(st.integers(0, 5)) == 0:
        flat = x.view(-1)
        flat[torch.randint(0, flat.numel(), (3,), generator=g)] = torch.tensor([float("nan"), float("inf"),
                                                                                -float("inf")])
    layout = draw(st.sampled_from(["nchw", "channels_last", "strided"]))
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.cat([x, x], 3)[..., ::2]
    return parts, desc, x, layout, draw(st.sampled_from([1, 2]))


def pool_order_bound(parts, pool_input):
    """Bound on |sequence - ops one by one| when only their pools sum in different orders. Each
    mean of HW floats is within (HW - 1) eps mean|x| of the exact one, so the two within twice
    that (+ the division's rounding). Each linear layer after the pool carries the difference as
    |W| times it, adds its own rounding of its (different) inputs, 2 (k + 2) eps (|W| |x| + |b|),
    and its activation scales both by at most its slope (hardswish: 1.5) and keeps |act(z)| <= |z|."""
    x = pool_input.double().abs().nan_to_num(0.0, 0.0, 0.0)
    hw = x.shape[2] * x.shape[3]
    magnitude = x.mean((2, 3))
    bound = 2 * (hw + 1) * EPS * magnitude
    for part in parts[parts.index(POOL) + 1:]:
        if part == FLATTEN:
            continue
        m = part[0]
        w, b = m.weight.double().abs(), m.bias.double().abs()
        slope = 1.5 if m.activation == "hardswish" else 1.0
        magnitude = magnitude @ w.t() + b
        bound = slope * (bound @ w.t() + 2 * (w.shape[1] + 2) * EPS * magnitude)
    return bound


def assert_within_pool_order_bound(got, expected, parts, pool_input, isa):
    nan_g, nan_e = torch.isnan(got), torch.isnan(expected)
    assert torch.equal(nan_g, nan_e), f"[{isa}] NaN positions differ"
    inf_g, inf_e = torch.isinf(got), torch.isinf(expected)
    assert torch.equal(inf_g, inf_e) and torch.equal(got[inf_g], expected[inf_e]), f"[{isa}] Inf positions differ"
    finite = torch.isfinite(expected)
    err = (got.double() - expected.double()).abs()[finite]
    bound = (pool_order_bound(parts, pool_input) + TINY)[finite]
    worst = int((err - bound).argmax()) if err.numel() else 0
    assert bool((err <= bound).all()), (
        f"[{isa}] beyond the pool-order bound: error {float(err[worst]):.3g} > {float(bound[worst]):.3g}")


def _one_by_one_or_error(one_by_one, x):
    try:
        with torch.no_grad():
            return one_by_one(x), None
    except ValueError as e:
        return None, e


@settings(_BASE, max_examples=EXAMPLES)
@given(case=chains())
def test_fuzz_sequential_equals_the_ops_one_by_one(case):
    parts, desc, x, layout, threads = case
    note(f"{desc} input {tuple(x.shape)} {layout} threads {threads}")
    one_by_one, program, weights = chain(parts)
    before = x.clone()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for isa in ISAS:
            with mnv3ext.use_isa(isa):
                expected, error = _one_by_one_or_error(one_by_one, x)
                if error is not None:  # invalid geometry: the sequence refuses it too, naming the step
                    for call in (mnv3ext.ops.sequential, OPS.sequential):
                        try:
                            call(x, weights, program)
                        except ValueError as e:
                            assert "program step" in str(e), str(e)
                        else:
                            raise AssertionError(f"[{isa}] no error where the ops alone raise: {error}")
                    return
                with torch.no_grad():
                    got = OPS.sequential(x, weights, program)
                assert got.shape == expected.shape and got.stride() == expected.stride(), (
                    isa, got.shape, got.stride(), expected.stride())
                if POOL in parts[1:] and not one_by_one.pool_inputs[0].is_contiguous(memory_format=torch.channels_last):
                    # the ops alone kept the input NCHW up to the pool, which then sums plane by
                    # plane; the sequence's intermediates are NHWC: the same mean, summed in
                    # another order
                    assert_within_pool_order_bound(got, expected, parts, one_by_one.pool_inputs[0], isa)
                else:
                    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True,
                                               msg=lambda m: f"[{isa}] {m}")
                fake = OPS.sequential(x.to("meta"), [w.to("meta") for w in weights], program)
                assert (fake.shape, fake.stride()) == (got.shape, got.stride())
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(x, before) or (x.isnan() == before.isnan()).all() and torch.equal(
        x.nan_to_num(), before.nan_to_num()), "the input was written"
