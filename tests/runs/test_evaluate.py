"""`llmiqa eval` on the real DIBR dataset: results, metrics, report, resume, shards, and a
run folder that always describes one run."""

import csv
import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmiqa.cli import main
from llmiqa.errors import RunError
from llmiqa.evaluation import correlation
from llmiqa.raters import registry
from llmiqa.runs.ablate import ablate
from llmiqa.runs.config import RunConfig
from llmiqa.runs.evaluate import evaluate_run
from llmiqa.runs.files import read_results
from llmiqa.runs.lock import locked
from llmiqa.scoring.caching import CachingSegmenter
from llmiqa.scoring.pipeline import Scorer
from llmiqa.scoring.store import Store, StoreError

LIMIT = 6


def outputs(out) -> dict[str, bytes]:
    names = ("config.json", "results.jsonl", "results.csv", "metrics.json", "report.md")
    return {name: (out / name).read_bytes() for name in names}


def test_eval_writes_results_metrics_and_report(finished_run):
    out, summary = finished_run
    assert summary["images"] == summary["scored"] == LIMIT and summary["failed"] == 0
    rows = list(csv.DictReader((out / "results.csv").read_text().splitlines()))
    assert len(rows) == LIMIT and rows[0]["image"].endswith(".png")
    pred = np.array([float(r["score"]) for r in rows])
    mos = np.array([float(r["mos"]) for r in rows])
    results, _ = read_results(out)
    assert [float(r["spread"]) for r in rows] == pytest.approx([r.spread for r in results])
    assert all(0 < r.spread < 3 for r in results)  # K = 7 levels: at most 3 apart from the mean
    written = json.loads((out / "metrics.json").read_text(), parse_constant=_no_nan)
    assert written["metrics"]["srcc"]["value"] == pytest.approx(
        correlation.srcc(pred, mos), abs=1e-6
    )
    usage = written["usage"]
    assert usage["rated"] > LIMIT and usage["segmented"] == LIMIT  # + regions
    assert set(usage["seconds"]) >= {"rate", "load images", "segment"}
    assert written["masks"]["images"] == LIMIT and written["masks"]["mean_objects"] >= 1
    assert written["peak_memory_mb"] > 50
    assert written["run_id"] == json.loads((out / "config.json").read_text())["run_id"]
    assert (out / "report.html").is_file() and (out / "report.md").is_file()


def test_a_rerun_is_served_by_the_store_and_counts_both_invocations(finished_run, mixed_config):
    out, first = finished_run
    again = evaluate_run(mixed_config, out, resamples=50)
    assert again["usage"]["rated"] == again["usage"]["segmented"] == 0
    assert again["usage"]["from_store"] == first["usage"]["rated"]
    assert again["metrics"]["srcc"]["value"] == first["metrics"]["srcc"]["value"]
    total = again["usage"]["seconds_all_invocations"]
    assert total > again["usage"]["seconds_this_invocation"]


def test_rows_with_missing_images_are_counted_failures(
    config_for, tmp_path, data_dir, qwen2_vl_dir
):
    images = sorted((data_dir / "dibr").glob("*.png"))[:3]
    for image in images:
        (tmp_path / image.name).symlink_to(image)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "image,mos\n"
        + "".join(f"{p.name},{i + 1.5}\n" for i, p in enumerate(images))
        + "gone.png,2\n"
    )
    dataset = {"name": "csv", "root": str(tmp_path)}
    summary = evaluate_run(config_for(dataset, qwen2_vl_dir), tmp_path, resamples=0)
    assert (summary["images"], summary["scored"], summary["failed"]) == (4, 3, 1)
    assert "gone.png: no such file" in summary["failures"][0]["error"]
    # the released code's rule, reported beside: a missing prediction scores 1
    assert summary["metrics_failures_as_1"]["n"] == 4
    # --out inside the dataset folder: the rerun still finds its label file
    again = evaluate_run(RunConfig.read(tmp_path), tmp_path, resamples=0)
    assert again["images"] == 4


def test_shards_fill_one_store_and_the_final_run_only_collects(
    config_for, tmp_path, dibr, qwen2_vl_dir
):
    config = config_for(dibr, qwen2_vl_dir)
    assert evaluate_run(config, tmp_path, shard=(0, 2), resamples=0) is None
    assert evaluate_run(config, tmp_path, shard=(1, 2), resamples=0) is None
    assert not (tmp_path / "results.csv").exists()  # shards only fill the store
    summary = evaluate_run(config, tmp_path, resamples=0)
    assert summary["usage"]["rated"] == 0 and summary["scored"] == LIMIT


# ---- a run folder always describes one run ---------------------------------------------


def test_a_rerun_with_other_options_that_fails_leaves_the_previous_run_whole(
    config_for, tmp_path, dibr, qwen2_vl_dir, monkeypatch
):
    out = tmp_path / "run"
    evaluate_run(config_for(dibr, qwen2_vl_dir), out, resamples=0)
    before = outputs(out)

    original = Scorer.iter_score

    def interrupted(self, images, chunk=None, total=None):  # Ctrl-C after two images
        yield from original(self, itertools.islice(images, 2), 1)
        raise KeyboardInterrupt

    monkeypatch.setattr(Scorer, "iter_score", interrupted)
    with pytest.raises(KeyboardInterrupt):
        other = config_for(dibr, qwen2_vl_dir, levels=5)
        evaluate_run(other, out, resamples=0, overwrite=True)
    assert outputs(out) == before  # config, results, metrics and report: the K = 7 run
    log = [json.loads(line) for line in (out / "invocations.jsonl").read_text().splitlines()]
    assert [entry["finished"] for entry in log] == [True, False]
    assert RunConfig.read(out).scoring["levels"] == 7 and len(read_results(out)[0]) == LIMIT


def test_a_store_that_cannot_be_written_stops_the_run_and_keeps_the_outputs(
    config_for, tmp_path, dibr, qwen2_vl_dir, sam2_dir, monkeypatch
):
    out = tmp_path / "run"
    config = config_for(dibr, qwen2_vl_dir, region_mode="bbox", segmenter=str(sam2_dir))
    store = out / "store.sqlite"
    out.mkdir()
    evaluate_run(config_for(dibr, qwen2_vl_dir), out, resamples=0)
    before = outputs(out)

    def full_disk(self, image):
        raise StoreError(f"{store}: cannot write to the store (database or disk is full)")

    monkeypatch.setattr(CachingSegmenter, "masks", full_disk)
    with pytest.raises(StoreError, match="disk is full"):
        evaluate_run(config, out, resamples=0, overwrite=True)
    assert outputs(out) == before


def test_two_runs_on_one_folder_at_once_are_refused_clearly(
    config_for, tmp_path, dibr, qwen2_vl_dir
):
    holding, release = threading.Event(), threading.Event()

    def first():
        with locked(tmp_path, shared=False, command="score --out"):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=first)
    thread.start()
    holding.wait(30)
    try:
        holder = rf"llmiqa score --out \(pid {os.getpid()} on .+\) is using this run folder"
        with pytest.raises(RunError, match=holder):
            evaluate_run(config_for(dibr, qwen2_vl_dir), tmp_path, resamples=0)
        with pytest.raises(RunError, match="llmiqa score --out"):
            evaluate_run(config_for(dibr, qwen2_vl_dir), tmp_path, shard=(0, 2), resamples=0)
    finally:
        release.set()
        thread.join()
    assert not (tmp_path / ".lock").exists()  # the last holder leaves no lock file


def test_results_from_another_run_than_the_config_are_refused(finished_run, tmp_path):
    out, _ = finished_run
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", "results.jsonl"):
        (copy / name).write_bytes((out / name).read_bytes())
    config = json.loads((copy / "config.json").read_text())
    config["scoring"]["lam"] = 2.0  # the config now names another run
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="another llmiqa version or edited"):
        ablate(copy)


def test_the_dogiqa_preset_scores_failures_as_1_beside_the_default(
    config_for, tmp_path, dibr, qwen2_vl_dir
):
    config = config_for(dibr, qwen2_vl_dir, limit=3, preset="dogiqa", dtype="float32")
    assert config.scoring["readout"] == "greedy" and config.scoring["wording"] == "dogiqa"
    summary = evaluate_run(config, tmp_path, resamples=0)
    assert summary["scored"] == 3 and "metrics_failures_as_1" not in summary


def eval_command(dibr, model, limit: int) -> list[str]:
    """`llmiqa eval` of the first `limit` DIBR images, one rating per batch."""
    return [
        sys.executable, "-m", "llmiqa.cli", "eval", "--dataset", "csv", "--root", dibr["root"],
        "--labels", dibr["labels"], "--limit", str(limit), "--model", str(model),
        "--region-mode", "whole-only", "--batch-size", "1", "--bootstrap", "0",
    ]  # fmt: skip


def signal_once_rated(command: list[str], store, sig: int, **popen) -> subprocess.Popen:
    """Start `command`, send it `sig` once two ratings are stored."""
    victim = subprocess.Popen(
        command,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        # Ctrl-C as in a terminal, even where this test runs with SIGINT ignored (a job
        # started in the background by a shell)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **popen,
    )
    deadline = time.monotonic() + 300
    while _ratings(store) < 2:
        assert victim.poll() is None, "the run ended before the signal"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    victim.send_signal(sig)
    return victim


def test_resume_after_sigkill_finishes_only_what_is_missing(tmp_path, dibr, qwen2_vl_dir):
    limit = 8
    args = eval_command(dibr, qwen2_vl_dir, limit)
    killed = tmp_path / "killed"
    store = killed / "store.sqlite"
    victim = signal_once_rated([*args, "--out", str(killed)], store, signal.SIGKILL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    victim.wait()
    stored = _ratings(store)
    assert 2 <= stored < limit
    assert not (killed / "results.csv").exists()  # nothing half-written

    assert main([*args[3:], "--out", str(killed)]) == 0  # the same command, in-process
    resumed = json.loads((killed / "metrics.json").read_text())
    assert resumed["usage"]["rated"] == limit - stored
    assert _ratings(store) == limit  # nothing lost, nothing duplicated

    clean = tmp_path / "clean"
    config = RunConfig.read(killed)
    evaluate_run(replace(config, store=None), clean, resamples=0)
    assert (killed / "results.csv").read_text() == (clean / "results.csv").read_text()


def test_ctrl_c_stops_a_run_within_a_second_in_one_line(tmp_path, dibr, qwen2_vl_dir):
    out = tmp_path / "run"
    command = [*eval_command(dibr, qwen2_vl_dir, 48), "--out", str(out)]
    run = signal_once_rated(command, out / "store.sqlite", signal.SIGINT,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    sent = time.monotonic()
    _, err = run.communicate(timeout=60)
    stopped = time.monotonic() - sent
    print(f"stopped {stopped:.3f} s after the signal")
    assert run.returncode == 130 and stopped < 1.0, (run.returncode, stopped)
    assert err.strip().splitlines()[-1] == (
        "llmiqa: interrupted; everything rated so far is in the store, and a run folder "
        "still holds its previous outputs"
    )
    assert "Traceback" not in err and not (out / "results.csv").exists()
    assert 2 <= _ratings(out / "store.sqlite") < 48


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


def test_after_a_run_the_stores_main_file_alone_holds_every_rating(
    config_for, dibr, qwen2_vl_dir, tmp_path
):
    """A copy of store.sqlite without its -wal (a backup of the one file) loses nothing."""
    out = tmp_path / "run"
    evaluate_run(config_for(dibr, qwen2_vl_dir, limit=3), out, resamples=0)
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes((out / "store.sqlite").read_bytes())
    assert Store(copy).counts()["ratings"] == 3


# ---- labels naming images inside tar shards and Parquet files ------------------------------

DIGEST = ["--backend", "digest", "--model", "m", "--region-mode", "whole-only"]


@pytest.fixture
def digest_backend(monkeypatch):
    """digest_rater: ratings that follow each image's pixels, with no model."""
    sys.path.insert(0, str(Path(__file__).parent))
    import digest_rater

    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))  # undone after
    digest_rater.register()


@pytest.fixture
def both_ways(tmp_path, real_images):
    """Six real photos as files, and the same photos in a tar shard (3) and a Parquet file
    (3, in two row groups), each with a label file naming them in one interleaved order:
    (root, names as files, names as container ids)."""
    root = tmp_path / "data"
    (root / "files").mkdir(parents=True)
    photos = real_images[:6]
    for photo in photos:
        shutil.copy(photo, root / "files" / photo.name)
    with tarfile.open(root / "shard.tar", "w") as archive:
        for photo in photos[:3]:
            archive.add(photo, arcname=f"{photo.name}")
    table = pa.table({"jpg": [p.read_bytes() for p in photos[3:]], "n": [3, 4, 5]})
    pq.write_table(table, root / "rows.parquet", row_group_size=2)
    order = [5, 0, 3, 2, 4, 1]  # tar and Parquet interleaved, each out of its own order
    files = [f"files/{photos[i].name}" for i in order]
    inside = [f"shard.tar#{photos[i].name}" if i < 3 else f"rows.parquet#{i - 3}" for i in order]
    inside[1] = f"{root}/{inside[1]}"  # an absolute id, as score --out writes it
    for name, names in (("files.csv", files), ("inside.csv", inside)):
        lines = "".join(f"{image},{1 + n / 2}\n" for n, image in enumerate(names))
        (root / name).write_text("image,mos\n" + lines)
    return root, files, inside


def csv_run(root, labels: str, out, *more: str) -> list[str]:
    return ["eval", "--dataset", "csv", "--root", str(root), "--labels", str(root / labels),
            "--out", str(out), "--bootstrap", "0", *DIGEST, *more]  # fmt: skip


def rounded(value):
    """Numbers to 9 decimals, nested (NaN as text, equal to itself)."""
    if isinstance(value, float):
        return "nan" if np.isnan(value) else round(value, 9)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def test_labels_naming_tar_members_and_parquet_rows_score_as_the_files_do(
    both_ways, digest_backend, tmp_path, capsys
):
    root, files, inside = both_ways
    assert main(csv_run(root, "files.csv", tmp_path / "files")) == 0
    assert main(csv_run(root, "inside.csv", tmp_path / "inside")) == 0
    as_files, _ = read_results(tmp_path / "files")
    as_ids, _ = read_results(tmp_path / "inside")
    assert [r.name for r in as_files] == files
    assert [r.digest for r in as_ids] == [r.digest for r in as_files]  # the same pixels, in order
    assert [r.score for r in as_ids] == [r.score for r in as_files]
    rows = list(csv.DictReader((tmp_path / "inside" / "results.csv").read_text().splitlines()))
    assert [row["image"] for row in rows] == inside  # named as the label file names them
    # ablate rescores through the same readers: the same rows either way
    variants = [
        [r.record() for r in ablate(tmp_path / run, ["levels"])] for run in ("files", "inside")
    ]
    assert rounded(variants[0]) == rounded(variants[1])  # the logistic fit: not bit for bit


def test_a_member_not_in_its_tar_is_one_failed_image(both_ways, digest_backend, tmp_path, capsys):
    root, _, inside = both_ways
    with (root / "inside.csv").open("a") as labels:
        labels.write("shard.tar#nokey.jpg,3\n")
    assert main(csv_run(root, "inside.csv", tmp_path / "run", "--parquet-col", "jpg")) == 1
    assert f"{len(inside)} of {len(inside) + 1} images scored" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    error = f"{root}/shard.tar: no sample 'nokey' with an image 'nokey.jpg' in this tar"
    assert metrics["failures"] == [{"image": "shard.tar#nokey.jpg", "error": error}]


def test_eval_on_ray_refuses_images_inside_containers_before_starting(
    both_ways, digest_backend, tmp_path, capsys
):
    root, _, inside = both_ways
    assert main(csv_run(root, "inside.csv", tmp_path / "run", "--ray")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--ray" in err
    assert f"6 image(s) lie inside tar or Parquet files (first: {inside[0]})" in err
    assert not (tmp_path / "run" / "store.sqlite").exists()  # refused before any work
