"""The benchmark report, built from hand-made results on real DIBR images (no model)."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from llmiqa.images import load_image
from llmiqa.options import resolve
from llmiqa.regions import Region
from llmiqa.report import EXAMPLE_SIDE, pick_examples, write_report
from llmiqa.results import Aggregation, ImageResult, RegionResult
from llmiqa.runs import RunConfig, summarize

LEVELS = 7
SIZE = 12  # images per synthetic run


def peaked(center: float) -> np.ndarray:
    """K-level probabilities around `center`, like a fairly confident MLLM."""
    probs = np.exp(-0.5 * ((np.arange(1, LEVELS + 1) - center) / 0.8) ** 2)
    return probs / probs.sum()


def labels(folder: Path) -> list[tuple[str, float]]:
    with open(folder / "mos.csv", newline="") as file:
        return [(row["image"], float(row["mos_acr_1to5"])) for row in csv.DictReader(file)]


def config(root: Path, **scoring) -> RunConfig:
    return RunConfig({"name": "csv", "root": str(root), "labels": "mos.csv"}, resolve(scoring))


def summary_of(results: list[ImageResult], mos: list[float]) -> dict:
    """The summary evaluate_run writes, with the scorer's counters faked."""
    scorer = SimpleNamespace(
        stats=Counter({"model calls": len(results), "rated": 3 * len(results), "from store": 2}),
        seconds={"load images": 0.8, "segment": 4.2, "rate": 9.5, "aggregate": 0.01},
    )
    return summarize(results, mos, scorer, seconds=15.0, resamples=30)


def scored_results(folder: Path, pairs, regions_of=lambda loaded: ()) -> list[ImageResult]:
    """Results whose global level follows MOS (1-5 onto 1-7) with noise, as a model would."""
    rng = np.random.default_rng(0)
    results = []
    for name, mos in pairs:
        loaded = load_image(folder / name)
        center = 1 + 6 * (mos - 1) / 4 + rng.normal(0, 0.8)
        raw = ImageResult(
            name=name,
            models=("tiny-mllm",),
            digest=loaded.digest,
            size=loaded.image.size,
            global_probs=peaked(center)[None],
            regions=tuple(
                RegionResult(r.kind, r.box, r.area, r.area_fraction(), peaked(center + d)[None])
                for r, d in zip(regions_of(loaded), (-1.0, 0.5, 1.5), strict=False)
            ),
        )
        results.append(raw.rescored(Aggregation()))
    return results


def data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def assert_self_contained(page: str) -> None:
    links = re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]+)', page)
    assert all(link.startswith("data:image/png;base64,") for link in links), links
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page


@pytest.fixture
def dibr(data_dir) -> Path:
    return data_dir / "dibr"


def test_bbox_run_report_with_regions(dibr, tmp_path):
    """A full report: metrics with intervals, the plots, Figure-6 examples with stored masks."""
    segmenter = tmp_path / "sam2"
    segmenter.mkdir()
    (segmenter / "config.json").write_text(json.dumps({"model_type": "sam2"}))
    run = config(dibr, segmenter=str(segmenter), model=["tiny-mllm"])
    out = tmp_path / "run"
    scorer = run.scorer(out)

    def stored_regions(loaded):
        """Two masks put in the run's store, as a finished segmentation would have."""
        height, width = loaded.image.height, loaded.image.width
        rows, cols = np.mgrid[:height, :width]
        ellipse = ((rows - height / 2) / (height / 4)) ** 2 + (
            (cols - width / 3) / (width / 5)
        ) ** 2
        band = np.zeros((height, width), dtype=bool)
        band[: height // 5] = True
        masks = [ellipse <= 1, band & ~(ellipse <= 1)]
        scorer.store.put_masks(loaded.digest, scorer.segmenter_identity, (height, width), masks)
        return scorer.regions(loaded)

    pairs = labels(dibr)[:SIZE]
    results = scored_results(dibr, pairs, stored_regions)
    scorer.store.close()
    mos = [m for _, m in pairs]
    summary = summary_of(results, mos)
    write_report(out, run, results, mos, summary)

    page = (out / "report.html").read_text()
    text = (out / "report.md").read_text()
    assert_self_contained(page)
    for name in ("srcc", "krcc", "plcc", "plcc_fit", "rmse_fit"):
        value = f"{summary['metrics'][name]['value']:.4f}"
        assert value in page and value in text
        low = summary["metrics"][name]["ci"][0]
        assert f"{low:.4f}" in page
    assert "Logistic fit" in page and "bbox" in page and "tiny-mllm" in page
    assert "12 scored, 0 failed, of 12" in page and "Problems" not in page

    linked = re.findall(r"\(figures/([^)]+)\)", text)
    assert {"scatter.png", "levels.png"} <= set(linked)
    assert sorted(linked) == sorted(p.name for p in (out / "figures").iterdir())
    examples = [name for name in linked if name.startswith("example-")]
    assert 3 <= len(examples) <= 4  # best, worst and the rank disagreements, deduplicated
    for name in linked:
        with Image.open(out / "figures" / name) as image:
            image.load()
            if name.startswith("example-"):
                assert image.size == (EXAMPLE_SIDE, EXAMPLE_SIDE * 3 // 4)  # 1024x768 halved
            else:
                assert image.width >= 500 and image.height >= 300
    assert text.count("over 3 region(s)") == len(examples)
    embedded = data_uris(page)
    assert len(embedded) == len(linked)
    assert sorted(embedded, key=len) == sorted(
        ((out / "figures" / n).read_bytes() for n in linked), key=len
    )


def test_whole_only_run_skips_an_image_gone_from_disk(dibr, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    pairs = labels(dibr)[:6]
    for name, _ in pairs:
        shutil.copy(dibr / name, root / name)
    with open(root / "mos.csv", "w", newline="") as file:
        csv.writer(file).writerows([("image", "mos"), *pairs])
    results = scored_results(root, pairs)
    best = max(results, key=lambda r: r.score)
    (root / best.name).unlink()
    mos = [m for _, m in pairs]
    out = tmp_path / "run"
    write_report(
        out, config(root, region_mode="whole-only"), results, mos, summary_of(results, mos)
    )

    text = (out / "report.md").read_text()
    assert f"Example {best.name} (highest score" in text and "no such file" in text
    assert "whole-only" in text and "region(s)" not in text
    assert len(list((out / "figures").glob("example-*.png"))) >= 1
    assert_self_contained((out / "report.html").read_text())


def test_examples_never_run_the_segmenter(dibr, tmp_path):
    """Masks missing from the store: the example is skipped, SAM2 is not loaded to redo them."""
    segmenter = tmp_path / "sam2"  # a config and no weights: loading it would fail differently
    segmenter.mkdir()
    (segmenter / "config.json").write_text(json.dumps({"model_type": "sam2"}))
    pairs = labels(dibr)[:3]
    whole = Region((0, 0, 1024, 768), 1024 * 768, "complement", np.ones((768, 1024), bool))
    results = scored_results(dibr, pairs, lambda loaded: (whole,))
    mos = [m for _, m in pairs]
    out = tmp_path / "run"
    run = config(dibr, segmenter=str(segmenter))
    write_report(out, run, results, mos, summary_of(results, mos))
    text = (out / "report.md").read_text()
    assert "(highest score) skipped: its masks are not in the store" in text
    assert "(lowest score) skipped: its masks are not in the store" in text
    assert not list((out / "figures").glob("example-*.png"))


def degenerate(dibr: Path, case: str) -> tuple[list[ImageResult], list[float]]:
    pairs = labels(dibr)[:SIZE]
    mos = [m for _, m in pairs]
    results = scored_results(dibr, pairs)
    if case == "all failed":
        results = [
            ImageResult(name=r.name, error=f"{r.name}: rating failed (OOM)") for r in results
        ]
    elif case == "one image":
        results, mos = results[:1], mos[:1]
    elif case == "constant scores":
        results = [
            replace(r, global_probs=peaked(4.0)[None]).rescored(Aggregation()) for r in results
        ]
    elif case == "no images":
        results, mos = [], []
    return results, mos


@pytest.mark.parametrize(
    ("case", "stated"),
    [
        ("all failed", "No image was scored: all 12 failed"),
        ("one image", "only 1 pair(s), need at least 3"),
        ("constant scores", "Every scored image got the same score"),
        ("no images", "The run holds no images."),
    ],
)
def test_degenerate_runs_still_report_the_problem(dibr, tmp_path, case, stated):
    results, mos = degenerate(dibr, case)
    out = tmp_path / "run"
    write_report(
        out, config(dibr, region_mode="whole-only"), results, mos, summary_of(results, mos)
    )
    page = (out / "report.html").read_text()
    text = (out / "report.md").read_text()
    assert stated in page and stated in text
    assert "Problems" in text and "NaN" in text
    assert_self_contained(page)
    if case == "all failed":
        assert "rating failed (OOM)" in page and "no plots and no examples" in page
        assert not list((out / "figures").glob("*.png"))


def test_failures_are_listed_up_to_a_limit(dibr, tmp_path):
    results, mos = degenerate(dibr, "all failed")
    results, mos = results * 3, mos * 3  # 36 failures
    out = tmp_path / "run"
    write_report(
        out, config(dibr, region_mode="whole-only"), results, mos, summary_of(results, mos)
    )
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


def test_example_pngs_are_downscaled_figure_6_drawings(dibr, tmp_path):
    """The embedded example is the drawn image itself, not a blank or a thumbnail of noise."""
    pairs = labels(dibr)[:3]
    results = scored_results(dibr, pairs)
    mos = [m for _, m in pairs]
    out = tmp_path / "run"
    write_report(
        out, config(dibr, region_mode="whole-only"), results, mos, summary_of(results, mos)
    )
    with Image.open(out / "figures" / "example-1.png") as drawn:
        drawn = np.asarray(drawn.convert("RGB"), dtype=float)
    best = max(results, key=lambda r: r.score)
    original = Image.open(dibr / best.name).convert("RGB")
    original.thumbnail((EXAMPLE_SIDE, EXAMPLE_SIDE), Image.Resampling.LANCZOS)
    original = np.asarray(original, dtype=float)
    assert drawn.shape == original.shape
    # Identical away from the score label in the upper-left corner.
    assert np.abs(drawn[100:, 100:] - original[100:, 100:]).mean() < 1.0
    assert np.abs(drawn[:20, :60] - original[:20, :60]).mean() > 20  # the label plate
