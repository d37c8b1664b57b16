"""The connection to Ray for one run, its actor pools, and the driver's side of each phase."""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from llmiqa import __version__
from llmiqa.distributed.plan import Decoded, Done, plan, undecoded
from llmiqa.distributed.workers import (
    Ledger,
    RateWorker,
    SegmentWorker,
    decode,
    runtime_on_worker,
)
from llmiqa.errors import UsageError, one_line
from llmiqa.inputs.images import ImageError, load_image
from llmiqa.method.standards import SEP_IQA_WORDS
from llmiqa.scoring.store import unpack_masks

if TYPE_CHECKING:
    from llmiqa.scoring.caching import CachingSegmenter
    from llmiqa.scoring.pipeline import Seam

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


@contextmanager
def connected(options: RayOptions) -> Iterator:
    """The ray module, connected as `options.address` says (an initialised Ray is joined
    as it is and left up); one line when Ray cannot be had."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        debug = bool(os.environ.get("LLMIQA_DEBUG"))
        try:
            ray.init(address=options.address, include_dashboard=False, log_to_driver=debug,
                     logging_level=logging.DEBUG if debug else logging.WARNING)  # fmt: skip
        except Exception as error:
            where = options.address or os.environ.get("RAY_ADDRESS") or "local"
            raise UsageError(
                f"--ray {where}: cannot start or reach Ray ({one_line(error)})"
            ) from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


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


@dataclass(frozen=True)
class Placement:
    """What the probe of a rater actor decided (`RayCluster.place`): where the workers run
    models, and the options the driver's own Scorer needs to name ratings and masks exactly
    as they will."""

    device: str | None  # the run's --device, for the workers' specs
    dtype: str  # what a rater actor resolves the run's dtype to
    batch_size: int  # and its batch size

    def driver(self) -> dict:
        """Scoring options for the driver's Scorer: the workers' dtype and batch size, on
        the CPU since it runs no model."""
        return {"device": "cpu", "dtype": self.dtype, "batch_size": self.batch_size}


class RayCluster:
    """A connection to Ray for one run, in phases that pass values:
    `with RayCluster(options) as cluster:`, `placement = cluster.place(scoring)`, build the
    Scorer with `placement.driver()`, then `cluster.fill(placement, scorer.seam(), paths)`."""

    def __init__(self, options: RayOptions = RayOptions(), progress: bool = True) -> None:
        self.options = options
        self.progress = progress  # the phases' bars
        self.ray = require_ray()
        self.undo = ExitStack()  # what `__enter__` changed, undone by `__exit__`
        self.pools: dict[str, Pool] = {}  # as used, for `summary`
        self.seconds: dict[str, float] = defaultdict(float)

    # -- connection --

    def __enter__(self) -> RayCluster:
        ray = self.undo.enter_context(connected(self.options))
        debug = bool(os.environ.get("LLMIQA_DEBUG"))
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver draws its own bars
        context.max_errored_blocks = 0
        # an actor whose constructor raises is replaced `retries` times in a row before Ray
        # gives up; one killed is restarted without limit, its load and unit counted in the
        # ledger
        context.max_consecutive_actor_init_deaths = self.options.retries
        # Ray Data logs every execution, and a traceback when it gives up: we say it in one line
        logger = logging.getLogger("ray.data")
        self.undo.callback(logger.setLevel, logger.level)
        logger.setLevel(logging.DEBUG if debug else logging.CRITICAL)
        return self

    def __exit__(self, *_) -> None:
        self.undo.close()

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

    def place(self, scoring: dict) -> Placement:
        """Ask one worker with a rater actor's resources what it resolves the run's device,
        dtype and batch size to (the store keys depend on them), and check its llmiqa."""
        gpus = self.gpus("rater")
        if gpus > self.resources()[0]:
            logging.getLogger("llmiqa").warning(
                "waiting for a Ray node with %g GPU(s) (the cluster has %g; an autoscaler "
                "may add one)",
                gpus,
                self.resources()[0],
            )
        probe = self.ray.remote(runtime_on_worker).options(
            num_cpus=self.options.cpus, num_gpus=gpus
        )
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
        return Placement(scoring["device"], found["dtype"], found["batch_size"])

    # -- the phases --

    def fill(self, placement: Placement, seam: Seam, paths: Sequence[str | Path]) -> list:
        """Phases 1-3 into the store, committed through the seam's caches.

        Returns what to pass to the collect pass (`scorer.offline().iter_score`) instead of
        `paths`: the same images, pixels left undecoded where nothing needs them."""
        paths = [str(p) for p in paths]
        with run_ledger(self.ray) as (ledger, _):
            decoded = self._decode(paths, ledger, seam)
            if seam.segmenter is not None:
                self._segment(placement, seam.segmenter, decoded, ledger)
            unplanned = self._rate(placement, seam, decoded, ledger)
        inputs = []
        for item in decoded:
            if item.error or item.digest in unplanned:
                inputs.append(item.path)  # decoded again where pixels may be needed
            else:
                inputs.append(undecoded(item))
        return inputs

    def _decode(self, paths: list[str], ledger, seam: Seam) -> list[Decoded]:
        """Phase 1: digests and sizes from the workers; an image only they cannot read
        stops the run (they need the driver's paths). Old digests they computed for a
        store of schema 5's digests become aliases there."""
        ray = self.ray
        items = [{"index": i, "path": p} for i, p in enumerate(paths)]
        blocks = max(1, -(-len(items) // DECODE_BATCH))
        data = ray.data.from_items(items, override_num_blocks=blocks)
        data = data.map_batches(
            decode, batch_size=DECODE_BATCH, num_cpus=self.options.cpus,
            fn_kwargs={"ledger": ledger, "retries": self.options.retries,
                       "legacy": seam.legacy},
        )  # fmt: skip
        found: list[Decoded | None] = [None] * len(paths)
        aliases = {}
        with self._phase("decode", len(paths), "img") as bar:
            for row in self._stream(data, "decoding"):
                if row["problem"]:
                    raise UsageError(row["problem"])
                index = int(row["index"])
                size = (int(row["width"]), int(row["height"]))
                found[index] = Decoded(paths[index], row["digest"], size, row["error"], row["node"])
                if row["legacy"]:
                    aliases[row["digest"]] = row["legacy"]
                bar.update(1)
        if aliases:
            seam.alias(aliases)
        for item in found:
            if item.error:
                check_unreadable_here(item)
        return found

    def _segment(
        self, placement: Placement, segmenter: CachingSegmenter, decoded: list[Decoded], ledger
    ) -> None:
        """Phase 2: masks of every image the store lacks, committed as they arrive (an
        image SAM2 fails on is committed as its error, for the collect pass)."""
        paths = {d.digest: d.path for d in decoded if not d.error}
        todo = [{"path": paths[d], "digest": d} for d in segmenter.missing(list(paths))]
        if not todo:
            return
        gpus = self.gpus("segmenter")
        pool = self.pools["segment"] = Pool(self.pool_size(gpus, len(todo)), gpus)
        spec = replace(segmenter.spec, device=placement.device)
        data = self.ray.data.from_items(todo, override_num_blocks=len(todo))
        kwargs = {"spec": spec, "identity": segmenter.identity}
        data = self._actors(data, SegmentWorker, "segment", kwargs, ledger)
        with self._phase("segment", len(todo), "img") as bar:
            for row in self._stream(data, "segmentation"):
                pool.answered((row["node"], int(row["pid"])), row["load"], row["busy"])
                if row["problem"]:
                    raise UsageError(row["problem"])
                height, width = (int(n) for n in row["shape"])
                masks = row["error"] or unpack_masks(row["masks"], int(row["count"]), height,
                                                     width)  # fmt: skip
                segmenter.commit(row["digest"], (height, width), masks)
                bar.update(1)

    def _rate(self, placement: Placement, seam: Seam, decoded: list[Decoded], ledger) -> set[str]:
        """Phase 3: every missing rating, model by model, committed as it arrives (a request
        a worker could not rate is committed as its failure). Returns the images whose
        regions could not be planned (the collect pass reports them as the Scorer does)."""
        started = time.perf_counter()
        jobs, unplanned = plan(seam, decoded)
        self.seconds["plan"] += time.perf_counter() - started
        gpus = self.gpus("rater")
        for rater, model_jobs in zip(seam.raters, jobs, strict=True):
            if not model_jobs:
                continue
            name = f"rate {rater.spec.model}"
            pool = self.pools[name] = Pool(self.pool_size(gpus, len(model_jobs)), gpus)
            worker_spec = replace(rater.spec, device=placement.device)
            kwargs = {"spec": worker_spec, "identity": rater.identity}
            items = [{"job": pickle.dumps(job)} for job in model_jobs]
            data = self.ray.data.from_items(items, override_num_blocks=len(items))
            data = self._actors(data, RateWorker, name, kwargs, ledger)
            requests = {r.key: r for job in model_jobs for r in job.requests}
            total = sum(len(job.requests) for job in model_jobs)
            with self._phase(name, total, "view") as bar:
                for row in self._stream(data, name):
                    done: Done = pickle.loads(row["done"])
                    pool.answered(done.worker, done.load, done.busy)
                    if done.problem:
                        raise UsageError(done.problem)
                    for key, outcome in done.outcomes:  # a retried job may answer twice
                        rater.commit(requests[key], outcome)
                    if done.direction is not None:
                        rater.commit_direction(SEP_IQA_WORDS, done.direction)
                    bar.update(len(done.outcomes))
                    bar.set_postfix(rated=seam.usage.rated, failed=len(rater.failures))
        return unplanned

    # -- Ray Data plumbing --

    def _actors(self, data, worker: type, name: str, kwargs: dict, ledger):
        """The actor pool `name` over `data`. Ray Data's defaults restart an actor that dies
        (a crash, a lost node) and retry its unit, without limit: the ledger sets the limit."""
        pool = self.pools[name]
        kwargs = {**kwargs, "ledger": ledger, "retries": self.options.retries,
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
        bar = tqdm(total=total, unit=unit, desc=f"ray {name}", dynamic_ncols=True,
                   disable=not self.progress)  # fmt: skip
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


@contextmanager
def run_ledger(ray) -> Iterator[tuple[object, str]]:
    """The Ledger actor of one run's phases and its name, beside the driver (lost only with
    it), named so that `ray list actors` shows it and actors can look it up; killed when
    they end."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    beside = NodeAffinitySchedulingStrategy(here, soft=False)
    name = f"{LEDGER}-{os.getpid()}-{time.time_ns()}"
    actor = ray.remote(Ledger).options(name=name, num_cpus=0, scheduling_strategy=beside).remote()
    try:
        yield actor, name
    finally:
        with suppress(Exception):  # the cluster may be gone: its actors went with it
            ray.kill(actor)


def check_unreadable_here(item: Decoded) -> None:
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
