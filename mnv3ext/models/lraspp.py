"""LR-ASPP on a dilated MobileNetV3-Large backbone (Howard et al. 2019, Section 6.3).

state_dict-compatible with ``torchvision.models.segmentation.lraspp_mobilenet_v3_large``:
``backbone.<i>...`` are the backbone's ``features[i]`` (layers after the high tap dropped, as
torchvision's feature extractor does -- for Large the high tap is the last layer, so all 17
are kept), and the head is ``classifier.{cbr,scale,low_classifier,high_classifier}``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict

from torch import Tensor, nn
from torch.nn import functional as F

from .mobilenetv3 import mobilenet_v3_large

__all__ = ["IntermediateLayerGetter", "LRASPPHead", "LRASPP", "lraspp_mobilenet_v3_large"]


class IntermediateLayerGetter(nn.ModuleDict):
    """Runs the children of a Sequential in order and returns the outputs of selected ones.

    Children keep their names (``"0"``, ``"1"``, ...); children after the last returned one
    are dropped, as in torchvision's ``IntermediateLayerGetter``.
    """

    def __init__(self, model: nn.Module, return_layers: Dict[str, str]) -> None:
        names = [name for name, _ in model.named_children()]
        if not set(return_layers).issubset(names):
            raise ValueError("return_layers are not present in model")
        wanted = dict(return_layers)
        layers = OrderedDict()
        for name, module in model.named_children():
            layers[name] = module
            wanted.pop(name, None)
            if not wanted:
                break
        super().__init__(layers)
        self.return_layers = dict(return_layers)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        out = OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


class LRASPPHead(nn.Module):
    def __init__(self, low_channels: int, high_channels: int, num_classes: int, inter_channels: int) -> None:
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(inplace=True),
        )
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.Sigmoid(),
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        low = features["low"]
        high = features["high"]
        x = self.cbr(high)
        s = self.scale(high)
        x = x * s
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)


class LRASPP(nn.Module):
    def __init__(
        self, backbone: nn.Module, low_channels: int, high_channels: int, num_classes: int, inter_channels: int = 128
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = LRASPPHead(low_channels, high_channels, num_classes, inter_channels)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        features = self.backbone(x)
        out = self.classifier(features)
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        result = OrderedDict()
        result["out"] = out
        return result


def lraspp_mobilenet_v3_large(num_classes: int = 21) -> LRASPP:
    """LR-ASPP with a dilated MobileNetV3-Large backbone; returns ``{"out": logits}`` at input size."""
    features = mobilenet_v3_large(dilated=True).features
    # Stage boundaries as torchvision computes them: the stem, every block whose paper stride
    # is 2, and the last layer. Low tap = C2 (output stride 8, 40 channels),
    # high tap = C5 (output stride 16 because the last stage is dilated, 960 channels).
    stage_indices = (
        [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]
    )
    low_pos = stage_indices[-4]
    high_pos = stage_indices[-1]
    low_channels = features[low_pos].out_channels
    high_channels = features[high_pos].out_channels
    backbone = IntermediateLayerGetter(features, {str(low_pos): "low", str(high_pos): "high"})
    return LRASPP(backbone, low_channels, high_channels, num_classes)
