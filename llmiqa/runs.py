"""Benchmark runs: score a dataset into a run folder, then ablate from what is stored.

A run folder holds everything needed to resume, recompute and report:

    config.json       the dataset and every scoring option (resolved), and the run's id
    store.sqlite      masks and ratings (unless --store points elsewhere): the resume point
    results.jsonl     one ImageResult per image with its MOS: every rating kept
    ratings.npz       the same ratings as arrays (images x views x models x K): ablations
    results.csv       one row per image: image, mos, score, s_global, s_local, regions, error
    metrics.json      SRCC, KRCC, PLCC (raw and after the logistic fit), RMSE, intervals,
                      work done, time and memory
    invocations.jsonl one line per `llmiqa eval` on this folder (time, work, finished or not)
    report.md/.html   the metrics, plots and example images (see report.py)

What it guarantees: outputs are replaced only when a run finishes, each file atomically
(written aside, then renamed), config.json last, and every output names the run id of
the config it belongs to; a run that fails or is interrupted leaves the previous outputs
as they were (its ratings are in the store). Only one process writes a run folder at a
time (shards, which only fill the store, excepted).

The name contract with the report: results carry the sample's image name (relative to
the dataset's image folder) as `ImageResult.name`.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmiqa import __version__, aggregate, metrics
from llmiqa.aggregate import Aggregation, RatingArrays
from llmiqa.datasets import Dataset, load_dataset
from llmiqa.errors import UsageError, one_line
from llmiqa.options import build, resolve
from llmiqa.regions import REGION_MODES, RegionSettings
from llmiqa.results import ImageResult, stack
from llmiqa.standards import KINDS, LEVELS, Standard

CONFIG, RESULTS, TABLE, METRICS = "config.json", "results.jsonl", "results.csv", "metrics.json"
if TYPE_CHECKING:
    from llmiqa.distributed import RayOptions

ARRAYS, INVOCATIONS, LOCK = "ratings.npz", "invocations.jsonl", ".lock"


class RunError(UsageError):
    """A run folder that cannot be used as asked."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run, as written to config.json."""

    dataset: dict  # load_dataset keyword arguments, name, root and label file included
    scoring: dict  # resolved scoring options (see options.DEFAULTS)
    preset: str | None = None
    limit: int | None = None
    store: str | None = None  # None: store.sqlite inside the run folder

    @classmethod
    def create(
        cls,
        dataset: dict,
        scoring: dict,
        preset: str | None = None,
        limit: int | None = None,
        store: str | None = None,
    ) -> RunConfig:
        """A config with everything pinned that a rerun must not guess again: the label
        file a csv dataset chose, and the released protocol's LIVEC (all 1,169 images)."""
        dataset = dict(dataset)
        if preset == "dogiqa" and dataset["name"] == "livec":
            dataset.setdefault("include_training", True)
        if dataset["name"] == "csv" and "labels" not in dataset:
            dataset["labels"] = str(load_dataset(**dataset).labels)
        return cls(dataset, scoring, preset, limit, str(Path(store).resolve()) if store else None)

    @property
    def run_id(self) -> str:
        """Names this configuration; every output of the run carries it."""
        text = json.dumps(vars(self), sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    def load_dataset(self) -> Dataset:
        return load_dataset(**self.dataset)

    def samples(self, dataset: Dataset) -> list:
        samples = list(dataset.samples)
        return samples[: self.limit] if self.limit else samples

    def store_path(self, out: Path) -> Path:
        return Path(self.store) if self.store else out / "store.sqlite"

    def scorer(self, out: Path, progress: bool = False, **overrides):
        """A Scorer for this run; `overrides` change scoring options (for ablations)."""
        from llmiqa.options import make_scorer

        return make_scorer({**self.scoring, **overrides}, self.store_path(out), progress)

    def to_json(self) -> str:
        record = {"llmiqa": __version__, "run_id": self.run_id, **vars(self)}
        return json.dumps(record, indent=2, default=str) + "\n"

    @classmethod
    def read(cls, out: Path) -> RunConfig:
        """config.json, validated: a file another version wrote or one edited by hand is
        refused with what is wrong, not guessed at."""
        file = out / CONFIG
        if not file.is_file():
            raise RunError(f"{out}: not a run folder (no {CONFIG}); run llmiqa eval first")
        try:
            record = json.loads(file.read_text())
            record.pop("llmiqa", None)
            run_id = record.pop("run_id")
            config = cls(**record)
            scoring = resolve(config.scoring)
        except (ValueError, TypeError, KeyError, UsageError) as error:
            raise RunError(f"{file}: not a valid run config ({one_line(error)})") from None
        if scoring != config.scoring or run_id != config.run_id:
            raise RunError(f"{file}: written by another llmiqa version or edited; rerun eval")
        return config


# ---- files ------------------------------------------------------------------------------


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write aside, then rename: a reader sees the old file or the new one, never a part."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise RunError(f"{path}: cannot write ({one_line(error)})") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise RunError(
            f"{path}: cannot write ({one_line(error)}); the previous file is kept"
        ) from None


@contextmanager
def locked(out: Path, shared: bool) -> Iterator[None]:
    """Hold the run folder: exclusively for a run, shared among shards."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / LOCK, "a+")  # noqa: SIM115 - held for the whole run
    except OSError as error:
        raise RunError(f"{out}: cannot write to the run folder ({one_line(error)})") from None
    try:
        fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunError(
            f"{out}: another llmiqa eval is using this run folder; wait for it, or use "
            "another --out (shards of one run may share it)"
        ) from None
    try:
        yield
    finally:
        handle.close()


def shard_of(samples: Sequence, shard: tuple[int, int] | None) -> list:
    """Samples i, i+n, i+2n, ... for shard (i, n): one process per GPU, one shared store."""
    if shard is None:
        return list(samples)
    index, count = shard
    return list(samples)[index::count]


def strict_json(value):
    """NaN -> null, recursively: metrics.json must parse in any JSON reader, not just Python."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def results_jsonl(results: Sequence[ImageResult], mos: Sequence[float], run_id: str) -> str:
    lines = [
        json.dumps({**result.to_dict(), "mos": value, "run": run_id})
        for result, value in zip(results, mos, strict=True)
    ]
    return "".join(line + "\n" for line in lines)


def read_results(out: Path, run_id: str | None = None) -> tuple[list[ImageResult], np.ndarray]:
    """The results of a finished run, rebuilt from results.jsonl (no model, no store)."""
    file = out / RESULTS
    if not file.is_file():
        raise RunError(f"{out}: no {RESULTS}; run llmiqa eval first")
    results, mos = [], []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if run_id is not None and record["run"] != run_id:
                raise ValueError(f"from run {record['run']}, not {run_id} of {CONFIG}")
            results.append(ImageResult.from_dict(record))
            mos.append(float(record["mos"]))
        except (ValueError, KeyError, TypeError) as error:
            raise RunError(f"{file}, line {number}: not a result ({one_line(error)})") from None
    return results, np.array(mos)


def results_csv(results: Sequence[ImageResult], mos: Sequence[float]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "mos", "score", "s_global", "s_local", "regions", "error"])
    for result, value in zip(results, mos, strict=True):
        if not result.ok:
            writer.writerow([result.name, value, "", "", "", "", result.error])
            continue
        s_local = float(np.mean(result.s_local))
        writer.writerow(
            [
                result.name,
                value,
                f"{result.score:.6f}",
                f"{float(np.mean(result.s_global)):.6f}",
                "" if np.isnan(s_local) else f"{s_local:.6f}",
                len(result.kinds),
                "",
            ]
        )
    return buffer.getvalue()


# ---- scoring a dataset -----------------------------------------------------------------


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
        "images": len(results),
        "scored": int(pred.size),
        "failed": len(failures),
        "metrics": metrics.evaluate(pred, truth, resamples=resamples),
        "masks": mask_counts(results),
        "usage": usage,
        "peak_memory_mb": peak_memory_mb(),
        "failures": failures,
    }
    if failures:  # the released code scores an image without a prediction as 1
        full = np.ones(len(results))
        full[[i for i, r in enumerate(results) if r.ok]] = pred
        summary["metrics_failures_as_1"] = metrics.evaluate(full, np.asarray(mos), resamples=0)
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
) -> dict | None:
    """`llmiqa eval`: score, then replace the results, metrics and report of `out`.

    A shard only fills the store; the run without --shard then finds every rating stored.
    With `ray`, a Ray cluster fills the store first (llmiqa.distributed), then the same
    single-process code collects the results from it without calling a model.
    """
    if ray is not None and shard is not None:
        raise RunError("--ray and --shard do not go together: Ray spreads the work itself")
    started = time.perf_counter()
    with locked(out, shared=shard is not None), ExitStack() as cleanup:
        dataset = config.load_dataset()
        dataset.check_images()
        samples = shard_of(config.samples(dataset), shard)
        cluster = None
        if ray is not None:
            from llmiqa.distributed import RayCluster

            cluster = cleanup.enter_context(RayCluster(ray))
        overrides = cluster.overrides(config.scoring) if cluster else {}
        scorer = config.scorer(out, progress=True, **overrides)  # models and store checked
        invocation = {"run": config.run_id, "started": time.time(), "shard": shard}
        finished = False
        try:
            paths = [dataset.path(s) for s in samples]
            inputs = cluster.fill(scorer, paths) if cluster else paths
            results = [
                replace(result, name=sample.image)
                for sample, result in zip(samples, scorer.iter_score(inputs), strict=True)
            ]
            if cluster is not None:
                cluster.account(scorer.usage)
            finished = True
        finally:
            invocation.update(
                seconds=time.perf_counter() - started, finished=finished,
                usage={k: v for k, v in scorer.usage.as_dict().items() if k != "notes"},
            )  # fmt: skip
            _log_invocation(out, invocation)
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
        _publish(out, config, results, mos, summary, scorer)
    return summary


def invocations(out: Path) -> list[dict]:
    file = out / INVOCATIONS
    if not file.is_file():
        return []
    entries = []
    for line in file.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash: that invocation's time is unknown
    return entries


def _log_invocation(out: Path, entry: dict) -> None:
    try:
        with open(out / INVOCATIONS, "a") as log:
            log.write(json.dumps(strict_json(entry)) + "\n")
    except OSError:
        pass  # the log only informs the report; losing a line loses no result


def _publish(out, config, results, mos, summary, scorer) -> None:
    """Every output of a finished run, each replaced atomically, config.json last."""
    from llmiqa.report import build_report

    run_id = config.run_id
    write_atomic(out / RESULTS, results_jsonl(results, mos, run_id))
    write_atomic(out / ARRAYS, arrays_npz(results, mos, run_id))
    write_atomic(out / TABLE, results_csv(results, mos))
    write_atomic(out / METRICS, json.dumps(strict_json(summary), indent=2) + "\n")
    segmenter = scorer.segmenter

    def masks(digest: str):
        return None if segmenter is None else scorer.store.masks(digest, segmenter.identity)

    dataset = config.load_dataset()
    report = build_report(
        title=f"LLM-IQA benchmark report: {config.dataset['name']}",
        settings=_settings_rows(config, summary),
        results=results,
        mos=mos,
        summary=summary,
        image_dir=dataset.image_dir,
        masks=masks,
        regions=build(RegionSettings, config.scoring),
        words=build(Standard, config.scoring).descriptions,
    )
    report.write(out, write_atomic)
    write_atomic(out / CONFIG, config.to_json())


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
        ("Standard", f"{s['standard']}, K = {s['levels']}, {s['wording']} wording"),
        ("Region mode", regions),
        ("Readout", s["readout"]),
        ("Score", f"(g·s_global + λ·s_local + c·N){' / (g + λ)' if s['normalize'] else ''}"
                  f" with {weights}"),
        ("Region weighting", s["aggregate"]),
        ("Run id", config.run_id),
    ]  # fmt: skip


# ---- ablations ------------------------------------------------------------------------

# Variants computed from stored ratings alone: zero model calls.
AGGREGATION_VARIANTS: tuple[tuple[str, dict], ...] = (
    ("readout=expected", {"readout": "expected"}),
    ("readout=argmax", {"readout": "argmax"}),
    ("readout=greedy (released code)", {"readout": "greedy"}),
    ("view=global (Table 3, exp. 6)", {"lam": 0.0, "count_weight": 0.0}),
    ("view=local (Table 3, exp. 7)", {"global_weight": 0.0, "count_weight": 0.0}),
    ("weighting=mean (Table 3, exp. 4)", {"weighting": "mean"}),
    ("weighting=area", {"weighting": "area"}),
    *((f"lambda={lam:g}", {"lam": lam}) for lam in (0.25, 0.5, 1.0, 2.0, 4.0)),
    ("count weight=0.1 (released code)", {"count_weight": 0.1}),
    ("no complement region (Table 5)", {"complement": False}),
)
# Variants that need ratings of other prompts or sub-images: they reuse the store.
RATING_AXES: dict[str, list[tuple[str, dict]]] = {
    "standard": [(f"standard={kind}", {"standard": kind}) for kind in KINDS],
    "levels": [(f"levels={k}", {"levels": k}) for k in LEVELS],
    "region-mode": [(f"region-mode={mode}", {"region_mode": mode}) for mode in REGION_MODES],
    # Table 5: SAM2's own generator settings (fine masks) against the run's
    "masks": [
        (
            "masks=SAM2 defaults (Table 5)",
            {
                "points_per_side": 32,
                "pred_iou_thresh": 0.8,
                "stability_score_thresh": 0.95,
                "stability_score_offset": 1.0,
                "box_nms_thresh": 0.7,
            },
        ),
        ("masks=the run's", {}),
    ],
}


@dataclass(frozen=True)
class Row:
    variant: str
    metrics: dict
    new_ratings: int
    scored: int
    note: str = ""  # why a metric is NaN, when one is


def _row(variant: str, pred: np.ndarray, mos: np.ndarray, new_ratings: int) -> Row:
    values = metrics.evaluate(pred, mos, resamples=0)
    reasons = sorted({values[m]["reason"] for m in metrics.METRICS if values[m]["reason"]})
    return Row(
        variant,
        {m: values[m]["value"] for m in metrics.METRICS},
        new_ratings,
        int(pred.size),
        "; ".join(reasons),
    )


def aggregation_rows(
    arrays: RatingArrays, truth: np.ndarray, models: Sequence[str], base: Aggregation
) -> Iterator[Row]:
    """Readout, view, weighting, λ, count and ensemble variants of the scored images:
    whole-run arrays, no model."""
    for variant, change in AGGREGATION_VARIANTS:
        yield _row(variant, aggregate.scores(arrays, replace(base, **change)).score, truth, 0)
    if len(models) > 1:
        for index, model in enumerate(models):
            alone = aggregate.scores(arrays, base).s_model[:, index]
            yield _row(f"model={model} alone", alone, truth, 0)
        yield _row("ensemble (Table 3, exp. 9)", aggregate.scores(arrays, base).score, truth, 0)


def rating_rows(config: RunConfig, out: Path, axes: Sequence[str]) -> Iterator[Row]:
    """Standard kind, K, region mode and masks: rescored through the store, rating what is
    missing."""
    if not axes:
        return
    dataset = config.load_dataset()
    samples = config.samples(dataset)
    paths = [dataset.path(s) for s in samples]
    truth = np.array([s.mos for s in samples])
    for axis in axes:
        for variant, change in RATING_AXES[axis]:
            scorer = config.scorer(out, progress=True, **change)
            results = scorer.score(paths)
            yield _row(variant, *scored(results, truth), new_ratings=scorer.usage.rated)


def ablate(out: Path, axes: Sequence[str] = ()) -> list[Row]:
    config = RunConfig.read(out)
    rows = []
    scored = read_arrays(out, config.run_id)
    if scored is not None:
        rows += aggregation_rows(*scored, build(Aggregation, config.scoring))
    rows += rating_rows(config, out, axes)
    return rows


# ---- the whole run as arrays ------------------------------------------------------------


def arrays_npz(results: Sequence[ImageResult], mos: Sequence[float], run_id: str) -> bytes:
    """ARRAYS: the scored images' ratings as one padded array set, with their MOS: what
    every zero-call ablation reads (results.jsonl holds the same, slower to parse)."""
    keep = [i for i, r in enumerate(results) if r.ok]
    buffer = io.BytesIO()
    if keep:
        arrays = stack([results[i] for i in keep])
        fields = {name: getattr(arrays, name) for name in RatingArrays.__dataclass_fields__}
        models = np.array(results[keep[0]].models)
    else:
        fields, models = {}, np.array([], dtype=str)
    np.savez(buffer, run=np.array(run_id), mos=np.asarray(mos, dtype=float)[keep],
             models=models, **fields)  # fmt: skip
    return buffer.getvalue()


def read_arrays(out: Path, run_id: str) -> tuple[RatingArrays, np.ndarray, list[str]] | None:
    """The scored images as arrays, their MOS and the models; None when nothing was scored."""
    file = out / ARRAYS
    try:
        with np.load(file) as data:
            if str(data["run"]) != run_id:
                raise ValueError(f"from run {data['run']}, not {run_id} of {CONFIG}")
            if "logprobs" not in data:
                return None
            fields = {name: data[name] for name in RatingArrays.__dataclass_fields__}
            return RatingArrays(**fields), data["mos"], [str(m) for m in data["models"]]
    except FileNotFoundError:
        raise RunError(f"{out}: no {ARRAYS}; rerun llmiqa eval (it reads the store)") from None
    except (OSError, ValueError, KeyError) as error:
        raise RunError(f"{file}: not the run's arrays ({one_line(error)})") from None


def rows_markdown(rows: Sequence[Row]) -> str:
    header = "| variant | SRCC | PLCC | PLCC (fit) | KRCC | RMSE (fit) | images | new ratings |"
    lines = [header, "|" + "---|" * 8]
    notes = []
    for row in rows:
        m = row.metrics
        mark = ""
        if row.note:
            notes.append(row.note)
            mark = f" [{len(notes)}]"
        lines.append(
            f"| {row.variant}{mark} | {m['srcc']:.4f} | {m['plcc']:.4f} | {m['plcc_fit']:.4f} "
            f"| {m['krcc']:.4f} | {m['rmse_fit']:.4f} | {row.scored} | {row.new_ratings} |"
        )
    lines += ["", *(f"[{i}] NaN because {note}" for i, note in enumerate(notes, 1))]
    return "\n".join(lines).rstrip()
