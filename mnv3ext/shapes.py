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


# (kernel, expanded channels, SE, activation, stride) per block: the paper's tables.
LARGE_BLOCKS = [
    (3, 16, False, "relu", 1), (3, 64, False, "relu", 2), (3, 72, False, "relu", 1),
    (5, 72, True, "relu", 2), (5, 120, True, "relu", 1), (5, 120, True, "relu", 1),
    (3, 240, False, "hardswish", 2), (3, 200, False, "hardswish", 1),
    (3, 184, False, "hardswish", 1), (3, 184, False, "hardswish", 1),
    (3, 480, True, "hardswish", 1), (3, 672, True, "hardswish", 1),
    (5, 672, True, "hardswish", 2), (5, 960, True, "hardswish", 1),
    (5, 960, True, "hardswish", 1),
]
SMALL_BLOCKS = [
    (3, 16, True, "relu", 2), (3, 72, False, "relu", 2), (3, 88, False, "relu", 1),
    (5, 96, True, "hardswish", 2), (5, 240, True, "hardswish", 1), (5, 240, True, "hardswish", 1),
    (5, 120, True, "hardswish", 1), (5, 144, True, "hardswish", 1), (5, 288, True, "hardswish", 2),
    (5, 576, True, "hardswish", 1), (5, 576, True, "hardswish", 1),
]


def _layers(model: str, blocks, image_size: int = 224):
    dw, se = [], []
    size = image_size // 2  # after the stride-2 stem
    for index, (kernel, channels, has_se, activation, stride) in enumerate(blocks, start=1):
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
