"""Hand-written MobileNetV3-style models in the styles of other code bases, for optimize() tests.

None of these classes is known to ``mnv3ext.optimize``; they re-create the *structures* of
torchvision (Conv2dNormActivation, SqueezeExcitation, SSDLite's split backbone and heads),
timm (BatchNormAct2d with the activation inside, Conv2dSame with padding computed in forward,
SqueezeExcite with ``x.mean((2, 3), keepdim=True)`` and the ``hard_sigmoid`` function) and a
user's own model (functional activations, Linear-based SE, explicit zero pads, functional conv,
a block that torch.fx cannot trace).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from mnv3ext.models import mobilenet_v3_large, randomize_batchnorm_


# ---------------------------------------------------------------------------------------------
# timm style

def hard_sigmoid(x, inplace: bool = False):
    if inplace:
        return x.add_(3.0).clamp_(0.0, 6.0).div_(6.0)
    return F.relu6(x + 3.0) / 6.0


def hard_swish(x, inplace: bool = False):
    inner = F.relu6(x + 3.0).div_(6.0)
    return x.mul_(inner) if inplace else x.mul(inner)


class HardSwishMe(nn.Module):
    def forward(self, x):
        return x * F.relu6(x + 3.0) / 6.0


class HardSigmoidFn(nn.Module):
    def forward(self, x):
        return hard_sigmoid(x)


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's BatchNormAct2d: BatchNorm whose forward also applies ``self.act``."""

    def __init__(self, num_features, act_layer=nn.ReLU, eps=1e-5):
        super().__init__(num_features, eps=eps)
        self.drop = nn.Identity()
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         self.training, self.momentum, self.eps)
        x = self.drop(x)
        return self.act(x)


def pad_same(x, k: List[int], s: List[int], d: List[int]):
    ih, iw = x.size()[-2:]
    pad_h = max((math.ceil(ih / s[0]) - 1) * s[0] + (k[0] - 1) * d[0] + 1 - ih, 0)
    pad_w = max((math.ceil(iw / s[1]) - 1) * s[1] + (k[1] - 1) * d[1] + 1 - iw, 0)
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
    return x


class Conv2dSame(nn.Conv2d):
    """timm's Conv2dSame: TensorFlow 'SAME' padding computed from the input size in forward."""

    def __init__(self, cin, cout, k, stride=1, dilation=1, groups=1, bias=False):
        super().__init__(cin, cout, k, stride, 0, dilation, groups, bias)

    def forward(self, x):
        x = pad_same(x, self.weight.shape[-2:], self.stride, self.dilation)
        return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)


class TimmSqueezeExcite(nn.Module):
    def __init__(self, c, rd, act_layer=nn.ReLU, gate_fn=hard_sigmoid):
        super().__init__()
        self.conv_reduce = nn.Conv2d(c, rd, 1, bias=True)
        self.act1 = act_layer(inplace=True)
        self.conv_expand = nn.Conv2d(rd, c, 1, bias=True)
        self.gate_fn = gate_fn

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_reduce(x_se)
        x_se = self.act1(x_se)
        x_se = self.conv_expand(x_se)
        return x * self.gate_fn(x_se)


def _conv(cin, cout, k, stride=1, groups=1, same=False):
    if same and stride > 1:
        return Conv2dSame(cin, cout, k, stride=stride, groups=groups)
    return nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)


class TimmInvertedResidual(nn.Module):
    def __init__(self, cin, mid, cout, k, stride, act_layer, se: bool, same: bool):
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = BatchNormAct2d(mid, act_layer=act_layer)
        self.conv_dw = _conv(mid, mid, k, stride, groups=mid, same=same)
        self.bn2 = BatchNormAct2d(mid, act_layer=act_layer)
        self.se = TimmSqueezeExcite(mid, max(8, mid // 4)) if se else nn.Identity()
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = BatchNormAct2d(cout, act_layer=None)
        self.drop_path = nn.Identity()

    def forward(self, x):
        shortcut = x
        x = self.conv_pw(x)
        x = self.bn1(x)
        x = self.conv_dw(x)
        x = self.bn2(x)
        x = self.se(x)
        x = self.conv_pwl(x)
        x = self.bn3(x)
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class TimmDepthwiseSeparable(nn.Module):
    def __init__(self, c, cout, k, stride, act_layer, same):
        super().__init__()
        self.conv_dw = _conv(c, c, k, stride, groups=c, same=same)
        self.bn1 = BatchNormAct2d(c, act_layer=act_layer)
        self.se = TimmSqueezeExcite(c, 8, gate_fn=hard_sigmoid)
        self.conv_pw = nn.Conv2d(c, cout, 1, bias=False)
        self.bn2 = BatchNormAct2d(cout, act_layer=None)

    def forward(self, x):
        return self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(x)))))


class TimmStyleMobileNetV3(nn.Module):
    """timm ``MobileNetV3`` structure (conv_stem/bn1/blocks/global_pool/conv_head/classifier);
    ``same=True`` is the ``tf_mobilenetv3_*`` variant with asymmetric TF 'SAME' padding."""

    def __init__(self, num_classes=10, same=False):
        super().__init__()
        hs = HardSwishMe
        self.conv_stem = Conv2dSame(3, 16, 3, stride=2) if same else nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(16, act_layer=hs)
        self.blocks = nn.Sequential(
            nn.Sequential(TimmDepthwiseSeparable(16, 16, 3, 1, nn.ReLU, same)),
            nn.Sequential(TimmInvertedResidual(16, 64, 24, 3, 2, nn.ReLU, False, same),
                          TimmInvertedResidual(24, 72, 24, 3, 1, nn.ReLU, False, same)),
            nn.Sequential(TimmInvertedResidual(24, 72, 40, 5, 2, nn.ReLU, True, same),
                          TimmInvertedResidual(40, 120, 40, 5, 1, nn.ReLU, True, same)),
            nn.Sequential(TimmInvertedResidual(40, 240, 80, 3, 2, hs, False, same),
                          TimmInvertedResidual(80, 200, 80, 3, 1, hs, True, same)),
        )
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(80, 256, 1, bias=True)
        self.act2 = hs()
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(256, num_classes)

    def forward(self, x):
        x = self.bn1(self.conv_stem(x))
        x = self.blocks(x)
        x = self.act2(self.conv_head(self.global_pool(x)))
        return self.classifier(self.flatten(x))


# ---------------------------------------------------------------------------------------------
# torchvision style (different classes from mnv3ext.models), SSDLite-like detector, LR-ASPP

class Conv2dNormActivation(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1, groups=1, norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU6):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), norm_layer(cout)]
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)


def _extra_block(cin, cout):
    mid = cout // 2
    return nn.Sequential(
        Conv2dNormActivation(cin, mid, 1),
        Conv2dNormActivation(mid, mid, 3, stride=2, groups=mid),
        Conv2dNormActivation(mid, cout, 1),
    )


def _prediction_block(cin, cout, k=3):
    return nn.Sequential(Conv2dNormActivation(cin, cin, k, groups=cin), nn.Conv2d(cin, cout, 1))


class SSDLiteLike(nn.Module):
    """torchvision SSDLite320-MobileNetV3 structure: the C4 inverted residual is split across two
    Sequentials (expansion in the first, depthwise + SE + projection in the second), ReLU6 extra
    blocks, and prediction heads with depthwise conv + BN + ReLU6 then a 1x1 conv."""

    def __init__(self, num_anchors=6, num_classes=5):
        super().__init__()
        backbone = mobilenet_v3_large(reduced_tail=True).features
        c4_pos = 13  # torchvision: the first stage block whose stride is 2 in the last stage
        self.features = nn.Sequential(
            nn.Sequential(*backbone[:c4_pos], backbone[c4_pos].block[0]),
            nn.Sequential(backbone[c4_pos].block[1:], *backbone[c4_pos + 1:]),
        )
        self.extra = nn.ModuleList([_extra_block(480, 512), _extra_block(512, 256)])
        in_channels = [672, 480, 512, 256]
        self.cls_heads = nn.ModuleList([_prediction_block(c, num_anchors * num_classes) for c in in_channels])
        self.reg_heads = nn.ModuleList([_prediction_block(c, num_anchors * 4) for c in in_channels])
        self.num_classes = num_classes

    def forward(self, x):
        feats = []
        for block in self.features:
            x = block(x)
            feats.append(x)
        for block in self.extra:
            x = block(x)
            feats.append(x)
        cls, reg = [], []
        for f, ch, rh in zip(feats, self.cls_heads, self.reg_heads):
            c = ch(f)
            n, _, h, w = c.shape
            cls.append(c.view(n, -1, self.num_classes, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, self.num_classes))
            r = rh(f)
            reg.append(r.view(n, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
        return {"cls_logits": torch.cat(cls, 1), "bbox_regression": torch.cat(reg, 1)}


# ---------------------------------------------------------------------------------------------
# a user's hand-written model: functional calls, Linear SE, explicit pads, functional conv

class LinearSE(nn.Module):
    """SE with nn.Linear, F.adaptive_avg_pool2d + flatten, sigmoid gate, view back to 4-D."""

    def __init__(self, c, s):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(c, s), nn.Hardswish(), nn.Linear(s, c))

    def forward(self, x):
        b, c, _, _ = x.size()
        y = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        y = torch.sigmoid(self.fc(y)).view(b, c, 1, 1)
        return x * y.expand_as(x)


class FunctionalSE(nn.Module):
    def __init__(self, c, s):
        super().__init__()
        self.reduce = nn.Conv2d(c, s, 1)
        self.expand = nn.Conv2d(s, c, 1)

    def forward(self, x):
        y = torch.mean(x, dim=[-2, -1], keepdim=True)
        y = F.hardsigmoid(self.expand(F.relu(self.reduce(y))))
        return y * x


class FunctionalDW(nn.Module):
    """Depthwise conv as F.conv2d on a parameter, BN module, functional activation."""

    def __init__(self, c, act):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c, 1, 3, 3) * 0.3)
        self.bn = nn.BatchNorm2d(c)
        self.act = act

    def forward(self, x):
        return self.act(self.bn(F.conv2d(x, self.weight, None, 1, 1, 1, x.shape[1])))


class Untraceable(nn.Module):
    """Data-dependent Python control flow: torch.fx cannot trace this forward."""

    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c),
                                  nn.Hardtanh(0.0, 6.0))

    def forward(self, x):
        if x.shape[-1] > 100000:  # never true; still a branch on a traced value
            return x
        return self.body(x)


class HandWritten(nn.Module):
    def __init__(self, num_classes=7):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(16)
        self.pad = nn.ZeroPad2d((1, 2, 1, 2))  # asymmetric pad before a padding=0 depthwise conv
        self.dw1 = nn.Conv2d(16, 16, 4, 1, 0, groups=16, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.se1 = LinearSE(16, 8)
        self.pw1 = nn.Conv2d(16, 32, 1, bias=False)
        self.bn_pw1 = nn.BatchNorm2d(32)
        self.dw2 = nn.Conv2d(32, 32, 5, 2, 0, groups=32, bias=True)  # with its own bias, F.pad before
        self.bn2 = nn.BatchNorm2d(32)
        self.se2 = FunctionalSE(32, 16)
        self.fdw = FunctionalDW(32, F.relu6)
        self.odd = Untraceable(32)
        self.dw3 = nn.Conv2d(32, 32, 3, 1, 2, dilation=2, groups=32, bias=False)
        self.bn3 = nn.BatchNorm2d(32)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = F.hardswish(self.stem_bn(self.stem(x)))
        x = F.relu(self.bn1(self.dw1(self.pad(x))))
        x = self.se1(x)
        x = torch.relu(self.bn_pw1(self.pw1(x)))
        x = F.pad(x, (1, 2, 2, 1))
        x = F.hardswish(self.bn2(self.dw2(x)))
        x = self.se2(x)
        x = self.fdw(x)
        x = self.odd(x)
        x = self.bn3(self.dw3(x))  # depthwise + BN, no activation
        return self.head(x.mean((2, 3)))


class UntraceableRoot(nn.Module):
    """The root's own forward cannot be traced: only its children are optimized."""

    def __init__(self):
        super().__init__()
        self.a = Conv2dNormActivation(3, 16, 3, stride=2, activation_layer=nn.Hardswish)
        self.b = Conv2dNormActivation(16, 16, 3, groups=16, activation_layer=nn.ReLU)
        self.c = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 4))

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError("expected NCHW")
        return self.c(self.b(self.a(x)))


@torch.no_grad()
def sensitive_classifier_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every Linear as N(0, 1/fan_in) with zero bias, in place.

    The models' own init (N(0, 0.01) weights) plus random biases gives logits dominated by the
    bias, so an error anywhere in the network would barely show in the output; with this the
    logits depend on the features at full strength."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.in_features))
            if m.bias is not None:
                m.bias.zero_()
    return model


@torch.no_grad()
def calibrate_batchnorm_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Set every BatchNorm's running statistics to those of one random batch, in place.

    With purely random statistics the activations of a deep random network collapse within a
    few blocks, and the output stops depending on the input (or on any early layer) -- which
    would make "optimized output == original output" a vacuous test. Statistics measured on
    data keep every layer's signal alive; BN weight/bias stay random (randomize_batchnorm_)
    and the folded scales and shifts are far from identity."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0  # running stats := this batch's stats
    model.train()
    g = torch.Generator().manual_seed(seed)
    model(torch.randn(4, 3, 96, 112, generator=g))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    return model.eval()


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights, random BN affine parameters, data-calibrated BN statistics, and a
    classifier whose logits depend on the features (see the two helpers above)."""
    model = randomize_batchnorm_(model, seed=seed, conv_bias=True)
    sensitive_classifier_(model, seed)
    return calibrate_batchnorm_(model, seed)


ALL_MIMICS = OrderedDict(
    timm_style=lambda: TimmStyleMobileNetV3(),
    timm_tf_same=lambda: TimmStyleMobileNetV3(same=True),
    ssdlite_like=lambda: SSDLiteLike(),
    hand_written=lambda: HandWritten(),
    untraceable_root=lambda: UntraceableRoot(),
)
