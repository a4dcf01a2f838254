"""Depthwise conv kernels of every ISA this CPU runs, against a float64 reference.

numpy-level (mnv3ext._C.dwconv2d), NCHW and channels-last, including edge shapes (1x1 and
2x2 inputs with padding larger than the kernel, C not a multiple of the vector width,
asymmetric padding, dilation, stride 3), NaN/Inf inputs and bit-identical results for 1
and 2 threads.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
C = pytest.importorskip("mnv3ext._C")

ISAS = C.available_isas()
ACTS = {"none": lambda t: t, "relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish}


def reference(x, w, b, stride, pad, dil, act):
    top, left, bottom, right = pad
    xt = F.pad(torch.from_numpy(x).double(), (left, right, top, bottom))
    y = F.conv2d(xt, torch.from_numpy(w).double(), torch.from_numpy(b).double(), stride, 0, dil,
                 groups=x.shape[1])
    return ACTS[act](y).numpy()


def run(isa, x, w, b, stride, pad, dil, act, channels_last, threads):
    C.set_isa(isa)
    try:
        xin = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if channels_last else x
        out = np.asarray(C.dwconv2d(xin, w, b, list(stride), list(pad), list(dil), act,
                                    channels_last, threads))
        return out.transpose(0, 3, 1, 2) if channels_last else out
    finally:
        C.set_isa(C.best_isa())


def check(isa, n, c, h, w_, k, stride, pad, dil, act, seed=0, special=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    if special:
        flat = x.reshape(-1)
        idx = rng.choice(flat.size, size=max(1, flat.size // 40), replace=False)
        flat[idx] = rng.choice([np.nan, np.inf, -np.inf, -0.0, 1e30], size=idx.size)
    wt = rng.standard_normal((c, 1) + tuple(k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    ref = reference(x, wt, b, stride, pad, dil, act)
    for channels_last in (False, True):
        one = run(isa, x, wt, b, stride, pad, dil, act, channels_last, 1)
        two = run(isa, x, wt, b, stride, pad, dil, act, channels_last, 2)
        assert one.shape == ref.shape
        assert np.array_equal(one, two, equal_nan=True), "threads=1 and threads=2 differ"
        np.testing.assert_array_equal(np.isnan(one), np.isnan(ref))
        finite = np.isfinite(ref)
        np.testing.assert_array_equal(one[~finite & ~np.isnan(ref)], ref[~finite & ~np.isnan(ref)])
        if finite.any():
            scale = np.abs(ref[finite]).max() + 1.0
            np.testing.assert_allclose(one[finite], ref[finite], rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c", [1, 3, 9, 16, 17, 72, 101])
@pytest.mark.parametrize("k,s", [(3, 1), (3, 2), (5, 1), (5, 2)])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (7, 7), (14, 14), (13, 9)])
def test_mobilenet_like(isa, c, k, s, size):
    act = list(ACTS)[(c + k + s + size[0]) % 4]
    p = k // 2
    check(isa, 1, c, size[0], size[1], (k, k), (s, s), (p, p, p, p), (1, 1), act)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c,size", [(16, 56), (72, 28), (960, 7), (184, 14)])
@pytest.mark.parametrize("k,s", [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_layer_sizes(isa, c, size, k, s):
    check(isa, 1, c, size, size, (k, k), (s, s), (k // 2,) * 4, (1, 1), "hardswish")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k", [(1, 1), (2, 2), (4, 4), (7, 7), (3, 5), (1, 7)])
@pytest.mark.parametrize("s", [(1, 1), (2, 2), (3, 3), (1, 2)])
@pytest.mark.parametrize("d", [(1, 1), (2, 2), (1, 2)])
@pytest.mark.parametrize("pad", [(0, 0, 0, 0), (1, 2, 0, 3), "big"])
def test_general_shapes(isa, k, s, d, pad):
    if pad == "big":
        pad = (k[0] + 2, k[1] + 3, k[0] + 1, k[1] + 2)
    h, w_ = (9, 11)
    if (h + pad[0] + pad[2] < d[0] * (k[0] - 1) + 1) or (w_ + pad[1] + pad[3] < d[1] * (k[1] - 1) + 1):
        # Not a skip: an impossible geometry must be refused clearly.
        x = np.zeros((1, 7, h, w_), np.float32)
        weight = np.zeros((7, 1) + tuple(k), np.float32)
        with pytest.raises(ValueError, match="smaller than the dilated kernel"):
            C.dwconv2d(x, weight, None, list(s), list(pad), list(d), "relu6")
        return
    for n, c in ((2, 7), (1, 33)):
        check(isa, n, c, h, w_, k, s, pad, d, "relu6")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("k,s", [(3, 1), (3, 2), (5, 1), (5, 2), (7, 3)])
def test_nan_inf(isa, act, k, s):
    check(isa, 2, 19, 10, 12, (k, k), (s, s), (1, 2, 2, 1), (1, 1), act, special=True)


@pytest.mark.parametrize("isa", ISAS)
def test_tiny_inputs_big_padding(isa):
    for h, w_ in ((1, 1), (2, 2), (1, 3)):
        for k in (3, 5):
            check(isa, 1, 17, h, w_, (k, k), (1, 1), (k + 1, k, k, k + 2), (1, 1), "relu")
            check(isa, 1, 17, h, w_, (k, k), (2, 2), (k, k + 1, k + 2, k), (1, 1), "hardswish")
