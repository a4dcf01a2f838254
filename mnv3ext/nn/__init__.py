"""Inference modules over the fused ops, and BatchNorm folding."""
from .block import FusedInvertedResidual
from .fold import fold_batchnorm
from .fused import FusedDepthwiseConv2d, FusedSqueezeExcite
from .gemm import FusedConv2d, FusedLinear, FusedPointwiseConv2d, GlobalAvgPool, SqueezeExciteGate
from .sequence import FusedSequence

__all__ = ["FusedDepthwiseConv2d", "FusedSqueezeExcite", "FusedPointwiseConv2d", "FusedConv2d", "FusedLinear",
           "GlobalAvgPool", "SqueezeExciteGate", "FusedInvertedResidual", "FusedSequence",
           "fold_batchnorm"]
