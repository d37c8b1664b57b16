"""The benchmark report of a run: report.md (+ figures/) and one self-contained report.html.

A leaf: it takes plain data (settings rows, results with their MOS, the run's summary,
the image folder and a function returning an image's stored masks) and imports nothing
that runs a model. Both files are rendered from the same sections (text, tables, PNG
figures), so they cannot disagree. Figures use matplotlib's Agg canvas directly (no
pyplot, no display, nothing left open). A report must never sink a run that took hours:
degenerate runs (nothing scored, one image, constant scores, NaN metrics, extreme MOS
values) get a report that says what is wrong, and a figure or example image that cannot
be drawn is skipped with a note. Examples are drawn downscaled, so a huge image costs
the memory of its masks, not of a full-size drawing.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from llmiqa.errors import one_line
from llmiqa.evaluation import correlation
from llmiqa.evaluation.draw import draw_regions
from llmiqa.inputs.images import load_image
from llmiqa.method.regions import RegionSettings, select_regions
from llmiqa.method.results import ImageResult

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


def settings_table(rows: Sequence[tuple[str, str]]) -> Table:
    return Table(("Setting", "Value"), tuple(rows))


def metrics_blocks(values: dict) -> list[Block]:
    """The metrics table with intervals, what the intervals are, and the logistic fit."""
    level = f"{values['level']:.0%}"
    resamples = values["resamples"]
    rows = []
    for name in correlation.METRICS:
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
        if values.get("fit_warning"):
            fit += f" Warning: {values['fit_warning']}."
    table = Table(("Metric", "Value", f"{level} CI", "Why NaN"), tuple(rows))
    return [text, table, fit]


def cost_blocks(summary: dict) -> list[Block]:
    """Where the time went, and how much came from the store instead of a model."""
    usage = summary["usage"]
    seconds = usage["seconds"]
    total = usage["seconds_this_invocation"]
    rows = [
        (stage, f"{value:.1f}", f"{value / total:.0%}" if total > 0 else "")
        for stage, value in seconds.items()
    ]
    rows.append(("total (wall clock)", f"{total:.1f}", "100%"))
    per_image = total / summary["images"] if summary["images"] else float("nan")
    note = (
        f"This invocation of llmiqa eval: {_num(per_image, 2)} s per image; all invocations"
        f" of this run together (resumed ones included): {usage['seconds_all_invocations']:.1f}"
        f" s. Peak memory {summary['peak_memory_mb']:.0f} MB. Images are decoded in a"
        " background thread, so the stages may overlap."
    )
    work = Table(
        ("Work", "Count"),
        (
            ("sub-images rated by a model", str(usage["rated"])),
            ("sub-images served from the store", str(usage["from_store"])),
            ("stored ratings refused as invalid (rated again)", str(usage["refused"])),
            ("images segmented", str(usage["segmented"])),
            ("segmentations served from the store", str(usage["masks_from_store"])),
        ),
    )
    return [Table(("Stage", "Seconds", "Share"), tuple(rows)), note, work]


def mask_blocks(masks: dict) -> list[Block]:
    """Regions per image: the paper tuned SAM2 for 7.22 masks per SPAQ image."""
    if not masks.get("images") or masks.get("mean_objects") is None:
        return ["No image was scored."]
    text = (
        f"{masks['mean_objects']:.2f} object masks per scored image on average (median"
        f" {masks['median_objects']:g}); {masks['with_complement']} of {masks['images']} images"
        " also have a complement region. The paper tuned SAM2 for 7.22 masks per SPAQ image."
    )
    rows = tuple((count, str(images)) for count, images in masks["histogram"].items())
    return [text, Table(("Object masks", "Images"), rows)]


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
    for name in correlation.METRICS:
        reason = summary["metrics"][name]["reason"]
        if reason:
            undefined.setdefault(reason, []).append(NAMES[name])
    found += [f"{', '.join(names)}: NaN ({reason})." for reason, names in undefined.items()]
    if summary["metrics"].get("fit_warning"):
        found.append(f"PLCC after the fit: {summary['metrics']['fit_warning']}.")
    return found


# ---- figures -----------------------------------------------------------------------------


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def scatter_png(
    pred: np.ndarray, mos: np.ndarray, values: dict, spread: np.ndarray | None = None
) -> bytes:
    return _png(scatter_figure(pred, mos, values, spread))


def scatter_figure(
    pred: np.ndarray, mos: np.ndarray, values: dict, spread: np.ndarray | None = None
) -> Figure:
    """The paper's Figure 4: MOS against the predicted score, with marginal histograms;
    each score's spread (one standard deviation) as a horizontal error bar. The score axis
    and the histogram's bins follow the scores' own range (error bars wider than it run
    past the axis); scores that barely vary are said so on the figure."""
    figure = Figure(figsize=(6.4, 6.4), layout="constrained")
    grid = figure.add_gridspec(2, 2, width_ratios=(4, 1), height_ratios=(1, 4))
    main = figure.add_subplot(grid[1, 0])
    top = figure.add_subplot(grid[0, 0], sharex=main)
    side = figure.add_subplot(grid[1, 1], sharey=main)
    if spread is not None and np.isfinite(spread).any():
        main.errorbar(pred, mos, xerr=np.nan_to_num(spread), fmt="none", ecolor="C0",
                      alpha=0.25, linewidth=0.8, label="± spread")  # fmt: skip
    main.scatter(pred, mos, s=14, alpha=0.6, edgecolors="none", label="images")
    if values["logistic"] is not None:
        xs = np.linspace(pred.min(), pred.max(), 200)
        main.plot(xs, correlation.logistic(xs, *values["logistic"]), "C3", label="logistic fit")
    main.legend(loc="upper left", fontsize="small")
    main.set_xlabel("predicted score")
    main.set_ylabel("MOS")
    low, high = score_axis(pred)
    top.hist(pred, bins=np.linspace(low, high, BINS + 1), color="C0")
    main.set_xlim(low, high)
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
    if note := degenerate_scores(pred, spread):
        figure.suptitle(textwrap.fill(note, 80), fontsize="small", color="C3")
    return figure


def score_histogram_png(pred: np.ndarray, bins: int = BINS) -> bytes:
    """A collection's scores: their histogram, bins over the scores' own range; scores
    that do not vary are said so on the figure."""
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axes = figure.add_subplot()
    if pred.size:
        low, high = score_axis(pred)
        axes.hist(pred, bins=np.linspace(low, high, bins + 1), color="C0")
        axes.set_xlim(low, high)
    axes.set_xlabel("score")
    axes.set_ylabel("inputs")
    axes.set_title(f"n = {pred.size}", fontsize="small", loc="right")
    if note := degenerate_scores(pred) if pred.size else "No input was scored.":
        figure.suptitle(textwrap.fill(note, 80), fontsize="small", color="C3")
    return _png(figure)


def score_axis(pred: np.ndarray) -> tuple[float, float]:
    """The scores' range with a 5 % margin (one unit around a single value)."""
    low, high = float(pred.min()), float(pred.max())
    margin = (high - low) * 0.05 or 0.5
    return low - margin, high + margin


def degenerate_scores(pred: np.ndarray, spread: np.ndarray | None = None) -> str | None:
    """What a reader must know when the scores barely vary: all equal, or spanning less
    than one score's own spread (the axis then shows hundredths of a level)."""
    if pred.size < 2:
        return None
    low, high = float(pred.min()), float(pred.max())
    if high == low:
        return f"Every image got the same score ({low:.4f}): it ranks nothing."
    typical = np.nanmedian(spread) if spread is not None and np.isfinite(spread).any() else 0.0
    if high - low < typical:
        return (
            f"The scores span only {high - low:.2g} ({low:.4f} to {high:.4f}), less than one "
            f"score's spread ({typical:.2g}): the axis shows that narrow range."
        )
    return None


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


MaskSource = Callable[[str], "list[np.ndarray] | None"]


def _example_png(
    path: Path, result: ImageResult, masks: MaskSource, settings: RegionSettings
) -> bytes:
    """One image drawn as in the paper's Figure 6, downscaled; raises when it cannot be."""
    loaded = load_image(path)
    if loaded.digest != result.digest:
        raise ValueError("the file changed since it was scored")
    regions = []
    if result.kinds:
        stored = masks(loaded.digest)  # stored masks only: the report never runs SAM2
        if stored is None:
            raise LookupError("its masks are not in the store")
        shape = (loaded.image.height, loaded.image.width)
        regions = select_regions(stored, shape, settings)
    image = draw_regions(loaded.image, regions, result, max_side=EXAMPLE_SIDE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def example_figures(
    image_dir: Path,
    ok: Sequence[ImageResult],
    pred: np.ndarray,
    mos: np.ndarray,
    masks: MaskSource,
    settings: RegionSettings,
) -> tuple[list[Png], list[str]]:
    """The picked examples as figures, and a note for each one that could not be drawn."""
    picks = pick_examples(pred, mos)
    score_rank = stats.rankdata(-pred, method="min").astype(int)
    mos_rank = stats.rankdata(-mos, method="min").astype(int)
    figures, notes = [], []
    for number, (why, index) in enumerate(picks, 1):
        result = ok[index]
        try:
            data = _example_png(image_dir / result.name, result, masks, settings)
        except Exception as error:  # the report must not fail the run it reports on
            notes.append(f"Example {result.name} ({why}) skipped: {one_line(error)}")
            continue
        caption = (
            f"{why[0].upper()}{why[1:]}: {result.name}. Score {result.score:.3f}"
            f" (rank {score_rank[index]} of {pred.size}), MOS {mos[index]:.4g}"
            f" (rank {mos_rank[index]} of {pred.size}); s_global {np.mean(result.s_global):.3f}"
        )
        if result.kinds:
            caption += f", s_local {np.mean(result.s_local):.3f} over {len(result.kinds)} region(s)"
        figures.append(Png(f"example-{number}.png", data, caption + "."))
    return figures, notes


def _figure(name: str, draw: Callable[[], bytes], caption: str) -> Block:
    """A figure, or a note saying why it could not be drawn (never an exception)."""
    try:
        return Png(name, draw(), caption)
    except Exception as error:
        return f"Figure {name} skipped: {one_line(error)}"


# ---- assembling and rendering ----------------------------------------------------------


def build_sections(
    settings: Sequence[tuple[str, str]],
    results: Sequence[ImageResult],
    mos: Sequence[float],
    summary: dict,
    image_dir: Path,
    masks: MaskSource,
    regions: RegionSettings,
    words: Sequence[str],
) -> list[Section]:
    ok, pred, truth = kept(results, mos)
    values = summary["metrics"]
    sections: list[Section] = [("Run", [settings_table(settings)])]
    if found := problems(summary, pred):
        sections.append(("Problems", found))
    agreement = metrics_blocks(values)
    if "metrics_failures_as_1" in summary:
        as_one = summary["metrics_failures_as_1"]
        agreement.append(
            "With the failed images scored 1 (the released code's rule) instead of left out:"
            f" SRCC {_num(as_one['srcc']['value'])}, PLCC {_num(as_one['plcc']['value'])}"
            f" (n = {as_one['n']})."
        )
    sections.append(("Agreement with MOS", agreement))
    sections.append(("Cost", cost_blocks(summary)))
    sections.append(("Regions", mask_blocks(summary["masks"])))
    if not ok:
        sections.append(("Scores", ["Nothing was scored: no plots and no examples."]))
    else:
        fitted = "; the curve is the logistic fit." if values["logistic"] else "."
        spread = np.array([r.spread for r in ok])
        bars = (
            " Bars: each score's spread, one standard deviation of its views' answer "
            "distributions taken as independent."
            if np.isfinite(spread).any()
            else " This readout has no spread."
        )
        scatter = _figure(
            "scatter.png",
            lambda: scatter_png(pred, truth, values, spread),
            "MOS against the predicted score, with marginal histograms (as the paper's"
            f" Figure 4){fitted}{bars}",
        )
        mass = float(np.mean([r.valid_mass[0].mean() for r in ok]))
        distribution = _figure(
            "levels.png",
            lambda: levels_png(level_probs(ok), list(words)[::-1]),
            "Per-level probabilities over the K levels, averaged over the models: mean"
            " probability (left) and the most probable level (right). On average the model"
            f" put {mass:.1%} of its next-token probability on the K digits (whole images).",
        )
        figures, notes = example_figures(image_dir, ok, pred, truth, masks, regions)
        intro = "The final score is in each image's upper-left corner, as in the paper's Figure 6"
        if regions.region_mode != "whole-only":
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


@dataclass(frozen=True)
class Report:
    title: str
    sections: list[Section]

    def write(self, out: Path, write: Callable[[Path, str | bytes], None]) -> None:
        """report.md with its PNGs under figures/, and the same content as one report.html,
        into a new folder; `write(path, data)` creates each file (a run's publication)."""
        pngs = [b for _, blocks in self.sections for b in blocks if isinstance(b, Png)]
        for png in pngs:
            write(out / "figures" / png.name, png.data)
        write(out / "report.md", render_markdown(self.title, self.sections))
        write(out / "report.html", render_html(self.title, self.sections))


def build_report(title: str, **data) -> Report:
    """The report of a run; `data` as build_sections takes it."""
    return Report(title, build_sections(**data))
