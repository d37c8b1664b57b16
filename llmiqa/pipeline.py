"""The one pipeline behind the CLI and the API: orchestration only.

    image ─► regions (SAM2 masks, Algorithm 1) ─► requests (sub-image, prompt, key)
          ─► CachingRater (store, then model) ─► ratings ─► aggregation ─► score

Everything that can be wrong with the whole run (a model or segmenter that does not
resolve, a device this machine lacks, a store that cannot be written) is raised when the
Scorer is built, before any image is touched. Models load lazily, once: a run whose
masks and ratings are all stored loads none. Images are decoded one chunk ahead in a
background thread.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from llmiqa.aggregate import Aggregation
from llmiqa.background import one_ahead
from llmiqa.caching import CachingRater, CachingSegmenter, Pending, Usage, prompt_text
from llmiqa.errors import UsageError, one_line
from llmiqa.images import ImageError, LoadedImage, from_pil, load_image
from llmiqa.masks import MaskSettings
from llmiqa.options import DEFAULT_MODEL, DEFAULT_SEGMENTER
from llmiqa.raters import RaterSpec
from llmiqa.raters.base import Rating, RatingFailure
from llmiqa.regions import Crop, Region, RegionSettings, region_crop, select_regions
from llmiqa.results import ImageResult
from llmiqa.segment import SegmenterSpec
from llmiqa.standards import Prompt, Standard
from llmiqa.store import RatingKey, Store

ImageInput = str | Path | Image.Image | LoadedImage


def split_revision(source: str) -> tuple[str, str | None]:
    """ "owner/name@revision" -> (owner/name, revision); an existing path is taken whole."""
    name, at, revision = source.rpartition("@")
    if not at or Path(source).exists() or not name:
        return source, None
    return name, revision


class Scorer:
    """Scores images with one or more MLLMs (an ensemble), mix-grained by default."""

    def __init__(
        self,
        models: Sequence[str] = (DEFAULT_MODEL,),
        *,
        standard: Standard = Standard(),
        aggregation: Aggregation = Aggregation(),
        regions: RegionSettings = RegionSettings(),
        segmenter: str = DEFAULT_SEGMENTER,
        mask_settings: MaskSettings = MaskSettings(),
        device: str | None = None,
        dtype: str | None = None,
        segmenter_dtype: str | None = None,
        batch_size: int | None = None,
        rater_options: Sequence[tuple[str, object]] = (),
        engine: str = "transformers",
        server: str | None = None,
        max_in_flight: int | None = None,
        store: Store | str | Path | None = None,
        progress: bool = False,
    ) -> None:
        if isinstance(models, str):
            models = [models]
        if not models:
            raise UsageError("at least one model is needed")
        if batch_size is not None and batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        self.models = tuple(models)
        self.standard, self.aggregation, self.region_settings = standard, aggregation, regions
        self.specs = [
            RaterSpec(name, device, dtype, revision, batch_size, tuple(rater_options), engine,
                      server, max_in_flight)
            for name, revision in map(split_revision, models)
        ]  # fmt: skip
        for spec in self.specs:
            spec.check()  # resolves checkpoint, backend, device: fail before any work
        self.segmenter_spec = None
        if regions.mode != "whole-only":
            name, revision = split_revision(segmenter)
            self.segmenter_spec = SegmenterSpec(
                name, mask_settings, device, segmenter_dtype or dtype, revision
            )
            _ = self.segmenter_spec.identity
        self.store = store if isinstance(store, Store) else Store(store or ":memory:")
        self.store.check_writable()
        self.usage = Usage(notes=list(self.store.notes))
        self.raters = [CachingRater(spec, self.store, self.usage) for spec in self.specs]
        self.segmenter = (
            CachingSegmenter(self.segmenter_spec, self.store, self.usage)
            if self.segmenter_spec
            else None
        )
        self.progress = progress

    def with_standard(self, standard: Standard) -> Scorer:
        """This Scorer asking under another standard: the same raters, segmenter, store and
        usage counters (no second copy of any model), only the prompt differs."""
        variant = copy.copy(self)
        variant.standard = standard
        return variant

    # ---- the pipeline ---------------------------------------------------------------------

    def score(self, images: Sequence[ImageInput] | ImageInput) -> list[ImageResult]:
        """Score images (paths or PIL images); failures come back as results with `.error`."""
        single = isinstance(images, str | Path | Image.Image | LoadedImage)
        return list(self.iter_score([images] if single else list(images)))

    def iter_score(
        self, images: Sequence[ImageInput], chunk: int | None = None
    ) -> Iterator[ImageResult]:
        """Yield results in input order, one chunk of images at a time (for long runs); the
        next chunk is decoded while this one is scored."""
        chunk = chunk or self.chunk_size
        numbered = list(enumerate(images))
        parts = [numbered[i : i + chunk] for i in range(0, len(numbered), chunk)]
        bar = tqdm(total=len(numbered), unit="img", disable=not self.progress, dynamic_ncols=True)
        for loaded in one_ahead(self._load_part, parts):
            yield from self._score_loaded(loaded)
            bar.update(len(loaded))
            bar.set_postfix(
                rated=self.usage.rated, stored=self.usage.from_store, failed=self.usage.failed
            )
        bar.close()

    @property
    def chunk_size(self) -> int:
        """Images scored together: their missing ratings form the raters' batches."""
        return max(4 * self.specs[0].batch, 8)

    def regions(self, image: LoadedImage) -> list[Region]:
        """Algorithm 1 on this image's SAM2 masks (from the store when already segmented)."""
        if self.segmenter is None:
            return []
        shape = (image.image.height, image.image.width)
        return select_regions(self.segmenter.masks(image), shape, self.region_settings)

    def _load_part(self, part: list[tuple[int, ImageInput]]) -> list[LoadedImage | ImageResult]:
        with self.usage.timed("load images"):
            return [_load(item, number) for number, item in part]

    def _score_loaded(self, loaded: list[LoadedImage | ImageResult]) -> list[ImageResult]:
        regions: dict[int, list[Region]] = {}
        errors: dict[int, str] = {}
        for i, item in enumerate(loaded):
            if isinstance(item, ImageResult):
                errors[i] = item.error
                continue
            try:
                regions[i] = self.regions(item)
            except UsageError:
                raise  # no image can be segmented: stop with the one clear message
            except Exception as error:  # one image's segmentation must not sink the batch
                errors[i] = f"{item.name}: segmentation failed ({one_line(error)})"
        views = {i: self._views(loaded[i], regions[i]) for i in regions}
        outcomes = [
            rater.rate([p for image_views in views.values() for p in image_views[m]])
            for m, rater in enumerate(self.raters)
        ]
        results = []
        with self.usage.timed("aggregate"):
            for i, item in enumerate(loaded):
                if i not in errors:
                    assembled = self._assemble(item, regions[i], views[i], outcomes)
                    if isinstance(assembled, str):
                        errors[i] = assembled
                    else:
                        results.append(assembled)
                        continue
                self.usage.failed += 1
                results.append(ImageResult(name=getattr(item, "name", str(item)), error=errors[i]))
        return results

    def _views(self, image: LoadedImage, regions: list[Region]) -> list[list[Pending]]:
        """Per model: the whole image, then each region's crop, as requests to obtain."""
        planned = self.views(image.digest, image.image.size, regions)
        return [[Pending(key, image.image, crop, prompt) for key, crop, prompt in model]
                for model in planned]  # fmt: skip

    def views(
        self, digest: str, size: tuple[int, int], regions: list[Region]
    ) -> list[list[tuple[RatingKey, Crop | None, Prompt]]]:
        """Per model: (key, crop, prompt) of the whole image, then of each region's crop.

        Needs no pixels (the image's digest and (width, height) only), so a driver can plan
        the ratings of images that only its workers decode (llmiqa.distributed)."""
        levels = self.standard.levels
        whole = self.standard.prompt("whole")
        region = self.standard.prompt("region")
        per_model = []
        for spec, rater in zip(self.specs, self.raters, strict=True):

            def key(geometry: str, prompt, identity=rater.identity) -> RatingKey:
                return RatingKey(identity, prompt_text(prompt), levels, digest, geometry)

            planned = [(key("whole", whole), None, whole)]
            for r in regions:
                crop = region_crop(r, size, self.region_settings.mode, spec.min_crop_side)
                planned.append((key(crop_geometry(crop, size), region), crop, region))
            per_model.append(planned)
        return per_model

    def _assemble(
        self,
        image: LoadedImage,
        regions: list[Region],
        views: list[list[Pending]],
        outcomes: list[dict[RatingKey, Rating | RatingFailure]],
    ) -> ImageResult | str:
        """The image's result, or why it has none."""
        columns = zip(*views, strict=True)  # per view: its pending rating for each model
        ratings = [[outcomes[m][p.key] for m, p in enumerate(column)] for column in columns]
        for column in ratings:
            for rating in column:
                if isinstance(rating, RatingFailure):
                    return f"{image.name}: {rating.error}"
                if np.isnan(rating.logprobs).any():
                    return f"{image.name}: incomplete rating (the backend missed a digit)"
        values = [[np.nan if r.other_value is None else r.other_value for r in c] for c in ratings]
        return ImageResult(
            name=image.name,
            models=self.models,
            digest=image.digest,
            size=image.image.size,
            kinds=tuple(r.kind for r in regions),
            boxes=tuple(r.box for r in regions),
            areas=tuple(r.area for r in regions),
            logprobs=np.array([[r.logprobs for r in column] for column in ratings]),
            other_logprob=np.array([[r.other_logprob for r in column] for column in ratings]),
            other_value=np.array(values, dtype=np.float64),
            aggregation=self.aggregation,
        )


def crop_geometry(crop, size: tuple[int, int]) -> str:
    """Names a sub-image; a box crop covering the whole image IS the whole image."""
    coords = ",".join(map(str, crop.box))
    if crop.mask is None:
        return "whole" if crop.box == (0, 0, *size) else f"bbox:{coords}"
    x0, y0, x1, y1 = crop.box
    bits = np.packbits(crop.mask[y0:y1, x0:x1]).tobytes()
    return f"mask:{coords}:{hashlib.blake2b(bits, digest_size=8).hexdigest()}"


def _load(item: ImageInput, number: int) -> LoadedImage | ImageResult:
    try:
        if isinstance(item, LoadedImage):
            return item
        if isinstance(item, Image.Image):
            return from_pil(item, f"<image {number}>")
        return load_image(item)
    except ImageError as error:
        return ImageResult(name=str(item), error=str(error))
