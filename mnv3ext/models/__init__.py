"""MobileNetV3 and LR-ASPP models in pure PyTorch, state_dict-compatible with torchvision.

The module trees and parameter names are those of ``torchvision.models.mobilenet_v3_large``,
``torchvision.models.mobilenet_v3_small`` and
``torchvision.models.segmentation.lraspp_mobilenet_v3_large``, so torchvision's published
weights load directly (torchvision itself is not needed). Download the ``.pth`` file
yourself, then::

    import torch
    from mnv3ext.models import mobilenet_v3_large

    model = mobilenet_v3_large()
    model.load_state_dict(torch.load(path))  # strict=True by default
    model.eval()

``path`` is torchvision's weights file for the same architecture (ImageNet weights for
``mobilenet_v3_large`` / ``mobilenet_v3_small`` with the default arguments, the 21-class
weights for ``lraspp_mobilenet_v3_large``). Parameter counts at width 1.0: Large 5,483,032,
Small 2,542,856, LR-ASPP (21 classes) 3,221,538.

``randomize_batchnorm_`` gives a freshly built model non-trivial BatchNorm statistics for
tests when pretrained weights are unavailable.
"""
from .lraspp import LRASPP, IntermediateLayerGetter, LRASPPHead, lraspp_mobilenet_v3_large
from .mobilenetv3 import (
    BlockConfig,
    ConvBNActivation,
    InvertedResidual,
    MobileNetV3,
    SqueezeExcitation,
    mobilenet_v3_config,
    mobilenet_v3_large,
    mobilenet_v3_small,
)
from .utils import randomize_batchnorm_

__all__ = [
    "BlockConfig",
    "ConvBNActivation",
    "InvertedResidual",
    "IntermediateLayerGetter",
    "LRASPP",
    "LRASPPHead",
    "MobileNetV3",
    "SqueezeExcitation",
    "lraspp_mobilenet_v3_large",
    "mobilenet_v3_config",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "randomize_batchnorm_",
]
