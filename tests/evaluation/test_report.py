"""The benchmark report, built from hand-made results on real DIBR images (no model): it
takes plain data (results, the image folder, a function giving stored masks)."""

from __future__ import annotations

import base64
import csv
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llmiqa.evaluation import correlation
from llmiqa.evaluation.report import EXAMPLE_SIDE, build_report, pick_examples, scatter_figure
from llmiqa.inputs.images import load_image
from llmiqa.method.aggregate import Aggregation
from llmiqa.method.regions import RegionSettings, select_regions
from llmiqa.method.results import ImageResult
from llmiqa.method.standards import Standard
from llmiqa.runs.evaluate import summarize

LEVELS = 7
SIZE = 12  # images per synthetic run
BBOX, WHOLE = RegionSettings(), RegionSettings(region_mode="whole-only")


def write_file(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def peaked(center: float) -> np.ndarray:
    """Log-probabilities of K levels around `center`, like a fairly confident MLLM."""
    probs = np.exp(-0.5 * ((np.arange(1, LEVELS + 1) - center) / 0.8) ** 2)
    return np.log(0.9 * probs / probs.sum())


def labels(folder: Path) -> list[tuple[str, float]]:
    with open(folder / "mos.csv", newline="") as file:
        return [(row["image"], float(row["mos_acr_1to5"])) for row in csv.DictReader(file)]


def usage() -> dict:
    """What a Scorer reports, as evaluate_run hands it over."""
    return {
        "rated": 36, "from_store": 2, "refused": 0, "segmented": 12, "masks_from_store": 0,
        "failed": 0, "notes": [],
        "seconds": {"load images": 0.8, "segment": 4.2, "rate": 9.5, "aggregate": 0.01},
        "seconds_this_invocation": 15.0, "seconds_all_invocations": 21.5,
    }  # fmt: skip


def scored_results(folder: Path, pairs, masks_of=None) -> list[ImageResult]:
    """Results whose global level follows MOS (1-5 onto 1-7) with noise, as a model would;
    regions from `masks_of(loaded)` through Algorithm 1."""
    rng = np.random.default_rng(0)
    results = []
    for name, mos in pairs:
        loaded = load_image(folder / name)
        center = 1 + 6 * (mos - 1) / 4 + rng.normal(0, 0.8)
        shape = (loaded.image.height, loaded.image.width)
        regions = select_regions(masks_of(loaded), shape, BBOX) if masks_of else []
        views = [center] + [center + d for d in (-1.0, 0.5, 1.5)[: len(regions)]]
        results.append(
            ImageResult(
                name=name,
                models=("tiny-mllm",),
                digest=loaded.digest,
                size=loaded.image.size,
                kinds=tuple(r.kind for r in regions),
                boxes=tuple(r.box for r in regions),
                areas=tuple(r.area for r in regions),
                logprobs=np.array([[peaked(c)] for c in views]),
                other_logprob=np.full((len(views), 1), np.log(0.1)),
                other_value=np.full((len(views), 1), np.nan),
                aggregation=Aggregation(),
            )
        )
    return results


def report(out: Path, folder: Path, results, mos, regions=WHOLE, masks=lambda digest: None):
    summary = summarize(results, mos, usage(), resamples=30)
    build_report(
        title="LLM-IQA benchmark report: csv",
        settings=[
            ("Dataset", "csv"),
            ("Models", "tiny-mllm"),
            ("Region mode", regions.region_mode),
        ],
        results=results,
        mos=mos,
        summary=summary,
        image_dir=folder,
        masks=masks,
        regions=regions,
        words=Standard().descriptions,
    ).write(out, write_file)
    return summary


def data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def assert_self_contained(page: str) -> None:
    links = re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]+)', page)
    assert all(link.startswith("data:image/png;base64,") for link in links), links
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page


@pytest.fixture
def folder(data_dir) -> Path:
    return data_dir / "dibr"


def ellipse_and_band(loaded) -> list[np.ndarray]:
    height, width = loaded.image.height, loaded.image.width
    rows, cols = np.mgrid[:height, :width]
    ellipse = ((rows - height / 2) / (height / 4)) ** 2 + ((cols - width / 3) / (width / 5)) ** 2
    band = np.zeros((height, width), dtype=bool)
    band[: height // 5] = True
    return [ellipse <= 1, band & ~(ellipse <= 1)]


def test_bbox_run_report_with_regions(folder, tmp_path):
    """A full report: metrics with intervals, the plots, Figure-6 examples with stored masks."""
    stored = {}

    def masks_of(loaded):
        stored[loaded.digest] = ellipse_and_band(loaded)
        return stored[loaded.digest]

    pairs = labels(folder)[:SIZE]
    results = scored_results(folder, pairs, masks_of)
    mos = [m for _, m in pairs]
    out = tmp_path / "run"
    summary = report(out, folder, results, mos, BBOX, stored.get)

    page = (out / "report.html").read_text()
    text = (out / "report.md").read_text()
    assert_self_contained(page)
    for name in ("srcc", "krcc", "plcc", "plcc_fit", "rmse_fit"):
        value = f"{summary['metrics'][name]['value']:.4f}"
        assert value in page and value in text
        low = summary["metrics"][name]["ci"][0]
        assert f"{low:.4f}" in page
    assert "Logistic fit" in page and "bbox" in page and "tiny-mllm" in page
    assert "2.00 object masks per scored image" in text and "7.22" in text
    assert "all invocations of this run together (resumed ones included): 21.5 s" in text
    assert "put 90.0% of its next-token probability on the K digits" in text

    linked = re.findall(r"\(figures/([^)]+)\)", text)
    assert {"scatter.png", "levels.png"} <= set(linked)
    assert sorted(linked) == sorted(p.name for p in (out / "figures").iterdir())
    examples = [name for name in linked if name.startswith("example-")]
    assert 3 <= len(examples) <= 4  # best, worst and the rank disagreements, deduplicated
    for name in linked:
        with Image.open(out / "figures" / name) as image:
            image.load()
            if name.startswith("example-"):
                # 1024x768 halved, then the legend below it
                assert image.width == EXAMPLE_SIDE and image.height > EXAMPLE_SIDE * 3 // 4
            else:
                assert image.width >= 500 and image.height >= 300
    assert text.count("over 3 region(s)") == len(examples)
    embedded = data_uris(page)
    assert len(embedded) == len(linked)
    assert sorted(embedded, key=len) == sorted(
        ((out / "figures" / n).read_bytes() for n in linked), key=len
    )


def test_an_image_gone_from_disk_is_skipped_with_a_note(folder, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    pairs = labels(folder)[:6]
    for name, _ in pairs:
        shutil.copy(folder / name, root / name)
    results = scored_results(root, pairs)
    best = max(results, key=lambda r: r.score)
    (root / best.name).unlink()
    out = tmp_path / "run"
    report(out, root, results, [m for _, m in pairs])
    text = (out / "report.md").read_text()
    assert f"Example {best.name} (highest score" in text and "no such file" in text
    assert "whole-only" in text and "region(s)" not in text
    assert len(list((out / "figures").glob("example-*.png"))) >= 1
    assert_self_contained((out / "report.html").read_text())


def test_examples_draw_stored_masks_only(folder, tmp_path):
    """Masks missing from the store: the example is skipped, nothing recomputes them."""
    pairs = labels(folder)[:3]
    results = scored_results(folder, pairs, ellipse_and_band)
    out = tmp_path / "run"
    report(out, folder, results, [m for _, m in pairs], BBOX, lambda digest: None)
    text = (out / "report.md").read_text()
    assert "(highest score) skipped: its masks are not in the store" in text
    assert "(lowest score) skipped: its masks are not in the store" in text
    assert not list((out / "figures").glob("example-*.png"))


def degenerate(folder: Path, case: str) -> tuple[list[ImageResult], list[float]]:
    pairs = labels(folder)[:SIZE]
    mos = [m for _, m in pairs]
    results = scored_results(folder, pairs)
    if case == "all failed":
        results = [
            ImageResult(name=r.name, error=f"{r.name}: rating failed (OOM)") for r in results
        ]
    elif case == "one image":
        results, mos = results[:1], mos[:1]
    elif case == "constant scores":
        results = [replace(r, logprobs=np.array([[peaked(4.0)]])) for r in results]
    elif case == "no images":
        results, mos = [], []
    elif case == "extreme MOS":
        mos = [1e308 if i % 2 else -1e308 for i in range(len(mos))]
    return results, mos


@pytest.mark.parametrize(
    ("case", "stated"),
    [
        ("all failed", "No image was scored: all 12 failed"),
        ("one image", "only 1 pair(s), need at least 3"),
        ("constant scores", "Every scored image got the same score"),
        ("no images", "The run holds no images."),
        ("extreme MOS", "Figure scatter.png skipped"),
    ],
)
def test_degenerate_runs_still_report_the_problem(folder, tmp_path, case, stated):
    results, mos = degenerate(folder, case)
    out = tmp_path / "run"
    report(out, folder, results, mos)
    page = (out / "report.html").read_text()
    text = (out / "report.md").read_text()
    assert stated in page and stated in text
    assert_self_contained(page)
    if case == "all failed":
        assert "rating failed (OOM)" in page and "no plots and no examples" in page
        assert not list((out / "figures").glob("*.png"))


def test_failures_are_listed_up_to_a_limit(folder, tmp_path):
    results, mos = degenerate(folder, "all failed")
    results, mos = results * 3, mos * 3  # 36 failures
    out = tmp_path / "run"
    report(out, folder, results, mos)
    text = (out / "report.md").read_text()
    assert "36 image(s) failed and are left out of every metric; the first 20:" in text
    assert text.count("rating failed (OOM)") == 20


def test_examples_compare_ranks_not_scales():
    pred = np.array([1.0, 2.0, 3.0, 4.0])  # 1..7 scale
    mos = np.array([10.0, 40.0, 30.0, 20.0])  # 0..100 scale
    picks = dict((index, why) for why, index in pick_examples(pred, mos))
    assert picks[3] == "highest score; most overrated: score ranks far above MOS"
    assert picks[0] == "lowest score"
    assert picks[1] == "most underrated: score ranks far below MOS"
    assert pick_examples(np.array([]), np.array([])) == []
    assert [i for _, i in pick_examples(np.array([5.0]), np.array([3.0]))] == [0]


def test_example_pngs_are_downscaled_figure_6_drawings(folder, tmp_path):
    """The embedded example is the drawn image itself, not a blank or a thumbnail of noise."""
    pairs = labels(folder)[:3]
    results = scored_results(folder, pairs)
    out = tmp_path / "run"
    report(out, folder, results, [m for _, m in pairs])
    with Image.open(out / "figures" / "example-1.png") as drawn:
        drawn = np.asarray(drawn.convert("RGB"), dtype=float)
    best = max(results, key=lambda r: r.score)
    original = Image.open(folder / best.name).convert("RGB")
    original.thumbnail((EXAMPLE_SIDE, EXAMPLE_SIDE), Image.Resampling.LANCZOS)
    original = np.asarray(original, dtype=float)
    drawn = drawn[: original.shape[0]]  # the image part, above its legend
    assert drawn.shape == original.shape
    # Identical away from the score label in the upper-left corner.
    assert np.abs(drawn[100:, 100:] - original[100:, 100:]).mean() < 1.0
    assert np.abs(drawn[:20, :60] - original[:20, :60]).mean() > 20  # the label plate


def test_the_scatter_shows_scores_that_barely_vary_and_says_so():
    """Scores spanning 0.001 beside spreads of 0.6: the axis and the histogram's bins
    follow the scores (the bars fill the width), not the error bars (before, the bars
    were 0.001 of a 1.2-wide axis: an empty histogram)."""
    rng = np.random.default_rng(0)
    pred, mos = 4.123 + rng.random(50) * 0.001, rng.random(50) * 100
    figure = scatter_figure(pred, mos, correlation.evaluate(pred, mos, resamples=0),
                            np.full(50, 0.6))  # fmt: skip
    main, top = figure.axes[:2]
    low, high = main.get_xlim()
    assert high - low < 0.002 and top.get_xlim() == (low, high)
    filled = sum(bar.get_width() for bar in top.patches if bar.get_height() > 0)
    assert filled / (high - low) > 0.5
    note = figure.get_suptitle()
    assert "span only 0.00099" in note and "less than one score's spread" in note.replace("\n", " ")
    usual = 1 + rng.random(50) * 6
    figure = scatter_figure(usual, mos, correlation.evaluate(usual, mos, resamples=0),
                            np.full(50, 0.6))  # fmt: skip
    assert figure.get_suptitle() == ""
