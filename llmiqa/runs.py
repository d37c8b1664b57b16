"""Benchmark runs: score a dataset into a run folder, then ablate from what is stored.

A run folder holds everything needed to resume, recompute and report:

    config.json     the dataset and every scoring option (resolved)
    store.sqlite    masks and K-level probabilities (unless --store points elsewhere)
    results.jsonl   one ImageResult per image, with its MOS: all probabilities kept
    results.csv     one row per image: image, mos, score, s_global, s_local, regions, error
    metrics.json    SRCC, KRCC, PLCC (raw and after the logistic fit), RMSE, with intervals
    report.md/.html the metrics, plots and example images
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from llmiqa import __version__, metrics
from llmiqa.datasets import Dataset, load_dataset
from llmiqa.options import make_scorer
from llmiqa.pipeline import Scorer
from llmiqa.regions import REGION_MODES
from llmiqa.results import Aggregation, ImageResult
from llmiqa.standards import KINDS, LEVELS

CONFIG, RESULTS, TABLE, METRICS = "config.json", "results.jsonl", "results.csv", "metrics.json"


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run, as written to config.json."""

    dataset: dict  # load_dataset keyword arguments, name and root included
    scoring: dict  # resolved scoring options (see options.DEFAULTS)
    limit: int | None = None
    store: str | None = None  # None: store.sqlite inside the run folder

    def load_dataset(self) -> Dataset:
        return load_dataset(**self.dataset)

    def samples(self, dataset: Dataset) -> list:
        samples = list(dataset.samples)
        return samples[: self.limit] if self.limit else samples

    def store_path(self, out: Path) -> Path:
        return Path(self.store) if self.store else out / "store.sqlite"

    def scorer(self, out: Path, progress: bool = False, **overrides) -> Scorer:
        """A Scorer for this run; `overrides` change scoring options (for ablations)."""
        return make_scorer({**self.scoring, **overrides}, self.store_path(out), progress)

    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        record = {"llmiqa": __version__, **vars(self)}
        (out / CONFIG).write_text(json.dumps(record, indent=2, default=str) + "\n")

    @classmethod
    def read(cls, out: Path) -> RunConfig:
        file = out / CONFIG
        if not file.is_file():
            raise FileNotFoundError(f"{out}: not a run folder (no {CONFIG})")
        record = json.loads(file.read_text())
        record.pop("llmiqa", None)
        return cls(**record)


def shard_of(samples: Sequence, shard: tuple[int, int] | None) -> list:
    """Samples i, i+n, i+2n, ... for shard (i, n): one process per GPU, one shared store."""
    if shard is None:
        return list(samples)
    index, count = shard
    return list(samples)[index::count]


def score_dataset(
    config: RunConfig, out: Path, shard: tuple[int, int] | None = None
) -> tuple[list[ImageResult], list[float], Scorer]:
    """Score every sample (or one shard) through the store; write results.jsonl as we go."""
    dataset = config.load_dataset()
    dataset.check_images()
    samples = shard_of(config.samples(dataset), shard)
    scorer = config.scorer(out, progress=True)
    results, mos = [], []
    name = RESULTS if shard is None else f"shard-{shard[0]}-of-{shard[1]}.jsonl"
    with open(out / name, "w") as lines:
        paths = [dataset.path(s) for s in samples]
        for sample, result in zip(samples, scorer.iter_score(paths), strict=True):
            result = replace(result, name=sample.image)
            results.append(result)
            mos.append(sample.mos)
            lines.write(json.dumps({**result.to_dict(), "mos": sample.mos}) + "\n")
    return results, mos, scorer


def strict_json(value):
    """NaN -> null, recursively: metrics.json must parse in any JSON reader, not just Python."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def read_results(out: Path) -> tuple[list[ImageResult], np.ndarray]:
    """The results of a finished run, rebuilt from results.jsonl (no model, no store)."""
    file = out / RESULTS
    if not file.is_file():
        raise FileNotFoundError(f"{out}: no {RESULTS}; run llmiqa eval first")
    records = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return [ImageResult.from_dict(r) for r in records], np.array([r["mos"] for r in records])


def scored(results: Sequence[ImageResult], mos: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and MOS of the images that were scored (failures left out, and counted)."""
    keep = [i for i, r in enumerate(results) if r.ok]
    return np.array([results[i].score for i in keep]), np.asarray(mos, dtype=float)[keep]


def write_table(out: Path, results: Sequence[ImageResult], mos: Sequence[float]) -> None:
    with open(out / TABLE, "w", newline="") as file:
        writer = csv.writer(file)
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
                    len(result.regions),
                    "",
                ]
            )


def summarize(
    results: Sequence[ImageResult],
    mos: Sequence[float],
    scorer: Scorer,
    seconds: float,
    resamples: int,
) -> dict:
    pred, truth = scored(results, mos)
    failures = [{"image": r.name, "error": r.error} for r in results if not r.ok]
    return {
        "images": len(results),
        "scored": int(pred.size),
        "failed": len(failures),
        "metrics": metrics.evaluate(pred, truth, resamples=resamples),
        "seconds": {"total": seconds, **dict(scorer.seconds)},
        "model_calls": scorer.stats["model calls"],
        "sub_images_rated": scorer.stats["rated"],
        "sub_images_from_store": scorer.stats["from store"],
        "segmented": scorer.stats["segmented"],
        "masks_from_store": scorer.stats["masks from store"],
        "failures": failures,
    }


def evaluate_run(
    config: RunConfig, out: Path, shard: tuple[int, int] | None = None, resamples: int = 1000
) -> dict | None:
    """`llmiqa eval`: score, then write the table, the metrics and the report.

    A shard only fills the store; the run without --shard then finds every rating stored.
    """
    config.save(out)
    started = time.perf_counter()
    results, mos, scorer = score_dataset(config, out, shard)
    if shard is not None:
        return None
    write_table(out, results, mos)
    summary = summarize(results, mos, scorer, time.perf_counter() - started, resamples)
    (out / METRICS).write_text(json.dumps(strict_json(summary), indent=2) + "\n")
    from llmiqa.report import write_report

    write_report(out, config, results, mos, summary)
    return summary


# ---- ablations ------------------------------------------------------------------------

# Variants computed from stored probabilities alone: zero model calls.
AGGREGATION_VARIANTS: tuple[tuple[str, dict], ...] = (
    ("readout=expected", {"readout": "expected"}),
    ("readout=argmax", {"readout": "argmax"}),
    ("view=global (Table 3, exp. 6)", {"view": "global"}),
    ("view=local (Table 3, exp. 7)", {"view": "local"}),
    ("view=both (Table 3, exp. 8)", {"view": "both"}),
    ("weighting=mean (Table 3, exp. 4)", {"weighting": "mean"}),
    ("weighting=area", {"weighting": "area"}),
    *((f"lambda={lam:g}", {"lam": lam}) for lam in (0.25, 0.5, 1.0, 2.0, 4.0)),
    ("no complement region (Table 5)", {"complement": False}),
)
# Variants that need ratings of other prompts or sub-images: they reuse the store.
RATING_AXES: dict[str, list[tuple[str, dict]]] = {
    "standard": [(f"standard={kind}", {"standard": kind}) for kind in KINDS],
    "levels": [(f"levels={k}", {"levels": k}) for k in LEVELS],
    "region-mode": [(f"region-mode={mode}", {"region_mode": mode}) for mode in REGION_MODES],
    # Table 5: SAM2's own generator settings (fine masks) against our coarse defaults
    "masks": [
        (
            "masks=SAM2 defaults (Table 5)",
            {
                "points_per_side": 32,
                "pred_iou_thresh": 0.8,
                "stability_score_thresh": 0.95,
                "box_nms_thresh": 0.7,
            },
        ),
        ("masks=coarse (ours)", {}),
    ],
}


@dataclass(frozen=True)
class Row:
    variant: str
    metrics: dict
    model_calls: int
    scored: int


def _row(variant: str, pred: np.ndarray, mos: np.ndarray, calls: int) -> Row:
    values = metrics.evaluate(pred, mos, resamples=0)
    return Row(variant, {m: values[m]["value"] for m in metrics.METRICS}, calls, int(pred.size))


def aggregation_rows(
    results: Sequence[ImageResult], mos: np.ndarray, base: Aggregation
) -> Iterator[Row]:
    """Readout, view, weighting, λ and ensemble variants: pure recomputation."""
    for variant, change in AGGREGATION_VARIANTS:
        rescored = [r.rescored(replace(base, **change)) for r in results]
        yield _row(variant, *scored(rescored, mos), calls=0)
    models = next((r.models for r in results if r.ok), ())
    if len(models) > 1:
        for index, model in enumerate(models):
            alone = [r.only_model(index) for r in results]
            yield _row(f"model={model} alone", *scored(alone, mos), calls=0)
        yield _row("ensemble (Table 3, exp. 9)", *scored(results, mos), calls=0)


def rating_rows(config: RunConfig, out: Path, axes: Sequence[str]) -> Iterator[Row]:
    """Standard kind, K and region mode: rescored through the store, rating what is missing."""
    dataset = config.load_dataset()
    samples = config.samples(dataset)
    paths = [dataset.path(s) for s in samples]
    truth = np.array([s.mos for s in samples])
    for axis in axes:
        for variant, change in RATING_AXES[axis]:
            scorer = config.scorer(out, progress=True, **change)
            results = scorer.score(paths)
            yield _row(variant, *scored(results, truth), calls=scorer.stats["model calls"])


def ablate(out: Path, axes: Sequence[str] = ()) -> list[Row]:
    config = RunConfig.read(out)
    results, mos = read_results(out)
    base = next((r.aggregation for r in results if r.ok), Aggregation())
    rows = list(aggregation_rows(results, mos, base))
    rows += rating_rows(config, out, axes)
    return rows


def rows_markdown(rows: Sequence[Row]) -> str:
    header = "| variant | SRCC | PLCC | PLCC (fit) | KRCC | RMSE (fit) | images | model calls |"
    lines = [header, "|" + "---|" * 8]
    for row in rows:
        m = row.metrics
        lines.append(
            f"| {row.variant} | {m['srcc']:.4f} | {m['plcc']:.4f} | {m['plcc_fit']:.4f} "
            f"| {m['krcc']:.4f} | {m['rmse_fit']:.4f} | {row.scored} | {row.model_calls} |"
        )
    return "\n".join(lines)
