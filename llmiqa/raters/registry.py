"""Rater backends by name: the built-in ones, and any a plugin or a test registers.

The name is the one word for a backend everywhere: `--backend NAME`, Spec.backend
and the `backend=NAME` part of a rating's identity in the store. A new backend is a
subclass of base.Backend plus its registration (a line below, or `register(cls)`); its
options become command-line flags. Backend modules import nothing heavy at import time,
so `llmiqa --help` lists them without loading torch.
"""

from __future__ import annotations

import inspect

from llmiqa.errors import ModelLoadError
from llmiqa.raters.base import Backend, BackendOption
from llmiqa.raters.hf import TransformersRater
from llmiqa.raters.mplug_owl3 import MplugOwl3Rater
from llmiqa.raters.server import ServerRater
from llmiqa.raters.vllm import VllmRater

AUTO = "auto"
_BACKENDS: dict[str, type[Backend]] = {}


def register(backend: type[Backend]) -> type[Backend]:
    """Make `backend` available by its name (usable as a class decorator)."""
    if not isinstance(backend, type) or not issubclass(backend, Backend):
        raise ValueError(f"{backend!r} is not a subclass of llmiqa.raters.base.Backend")
    if inspect.isabstract(backend):
        missing = ", ".join(sorted(backend.__abstractmethods__))
        raise ValueError(f"backend {backend.__name__} does not implement {missing}")
    name = getattr(backend, "name", None)
    if not name or name == AUTO or _BACKENDS.get(name, backend) is not backend:
        raise ValueError(f"backend name {name!r} is missing, taken or reserved")
    for option, declared in backend.options.items():
        for other in _BACKENDS.values():
            known = other.options.get(option, declared)
            if (known.default, known.kind) != (declared.default, declared.kind):
                raise ValueError(f"option {option!r} of {name} differs from {other.name}'s")
    _BACKENDS[name] = backend
    return backend


for _builtin in (TransformersRater, MplugOwl3Rater, VllmRater, ServerRater):
    register(_builtin)


def names() -> tuple[str, ...]:
    """What --backend accepts."""
    return (AUTO, *_BACKENDS)


def backends() -> tuple[type[Backend], ...]:
    """Every registered backend, the built-in ones first."""
    return tuple(_BACKENDS.values())


def options() -> dict[str, BackendOption]:
    """Every option some backend takes (one declaration per name)."""
    found: dict[str, BackendOption] = {}
    for backend in _BACKENDS.values():
        for name, declared in backend.options.items():
            found.setdefault(name, declared)
    return found


def takers(option: str) -> list[str]:
    """The backends that take an option."""
    return [name for name, backend in _BACKENDS.items() if option in backend.options]


def get(name: str) -> type[Backend]:
    """The backend registered under `name`; one line naming the others when none is."""
    if name not in _BACKENDS:
        raise ModelLoadError(f"unknown backend {name!r}; choose one of {', '.join(names())}")
    return _BACKENDS[name]


def claiming(model_type: str) -> type[Backend] | None:
    """The backend whose `model_types` claim checkpoints of this type (a native port)."""
    return next((b for b in _BACKENDS.values() if model_type in b.model_types), None)
