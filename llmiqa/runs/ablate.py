"""`llmiqa ablate`: the paper's ablations from a run folder, from stored ratings where the
variant needs no new ones (zero model calls), through the store where it does."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from llmiqa.evaluation import correlation
from llmiqa.inputs.shards import read
from llmiqa.method import aggregate
from llmiqa.method.aggregate import Aggregation, RatingArrays
from llmiqa.method.regions import REGION_MODES
from llmiqa.method.results import stack
from llmiqa.method.standards import KINDS, LEVELS, QUESTIONS
from llmiqa.runs.collection import is_collection, listed, read_collection
from llmiqa.runs.config import RunConfig
from llmiqa.runs.evaluate import in_order, scored
from llmiqa.runs.files import read_arrays, strict_json
from llmiqa.runs.publish import attach, current
from llmiqa.scoring.knobs import build

# Every readout the stored quantities allow (RatingArrays.readouts), so named.
READOUT_NAMES = {
    "expected": "readout=expected",
    "argmax": "readout=argmax",
    "greedy": "readout=greedy (released code)",
    "qalign": "readout=qalign (Q-Align)",
    "qbench": "readout=qbench (Q-Bench A3)",
    "sepiqa": "readout=sepiqa (SeP-IQA)",
}
# Variants computed from stored ratings alone: zero model calls. All but the first
# combine the regions' ratings: a run without regions cannot have them.
AGGREGATION_VARIANTS: tuple[tuple[str, dict], ...] = (
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
    "kind": [(f"kind={kind}", {"kind": kind}) for kind in KINDS if kind not in QUESTIONS],
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


NO_REGIONS = "n/a: no regions in this run (--region-mode whole-only)"
# A collection has no MOS: each variant's scores are described, not correlated.
STATISTICS = ("mean", "std", "min", "max")


@dataclass(frozen=True)
class Row:
    variant: str
    metrics: dict  # correlation.METRICS against MOS; STATISTICS of a collection's scores
    new_ratings: int
    scored: int
    note: str = ""  # why a metric is NaN, or why the fitted PLCC misleads
    failed: int = 0  # images that could not be rated for it (new ratings only)
    scores: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def absent(cls, variant: str, why: str, names: Sequence[str] = correlation.METRICS) -> Row:
        """A variant whose inputs the run does not have: no numbers, and why."""
        return cls(variant, dict.fromkeys(names, float("nan")), 0, 0, why)

    def record(self) -> dict:
        """The row as JSON-ready data (its scores are saved apart)."""
        return {name: value for name, value in vars(self).items() if name != "scores"}


def _row(variant: str, pred: np.ndarray, mos: np.ndarray | None, new_ratings: int) -> Row:
    """A variant's row: its agreement with MOS, or without MOS (a collection) its scores'
    statistics, with the scores kept for ablation-scores.csv."""
    if mos is None:
        stats = dict(zip(STATISTICS, (np.mean, np.std, np.min, np.max), strict=True))
        values = {name: float(f(pred)) if pred.size else float("nan")
                  for name, f in stats.items()}  # fmt: skip
        return Row(variant, values, new_ratings, int(pred.size), scores=pred)
    values = correlation.evaluate(pred, mos, resamples=0)
    notes = sorted({f"NaN because {values[m]['reason']}" for m in correlation.METRICS
                    if values[m]["reason"]})  # fmt: skip
    if values["fit_warning"]:
        notes.append(f"PLCC (fit): {values['fit_warning']}")
    return Row(
        variant,
        {m: values[m]["value"] for m in correlation.METRICS},
        new_ratings,
        int(pred.size),
        "; ".join(notes),
    )


def readout_name(how: str, question: str) -> str:
    """A readout's row name; one of another protocol read from this run's question says
    so (Q-Align's readout of SeP-IQA's question is not `--preset qalign`'s result)."""
    name = READOUT_NAMES[how]
    if how in QUESTIONS and question in QUESTIONS and how != question:
        name = name.removesuffix(")") + f", read from the {question} question)"
    return name


def aggregation_rows(
    arrays: RatingArrays,
    truth: np.ndarray | None,
    models: Sequence[str],
    base: Aggregation,
    question: str = "word",
) -> Iterator[Row]:
    """Readout, view, weighting, λ, count and ensemble variants of the scored images:
    whole-run arrays, no model. The readouts are those the stored quantities allow: the
    digits' on a digit-answer run, SeP-IQA's, Q-Align's and Q-Bench's on a word run
    (`question`: the standard kind the run was rated with). `truth` None: a collection's
    scores, described."""
    names = correlation.METRICS if truth is not None else STATISTICS
    for how in arrays.readouts:
        scores = aggregate.scores(arrays, replace(base, readout=how)).score
        yield _row(readout_name(how, question), scores, truth, 0)
    regions = bool(arrays.present.any())
    for index, (variant, change) in enumerate(AGGREGATION_VARIANTS):
        if index and not regions:
            yield Row.absent(variant, NO_REGIONS, names)
            continue
        yield _row(variant, aggregate.scores(arrays, replace(base, **change)).score, truth, 0)
    if len(models) > 1:
        for index, model in enumerate(models):
            alone = aggregate.scores(arrays, base).s_model[:, index]
            yield _row(f"model={model} alone", alone, truth, 0)
        yield _row("ensemble (Table 3, exp. 9)", aggregate.scores(arrays, base).score, truth, 0)


def rating_rows(
    config: RunConfig, out: Path, axes: Sequence[str], progress: bool = False
) -> Iterator[Row]:
    """Standard kind, K, region mode and masks: rescored through the store, rating what is
    missing."""
    if not axes:
        return
    collection = is_collection(config)
    names = STATISTICS if collection else correlation.METRICS
    whole_only = config.scoring["region_mode"] == "whole-only"
    for axis in axes:
        for variant, change in RATING_AXES[axis]:
            if axis == "masks" and whole_only:  # SAM2's settings change nothing without it
                yield Row.absent(variant, NO_REGIONS, names)
                continue
            scorer = config.scorer(out, progress=progress, **change)
            results, truth = _rescored(config, scorer)
            if collection:
                ok = [r for r in results if r.ok]
                pred = aggregate.scores(stack(ok), ok[0].aggregation).score if ok else np.array([])
                row = _row(variant, pred, None, new_ratings=scorer.usage.rated)
            else:
                row = _row(variant, *scored(results, truth), new_ratings=scorer.usage.rated)
            failures = [r.error for r in results if not r.ok]
            if failures:
                said = f"{len(failures)} of {len(results)} images failed (first: {failures[0]})"
                note = "; ".join(filter(None, [row.note, said]))
                row = replace(row, note=note, failed=len(failures))
            yield row


def _rescored(config: RunConfig, scorer) -> tuple[list, np.ndarray | None]:
    """The run's images scored, read lazily, and their MOS (None for a collection: its
    inputs, in its shards' order; damaged shards give what they still hold)."""
    if is_collection(config):
        shards = listed(config).shards
        images = (item.image for shard in shards for item in read(shard, lambda _: None))
        return list(scorer.iter_score(images)), None
    dataset = config.load_dataset()
    samples = config.samples(dataset)
    return in_order(scorer, dataset.images(samples), samples), np.array([s.mos for s in samples])


def ablate(out: Path, axes: Sequence[str] = (), progress: bool = False) -> list[Row]:
    """The rows (`save` keeps them beside the run's outputs); `progress` draws a bar for
    each rescoring."""
    published = current(out)  # one publication, read whole
    config = RunConfig.read(published)
    base = build(Aggregation, config.scoring)
    question = config.scoring["kind"]
    rows = []
    if is_collection(config):
        results = read_collection(published, config)
        if results:
            models = list(results[0].models)
            rows += aggregation_rows(stack(results), None, models, base, question=question)
    elif (scored := read_arrays(published, config.run_id)) is not None:
        rows += aggregation_rows(*scored, base, question=question)
    rows += rating_rows(config, out, axes, progress)
    return rows


def save(out: Path, rows: Sequence[Row]) -> None:
    """ablation.csv and ablation.json beside the run's outputs, and a collection's
    per-variant scores as ablation-scores.csv (a RunError, the rows untouched, where the
    folder cannot be written)."""
    config = RunConfig.read(current(out))
    run_id = config.run_id
    records = [{"run": run_id, **row.record()} for row in rows]
    files = {"ablation.json": json.dumps(strict_json(records), indent=1) + "\n",
             "ablation.csv": rows_csv(rows, run_id)}  # fmt: skip
    if is_collection(config):
        ids = [result.name for result in read_collection(current(out), config)]
        files["ablation-scores.csv"] = scores_csv(ids, rows)
    attach(out, files)


def scores_csv(ids: Sequence[str], rows: Sequence[Row]) -> str:
    """Each scored input's score under each variant that has scores for all of them."""
    kept = [row for row in rows if row.scores is not None and row.scores.size == len(ids)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", *(row.variant for row in kept)])
    for index, id in enumerate(ids):
        writer.writerow([id, *(f"{row.scores[index]:.6f}" for row in kept)])
    return buffer.getvalue()


def rows_csv(rows: Sequence[Row], run_id: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = list(rows[0].metrics) if rows else list(correlation.METRICS)
    writer.writerow(["run", "variant", *names, "images", "new_ratings", "note"])
    for row in rows:
        values = [_number(row.metrics[m], "{:.6f}", "") for m in names]
        writer.writerow([run_id, row.variant, *values, row.scored, row.new_ratings, row.note])
    return buffer.getvalue()


def rows_markdown(rows: Sequence[Row]) -> str:
    columns = {"srcc": "SRCC", "plcc": "PLCC", "plcc_fit": "PLCC (fit)", "krcc": "KRCC",
               "rmse_fit": "RMSE (fit)"}  # fmt: skip
    if rows and "srcc" not in rows[0].metrics:  # a collection's: its scores described
        columns = {name: f"score {name}" for name in STATISTICS}
    header = f"| variant | {' | '.join(columns.values())} | images | new ratings |"
    lines = [header, "|" + "---|" * (len(columns) + 3)]
    notes: dict[str, int] = {}  # note -> its number: rows that share a note share its mark
    for row in rows:
        m = row.metrics
        mark = ""
        if row.note:
            mark = f" [{notes.setdefault(row.note, len(notes) + 1)}]"
        values = " | ".join(_number(m[name], "{:.4f}", "n/a") for name in columns)
        lines.append(f"| {row.variant}{mark} | {values} | {row.scored} | {row.new_ratings} |")
    lines += ["", *(f"[{i}] {note}" for note, i in notes.items())]
    return "\n".join(lines).rstrip()


def _number(value: float, form: str, missing: str) -> str:
    return form.format(value) if np.isfinite(value) else missing
