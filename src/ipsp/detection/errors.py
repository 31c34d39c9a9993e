"""Errors of the detection stage, each naming the frame or the model file at fault."""

from __future__ import annotations

from ipsp.errors import UserError


class ModelError(UserError):
    """A model file cannot be used: missing, unreadable, wrong sha256, unknown outputs."""


class ModelNotFound(ModelError):
    """The registry has no such model name or version."""


class FrameError(ValueError):
    """One frame could not be processed; the other frames of its batch are unaffected.

    ``index`` is the frame's position in the batch, ``reason`` a short machine-friendly
    word (``empty``, ``corrupt``, ``too_large``, ``bad_dimensions``) and the message says
    what was wrong in words.
    """

    def __init__(self, index: int, reason: str, message: str, label: str | None = None) -> None:
        self.index = index
        self.reason = reason
        self.label = label or f"frame {index}"
        super().__init__(f"{self.label}: {message}")
