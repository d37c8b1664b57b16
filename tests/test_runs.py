"""Benchmark runs on the real DIBR dataset: eval, resume after SIGKILL, shards, ablations.

Tiny random models: the metrics are computed for real but mean nothing about accuracy.
"""

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from llmiqa import metrics
from llmiqa.options import resolve
from llmiqa.raters import RaterSpec
from llmiqa.runs import RunConfig, ablate, evaluate_run, read_results

LIMIT = 6


@pytest.fixture(scope="module")
def dibr(data_dir):
    return {
        "name": "csv",
        "root": str(data_dir / "dibr"),
        "labels": str(data_dir / "dibr" / "mos.csv"),
    }


def config_for(dataset, model_dir, limit=LIMIT, **scoring) -> RunConfig:
    options = resolve({"model": [str(model_dir)], "region_mode": "whole-only", **scoring})
    return RunConfig(dataset, options, limit)


@pytest.fixture(scope="module")
def mixed_config(dibr, qwen2_vl_dir, sam2_dir):
    """Regions from a random SAM2 (thresholds off), rated as masked crops so that every
    region gets its own rating and the aggregation ablations differ."""
    return config_for(
        dibr, qwen2_vl_dir, region_mode="mask", segmenter=str(sam2_dir),
        pred_iou_thresh=0.0, stability_score_thresh=0.0, points_per_side=4,
    )  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mixed_config):
    out = tmp_path_factory.mktemp("run")
    summary = evaluate_run(mixed_config, out, resamples=50)
    return out, summary


def test_eval_writes_results_metrics_and_report(finished_run):
    out, summary = finished_run
    assert summary["images"] == summary["scored"] == LIMIT and summary["failed"] == 0
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert len(rows) == LIMIT and rows[0]["image"].endswith(".png")
    pred = np.array([float(r["score"]) for r in rows])
    mos = np.array([float(r["mos"]) for r in rows])
    written = json.loads((out / "metrics.json").read_text(), parse_constant=_no_nan)
    assert written["metrics"]["srcc"]["value"] == pytest.approx(metrics.srcc(pred, mos), abs=1e-6)
    assert written["model_calls"] > 0 and written["sub_images_rated"] > LIMIT  # + regions
    assert written["segmented"] == LIMIT
    assert set(written["seconds"]) >= {"total", "rate", "load images"}
    assert (out / "report.html").is_file() and (out / "report.md").is_file()


def test_a_rerun_is_served_by_the_store(finished_run, mixed_config):
    out, first = finished_run
    again = evaluate_run(mixed_config, out, resamples=50)
    assert again["model_calls"] == again["segmented"] == 0
    assert again["sub_images_from_store"] == first["sub_images_rated"]
    assert again["metrics"]["srcc"]["value"] == first["metrics"]["srcc"]["value"]


def test_rows_with_missing_images_are_counted_failures(tmp_path, data_dir, qwen2_vl_dir):
    images = sorted((data_dir / "dibr").glob("*.png"))[:3]
    for image in images:
        (tmp_path / image.name).symlink_to(image)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "image,mos\n"
        + "".join(f"{p.name},{i + 1.5}\n" for i, p in enumerate(images))
        + "gone.png,2\n"
    )
    dataset = {"name": "csv", "root": str(tmp_path), "labels": str(labels)}
    summary = evaluate_run(config_for(dataset, qwen2_vl_dir), tmp_path / "run", resamples=0)
    assert (summary["images"], summary["scored"], summary["failed"]) == (4, 3, 1)
    assert "gone.png: no such file" in summary["failures"][0]["error"]


def test_aggregation_ablations_call_no_model(finished_run, monkeypatch):
    out, _ = finished_run

    def refuse(spec):
        raise AssertionError(f"ablation tried to load {spec.model}")

    monkeypatch.setattr(RaterSpec, "load", refuse)
    rows = {row.variant: row for row in ablate(out)}
    assert all(row.model_calls == 0 for row in rows.values())
    results, mos = read_results(out)
    s_global = np.array([r.s_global[0] for r in results])
    assert rows["view=global (Table 3, exp. 6)"].metrics["srcc"] == pytest.approx(
        metrics.srcc(s_global, mos)
    )
    mean_weighted = np.array(
        [(r.s_global[0] + np.mean([g.score for g in r.regions])) / 2 for r in results]
    )
    assert rows["weighting=mean (Table 3, exp. 4)"].metrics["plcc"] == pytest.approx(
        metrics.plcc(mean_weighted, mos)
    )
    lam2 = np.array([(r.s_global[0] + 2 * r.s_local[0]) / 3 for r in results])
    assert rows["lambda=2"].metrics["srcc"] == pytest.approx(metrics.srcc(lam2, mos))
    assert len({round(row.metrics["plcc"], 12) for row in rows.values()}) > 3  # they differ


def test_rating_ablations_reuse_the_store_and_rate_only_what_is_new(finished_run):
    out, _ = finished_run
    rows = {row.variant: row for row in ablate(out, ["levels"])}
    assert rows["levels=7"].model_calls == 0  # the run's own ratings
    assert rows["levels=3"].model_calls > 0 and rows["levels=3"].scored == LIMIT
    rows = {row.variant: row for row in ablate(out, ["levels"])}
    assert rows["levels=3"].model_calls == 0  # stored by the first ablation


def test_shards_fill_one_store_and_the_final_run_only_collects(tmp_path, dibr, qwen2_vl_dir):
    config = config_for(dibr, qwen2_vl_dir)
    assert evaluate_run(config, tmp_path, shard=(0, 2), resamples=0) is None
    assert evaluate_run(config, tmp_path, shard=(1, 2), resamples=0) is None
    summary = evaluate_run(config, tmp_path, resamples=0)
    assert summary["model_calls"] == 0 and summary["scored"] == LIMIT


def test_resume_after_sigkill_finishes_only_what_is_missing(tmp_path, dibr, qwen2_vl_dir):
    limit = 12
    args = [
        sys.executable, "-m", "llmiqa.cli", "eval", "--dataset", "csv", "--root", dibr["root"],
        "--labels", dibr["labels"], "--limit", str(limit), "--model", str(qwen2_vl_dir),
        "--region-mode", "whole-only", "--batch-size", "1", "--bootstrap", "0",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = tmp_path / "killed"
    victim = subprocess.Popen([*args, "--out", str(killed)], env=env, stderr=subprocess.DEVNULL)
    store = killed / "store.sqlite"
    deadline = time.monotonic() + 300
    while _ratings(store) < 3:
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    stored = _ratings(store)
    assert 3 <= stored < limit

    subprocess.run([*args, "--out", str(killed)], env=env, check=True, capture_output=True)
    resumed = json.loads((killed / "metrics.json").read_text())
    assert resumed["model_calls"] == limit - stored
    assert _ratings(store) == limit  # nothing lost, nothing duplicated

    clean = tmp_path / "clean"
    subprocess.run([*args, "--out", str(clean)], env=env, check=True, capture_output=True)
    assert (killed / "results.csv").read_text() == (clean / "results.csv").read_text()


def _ratings(store) -> int:
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(store, timeout=10) as db:
            return db.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]
    except sqlite3.OperationalError:  # created but schema not written yet
        return 0


def _no_nan(name):
    raise AssertionError(f"metrics.json holds {name}: not strict JSON")
