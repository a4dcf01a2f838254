"""``mnv3ext.optimize`` with whole inverted-residual blocks (``fuse_blocks``): which blocks become
one ``FusedInvertedResidual``, that the optimized models still match eager (1e-4 relative), that
candidates left unfused say why, thread safety, RSS stability and peak memory.

Expected block counts come from the architectures, not from the code: MobileNetV3-Large has 15
bnecks, Small 11 (the papers' tables); the mimics' counts are derived per structure below.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mnv3ext
from mnv3ext.models import lraspp_mobilenet_v3_large, mobilenet_v3_large, mobilenet_v3_small
from mnv3ext.nn import FusedInvertedResidual

import mimics

RTOL = 1e-4
CL = torch.channels_last
NCHW = torch.contiguous_format
_cache: dict = {}


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def _model(name):
    if name not in _cache:
        ctor = {"large": mobilenet_v3_large, "small": mobilenet_v3_small, "lraspp": lraspp_mobilenet_v3_large,
                **mimics.ALL_MIMICS}[name]
        torch.manual_seed(0)
        _cache[name] = mimics.randomized(ctor(), seed=1)
    return _cache[name]


def _optimized(name, fmt=CL):
    if (name, fmt) not in _cache:
        _cache[(name, fmt)] = mnv3ext.optimize(_model(name), memory_format=fmt)
    return _cache[(name, fmt)]


def _outputs(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return list(out.values()) if isinstance(out, dict) else list(out)


def assert_close(got, want, rtol=RTOL, label=""):
    for g, w in zip(_outputs(got), _outputs(want)):
        assert g.shape == w.shape
        err = (g - w).abs().max().item() / max(w.abs().max().item(), 1e-30)
        assert err <= rtol, f"{label}: relative error {err:.3g} > {rtol}"


def _blocks(o):
    return [m for m in o.modules() if isinstance(m, FusedInvertedResidual)]


# ---------------------------------------------------------------------------------------------
# MobileNetV3-Large / Small / LR-ASPP


@pytest.mark.parametrize("name, blocks, shape, fmt", [
    ("large", 15, (1, 3, 224, 224), CL),  # optimize(Large) once (slow); NCHW and channels_last inputs
    ("small", 11, (1, 3, 129, 111), CL),
    ("small", 11, (1, 3, 129, 111), NCHW),
], ids=["large-channels_last", "small-channels_last", "small-nchw"])
def test_mobilenet_v3_every_block_fused_and_matches_eager(name, blocks, shape, fmt):
    o = _optimized(name, fmt)
    s = o.mnv3ext_summary
    assert len(s.blocks) == blocks == len(_blocks(o)), str(s)
    assert not s.left_on_pytorch, str(s)
    assert not [u for u in s.unfused if u[1] == "inverted-residual block"], str(s)
    # The blocks' configs: SE in 8 (Large) / 9 (Small) of them, residuals where stride 1 and in == out.
    cfgs = [mnv3ext.ops.describe_config(b.config) for b in _blocks(o)]
    assert sum(c["se_squeeze"] > 0 for c in cfgs) == {"large": 8, "small": 9}[name]
    assert sum(c["has_expand"] == 0 for c in cfgs) == 1  # the first bneck has expansion 1
    assert all(c["stride"] == 1 and c["in_channels"] == c["out_channels"] for c in cfgs if c["has_residual"])
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g)
    with torch.no_grad():
        assert_close(o(x), _model(name)(x), label=name)
        assert_close(o(x.contiguous(memory_format=CL)), _model(name)(x), label=f"{name} cl input")


def test_lraspp_dilated_tail_fused_and_matches_eager():
    o = _optimized("lraspp", CL)
    s = o.mnv3ext_summary
    assert len(s.blocks) == 15, str(s)
    cfgs = [mnv3ext.ops.describe_config(b.config) for b in _blocks(o)]
    assert sum(c["dilation"] == 2 for c in cfgs) == 3, cfgs  # the last stage's three bnecks
    x = torch.randn(1, 3, 112, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert_close(o(x), _model("lraspp")(x), label="lraspp")


# ---------------------------------------------------------------------------------------------
# Mimics (tests/mimics.py): blocks by structure
#   timm_style / timm_tf_same: 1 DepthwiseSeparable (dw -> SE -> pw) + 6 InvertedResidual = 7
#   ssdlite_like: the 15 backbone bnecks (the split C4 block fused without its expansion, whose
#     output also feeds a head) + 2 extra blocks (1x1 -> dw s2 -> 1x1) + 8 prediction heads
#     (dw -> 1x1 with bias) = 25
#   hand_written: dw1 -> LinearSE -> pw1 = 1 (dw2 -> se2 is followed by another depthwise conv)
#   untraceable_root: no 1x1 projection = 0
MIMIC_BLOCKS = {"timm_style": 7, "timm_tf_same": 7, "ssdlite_like": 25, "hand_written": 1, "untraceable_root": 0}
# Before the optimize fix in progress at the time of writing, timm's `se = nn.Identity()` between
# the depthwise conv and the projection stopped 3 of the 7 timm-style blocks (with no reason in
# .unfused), and LinearSE's `x.size()` (dead once the SE is fused) made hand_written's block
# look "used outside the block": both fail the count test below.


@pytest.mark.parametrize("name", list(mimics.ALL_MIMICS))
def test_mimics_match_eager(name):
    m = _model(name)
    g = torch.Generator().manual_seed(6)
    for fmt in ((CL,) if name == "ssdlite_like" else (NCHW, CL)):
        o = _optimized(name, fmt)
        x = torch.randn(1, 3, 97, 81, generator=g)
        with torch.no_grad():
            if name == "ssdlite_like":  # deep random net: compare both with float64 (see test_optimize)
                ref = _outputs(__import__("copy").deepcopy(m).double()(x.double()))
                for got, orig, r in zip(_outputs(o(x)), _outputs(m(x)), ref):
                    scale = r.abs().max().item()
                    err = (got.double() - r).abs().max().item() / scale
                    orig_err = (orig.double() - r).abs().max().item() / scale
                    assert err <= max(RTOL, 3 * orig_err), (err, orig_err)
            else:
                assert_close(o(x), m(x), label=name)


@pytest.mark.parametrize("name", list(mimics.ALL_MIMICS))
def test_mimics_blocks_fused_where_the_structure_allows(name):
    s = _optimized(name, CL).mnv3ext_summary
    assert len(s.blocks) == MIMIC_BLOCKS[name], str(s)
    assert not [u for u in s.unfused if u[1] == "inverted-residual block"], str(s)


def test_timm_tf_same_blocks_use_dynamic_same_padding():
    o = _optimized("timm_tf_same", CL)
    same = [b for b in _blocks(o) if b.same_padding]
    assert same and all(mnv3ext.ops.describe_config(b.config)["stride"] == 2 for b in same)
    for hw in [(64, 64), (65, 63), (33, 50)]:
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            assert_close(o(x), _model("timm_tf_same")(x), label=f"tf-same {hw}")


# ---------------------------------------------------------------------------------------------
# Candidates that must stay unfused, with a reason


def _bn(c):
    return nn.BatchNorm2d(c)


class ResidualNotInput(nn.Module):
    """expand -> dw -> project, plus a tensor that is not the block's input."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.expand = nn.Sequential(nn.Conv2d(16, 48, 1, bias=False), _bn(48), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(48, 48, 3, 1, 1, groups=48, bias=False), _bn(48), nn.ReLU())
        self.project = nn.Sequential(nn.Conv2d(48, 16, 1, bias=False), _bn(16))

    def forward(self, x):
        x = self.stem(x)
        other = F.relu(x) * 0.5
        return self.project(self.dw(self.expand(x))) + other


class DepthwiseUsedElsewhere(nn.Module):
    """The depthwise output also leaves the block."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.expand = nn.Sequential(nn.Conv2d(16, 48, 1, bias=False), _bn(48), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(48, 48, 3, 1, 1, groups=48, bias=False), _bn(48), nn.ReLU())
        self.project = nn.Sequential(nn.Conv2d(48, 16, 1, bias=False), _bn(16))

    def forward(self, x):
        x = self.stem(x)
        d = self.dw(self.expand(x))
        return self.project(d) + x, d.mean((2, 3))


class PlainBlock(DepthwiseUsedElsewhere):
    """Control: the same block, nothing shared: fused."""

    def forward(self, x):
        x = self.stem(x)
        return self.project(self.dw(self.expand(x))) + x


@pytest.mark.parametrize("cls, reason, blocks", [
    (ResidualNotInput, "residual added is not the block's input", 0),
    (DepthwiseUsedElsewhere, "depthwise output is used outside the block", 0),
    (PlainBlock, None, 1),
])
def test_unfusable_blocks_are_left_with_a_reason(cls, reason, blocks):
    torch.manual_seed(2)
    m = mimics.randomized(cls(), seed=2)
    o = mnv3ext.optimize(m)
    s = o.mnv3ext_summary
    assert len(s.blocks) == blocks, str(s)
    found = [u for u in s.unfused if u[1] == "inverted-residual block"]
    if reason is None:
        assert not found, str(s)
    else:
        assert found and reason in found[0][2], str(s)
    x = torch.randn(2, 3, 33, 30)
    with torch.no_grad():
        assert_close(o(x), m(x), label=cls.__name__)


# ---------------------------------------------------------------------------------------------
# timm itself


@pytest.mark.parametrize("arch, blocks", [("mobilenetv3_large_100", 15), ("tf_mobilenetv3_small_100", 11)])
def test_timm_models(arch, blocks):
    try:
        import timm
    except ImportError:
        pytest.skip("timm is not installed")
    except Exception as e:  # installed but broken (e.g. a torchvision built for another torch):
        pytest.skip(f"timm is installed but does not import: {type(e).__name__}: {e}")  # not ours
    m = mimics.randomized(timm.create_model(arch, pretrained=False).eval(), seed=4)
    o = mnv3ext.optimize(m)
    s = o.mnv3ext_summary
    x = torch.randn(1, 3, 96, 112)
    with torch.no_grad():
        assert_close(o(x), m(x), label=arch)
    assert len(s.blocks) == blocks, str(s)


# ---------------------------------------------------------------------------------------------
# Threads and memory


def test_optimized_model_from_8_threads_matches_serial():
    model = _optimized("small", CL)
    g = torch.Generator().manual_seed(0)
    inputs = [[torch.randn(1 + i % 2, 3, 96 + 8 * (i % 3), 96, generator=g) for _ in range(2)] for i in range(8)]
    torch.set_num_threads(1)
    with torch.no_grad():
        serial = [[model(x) for x in xs] for xs in inputs]
    barrier = threading.Barrier(8)
    results, errors = [None] * 8, []

    def worker(i):
        try:
            torch.set_num_threads(1 + i % 2)
            barrier.wait()
            with torch.no_grad():
                results[i] = [model(x) for x in inputs[i] for _ in range(2)]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors[0]
    for i in range(8):
        for j, out in enumerate(results[i]):
            assert torch.equal(out, serial[i][j // 2]), f"thread {i} call {j} differs from the serial result"


def _run(code, *args, timeout=900):
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(mnv3ext.__file__)))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=tempfile.gettempdir(),
                       capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "PYTHONPATH": package_parent, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


RSS_SCRIPT = r"""
import gc, json, os, sys
import torch, mnv3ext
from mnv3ext.models import mobilenet_v3_small, randomize_batchnorm_
torch.set_num_threads(1)
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE
calls = int(sys.argv[1])
model = mnv3ext.optimize(randomize_batchnorm_(mobilenet_v3_small()).eval())
assert len(model.mnv3ext_summary.blocks) == 11
x = torch.randn(1, 3, 16, 16)
with torch.no_grad():
    for _ in range(200):
        model(x)
    gc.collect()
    objects = len(gc.get_objects())
    before, samples = rss(), []
    for i in range(calls):
        model(x)
        if (i + 1) % (calls // 10) == 0:
            samples.append(rss())
gc.collect()
print(json.dumps(dict(growth=rss() - before, max_growth=max(samples) - before, objects=len(gc.get_objects()) - objects)))
"""


def test_rss_flat_over_10000_calls_of_optimized_small():
    f = _run(RSS_SCRIPT, 10_000)
    msg = f"RSS growth {f['growth']} B (max {f['max_growth']} B), live objects {f['objects']:+d}"
    print(msg)
    assert f["max_growth"] <= 1 << 20, msg
    assert abs(f["objects"]) <= 50, msg


PEAK_SCRIPT = r"""
import gc, json, sys
import torch, mnv3ext
from mnv3ext.models import mobilenet_v3_large, randomize_batchnorm_
torch.set_num_threads(1)
def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
def reset_peak():  # VmHWM := current RSS (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
mode = sys.argv[1]
model = randomize_batchnorm_(mobilenet_v3_large(), seed=0).eval()
if mode == "optimized":
    model = mnv3ext.optimize(model)
gc.collect()
x = torch.randn(1, 3, 224, 224)
out = {}
with torch.no_grad():
    for call in ("first", "second"):
        reset_peak()
        base = status("VmRSS")
        y = model(x)
        out[call] = dict(base=base, peak=status("VmHWM"))
        del y
        gc.collect()
print(json.dumps(out))
"""


def test_peak_rss_of_optimized_inference_not_above_eager():
    eager = _run(PEAK_SCRIPT, "eager")
    opt = _run(PEAK_SCRIPT, "optimized")
    mib = 1 / (1 << 20)
    lines = []
    for call in ("first", "second"):
        e = eager[call]["peak"] - eager[call]["base"]
        o = opt[call]["peak"] - opt[call]["base"]
        lines.append(f"{call} call of MobileNetV3-Large 224x224 batch 1: peak RSS above the model's resident "
                     f"size: eager {e * mib:.1f} MiB (VmHWM {eager[call]['peak'] * mib:.1f} MiB), optimized "
                     f"{o * mib:.1f} MiB (VmHWM {opt[call]['peak'] * mib:.1f} MiB)")
    msg = "; ".join(lines)
    print(msg)
    for call in ("first", "second"):
        e = eager[call]["peak"] - eager[call]["base"]
        o = opt[call]["peak"] - opt[call]["base"]
        assert o <= e + (256 << 10), msg  # 256 KiB: page and allocator granularity
