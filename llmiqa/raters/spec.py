"""A rater named before loading: what to load, what runs it, and the name its ratings carry.

The store keys ratings by `identity`, so a run whose ratings are all stored never loads a
model; resolving a spec (checkpoint, backend, device) is cheap and raises every problem
with the whole run before any image is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from llmiqa.errors import ModelLoadError
from llmiqa.loading.checkpoints import Checkpoint, resolve, split_revision
from llmiqa.loading.runtime import Runtime, TorchDevice
from llmiqa.method.standards import Prompt
from llmiqa.raters import registry
from llmiqa.raters.base import Backend, Canary, Rater
from llmiqa.raters.hf import TransformersRater
from llmiqa.raters.local import LocalRater
from llmiqa.raters.server import ServerRater

REMOTE_BATCH = 8  # devices.default_batch_size on a GPU


@dataclass(frozen=True)
class RaterSpec(TorchDevice):
    """One MLLM to rate with: plain data, so it can be sent to another process."""

    model: str  # hub id or local path; a server's name for its model with `server`
    revision: str | None = None
    backend: str = "auto"  # a registered backend's name (raters.registry)
    server: str | None = None  # an OpenAI-compatible server's URL
    device: str | None = None
    dtype: str | None = None
    batch_size: int | None = None
    max_in_flight: int | None = None  # requests a vLLM engine or a server holds at once
    options: tuple[tuple[str, object], ...] = ()  # backend options (those it takes apply)

    @classmethod
    def create(
        cls, source: str, runtime: Runtime = Runtime(), options: Mapping[str, object] = {}
    ) -> RaterSpec:
        """The spec of `source` ("owner/name[@revision]" or a path) under `runtime`."""
        model, revision = split_revision(source)
        return cls(
            model, revision, runtime.backend, runtime.server, runtime.device, runtime.dtype,
            runtime.batch_size, runtime.max_in_flight, tuple(sorted(options.items())),
        )  # fmt: skip

    @cached_property
    def runs_on(self) -> type[Backend]:
        """The backend class; one line when none fits.

        `auto`: a server's URL goes to `server`; a checkpoint to the backend whose
        `model_types` claim its config's model_type (llmiqa's own port), else to
        transformers. A checkpoint only a port can read is refused elsewhere.
        """
        named = None if self.backend == registry.AUTO else registry.get(self.backend)
        if self.server:
            if named not in (None, ServerRater):
                raise ModelLoadError(f"--server rates with the server backend, not {named.name}")
            if self.revision:
                raise ModelLoadError("--revision names a checkpoint's; a server serves its own")
            return ServerRater
        if named is ServerRater:
            raise ModelLoadError("the server backend needs --server URL")
        if named is not None and not named.reads_checkpoint:
            return named
        model_type = self.checkpoint.config.get("model_type")
        if model_type is None:
            raise ModelLoadError(f"{self.model}: config.json has no model_type")
        port = registry.claiming(model_type)
        if named is None:
            return port or TransformersRater
        if port is not None and named is not port:
            raise ModelLoadError(
                f"{self.model}: model_type {model_type} runs on backend {port.name} (llmiqa's "
                f"own port), not {named.name}"
            )
        return named

    @cached_property
    def checkpoint(self) -> Checkpoint:
        if self.server:
            raise ModelLoadError(f"{self.model}: served by {self.server}, not a checkpoint here")
        return resolve(self.model, self.revision)

    @cached_property
    def batch(self) -> int:
        """Requests per forward pass: the device's default for a model run here; a backend
        that runs none here (a server, a plugin) gets a GPU's without importing torch."""
        if self.batch_size or not issubclass(self.runs_on, LocalRater):
            return self.batch_size or REMOTE_BATCH
        from llmiqa.loading.devices import default_batch_size

        return default_batch_size(self.torch_device)

    @cached_property
    def backend_options(self) -> dict[str, object]:
        """The backend's options: its defaults, overridden by the given values it takes (an
        ensemble passes every model the same options; each takes what it knows)."""
        declared = self.runs_on.options
        given = {k: v for k, v in self.options if k in declared and v is not None}
        return {name: given.get(name, o.default) for name, o in declared.items()}

    @cached_property
    def identity(self) -> str:
        return self.runs_on.identify(self)

    @property
    def min_crop_side(self) -> int:
        """The narrowest sub-image the backend's processor accepts (crops are widened)."""
        return self.runs_on.min_crop_side

    def check(self) -> None:
        """Resolve everything that can be wrong without loading weights; raise if any is."""
        _ = self.identity

    def render(self, prompt: Prompt) -> str | None:
        """What the model reads before its answer, without loading its weights."""
        return self.runs_on.render_for(self, prompt)

    def canary(self) -> Canary | None:
        """The canary of the model behind the identity, when the identity cannot name the
        model's content (a server's name); None when it does."""
        return self.runs_on.canary(self)

    def load(self) -> Rater:
        return self.runs_on(self)
