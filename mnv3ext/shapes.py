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


# ---------------------------------------------------------------------------------------------
# The GEMM-family layers: the stem, every 1x1 convolution, the classifier's Linear layers.

@dataclass(frozen=True)
class StemLayer:
    """The dense 3x3 stride-2 conv 3 -> 16 + (folded BN) + hardswish on the image."""

    model: str
    in_channels: int
    out_channels: int
    size: int  # input height == width
    kernel: int = 3
    stride: int = 2
    activation: str = "hardswish"
    op: str = "conv"

    @property
    def name(self) -> str:
        return f"{self.model}.stem_c{self.in_channels}-{self.out_channels}_s{self.size}_k{self.kernel}_st{self.stride}"

    @property
    def padding(self) -> int:
        return (self.kernel - 1) // 2

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def macs(self) -> int:
        return self.out_size ** 2 * self.out_channels * self.in_channels * self.kernel ** 2


@dataclass(frozen=True)
class PwLayer:
    """A 1x1 conv + (folded BN) + activation: a block's expansion, its projection (with the
    block's residual added when it has one, and the squeeze-excite gate as ``input_scale`` when an
    SE precedes it), or the last 160 -> 960 / 96 -> 576 conv (role ``last``, index 0)."""

    model: str
    index: int  # the block's (1-based, as DwLayer.index); 0 for the last conv
    role: str  # "expand", "project" or "last"
    in_channels: int
    out_channels: int
    size: int  # height == width of input and output
    activation: str  # after the folded BN: relu, hardswish or none (projections)
    residual: bool = False
    input_scale: bool = False
    op: str = "pointwise"

    @property
    def name(self) -> str:
        role = "last" if self.role == "last" else f"{self.role}{self.index}"
        return (f"{self.model}.{role}_c{self.in_channels}-{self.out_channels}_s{self.size}"
                + ("_se" if self.input_scale else "") + ("_res" if self.residual else ""))

    @property
    def macs(self) -> int:
        return self.size ** 2 * self.in_channels * self.out_channels


@dataclass(frozen=True)
class FcLayer:
    """A Linear layer of the classifier (fc1: + hardswish; fc2: the logits)."""

    model: str
    index: int  # 1 or 2
    in_features: int
    out_features: int
    activation: str
    op: str = "linear"

    @property
    def name(self) -> str:
        return f"{self.model}.fc{self.index}_{self.in_features}-{self.out_features}"

    @property
    def macs(self) -> int:
        return self.in_features * self.out_features


LAST_CHANNEL = {"large": 1280, "small": 1024}  # the classifier's hidden width
NUM_CLASSES = 1000


def _gemm_layers(model: str, blocks, image_size: int = 224):
    stem = StemLayer(model, 3, blocks[0][0], image_size)
    pw = []
    size = stem.out_size
    for index, (cin, kernel, expanded, cout, has_se, activation, stride) in enumerate(blocks, start=1):
        if expanded != cin:
            pw.append(PwLayer(model, index, "expand", cin, expanded, size, activation))
        size = DwLayer(model, index, expanded, size, kernel, stride, activation).out_size
        pw.append(PwLayer(model, index, "project", expanded, cout, size, "none",
                          residual=stride == 1 and cin == cout, input_scale=has_se))
    last_in = blocks[-1][3]
    pw.append(PwLayer(model, 0, "last", last_in, 6 * last_in, size, "hardswish"))
    fc = [FcLayer(model, 1, 6 * last_in, LAST_CHANNEL[model], "hardswish"),
          FcLayer(model, 2, LAST_CHANNEL[model], NUM_CLASSES, "none")]
    return stem, pw, fc


LARGE_STEM, LARGE_PW, LARGE_FC = _gemm_layers("large", LARGE_BLOCKS)
SMALL_STEM, SMALL_PW, SMALL_FC = _gemm_layers("small", SMALL_BLOCKS)
ALL_PW = LARGE_PW + SMALL_PW
# In model order per model: stem, the 1x1 convs, the classifier.
LARGE_GEMM = [LARGE_STEM] + LARGE_PW + LARGE_FC
SMALL_GEMM = [SMALL_STEM] + SMALL_PW + SMALL_FC
ALL_GEMM = LARGE_GEMM + SMALL_GEMM
