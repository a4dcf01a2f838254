"""mnv3ext: fast CPU inference of MobileNetV3-class models inside PyTorch."""
from __future__ import annotations

__version__ = "0.1.0"

try:
    from . import _C  # noqa: E402
except ImportError as error:  # a source checkout on sys.path shadows the installed package
    raise ImportError(
        "mnv3ext._C (the compiled kernels) was not found next to " + __file__ + ": this looks "
        "like an unbuilt source folder shadowing the installed package (python -m puts the "
        "current directory first). Run from another directory or use the `mnv3ext` command, "
        "or build in place with tools/dev_build.sh."
    ) from error
from . import ops, reference  # noqa: E402  (ops registers torch.ops.mnv3ext.*)
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
