"""numpy-level tests of the compiled kernels (``mnv3ext._C``): no torch anywhere.

They run in the normal test suite and on platforms without torch — the aarch64 wheel under
qemu (tools/ci/arm_emulated.sh) and cibuildwheel's test step — so the extension is loaded
straight from the installed package directory without executing ``mnv3ext/__init__.py``
(which imports torch). References are float64 numpy implementations written here.

``MNV3EXT_EXPECT_ISAS=scalar,neon`` (comma-separated) makes a missing extension or ISA a
failure instead of a skip: CI sets it so a broken build cannot pass silently.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

import numpy as np
import pytest

EXPECTED_ISAS = [s for s in os.environ.get("MNV3EXT_EXPECT_ISAS", "").split(",") if s]


def _load_extension():
    package = sys.modules.get("mnv3ext")
    if package is not None and hasattr(package, "_C"):
        return package._C
    if "mnv3ext._C" in sys.modules:
        return sys.modules["mnv3ext._C"]
    spec = importlib.util.find_spec("mnv3ext")  # locates the package without running it
    for directory in (spec.submodule_search_locations or []) if spec else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(directory, "_C" + suffix)
            if os.path.exists(path):
                loader = importlib.machinery.ExtensionFileLoader("mnv3ext._C", path)
                module_spec = importlib.util.spec_from_file_location("mnv3ext._C", path,
                                                                     loader=loader)
                module = importlib.util.module_from_spec(module_spec)
                loader.exec_module(module)
                return module
    return None


_C = _load_extension()
if _C is None:
    if EXPECTED_ISAS:
        raise ImportError("mnv3ext._C not found, but MNV3EXT_EXPECT_ISAS is set")
    pytest.skip("mnv3ext._C is not built", allow_module_level=True)

ISAS = list(_C.available_isas())
DW_ACTIVATIONS = ("none", "relu", "relu6", "hardswish")


@pytest.fixture(params=ISAS)
def isa(request):
    previous = _C.isa()
    _C.set_isa(request.param)
    try:
        yield request.param
    finally:
        _C.set_isa(previous)


# ---------------------------------------------------------------------------------------------
# float64 references

def ref_activation(name, x):
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if name == "none":
            return x
        if name == "relu":
            return np.where(x < 0, 0.0, x)  # keeps NaN, as torch.relu
        if name == "relu6":
            return np.where(x < 0, 0.0, np.where(x > 6, 6.0, x))
        relu6_shifted = np.minimum(np.maximum(x + 3.0, 0.0), 6.0)
        if name == "hardswish":
            return np.where(np.isnan(x), x, x * relu6_shifted / 6.0)
        if name == "hardsigmoid":
            return np.where(np.isnan(x), x, relu6_shifted / 6.0)
        if name == "sigmoid":
            return 1.0 / (1.0 + np.exp(-x))
    raise ValueError(name)


def pads4(padding):
    return list(padding) * 2 if len(padding) == 2 else list(padding)


def ref_dwconv(x, weight, bias, stride, padding, dilation, activation):
    """x (N, C, H, W); weight (C, 1, kh, kw). Returns (reference, magnitude), both float64:
    the magnitude (|bias| + sum of |w * x|) bounds the float32 rounding of each output."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    (sh, sw), (dh, dw) = stride, dilation
    top, left, bottom, right = pads4(padding)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    b = np.zeros(c) if bias is None else bias.astype(np.float64)
    acc = np.broadcast_to(b[None, :, None, None], (n, c, oh, ow)).copy()
    mag = np.abs(acc)
    w64 = weight.reshape(c, kh, kw).astype(np.float64)
    with np.errstate(invalid="ignore"):
        for ky in range(kh):
            for kx in range(kw):
                window = xp[:, :, ky * dh: ky * dh + (oh - 1) * sh + 1: sh,
                            kx * dw: kx * dw + (ow - 1) * sw + 1: sw]
                term = w64[None, :, ky, kx, None, None] * window
                acc += term
                mag += np.abs(term)
    return ref_activation(activation, acc), mag


def ref_squeeze_excite(x, fc1, b1, fc2, b2, activation, gate):
    x64 = x.astype(np.float64)
    pooled = x64.mean(axis=(2, 3))
    hidden = pooled @ fc1.reshape(fc1.shape[0], -1).T.astype(np.float64)
    if b1 is not None:
        hidden = hidden + b1
    hidden = ref_activation(activation, hidden)
    scale = hidden @ fc2.reshape(fc2.shape[0], -1).T.astype(np.float64)
    if b2 is not None:
        scale = scale + b2
    return x64 * ref_activation(gate, scale)[:, :, None, None]


def to_nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def assert_close(got, ref, scale, rel, what=""):
    got64 = got.astype(np.float64)
    assert got.shape == ref.shape, what
    assert np.array_equal(np.isnan(got64), np.isnan(ref)), f"NaN positions differ {what}"
    finite = np.isfinite(ref)
    assert np.array_equal(got64[~finite & ~np.isnan(ref)], ref[~finite & ~np.isnan(ref)]), \
        f"infinities differ {what}"
    err = np.abs(got64[finite] - ref[finite])
    bound = rel * scale[finite] + 1e-6
    if err.size and not np.all(err <= bound):
        i = int(np.argmax(err - bound))
        raise AssertionError(f"{what}: max excess error at flat index {i}: got "
                             f"{got64[finite][i]!r} want {ref[finite][i]!r} (bound {bound[i]:.3g})")


# ---------------------------------------------------------------------------------------------
# ISA control

def test_available_isas():
    assert ISAS and ISAS[0] == "scalar"
    assert _C.best_isa() == ISAS[-1]
    for name in EXPECTED_ISAS:
        assert name in ISAS, f"{name} expected in {ISAS}"


def test_set_isa_round_trip():
    previous = _C.isa()
    try:
        for name in ISAS:
            _C.set_isa(name)
            assert _C.isa() == name
    finally:
        _C.set_isa(previous)
    with pytest.raises(ValueError):
        _C.set_isa("no-such-isa")
    assert _C.isa() == previous


# ---------------------------------------------------------------------------------------------
# Packing

@pytest.mark.parametrize("channels,k", [(1, (3, 3)), (17, (5, 5)), (33, (1, 3)), (72, (7, 7))])
def test_pack_dwconv_layout(channels, k):
    rng = np.random.default_rng(channels)
    weight = rng.standard_normal((channels, 1) + k).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    padded = -(-channels // _C.CHANNEL_ALIGN) * _C.CHANNEL_ALIGN
    taps = k[0] * k[1]
    packed = _C.pack_dwconv(weight, bias)
    assert packed.dtype == np.float32
    assert packed.size == _C.packed_dwconv_floats(channels, *k) == (1 + taps) * padded
    rows = packed.reshape(1 + taps, padded)
    np.testing.assert_array_equal(rows[0, :channels], bias)
    np.testing.assert_array_equal(rows[1:, :channels], weight.reshape(channels, taps).T)
    assert not rows[:, channels:].any(), "padding lanes must be zero"
    no_bias = _C.pack_dwconv(weight.reshape((channels,) + k)).reshape(1 + taps, padded)
    assert not no_bias[0].any()
    np.testing.assert_array_equal(no_bias[1:], rows[1:])


# ---------------------------------------------------------------------------------------------
# Depthwise conv

# (N, C, H, W, kernel, stride, padding, dilation): every kernel size, stride and dilation, channel
# tails of the 4/8/16-lane tiles, 1-pixel and non-square images, symmetric and asymmetric pads.
DW_SHAPES = [
    (1, 1, 1, 1, (1, 1), (1, 1), (0, 0), (1, 1)),
    (2, 3, 7, 5, (3, 3), (1, 1), (1, 1), (1, 1)),
    (1, 4, 13, 13, (3, 3), (2, 2), (0, 0, 1, 1), (1, 1)),
    (1, 5, 2, 3, (3, 3), (1, 1), (1, 1), (1, 1)),
    (2, 8, 13, 7, (5, 5), (1, 1), (2, 2), (1, 1)),
    (1, 9, 7, 13, (5, 5), (2, 2), (2, 1, 2, 3), (1, 1)),
    (1, 15, 3, 3, (7, 7), (1, 1), (3, 3), (1, 1)),
    (1, 16, 13, 2, (3, 3), (3, 3), (2, 2), (2, 2)),
    (2, 17, 7, 7, (5, 5), (1, 1), (4, 4), (2, 2)),
    (1, 33, 1, 7, (1, 3), (1, 2), (0, 1, 0, 1), (1, 1)),
    (1, 72, 14, 14, (3, 3), (2, 2), (1, 1), (1, 1)),
    (1, 101, 7, 7, (5, 5), (1, 1), (2, 2), (1, 1)),
    (1, 7, 3, 13, (7, 5), (2, 3), (6, 0, 6, 4), (1, 2)),
]


@pytest.mark.parametrize("shape", DW_SHAPES, ids=lambda s: "N{}C{}H{}W{}k{}s{}p{}d{}".format(
    s[0], s[1], s[2], s[3], "x".join(map(str, s[4])), s[5][0], "-".join(map(str, s[6])), s[7][0]))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_dwconv2d(isa, shape, channels_last):
    n, c, h, w, k, stride, padding, dilation = shape
    rng = np.random.default_rng(hash(shape) & 0xFFFF)
    x = rng.uniform(-3, 3, (n, c, h, w)).astype(np.float32)
    weight = rng.uniform(-1, 1, (c, 1) + k).astype(np.float32)
    bias = rng.uniform(-1, 1, c).astype(np.float32)
    for i, activation in enumerate(DW_ACTIVATIONS):
        b = bias if i % 2 == 0 else None
        ref, mag = ref_dwconv(x, weight, b, stride, padding, dilation, activation)
        arg = to_nhwc(x) if channels_last else x
        got = _C.dwconv2d(arg, weight, b, list(stride), list(padding), list(dilation), activation,
                          channels_last, 1)
        assert got.dtype == np.float32
        if channels_last:
            got = to_nchw(got)
        assert_close(got, ref, mag, 1e-5, f"{isa} {activation}")
        again = _C.dwconv2d(arg, weight, b, list(stride), list(padding), list(dilation),
                            activation, channels_last, 2)
        np.testing.assert_array_equal(to_nchw(again) if channels_last else again, got)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_dwconv2d_threads_large(isa, channels_last):
    # Large enough for the thread pool to split it; results must not depend on the thread count.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 40, 28, 28)).astype(np.float32)
    weight = rng.standard_normal((40, 1, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(40).astype(np.float32)
    arg = to_nhwc(x) if channels_last else x
    one = _C.dwconv2d(arg, weight, bias, [2, 2], [1, 1], [1, 1], "relu6", channels_last, 1)
    two = _C.dwconv2d(arg, weight, bias, [2, 2], [1, 1], [1, 1], "relu6", channels_last, 2)
    np.testing.assert_array_equal(one, two)
    ref, mag = ref_dwconv(x, weight, bias, (2, 2), (1, 1), (1, 1), "relu6")
    assert_close(to_nchw(one) if channels_last else one, ref, mag, 1e-5, isa)


@pytest.mark.parametrize("activation", DW_ACTIVATIONS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_dwconv2d_activation_edges(isa, activation, channels_last):
    # 1x1 kernel, weight 1, no bias: the output is activation(x) for each edge value.
    edges = np.array([-np.inf, -7, -6, -3.0001, -3, -2.9999, -1, -0.0, 0, 1e-30, 0.5, 2.9999, 3,
                      3.0001, 5.9999, 6, 6.0001, 1e30, np.inf, np.nan], dtype=np.float32)
    c = 9  # a 4-lane tile plus a tail
    x = np.resize(edges, (1, c, 4, 5)).astype(np.float32)
    weight = np.ones((c, 1, 1, 1), np.float32)
    arg = to_nhwc(x) if channels_last else x
    got = _C.dwconv2d(arg, weight, None, [1, 1], [0, 0], [1, 1], activation, channels_last, 1)
    if channels_last:
        got = to_nchw(got)
    np.testing.assert_allclose(got, ref_activation(activation, x), rtol=1e-6, atol=0,
                               equal_nan=True)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_dwconv2d_nan_input_propagates(isa, channels_last):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 17, 7, 7)).astype(np.float32)
    x[0, 5, 3, 3] = np.nan
    x[0, 16, 0, 6] = np.inf
    weight = rng.standard_normal((17, 1, 3, 3)).astype(np.float32)
    for activation in DW_ACTIVATIONS:
        ref, mag = ref_dwconv(x, weight, None, (1, 1), (1, 1), (1, 1), activation)
        arg = to_nhwc(x) if channels_last else x
        got = _C.dwconv2d(arg, weight, None, [1, 1], [1, 1], [1, 1], activation, channels_last, 1)
        assert_close(to_nchw(got) if channels_last else got, ref, mag, 1e-5, activation)
        assert np.isnan(ref).any()


def test_dwconv2d_rejects_bad_arguments():
    x = np.zeros((1, 4, 5, 5), np.float32)
    weight = np.zeros((4, 1, 3, 3), np.float32)
    with pytest.raises(TypeError):
        _C.dwconv2d(x.astype(np.float64), weight)
    with pytest.raises(ValueError):
        _C.dwconv2d(x[0], weight)
    with pytest.raises(ValueError):
        _C.dwconv2d(x, np.zeros((3, 1, 3, 3), np.float32))
    with pytest.raises(ValueError):
        _C.dwconv2d(x, weight, activation="gelu")
    with pytest.raises(ValueError):  # padded input smaller than the kernel
        _C.dwconv2d(np.zeros((1, 4, 1, 1), np.float32), weight)
    with pytest.raises(ValueError):
        _C.dwconv2d(x, np.zeros((4, 1, 9, 9), np.float32), padding=[4, 4])


# ---------------------------------------------------------------------------------------------
# Squeeze-excite

# (N, C, H, W, S)
SE_SHAPES = [
    (1, 1, 1, 1, 1),
    (2, 3, 7, 5, 1),
    (1, 5, 13, 13, 2),
    (1, 16, 2, 3, 4),
    (2, 17, 3, 7, 8),
    (1, 33, 7, 7, 8),
    (1, 72, 14, 14, 24),
    (2, 101, 7, 1, 25),
]


@pytest.mark.parametrize("shape", SE_SHAPES, ids=lambda s: "N{}C{}H{}W{}S{}".format(*s))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_squeeze_excite(isa, shape, channels_last):
    n, c, h, w, s = shape
    rng = np.random.default_rng(hash(shape) & 0xFFFF)
    x = rng.uniform(-1, 2, (n, c, h, w)).astype(np.float32)
    fc1 = rng.uniform(-1, 1, (s, c)).astype(np.float32) * np.float32(3 / np.sqrt(c))
    fc2 = rng.uniform(-1, 1, (c, s)).astype(np.float32) * np.float32(3 / np.sqrt(s))
    b1 = rng.uniform(-0.5, 0.5, s).astype(np.float32)
    b2 = rng.uniform(-0.5, 0.5, c).astype(np.float32)
    arg = to_nhwc(x) if channels_last else x
    for i, (activation, gate) in enumerate([("relu", "hardsigmoid"), ("hardswish", "sigmoid"),
                                            ("relu", "sigmoid"), ("hardswish", "hardsigmoid")]):
        biases = (b1, b2) if i % 2 == 0 else (None, None)
        w1 = fc1 if i < 2 else fc1.reshape(s, c, 1, 1)  # 1x1 conv weights are accepted as well
        w2 = fc2 if i < 2 else fc2.reshape(c, s, 1, 1)
        ref = ref_squeeze_excite(x, fc1, biases[0], fc2, biases[1], activation, gate)
        got = _C.squeeze_excite(arg, w1, biases[0], w2, biases[1], activation, gate,
                                channels_last, 1)
        assert got.dtype == np.float32 and got.shape == arg.shape
        if channels_last:
            got = to_nchw(got)
        assert_close(got, ref, np.abs(x.astype(np.float64)), 1e-4, f"{isa} {activation} {gate}")
        again = _C.squeeze_excite(arg, w1, biases[0], w2, biases[1], activation, gate,
                                  channels_last, 2)
        np.testing.assert_array_equal(to_nchw(again) if channels_last else again, got)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_squeeze_excite_nan_propagates(isa, channels_last):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 9, 5, 5)).astype(np.float32)
    x[1, 4, 2, 2] = np.nan
    fc1 = rng.standard_normal((3, 9)).astype(np.float32)
    fc2 = rng.standard_normal((9, 3)).astype(np.float32)
    arg = to_nhwc(x) if channels_last else x
    got = _C.squeeze_excite(arg, fc1, None, fc2, None, "relu", "hardsigmoid", channels_last, 1)
    if channels_last:
        got = to_nchw(got)
    ref = ref_squeeze_excite(x, fc1, None, fc2, None, "relu", "hardsigmoid")
    assert np.isnan(ref[1]).all() and not np.isnan(ref[0]).any()
    assert_close(got, ref, np.abs(x.astype(np.float64)), 1e-4, isa)


def test_squeeze_excite_rejects_bad_arguments():
    x = np.zeros((1, 8, 3, 3), np.float32)
    fc1 = np.zeros((2, 8), np.float32)
    fc2 = np.zeros((8, 2), np.float32)
    with pytest.raises(TypeError):
        _C.squeeze_excite(x.astype(np.float64), fc1, None, fc2, None)
    with pytest.raises(ValueError):
        _C.squeeze_excite(x, fc1.T.copy(), None, fc2, None)
    with pytest.raises(ValueError):
        _C.squeeze_excite(x, fc1, None, fc2, None, activation="relu6")
    with pytest.raises(ValueError):
        _C.squeeze_excite(x, fc1, None, fc2, None, gate="relu")
    with pytest.raises(ValueError):
        _C.squeeze_excite(x, fc1, np.zeros(3, np.float32), fc2, None)
