"""Inference modules over the fused ops, and BatchNorm folding."""
from .fold import fold_batchnorm
from .fused import FusedDepthwiseConv2d, FusedSqueezeExcite

__all__ = ["FusedDepthwiseConv2d", "FusedSqueezeExcite", "fold_batchnorm"]
