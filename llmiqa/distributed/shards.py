"""`llmiqa score INPUTS --out DIR --ray`: a collection's shards scored by Ray actors, the
driver only handing out shards, counting them done, and merging stores in bulk.

Why this design, and not the `eval --ray` one (llmiqa.distributed.cluster), where every
rating streams back to the driver, the store's only writer: that costs the driver about
39 ms of CPU per image (its collect pass alone), so one driver could never keep many
GPUs busy. Here the unit of work is a shard (a tar file, a Parquet row group, a slice of
1000 files: llmiqa.inputs.shards), and everything per image happens on a worker:

- each actor builds one Scorer (its models loaded once) over its OWN store file,
  `OUT/stores/<node>-<pid>.sqlite`, in front of the run's store read frozen (what an
  earlier run or a killed one computed is never computed again), and runs the
  single-process `score_shard` on each shard it is given: it decodes, segments and rates,
  commits each rating to its store, and writes the shard's checksummed Parquet part
  (llmiqa.runs.parts), whose rows hold every rating a readout or `ablate` needs;
- it answers with the shard's ShardSummary (about 100 bytes) and its usage counts: the
  driver never sees a rating;
- the driver lists the shards, skips those with a valid part, keeps PER_ACTOR shards in
  flight per actor, and at the end (and at the start of a rerun, for the stores of a
  killed one) merges every worker store into the run's store in bulk, each row checked
  against its checksum (`Store.merge`), then publishes from the parts with the
  single-process code. So the driver's work grows with the shards, not the images
  (measured: `benchmarks/ray_scale.py --collection`).

Plain Ray core, not Ray Data: Ray Data retries a failed task without limit and has no
place to say which unit it gave up on. Actors restart without limit (max_restarts=-1) and
Ray retries their tasks (max_task_retries=-1), so a killed worker or a lost node only
costs the shards in progress; a Ledger (llmiqa.distributed.workers) beside the driver
counts how often each shard was started, and a shard started more than `retries` times
after its first (one that kills every worker it meets) is given up: one line names it,
it has no part, every other shard is kept and published, and the run exits 1. A killed
driver takes its actors with it; the parts and worker stores it leaves are what the
rerun takes (the parts) and merges first (the stores), so it scores only the shards
without a part, with no rating computed twice.

What every node needs: the inputs, local checkpoints and OUT at the driver's paths (a
shared file system: workers write parts and stores into OUT). Each worker store has one
writer and is read by the driver only after its worker stopped; the run's store is
written by the driver only while no worker runs, which is what lets workers read it as
SQLite's immutable file, also over a network file system.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from llmiqa.distributed.cluster import RayOptions, run_ledger
from llmiqa.errors import UsageError, one_line
from llmiqa.inputs.shards import Shard, describe
from llmiqa.raters.base import RatingRequest
from llmiqa.scoring.caching import Usage
from llmiqa.scoring.store import Store

STORES = "stores"  # OUT/stores: the workers' own store files, merged by the driver
PER_ACTOR = 2  # shards in flight per actor: one scored, one waiting, no gap between them
COUNTS = ("rated", "from_store", "refused", "segmented", "masks_from_store", "failed")


class WorkerStore(Store):
    """A worker's own store file in front of the run's store (read frozen): lookups fall
    through to the run's store, commits go to this file only."""

    def __init__(self, path: Path, run_store: Path) -> None:
        super().__init__(path)
        self.run = Store(run_store, frozen=True)

    def ratings(self, requests: Iterable[RatingRequest]):
        requests = list(requests)
        found, refused = super().ratings(requests)
        more, also = self.run.ratings(r for r in requests if r.key not in found)
        return {**found, **more}, refused + also

    def masks(self, image: str, segmenter: str):
        found, refused = super().masks(image, segmenter)
        return (found, refused) if found is not None else self.run.masks(image, segmenter)

    def segmented(self, images: Iterable[str], segmenter: str) -> set[str]:
        images = list(images)
        found = super().segmented(images, segmenter)
        return found | self.run.segmented([i for i in images if i not in found], segmenter)

    def direction(self, model: str, words: str):
        found = super().direction(model, words)
        return found if found is not None else self.run.direction(model, words)

    def canary(self, identity: str):
        return super().canary(identity) or self.run.canary(identity)


@dataclass(frozen=True)
class Finished:
    """A shard the cluster is done with: what `work` returned, or the line saying Ray gave
    up on it (then it has no part)."""

    shard: Shard
    summary: object | None
    usage: dict
    gave_up: str | None = None


class ShardWorker:
    """A Ray actor: one Scorer over its own store file, scoring the shards it is given with
    `work(scorer, shard, parts)` (llmiqa.runs.collection.score_shard)."""

    def __init__(self, scoring: dict, run_store: Path, stores: Path, parts: Path,
                 work: Callable, ledger: str, retries: int) -> None:  # fmt: skip
        import ray

        from llmiqa.scoring.pipeline import Scorer

        self.parts, self.work, self.retries = parts, work, retries
        self.ledger = ray.get_actor(ledger)  # by name: a handle would pin the arguments
        self.node = ray.get_runtime_context().get_node_id()
        self.problem: str | None = None
        try:
            store = WorkerStore(stores / f"{self.node[:12]}-{os.getpid()}.sqlite", run_store)
            self.scorer = Scorer.from_options(scoring, store)
        except UsageError as error:
            self.problem = f"on Ray node {ray.util.get_node_ip_address()}: {one_line(error)}"

    def score(self, shard: Shard) -> tuple[object | None, dict, str | None]:
        """(the shard's summary, the usage counts it added, a line that stops the run or
        says Ray gave up on the shard)."""
        import ray

        if self.problem:
            return None, {}, self.problem
        starts = ray.get(self.ledger.start.remote(f"shard {shard.key}"))
        if starts > self.retries + 1:
            deaths = f"{starts - 1} time{'s' if starts > 2 else ''}"
            return None, {}, (f"Ray gave up on shard {describe(shard)}: its worker died "
                              f"{deaths} on it; rerun to try it again")  # fmt: skip
        usage = self.scorer.usage
        before = [getattr(usage, name) for name in COUNTS]
        notes = len(usage.notes)
        summary = self.work(self.scorer, shard, self.parts)
        self.scorer.store.checkpoint()  # the store's own file holds what the part stands on
        added = {name: getattr(usage, name) - was for name, was in zip(COUNTS, before,
                                                                       strict=True)}  # fmt: skip
        return summary, {**added, "notes": usage.notes[notes:], "node": self.node}, None


def pool_size(ray, options: RayOptions, shards: int) -> tuple[int, float]:
    """(actors, GPUs per actor): one per GPU share on a cluster with GPUs, else one per
    `options.cpus` of the cluster's CPUs; never more than the shards. A pool the cluster's
    live nodes cannot hold is refused in one line: its last actors would wait forever."""
    resources = ray.cluster_resources()
    gpus = options.gpus_per_rater
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) else 0.0
    if options.actors is not None:
        size = options.actors
    elif gpus:
        size = int(resources.get("GPU", 0) // gpus)
    else:
        size = int(resources.get("CPU", 1) // options.cpus)
    size = max(1, min(size, shards))

    def holds(node: dict) -> int:
        by_cpu = int(node.get("CPU", 0) // options.cpus)
        by_gpu = int(node.get("GPU", 0) // gpus) if gpus else size
        return min(by_cpu, by_gpu)

    held = sum(holds(node["Resources"]) for node in ray.nodes() if node.get("Alive"))
    if held < size:
        each = f"{options.cpus:g} CPU" + (f" and {gpus:g} GPU" if gpus else "")
        raise UsageError(
            f"the Ray cluster's nodes can hold {held} of the {size} actors asked for "
            f"({each} each); lower --ray-actors, --ray-cpus or --gpus-per-rater"
        )
    return size, gpus


def score_on_ray(
    ray, options: RayOptions, scoring: dict, run_store: Path, stores: Path, parts: Path,
    todo: Sequence[Shard], work: Callable, seen: dict,
) -> Iterator[Finished]:  # fmt: skip
    """Each shard of `todo` scored by a pool of ShardWorkers, yielded as it finishes; `seen`
    gets the pool's size, the seconds until its last actor was up (imports, models: the
    start-up) and the nodes whose workers scored a shard."""
    if not todo:
        return
    size, gpus = pool_size(ray, options, len(todo))
    seen.update(actors=size, gpus_per_actor=gpus, nodes=set())
    stores.mkdir(parents=True, exist_ok=True)
    worker = ray.remote(ShardWorker).options(
        num_cpus=options.cpus, num_gpus=gpus or None, max_restarts=-1, max_task_retries=-1
    )
    with run_ledger(ray) as (_, ledger):
        actors = [worker.remote(scoring, run_store, stores, parts, work, ledger, options.retries)
                  for _ in range(size)]  # fmt: skip
        try:
            yield from _hand_out(ray, actors, todo, seen)
        except ray.exceptions.RayError as error:
            raise UsageError(f"Ray failed ({one_line(error)}); every finished shard is kept: "
                             "rerun the same command to go on") from None  # fmt: skip
        finally:
            for actor in actors:
                with suppress(Exception):  # the cluster may be gone: its actors went with it
                    ray.kill(actor)


def _hand_out(ray, actors: list, todo: Sequence[Shard], seen: dict) -> Iterator[Finished]:
    """PER_ACTOR shards in flight per actor, another sent as each one finishes."""
    waiting = list(reversed(todo))
    flying: dict = {}  # ObjectRef -> (shard, actor), or None: an actor's start
    started = time.perf_counter()
    flying.update((actor.__ray_ready__.remote(), None) for actor in actors)

    def send(actor) -> None:
        shard = waiting.pop()
        flying[actor.score.remote(shard)] = (shard, actor)

    for actor in actors:
        for _ in range(PER_ACTOR):
            if waiting:
                send(actor)
    while any(sent is not None for sent in flying.values()):
        ready, _ = ray.wait(list(flying), num_returns=1)
        if (sent := flying.pop(ready[0])) is None:  # the last one up: the pool's start
            seen["start_seconds"] = time.perf_counter() - started
            continue
        shard, actor = sent
        summary, usage, line = ray.get(ready[0])
        if line and not line.startswith("Ray gave up on shard"):
            raise UsageError(line)
        if "node" in usage:
            seen["nodes"].add(usage["node"])
        if waiting:
            send(actor)
        yield Finished(shard, summary, usage, line)


def merge_stores(store: Store, stores: Path) -> dict[str, int]:
    """Every worker store under `stores` merged into the run's store, then removed (each
    file only once merged: a merge cut short is done again by the next run). Returns the
    rows added per table."""
    added: dict[str, int] = {}
    for file in sorted(stores.glob("*.sqlite")) if stores.is_dir() else []:
        for table, count in store.merge(file).items():
            added[table] = added.get(table, 0) + count
        for suffix in ("", "-wal", "-shm"):
            Path(f"{file}{suffix}").unlink(missing_ok=True)
    store.checkpoint()  # the main file alone holds them: workers read it frozen
    return added


def add_usage(usage: Usage, counts: dict) -> None:
    """A worker's usage counts added to the driver's."""
    for name in COUNTS:
        setattr(usage, name, getattr(usage, name) + counts.get(name, 0))
    for note in counts.get("notes", ()):
        usage.note(note)
