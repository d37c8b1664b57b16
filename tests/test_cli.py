"""`llmiqa` as a user runs it: real subprocesses, real images, tiny random models."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def llmiqa(*args, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "llmiqa.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def photos(data_dir):
    return [data_dir / "images" / "LIVEC_1000.JPG", data_dir / "images" / "KADID_I01.png"]


def test_score_prints_one_score_per_image(qwen2_vl_dir, photos):
    done = llmiqa("score", *photos, "--model", qwen2_vl_dir, "--region-mode", "whole-only")
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, photo in zip(lines, photos, strict=True):
        score, name = line.split("\t")
        assert 1 <= float(score) <= 7 and name == str(photo)


def test_json_carries_probabilities_model_and_standard(qwen2_vl_dir, photos):
    done = llmiqa(
        "score", photos[0], "--model", qwen2_vl_dir, "--region-mode", "whole-only",
        "--levels", "5", "--standard", "sentence", "--readout", "argmax", "--json",
    )  # fmt: skip
    record = json.loads(done.stdout)
    assert record["path"] == str(photos[0])
    assert record["standard"] == "sentence-5" and record["levels"] == 5
    assert len(record["probs"]) == 5 and abs(sum(record["probs"]) - 1) < 1e-9
    assert record["score"] == record["probs"].index(max(record["probs"])) + 1
    assert record["models"] == [str(qwen2_vl_dir)]


def test_a_folder_stands_for_its_images(qwen2_vl_dir, data_dir):
    done = llmiqa(
        "score", data_dir / "images", "--model", qwen2_vl_dir, "--region-mode", "whole-only"
    )
    assert len(done.stdout.strip().splitlines()) == len(list((data_dir / "images").iterdir()))


def test_some_failures_still_print_the_rest_and_set_the_exit_code(qwen2_vl_dir, photos, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_text("junk")
    done = llmiqa(
        "score", photos[0], tmp_path / "gone.jpg", junk, photos[1],
        "--model", qwen2_vl_dir, "--region-mode", "whole-only", check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert len(done.stdout.strip().splitlines()) == 2
    assert "gone.jpg: no such file" in done.stderr and "junk.png: not an image" in done.stderr
    assert "2 of 4 images failed" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_model_folder_that_is_not_a_vlm_is_one_clear_line(photos, tmp_path):
    done = llmiqa(
        "score", photos[0], "--model", tmp_path, "--region-mode", "whole-only", check=False
    )
    assert done.returncode == 2
    assert f"{tmp_path}: no config.json" in done.stderr and "Traceback" not in done.stderr


def test_an_ensemble_from_repeated_models(qwen2_vl_dir, llava_dir, photos):
    done = llmiqa(
        "score", photos[0], "--model", qwen2_vl_dir, "--model", llava_dir,
        "--region-mode", "whole-only", "--json",
    )  # fmt: skip
    record = json.loads(done.stdout)
    assert record["models"] == [str(qwen2_vl_dir), str(llava_dir)]
    assert record["score"] == pytest.approx(sum(record["s_model"]) / 2)


# A random SAM2 passes no default threshold: these keep its (noise) candidates.
RANDOM_SAM2 = ["--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--points-per-side", "4"]


def test_regions_table_lists_every_region_with_box_area_and_score(qwen2_vl_dir, sam2_dir, photos):
    done = llmiqa(
        "score", photos[0], "--model", qwen2_vl_dir, "--segmenter", sam2_dir, *RANDOM_SAM2,
        "--regions", "--json",
    )  # fmt: skip
    record = json.loads(done.stdout)
    assert record["regions"] and {"box", "area", "area_fraction", "score", "probs"} <= set(
        record["regions"][0]
    )
    assert record["s_model"][0] == pytest.approx((record["s_global"][0] + record["s_local"][0]) / 2)
    table = llmiqa(
        "score", photos[0], "--model", qwen2_vl_dir, "--segmenter", sam2_dir, *RANDOM_SAM2,
        "--regions",
    ).stdout.splitlines()  # fmt: skip
    assert table[0].split("\t") == [f"{record['score']:.4f}", str(photos[0])]
    assert any(line.split()[:2] == ["-", "whole"] for line in table)
    assert sum(line.split()[0].isdigit() for line in table[1:]) == len(record["regions"])


def test_segment_draws_regions_over_the_image(qwen2_vl_dir, sam2_dir, photos, tmp_path):
    out = tmp_path / "regions.png"
    done = llmiqa(
        "segment", photos[0], "-o", out, "--model", qwen2_vl_dir, "--segmenter", sam2_dir,
        *RANDOM_SAM2,
    )  # fmt: skip
    assert "regions ->" in done.stdout
    drawn = Image.open(out)
    original = Image.open(photos[0]).convert("RGB")
    assert drawn.size == original.size
    difference = np.abs(np.asarray(drawn, int) - np.asarray(original, int)).sum(axis=2)
    assert (difference > 0).mean() > 0.5  # every region is tinted; the labels sit on top


def test_the_papers_mplug_owl3_scores_through_the_cli(owl3_dir, sam2_dir, photos):
    whole = json.loads(
        llmiqa(
            "score", photos[0], "--model", owl3_dir, "--region-mode", "whole-only", "--json"
        ).stdout
    )
    assert len(whole["probs"]) == 7 and abs(sum(whole["probs"]) - 1) < 1e-9
    mixed = json.loads(
        llmiqa(
            "score", photos[0], "--model", owl3_dir, "--segmenter", sam2_dir, *RANDOM_SAM2,
            "--readout", "argmax", "--json",
        ).stdout
    )  # fmt: skip
    np.testing.assert_allclose(mixed["global_probs"], whole["global_probs"])
    assert mixed["regions"] and all(r["score"] in range(1, 8) for r in mixed["regions"])


def test_eval_then_ablate_from_the_run_folder(qwen2_vl_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    done = llmiqa(
        "eval", "--dataset", "csv", "--root", data_dir / "dibr", "--limit", "4",
        "--model", qwen2_vl_dir, "--region-mode", "whole-only", "--bootstrap", "20", "--out", out,
    )  # fmt: skip
    assert "4 of 4 images scored" in done.stdout
    assert {"results.csv", "metrics.json", "report.html"} <= {p.name for p in out.iterdir()}
    rows = json.loads(llmiqa("ablate", out, "--json").stdout)
    assert rows and all(row["model_calls"] == 0 and row["scored"] == 4 for row in rows)
    table = llmiqa("ablate", out).stdout
    assert table.startswith("| variant | SRCC |") and "readout=argmax" in table


def test_bound_prints_table_1_as_json(data_dir):
    done = llmiqa(
        "bound", "--dataset", "kadid10k", "--root", data_dir / "labels" / "kadid10k",
        "--levels", "5", "7", "--json",
    )  # fmt: skip
    rows = json.loads(done.stdout)
    assert [(r["dataset"], r["levels"]) for r in rows] == [("kadid10k", 5), ("kadid10k", 7)]
    assert [r["mean"] for r in rows] == pytest.approx([0.980, 0.988], abs=0.01)  # Table 1
    assert all(r["mean"] == pytest.approx((r["srcc"] + r["plcc"]) / 2) for r in rows)


def test_usage_errors_are_one_line(tmp_path):
    done = llmiqa("ablate", tmp_path / "nothing", check=False)
    assert done.returncode == 2 and "not a run folder" in done.stderr
    assert "Traceback" not in done.stderr
