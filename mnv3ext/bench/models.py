"""Models for the whole-model benchmark: construction with fixed random weights, BatchNorm folding
for the ``eager-cl`` baseline, output comparison, and the block segmentation used by ``--per-layer``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MODELS", "build_model", "example_input", "fold_batchnorms", "as_tensor", "compare",
           "Segment", "segments"]

MODELS = ("large", "small", "lraspp")


def build_model(name: str, width: float = 1.0, seed: int = 0) -> nn.Module:
    """Eval-mode float32 model with fixed random weights (``seed``) and non-trivial BN statistics."""
    from ..models import lraspp_mobilenet_v3_large, mobilenet_v3_large, mobilenet_v3_small, randomize_batchnorm_

    torch.manual_seed(seed)
    if name == "large":
        model = mobilenet_v3_large(width_mult=width)
    elif name == "small":
        model = mobilenet_v3_small(width_mult=width)
    elif name == "lraspp":
        if width != 1.0:
            raise ValueError("width: the lraspp model exists at width 1.0 only")
        model = lraspp_mobilenet_v3_large()
    else:
        raise ValueError(f"model: expected one of {', '.join(MODELS)}, got {name!r}")
    randomize_batchnorm_(model, seed=seed, conv_bias=True)
    return model.eval()


def example_input(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(batch, 3, size, size, generator=g)


@torch.no_grad()
def fold_batchnorms(model: nn.Module) -> nn.Module:
    """Copy of ``model`` with every BatchNorm2d that directly follows a Conv2d inside an
    ``nn.Sequential`` folded into that conv (the BN becomes ``nn.Identity``)."""
    from ..nn.fold import fold_batchnorm

    model = copy.deepcopy(model)
    for parent in model.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                w, bias = fold_batchnorm(conv.weight, conv.bias, bn)
                new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                conv.padding, conv.dilation, conv.groups, True, conv.padding_mode)
                new.weight.copy_(w)
                new.bias.copy_(bias)
                parent._modules[a] = new.eval()
                parent._modules[b] = nn.Identity()
    return model


def as_tensor(out: Any) -> torch.Tensor:
    """The main output of a model call: a tensor, ``out["out"]`` for segmentation, first of a list;
    numpy arrays (ONNX Runtime, OpenVINO) are wrapped."""
    if isinstance(out, dict):
        out = out["out"] if "out" in out else next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        import numpy as np

        out = torch.from_numpy(np.asarray(out))
    return out


def compare(out: torch.Tensor, ref: torch.Tensor) -> Dict[str, float]:
    """Max abs error, that error over max |ref| (``max_rel_err``), and top-1 agreement (argmax over
    classes: per image, or per pixel for segmentation)."""
    out, ref = out.detach().float(), ref.detach().float()
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from the eager reference {tuple(ref.shape)}")
    err = float((out - ref).abs().max()) if out.numel() else 0.0
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    if out.dim() >= 2 and out.shape[1] > 1:
        agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
    else:
        agree = float("nan")
    return {"max_abs_err": err, "max_rel_err": err / scale if scale > 0 else err, "top1_agreement": agree}


# ---------------------------------------------------------------------------------------------
# Per-layer segmentation

@dataclass
class Segment:
    """One row of the per-layer table: ``module(*inputs(outs))`` where ``outs[0]`` is the image and
    ``outs[i]`` the output of segment ``i - 1``."""

    name: str
    module: nn.Module
    inputs: Callable[[List[Any]], Tuple[Any, ...]]


class ClassifierHead(nn.Module):
    def __init__(self, avgpool: nn.Module, classifier: nn.Module):
        super().__init__()
        self.avgpool = avgpool
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))


class SegmentationHead(nn.Module):
    def __init__(self, classifier: nn.Module, size: Sequence[int]):
        super().__init__()
        self.classifier = classifier
        self.size = [int(s) for s in size]

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        out = self.classifier({"low": low, "high": high})
        return F.interpolate(out, size=self.size, mode="bilinear", align_corners=False)


def _describe(block: nn.Module, index: int) -> str:
    dw = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]
    if not dw:
        return f"block{index}"
    conv = dw[0]
    se = any(type(m).__name__ == "SqueezeExcitation" for m in block.modules())
    d = f" d{conv.dilation[0]}" if conv.dilation[0] > 1 else ""
    return f"ir{index} k{conv.kernel_size[0]} e{conv.in_channels} s{conv.stride[0]}{d}{' se' if se else ''}"


def _prev(outs):
    return (outs[-1],)


def segments(model: nn.Module, image_size: Sequence[int]) -> List[Segment]:
    """Stem, each inverted residual, the last 1x1 conv, and the head of an *eager* model
    (``mnv3ext.models`` MobileNetV3 or LR-ASPP); the modules are the model's own (shared)."""
    if hasattr(model, "features") and hasattr(model, "classifier"):
        blocks = list(model.features)
        head = ClassifierHead(model.avgpool, model.classifier).eval()
        head_inputs: Callable = _prev
    elif hasattr(model, "backbone") and hasattr(model, "classifier"):
        blocks = list(model.backbone.values())
        taps = {v: i for i, k in enumerate(model.backbone.keys()) for v in [model.backbone.return_layers.get(k)] if v}
        low, high = taps["low"] + 1, taps["high"] + 1
        head = SegmentationHead(model.classifier, image_size).eval()

        def head_inputs(outs, low=low, high=high):
            return (outs[low], outs[high])
    else:
        raise TypeError(f"model: no per-layer segmentation for {type(model).__name__}")
    segs = [Segment("stem", blocks[0], _prev)]
    for i, block in enumerate(blocks[1:-1], start=1):
        segs.append(Segment(_describe(block, i), block, _prev))
    segs.append(Segment("last 1x1 conv", blocks[-1], _prev))
    segs.append(Segment("head", head, head_inputs))
    return segs
