"""Tests for mnv3ext.models: torchvision state_dict compatibility, shapes, variants.

The expected state_dict keys/shapes are built from hand-written tables (the paper's Tables 1
and 2 plus torchvision's naming scheme), not from the models under test.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnv3ext.models import (
    InvertedResidual,
    SqueezeExcitation,
    lraspp_mobilenet_v3_large,
    mobilenet_v3_large,
    mobilenet_v3_small,
    randomize_batchnorm_,
)
from mnv3ext.shapes import LARGE_DW, LARGE_SE, SMALL_DW, SMALL_SE

# Per bneck: (input, kernel, expanded, out, squeeze channels (0 = no SE), activation, stride).
# Squeeze channels written out by hand: make_divisible(expanded // 4, 8) of torchvision.
LARGE_TABLE = [
    (16, 3, 16, 16, 0, "relu", 1),
    (16, 3, 64, 24, 0, "relu", 2),
    (24, 3, 72, 24, 0, "relu", 1),
    (24, 5, 72, 40, 24, "relu", 2),
    (40, 5, 120, 40, 32, "relu", 1),
    (40, 5, 120, 40, 32, "relu", 1),
    (40, 3, 240, 80, 0, "hardswish", 2),
    (80, 3, 200, 80, 0, "hardswish", 1),
    (80, 3, 184, 80, 0, "hardswish", 1),
    (80, 3, 184, 80, 0, "hardswish", 1),
    (80, 3, 480, 112, 120, "hardswish", 1),
    (112, 3, 672, 112, 168, "hardswish", 1),
    (112, 5, 672, 160, 168, "hardswish", 2),
    (160, 5, 960, 160, 240, "hardswish", 1),
    (160, 5, 960, 160, 240, "hardswish", 1),
]
SMALL_TABLE = [
    (16, 3, 16, 16, 8, "relu", 2),
    (16, 3, 72, 24, 0, "relu", 2),
    (24, 3, 88, 24, 0, "relu", 1),
    (24, 5, 96, 40, 24, "hardswish", 2),
    (40, 5, 240, 40, 64, "hardswish", 1),
    (40, 5, 240, 40, 64, "hardswish", 1),
    (40, 5, 120, 48, 32, "hardswish", 1),
    (48, 5, 144, 48, 40, "hardswish", 1),
    (48, 5, 288, 96, 72, "hardswish", 2),
    (96, 5, 576, 96, 144, "hardswish", 1),
    (96, 5, 576, 96, 144, "hardswish", 1),
]
# (last conv channels, classifier hidden) -- the efficient last stage.
LARGE_LAST = (960, 1280)
SMALL_LAST = (576, 1024)

LARGE_PARAMS = 5_483_032
SMALL_PARAMS = 2_542_856
LRASPP_PARAMS = 3_221_538


def _bn(prefix, c):
    return [
        (f"{prefix}.weight", (c,)),
        (f"{prefix}.bias", (c,)),
        (f"{prefix}.running_mean", (c,)),
        (f"{prefix}.running_var", (c,)),
        (f"{prefix}.num_batches_tracked", ()),
    ]


def _conv_bn(prefix, cout, cin_per_group, k):
    return [(f"{prefix}.0.weight", (cout, cin_per_group, k, k))] + _bn(f"{prefix}.1", cout)


def expected_features(table, last_conv, root="features"):
    keys = _conv_bn(f"{root}.0", 16, 3, 3)
    for i, (cin, k, exp, out, sq, _act, _stride) in enumerate(table, start=1):
        j = 0
        p = f"{root}.{i}.block"
        if exp != cin:
            keys += _conv_bn(f"{p}.{j}", exp, cin, 1)
            j += 1
        keys += _conv_bn(f"{p}.{j}", exp, 1, k)
        j += 1
        if sq:
            keys += [
                (f"{p}.{j}.fc1.weight", (sq, exp, 1, 1)),
                (f"{p}.{j}.fc1.bias", (sq,)),
                (f"{p}.{j}.fc2.weight", (exp, sq, 1, 1)),
                (f"{p}.{j}.fc2.bias", (exp,)),
            ]
            j += 1
        keys += _conv_bn(f"{p}.{j}", out, exp, 1)
    keys += _conv_bn(f"{root}.{len(table) + 1}", last_conv, table[-1][3], 1)
    return keys


def expected_classification(table, last, num_classes=1000):
    last_conv, hidden = last
    return expected_features(table, last_conv) + [
        ("classifier.0.weight", (hidden, last_conv)),
        ("classifier.0.bias", (hidden,)),
        ("classifier.3.weight", (num_classes, hidden)),
        ("classifier.3.bias", (num_classes,)),
    ]


def expected_lraspp(num_classes=21):
    inter = 128
    return expected_features(LARGE_TABLE, 960, root="backbone") + [
        ("classifier.cbr.0.weight", (inter, 960, 1, 1)),
        *_bn("classifier.cbr.1", inter),
        ("classifier.scale.1.weight", (inter, 960, 1, 1)),
        ("classifier.low_classifier.weight", (num_classes, 40, 1, 1)),
        ("classifier.low_classifier.bias", (num_classes,)),
        ("classifier.high_classifier.weight", (num_classes, inter, 1, 1)),
        ("classifier.high_classifier.bias", (num_classes,)),
    ]


def sd_list(model):
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_expected_tables_match_shapes_module():
    # The hand tables above and mnv3ext.shapes describe the same networks.
    for table, dw, se in ((LARGE_TABLE, LARGE_DW, LARGE_SE), (SMALL_TABLE, SMALL_DW, SMALL_SE)):
        assert [(r[2], r[1], r[6], r[5]) for r in table] == [(d.channels, d.kernel, d.stride, d.activation) for d in dw]
        assert [(r[2], r[4]) for r in table if r[4]] == [(s.channels, s.squeeze) for s in se]


# ---------------------------------------------------------------- parameter counts / keys


def test_param_counts():
    assert n_params(mobilenet_v3_large()) == LARGE_PARAMS
    assert n_params(mobilenet_v3_small()) == SMALL_PARAMS
    assert n_params(lraspp_mobilenet_v3_large()) == LRASPP_PARAMS
    assert n_params(lraspp_mobilenet_v3_large(num_classes=21)) == LRASPP_PARAMS


def test_param_counts_of_hand_tables():
    # The hand tables on their own give the published counts (sanity of the expectations).
    for expected, count in (
        (expected_classification(LARGE_TABLE, LARGE_LAST), LARGE_PARAMS),
        (expected_classification(SMALL_TABLE, SMALL_LAST), SMALL_PARAMS),
        (expected_lraspp(), LRASPP_PARAMS),
    ):
        total = 0
        for key, shape in expected:
            if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
                continue
            total += torch.Size(shape).numel()
        assert total == count


@pytest.mark.parametrize(
    "builder,table,last",
    [(mobilenet_v3_large, LARGE_TABLE, LARGE_LAST), (mobilenet_v3_small, SMALL_TABLE, SMALL_LAST)],
)
def test_state_dict_keys_and_shapes(builder, table, last):
    assert sd_list(builder()) == expected_classification(table, last)


def test_state_dict_num_classes():
    assert sd_list(mobilenet_v3_large(num_classes=10)) == expected_classification(LARGE_TABLE, LARGE_LAST, 10)


def test_lraspp_state_dict_keys_and_shapes():
    assert sd_list(lraspp_mobilenet_v3_large()) == expected_lraspp()
    assert sd_list(lraspp_mobilenet_v3_large(num_classes=5)) == expected_lraspp(5)


@pytest.mark.parametrize("builder", [mobilenet_v3_large, mobilenet_v3_small, lraspp_mobilenet_v3_large])
def test_strict_load_roundtrip(builder):
    src = randomize_batchnorm_(builder(), seed=1, conv_bias=True)
    dst = builder()
    dst.load_state_dict(src.state_dict(), strict=True)
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert torch.equal(a, b), k


def test_lraspp_backbone_loads_classification_features():
    # The LR-ASPP backbone is the dilated Large ``features`` (same tensors, renamed).
    feats = {
        k.replace("features.", "backbone.", 1): v
        for k, v in randomize_batchnorm_(mobilenet_v3_large(dilated=True), 3).state_dict().items()
        if k.startswith("features.")
    }
    model = lraspp_mobilenet_v3_large()
    missing, unexpected = model.load_state_dict(feats, strict=False)
    assert not unexpected
    assert all(k.startswith("classifier.") for k in missing)


# ---------------------------------------------------------------- structure


def test_batchnorm_hyperparameters_and_init():
    model = mobilenet_v3_large()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            assert torch.all(m.bias == 0)
        if isinstance(m, nn.Linear):
            assert torch.all(m.bias == 0)
            assert 0.005 < m.weight.std().item() < 0.015
    # kaiming_normal_(fan_out, relu gain): std = sqrt(2 / (out_channels / groups * k * k))
    conv = model.features[16][0]
    assert abs(conv.weight.std().item() / (2 / 960) ** 0.5 - 1) < 0.05


def test_module_structure():
    model = mobilenet_v3_large()
    stem = model.features[0]
    assert isinstance(stem, nn.Sequential)
    assert [type(m) for m in stem] == [nn.Conv2d, nn.BatchNorm2d, nn.Hardswish]
    assert [type(m) for m in model.classifier] == [nn.Linear, nn.Hardswish, nn.Dropout, nn.Linear]
    blocks = [m for m in model.features if isinstance(m, InvertedResidual)]
    assert len(blocks) == 15
    for blk, (cin, _k, exp, out, sq, act, stride) in zip(blocks, LARGE_TABLE):
        assert isinstance(blk.block, nn.Sequential)
        assert blk.use_res_connect == (stride == 1 and cin == out)
        project = blk.block[-1]
        assert [type(m) for m in project] == [nn.Conv2d, nn.BatchNorm2d]
        if sq:
            se = blk.block[-2]
            assert isinstance(se, SqueezeExcitation)
            assert isinstance(se.avgpool, nn.AdaptiveAvgPool2d)
            assert isinstance(se.activation, nn.ReLU)
            assert isinstance(se.scale_activation, nn.Hardsigmoid)
        act_type = nn.ReLU if act == "relu" else nn.Hardswish
        for cba in blk.block[:-1]:
            if not isinstance(cba, SqueezeExcitation):
                assert [type(m) for m in cba] == [nn.Conv2d, nn.BatchNorm2d, act_type]


def _dw_and_se_trace(model, size=224):
    dw, se = [], []
    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Sequential) and len(m) == 3 and isinstance(m[0], nn.Conv2d):
            conv = m[0]
            if conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels:
                act = {nn.ReLU: "relu", nn.Hardswish: "hardswish"}[type(m[2])]

                def dw_hook(mod, inp, out, conv=conv, act=act):
                    dw.append(
                        (conv.out_channels, inp[0].shape[-1], conv.kernel_size[0], conv.stride[0], act,
                         out.shape[-1])
                    )

                hooks.append(conv.register_forward_hook(dw_hook))
        if isinstance(m, SqueezeExcitation):

            def se_hook(mod, inp, out):
                se.append((mod.fc1.in_channels, inp[0].shape[-1], mod.fc1.out_channels))

            hooks.append(m.register_forward_hook(se_hook))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, size, size))
    for h in hooks:
        h.remove()
    return dw, se


@pytest.mark.parametrize(
    "builder,dw_list,se_list",
    [(mobilenet_v3_large, LARGE_DW, LARGE_SE), (mobilenet_v3_small, SMALL_DW, SMALL_SE)],
)
def test_dw_and_se_layers_match_shapes(builder, dw_list, se_list):
    dw, se = _dw_and_se_trace(builder())
    assert dw == [(d.channels, d.size, d.kernel, d.stride, d.activation, d.out_size) for d in dw_list]
    assert se == [(s.channels, s.size, s.squeeze) for s in se_list]
    assert all(s.activation == "relu" and s.gate == "hardsigmoid" for s in se_list)


# ---------------------------------------------------------------- forward


def reference_forward(sd, table, prefix="features"):
    """Functional forward from a state_dict and the hand table (eval-mode BN)."""
    acts = {"relu": F.relu, "hardswish": F.hardswish}

    def cba(x, p, stride=1, groups=1, act=None, dilation=1):
        w = sd[f"{p}.0.weight"]
        pad = (w.shape[-1] - 1) // 2 * dilation
        x = F.conv2d(x, w, None, stride, pad, dilation, groups)
        x = F.batch_norm(
            x, sd[f"{p}.1.running_mean"], sd[f"{p}.1.running_var"], sd[f"{p}.1.weight"], sd[f"{p}.1.bias"],
            False, 0.0, 1e-3,
        )
        return acts[act](x) if act else x

    def features(x):
        x = cba(x, f"{prefix}.0", stride=2, act="hardswish")
        for i, (cin, _k, exp, out, sq, act, stride) in enumerate(table, start=1):
            p = f"{prefix}.{i}.block"
            j, y = 0, x
            if exp != cin:
                y = cba(y, f"{p}.0", act=act)
                j = 1
            y = cba(y, f"{p}.{j}", stride=stride, groups=exp, act=act)
            j += 1
            if sq:
                s = y.mean((2, 3), keepdim=True)
                s = F.relu(F.conv2d(s, sd[f"{p}.{j}.fc1.weight"], sd[f"{p}.{j}.fc1.bias"]))
                s = F.hardsigmoid(F.conv2d(s, sd[f"{p}.{j}.fc2.weight"], sd[f"{p}.{j}.fc2.bias"]))
                y = y * s
                j += 1
            y = cba(y, f"{p}.{j}")
            x = x + y if (stride == 1 and cin == out) else y
        return cba(x, f"{prefix}.{len(table) + 1}", act="hardswish")

    def classify(x):
        x = features(x).mean((2, 3))
        x = F.hardswish(F.linear(x, sd["classifier.0.weight"], sd["classifier.0.bias"]))
        return F.linear(x, sd["classifier.3.weight"], sd["classifier.3.bias"])

    return classify


@pytest.mark.parametrize("builder,table", [(mobilenet_v3_large, LARGE_TABLE), (mobilenet_v3_small, SMALL_TABLE)])
def test_forward_matches_functional_reference(builder, table):
    torch.manual_seed(0)
    model = randomize_batchnorm_(builder(), seed=2, conv_bias=True).eval()
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        got = model(x)
        ref = reference_forward(model.state_dict(), table)(x)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("builder", [mobilenet_v3_large, mobilenet_v3_small])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("hw", [(224, 224), (193, 257)])
def test_classification_forward_shapes(builder, batch, hw):
    model = randomize_batchnorm_(builder(), seed=0).eval()
    with torch.no_grad():
        y = model(torch.randn(batch, 3, *hw))
    assert y.shape == (batch, 1000)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("hw", [(224, 224), (193, 257)])
def test_lraspp_forward_shapes(batch, hw):
    model = randomize_batchnorm_(lraspp_mobilenet_v3_large(), seed=0).eval()
    x = torch.randn(batch, 3, *hw)
    with torch.no_grad():
        out = model(x)
        feats = model.backbone(x)
    assert list(out) == ["out"]
    assert out["out"].shape == (batch, 21, *hw)
    assert torch.isfinite(out["out"]).all()
    # low tap: output stride 8, 40 channels; high tap: output stride 16 (dilated), 960 channels
    h, w = hw
    s2 = lambda n: (n - 1) // 2 + 1  # noqa: E731  (k odd, pad (k-1)/2, stride 2)
    assert feats["low"].shape == (batch, 40, s2(s2(s2(h))), s2(s2(s2(w))))
    assert feats["high"].shape == (batch, 960, s2(s2(s2(s2(h)))), s2(s2(s2(s2(w)))))


def test_lraspp_forward_matches_functional_head():
    model = randomize_batchnorm_(lraspp_mobilenet_v3_large(), seed=4, conv_bias=True).eval()
    sd = model.state_dict()
    x = torch.randn(1, 3, 129, 161)
    with torch.no_grad():
        feats = model.backbone(x)
        low, high = feats["low"], feats["high"]
        y = F.conv2d(high, sd["classifier.cbr.0.weight"])
        y = F.relu(F.batch_norm(y, sd["classifier.cbr.1.running_mean"], sd["classifier.cbr.1.running_var"],
                                sd["classifier.cbr.1.weight"], sd["classifier.cbr.1.bias"], False, 0.0, 1e-5))
        s = torch.sigmoid(F.conv2d(high.mean((2, 3), keepdim=True), sd["classifier.scale.1.weight"]))
        y = F.interpolate(y * s, size=low.shape[-2:], mode="bilinear", align_corners=False)
        y = F.conv2d(low, sd["classifier.low_classifier.weight"], sd["classifier.low_classifier.bias"]) + F.conv2d(
            y, sd["classifier.high_classifier.weight"], sd["classifier.high_classifier.bias"]
        )
        ref = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(x)["out"], ref, rtol=1e-4, atol=1e-5)


def test_randomize_batchnorm():
    a = randomize_batchnorm_(mobilenet_v3_small(), seed=7)
    b = randomize_batchnorm_(mobilenet_v3_small(), seed=7)
    c = randomize_batchnorm_(mobilenet_v3_small(), seed=8)
    bn_a = [m for m in a.modules() if isinstance(m, nn.BatchNorm2d)]
    bn_b = [m for m in b.modules() if isinstance(m, nn.BatchNorm2d)]
    bn_c = [m for m in c.modules() if isinstance(m, nn.BatchNorm2d)]
    for ma, mb, mc in zip(bn_a, bn_b, bn_c):
        assert torch.equal(ma.running_var, mb.running_var) and torch.equal(ma.bias, mb.bias)
        assert not torch.equal(ma.running_var, mc.running_var)
        assert ma.running_var.min() >= 0.5 and ma.running_var.max() <= 2.0
        assert ma.running_mean.abs().max() > 0 and not torch.all(ma.weight == 1)
    # SE biases untouched unless asked
    se = [m for m in a.modules() if isinstance(m, SqueezeExcitation)]
    assert all(torch.all(m.fc1.bias == 0) for m in se)
    d = randomize_batchnorm_(mobilenet_v3_small(), seed=7, conv_bias=True)
    assert all(m.fc1.bias.abs().max() > 0 for m in d.modules() if isinstance(m, SqueezeExcitation))


# ---------------------------------------------------------------- variants


def test_width_mult_075():
    for builder, cin_last, last_conv, hidden in ((mobilenet_v3_large, 120, 720, 960),
                                                 (mobilenet_v3_small, 72, 432, 768)):
        model = randomize_batchnorm_(builder(width_mult=0.75), seed=0).eval()
        assert model.features[0][0].out_channels == 16  # make_divisible(12) == 16
        assert model.features[-1][0].in_channels == cin_last
        assert model.classifier[0].in_features == last_conv and model.classifier[0].out_features == hidden
        with torch.no_grad():
            assert model(torch.randn(2, 3, 193, 257)).shape == (2, 1000)


def test_reduced_tail():
    # torchvision: tail outputs halved; the first tail block keeps its 672 / 288 expansion,
    # the later ones are halved; last conv (6x) and hidden width follow.
    large = mobilenet_v3_large(reduced_tail=True)
    tail = [large.features[i].block for i in (13, 14, 15)]
    assert [t[0][0].out_channels for t in tail] == [672, 480, 480]
    assert [t[-1][0].out_channels for t in tail] == [80, 80, 80]
    assert large.classifier[0].in_features == 480 and large.classifier[0].out_features == 640
    small = mobilenet_v3_small(reduced_tail=True)
    assert [small.features[i].block[0][0].out_channels for i in (9, 10, 11)] == [288, 288, 288]
    assert small.classifier[0].in_features == 288 and small.classifier[0].out_features == 512
    for model in (large, small):
        model = randomize_batchnorm_(model, seed=0).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


LARGE_REDUCED_TABLE = LARGE_TABLE[:12] + [
    (112, 5, 672, 80, 168, "hardswish", 2),
    (80, 5, 480, 80, 120, "hardswish", 1),
    (80, 5, 480, 80, 120, "hardswish", 1),
]
SMALL_REDUCED_TABLE = SMALL_TABLE[:8] + [
    (48, 5, 288, 48, 72, "hardswish", 2),
    (48, 5, 288, 48, 72, "hardswish", 1),
    (48, 5, 288, 48, 72, "hardswish", 1),
]


@pytest.mark.parametrize(
    "builder,table,last",
    [(mobilenet_v3_large, LARGE_REDUCED_TABLE, (480, 640)), (mobilenet_v3_small, SMALL_REDUCED_TABLE, (288, 512))],
)
def test_reduced_tail_state_dict(builder, table, last):
    assert sd_list(builder(reduced_tail=True)) == expected_classification(table, last)


@pytest.mark.parametrize("builder,tail", [(mobilenet_v3_large, (13, 14, 15)), (mobilenet_v3_small, (9, 10, 11))])
def test_dilated(builder, tail):
    model = randomize_batchnorm_(builder(dilated=True), seed=0).eval()
    assert n_params(model) == n_params(builder())
    for i, blk in enumerate(model.features):
        if not isinstance(blk, InvertedResidual):
            continue
        dw = [m for m in blk.modules() if isinstance(m, nn.Conv2d) and m.groups > 1][0]
        if i in tail:
            assert dw.dilation == (2, 2) and dw.stride == (1, 1)
            assert dw.padding == (dw.kernel_size[0] - 1,) * 2
        else:
            assert dw.dilation == (1, 1)
    with torch.no_grad():
        assert model.features(torch.randn(1, 3, 224, 224)).shape[-2:] == (14, 14)
        assert model(torch.randn(2, 3, 193, 257)).shape == (2, 1000)


def test_lraspp_backbone_structure():
    model = lraspp_mobilenet_v3_large()
    assert list(model.backbone.keys()) == [str(i) for i in range(17)]
    assert model.backbone.return_layers == {"4": "low", "16": "high"}


@pytest.mark.parametrize("builder", [mobilenet_v3_large, mobilenet_v3_small])
def test_fx_traceable(builder):
    model = randomize_batchnorm_(builder(), seed=0).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))
