"""Torch-level smoke test: ``torch.ops.mnv3ext.*`` against ``mnv3ext.reference`` (float64) on a
small set of shapes chosen to reach every code path of the SIMD kernels, on every ISA.

Written for the emulated aarch64 run (tools/ci/arm_emulated.sh, torch 2.9.1 under qemu), where
the NEON paths are:
  dwconv NHWC  3x3 dil 1 (8-channel tiles with taps in registers), 5x5 dil 1 (4-channel tiles),
               any other kernel/dilation (from memory); 4-channel tiles and the < 4 tail
  dwconv NCHW  3x3 / 5x5 / general kernels from the zero-padded phase-split plane, stride 1
               (memcpy), 2 (vld2 deinterleave), 3 (gather); 8- and 4-column steps and tails
  SE           plane_sum / scale_planes (NCHW), pixel_sum / scale_pixels (NHWC), matvec
Cheap enough to run natively with the rest of the suite as well.
"""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
mnv3ext = pytest.importorskip("mnv3ext")
from mnv3ext import reference  # noqa: E402

EXPECTED_ISAS = [s for s in os.environ.get("MNV3EXT_EXPECT_ISAS", "").split(",") if s]
# MNV3EXT_TEST_ISAS=neon limits the run to some ISAs (the emulated run: the scalar path is
# covered by the C++ tests and natively, and every op call costs seconds under qemu).
_ONLY = [s for s in os.environ.get("MNV3EXT_TEST_ISAS", "").split(",") if s]
ISAS = [name for name in mnv3ext.available_isas() if not _ONLY or name in _ONLY]


@pytest.fixture(params=ISAS)
def isa(request):
    with mnv3ext.use_isa(request.param):
        yield request.param


def test_expected_isas_present():
    for name in EXPECTED_ISAS + _ONLY:
        assert name in mnv3ext.available_isas(), f"{name} expected in {mnv3ext.available_isas()}"


ACTIVATIONS = ("none", "relu", "relu6", "hardswish")

# (C, H, W, kernel, stride, padding (top, left, bottom, right), dilation)
DW_CASES = [
    (24, 13, 11, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),  # NHWC 8-wide 3x3 tiles, NCHW s1 3x3
    (13, 14, 14, (3, 3), (2, 2), (0, 0, 1, 1), (1, 1)),  # 8 + 4 + 1-channel tail, NCHW s2 (vld2)
    (20, 9, 21, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),   # NHWC 5x5 4-wide tiles, NCHW 5x5
    (7, 14, 14, (5, 5), (2, 2), (1, 2, 2, 1), (1, 1)),   # 5x5 + 3-channel tail, stride 2
    (17, 10, 12, (7, 7), (3, 3), (3, 3, 3, 3), (1, 1)),  # general kernel, stride 3 gather
    (9, 11, 13, (3, 3), (1, 2), (2, 2, 2, 2), (2, 2)),   # dilated 3x3 takes the general path
    (33, 6, 5, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),    # 1x1
    (5, 3, 2, (3, 5), (2, 1), (1, 2, 1, 2), (1, 1)),     # non-square kernel, tiny image
]


def _dwconv_inputs(case, seed):
    c, h, w, k, *_ = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c, h, w, generator=g)
    weight = torch.randn(c, 1, *k, generator=g)
    bias = torch.randn(c, generator=g)
    return x, weight, bias


@pytest.mark.parametrize("case", DW_CASES, ids=[f"C{c[0]}k{c[3][0]}x{c[3][1]}s{c[4][0]}d{c[6][0]}"
                                                for c in DW_CASES])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_dwconv2d_op(isa, case, channels_last):
    c, h, w, k, stride, padding, dilation = case
    x, weight, bias = _dwconv_inputs(case, seed=c * 100 + h)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # Two activations per case, rotating: every activation meets every kernel path once per
    # layout over the case list (the C++ and numpy tests cover them exhaustively).
    i = DW_CASES.index(case)
    for activation in (ACTIVATIONS[i % 4], ACTIVATIONS[(i + 2) % 4]):
        got = torch.ops.mnv3ext.dwconv2d(x, weight, bias, list(stride), list(padding),
                                         list(dilation), activation)
        want = reference.dwconv2d(x.double(), weight.double(), bias.double(), stride, padding,
                                  dilation, activation)
        assert got.shape == want.shape
        assert got.is_contiguous(memory_format=torch.channels_last) == channels_last or \
            got.shape[2] * got.shape[3] == 1 or got.shape[1] == 1
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4,
                                   msg=lambda m: f"{isa} {activation}: {m}")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_dwconv2d_op_nan_input(isa, channels_last):
    x, weight, bias = _dwconv_inputs(DW_CASES[0], seed=5)
    x[1, 3, 4, 4] = float("nan")
    x[0, 9, 0, 0] = float("inf")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got = torch.ops.mnv3ext.dwconv2d(x, weight, bias, [1, 1], [1, 1, 1, 1], [1, 1], "relu")
    want = reference.dwconv2d(x.double(), weight.double(), bias.double(), (1, 1), (1, 1, 1, 1),
                              (1, 1), "relu")
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4, equal_nan=True)


# (C, H, W, S)
SE_CASES = [(24, 7, 7, 8), (13, 5, 9, 4), (72, 14, 14, 24), (3, 1, 1, 1)]


@pytest.mark.parametrize("case", SE_CASES, ids=[f"C{c[0]}H{c[1]}W{c[2]}S{c[3]}" for c in SE_CASES])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_squeeze_excite_op(isa, case, channels_last):
    c, h, w, s = case
    g = torch.Generator().manual_seed(c + s)
    x = torch.randn(2, c, h, w, generator=g)
    fc1, b1 = torch.randn(s, c, generator=g) / c ** 0.5, torch.randn(s, generator=g)
    fc2, b2 = torch.randn(c, s, generator=g) / s ** 0.5, torch.randn(c, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for activation, gate in (("relu", "hardsigmoid"), ("hardswish", "sigmoid")):
        got = torch.ops.mnv3ext.squeeze_excite(x, fc1, b1, fc2, b2, activation, gate)
        want = reference.squeeze_excite(x.double(), fc1.double(), b1.double(), fc2.double(),
                                        b2.double(), activation, gate)
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5,
                                   msg=lambda m: f"{isa} {activation}/{gate}: {m}")
