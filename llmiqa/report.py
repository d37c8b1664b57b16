"""The benchmark report of a run: report.md (+ figures/) and one self-contained report.html.

Both files are rendered from the same sections (text, tables, PNG figures), so they cannot
disagree. The pieces are built by pure functions; only `example_figures` and
`write_report` touch the disk. Figures use matplotlib's Agg canvas directly (no pyplot, no
display, nothing left open). A report must never sink a run that took hours: degenerate
runs (nothing scored, one image, constant scores, NaN metrics) get a report that says what
is wrong, and an example image that cannot be drawn is skipped with a note.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from scipy import stats

from llmiqa import metrics
from llmiqa.draw import draw_regions
from llmiqa.images import load_image
from llmiqa.results import ImageResult
from llmiqa.standards import WORDS

if TYPE_CHECKING:  # runs imports torch through the pipeline; the report needs neither
    from llmiqa.pipeline import Scorer
    from llmiqa.runs import RunConfig

FAILURES_SHOWN = 20
EXAMPLE_SIDE = 512  # long side of an embedded example, in pixels
BINS = 30
NAMES = {
    "srcc": "SRCC",
    "krcc": "KRCC",
    "plcc": "PLCC (raw)",
    "plcc_fit": "PLCC (after logistic fit)",
    "rmse_fit": "RMSE (after logistic fit, MOS units)",
}
CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .8em 0; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td { font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #555; }
"""


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Png:
    name: str  # file name under figures/
    data: bytes
    caption: str


Block = str | Table | Png
Section = tuple[str, list[Block]]


# ---- numbers and tables ----------------------------------------------------------------


def _num(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if np.isfinite(value) else "NaN"


def kept(
    results: Sequence[ImageResult], mos: Sequence[float]
) -> tuple[list[ImageResult], np.ndarray, np.ndarray]:
    """The scored results with their predictions and MOS (failures have no score)."""
    pairs = [(r, float(m)) for r, m in zip(results, mos, strict=True) if r.ok]
    ok = [r for r, _ in pairs]
    return ok, np.array([r.score for r in ok]), np.array([m for _, m in pairs])


def run_table(config: RunConfig, summary: dict) -> Table:
    """What was scored and how: enough to tell two reports apart at a glance."""
    s = config.scoring
    options = ", ".join(f"{k}={v}" for k, v in config.dataset.items() if k != "name")
    images = f"{summary['scored']} scored, {summary['failed']} failed, of {summary['images']}"
    if config.limit:
        images += f" (limited to the first {config.limit})"
    regions = s["region_mode"]
    if regions != "whole-only":
        regions += f" (segmenter {s['segmenter']}, min area t = {s['min_area']:.1%} of the image)"
    rows = (
        ("Dataset", f"{config.dataset['name']} ({options})"),
        ("Images", images),
        ("Models", ", ".join(s["model"])),
        ("Standard", f"{s['standard']}, K = {s['levels']}"),
        ("Region mode", regions),
        ("Readout", s["readout"]),
        ("λ (local weight)", f"{s['lam']:g}"),
        ("Region weighting", s["aggregate"]),
    )
    return Table(("Setting", "Value"), rows)


def metrics_blocks(values: dict) -> list[Block]:
    """The metrics table with intervals, what the intervals are, and the logistic fit."""
    level = f"{values['level']:.0%}"
    resamples = values["resamples"]
    rows = []
    for name in metrics.METRICS:
        m = values[name]
        lo, hi = m["ci"]
        if resamples == 0:
            ci = "not computed"
        elif np.isfinite(lo):
            ci = f"[{_num(lo)}, {_num(hi)}]"
            if m["ci_resamples"] < resamples:
                ci += f" ({m['ci_resamples']} of {resamples} resamples defined)"
        else:
            ci = "NaN (no resample defined)"
        rows.append((NAMES[name], _num(m["value"]), ci, m["reason"] or ""))
    text = f"n = {values['n']} pairs of (MOS, predicted score)."
    if resamples:
        text += (
            f" {level} intervals: percentile bootstrap over {resamples} resamples of the"
            f" pairs (seed {values['seed']}), the logistic refitted on each."
        )
    betas = values["logistic"]
    if betas is None:
        fit = f"No logistic fit: {values['plcc_fit']['reason']}."
    else:
        fit = (
            "Logistic fit (VQEG 4-parameter, MOS ≈ (β1 − β2) / (1 + exp(−(s − β3) / β4)) + β2):"
            f" β = ({', '.join(f'{b:.4g}' for b in betas)})."
        )
    table = Table(("Metric", "Value", f"{level} CI", "Why NaN"), tuple(rows))
    return [text, table, fit]


def cost_blocks(summary: dict) -> list[Block]:
    """Where the time went, and how much came from the store instead of a model."""
    seconds = summary["seconds"]
    total = seconds["total"]
    rows = [
        (stage, f"{value:.1f}", f"{value / total:.0%}" if total > 0 else "")
        for stage, value in seconds.items()
        if stage != "total"
    ]
    rows.append(("total (wall clock)", f"{total:.1f}", "100%"))
    per_image = total / summary["images"] if summary["images"] else float("nan")
    note = (
        f"{_num(per_image, 2)} s per image. Images are decoded in a background thread,"
        " so the stages may overlap."
    )
    work = Table(
        ("Work", "Count"),
        (
            ("model calls (batches)", str(summary["model_calls"])),
            ("sub-images rated by a model", str(summary["sub_images_rated"])),
            ("sub-images served from the store", str(summary["sub_images_from_store"])),
            ("images segmented", str(summary["segmented"])),
            ("segmentations served from the store", str(summary["masks_from_store"])),
        ),
    )
    return [Table(("Stage", "Seconds", "Share"), tuple(rows)), note, work]


def failure_blocks(failures: Sequence[dict]) -> list[Block]:
    shown = failures[:FAILURES_SHOWN]
    text = f"{len(failures)} image(s) failed and are left out of every metric"
    text += f"; the first {len(shown)}:" if len(shown) < len(failures) else ":"
    rows = tuple((f["image"], f["error"]) for f in shown)
    return [text, Table(("Image", "Error"), rows)]


def problems(summary: dict, pred: np.ndarray) -> list[str]:
    """What a reader must know before trusting the numbers."""
    found = []
    if summary["images"] == 0:
        found.append("The run holds no images.")
    elif summary["scored"] == 0:
        found.append(f"No image was scored: all {summary['images']} failed (see Failures).")
    elif summary["failed"]:
        found.append(f"{summary['failed']} of {summary['images']} images failed (see Failures).")
    if pred.size > 1 and np.ptp(pred) == 0:
        found.append(
            f"Every scored image got the same score ({pred[0]:.4f}): it ranks nothing, and"
            " the example picks are arbitrary."
        )
    undefined: dict[str, list[str]] = {}
    for name in metrics.METRICS:
        reason = summary["metrics"][name]["reason"]
        if reason:
            undefined.setdefault(reason, []).append(NAMES[name])
    found += [f"{', '.join(names)}: NaN ({reason})." for reason, names in undefined.items()]
    return found


# ---- figures -----------------------------------------------------------------------------


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def scatter_png(pred: np.ndarray, mos: np.ndarray, values: dict) -> bytes:
    """The paper's Figure 4: MOS against the predicted score, with marginal histograms."""
    figure = Figure(figsize=(6.4, 6.4), layout="constrained")
    grid = figure.add_gridspec(2, 2, width_ratios=(4, 1), height_ratios=(1, 4))
    main = figure.add_subplot(grid[1, 0])
    top = figure.add_subplot(grid[0, 0], sharex=main)
    side = figure.add_subplot(grid[1, 1], sharey=main)
    main.scatter(pred, mos, s=14, alpha=0.6, edgecolors="none", label="images")
    if values["logistic"] is not None:
        xs = np.linspace(pred.min(), pred.max(), 200)
        main.plot(xs, metrics.logistic(xs, *values["logistic"]), "C3", label="logistic fit")
    main.legend(loc="upper left", fontsize="small")
    main.set_xlabel("predicted score")
    main.set_ylabel("MOS")
    top.hist(pred, bins=BINS, color="C0")
    side.hist(mos, bins=BINS, color="C1", orientation="horizontal")
    top.tick_params(labelbottom=False)
    side.tick_params(labelleft=False)
    corner = figure.add_subplot(grid[0, 1])
    corner.axis("off")
    lines = [f"n = {pred.size}"] + [
        f"{label} {_num(values[name]['value'], 3)}"
        for name, label in (("srcc", "SRCC"), ("plcc", "PLCC"), ("plcc_fit", "PLCC fit"))
    ]
    corner.text(0, 1, "\n".join(lines), va="top", fontsize="small", family="monospace")
    return _png(figure)


def level_probs(ok: Sequence[ImageResult]) -> list[tuple[str, np.ndarray]]:
    """(label, probabilities (ratings, K)) of the whole-image ratings and of the region ratings,
    each averaged over the models."""
    groups = [("whole image", np.array([r.probs for r in ok]))]
    regional = [region.probs.mean(axis=0) for r in ok for region in r.regions]
    if regional:
        groups.append(("regions", np.array(regional)))
    return groups


def levels_png(groups: Sequence[tuple[str, np.ndarray]], words: Sequence[str]) -> bytes:
    """Mean probability per level and the share of argmax levels: how the model uses the scale."""
    levels = groups[0][1].shape[1]
    x = np.arange(1, levels + 1)
    width = 0.8 / len(groups)
    figure = Figure(figsize=(10, 3.8), layout="constrained")
    mean_axis, argmax_axis = figure.subplots(1, 2, sharex=True)
    for index, (label, probs) in enumerate(groups):
        offset = (index - (len(groups) - 1) / 2) * width
        counts = np.bincount(probs.argmax(axis=1), minlength=levels)
        legend = f"{label} ({len(probs)} ratings)"
        mean_axis.bar(x + offset, probs.mean(axis=0), width, label=legend)
        argmax_axis.bar(x + offset, counts / len(probs), width, label=legend)
    ticks = [f"{k}\n{w}" for k, w in zip(x, words, strict=True)] if words else list(x)
    for axis, title in (
        (mean_axis, "mean probability per level"),
        (argmax_axis, "share of ratings whose most probable level is k"),
    ):
        axis.set_xticks(x, ticks, fontsize="small")
        axis.set_title(title, fontsize="medium")
        axis.legend(fontsize="small")
    return _png(figure)


def rank_of(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1] (ties averaged): comparable across MOS and score scales."""
    return (stats.rankdata(values) - 1) / max(values.size - 1, 1)


def pick_examples(pred: np.ndarray, mos: np.ndarray) -> list[tuple[str, int]]:
    """(why, index) of the best and worst scored images and of the largest rank disagreements
    with MOS either way; an image picked twice is listed once with both reasons."""
    if pred.size == 0:
        return []
    picks = [("highest score", int(np.argmax(pred))), ("lowest score", int(np.argmin(pred)))]
    gap = rank_of(pred) - rank_of(mos)
    if gap.max() > 0:
        picks.append(("most overrated: score ranks far above MOS", int(np.argmax(gap))))
    if gap.min() < 0:
        picks.append(("most underrated: score ranks far below MOS", int(np.argmin(gap))))
    reasons: dict[int, list[str]] = {}
    for why, index in picks:
        reasons.setdefault(index, []).append(why)
    return [("; ".join(whys), index) for index, whys in reasons.items()]


def _example_png(path: Path, result: ImageResult, scorer: Scorer | None) -> bytes:
    """One image drawn as in the paper's Figure 6, downscaled; raises when it cannot be."""
    loaded = load_image(path)
    if loaded.digest != result.digest:
        raise ValueError("the file changed since it was scored")
    regions = []
    if result.regions:
        # Scorer.regions would run SAM2 on a miss: draw stored masks only.
        if scorer.store.masks(loaded.digest, scorer.segmenter_identity) is None:
            raise LookupError("its masks are not in the store")
        regions = scorer.regions(loaded)
    image = draw_regions(loaded.image, regions, result)
    image.thumbnail((EXAMPLE_SIDE, EXAMPLE_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def example_figures(
    out: Path, config: RunConfig, ok: Sequence[ImageResult], pred: np.ndarray, mos: np.ndarray
) -> tuple[list[Png], list[str]]:
    """The picked examples as figures, and a note for each one that could not be drawn."""
    picks = pick_examples(pred, mos)
    if not picks:
        return [], []
    try:
        dataset = config.load_dataset()
        scorer = config.scorer(out) if any(ok[i].regions for _, i in picks) else None
    except Exception as error:  # the report must not fail the run it reports on
        return [], [f"Examples skipped: {error}"]
    score_rank = stats.rankdata(-pred, method="min").astype(int)
    mos_rank = stats.rankdata(-mos, method="min").astype(int)
    figures, notes = [], []
    for number, (why, index) in enumerate(picks, 1):
        result = ok[index]
        try:
            data = _example_png(dataset.image_dir / result.name, result, scorer)
        except Exception as error:
            notes.append(f"Example {result.name} ({why}) skipped: {error}")
            continue
        caption = (
            f"{why[0].upper()}{why[1:]}: {result.name}. Score {result.score:.3f}"
            f" (rank {score_rank[index]} of {pred.size}), MOS {mos[index]:.4g}"
            f" (rank {mos_rank[index]} of {pred.size}); s_global {np.mean(result.s_global):.3f}"
        )
        if result.regions:
            caption += (
                f", s_local {np.mean(result.s_local):.3f} over {len(result.regions)} region(s)"
            )
        figures.append(Png(f"example-{number}.png", data, caption + "."))
    if scorer is not None:
        scorer.store.close()
    return figures, notes


# ---- assembling and rendering ----------------------------------------------------------


def build_sections(
    out: Path,
    config: RunConfig,
    results: Sequence[ImageResult],
    mos: Sequence[float],
    summary: dict,
) -> list[Section]:
    ok, pred, truth = kept(results, mos)
    values = summary["metrics"]
    sections: list[Section] = [("Run", [run_table(config, summary)])]
    if found := problems(summary, pred):
        sections.append(("Problems", found))
    sections.append(("Agreement with MOS", metrics_blocks(values)))
    sections.append(("Cost", cost_blocks(summary)))
    if not ok:
        sections.append(("Scores", ["Nothing was scored: no plots and no examples."]))
    else:
        scatter = Png(
            "scatter.png",
            scatter_png(pred, truth, values),
            "MOS against the predicted score, with marginal histograms (as the paper's"
            " Figure 4)" + ("; the curve is the logistic fit." if values["logistic"] else "."),
        )
        kind, levels = config.scoring["standard"], ok[0].global_probs.shape[1]
        words = WORDS.get(levels, ())[::-1] if kind != "number" else ()
        distribution = Png(
            "levels.png",
            levels_png(level_probs(ok), words),
            "Per-level probabilities over the K levels, averaged over the models: mean"
            " probability (left) and the most probable level (right).",
        )
        figures, notes = example_figures(out, config, ok, pred, truth)
        intro = "The final score is in each image's upper-left corner, as in the paper's Figure 6"
        if config.scoring["region_mode"] != "whole-only":
            intro += (
                "; regions are tinted and boxed, with their score at the box's upper left and"
                " their share of the image at its lower right"
            )
        intro += ". Disagreement compares ranks, since MOS and scores live on different scales."
        sections += [
            ("Scores against MOS", [scatter]),
            ("Per-level probabilities", [distribution]),
            ("Examples", [intro, *figures, *notes]),
        ]
    if summary["failures"]:
        sections.append(("Failures", failure_blocks(summary["failures"])))
    return sections


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, sections: Sequence[Section]) -> str:
    lines = [f"# {title}", ""]
    for heading, blocks in sections:
        lines += [f"## {heading}", ""]
        for block in blocks:
            if isinstance(block, Table):
                lines.append("| " + " | ".join(map(_md_cell, block.header)) + " |")
                lines.append("|" + "---|" * len(block.header))
                lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
            elif isinstance(block, Png):
                lines += [f"![{block.name}](figures/{block.name})", "", block.caption]
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)


def render_html(title: str, sections: Sequence[Section]) -> str:
    """One file: inline CSS and base64 PNGs, so it opens anywhere, offline, and can be mailed."""
    esc = html.escape
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">',
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for heading, blocks in sections:
        parts.append(f"<h2>{esc(heading)}</h2>")
        for block in blocks:
            if isinstance(block, Table):
                head = "".join(f"<th>{esc(cell)}</th>" for cell in block.header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>\n"
                    for row in block.rows
                )
                parts.append(f"<table>\n<tr>{head}</tr>\n{body}</table>")
            elif isinstance(block, Png):
                data = base64.b64encode(block.data).decode("ascii")
                parts.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{esc(block.name)}">'
                    f"<figcaption>{esc(block.caption)}</figcaption></figure>"
                )
            else:
                parts.append(f"<p>{esc(block)}</p>")
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


def write_report(
    out: Path,
    config: RunConfig,
    results: list[ImageResult],
    mos: list[float],
    summary: dict,
) -> None:
    """report.md with its PNGs under figures/, and the same content as one report.html."""
    sections = build_sections(out, config, results, mos, summary)
    title = f"LLM-IQA benchmark report: {config.dataset['name']}"
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for stale in figures.glob("*.png"):  # a rerun may draw fewer examples
        stale.unlink()
    for _, blocks in sections:
        for block in blocks:
            if isinstance(block, Png):
                (figures / block.name).write_bytes(block.data)
    (out / "report.md").write_text(render_markdown(title, sections))
    (out / "report.html").write_text(render_html(title, sections))
