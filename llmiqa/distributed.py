"""One `llmiqa eval` across many GPUs and nodes with Ray Data: workers compute, the driver
commits.

The store stays the single source of truth and the driver its only writer; Ray only fills
it, in four phases:

1. decode: every image is decoded on the cluster (Ray tasks); the driver learns its
   content digest and size, nothing more;
2. masks: images whose masks the store lacks go to a pool of SAM2 actors; masks stream
   back and the driver commits each as it arrives;
3. ratings: the driver plans every rating from stored masks, without pixels
   (`Scorer.views`), asks the store which are missing and sends only those, in the chunks
   and order the single-process Scorer rates them, to a pool of rater actors per model
   (any backend: a RaterSpec is plain data, each actor loads its rater once); ratings
   stream back and are committed as they arrive;
4. collect: the unchanged single-process Scorer runs over the filled store and calls no
   model, so results, metrics and report come from the same code as without Ray, and
   results.csv is byte-identical to a single-process run by construction.

Ray restarts what dies (actors, tasks, a node's share of the work) and retries their units;
a ledger counts how often each unit was started, so a unit that keeps killing its worker
(an image that crashes the decoder or the model) stops the run with one line naming its
images after `retries` restarts, instead of being retried forever; and the loads that
began and never ended, so that actors that keep dying while they load their model (out of
memory) stop it too.

Dedupe, resume, ablations and the report are unchanged: a run killed anywhere keeps what
the driver committed, and a rerun (with or without Ray) sends out only what is missing.
Workers read the images, and local checkpoint folders, at the driver's paths: a shared
file system. A worker that cannot read an image the driver can read stops the run with
one line saying so; a worker whose checkpoint files differ from the driver's is refused.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from llmiqa import __version__
from llmiqa.errors import UsageError, one_line
from llmiqa.images import ImageError, LoadedImage, load_image, pixel_hash
from llmiqa.raters.base import Rating, RatingFailure, RatingRequest
from llmiqa.regions import Box, Crop, select_regions
from llmiqa.store import RatingKey, pack_masks, unpack_masks

if TYPE_CHECKING:  # torch, which the decode tasks never import
    from llmiqa.caching import Pending
    from llmiqa.pipeline import Scorer

INSTALL = "pip install 'llmiqa[ray]'"
LEDGER = "llmiqa-ledger"  # the name of a run's Ledger actor: `ray list actors` shows it
DECODE_BATCH = 8  # images per decode task: enough to amortise scheduling, small to balance


@dataclass(frozen=True)
class RayOptions:
    """Where and how a run uses Ray. None of it changes a result, so none of it is part of
    the run's configuration (a run may be resumed with or without Ray)."""

    # None: $RAY_ADDRESS or a new Ray on this machine; "auto": the cluster this machine
    # belongs to; "HOST:6379": that cluster's head; "ray://HOST:10001": Ray Client
    address: str | None = None
    actors: int | None = None  # per pool; None: one per GPU share (CPU cluster: per node)
    gpus_per_rater: float | None = None  # None: 1 when the cluster has GPUs, else 0
    gpus_per_segmenter: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus: float = 1.0  # per actor and per decode task (fractions share a core)
    retries: int = 3  # restarts of a unit (or a pool's loads) that died, before the run stops

    def __post_init__(self) -> None:
        gpus = (self.gpus_per_rater, self.gpus_per_segmenter)
        if self.actors is not None and self.actors < 1:
            raise UsageError(f"--ray-actors must be at least 1, got {self.actors}")
        if any(g is not None and g < 0 for g in gpus) or not self.cpus > 0:
            raise UsageError("GPUs per actor must be >= 0 and CPUs per actor > 0")
        if self.retries < 0:
            raise UsageError(f"--ray-retries must be >= 0, got {self.retries}")


def require_ray():
    """The ray module, or one line saying how to install it."""
    try:
        import ray
        import ray.data  # the extra's other half
    except ImportError:
        raise UsageError(f"--ray needs Ray, an optional extra: {INSTALL}") from None
    return ray


# ---- what travels between the driver and the workers ------------------------------------


@dataclass(frozen=True)
class Decoded:
    """What the driver learns about one image in phase 1."""

    path: str
    digest: str = ""
    size: tuple[int, int] = (0, 0)  # (width, height)
    error: str = ""  # the ImageError a worker met, when it could not decode it
    node: str = ""  # the IP of the node that decoded it


@dataclass(frozen=True)
class Wanted:
    """One rating to obtain, as a worker needs it: which image, the key, how to cut it."""

    image: int  # index into the job's images
    key: RatingKey
    box: Box | None  # None: the whole image
    mask: bytes | None  # mask mode: packed bits of the mask inside `box`
    prompt: object  # standards.Prompt


@dataclass(frozen=True)
class Job:
    """The missing ratings of one chunk of images, for one model, in the order the
    single-process Scorer rates them (so its batches are the same)."""

    images: tuple[tuple[str, str], ...]  # (path, digest)
    wanted: tuple[Wanted, ...]
    unit: str = ""  # names it in the ledger


@dataclass(frozen=True)
class Done:
    """A worker's answer to one job, or the problem that stops the run."""

    outcomes: tuple[tuple[str, Rating | RatingFailure], ...] = ()  # (key digest, outcome)
    problem: str | None = None
    worker: tuple[str, int] = ("", 0)  # (node id, pid)
    busy: float = 0.0  # seconds on this job: decoding its images and the model
    load: float = 0.0  # seconds the actor took to load its model


@dataclass(frozen=True)
class Undecoded:
    """Stands in for the pixels of an image that only the workers decoded: the collect
    pass reads its size alone, since everything it rates or segments is then stored."""

    path: str
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise UsageError(
            f"{self.path}: its pixels were needed after the Ray phases (the store lacks "
            "something the workers computed); rerun the same command"
        )


# ---- the workers ------------------------------------------------------------------------


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


def _runtime(device: str | None, dtype: str | None, batch: int | None) -> dict:
    """On a worker with a rater actor's resources: what it resolves device, dtype and batch
    size to, and its llmiqa version (the store keys depend on all of them)."""
    from llmiqa.devices import default_batch_size, resolve_device, resolve_dtype

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


def _decode(batch: dict[str, np.ndarray], ledger, retries: int) -> dict[str, list]:
    """Phase 1 (a Ray task): decode each image, keep only its digest and size."""
    out: dict[str, list] = {k: [] for k in ("index", "digest", "width", "height", "error")}
    out.update(node=[], problem=[])
    node = _node_ip()
    paths = [str(p) for p in batch["path"]]
    problem = _give_up(ledger, f"decoding image {int(batch['index'][0])}", retries, paths)
    for index, path in zip(batch["index"], paths, strict=True):
        digest, width, height, error = "", 0, 0, ""
        if problem is None:
            try:
                image = load_image(path)
                digest, (width, height) = image.digest, image.image.size
            except ImageError as failure:
                error = str(failure)
        row = (int(index), digest, width, height, error, node, problem or "")
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
    """Phase 3 (an actor per GPU share, one pool per model): a job's ratings."""

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
        images = []
        for path, digest in job.images:
            image, problem = _image(path, digest)
            if problem:
                return Done(problem=problem, worker=self.worker)
            images.append(image.image)
        requests = [_request(w, images[w.image]) for w in job.wanted]
        try:
            outcomes = tuple((requests[i].key, o) for i, o in self.model.rate(requests))
        except Exception as error:  # a whole-model problem (ModelLoadError) or a bug
            return Done(problem=f"on Ray node {_node_ip()}: {one_line(error)}", worker=self.worker)
        busy = time.perf_counter() - started
        return Done(outcomes, worker=self.worker, busy=busy, load=self.load)


def _request(wanted: Wanted, image) -> RatingRequest:
    from llmiqa.caching import Pending

    crop = None
    if wanted.box is not None:
        mask = None
        if wanted.mask is not None:
            x0, y0, x1, y1 = wanted.box
            inside = np.unpackbits(np.frombuffer(wanted.mask, np.uint8))[: (y1 - y0) * (x1 - x0)]
            mask = np.zeros((image.height, image.width), dtype=bool)
            mask[y0:y1, x0:x1] = inside.reshape(y1 - y0, x1 - x0).astype(bool)
        crop = Crop(wanted.box, mask)
    return Pending(wanted.key, image, crop, wanted.prompt).request()


def _wanted(pending: Pending, index: int) -> Wanted:
    crop = pending.crop
    if crop is None:
        return Wanted(index, pending.key, None, None, pending.prompt)
    bits = None
    if crop.mask is not None:
        x0, y0, x1, y1 = crop.box
        bits = np.packbits(crop.mask[y0:y1, x0:x1]).tobytes()
    return Wanted(index, pending.key, crop.box, bits, pending.prompt)


# ---- what stands in for the models in the collect pass ---------------------------------


class ReplayedRatings:
    """The rater of the collect pass: every rating is stored by then, except the requests a
    worker could not rate, whose RatingFailure it replays (so the result says what a
    single-process run says). Anything else missing stops the run: a rerun resumes."""

    def __init__(self, identity: str, failures: dict[str, RatingFailure]) -> None:
        self.identity, self.failures = identity, failures

    def render(self, prompt) -> str:
        raise UsageError("the collect pass after Ray renders no prompt")

    def rate(self, requests: Sequence[RatingRequest]) -> Iterator[tuple[int, RatingFailure]]:
        for index, request in enumerate(requests):
            if request.key not in self.failures:
                raise UsageError(
                    f"rating {request.key} is missing after the Ray phases (the store lost "
                    "it, or another process changed it); rerun the same command"
                )
            yield index, self.failures[request.key]


class ReplayedMasks:
    """The segmenter of the collect pass: replays the error of an image SAM2 failed on."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = failures

    def masks(self, image) -> list[np.ndarray]:
        digest = pixel_hash(image)
        if digest not in self.failures:
            raise UsageError(
                f"masks of image {digest} are missing after the Ray phases; rerun the same command"
            )
        raise RuntimeError(self.failures[digest])


# ---- the driver -------------------------------------------------------------------------


@dataclass
class Pool:
    """One actor pool as used: for the run summary (workers > actors: some restarted)."""

    actors: int
    gpus_per_actor: float
    units: int = 0
    loads: dict[tuple[str, int], float] = field(default_factory=dict)  # (node, pid) answering
    busy: float = 0.0  # seconds the actors spent on units (decoding and the model)

    def answered(self, worker: tuple[str, int], load: float, busy: float) -> None:
        self.loads[worker] = load
        self.busy += busy
        self.units += 1


class RayCluster:
    """A connection to Ray for one run: `with RayCluster(options) as cluster:`, then
    `overrides`, build the Scorer with them, then `fill(scorer, paths)`."""

    def __init__(self, options: RayOptions = RayOptions()) -> None:
        self.options = options
        self.ray = require_ray()
        self.started = False
        self.user_device: str | None = None
        self.pools: dict[str, Pool] = {}
        self.seconds: dict[str, float] = defaultdict(float)
        self.filled = (0, 0)  # (rated, segmented) by the workers in `fill`
        self.show = True  # progress bars
        self.log_level = logging.NOTSET  # Ray Data's, restored on exit
        self.ledger = None  # the Ledger actor of this run

    # -- connection --

    def __enter__(self) -> RayCluster:
        ray = self.ray
        debug = bool(os.environ.get("LLMIQA_DEBUG"))
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.options.address,
                    logging_level=logging.DEBUG if debug else logging.WARNING,
                    log_to_driver=debug,  # workers' own output stays in Ray's log files
                    include_dashboard=False,  # when Ray starts here; a cluster keeps its own
                )
            except Exception as error:
                where = self.options.address or os.environ.get("RAY_ADDRESS") or "local"
                raise UsageError(
                    f"--ray {where}: cannot start or reach Ray ({one_line(error)})"
                ) from None
            self.started = True
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver draws its own bars
        context.max_errored_blocks = 0
        # an actor whose constructor raises is replaced `retries` times in a row before Ray
        # gives up; one killed is restarted without limit, its load and unit counted in the
        # ledger
        context.max_consecutive_actor_init_deaths = self.options.retries
        # Ray Data logs every execution, and a traceback when it gives up: we say it in one line
        logger = logging.getLogger("ray.data")
        self.log_level = logger.level
        logger.setLevel(logging.DEBUG if debug else logging.CRITICAL)
        return self

    def __exit__(self, *_) -> None:
        logging.getLogger("ray.data").setLevel(self.log_level)
        if self.ledger is not None:
            with suppress(Exception):  # the cluster may be gone: its actors went with it
                self.ray.kill(self.ledger)
        if self.started:
            self.ray.shutdown()

    def resources(self) -> tuple[float, int]:
        """(GPUs, alive nodes) of the cluster now."""
        nodes = sum(1 for node in self.ray.nodes() if node.get("Alive"))
        return float(self.ray.cluster_resources().get("GPU", 0)), max(nodes, 1)

    def gpus(self, role: str) -> float:
        chosen = getattr(self.options, f"gpus_per_{role}")
        return chosen if chosen is not None else (1.0 if self.resources()[0] else 0.0)

    def pool_size(self, gpus_per_actor: float, units: int) -> int:
        if self.options.actors is not None:
            size = self.options.actors
        else:
            total, nodes = self.resources()
            size = max(1, int(total // gpus_per_actor)) if gpus_per_actor else nodes
        return max(1, min(size, units))

    def overrides(self, scoring: dict) -> dict:
        """The options the driver's own Scorer needs to name ratings and masks exactly as
        the workers will: the dtype and batch size a rater actor resolves (asked of one),
        and the CPU for itself, since it runs no model."""
        self.user_device = scoring["device"]
        gpus = self.gpus("rater")
        if gpus > self.resources()[0]:
            print(
                f"llmiqa: waiting for a Ray node with {gpus:g} GPU(s) (the cluster has "
                f"{self.resources()[0]:g}; an autoscaler may add one)",
                file=sys.stderr,
            )
        probe = self.ray.remote(_runtime).options(num_cpus=self.options.cpus, num_gpus=gpus)
        started = time.perf_counter()
        try:
            found = self.ray.get(
                probe.remote(scoring["device"], scoring["dtype"], scoring["batch_size"])
            )
            self.seconds["probe"] += time.perf_counter() - started
        except self.ray.exceptions.RayError as error:
            raise UsageError(f"Ray could not run llmiqa on a worker ({_reason(error)})") from None
        if "problem" in found:
            raise UsageError(found["problem"])
        if found["version"] != __version__:
            raise UsageError(
                f"the Ray workers run llmiqa {found['version']}, this driver {__version__}: "
                "install the same version on every node"
            )
        return {"device": "cpu", "dtype": found["dtype"], "batch_size": found["batch_size"]}

    # -- the phases --

    def fill(self, scorer: Scorer, paths: Sequence[str | Path]) -> list:
        """Phases 1-3 into `scorer.store`, then set the scorer up for the collect pass.

        Returns what to pass to `scorer.iter_score` instead of `paths`: the same images, as
        LoadedImages whose pixels stay undecoded where nothing needs them.
        """
        paths = [str(p) for p in paths]
        self.show = scorer.progress
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = self.ray.get_runtime_context().get_node_id()
        beside = NodeAffinitySchedulingStrategy(here, soft=False)  # lost only with the driver
        name = f"{LEDGER}-{os.getpid()}-{time.time_ns()}"
        ledger = self.ray.remote(Ledger).options(name=name, num_cpus=0, scheduling_strategy=beside)
        self.ledger = ledger.remote()
        decoded = self._decode(paths)
        masks_failed = self._segment(scorer, decoded) if scorer.segmenter else {}
        rating_failed, failed_images, unplanned = self._rate(scorer, decoded, masks_failed)
        for rater in scorer.raters:
            rater.loaded = ReplayedRatings(rater.identity, rating_failed)
        if scorer.segmenter is not None:
            scorer.segmenter.loaded = ReplayedMasks(masks_failed)
        self.filled = (scorer.usage.rated, scorer.usage.segmented)
        replayed = failed_images | set(masks_failed) | unplanned
        inputs = []
        for item in decoded:
            if item.error or item.digest in replayed:
                inputs.append(item.path)  # decoded again where pixels may be needed
            else:
                pixels = Undecoded(item.path, *item.size)
                inputs.append(LoadedImage(item.path, pixels, item.digest))
        return inputs

    def account(self, usage) -> None:
        """After the collect pass, which counted every stored rating and mask as served:
        count what the workers made this time once, as made (as a single process does)."""
        rated, segmented = self.filled
        usage.from_store -= rated
        usage.masks_from_store -= segmented

    def _decode(self, paths: list[str]) -> list[Decoded]:
        """Phase 1: digests and sizes from the workers; an image only they cannot read
        stops the run (they need the driver's paths)."""
        ray = self.ray
        items = [{"index": i, "path": p} for i, p in enumerate(paths)]
        blocks = max(1, -(-len(items) // DECODE_BATCH))
        data = ray.data.from_items(items, override_num_blocks=blocks)
        data = data.map_batches(
            _decode, batch_size=DECODE_BATCH, num_cpus=self.options.cpus,
            fn_kwargs={"ledger": self.ledger, "retries": self.options.retries},
        )  # fmt: skip
        found: list[Decoded | None] = [None] * len(paths)
        with self._phase("decode", len(paths), "img") as bar:
            for row in self._stream(data, "decoding"):
                if row["problem"]:
                    raise UsageError(row["problem"])
                index = int(row["index"])
                size = (int(row["width"]), int(row["height"]))
                found[index] = Decoded(paths[index], row["digest"], size, row["error"], row["node"])
                bar.update(1)
        for item in found:
            if item.error:
                _check_unreadable_here(item)
        return found

    def _segment(self, scorer: Scorer, decoded: list[Decoded]) -> dict[str, str]:
        """Phase 2: masks of every image the store lacks, committed as they arrive.
        Returns the per-image SAM2 errors by digest."""
        identity = scorer.segmenter.identity
        digests = {d.digest: d.path for d in decoded if not d.error}
        stored = scorer.store.segmented(digests, identity)
        todo = [{"path": p, "digest": d} for d, p in digests.items() if d not in stored]
        failures: dict[str, str] = {}
        if not todo:
            return failures
        gpus = self.gpus("segmenter")
        pool = self.pools["segment"] = Pool(self.pool_size(gpus, len(todo)), gpus)
        spec = replace(scorer.segmenter_spec, device=self.user_device)
        data = self.ray.data.from_items(todo, override_num_blocks=len(todo))
        data = self._actors(data, SegmentWorker, "segment", {"spec": spec, "identity": identity})
        with self._phase("segment", len(todo), "img") as bar:
            for row in self._stream(data, "segmentation"):
                pool.answered((row["node"], int(row["pid"])), row["load"], row["busy"])
                if row["problem"]:
                    raise UsageError(row["problem"])
                digest = row["digest"]
                if row["error"]:
                    failures[digest] = row["error"]
                elif digest not in stored:
                    height, width = (int(n) for n in row["shape"])
                    masks = unpack_masks(row["masks"], int(row["count"]), height, width)
                    scorer.store.put_masks(digest, identity, (height, width), masks)
                    scorer.usage.segmented += 1
                    stored.add(digest)
                bar.update(1)
        return failures

    def _rate(
        self, scorer: Scorer, decoded: list[Decoded], masks_failed: dict[str, str]
    ) -> tuple[dict[str, RatingFailure], set[str], set[str]]:
        """Phase 3: every missing rating, model by model. Returns the requests the workers
        could not rate (by key digest), the images they belong to, and the images whose
        regions could not be planned (the collect pass reports both as the Scorer does)."""
        started = time.perf_counter()
        jobs, unplanned = self._plan(scorer, decoded, masks_failed)
        self.seconds["plan"] += time.perf_counter() - started
        failures: dict[str, RatingFailure] = {}
        failed_images: set[str] = set()
        gpus = self.gpus("rater")
        for spec, rater, model_jobs in zip(scorer.specs, scorer.raters, jobs, strict=True):
            if not model_jobs:
                continue
            name = f"rate {spec.model}"
            pool = self.pools[name] = Pool(self.pool_size(gpus, len(model_jobs)), gpus)
            worker_spec = replace(spec, device=self.user_device)
            kwargs = {"spec": worker_spec, "identity": rater.identity}
            items = [{"job": pickle.dumps(job)} for job in model_jobs]
            data = self.ray.data.from_items(items, override_num_blocks=len(items))
            data = self._actors(data, RateWorker, name, kwargs)
            keys = {w.key.key: w.key for job in model_jobs for w in job.wanted}
            committed: set[str] = set()
            total = sum(len(job.wanted) for job in model_jobs)
            with self._phase(name, total, "view") as bar:
                for row in self._stream(data, name):
                    done: Done = pickle.loads(row["done"])
                    pool.answered(done.worker, done.load, done.busy)
                    if done.problem:
                        raise UsageError(done.problem)
                    for digest, outcome in done.outcomes:
                        if isinstance(outcome, RatingFailure):
                            failures[digest] = outcome
                            failed_images.add(keys[digest].image)
                        elif digest not in committed:  # a retried job may answer twice
                            scorer.store.put_rating(keys[digest], outcome)
                            scorer.usage.rated += 1
                            committed.add(digest)
                    bar.update(len(done.outcomes))
                    bar.set_postfix(committed=len(committed), failed=len(failures))
        return failures, failed_images, unplanned

    def _plan(
        self, scorer: Scorer, decoded: list[Decoded], masks_failed: dict[str, str]
    ) -> tuple[list[list[Job]], set[str]]:
        """Per model, the jobs: for each chunk of images the Scorer would score together,
        its ratings that are neither stored nor in an earlier job, smallest first."""
        from llmiqa.caching import Pending

        jobs: list[list[Job]] = [[] for _ in scorer.specs]
        unplanned: set[str] = set()
        sent: set[str] = set()
        size = scorer.chunk_size
        for start in range(0, len(decoded), size):
            per_model: list[list[Pending]] = [[] for _ in scorer.specs]
            for item in decoded[start : start + size]:
                if item.error or item.digest in masks_failed:
                    continue
                image = Undecoded(item.path, *item.size)
                try:
                    regions = _regions(scorer, item)
                except UsageError:
                    raise
                except Exception:  # e.g. stored masks of another shape: reported later
                    unplanned.add(item.digest)
                    continue
                for m, views in enumerate(scorer.views(item.digest, item.size, regions)):
                    per_model[m] += [Pending(k, image, crop, p) for k, crop, p in views]
            for m, pending in enumerate(per_model):
                wanted = {p.key: p for p in pending}  # as CachingRater.rate: each key once
                found, refused = scorer.store.ratings(wanted)
                scorer.usage.refused += len(refused)
                for message in refused:
                    scorer.usage.note(message)
                missing = [p for k, p in wanted.items() if k not in found and k.key not in sent]
                missing.sort(key=Pending.cost)
                if missing:
                    unit = f"rating job {len(jobs[m]) + 1} of {scorer.specs[m].model}"
                    jobs[m].append(_job(missing, unit))
                    sent.update(p.key.key for p in missing)
        return jobs, unplanned

    # -- Ray Data plumbing --

    def _actors(self, data, worker: type, name: str, kwargs: dict):
        """The actor pool `name` over `data`. Ray Data's defaults restart an actor that dies
        (a crash, a lost node) and retry its unit, without limit: the ledger sets the limit."""
        pool = self.pools[name]
        kwargs = {**kwargs, "ledger": self.ledger, "retries": self.options.retries,
                  "pool": name, "actors": pool.actors}  # fmt: skip
        return data.map_batches(
            worker,
            batch_size=1,
            # one job at a time: jobs are big, and none waits behind a busy actor
            compute=self.ray.data.ActorPoolStrategy(
                size=pool.actors, max_tasks_in_flight_per_actor=1
            ),
            num_cpus=self.options.cpus,
            num_gpus=pool.gpus_per_actor or None,
            fn_constructor_kwargs=kwargs,
        )

    def _stream(self, data, stage: str) -> Iterator[dict]:
        """Rows as the workers finish them; a failure Ray gives up on (an actor that keeps
        dying while it loads its model, say) as one line."""
        rows = iter(data.iter_rows())
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except Exception as error:
                raise UsageError(
                    f"Ray gave up on {stage} ({_reason(error)}); everything finished before "
                    "is in the store: rerun the same command to go on"
                ) from None
            yield row

    @contextmanager
    def _phase(self, name: str, total: int, unit: str) -> Iterator[tqdm]:
        show = self.show
        bar = tqdm(total=total, unit=unit, desc=f"ray {name}", dynamic_ncols=True, disable=not show)
        started = time.perf_counter()
        try:
            yield bar
        finally:
            bar.close()
            self.seconds[name] += time.perf_counter() - started

    def summary(self) -> dict:
        """For metrics.json: the cluster, each pool as used, and the time per phase."""
        gpus, nodes = self.resources()
        pools = {
            name: {"actors": p.actors, "gpus_per_actor": p.gpus_per_actor, "units": p.units,
                   "workers": len(p.loads), "nodes": len({node for node, _ in p.loads}),
                   "load_seconds": sum(p.loads.values()), "busy_seconds": p.busy}
            for name, p in self.pools.items()
        }  # fmt: skip
        return {"nodes": nodes, "gpus": gpus, "pools": pools, "seconds": dict(self.seconds)}


def _regions(scorer: Scorer, item: Decoded) -> list:
    """Algorithm 1 on the stored masks, as Scorer.regions computes it (no pixels)."""
    if scorer.segmenter is None:
        return []
    masks = scorer.store.masks(item.digest, scorer.segmenter.identity)
    if masks is None:
        raise UsageError(f"{item.path}: masks missing after the Ray phase; rerun the same command")
    return select_regions(masks, (item.size[1], item.size[0]), scorer.region_settings)


def _job(missing: list[Pending], unit: str) -> Job:
    images: dict[str, int] = {}
    order = []
    for pending in missing:
        image = pending.image  # an Undecoded: path and size
        if image.path not in images:
            images[image.path] = len(order)
            order.append((image.path, pending.key.image))
    return Job(tuple(order), tuple(_wanted(p, images[p.image.path]) for p in missing), unit)


def _check_unreadable_here(item: Decoded) -> None:
    """A worker could not decode this image: fine if the driver cannot either (a broken
    file, reported as a failed image), a setup error if it can (no shared file system)."""
    try:
        load_image(item.path)
    except ImageError:
        return
    raise UsageError(
        f"{item.error} on Ray node {item.node}, but this machine reads it: --ray needs "
        "every image at the same path on every node (a shared file system)"
    )


def _reason(error: BaseException) -> str:
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {one_line(cause)}"
    return f"{type(error).__name__}: {one_line(error)}"
