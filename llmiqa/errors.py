"""Errors users see: one line each, naming the file or model and the problem.

`UsageError` and its kinds stop a run before (or instead of) any work, and the CLI turns
them into one line and exit code 2. Per-image problems are not exceptions to the run:
they become a failed result and the run goes on.
"""

from __future__ import annotations


class UsageError(RuntimeError):
    """A problem with the whole run (an option, a model, a device, the store)."""


class ModelLoadError(UsageError):
    """A model id, folder or file that cannot be loaded for its role."""


class RunError(UsageError):
    """A run folder that cannot be used as asked."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, carrying what is true of the run folder it stopped (which run it holds)."""


def one_line(error: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
