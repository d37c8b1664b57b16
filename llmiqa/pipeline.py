"""The one pipeline behind the CLI and the API.

    image ─► regions (SAM2 masks, Algorithm 1) ─► sub-images ─► rater ─► K-probabilities
          ─► store ─► aggregation ─► score

Models load lazily, once per process: a run whose masks and ratings are all stored loads
no model at all. Work is done in chunks of images; every batch of ratings is committed
to the store before the next starts, so an interrupted run loses at most one batch.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from llmiqa.checkpoints import checkpoint_identity, read_config
from llmiqa.devices import default_batch_size, resolve_device, resolve_dtype
from llmiqa.errors import ModelLoadError, one_line
from llmiqa.images import ImageError, LoadedImage, from_pil, load_image
from llmiqa.raters import RaterSpec
from llmiqa.regions import REGION_MODES, Region, crop_box, select_regions, sub_image
from llmiqa.results import Aggregation, ImageResult, RegionResult
from llmiqa.segment import MaskSettings, Segmenter, segmenter_identity
from llmiqa.standards import Standard
from llmiqa.store import RatingKey, Store

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_SEGMENTER = "facebook/sam2.1-hiera-small"
DEFAULT_MIN_AREA = 0.01  # t, as a fraction of the image's pixels

ImageInput = str | Path | Image.Image | LoadedImage


@dataclass(frozen=True)
class View:
    """One sub-image to rate: the whole image (region None) or a region's crop."""

    image: LoadedImage
    region: Region | None
    geometry: str

    def pixels(self, mode: str) -> Image.Image:
        return (
            self.image.image
            if self.region is None
            else sub_image(self.image.image, self.region, mode)
        )

    def cost(self) -> int:
        box = (
            (0, 0, *self.image.image.size)
            if self.region is None
            else crop_box(self.region, self.image.image.size)
        )
        return (box[2] - box[0]) * (box[3] - box[1])


def view_geometry(region: Region, mode: str, size: tuple[int, int]) -> str:
    """Names a sub-image; a bbox crop covering the whole image IS the whole image (rated once)."""
    box = crop_box(region, size)
    coords = ",".join(map(str, box))
    if mode == "bbox":
        return "whole" if box == (0, 0, *size) else f"bbox:{coords}"
    x0, y0, x1, y1 = box
    bits = np.packbits(region.mask[y0:y1, x0:x1]).tobytes()
    return f"mask:{coords}:{hashlib.blake2b(bits, digest_size=8).hexdigest()}"


class Scorer:
    """Scores images with one or more MLLMs (an ensemble), mix-grained by default."""

    def __init__(
        self,
        models: Sequence[str] = (DEFAULT_MODEL,),
        *,
        standard: Standard = Standard(),
        aggregation: Aggregation = Aggregation(),
        region_mode: str = "bbox",
        min_area: float = DEFAULT_MIN_AREA,
        segmenter: str = DEFAULT_SEGMENTER,
        mask_settings: MaskSettings = MaskSettings(),
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | None = None,
        store: Store | str | Path | None = None,
        rater_options: Sequence[tuple[str, object]] = (),
        progress: bool = False,
    ) -> None:
        if region_mode not in REGION_MODES:
            raise ValueError(f"unknown region mode {region_mode!r}; choose one of {REGION_MODES}")
        if not 0 < min_area <= 1:
            raise ValueError(f"min_area is a fraction of the image in (0, 1], got {min_area}")
        if not models:
            raise ValueError("at least one model is needed")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.models = tuple(models)
        self.specs = [RaterSpec(m, device, dtype, options=tuple(rater_options)) for m in models]
        self.standard = standard
        self.aggregation = aggregation
        self.region_mode = region_mode
        self.min_area = min_area
        self.segmenter_source = segmenter
        self.mask_settings = mask_settings
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size or default_batch_size(resolve_device(device))
        self.store = store if isinstance(store, Store) else Store(store or ":memory:")
        self.progress = progress
        self.prompt = f"{standard.system_prompt()}\n{standard.user_prompt()}"
        self._raters: dict[int, object] = {}
        self._segmenter = None
        self.stats: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)

    # ---- models, loaded on first need -------------------------------------------------

    def rater(self, index: int):
        if index not in self._raters:
            started = time.perf_counter()
            self._raters[index] = self.specs[index].load()
            self.seconds["load models"] += time.perf_counter() - started
        return self._raters[index]

    @cached_property
    def segmenter_identity(self) -> str:
        """Names stored masks without loading SAM2 (see segment.segmenter_identity)."""
        _, commit = read_config(self.segmenter_source)
        dtype = resolve_dtype(self.dtype, resolve_device(self.device))
        checkpoint = checkpoint_identity(self.segmenter_source, commit)
        return segmenter_identity(checkpoint, dtype, self.mask_settings)

    @property
    def segmenter(self):
        if self._segmenter is None:
            started = time.perf_counter()
            self._segmenter = Segmenter(
                self.segmenter_source, self.device, self.dtype, self.mask_settings
            )
            self.seconds["load models"] += time.perf_counter() - started
        return self._segmenter

    # ---- the pipeline -----------------------------------------------------------------

    def score(self, images: Sequence[ImageInput] | ImageInput) -> list[ImageResult]:
        """Score images (paths or PIL images); failures come back as results with `.error`."""
        single = isinstance(images, str | Path | Image.Image | LoadedImage)
        items = [images] if single else list(images)
        results = list(self.iter_score(items))
        return results

    def iter_score(
        self, images: Sequence[ImageInput], chunk: int | None = None
    ) -> Iterator[ImageResult]:
        """Yield results in input order, one chunk of images at a time (for long runs).

        The next chunk is decoded in a background thread while this one is rated.
        """
        chunk = chunk or max(4 * self.batch_size, 8)
        numbered = list(enumerate(images))
        parts = [numbered[i : i + chunk] for i in range(0, len(numbered), chunk)]
        bar = tqdm(total=len(images), unit="img", disable=not self.progress, dynamic_ncols=True)
        with ThreadPoolExecutor(max_workers=1) as pool:
            ahead = pool.submit(self._load_part, parts[0]) if parts else None
            for index in range(len(parts)):
                loaded = ahead.result()
                if index + 1 < len(parts):
                    ahead = pool.submit(self._load_part, parts[index + 1])
                yield from self._score_loaded(loaded)
                bar.update(len(loaded))
                bar.set_postfix(
                    rated=self.stats["rated"],
                    stored=self.stats["from store"],
                    failed=self.stats["failed"],
                )
        bar.close()

    def _load_part(self, part: list[tuple[int, ImageInput]]) -> list[LoadedImage | ImageResult]:
        return [self._load(item, number) for number, item in part]

    def _load(self, item: ImageInput, number: int) -> LoadedImage | ImageResult:
        started = time.perf_counter()
        try:
            if isinstance(item, LoadedImage):
                return item
            if isinstance(item, Image.Image):
                return from_pil(item, f"<image {number}>")
            return load_image(item)
        except ImageError as error:
            return ImageResult(name=str(item), error=str(error))
        finally:
            self.seconds["load images"] += time.perf_counter() - started

    def _score_loaded(self, loaded: list[LoadedImage | ImageResult]) -> list[ImageResult]:
        views: dict[int, list[View]] = {}
        errors: dict[int, str] = {}
        for i, item in enumerate(loaded):
            if isinstance(item, ImageResult):
                errors[i] = item.error
                continue
            try:
                views[i] = [View(item, None, "whole")] + [
                    View(item, r, view_geometry(r, self.region_mode, item.image.size))
                    for r in self.regions(item)
                ]
            except ModelLoadError:
                raise  # no image can be segmented: stop with the one clear message
            except Exception as error:  # one image's segmentation must not sink the batch
                errors[i] = f"{item.name}: segmentation failed ({one_line(error)})"
        probs = [self._rate_all(m, views, errors) for m in range(len(self.specs))]
        results = []
        started = time.perf_counter()
        for i, item in enumerate(loaded):
            if i in errors:
                self.stats["failed"] += 1
                results.append(ImageResult(name=getattr(item, "name", str(item)), error=errors[i]))
                continue
            results.append(self._assemble(item, views[i], probs))
        self.seconds["aggregate"] += time.perf_counter() - started
        return results

    def regions(self, image: LoadedImage) -> list[Region]:
        """Algorithm 1 on this image's SAM2 masks (from the store when already segmented)."""
        if self.region_mode == "whole-only":
            return []
        segmenter = self.segmenter_identity
        masks = self.store.masks(image.digest, segmenter)
        if masks is None:
            segment = self.segmenter.masks  # loads SAM2 on first use, timed as loading
            started = time.perf_counter()
            masks = segment(image.image)
            self.seconds["segment"] += time.perf_counter() - started
            shape = (image.image.height, image.image.width)
            self.store.put_masks(image.digest, segmenter, shape, masks)
            self.stats["segmented"] += 1
        else:
            self.stats["masks from store"] += 1
        return select_regions(masks, (image.image.height, image.image.width), self.min_area)

    def _key(self, model: int, view: View) -> RatingKey:
        return RatingKey(self.specs[model].identity, self.prompt, view.image.digest, view.geometry)

    def _rate_all(
        self, model: int, views: dict[int, list[View]], errors: dict[int, str]
    ) -> dict[RatingKey, np.ndarray]:
        """Probabilities of every view of every image, from the store or from the model.

        Identical views (same image twice, a box equal to the whole image) are rated once.
        """
        wanted: dict[RatingKey, View] = {}
        owners: defaultdict[RatingKey, list[int]] = defaultdict(list)
        for i, image_views in views.items():
            for view in image_views:
                key = self._key(model, view)
                wanted.setdefault(key, view)
                owners[key].append(i)
        found = self.store.ratings(wanted)
        self.stats["from store"] += len(found)
        missing = sorted((k for k in wanted if k not in found), key=lambda k: wanted[k].cost())
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            for key, outcome in self._rate_batch(model, [wanted[k] for k in batch], batch).items():
                if isinstance(outcome, str):
                    for i in owners[key]:
                        errors.setdefault(i, outcome)
                else:
                    found[key] = outcome
        return found

    def _rate_batch(
        self, model: int, batch: list[View], keys: list[RatingKey]
    ) -> dict[RatingKey, np.ndarray | str]:
        """Rate one batch and store it; a failing batch is retried one view at a time."""
        rater = self.rater(model)
        started = time.perf_counter()
        try:
            probs = rater.rate([v.pixels(self.region_mode) for v in batch], self.standard)
        except ModelLoadError:
            raise  # the model itself is unusable: no image could be rated
        except Exception as error:
            if len(batch) == 1:
                return {keys[0]: f"{batch[0].image.name}: rating failed ({one_line(error)})"}
            outcome = {}
            for view, key in zip(batch, keys, strict=True):
                outcome.update(self._rate_batch(model, [view], [key]))
            return outcome
        finally:
            self.seconds["rate"] += time.perf_counter() - started
        self.stats["model calls"] += 1
        self.stats["rated"] += len(batch)
        self.store.put_ratings(list(zip(keys, probs, strict=True)))
        return dict(zip(keys, probs, strict=True))

    def _assemble(
        self, image: LoadedImage, views: list[View], probs: list[dict[RatingKey, np.ndarray]]
    ) -> ImageResult:
        def stacked(view: View) -> np.ndarray:
            return np.stack([probs[m][self._key(m, view)] for m in range(len(self.specs))])

        pixels = image.image.width * image.image.height
        regions = tuple(
            RegionResult(
                v.region.kind, v.region.box, v.region.area, v.region.area / pixels, stacked(v)
            )
            for v in views[1:]
        )
        raw = ImageResult(
            name=image.name,
            models=self.models,
            digest=image.digest,
            size=image.image.size,
            global_probs=stacked(views[0]),
            regions=regions,
        )
        return raw.rescored(self.aggregation)
