"""Which SIMD path the kernels use. Chosen once at import from CPU features, or forced with the
environment variable ``MNV3EXT_ISA=scalar|avx2|avx512|neon``; tests and benchmarks switch it here."""
from __future__ import annotations

import contextlib
from typing import Iterator, List

from . import _C


def available_isas() -> List[str]:
    """ISAs compiled into this build that this CPU supports, slowest first."""
    return list(_C.available_isas())


def best_isa() -> str:
    return _C.best_isa()


def current_isa() -> str:
    return _C.isa()


def set_isa(name: str) -> None:
    """Switch every kernel to ``name``; ValueError if unknown or unsupported here."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a string, got {type(name).__name__}")
    _C.set_isa(name)


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[None]:
    previous = current_isa()
    set_isa(name)
    try:
        yield
    finally:
        set_isa(previous)


# Resolve MNV3EXT_ISA now so a bad value fails at import with its message, not mid-model.
current_isa()
