"""Refusals: what ``optimize`` will not touch, with a clear message."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["check_optimizable"]

_QUANT_PREFIXES = (
    "torch.ao.nn.quantized", "torch.ao.nn.qat", "torch.ao.nn.intrinsic", "torch.ao.nn.sparse",
    "torch.ao.quantization", "torch.nn.quantized", "torch.nn.qat", "torch.nn.intrinsic",
    "torch.quantization",
)
_QUANT_ATTRS = ("weight_fake_quant", "activation_post_process")


def check_optimizable(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize: expected an nn.Module, got {type(model).__name__}")
    for name, m in model.named_modules():
        where = name or "the model"
        cls = type(m)
        if cls.__module__.startswith(_QUANT_PREFIXES) or any(hasattr(m, a) for a in _QUANT_ATTRS):
            raise TypeError(
                f"optimize: {where} ({cls.__module__}.{cls.__name__}) is a quantized or "
                "quantization-aware module; mnv3ext optimizes float32 inference models only "
                "(convert back to a float model first)"
            )
        if m.training:
            raise RuntimeError(
                f"optimize: {where} is in training mode; mnv3ext produces inference-only models "
                "(BatchNorm is folded with its running statistics): call model.eval() first"
            )
    for kind, tensors in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in tensors:
            if t.is_quantized:
                raise TypeError(f"optimize: {kind} {name} is a quantized tensor; float32 models only")
            if (t.is_floating_point() or t.is_complex()) and t.dtype != torch.float32:
                raise TypeError(
                    f"optimize: {kind} {name} has dtype {t.dtype}; mnv3ext kernels are float32 "
                    "only (call model.float() first if that is what you want)"
                )
            if t.device.type not in ("cpu", "meta"):
                raise ValueError(f"optimize: {kind} {name} is on {t.device}; mnv3ext runs on CPU")
