"""A one-line progress display on stderr, shown only on a terminal (and never with ``--quiet``)."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, enabled: Optional[bool] = None, stream: Optional[TextIO] = None, width: int = 24):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.width = width
        self.stage = ""
        self._last = 0.0
        self._shown = False

    def set_stage(self, stage: str) -> None:
        self.stage = stage
        self.update(0.0, "", force=True)

    def update(self, fraction: float, message: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1 and fraction < 1.0:
            return
        self._last = now
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        text = f"\r[{bar}] {fraction * 100:3.0f}% {self.stage}{': ' if self.stage and message else ''}{message}"
        self.stream.write(text[:120].ljust(100))
        self.stream.flush()
        self._shown = True

    def __call__(self, fraction: float, message: str = "") -> None:
        self.update(fraction, message)

    def clear(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r" + " " * 120 + "\r")
            self.stream.flush()
            self._shown = False

    def log(self, message: str) -> None:
        """A status line (works on non-terminals too); clears the bar first."""
        self.clear()
        self.stream.write(message + "\n")
        self.stream.flush()
