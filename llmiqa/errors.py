"""Errors users see: one line each, naming the file or model and the problem."""

from __future__ import annotations


class ModelLoadError(RuntimeError):
    """A model id or folder that cannot be loaded for its role."""


def one_line(error: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
