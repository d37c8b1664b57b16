"""What runs on the Ray cluster: decode tasks, the SAM2 and rater actors, and the ledger
that bounds Ray's retries. Each worker answers with plain data; the driver commits."""

from __future__ import annotations

import os
import pickle
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from llmiqa import __version__
from llmiqa.distributed.plan import Done, Job
from llmiqa.errors import UsageError, one_line
from llmiqa.inputs.images import ImageError, LoadedImage, legacy_pixel_hash, load_image
from llmiqa.method.standards import SEP_IQA_WORDS
from llmiqa.scoring.store import pack_masks


class Ledger:
    """How many times each unit was started, and which actors began loading their model
    and never finished (a Ray actor beside the driver). Ray restarts a dead worker and
    retries its unit without limit, which a unit that kills every worker it meets, or a
    model too big for a node's memory, would turn into an endless loop."""

    def __init__(self) -> None:
        self.started: dict[str, int] = defaultdict(int)
        self.loading: dict[str, set[tuple[str, int]]] = defaultdict(set)  # by pool

    def start(self, unit: str) -> int:
        self.started[unit] += 1
        return self.started[unit]

    def load(self, pool: str, worker: tuple[str, int]) -> int:
        """Count a load beginning; how many of this pool's loads began and never ended."""
        self.loading[pool].add(worker)
        return len(self.loading[pool])

    def loaded(self, pool: str, worker: tuple[str, int]) -> None:
        self.loading[pool].discard(worker)

    def counts(self) -> dict:
        return {
            "units": dict(self.started),
            "loading": {k: sorted(v) for k, v in self.loading.items()},
        }


def _give_up(ledger, unit: str, retries: int, images: Sequence[str]) -> str | None:
    """Count a start of `unit`; the line that stops the run once it has been restarted
    more than `retries` times."""
    import ray

    starts = ray.get(ledger.start.remote(unit))
    if starts <= retries + 1:
        return None
    shown = ", ".join(images[:3]) + (f" and {len(images) - 3} more" if len(images) > 3 else "")
    deaths = f"{starts - 1} time{'s' if starts > 2 else ''}"
    return (
        f"Ray gave up on {unit}: its worker died {deaths} on it (images {shown}); "
        "everything finished before is in the store: rerun the same command to go on"
    )


def _where() -> tuple[str, int]:
    import ray

    return ray.get_runtime_context().get_node_id(), os.getpid()


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


def runtime_on_worker(device: str | None, dtype: str | None, batch: int | None) -> dict:
    """On a worker with a rater actor's resources: what it resolves device, dtype and batch
    size to, and its llmiqa version (the store keys depend on all of them)."""
    from llmiqa.loading.devices import default_batch_size, resolve_device, resolve_dtype

    try:
        resolved = resolve_device(device)
        name = str(resolve_dtype(dtype, resolved)).removeprefix("torch.")
    except UsageError as error:
        return {"problem": f"on Ray node {_node_ip()}: {error}"}
    return {
        "version": __version__,
        "dtype": name,
        "batch_size": batch or default_batch_size(resolved),
    }


def decode(batch: dict[str, np.ndarray], ledger, retries: int, legacy: bool) -> dict[str, list]:
    """Phase 1 (a Ray task): decode each image, keep only its digest and size (and, for a
    store that still holds schema 5's digests, its old digest: `legacy`)."""
    out: dict[str, list] = {k: [] for k in ("index", "digest", "width", "height", "error")}
    out.update(node=[], problem=[], legacy=[])
    node = _node_ip()
    paths = [str(p) for p in batch["path"]]
    problem = _give_up(ledger, f"decoding image {int(batch['index'][0])}", retries, paths)
    for index, path in zip(batch["index"], paths, strict=True):
        digest, width, height, error, old = "", 0, 0, "", ""
        if problem is None:
            try:
                image = load_image(path)
                digest, (width, height) = image.digest, image.image.size
                old = legacy_pixel_hash(image.image) if legacy else ""
            except ImageError as failure:
                error = str(failure)
        row = (int(index), digest, width, height, error, node, problem or "", old)
        for name, value in zip(out, row, strict=True):
            out[name].append(value)
    return out


def _image(path: str, digest: str) -> tuple[LoadedImage | None, str | None]:
    """Decode an image on a worker and check it is the one the driver planned for."""
    try:
        image = load_image(path)
    except ImageError as error:
        return None, f"{error} (on Ray node {_node_ip()}, after it was decoded once)"
    if image.digest != digest:
        return None, (
            f"{path}: its pixels on Ray node {_node_ip()} differ from those decoded before "
            "(the file changed during the run, or nodes hold different files at that path)"
        )
    return image, None


class _Loaded:
    """What a pool's actors share: load once, after checking the model is the driver's."""

    def __init__(self, spec, identity: str, ledger, retries: int, pool: str, actors: int) -> None:
        import ray

        self.ledger, self.retries = ledger, retries
        self.worker = _where()
        self.problem: str | None = None
        self.model = None
        started = time.perf_counter()
        # loads begun and never ended, beyond one per actor: actors that died loading
        dead = ray.get(ledger.load.remote(pool, self.worker)) - actors
        try:
            if dead > retries:
                self.problem = (
                    f"Ray gave up on loading {spec.model}: its actors keep dying while they "
                    "load it (out of memory?); everything finished before is in the store: "
                    "rerun the same command to go on"
                )
            elif spec.identity != identity:
                self.problem = (
                    f"{spec.model} on Ray node {_node_ip()} is {spec.identity}, not "
                    f"{identity} as on the driver (other files at that path, or another "
                    "llmiqa version)"
                )
            else:
                self.model = spec.load()
        except Exception as error:  # one line to the driver, which stops the run
            self.problem = f"{spec.model} on Ray node {_node_ip()}: {one_line(error)}"
        ledger.loaded.remote(pool, self.worker)
        self.load = time.perf_counter() - started


class SegmentWorker(_Loaded):
    """Phase 2 (an actor per GPU share): SAM2 masks of each image, packed."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in ("digest", "shape", "masks", "count", "error")}
        out.update(problem=[], node=[], pid=[], busy=[], load=[])
        for path, digest in zip(batch["path"], batch["digest"], strict=True):
            problem, error, blob, count, shape = self.problem, "", b"", 0, (0, 0)
            image = None
            started = time.perf_counter()
            if problem is None:
                unit = f"segmenting {path}"
                problem = _give_up(self.ledger, unit, self.retries, [str(path)])
            if problem is None:
                image, problem = _image(str(path), str(digest))
            if image is not None:
                try:
                    masks = self.model.masks(image.image)
                    blob, count = pack_masks(masks), len(masks)
                    shape = (image.image.height, image.image.width)
                except UsageError as stop:  # no image can be segmented: the run stops
                    problem = f"on Ray node {_node_ip()}: {one_line(stop)}"
                except Exception as failure:  # this image only, as in Scorer
                    error = one_line(failure)
            busy = time.perf_counter() - started
            row = (str(digest), list(shape), blob, count, error, problem or "", *self.worker,
                   busy, self.load)  # fmt: skip
            for name, value in zip(out, row, strict=True):
                out[name].append(value)
        return out


class RateWorker(_Loaded):
    """Phase 3 (an actor per GPU share, one pool per model): a job's ratings; with its
    first job that keeps top raw logits, SeP-IQA's token weights (no image needed)."""

    directed = False

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        return {"done": [pickle.dumps(self.rate(pickle.loads(blob))) for blob in batch["job"]]}

    def rate(self, job: Job) -> Done:
        if self.problem:
            return Done(problem=self.problem, worker=self.worker)
        started = time.perf_counter()
        paths = [path for path, _ in job.images]
        problem = _give_up(self.ledger, job.unit, self.retries, paths)
        if problem:
            return Done(problem=problem, worker=self.worker)
        images = {}
        for path, digest in job.images:
            image, problem = _image(path, digest)
            if problem:
                return Done(problem=problem, worker=self.worker)
            images[digest] = image.image
        requests = [replace(r, source=images[r.image]) for r in job.requests]
        direction = None
        try:
            outcomes = tuple((requests[i].key, o) for i, o in self.model.rate(requests))
            if not self.directed and any(r.top for r in requests):
                direction, self.directed = self.model.token_cosines(*SEP_IQA_WORDS), True
        except Exception as error:  # a whole-model problem (ModelLoadError) or a bug
            return Done(problem=f"on Ray node {_node_ip()}: {one_line(error)}", worker=self.worker)
        busy = time.perf_counter() - started
        return Done(outcomes, worker=self.worker, busy=busy, load=self.load, direction=direction)
