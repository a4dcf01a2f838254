"""MobileNetV3-Large and -Small (Howard et al. 2019, "Searching for MobileNetV3").

Pure PyTorch: imports only torch and ``mnv3ext.shapes`` (block tables, make_divisible). The
module tree mirrors torchvision's ``torchvision.models.mobilenetv3`` so that ``state_dict`` keys and
shapes are identical and torchvision's published weights load with ``strict=True``:

* ``features`` is an ``nn.Sequential``: ``features[0]`` the stem ConvBNActivation
  (3x3 stride 2, hardswish), ``features[1..n]`` the InvertedResidual blocks of the paper's
  Table 1 (Large) / Table 2 (Small), ``features[-1]`` the 1x1 conv to 6x the last block's
  channels (960 / 576) + hardswish.
* ``avgpool`` then ``classifier`` = Sequential(Linear, Hardswish, Dropout, Linear).

Every building block is made of standard modules only (nn.Conv2d, nn.BatchNorm2d, nn.ReLU,
nn.Hardswish, nn.Hardsigmoid, nn.AdaptiveAvgPool2d) so that graph rewriting can
pattern-match on structure.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional

import torch
from torch import Tensor, nn

from mnv3ext.shapes import LARGE_BLOCKS, SMALL_BLOCKS, make_divisible

__all__ = [
    "BlockConfig",
    "ConvBNActivation",
    "SqueezeExcitation",
    "InvertedResidual",
    "MobileNetV3",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "mobilenet_v3_config",
    "BN_EPS",
    "BN_MOMENTUM",
]

BN_EPS = 0.001
BN_MOMENTUM = 0.01


def _norm_layer(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvBNActivation(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> optional activation; torchvision's Conv2dNormActivation.

    Children are named ``0`` (conv), ``1`` (bn), ``2`` (activation, absent when
    ``activation_layer`` is None).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        norm_layer: Callable[[int], nn.Module] = _norm_layer,
        activation_layer: Optional[Callable[..., nn.Module]] = nn.ReLU,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        layers: List[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            norm_layer(out_channels),
        ]
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation: x * hardsigmoid(fc2(relu(fc1(avgpool(x)))))."""

    def __init__(
        self,
        input_channels: int,
        squeeze_channels: int,
        activation: Callable[..., nn.Module] = nn.ReLU,
        scale_activation: Callable[..., nn.Module] = nn.Hardsigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, x: Tensor) -> Tensor:
        scale = self.avgpool(x)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self._scale(x) * x


class BlockConfig(NamedTuple):
    """One bneck row (channels already scaled by width_mult)."""

    input_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    use_hs: bool  # hardswish if True, else ReLU
    stride: int
    dilation: int


class InvertedResidual(nn.Module):
    """MobileNetV3 bneck: [1x1 expand] -> depthwise kxk -> [SE] -> 1x1 project (+ residual)."""

    def __init__(self, cnf: BlockConfig, norm_layer: Callable[[int], nn.Module] = _norm_layer) -> None:
        super().__init__()
        if not (1 <= cnf.stride <= 2):
            raise ValueError("illegal stride value")
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        activation_layer = nn.Hardswish if cnf.use_hs else nn.ReLU

        layers: List[nn.Module] = []
        if cnf.expanded_channels != cnf.input_channels:
            layers.append(
                ConvBNActivation(
                    cnf.input_channels,
                    cnf.expanded_channels,
                    kernel_size=1,
                    norm_layer=norm_layer,
                    activation_layer=activation_layer,
                )
            )
        stride = 1 if cnf.dilation > 1 else cnf.stride
        layers.append(
            ConvBNActivation(
                cnf.expanded_channels,
                cnf.expanded_channels,
                kernel_size=cnf.kernel,
                stride=stride,
                dilation=cnf.dilation,
                groups=cnf.expanded_channels,
                norm_layer=norm_layer,
                activation_layer=activation_layer,
            )
        )
        if cnf.use_se:
            squeeze_channels = make_divisible(cnf.expanded_channels // 4, 8)
            layers.append(SqueezeExcitation(cnf.expanded_channels, squeeze_channels))
        layers.append(
            ConvBNActivation(
                cnf.expanded_channels,
                cnf.out_channels,
                kernel_size=1,
                norm_layer=norm_layer,
                activation_layer=None,
            )
        )
        self.block = nn.Sequential(*layers)
        self.out_channels = cnf.out_channels
        # A stage boundary (torchvision's ``_is_cn``): the paper's stride is 2, even if dilated.
        self._is_cn = cnf.stride > 1

    def forward(self, x: Tensor) -> Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = result + x
        return result


class MobileNetV3(nn.Module):
    def __init__(
        self,
        inverted_residual_setting: List[BlockConfig],
        last_channel: int,
        num_classes: int = 1000,
        dropout: float = 0.2,
        norm_layer: Callable[[int], nn.Module] = _norm_layer,
    ) -> None:
        super().__init__()
        if not inverted_residual_setting:
            raise ValueError("The inverted_residual_setting should not be empty")

        layers: List[nn.Module] = []
        first_channels = inverted_residual_setting[0].input_channels
        layers.append(
            ConvBNActivation(
                3, first_channels, kernel_size=3, stride=2, norm_layer=norm_layer, activation_layer=nn.Hardswish
            )
        )
        for cnf in inverted_residual_setting:
            layers.append(InvertedResidual(cnf, norm_layer))
        lastconv_input_channels = inverted_residual_setting[-1].out_channels
        lastconv_output_channels = 6 * lastconv_input_channels
        layers.append(
            ConvBNActivation(
                lastconv_input_channels,
                lastconv_output_channels,
                kernel_size=1,
                norm_layer=norm_layer,
                activation_layer=nn.Hardswish,
            )
        )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(lastconv_output_channels, last_channel),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(last_channel, num_classes),
        )

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


# Blocks from the paper's tables (mnv3ext.shapes.LARGE_BLOCKS / SMALL_BLOCKS); the last _TAIL
# rows form the last stage, affected by reduced_tail / dilated.
_LARGE_LAST_CHANNEL = 1280
_SMALL_LAST_CHANNEL = 1024
_TAIL = 3


def _adjust(channels: float, width_mult: float) -> int:
    return make_divisible(channels * width_mult, 8)


def mobilenet_v3_config(
    arch: str, width_mult: float = 1.0, reduced_tail: bool = False, dilated: bool = False
):
    """Block configs and last (classifier hidden) channel, as torchvision's ``_mobilenet_v3_conf``.

    ``reduced_tail`` halves the channels of the last stage: every tail block's output, the
    expansion of the tail blocks after the first (the first keeps 672 / 288, as torchvision
    does), hence the final 1x1 conv, and the classifier hidden width;
    ``dilated`` gives the last stage dilation 2 (its stride-2 depthwise conv becomes stride 1).
    """
    if arch in ("large", "mobilenet_v3_large"):
        rows, last = LARGE_BLOCKS, _LARGE_LAST_CHANNEL
    elif arch in ("small", "mobilenet_v3_small"):
        rows, last = SMALL_BLOCKS, _SMALL_LAST_CHANNEL
    else:
        raise ValueError(f"Unsupported model type {arch}")
    div = 2 if reduced_tail else 1
    dilation = 2 if dilated else 1
    tail_start = len(rows) - _TAIL
    configs = []
    for i, (inp, k, exp, out, se, act, stride) in enumerate(rows):
        dil = 1
        if i >= tail_start:
            out, dil = out // div, dilation
            if i > tail_start:
                inp, exp = inp // div, exp // div
        configs.append(
            BlockConfig(
                _adjust(inp, width_mult),
                k,
                _adjust(exp, width_mult),
                _adjust(out, width_mult),
                se,
                act == "hardswish",
                stride,
                dil,
            )
        )
    return configs, _adjust(last // div, width_mult)


def _build(arch, num_classes, width_mult, reduced_tail, dilated, dropout) -> MobileNetV3:
    configs, last_channel = mobilenet_v3_config(arch, width_mult, reduced_tail, dilated)
    return MobileNetV3(configs, last_channel, num_classes=num_classes, dropout=dropout)


def mobilenet_v3_large(
    num_classes: int = 1000,
    width_mult: float = 1.0,
    reduced_tail: bool = False,
    dilated: bool = False,
    dropout: float = 0.2,
) -> MobileNetV3:
    """MobileNetV3-Large; state_dict-compatible with ``torchvision.models.mobilenet_v3_large``."""
    return _build("large", num_classes, width_mult, reduced_tail, dilated, dropout)


def mobilenet_v3_small(
    num_classes: int = 1000,
    width_mult: float = 1.0,
    reduced_tail: bool = False,
    dilated: bool = False,
    dropout: float = 0.2,
) -> MobileNetV3:
    """MobileNetV3-Small; state_dict-compatible with ``torchvision.models.mobilenet_v3_small``."""
    return _build("small", num_classes, width_mult, reduced_tail, dilated, dropout)
