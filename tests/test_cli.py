"""`llmiqa` as a user runs it: the command line in-process (plus one real subprocess),
real images, tiny random models."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from llmiqa.cli import main
from llmiqa.tiny import PERMISSIVE_MASK_FLAGS

RANDOM_SAM2 = PERMISSIVE_MASK_FLAGS.split()


@pytest.fixture
def llmiqa(capsys):
    """Run the command line; returns (exit code, stdout, stderr)."""

    def run(*args):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="module")
def two(data_dir):
    return [data_dir / "images" / "LIVEC_1000.JPG", data_dir / "images" / "KADID_I01.png"]


def test_the_installed_command_runs_as_a_subprocess_and_prints_scores(qwen2_vl_dir, two):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "llmiqa.cli", "score", *map(str, two), "--model",
         str(qwen2_vl_dir), "--region-mode", "whole-only"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, photo in zip(lines, two, strict=True):
        score, name = line.split("\t")
        assert 1 <= float(score) <= 7 and name == str(photo)


def test_help_and_the_zero_call_commands_do_not_import_torch(data_dir, tmp_path):
    kadid = str(data_dir / "labels" / "kadid10k")
    code = (
        "import sys\nfrom llmiqa.cli import main\n"
        "for argv in (['--help'], ['bound', '--help'], ['ablate', '--help'],"
        f" ['bound', '--dataset', 'kadid10k', '--root', {kadid!r}]):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_json_carries_probabilities_model_and_standard(llmiqa, qwen2_vl_dir, two):
    code, out, _ = llmiqa(
        "score", two[0], "--model", qwen2_vl_dir, "--region-mode", "whole-only",
        "--levels", "5", "--kind", "sentence", "--readout", "argmax", "--json",
    )  # fmt: skip
    record = json.loads(out)
    assert code == 0 and record["path"] == str(two[0])
    assert record["standard"] == "sentence-5" and record["levels"] == 5
    assert len(record["probs"]) == 5 and abs(sum(record["probs"]) - 1) < 1e-9
    assert record["score"] == record["probs"].index(max(record["probs"])) + 1
    assert record["models"] == [str(qwen2_vl_dir)]
    assert len(record["ratings"]["logprobs"][0][0]) == 5


def test_a_folder_stands_for_its_images_and_subfolders_need_recursive(
    llmiqa, qwen2_vl_dir, data_dir, tmp_path
):
    code, out, _ = llmiqa(
        "score", data_dir / "images", "--model", qwen2_vl_dir, "--region-mode", "whole-only"
    )
    assert len(out.strip().splitlines()) == len(list((data_dir / "images").iterdir()))
    (tmp_path / "nested").mkdir()
    Image.open(data_dir / "images" / "KADID_I01.png").save(tmp_path / "nested" / "a.png")
    code, _, err = llmiqa("score", tmp_path, "--model", qwen2_vl_dir)
    assert code == 2 and "no image files in this folder (1 subfolder(s): add --recursive)" in err
    code, out, _ = llmiqa(
        "score", tmp_path, "--recursive", "--model", qwen2_vl_dir, "--region-mode", "whole-only"
    )
    assert code == 0 and out.strip().endswith("a.png")


def test_some_failures_still_print_the_rest_and_set_the_exit_code(
    llmiqa, qwen2_vl_dir, two, tmp_path
):
    junk = tmp_path / "junk.png"
    junk.write_text("junk")
    code, out, err = llmiqa(
        "score", two[0], tmp_path / "gone.jpg", junk, two[1],
        "--model", qwen2_vl_dir, "--region-mode", "whole-only",
    )  # fmt: skip
    assert code == 1
    assert len(out.strip().splitlines()) == 2
    assert "gone.jpg: no such file" in err and "junk.png: not an image" in err
    assert "2 of 4 images failed" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "{tmp}"], "{tmp}: no config.json"),
        (["--model", "models/not-here"], "models/not-here: not in the local hub cache"),
        (["--device", "cuda"], "--device cuda: torch sees no CUDA GPU here"),
        (["--levels", "4"], "defined for K in [3, 5, 7, 9], got 4"),
        (["--store", "{tmp}"], "is a folder; --store needs a file path"),
    ],
)
def test_whole_run_problems_are_one_line_and_exit_2_before_any_work(
    llmiqa, qwen2_vl_dir, two, tmp_path, args, message
):
    args = [a.format(tmp=tmp_path) for a in args]
    model = [] if "--model" in args else ["--model", qwen2_vl_dir]
    code, out, err = llmiqa("score", two[0], *model, "--region-mode", "whole-only", *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message.format(tmp=tmp_path) in err


def test_an_ensemble_from_repeated_models(llmiqa, qwen2_vl_dir, llava_dir, two):
    _, out, _ = llmiqa(
        "score", two[0], "--model", qwen2_vl_dir, "--model", llava_dir,
        "--region-mode", "whole-only", "--json",
    )  # fmt: skip
    record = json.loads(out)
    assert record["models"] == [str(qwen2_vl_dir), str(llava_dir)]
    assert record["score"] == pytest.approx(sum(record["s_model"]) / 2)


def test_regions_table_lists_every_region_with_box_area_and_score(
    llmiqa, qwen2_vl_dir, sam2_dir, two, tmp_path
):
    store = tmp_path / "s.sqlite"
    common = ["score", two[0], "--model", qwen2_vl_dir, "--segmenter", sam2_dir, *RANDOM_SAM2,
              "--store", store]  # fmt: skip
    _, out, _ = llmiqa(*common, "--json")
    record = json.loads(out)
    assert record["regions"] and {"box", "area", "area_fraction", "score"} <= set(
        record["regions"][0]
    )
    assert record["s_model"][0] == pytest.approx((record["s_global"][0] + record["s_local"][0]) / 2)
    _, out, _ = llmiqa(*common, "--regions")
    table = out.splitlines()
    assert table[0].split("\t") == [f"{record['score']:.4f}", str(two[0])]
    assert any(line.split()[:2] == ["-", "whole"] for line in table)
    assert sum(line.split()[0].isdigit() for line in table[1:]) == len(record["regions"])


def test_segment_draws_regions_over_the_image(llmiqa, qwen2_vl_dir, sam2_dir, two, tmp_path):
    out = tmp_path / "regions.png"
    code, printed, _ = llmiqa(
        "segment", two[0], "-o", out, "--model", qwen2_vl_dir, "--segmenter", sam2_dir,
        *RANDOM_SAM2,
    )  # fmt: skip
    assert code == 0 and "regions ->" in printed
    drawn = Image.open(out)
    original = Image.open(two[0]).convert("RGB")
    assert drawn.size == original.size
    difference = np.abs(np.asarray(drawn, int) - np.asarray(original, int)).sum(axis=2)
    assert (difference > 0).mean() > 0.5  # every region is tinted; the labels sit on top


def test_segment_offers_no_region_mode_it_cannot_draw(llmiqa, capsys):
    with pytest.raises(SystemExit):
        main(["segment", "x.png", "-o", "y.png", "--region-mode", "whole-only"])
    assert "invalid choice: 'whole-only'" in capsys.readouterr().err


def test_prompt_prints_what_each_model_reads(llmiqa, qwen2_vl_dir, owl3_dir):
    code, out, _ = llmiqa(
        "prompt", "--model", qwen2_vl_dir, "--model", owl3_dir, "--preset", "dogiqa"
    )
    assert code == 0 and out.count("# ") == 4  # two models, whole and region views
    assert "<|vision_start|><|image_pad|><|vision_end|>" in out and "<|image|>" in out
    assert "Please strictly follow the USER's format" in out


def test_the_papers_mplug_owl3_scores_through_the_cli(llmiqa, owl3_dir, sam2_dir, two):
    _, out, _ = llmiqa(
        "score", two[0], "--model", owl3_dir, "--region-mode", "whole-only", "--json"
    )
    whole = json.loads(out)
    assert len(whole["probs"]) == 7 and abs(sum(whole["probs"]) - 1) < 1e-9
    _, out, _ = llmiqa(
        "score", two[0], "--model", owl3_dir, "--segmenter", sam2_dir, *RANDOM_SAM2,
        "--readout", "argmax", "--json",
    )  # fmt: skip
    mixed = json.loads(out)
    np.testing.assert_allclose(mixed["probs"], whole["probs"])
    assert mixed["regions"] and all(r["score"] in range(1, 8) for r in mixed["regions"])


def test_eval_then_ablate_from_the_run_folder(llmiqa, qwen2_vl_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    code, printed, _ = llmiqa(
        "eval", "--dataset", "csv", "--root", data_dir / "dibr", "--limit", "4",
        "--model", qwen2_vl_dir, "--region-mode", "whole-only", "--bootstrap", "20", "--out", out,
    )  # fmt: skip
    assert code == 0 and "4 of 4 images scored" in printed
    assert {"results.csv", "metrics.json", "report.html"} <= {p.name for p in out.iterdir()}
    _, printed, _ = llmiqa("ablate", out, "--json")
    rows = json.loads(printed)
    assert rows and all(row["new_ratings"] == 0 and row["scored"] == 4 for row in rows)
    _, table, _ = llmiqa("ablate", out)
    assert table.startswith("| variant | SRCC |") and "readout=greedy" in table


def test_bound_prints_table_1_as_json(llmiqa, data_dir):
    _, out, _ = llmiqa(
        "bound", "--dataset", "kadid10k", "--root", data_dir / "labels" / "kadid10k",
        "--levels", "5", "7", "--json",
    )  # fmt: skip
    rows = json.loads(out)
    assert [(r["dataset"], r["levels"], r["formula"]) for r in rows] == [
        ("kadid10k", 5, "code"), ("kadid10k", 7, "code"),
    ]  # fmt: skip
    assert [round(r["mean"], 3) for r in rows] == [0.980, 0.988]  # Table 1
    assert all(r["mean"] == pytest.approx((r["srcc"] + r["plcc"]) / 2) for r in rows)


def test_usage_errors_are_one_line(llmiqa, tmp_path):
    code, _, err = llmiqa("ablate", tmp_path / "nothing")
    assert code == 2 and "not a run folder" in err and err.count("\n") == 1


def test_tiny_builds_models_that_score_offline(llmiqa, tmp_path, two):
    code, out, _ = llmiqa("tiny", tmp_path / "tiny")
    assert code == 0 and "random weights" in out
    command = out.splitlines()[-1].removeprefix("try: llmiqa ").replace("IMAGE", str(two[0]))
    code, out, _ = llmiqa(*command.split())
    assert code == 0 and out.strip().endswith(str(two[0]))
