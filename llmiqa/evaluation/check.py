"""A labels-free self-check: does a model's score fall as an image gets visibly worse?

Each reference image is distorted at five increasing levels of several distortions
(deterministic, seeded; parameters below); every version is scored, and per distortion
Kendall's tau-b between level (0 = the reference, 1..5) and score is computed for each
reference and averaged. A model that sees quality gives tau near -1 (scores fall as the
distortion grows). A distortion is flagged when the model cannot tell level 1 from level
5 (the mean score drop from level 1 to level 5 is below 2% of the score scale, 1..K when
normalised) or when its scores rise with the distortion. Exit code 1 when any is flagged.

This is a smoke test for a model, not a benchmark: five synthetic distortions of a few
images say whether the model responds to quality at all; only MOS-labelled data
(`llmiqa eval`) measures accuracy. With tiny random models it proves the plumbing only.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from llmiqa.errors import UsageError
from llmiqa.evaluation import correlation
from llmiqa.inputs.images import LoadedImage, expand_inputs, from_pil, load_image
from llmiqa.method.aggregate import score_range

REFERENCES = Path(__file__).parent / "references"
SEVERITIES = 5
MAX_SIDE = 512  # references are scaled down to this first: parameters are in these pixels
MIN_DROP = 0.02  # of the score scale: a level-1 to level-5 drop below this is "no drop"
WEAK_TAU = 0.3  # |tau| below this: no consistent agreement
RANDOM_TAU = 0.2  # |tau| below this for every distortion: the model does not see quality
FORMAT_MASS = 0.5  # probability on the K digits below this: the model ignores the format


@dataclass(frozen=True)
class Distortion:
    """One distortion at five severities; `apply(image, value, rng)` returns a new image."""

    name: str
    parameter: str  # what the values are
    values: tuple[float, ...]  # one per level 1..5, increasingly severe
    apply: Callable[[Image.Image, float, np.random.Generator], Image.Image] = field(repr=False)


def _blur(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=sigma))


def _noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    noisy = pixels + rng.normal(0.0, sigma, size=pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))


def _jpeg(image: Image.Image, quality: float, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _contrast(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Contrast(image).enhance(factor)


def _resolution(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
    small = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
    down = image.resize(small, Image.Resampling.BICUBIC)
    return down.resize(image.size, Image.Resampling.BICUBIC)


DISTORTIONS: dict[str, Distortion] = {
    d.name: d
    for d in (
        Distortion("blur", "Gaussian blur sigma (px)", (0.5, 1.0, 2.0, 3.5, 6.0), _blur),
        Distortion(
            "noise", "Gaussian noise sigma (of 255), per RGB value", (4, 8, 16, 28, 45), _noise
        ),
        Distortion("jpeg", "JPEG quality (PIL, 4:2:0)", (70, 45, 25, 12, 5), _jpeg),
        Distortion(
            "contrast", "contrast factor (PIL ImageEnhance)", (0.8, 0.6, 0.45, 0.3, 0.15), _contrast
        ),
        Distortion(
            "resolution", "bicubic down- and upscale factor", (1.5, 2, 3, 4, 6), _resolution
        ),
    )
}


def distort(
    reference: LoadedImage, distortion: Distortion, level: int, seed: int = 0
) -> Image.Image:
    """Level 0 is the reference itself; the noise of level L of an image is the same in
    every run with the same seed (the generator is seeded by seed, image name and level)."""
    if level == 0:
        return reference.image
    name_key = zlib.crc32(Path(reference.name).name.encode())
    rng = np.random.default_rng([seed, name_key, level])
    return distortion.apply(reference.image, distortion.values[level - 1], rng)


def load_references(
    folder: str | Path | None = None, max_side: int = MAX_SIDE
) -> list[LoadedImage]:
    """The user's images (a folder or files), or the three shipped ones; scaled down to
    `max_side` so that every distortion parameter means the same thing on each."""
    paths = expand_inputs([str(folder)]) if folder else sorted(map(str, REFERENCES.glob("*.png")))
    if not paths:
        raise UsageError(f"no reference images in {folder or REFERENCES}")
    loaded = []
    for path in paths:
        image = load_image(path)  # ImageError names the file
        pixels = image.image
        if max(pixels.size) > max_side:
            scale = max_side / max(pixels.size)
            size = (max(1, round(pixels.width * scale)), max(1, round(pixels.height * scale)))
            pixels = pixels.resize(size, Image.Resampling.LANCZOS)
        loaded.append(from_pil(pixels, image.name))
    return loaded


@dataclass(frozen=True)
class DistortionRow:
    """One distortion's outcome: scores[r, level] for reference r, level 0..5."""

    name: str
    parameter: str
    values: tuple[float, ...]
    scores: np.ndarray = field(repr=False)
    taus: np.ndarray = field(repr=False)  # per reference; NaN when its scores are constant

    @property
    def tau(self) -> float:
        """Mean tau over references, constant scores counted as 0 (no agreement)."""
        return float(np.mean(np.nan_to_num(self.taus, nan=0.0)))

    @property
    def drop(self) -> float:
        """Mean score at level 1 minus at level 5 (positive: level 5 scores lower)."""
        return float(np.mean(self.scores[:, 1] - self.scores[:, SEVERITIES]))

    def flags(self, span: float) -> list[str]:
        found = []
        if self.drop <= MIN_DROP * span:
            found.append("cannot tell level 1 from level 5")
        if self.tau > WEAK_TAU:
            found.append("scores rise with the distortion")
        return found

    def verdict(self, span: float) -> str:
        if self.flags(span):
            return "FLAGGED: " + "; ".join(self.flags(span))
        if self.tau > -WEAK_TAU:
            return "weak: no consistent fall"
        return "ok"


@dataclass(frozen=True)
class CheckReport:
    model: str
    levels: int  # K
    references: tuple[str, ...]
    rows: tuple[DistortionRow, ...]
    valid_mass: float  # mean probability the model put on the K digits
    seed: int
    scale: tuple[float, float]  # the score range without the region-count term (1..K)

    @property
    def span(self) -> float:
        return self.scale[1] - self.scale[0]

    @property
    def flagged(self) -> list[str]:
        return [row.name for row in self.rows if row.flags(self.span)]

    def notes(self) -> list[str]:
        """What the numbers say about the model as a whole."""
        found = []
        scores = np.concatenate([row.scores.ravel() for row in self.rows])
        spread = float(scores.max() - scores.min())
        blind = None
        if spread <= MIN_DROP * self.span:
            images = len(self.references) * (1 + SEVERITIES * len(self.rows))
            blind = f"the scores barely move (all within {spread:.3g}, over {images} images)"
        elif all(abs(row.tau) < RANDOM_TAU for row in self.rows):
            blind = f"no distortion moves the score consistently (|tau| < {RANDOM_TAU} everywhere)"
        elif all(row.flags(self.span) for row in self.rows):
            blind = "every distortion is flagged"
        if blind:
            found.append(
                f"{blind}: this model does not see quality. A random model (llmiqa tiny) "
                "looks like this: such a run proves the plumbing only."
            )
        if self.valid_mass < FORMAT_MASS:
            found.append(
                f"the model put only {self.valid_mass:.1%} of its next-token probability on "
                f"the digits 1..{self.levels}: it does not follow the answer format (random "
                "weights, or a model this prompt does not suit)."
            )
        return found

    def text(self) -> str:
        header = f"{'distortion':<11} {'tau':>6}  {'drop 1->5':>9}  " + "  ".join(
            f"{'L' + str(level):>6}" for level in range(SEVERITIES + 1)
        )
        lines = [
            f"llmiqa check: {self.model}, K = {self.levels}, {len(self.references)} reference "
            f"image(s), {SEVERITIES} levels per distortion, seed {self.seed}",
            "tau: Kendall tau-b of level (0 = reference .. 5) against score, mean over the "
            "references; a model that sees quality gives tau near -1",
            "",
            header + "  verdict",
        ]
        for row in self.rows:
            means = "  ".join(f"{v:>6.3f}" for v in row.scores.mean(axis=0))
            lines.append(
                f"{row.name:<11} {row.tau:>+6.2f}  {row.drop:>+9.3f}  {means}  "
                f"{row.verdict(self.span)}"
            )
        lines.append("")
        lines += [f"note: {note}" for note in self.notes()]
        lines.append(
            "This is a smoke test, not a benchmark: only MOS-labelled data (llmiqa eval) "
            "measures accuracy."
        )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "levels": self.levels,
            "seed": self.seed,
            "references": list(self.references),
            "valid_mass": self.valid_mass,
            "flagged": self.flagged,
            "notes": self.notes(),
            "distortions": [
                {
                    "name": row.name,
                    "parameter": row.parameter,
                    "values": list(row.values),
                    "tau": row.tau,
                    "taus": [None if np.isnan(t) else float(t) for t in row.taus],
                    "drop": row.drop,
                    "verdict": row.verdict(self.span),
                    "scores": row.scores.tolist(),
                }
                for row in self.rows
            ],
        }

    def plot(self) -> bytes:
        """PNG: score against level, one panel per distortion (thin: each reference)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(3.2 * len(self.rows), 3.4), layout="constrained")
        axes = figure.subplots(1, len(self.rows), sharey=True, squeeze=False)[0]
        levels = np.arange(SEVERITIES + 1)
        for axis, row in zip(axes, self.rows, strict=True):
            for scores in row.scores:
                axis.plot(levels, scores, color="0.7", linewidth=0.8)
            axis.plot(levels, row.scores.mean(axis=0), "o-", color="C0", linewidth=2)
            flagged = bool(row.flags(self.span))
            axis.set_title(f"{row.name}: tau {row.tau:+.2f}", color="C3" if flagged else "k")
            axis.set_xticks(levels, ["ref", *(f"{v:g}" for v in row.values)], fontsize=8)
            axis.set_xlabel(row.parameter, fontsize=8)
            axis.grid(alpha=0.3)
        axes[0].set_ylabel("score")
        margin = 0.03 * self.span
        axes[0].set_ylim(self.scale[0] - margin, self.scale[1] + margin)  # the whole scale
        title = f"llmiqa check: {self.model} (K = {self.levels})"
        blind = any("does not see quality" in note for note in self.notes())
        figure.suptitle(
            title + (": does not see quality (plumbing only)" if blind else ""),
            fontsize=10,
            color="C3" if blind else "k",
        )
        buffer = io.BytesIO()
        FigureCanvasAgg(figure)
        figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
        return buffer.getvalue()

    def save(self, folder: str | Path) -> tuple[Path, Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "check.json").write_text(json.dumps(self.to_dict(), indent=1))
        (folder / "check.png").write_bytes(self.plot())
        return folder / "check.json", folder / "check.png"


def run_check(
    scorer,
    references: Sequence[LoadedImage],
    distortions: Sequence[str] = tuple(DISTORTIONS),
    seed: int = 0,
) -> CheckReport:
    """Score every reference at every level of every distortion (level 0 once)."""
    unknown = sorted(set(distortions) - set(DISTORTIONS))
    if unknown:
        raise UsageError(f"unknown distortion(s) {unknown}; choose from {sorted(DISTORTIONS)}")
    chosen = [DISTORTIONS[name] for name in distortions]
    images = [ref.image for ref in references]
    for ref in references:
        for distortion in chosen:
            images += [distort(ref, distortion, level, seed) for level in range(1, SEVERITIES + 1)]
    results = scorer.score(images)
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise UsageError(f"{len(failed)} distorted image(s) could not be scored: {failed[0]}")
    scores = np.array([r.score for r in results])
    count = len(references)
    base, rest = scores[:count], scores[count:].reshape(count, len(chosen), SEVERITIES)
    level = np.arange(SEVERITIES + 1, dtype=np.float64)
    rows = []
    for d, distortion in enumerate(chosen):
        table = np.column_stack([base, rest[:, d]])  # (references, 6)
        taus = np.array([correlation.krcc(level, table[r]) for r in range(count)])
        rows.append(DistortionRow(distortion.name, distortion.parameter, distortion.values,
                                  table, taus))  # fmt: skip
    mass = float(np.mean([r.valid_mass[0].mean() for r in results]))
    low, high = score_range(replace(scorer.aggregation, count_weight=0.0), scorer.standard.levels)
    return CheckReport(
        model=" + ".join(scorer.models),
        levels=scorer.standard.levels,
        references=tuple(ref.name for ref in references),
        rows=tuple(rows),
        valid_mass=mass,
        seed=seed,
        scale=(low, high),
    )


# ---- the command line ------------------------------------------------------------------------


def distortion_table() -> str:
    """The distortions and their parameters per level, as `llmiqa check --help` lists them."""
    lines = [
        f"distortions (levels 1..5; pixels of references scaled to --max-side, default "
        f"{MAX_SIDE}; noise from numpy's default_rng seeded by (--seed, CRC-32 of the file "
        "name, level)):"
    ]
    for d in DISTORTIONS.values():
        lines.append(f"  {d.name:<11} {d.parameter}: {', '.join(f'{v:g}' for v in d.values)}")
    return "\n".join(lines)
