"""`llmiqa score INPUTS --out DIR`: a run folder for an unlabeled collection.

The work is shards (llmiqa.inputs.shards): `score_shard` scores one into its part file
(llmiqa.runs.parts) and returns a small summary; it takes a Scorer, a Shard and a parts
folder and nothing of the command line, so a worker elsewhere calls it the same way.
`score_collection` lists the shards, takes the finished parts of an earlier, killed
invocation as they are, scores the rest, then publishes the run as one unit
(runs.publish): results.parquet (one row per input, runs.rows), results.csv,
summary.json, figures/histogram.png and config.json, under the same guarantees as an eval
run's folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from llmiqa import __version__
from llmiqa.environment import machine, versions
from llmiqa.errors import RunError, UsageError, one_line
from llmiqa.evaluation.report import score_histogram_png
from llmiqa.inputs.images import Encoded
from llmiqa.inputs.shards import Shard, describe, read, shards
from llmiqa.method.aggregate import Aggregation
from llmiqa.method.results import ImageResult
from llmiqa.method.standards import Standard
from llmiqa.runs.config import CONFIG, RunConfig
from llmiqa.runs.evaluate import VERSIONED, checkpoints, peak_memory_mb, refuse_replacing
from llmiqa.runs.files import TABLE, strict_json
from llmiqa.runs.lock import locked
from llmiqa.runs.parts import PARTS, ShardSummary, folder, read_part, write_part
from llmiqa.runs.publish import publishing
from llmiqa.runs.rows import CSV_COLUMNS, SCHEMA, from_row, iter_rows, table, to_row
from llmiqa.scoring.knobs import build

if TYPE_CHECKING:
    from llmiqa.distributed.cluster import RayOptions

COLLECTION = "collection"  # the dataset name of a collection run's config
ROWS, SUMMARY, HISTOGRAM = "results.parquet", "summary.json", "figures/histogram.png"
BINS = 40
QUANTILES = (5, 25, 50, 75, 95)
FAILURES_SHOWN = 100  # summary.json names this many failed inputs; the rows hold them all


def collection_config(
    inputs: Sequence[str],
    scoring: dict,
    recursive: bool = False,
    image_col: str | None = None,
    preset: str | None = None,
    store: str | None = None,
) -> RunConfig:
    """The run's config: the inputs as absolute paths, so a rerun from elsewhere is the
    same run and its ids are the same."""
    dataset = {"name": COLLECTION, "inputs": [os.path.abspath(i) for i in inputs],
               "recursive": recursive, "image_col": image_col}  # fmt: skip
    return RunConfig.create(dataset, scoring, preset, store=store)


def listed(config: RunConfig):
    """The collection's shards (llmiqa.inputs.shards.Expanded)."""
    dataset = config.dataset
    return shards(dataset["inputs"], dataset["recursive"], dataset["image_col"])


def _size(image: str | Encoded) -> int | None:
    if isinstance(image, Encoded):
        return len(image.data)
    with contextlib.suppress(OSError, ValueError):
        return os.stat(image).st_size
    return None


def score_shard(scorer, shard: Shard, parts: Path) -> ShardSummary:
    """Score one shard into its part file (a finished part is taken as it is); the inputs
    are read lazily, one chunk of the Scorer's at a time."""
    if (found := read_part(parts, shard)) is not None:
        return ShardSummary(**{**vars(found[1]), "reused": True})
    damage: list[str] = []
    pending: deque[tuple[str, int | None]] = deque()  # (id, bytes) of each input read

    def images() -> Iterator[str | Encoded]:
        for item in read(shard, damage.append):
            pending.append((item.id, _size(item.image)))
            yield item.image

    rows, errors = [], []
    for result in scorer.iter_score(images()):
        id, size = pending.popleft()
        rows.append(to_row(result, id, shard.key, size))
        if not result.ok:
            errors.append(result.error)
    summary = ShardSummary(shard.key, len(rows), len(rows) - len(errors), len(errors),
                           damage[0] if damage else None, tuple(errors))  # fmt: skip
    write_part(parts, shard, table(rows), summary)
    return summary


def score_collection(
    config: RunConfig,
    out: Path,
    overwrite: bool = False,
    progress: bool = False,
    on_shard: Callable[[Shard, ShardSummary], None] | None = None,
    ray: RayOptions | None = None,
) -> dict:
    """Score every shard not yet finished, here or with `ray` on a Ray cluster
    (llmiqa.distributed.shards), then publish the run; returns summary.json's content.
    `on_shard` hears of each shard as it is done (the command line prints its failures
    and damage)."""
    started = time.perf_counter()
    with locked(out, shared=False, command="score --out"):
        if not overwrite:
            refuse_replacing(out, config)
        expanded = listed(config)
        scorer = config.scorer(out)  # models and store checked before any work
        parts = folder(out, config, checkpoints(scorer))
        found: dict[str, ShardSummary] = {}
        on_ray: dict = {}  # what the Ray path did, for the usage
        bar = tqdm(total=len(expanded.shards), unit="shard", disable=not progress,
                   dynamic_ncols=True)  # fmt: skip
        if ray is None:
            done = ((shard, score_shard(scorer, shard, parts)) for shard in expanded.shards)
        else:
            done = _on_ray(config, out, parts, scorer, expanded.shards, ray, on_ray)
        for shard, summary in done:
            found[shard.key] = summary
            if on_shard is not None:
                on_shard(shard, summary)
            bar.update(1)
            bar.set_postfix(inputs=sum(s.inputs for s in found.values()),
                            failed=sum(s.failed for s in found.values()))  # fmt: skip
        bar.close()
        summaries = [found[shard.key] for shard in expanded.shards]
        usage = scorer.usage.as_dict()
        if ray is not None:
            usage["ray"] = on_ray
        summary = _summary(config, expanded.shards, summaries, usage, checkpoints(scorer))
        lost = set(on_ray.get("gave_up", ()))
        _publish(out, config, parts, expanded.shards, summary, started, lost)
        scorer.store.checkpoint()
        _tidy_parts(out, parts.name)
    return summary


def _on_ray(config, out, parts, scorer, listed_shards, options, said: dict) -> Iterator[tuple]:
    """Shards with a finished part as they are, the others scored on Ray (the workers'
    stores merged into the run's before and after); `said` gets what the Ray path did,
    with the driver's CPU seconds in it (Ray's start and publishing aside)."""
    from llmiqa.distributed.cluster import connected
    from llmiqa.distributed.shards import STORES, add_usage, merge_stores, score_on_ray

    cpu = time.process_time()
    stores = out / STORES
    merge_stores(scorer.store, stores)  # a killed run's ratings: the workers read them
    todo = []
    for shard in listed_shards:
        if (finished := read_part(parts, shard)) is not None:
            yield shard, ShardSummary(**{**vars(finished[1]), "reused": True})
        else:
            todo.append(shard)
    seen: dict = {}
    lost: list[str] = []
    spent = time.process_time() - cpu
    # the workers' paths absolute: a worker's current folder is not the driver's
    store, stores, parts = Path(scorer.store.path).resolve(), stores.resolve(), parts.resolve()
    with connected(options) if todo else contextlib.nullcontext() as ray:  # nothing left: no Ray
        cpu = time.process_time()  # Ray's start and end are not the driver's work
        for done in score_on_ray(ray, options, config.scoring, store, stores, parts, todo,
                                 score_shard, seen):  # fmt: skip
            add_usage(scorer.usage, done.usage)
            if done.gave_up:
                lost.append(done.shard.key)
                yield done.shard, ShardSummary(done.shard.key, 0, 0, 0, done.gave_up)
            else:
                yield done.shard, done.summary
        spent += time.process_time() - cpu
    cpu = time.process_time()
    merged = merge_stores(scorer.store, stores)
    said.update({
        "actors": seen.get("actors", 0), "gpus_per_actor": seen.get("gpus_per_actor", 0),
        "start_seconds": seen.get("start_seconds", 0.0),
        "nodes": len(seen.get("nodes", ())), "shards_sent": len(todo), "gave_up": sorted(lost),
        "merged": merged, "driver_cpu_seconds": spent + time.process_time() - cpu,
    })  # fmt: skip


def _summary(config, listed_shards, summaries, usage, identities) -> dict:
    damaged = [
        {"shard": describe(shard), "problem": s.damage}
        for shard, s in zip(listed_shards, summaries, strict=True)
        if s.damage
    ]
    errors = [error for s in summaries for error in s.errors]
    return {
        "run_id": config.run_id,
        "llmiqa": __version__,
        "environment": {"machine": machine(), "versions": versions(VERSIONED)},
        "inputs": sum(s.inputs for s in summaries),
        "scored": sum(s.scored for s in summaries),
        "failed": len(errors),
        "shards": len(summaries),
        "shards_reused": sum(s.reused for s in summaries),
        "damaged_shards": damaged,
        "failures": errors[:FAILURES_SHOWN],
        "usage": usage,
        "checkpoints": identities,
    }


def _publish(
    out: Path,
    config: RunConfig,
    parts: Path,
    listed_shards,
    summary: dict,
    started: float,
    lost=frozenset(),
) -> None:
    """results.parquet and results.csv streamed from the parts, one part in memory at a
    time (shards in `lost` have none: Ray gave up on them); then the summary with the
    scores' statistics and histogram."""
    scores = []
    with publishing(out, config.run_id) as publication:
        root = publication.folder
        with (
            publication.writing(root / ROWS) as rows_file,
            publication.writing(root / TABLE) as csv_file,
            pq.ParquetWriter(rows_file, SCHEMA) as rows_writer,
        ):
            csv_writer = None
            for shard in listed_shards:
                if shard.key in lost:
                    continue
                found = read_part(parts, shard)
                if found is None:  # written moments ago: only a bug or another hand
                    raise UsageError(f"{parts}: the part of {describe(shard)} vanished; rerun")
                rows = found[0].replace_schema_metadata(None)
                rows_writer.write_table(rows)
                shown = rows.select(list(CSV_COLUMNS))
                if csv_writer is None:
                    csv_writer = pacsv.CSVWriter(csv_file, shown.schema)
                csv_writer.write_table(shown)
                scores.append(rows.column("score").to_numpy(zero_copy_only=False))
            if csv_writer is not None:
                csv_writer.close()
        values = np.concatenate(scores) if scores else np.array([])
        values = values[np.isfinite(values)]
        summary["scores"] = _statistics(values)
        summary["usage"]["seconds_this_invocation"] = time.perf_counter() - started
        summary["peak_memory_mb"] = peak_memory_mb()
        publication.write(root / SUMMARY, json.dumps(strict_json(summary), indent=2) + "\n")
        publication.write(root / HISTOGRAM, score_histogram_png(values, BINS))
        publication.write(root / CONFIG, config.to_json())


def _statistics(values: np.ndarray) -> dict:
    """The scores' count, mean, spread, quantiles and histogram (bins over their range)."""
    if values.size == 0:
        return {"count": 0}
    low, high = float(values.min()), float(values.max())
    counts, edges = np.histogram(values, bins=BINS, range=(low, high) if high > low else None)
    quantiles = np.quantile(values, np.array(QUANTILES) / 100)
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": low,
        "max": high,
        "quantiles": {f"{q}%": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def _tidy_parts(out: Path, kept: str) -> None:
    """Parts of the runs this folder no longer holds go (their ratings stay in the store)."""
    for other in (out / PARTS).iterdir():
        if other.name != kept:
            shutil.rmtree(other, ignore_errors=True)


def is_collection(config: RunConfig) -> bool:
    return config.dataset.get("name") == COLLECTION


def read_collection(published: Path, config: RunConfig) -> list[ImageResult]:
    """The scored inputs' results (named by their ids, under the run's aggregation),
    rebuilt from results.parquet: no model, no store."""
    file = published / ROWS
    if not file.is_file():
        raise RunError(f"{published}: no {ROWS}; run llmiqa score --out first")
    how = build(Aggregation, config.scoring)
    words = build(Standard, config.scoring).words
    try:
        found = [from_row(row, how, words) for row in iter_rows(file) if row["error"] is None]
    except (OSError, pa.ArrowException, KeyError, TypeError, ValueError) as error:
        raise RunError(f"{file}: not a collection's rows ({one_line(error)})") from None
    return found
