"""Every depthwise and squeeze-excite layer of MobileNetV3-Large and -Small at 224x224.

One list that the tests, the bench/ suites and the CLI all read. Derived from the paper's
Tables 1 and 2 (kernel, expansion size, SE, activation, stride); squeeze channels are
make_divisible(expanded // 4, 8) as in the reference implementations.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DwLayer:
    model: str
    index: int
    channels: int
    size: int  # input height == width
    kernel: int
    stride: int
    activation: str  # activation after the folded BatchNorm

    @property
    def name(self) -> str:
        return f"{self.model}.dw{self.index}_c{self.channels}_s{self.size}_k{self.kernel}_st{self.stride}"

    @property
    def padding(self) -> int:
        return (self.kernel - 1) // 2

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1


@dataclass(frozen=True)
class SeLayer:
    model: str
    index: int
    channels: int
    size: int  # spatial size of the depthwise output the SE block sees
    squeeze: int
    activation: str = "relu"
    gate: str = "hardsigmoid"

    @property
    def name(self) -> str:
        return f"{self.model}.se{self.index}_c{self.channels}_s{self.size}_sq{self.squeeze}"


def make_divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# The paper's Tables 1 (Large) and 2 (Small), one row per bneck, channels at width 1.0:
# (input, kernel, expanded, output, SE, activation, stride). mnv3ext.models builds from these too.
LARGE_BLOCKS = [
    (16, 3, 16, 16, False, "relu", 1),
    (16, 3, 64, 24, False, "relu", 2),
    (24, 3, 72, 24, False, "relu", 1),
    (24, 5, 72, 40, True, "relu", 2),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 3, 240, 80, False, "hardswish", 2),
    (80, 3, 200, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 480, 112, True, "hardswish", 1),
    (112, 3, 672, 112, True, "hardswish", 1),
    (112, 5, 672, 160, True, "hardswish", 2),
    (160, 5, 960, 160, True, "hardswish", 1),
    (160, 5, 960, 160, True, "hardswish", 1),
]
SMALL_BLOCKS = [
    (16, 3, 16, 16, True, "relu", 2),
    (16, 3, 72, 24, False, "relu", 2),
    (24, 3, 88, 24, False, "relu", 1),
    (24, 5, 96, 40, True, "hardswish", 2),
    (40, 5, 240, 40, True, "hardswish", 1),
    (40, 5, 240, 40, True, "hardswish", 1),
    (40, 5, 120, 48, True, "hardswish", 1),
    (48, 5, 144, 48, True, "hardswish", 1),
    (48, 5, 288, 96, True, "hardswish", 2),
    (96, 5, 576, 96, True, "hardswish", 1),
    (96, 5, 576, 96, True, "hardswish", 1),
]


def _layers(model: str, blocks, image_size: int = 224):
    dw, se = [], []
    size = image_size // 2  # after the stride-2 stem
    for index, (_, kernel, channels, _, has_se, activation, stride) in enumerate(blocks, start=1):
        layer = DwLayer(model, index, channels, size, kernel, stride, activation)
        dw.append(layer)
        size = layer.out_size
        if has_se:
            se.append(SeLayer(model, index, channels, size, make_divisible(channels // 4)))
    return dw, se


LARGE_DW, LARGE_SE = _layers("large", LARGE_BLOCKS)
SMALL_DW, SMALL_SE = _layers("small", SMALL_BLOCKS)
ALL_DW = LARGE_DW + SMALL_DW
ALL_SE = LARGE_SE + SMALL_SE
