"""The one pipeline behind the CLI and the API: orchestration only.

    image ─► regions (SAM2 masks, Algorithm 1) ─► requests (model, image, view, prompt)
          ─► CachingRater (store, then model) ─► ratings ─► aggregation ─► score

Everything that can be wrong with the whole run (a model or segmenter that does not
resolve, a device this machine lacks, a store that cannot be written) is raised when the
Scorer is built, before any image is touched. Models load lazily, once: a run whose
masks and ratings are all stored loads none. Images are decoded one chunk ahead in a
background thread, each chunk on `decoders` threads (decoding and hashing release the GIL).

`regions` and `requests` need no pixels (an image's digest and size, and stored masks),
so a driver whose workers compute (llmiqa.distributed) plans with the same code and commits
what they send through the same caches, all of it through one narrow `seam()`; `offline()`
then collects with models switched off.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from llmiqa.background import in_parallel, one_ahead
from llmiqa.errors import ModelLoadError, UsageError, one_line
from llmiqa.inputs.images import (
    Encoded,
    ImageError,
    LoadedImage,
    from_pil,
    keep_freed_pixels,
    legacy_pixel_hash,
    load_encoded,
    load_image,
)
from llmiqa.loading.runtime import DEFAULT_MODEL, DEFAULT_SEGMENTER, Runtime, default_decoders
from llmiqa.method.aggregate import Aggregation, allowed_readouts
from llmiqa.method.regions import Region, RegionSettings, View, region_view, select_regions
from llmiqa.method.results import ImageResult
from llmiqa.method.standards import SEP_IQA_WORDS, Standard
from llmiqa.raters import registry
from llmiqa.raters.base import Outcome, RatingFailure, RatingRequest
from llmiqa.raters.spec import RaterSpec
from llmiqa.scoring.caching import CachingRater, CachingSegmenter, Usage
from llmiqa.scoring.store import Store
from llmiqa.segmenters.masks import MaskSettings
from llmiqa.segmenters.spec import SegmenterSpec

ImageInput = str | Path | Image.Image | LoadedImage | Encoded


@dataclass(frozen=True)
class Seam:
    """All a driver whose workers compute needs of a Scorer, and no more: plan each image's
    requests without pixels, ask the caches what they lack, commit what comes back. Its
    caches are the Scorer's with models switched off (store, usage and failures shared):
    planning computes nothing, and the collect pass (`Scorer.offline()`) serves every commit.
    """

    chunk_size: int  # images scored together: their missing requests are rated together
    # per model, the image's requests (the whole image, then each region's view); raises
    # where its regions cannot be planned (its masks failed, or do not fit it)
    requests: Callable[[LoadedImage], list[list[RatingRequest]]]
    raters: tuple[CachingRater, ...]  # per model: spec, identity, missing, commit
    segmenter: CachingSegmenter | None  # None: whole images only
    usage: Usage  # the Scorer's counters, shown as commits arrive
    legacy: bool  # the store holds schema 5's digests: workers compute them beside the new
    alias: Callable[[Mapping[str, str]], None]  # record new digest -> schema-5 digest


class Scorer:
    """Scores images with one or more MLLMs (an ensemble), mix-grained by default.

    `models` are hub ids (owner/name[@revision]), local folders, or RaterSpecs; `runtime`
    says what runs them and where; `backend_options` are the backends' own output-changing
    options (e.g. max_pixels), each model taking those its backend knows.
    """

    def __init__(
        self,
        models: Sequence[str | RaterSpec] | str = (DEFAULT_MODEL,),
        *,
        segmenter: str | SegmenterSpec = DEFAULT_SEGMENTER,
        standard: Standard = Standard(),
        aggregation: Aggregation = Aggregation(),
        regions: RegionSettings = RegionSettings(),
        masks: MaskSettings = MaskSettings(),
        runtime: Runtime = Runtime(),
        backend_options: Mapping[str, object] = {},
        store: Store | str | Path | None = None,
        progress: bool = False,
    ) -> None:
        models = [models] if isinstance(models, str | RaterSpec) else list(models)
        if not models:
            raise UsageError("at least one model is needed")
        self.specs = [
            m if isinstance(m, RaterSpec) else RaterSpec.create(m, runtime, backend_options)
            for m in models
        ]
        for spec in self.specs:
            spec.check()  # resolves checkpoint, backend, device: fail before any work
        check_readout(standard, aggregation, self.specs)
        self.models = tuple(spec.model for spec in self.specs)
        self.standard, self.aggregation, self.region_settings = standard, aggregation, regions
        self.segmenter_spec = None
        if regions.region_mode != "whole-only":
            self.segmenter_spec = (
                segmenter
                if isinstance(segmenter, SegmenterSpec)
                else SegmenterSpec.create(segmenter, masks, runtime)
            )
            try:
                _ = self.segmenter_spec.identity
            except ModelLoadError as error:  # say which option named it, and the way out
                raise ModelLoadError(
                    f"{error} [the segmenter, for regions: give --segmenter, or "
                    "--region-mode whole-only to score the whole image only]"
                ) from None
        self.store = store if isinstance(store, Store) else Store(store or ":memory:")
        self.store.check_writable()
        self.legacy = self.store.legacy_left()  # loaders compute schema 5's digests too
        self.decoders = runtime.decoders or default_decoders()
        self.usage = Usage(notes=list(self.store.notes))
        self.raters = [CachingRater(spec, self.store, self.usage) for spec in self.specs]
        self.segmenter = (
            CachingSegmenter(self.segmenter_spec, self.store, self.usage)
            if self.segmenter_spec
            else None
        )
        self.progress = progress

    @classmethod
    def from_options(
        cls, options: Mapping[str, object], store=None, progress: bool = False
    ) -> Scorer:
        """The Scorer a resolved options dictionary (llmiqa.scoring.knobs) describes."""
        from llmiqa.loading.runtime import Models
        from llmiqa.scoring.knobs import backend_options, build

        models = build(Models, options)
        return cls(
            models.model,
            segmenter=models.segmenter,
            standard=build(Standard, options),
            aggregation=build(Aggregation, options),
            regions=build(RegionSettings, options),
            masks=build(MaskSettings, options),
            runtime=build(Runtime, options),
            backend_options=backend_options(options),
            store=store,
            progress=progress,
        )

    def with_standard(self, standard: Standard) -> Scorer:
        """This Scorer asking under another standard: the same raters, segmenter, store and
        usage counters (no second copy of any model), only the prompt differs."""
        variant = copy.copy(self)
        variant.standard = standard
        return variant

    def offline(self) -> Scorer:
        """This Scorer with its models switched off: it serves what the store holds (and
        the failures this process committed) and stops on anything else."""
        variant = copy.copy(self)
        variant.raters = [rater.offline() for rater in self.raters]
        variant.segmenter = self.segmenter.offline() if self.segmenter else None
        return variant

    def seam(self) -> Seam:
        """The planning and commit seam of this Scorer (llmiqa.distributed uses only it)."""
        offline = self.offline()
        return Seam(
            chunk_size=self.chunk_size,
            requests=lambda image: offline.requests(image, offline.regions(image)),
            raters=tuple(offline.raters),
            segmenter=offline.segmenter,
            usage=self.usage,
            legacy=self.legacy,
            alias=self.store.alias,
        )

    # ---- the pipeline ---------------------------------------------------------------------

    def score(self, images: Sequence[ImageInput] | ImageInput) -> list[ImageResult]:
        """Score images (paths or PIL images); failures come back as results with `.error`."""
        single = isinstance(images, str | Path | Image.Image | LoadedImage | Encoded)
        return list(self.iter_score([images] if single else list(images)))

    def iter_score(
        self, images: Iterable[ImageInput], chunk: int | None = None, total: int | None = None
    ) -> Iterator[ImageResult]:
        """Yield results in input order, one chunk of images at a time (for long runs); the
        next chunk is decoded while this one is scored. `images` is read lazily, a chunk
        at a time, so a stream of millions holds one chunk in memory; `total` sizes the
        progress bar of an iterable without a length."""
        chunk = chunk or self.chunk_size
        keep_freed_pixels(4 * chunk)  # one chunk scored, one queued, one decoding, and one
        numbered = enumerate(images)
        parts = iter(lambda: list(itertools.islice(numbered, chunk)), [])
        if total is None and isinstance(images, Sized):
            total = len(images)
        bar = tqdm(total=total, unit="img", disable=not self.progress, dynamic_ncols=True)
        for loaded in one_ahead(self._load_part, parts):
            yield from self._score_loaded(loaded)
            bar.update(len(loaded))
            bar.set_postfix(
                rated=self.usage.rated, from_store=self.usage.from_store, failed=self.usage.failed
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
        size = image.image.size
        return select_regions(self.segmenter.masks(image), size[::-1], self.region_settings)

    def requests(self, image: LoadedImage, regions: Sequence[Region]) -> list[list[RatingRequest]]:
        """Per model: the requests of the whole image, then of each region's view.

        Needs no pixels beyond the image's size (they ride along as the requests' source,
        cut only by the rater), so a driver can plan images only its workers decode."""
        size = image.image.size
        whole, region = self.standard.prompt("whole"), self.standard.prompt("region")
        mode = self.region_settings.region_mode
        per_model = []
        for spec, rater in zip(self.specs, self.raters, strict=True):
            views = [View(), *(region_view(r, size, mode, spec.min_crop_side) for r in regions)]
            prompts = [whole] + [region] * len(regions)
            standard = self.standard
            per_model.append([
                RatingRequest(model=rater.identity, image=image.digest, size=size, view=view,
                              prompt=prompt, levels=standard.levels, source=image.image,
                              words=standard.words, top=standard.top_logits)
                for view, prompt in zip(views, prompts, strict=True)
            ])  # fmt: skip
        return per_model

    def _load_part(self, part: list[tuple[int, ImageInput]]) -> list[LoadedImage | ImageResult]:
        """Files and encoded bytes decode on `decoders` threads; a caller's PIL images in
        this thread (the same lazily opened image twice must not load on two threads)."""
        mine = any(isinstance(item, Image.Image) for _, item in part)
        with self.usage.timed("load images"):
            return in_parallel(
                lambda x: _load(x[1], x[0], self.legacy), part, 1 if mine else self.decoders
            )

    def _score_loaded(self, loaded: list[LoadedImage | ImageResult]) -> list[ImageResult]:
        legacy = {x.digest: x.legacy for x in loaded if isinstance(x, LoadedImage) and x.legacy}
        if legacy:
            self.store.alias(legacy)
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
        planned = {i: self.requests(loaded[i], regions[i]) for i in regions}
        outcomes = []
        for m, rater in enumerate(self.raters):
            wanted = [request for per_model in planned.values() for request in per_model[m]]
            by_key = {wanted[index].key: outcome for index, outcome in rater.rate(wanted)}
            outcomes.append(by_key)
        results = []
        with self.usage.timed("aggregate"):
            for i, item in enumerate(loaded):
                if i not in errors:
                    assembled = self._assemble(item, regions[i], planned[i], outcomes)
                    if isinstance(assembled, str):
                        errors[i] = assembled
                    else:
                        results.append(assembled)
                        continue
                self.usage.failed += 1
                results.append(ImageResult(name=getattr(item, "name", str(item)), error=errors[i]))
        return results

    def _assemble(
        self,
        image: LoadedImage,
        regions: list[Region],
        requests: list[list[RatingRequest]],
        outcomes: list[dict[str, Outcome]],
    ) -> ImageResult | str:
        """The image's result, or why it has none."""
        columns = zip(*requests, strict=True)  # per view: its request for each model
        ratings = [[outcomes[m][r.key] for m, r in enumerate(column)] for column in columns]
        for column in ratings:
            for rating in column:
                if isinstance(rating, RatingFailure):
                    return f"{image.name}: {rating.error}"
                if np.isnan(rating.logprobs).any():
                    return f"{image.name}: incomplete rating (the backend missed a digit)"
        values = [[np.nan if r.other_value is None else r.other_value for r in c] for c in ratings]
        top = {}
        if self.standard.top_logits:
            weights = self.directions()
            top = dict(
                top_logits=np.array([[r.top_logits for r in column] for column in ratings]),
                top_weights=np.array(
                    [[weights[m][r.top_ids] for m, r in enumerate(column)] for column in ratings]
                ),
            )
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
            words=self.standard.words,
            **top,
        )

    def directions(self) -> list[np.ndarray]:
        """Per model, SeP-IQA's weight of every token (its default word lists): from the
        store, else from the model's input embeddings, once."""
        if "_directions" not in self.__dict__:
            self._directions = [rater.direction(*SEP_IQA_WORDS) for rater in self.raters]
        return self._directions


def check_readout(standard: Standard, aggregation: Aggregation, specs: Sequence[RaterSpec]) -> None:
    """One line before any work when the readout cannot read these answers, or a backend
    cannot give what answer words need."""
    allowed = allowed_readouts(bool(standard.words), bool(standard.top_logits))
    if aggregation.readout not in allowed:
        answers = f"the {standard.kind} question's words" if standard.words else "digit answers"
        hint = "" if standard.words else " (word readouts: --preset qalign, qbench or sepiqa)"
        raise UsageError(
            f"readout (--readout) {aggregation.readout} cannot read {answers}: choose one of "
            f"{', '.join(allowed)}{hint}"
        )
    for spec in specs:
        if standard.words and not spec.runs_on.reads_words:
            readers = [backend.name for backend in registry.backends() if backend.reads_words]
            raise UsageError(
                f"{spec.model}: the {spec.runs_on.name} backend reads digit answers only; the "
                f"{standard.kind} question runs on the {', '.join(readers)} backends"
            )


def _load(item: ImageInput, number: int, legacy: bool = False) -> LoadedImage | ImageResult:
    """The decoded image (with its schema-5 digest too when `legacy`), or why it has none."""
    try:
        if isinstance(item, LoadedImage):
            loaded = item
        elif isinstance(item, Image.Image):
            loaded = from_pil(item, f"<image {number}>")
        elif isinstance(item, Encoded):
            loaded = load_encoded(item)
        else:
            loaded = load_image(item)
    except ImageError as error:
        if isinstance(item, Image.Image):
            name = f"<image {number}>"
        else:  # a path as given (a Path's .name would drop its folder), or a stable name
            name = item.name if isinstance(item, (Encoded, LoadedImage)) else str(item)
        return ImageResult(name=name, error=str(error))
    if legacy and loaded.legacy is None and isinstance(loaded.image, Image.Image):
        loaded = replace(loaded, legacy=legacy_pixel_hash(loaded.image))
    return loaded
