"""mnv3ext: fast CPU inference of MobileNetV3-class models inside PyTorch."""
from __future__ import annotations

__version__ = "0.1.0"

from . import _C, ops, reference  # noqa: E402  (ops registers torch.ops.mnv3ext.*)
from ._isa import available_isas, best_isa, current_isa, set_isa, use_isa  # noqa: E402
from .optimize import optimize  # noqa: E402
from .check import check  # noqa: E402

__all__ = [
    "__version__",
    "available_isas",
    "best_isa",
    "check",
    "current_isa",
    "ops",
    "optimize",
    "reference",
    "set_isa",
    "use_isa",
]
