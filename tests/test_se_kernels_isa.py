"""Fused squeeze-excite through the numpy surface, for every ISA this CPU can run.

Checks each ISA's SE building blocks (plane/pixel sums, matvec, scaling) against a float64
torch reference, NaN/Inf propagation, and that results are bit-identical for 1 and 2 threads.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mnv3ext._C as C

ISAS = C.available_isas()
CHANNELS = [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 72, 120, 960, 101]
SIZES = [(1, 1), (2, 3), (7, 7), (14, 14), (28, 28), (56, 56)]


@pytest.fixture(params=ISAS)
def isa(request):
    previous = C.isa()
    C.set_isa(request.param)
    yield request.param
    C.set_isa(previous)


def squeezes(channels: int) -> list[int]:
    return sorted({1, 2, max(1, channels // 4), max(1, channels - 1), channels})


def reference(x, w1, b1, w2, b2, activation, gate, channels_last):
    t = torch.from_numpy(x).double()
    if channels_last:
        t = t.permute(0, 3, 1, 2)
    s, c = w1.shape[0], w1.shape[1]
    pooled = F.adaptive_avg_pool2d(t, 1)
    h = F.conv2d(pooled, torch.from_numpy(w1).double().reshape(s, c, 1, 1),
                 None if b1 is None else torch.from_numpy(b1).double())
    h = F.relu(h) if activation == "relu" else F.hardswish(h)
    g = F.conv2d(h, torch.from_numpy(w2).double().reshape(c, s, 1, 1),
                 None if b2 is None else torch.from_numpy(b2).double())
    g = F.hardsigmoid(g) if gate == "hardsigmoid" else torch.sigmoid(g)
    out = t * g
    if channels_last:
        out = out.permute(0, 2, 3, 1)
    return out.contiguous().numpy()


def make_inputs(rng, n, c, h, w, s, channels_last, bias=True):
    shape = (n, h, w, c) if channels_last else (n, c, h, w)
    x = rng.standard_normal(shape, dtype=np.float32) + 0.5
    w1 = (rng.standard_normal((s, c), dtype=np.float32) / np.sqrt(c)).astype(np.float32)
    w2 = (rng.standard_normal((c, s), dtype=np.float32) * 2 / np.sqrt(s)).astype(np.float32)
    b1 = rng.standard_normal(s, dtype=np.float32) if bias else None
    b2 = rng.standard_normal(c, dtype=np.float32) if bias else None
    return x, w1, b1, w2, b2


def run(x, w1, b1, w2, b2, activation, gate, channels_last, threads=1):
    return C.squeeze_excite(x, w1, b1, w2, b2, activation=activation, gate=gate,
                            channels_last=channels_last, threads=threads)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("channels", CHANNELS)
def test_matches_reference(isa, channels, size, channels_last):
    rng = np.random.default_rng(channels * 1000 + size[0] * 10 + size[1])
    h, w = size
    for s in squeezes(channels):
        for n in (1, 3):
            if channels * h * w * n > 400_000 and s not in (1, channels // 4):
                continue  # keep the big cases to a couple of squeeze sizes
            x, w1, b1, w2, b2 = make_inputs(rng, n, channels, h, w, s, channels_last)
            activation, gate = ("relu", "hardsigmoid") if s % 2 else ("hardswish", "sigmoid")
            out = run(x, w1, b1, w2, b2, activation, gate, channels_last)
            ref = reference(x, w1, b1, w2, b2, activation, gate, channels_last)
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4,
                                       err_msg=f"isa={isa} C={channels} S={s} N={n}")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_no_bias_and_4d_weights(isa, channels_last):
    rng = np.random.default_rng(7)
    x, w1, _, w2, _ = make_inputs(rng, 2, 33, 5, 5, 9, channels_last, bias=False)
    out = run(x, w1.reshape(9, 33, 1, 1), None, w2.reshape(33, 9, 1, 1), None, "relu",
              "hardsigmoid", channels_last)
    ref = reference(x, w1, None, w2, None, "relu", "hardsigmoid", channels_last)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("channels,size,squeeze",
                         [(16, 56, 8), (72, 28, 24), (120, 7, 32), (480, 14, 120),
                          (960, 7, 240), (101, 14, 13), (33, 28, 9)])
def test_threads_bit_identical(isa, channels, size, squeeze, channels_last):
    rng = np.random.default_rng(channels + size)
    for n in (1, 3):
        x, w1, b1, w2, b2 = make_inputs(rng, n, channels, size, size, squeeze, channels_last)
        one = run(x, w1, b1, w2, b2, "hardswish", "hardsigmoid", channels_last, threads=1)
        for threads in (2, 3, 4):
            many = run(x, w1, b1, w2, b2, "hardswish", "hardsigmoid", channels_last,
                       threads=threads)
            assert np.array_equal(one.view(np.uint32), many.view(np.uint32)), threads


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("gate", ["hardsigmoid", "sigmoid"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_propagation(isa, bad, gate, channels_last):
    rng = np.random.default_rng(3)
    n, c, h, w, s = 2, 40, 7, 7, 10
    x, w1, b1, w2, b2 = make_inputs(rng, n, c, h, w, s, channels_last)
    # A bad input pixel poisons its channel's mean, hence every gate of that image.
    if channels_last:
        x[1, 3, 4, 17] = bad
    else:
        x[1, 17, 3, 4] = bad
    w2[5, :] = 0.0  # 0 * inf in FC2 for one channel
    out = run(x, w1, b1, w2, b2, "relu", gate, channels_last)
    ref = reference(x, w1, b1, w2, b2, "relu", gate, channels_last)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(out[finite], ref[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_nan_weight(isa, channels_last):
    rng = np.random.default_rng(5)
    x, w1, b1, w2, b2 = make_inputs(rng, 1, 24, 3, 3, 6, channels_last)
    w2[7, 2] = np.nan
    b1[0] = np.inf
    out = run(x, w1, b1, w2, b2, "hardswish", "hardsigmoid", channels_last)
    ref = reference(x, w1, b1, w2, b2, "hardswish", "hardsigmoid", channels_last)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(out[finite], ref[finite], rtol=1e-4, atol=1e-4)


def test_isas_agree_closely():
    """Different ISAs sum in different orders, but stay within float rounding of each other."""
    rng = np.random.default_rng(11)
    x, w1, b1, w2, b2 = make_inputs(rng, 1, 120, 14, 14, 32, False)
    previous = C.isa()
    try:
        outs = []
        for name in ISAS:
            C.set_isa(name)
            outs.append(run(x, w1, b1, w2, b2, "relu", "hardsigmoid", False))
    finally:
        C.set_isa(previous)
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], rtol=1e-5, atol=1e-5)
