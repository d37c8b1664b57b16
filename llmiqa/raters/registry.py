"""Rater backends by name: the built-in ones, and any a plugin or a test registers.

The name is the one word for a backend everywhere: `--backend NAME`, RaterSpec.backend
and the `backend=NAME` part of a rating's identity in the store. A new backend is a class
fulfilling base.Backend plus its registration (a line below, or `register(cls)`); its
options become command-line flags. Backend modules import nothing heavy at import time,
so `llmiqa --help` lists them without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmiqa.errors import ModelLoadError
from llmiqa.raters.base import Backend, BackendOption
from llmiqa.raters.hf import TransformersRater
from llmiqa.raters.mplug_owl3 import MplugOwl3Rater
from llmiqa.raters.server import ServerRater
from llmiqa.raters.vllm import VllmRater

if TYPE_CHECKING:
    from llmiqa.raters.spec import RaterSpec

AUTO = "auto"
FALLBACK = TransformersRater  # what `auto` runs a checkpoint with when no port claims it
_BACKENDS: dict[str, type[Backend]] = {}


def register(backend: type[Backend]) -> type[Backend]:
    """Make `backend` available by its name (usable as a class decorator)."""
    name = backend.name
    if not name or name == AUTO or _BACKENDS.get(name, backend) is not backend:
        raise ValueError(f"backend name {name!r} is taken or reserved")
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


def choose(spec: RaterSpec) -> type[Backend]:
    """The backend class of a spec; one line when none fits.

    `auto`: a server's URL goes to `server`; a checkpoint goes to the backend whose
    `model_types` claim its config's model_type (llmiqa's own port), else to transformers.
    A checkpoint only a port can read (its model_type is claimed) is refused elsewhere.
    """
    name = spec.backend
    if name != AUTO and name not in _BACKENDS:
        raise ModelLoadError(f"unknown backend {name!r}; choose one of {', '.join(names())}")
    if spec.server:
        if name not in (AUTO, ServerRater.name):
            raise ModelLoadError(f"--server rates with the server backend, not {name}")
        if spec.revision:
            raise ModelLoadError("--revision names a checkpoint's; a server serves its own")
        return ServerRater
    if name == ServerRater.name:
        raise ModelLoadError("the server backend needs --server URL")
    model_type = spec.checkpoint.config.get("model_type")
    if model_type is None:
        raise ModelLoadError(f"{spec.model}: config.json has no model_type")
    ports = [b for b in _BACKENDS.values() if model_type in b.model_types]
    if name == AUTO:
        return ports[0] if ports else FALLBACK
    if ports and _BACKENDS[name] not in ports:
        raise ModelLoadError(
            f"{spec.model}: model_type {model_type} runs on backend {ports[0].name} "
            f"(llmiqa's own port), not {name}"
        )
    return _BACKENDS[name]
