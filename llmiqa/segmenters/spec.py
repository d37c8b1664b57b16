"""A segmenter named before loading: which SAM2 checkpoint, its settings, and the name its
masks carry in the store, so that stored masks need no SAM2 at all. Resolving a spec
(checkpoint, device) is cheap and raises every problem before work starts. Free of
torch: the generator is imported by `load`.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from llmiqa.errors import ModelLoadError
from llmiqa.loading.checkpoints import (
    Checkpoint,
    hub_file,
    hub_has_config,
    hub_listing,
    resolve,
    split_revision,
)
from llmiqa.loading.runtime import Runtime, TorchDevice
from llmiqa.segmenters.masks import MaskSettings

# The facebook/sam2.1-hiera-* repos are "sam2_video" (one checkpoint serves images and
# videos); Sam2Model loads both kinds.
SAM2_MODEL_TYPES = ("sam2", "sam2_video")

# The official hub repos and their checkpoint file (as sam2's build_sam.py names them).
HUB_FILES = {
    f"facebook/sam2{version}-hiera-{size}": f"sam2{version}_hiera_{size.replace('-', '_')}.pt"
    for version in ("", ".1")
    for size in ("tiny", "small", "base-plus", "large")
}


def is_original_checkpoint(source: str) -> bool:
    """A local `.pt` file, or a hub file named `owner/name/file.pt`."""
    return source.endswith(".pt") and (Path(source).is_file() or source.count("/") >= 2)


def segmenter_identity(checkpoint: str, dtype: object, settings: MaskSettings) -> str:
    """The store's name for masks: checkpoint identity, dtype and every setting that changes
    them. Computable before loading, so stored masks need no model."""
    knobs = ",".join(
        f"{name}={value}"
        for name, value in asdict(settings).items()
        if name != "points_per_batch"  # speed and memory only (float rounding aside)
    )
    return f"{checkpoint}|{str(dtype).removeprefix('torch.')}|sam2-amg-1.1.0:{knobs}"


@dataclass(frozen=True)
class SegmenterSpec(TorchDevice):
    """A segmenter named before loading: stored masks are keyed by `identity`, so masks
    already in the store need no SAM2 at all; resolving it raises every problem early.

    `model`: a transformers folder or hub id (`facebook/sam2.1-hiera-large`), an original
    `.pt` file (`sam2_hiera_large.pt`), or a hub file `owner/name/file.pt`. A hub repo that
    holds no transformers config but an original checkpoint (the facebook/sam2-hiera-* repos
    as first released) loads through its `.pt`.
    """

    model: str
    settings: MaskSettings = MaskSettings()
    device: str | None = None
    dtype: str | None = None
    revision: str | None = None

    @classmethod
    def create(
        cls, source: str, settings: MaskSettings = MaskSettings(), runtime: Runtime = Runtime()
    ) -> SegmenterSpec:
        """The spec of `source` ("owner/name[@revision]", a path or a .pt) under `runtime`."""
        model, revision = split_revision(source)
        dtype = runtime.segmenter_dtype or runtime.dtype
        return cls(model, settings, runtime.device, dtype, revision)

    @cached_property
    def source(self) -> tuple[str, Path | Checkpoint, str]:
        """(kind, what to load, checkpoint identity): kind "pt" (an original checkpoint file)
        or "transformers" (a resolved transformers checkpoint)."""
        return _resolve(self.model, self.revision)

    @cached_property
    def identity(self) -> str:
        return segmenter_identity(self.source[2], self.torch_dtype, self.settings)

    def load(self):
        from llmiqa.segmenters.generator import Segmenter, load_model

        model = load_model(*self.source[:2], self.torch_dtype, self.model)
        return Segmenter(model, self.settings, self.torch_device)


def sam2_checkpoint_identity(source: str, revision: str | None = None) -> str:
    """The checkpoint part of `segmenter_identity` for any source `Segmenter` takes, without
    loading the model (an original .pt on the hub is downloaded, as loading would)."""
    return _resolve(source, revision)[2]


def _resolve(source: str, revision: str | None) -> tuple[str, Path | Checkpoint, str]:
    """(kind, what, identity) of a segmenter source: see SegmenterSpec.source."""
    if is_original_checkpoint(source):
        return "pt", *_original(source, revision)
    hub_id = not Path(source).exists() and source.count("/") == 1
    if hub_id and not hub_has_config(source, revision):
        # A hub repo without a transformers config: its original .pt (the official file
        # name, else the repo's only .pt).
        filename = HUB_FILES.get(source)
        if filename is None:
            names = [name for name in hub_listing(source, revision) if name.endswith(".pt")]
            if len(names) != 1:
                raise ModelLoadError(
                    f"{source}: no transformers config and {len(names)} .pt files; name one "
                    f"as {source}/<file>.pt"
                )
            filename = names[0]
        return "pt", *_original(f"{source}/{filename}", revision)
    checkpoint = resolve(source, revision)
    model_type = checkpoint.config.get("model_type")
    if model_type not in SAM2_MODEL_TYPES:
        raise ModelLoadError(
            f"{source}: not a SAM2 checkpoint (model_type {model_type!r}, "
            f"expected one of {', '.join(SAM2_MODEL_TYPES)})"
        )
    return "transformers", checkpoint, checkpoint.identity


def _original(source: str, revision: str | None) -> tuple[Path, str]:
    """An original .pt, local or on the hub, with the yaml of a non-official size beside it
    when the hub repo has one."""
    checkpoint = resolve(source, revision, config=False)
    if checkpoint.commit is not None:
        repo, filename = "/".join(source.split("/")[:2]), source.split("/", 2)[2]
        with contextlib.suppress(ModelLoadError):
            hub_file(repo, str(Path(filename).with_suffix(".yaml")), revision)
    return checkpoint.path, checkpoint.identity
