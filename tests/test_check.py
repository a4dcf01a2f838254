"""mnv3ext.check: per-fused-layer errors against the reference ops, output agreement, ``ok``."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import mnv3ext
from mnv3ext.check import LAYER_RTOL, OUTPUT_RTOL, CheckReport
from mnv3ext.models import lraspp_mobilenet_v3_large, mobilenet_v3_small, randomize_batchnorm_

import mimics


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return mimics.randomized(mobilenet_v3_small(), seed=2)


def test_check_small_ok(small):
    x = torch.randn(2, 3, 193, 257)
    report = mnv3ext.check(small, x)
    assert isinstance(report, CheckReport)
    assert report.ok, str(report)
    kinds = [l.kind for l in report.layers]
    # every layer is checked: the 11 blocks as one op each, stem, last 1x1, pool, classifier
    assert kinds.count("block") == 11 and kinds.count("1x1 conv") == 1 and kinds.count("conv") == 1
    assert kinds.count("linear") == 2 and kinds.count("global pool") == 1
    assert all(l.max_rel <= LAYER_RTOL for l in report.layers)
    (out,) = report.outputs
    assert out.top1_agreement == 1.0 and out.max_rel <= OUTPUT_RTOL
    text = str(report)
    assert text.startswith("mnv3ext.check: OK")
    assert "features.4" in text and "block" in text and "top-1 agreement 100.0%" in text


def test_check_dict_outputs_and_nchw():
    m = mimics.randomized(lraspp_mobilenet_v3_large(num_classes=5))
    report = mnv3ext.check(m, torch.randn(1, 3, 97, 131), memory_format=torch.contiguous_format)
    assert report.ok, str(report)
    assert [o.name for o in report.outputs] == ["['out']"]
    assert report.outputs[0].top1_agreement is None  # not a classifier output


def test_check_mimic_with_same_padding():
    m = mimics.randomized(mimics.TimmStyleMobileNetV3(same=True))
    optimized = mnv3ext.optimize(m)
    report = mnv3ext.check(m, torch.randn(1, 3, 75, 94), optimized=optimized)
    assert report.ok, str(report)
    same = {n for n, mod in optimized.named_modules() if getattr(mod, "same_padding", False)}
    checked = {l.name for l in report.layers if l.kind == "block"}
    assert len(same) == 3 and same <= checked, (same, str(report))  # the 3 stride-2 blocks
    assert [l.kind for l in report.layers].count("conv(same)") == 1  # the stem


def test_check_detects_a_wrong_model(small):
    """A broken fused layer (its packed weights off by 10%, as a kernel bug would be) is reported
    at that layer and in the output, not hidden."""
    x = torch.randn(1, 3, 128, 128)
    optimized = mnv3ext.optimize(small)
    block = optimized.get_submodule("features.1.block")
    layout = mnv3ext._C.block_layout(block.config)
    with torch.no_grad():  # the depthwise section of the block's packed weights
        block.packed_weights[layout["dw"]:layout["se_fc1"]] *= 1.1
    report = mnv3ext.check(small, x, optimized=optimized)
    assert not report.ok
    bad = [l.name for l in report.layers if not l.ok]
    assert bad == ["features.1.block"]
    assert not report.outputs[0].ok
    assert "over tolerance" in str(report) and "FAILED" in str(report)


def test_check_tuple_input():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, a, b):
            return torch.relu(self.bn(self.dw(a))) + b

    m = randomize_batchnorm_(Two()).eval()
    report = mnv3ext.check(m, (torch.randn(1, 8, 9, 9), torch.randn(1, 8, 9, 9)))
    assert report.ok and len(report.layers) == 1
