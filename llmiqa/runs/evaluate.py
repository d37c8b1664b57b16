"""`llmiqa eval`: score a dataset, then publish the run's results, metrics and report."""

from __future__ import annotations

import json
import resource
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmiqa import __version__
from llmiqa.environment import machine, versions
from llmiqa.errors import RunError
from llmiqa.evaluation import correlation
from llmiqa.inputs.datasets import Dataset, Sample
from llmiqa.inputs.shards import adds_only, split_id
from llmiqa.method import aggregate
from llmiqa.method.aggregate import Aggregation
from llmiqa.method.regions import RegionSettings
from llmiqa.method.results import ImageResult, stack
from llmiqa.method.standards import Standard
from llmiqa.runs.config import CONFIG, RunConfig, shard_of
from llmiqa.runs.files import (
    ARRAYS,
    METRICS,
    RESULTS,
    TABLE,
    arrays_npz,
    invocations,
    log_invocation,
    results_csv,
    results_jsonl,
    strict_json,
)
from llmiqa.runs.lock import locked
from llmiqa.runs.publish import current, publishing
from llmiqa.scoring.knobs import build, speed_only

if TYPE_CHECKING:
    from llmiqa.distributed.cluster import RayOptions

# What a run's numbers depend on besides llmiqa (recorded in metrics.json).
VERSIONED = ("torch", "transformers", "numpy", "scipy", "pillow", "vllm", "ray")


def scored(
    results: Sequence[ImageResult], mos: Sequence[float], aggregation: Aggregation | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and MOS of the images that were scored (failures left out, counted apart),
    under the results' own aggregation or another one; all images aggregated at once."""
    keep = [i for i, r in enumerate(results) if r.ok]
    truth = np.asarray(mos, dtype=float)[keep]
    if not keep:
        return np.array([]), truth
    how = aggregation or results[keep[0]].aggregation
    return aggregate.scores(stack([results[i] for i in keep]), how).score, truth


def mask_counts(results: Sequence[ImageResult]) -> dict:
    """Regions per scored image (objects and complement apart): the paper tuned SAM2 for
    7.22 masks per SPAQ image."""
    objects = np.array([sum(k == "object" for k in r.kinds) for r in results if r.ok])
    if objects.size == 0:
        return {"images": 0}
    counts = np.bincount(objects)
    return {
        "images": int(objects.size),
        "mean_objects": float(objects.mean()),
        "median_objects": float(np.median(objects)),
        "with_complement": int(sum("complement" in r.kinds for r in results if r.ok)),
        "histogram": {str(n): int(c) for n, c in enumerate(counts) if c},
    }


def summarize(
    results: Sequence[ImageResult], mos: Sequence[float], usage: dict, resamples: int
) -> dict:
    """metrics.json's content: agreement with MOS, failures, masks, work, time, memory."""
    pred, truth = scored(results, mos)
    failures = [{"image": r.name, "error": r.error} for r in results if not r.ok]
    summary = {
        "llmiqa": __version__,
        "environment": {"machine": machine(), "versions": versions(VERSIONED)},
        "images": len(results),
        "scored": int(pred.size),
        "failed": len(failures),
        "metrics": correlation.evaluate(pred, truth, resamples=resamples),
        "masks": mask_counts(results),
        "usage": usage,
        "peak_memory_mb": peak_memory_mb(),
        "failures": failures,
    }
    if failures:  # the released code scores an image without a prediction as 1
        full = np.ones(len(results))
        full[[i for i, r in enumerate(results) if r.ok]] = pred
        summary["metrics_failures_as_1"] = correlation.evaluate(full, np.asarray(mos), resamples=0)
    return summary


def peak_memory_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def evaluate_run(
    config: RunConfig,
    out: Path,
    shard: tuple[int, int] | None = None,
    resamples: int = 1000,
    ray: RayOptions | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict | None:
    """`llmiqa eval`: score, then publish the results, metrics and report of `out` as one
    unit (runs.publish.publishing). A finished run with other options is replaced only
    with `overwrite` (its ratings stay in the store either way). `progress`: draw progress
    bars (the command line does on a terminal).

    A shard only fills the store; the run without --shard then finds every rating stored.
    With `ray`, a Ray cluster fills the store first (llmiqa.distributed), then the same
    single-process code collects the results from it without calling a model.
    """
    if ray is not None and shard is not None:
        raise RunError("--ray and --shard do not go together: Ray spreads the work itself")
    started = time.perf_counter()
    with locked(out, shared=shard is not None, command="eval"), ExitStack() as cleanup:
        if not overwrite:
            refuse_replacing(out, config)
        dataset = config.load_dataset()
        dataset.check_images()
        samples = shard_of(config.samples(dataset), shard)
        if ray is not None:
            refuse_containers_on_ray(dataset, samples)
        cluster = placement = None
        if ray is not None:
            from llmiqa.distributed.cluster import RayCluster

            cluster = cleanup.enter_context(RayCluster(ray, progress=progress))
            placement = cluster.place(config.scoring)
        overrides = placement.driver() if placement else {}
        scorer = config.scorer(out, progress=progress, **overrides)  # models and store checked
        invocation = {"run": config.run_id, "started": time.time(), "shard": shard}
        finished = False
        try:
            inputs, collector = dataset.images(samples), scorer
            if cluster is not None:  # the cluster fills the store, the driver collects
                paths = [dataset.path(s) for s in samples]
                inputs = enumerate(cluster.fill(placement, scorer.seam(), paths))
                collector = scorer.offline()
            results = in_order(collector, inputs, samples)
            finished = True
        finally:
            invocation.update(
                seconds=time.perf_counter() - started, finished=finished,
                usage={k: v for k, v in scorer.usage.as_dict().items() if k != "notes"},
            )  # fmt: skip
            log_invocation(out, invocation)
        if shard is not None:
            return None
        mos = [s.mos for s in samples]
        usage = {**scorer.usage.as_dict(), "seconds_this_invocation": time.perf_counter() - started}
        if cluster is not None:
            usage["ray"] = cluster.summary()
        usage["seconds_all_invocations"] = sum(
            entry["seconds"] for entry in invocations(out) if entry["run"] == config.run_id
        )
        summary = {"run_id": config.run_id, **summarize(results, mos, usage, resamples)}
        summary["checkpoints"] = checkpoints(scorer)
        _publish(out, config, results, mos, summary, scorer)
        scorer.store.checkpoint()  # the store's main file alone now holds the whole run
    return summary


def in_order(scorer, numbered: Iterable[tuple[int, object]], samples: Sequence[Sample]) -> list:
    """Results in the samples' order, named as the label file names them, whatever order
    the images came in (Dataset.images reads each tar or Parquet file once, in its own)."""
    pending: deque[int] = deque()  # the index of each image handed to the scorer

    def images():
        for index, image in numbered:
            pending.append(index)
            yield image

    results: list = [None] * len(samples)
    for result in scorer.iter_score(images(), total=len(samples)):
        index = pending.popleft()
        results[index] = replace(result, name=samples[index].image)
    return results


def refuse_containers_on_ray(dataset: Dataset, samples: Sequence[Sample]) -> None:
    """--ray's workers read image files by path: an image inside a tar or Parquet file is
    refused before the cluster starts."""
    inside = [s.image for s in samples if split_id(s.image)]
    if inside:
        raise RunError(
            f"{dataset.labels}: {len(inside)} image(s) lie inside tar or Parquet files "
            f"(first: {inside[0]}), which --ray cannot read yet; run without --ray"
        )


def checkpoints(scorer) -> dict[str, str]:
    """What exactly rated and segmented: each model's identity (hub commit or content hash,
    dtype, backend, options) and the segmenter's."""
    found = {spec.model: spec.identity for spec in scorer.specs}
    if scorer.segmenter_spec is not None:
        found[scorer.segmenter_spec.model] = scorer.segmenter_spec.identity
    return found


def refuse_replacing(out: Path, config: RunConfig) -> None:
    """A run folder holding another run's outputs is not replaced unasked. A run that only
    adds images (a larger --limit, or none after one; more inputs of a collection) or
    changes only options that change no number (knobs.speed_only: --device, --batch-size,
    ...) continues the same run."""
    file = current(out) / CONFIG
    if not file.is_file():
        return
    try:
        published = json.loads(file.read_text())
    except (OSError, ValueError):
        published = {}
    ours = json.loads(config.to_json())
    if published.get("run_id") == config.run_id or not other_options(published, ours):
        return
    differ = other_options(published, ours, named=True)
    shown = "; ".join(differ[:6]) + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
    raise RunError(
        f"{out}: holds a finished run with other options ({shown or 'another version'}); pass "
        "--overwrite to replace it (its ratings stay in the store), or use another --out"
    )


def other_options(published: dict, ours: dict, named: bool = False) -> list[str]:
    """What makes config `ours` another run than `published` (config.json records): every
    option that differs, but those that change no number, a limit that only grows and a
    collection's inputs that only add to the earlier ones. Empty: the same run (resumed).
    `named`: only what can be named option by option."""
    quiet = speed_only()

    def differs(section: str, name: str) -> bool:
        before, now = (published.get(section) or {}).get(name), ours[section].get(name)
        if before == now or (section == "scoring" and name in quiet):
            return False
        if section == "dataset" and name == "inputs" and before:
            return not adds_only(before, now, bool(ours[section].get("recursive")))
        return True

    differ = [
        f"{name} {(published.get(section) or {}).get(name)!r} -> {ours[section].get(name)!r}"
        for section in ("dataset", "scoring")
        for name in sorted(set(ours.get(section, {})) | set(published.get(section) or {}))
        if differs(section, name) and (not named or name in (published.get(section) or {}))
    ]
    differ += [
        f"{name} {published.get(name)!r} -> {ours[name]!r}"
        for name in ("preset", "store")
        if published.get(name) != ours[name]
    ]
    before, now = published.get("limit"), ours["limit"]
    if before != now and (before is None or (now is not None and now < before)):
        differ.append(f"limit {before!r} -> {now!r}")
    if not named and {"dataset", "scoring"} - set(published):
        differ.append("not a run config")
    return differ


def _publish(out, config, results, mos, summary, scorer) -> None:
    """Every output of a finished run, published as one unit (see runs.publish)."""
    from llmiqa.evaluation.report import build_report

    run_id = config.run_id
    segmenter = scorer.segmenter

    def masks(digest: str):
        return None if segmenter is None else scorer.store.masks(digest, segmenter.identity)[0]

    dataset = config.load_dataset()
    report = build_report(
        title=f"LLM-IQA benchmark report: {_dataset_name(config)}",
        settings=_settings_rows(config, summary),
        results=results,
        mos=mos,
        summary=summary,
        image_dir=dataset.image_dir,
        masks=masks,
        regions=build(RegionSettings, config.scoring),
        words=build(Standard, config.scoring).descriptions,
    )
    with publishing(out, run_id) as publication:
        folder = publication.folder
        publication.write(folder / RESULTS, results_jsonl(results, mos, run_id))
        publication.write(folder / ARRAYS, arrays_npz(results, mos, run_id))
        publication.write(folder / TABLE, results_csv(results, mos))
        publication.write(folder / METRICS, json.dumps(strict_json(summary), indent=2) + "\n")
        report.write(folder, publication.write)
        publication.write(folder / CONFIG, config.to_json())


def _dataset_name(config: RunConfig) -> str:
    """The dataset as a reader knows it: a benchmark's name, or a CSV's label file."""
    if config.dataset["name"] == "csv":
        return Path(config.dataset["labels"]).name
    return config.dataset["name"]


def _settings_rows(config: RunConfig, summary: dict) -> list[tuple[str, str]]:
    """What was scored and how: enough to tell two reports apart at a glance."""
    s = config.scoring
    options = ", ".join(f"{k}={v}" for k, v in config.dataset.items() if k != "name")
    images = f"{summary['scored']} scored, {summary['failed']} failed, of {summary['images']}"
    if config.limit:
        images += f" (limited to the first {config.limit})"
    regions = s["region_mode"]
    if regions != "whole-only":
        t = s["min_area"]
        threshold = f"{t:.1%} of the image" if t < 1 else f"{t:g} px"
        regions += f" (segmenter {s['segmenter']}, min area t = {threshold})"
    weights = f"g = {s['global_weight']:g}, λ = {s['lam']:g}, c = {s['count_weight']:g}"
    return [
        ("Dataset", f"{config.dataset['name']} ({options})"),
        ("Preset", config.preset or "none"),
        ("Images", images),
        ("Models", ", ".join(s["model"])),
        ("Standard", f"{s['kind']}, K = {s['levels']}, {s['wording']} wording"),
        ("Region mode", regions),
        ("Readout", s["readout"]),
        ("Score", f"(g·s_global + λ·s_local + c·N){' / (g + λ)' if s['normalize'] else ''}"
                  f" with {weights}"),
        ("Region weighting", s["weighting"]),
        ("Run id", config.run_id),
        ("llmiqa", __version__),
    ]  # fmt: skip
