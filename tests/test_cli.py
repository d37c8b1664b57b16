"""`llmiqa` as a user runs it: the command line in-process (plus one real subprocess),
real images, tiny random models."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from llmiqa import __version__
from llmiqa.cli import main
from llmiqa.tiny import PERMISSIVE_MASK_FLAGS

RANDOM_SAM2 = PERMISSIVE_MASK_FLAGS.split()
ROOT = Path(__file__).resolve().parents[1]


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
        (
            ["--levels", "4"],
            "levels (--levels) 4: the paper word standard is defined for K in "
            "[3, 5, 7, 9]; the number standard (--kind number) takes any K",
        ),
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


def test_json_gives_the_spread_of_a_score_where_its_readout_has_one(llmiqa, qwen2_vl_dir, two):
    _, out, _ = llmiqa("score", two[0], "--model", qwen2_vl_dir, "--preset", "qalign", "--json")
    record = json.loads(out)
    probs = np.array(record["probs"])
    levels = np.arange(1, 6)
    assert record["spread"] == pytest.approx(np.sqrt(probs @ levels**2 - (probs @ levels) ** 2))
    _, out, _ = llmiqa("score", two[0], "--model", qwen2_vl_dir, "--preset", "qbench", "--json")
    assert json.loads(out)["spread"] is None  # a tempered two-way softmax: no distribution


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
    assert drawn.width == original.width and drawn.height > original.height  # and a legend
    drawn = drawn.crop((0, 0, *original.size))
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


@pytest.mark.parametrize(
    ("preset", "answer"),
    [("sepiqa", "The quality of the image is very"), ("qalign", "The quality of the image is"),
     ("qbench", "The quality of the image is")],
)  # fmt: skip
def test_prompt_shows_each_protocols_question_and_opened_answer(
    llmiqa, qwen2_vl_dir, owl3_words_dir, preset, answer
):
    code, out, _ = llmiqa(
        "prompt", "--model", qwen2_vl_dir, "--model", owl3_words_dir, "--preset", preset
    )
    assert code == 0 and out.count("# ") == 4
    for block in out.split("# ")[1:]:
        assert block.rstrip("\n").endswith(f"assistant\n{answer}")  # both templates


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
    assert rows and all(row["new_ratings"] == 0 for row in rows)
    assert {row["scored"] for row in rows if not row["note"].startswith("n/a")} == {4}
    _, table, _ = llmiqa("ablate", out)
    assert table.startswith("| variant | SRCC |") and "readout=greedy" in table
    saved = json.loads((out / "ablation.json").read_text())  # saved beside the run
    assert [row["variant"] for row in saved] == [row["variant"] for row in rows]
    run_id = json.loads((out / "config.json").read_text())["run_id"]
    assert {row["run"] for row in saved} == {run_id}
    lines = (out / "ablation.csv").read_text().splitlines()
    assert lines[0].startswith("run,variant,srcc") and len(lines) == len(rows) + 1
    metrics_json = json.loads((out / "metrics.json").read_text())
    assert (
        metrics_json["llmiqa"] == __version__ and "torch" in metrics_json["environment"]["versions"]
    )
    assert f"| llmiqa | {__version__} |" in (out / "report.md").read_text()


def test_labels_are_paths_as_typed_and_a_missing_root_is_said(llmiqa, data_dir, tmp_path,
                                                               monkeypatch):  # fmt: skip
    monkeypatch.chdir(data_dir.parent)  # a relative path from here, not from --root
    code, out, err = llmiqa("bound", "--dataset", "csv", "--root", data_dir / "dibr",
                            "--labels", "data/dibr/mos.csv", "--levels", "3")  # fmt: skip
    assert code == 0 and "n = 96" in out, err
    code, _, err = llmiqa("bound", "--dataset", "csv", "--root", tmp_path / "nowhere")
    assert code == 2 and err.strip() == (
        f"llmiqa: {tmp_path / 'nowhere'}: folder not found (the dataset's root, --root)"
    )


def test_argument_errors_come_first_in_the_commands_own_words(llmiqa, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["score", "photo.jpg", "--regoins"])
    err = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2 and err == [
        "llmiqa score: error: unrecognized arguments: --regoins (did you mean --regions?)",
        "(all options: llmiqa score --help)",
    ]
    with pytest.raises(SystemExit):
        main(["score", "photo.jpg", "--levels", "seven"])
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "llmiqa score: error: argument --levels: invalid int value: 'seven'"
    assert len(err) == 2  # not the 28-line usage first


def test_help_says_each_default_once_and_the_version(capsys):
    for command in ("bound", "eval", "check", "demo", "ablate", "prompt", "score"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text and "(its default)" not in text, command
        lines = text.split("  --")
        for option in lines[1:]:
            assert option.count("(default:") <= 1, (command, option)
    shown = {
        "bound": ["--levels LEVELS", "the K to compute it for (default: 3 5 7 9)",
                  "--json one JSON list of rows"],
        "eval": ["resamples for the confidence intervals (default: 1000"],
        "check": ["(default: a new temporary folder", "noise distortion (default: 0)"],
        "demo": ["default: 127.0.0.1)", "(default: 7860)", "in MB (default: 50)"],
        "ablate": ["--json one JSON list of rows"],
        "prompt": ["or both (default: both)"],
        "score": ["--cut, --no-cut mplug-owl3: cut each sub-image into 384-px crops plus a "
                  "global view (default: True)"],
    }  # fmt: skip
    for command, phrases in shown.items():
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for phrase in phrases:
            assert phrase in text, (command, phrase)
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"llmiqa {__version__}"


def test_one_line_per_model_loaded_instead_of_progress_bars(two, qwen2_vl_dir):
    done = subprocess.run(
        [sys.executable, "-m", "llmiqa.cli", "score", str(two[0]), "--model", str(qwen2_vl_dir),
         "--region-mode", "whole-only"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stderr.splitlines() == [f"llmiqa: loading {qwen2_vl_dir} (transformers backend)"]


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


# ---- the first hour: nothing slow before what is known at once -------------------------


def test_missing_files_are_said_before_any_model_is_resolved(llmiqa, two, tmp_path):
    """A hub id that cannot be had here: had it been resolved first, its error would win."""
    missing = tmp_path / "nonexist.jpg"
    code, out, err = llmiqa("score", missing, "--model", "someone/not-here")
    assert code == 1 and out == ""
    assert err.splitlines() == [f"error: {missing}: no such file", "llmiqa: 1 of 1 images failed"]


def test_a_file_given_twice_is_scored_once_and_said_so(llmiqa, qwen2_vl_dir, two):
    again = os.path.relpath(two[0])  # the same file, written another way
    code, out, err = llmiqa("score", two[0], two[1], again, "--model", qwen2_vl_dir,
                            "--region-mode", "whole-only")  # fmt: skip
    assert code == 0 and len(out.splitlines()) == 2
    assert f"llmiqa: note: {again} given more than once: scored once" in err


def test_a_default_segmenter_that_cannot_be_had_names_the_options(llmiqa, qwen2_vl_dir, two):
    code, _, err = llmiqa("score", two[0], "--model", qwen2_vl_dir)  # regions: default SAM2
    assert code == 2 and err.count("\n") == 1
    assert "facebook/sam2.1-hiera-small" in err and "--segmenter" in err
    assert "--region-mode whole-only" in err and "llmiqa tiny" in err


def test_an_unreachable_hub_is_said_at_once_before_its_retries(two, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env |= {"HF_ENDPOINT": "https://hub.invalid", "HF_HOME": str(tmp_path / "hf")}
    run = subprocess.Popen(
        [sys.executable, "-m", "llmiqa.cli", "score", str(two[0]), "--model", "someone/model"],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        first = run.stderr.readline()
    finally:
        run.kill()
        run.wait()
    assert first.startswith("llmiqa: the hub (hub.invalid) is unreachable")
    assert "HF_HUB_OFFLINE=1" in first


# ---- one exit-status rule for every command ---------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, real_images, qwen2_vl_dir):
    """Real photos laid out for every command: a CSV benchmark of a.png and b.png (and one
    that also lists a missing image), a finished run of it and files to compare with it,
    a run whose b.png has gone since, and a LIVE Challenge release of two (and of three,
    one missing)."""
    root = tmp_path_factory.mktemp("inputs")
    photos = [p for p in real_images if p.suffix.lower() in (".png", ".jpg")][:2]
    for name, photo in zip("ab", photos, strict=True):
        shutil.copy(photo, root / f"{name}.png")
    (root / "ok.csv").write_text("image,mos\na.png,1\nb.png,2\n")
    (root / "some.csv").write_text("image,mos\na.png,1\nb.png,2\ngone.png,3\n")
    whole = ["--model", str(qwen2_vl_dir), "--region-mode", "whole-only"]
    run = root / "run"
    assert main(["eval", "--dataset", "csv", "--root", str(root), "--labels", str(root / "ok.csv"),
                 "--bootstrap", "0", "--out", str(run), *whole]) == 0  # fmt: skip
    gone = root / "gone-since"
    gone.mkdir()
    for name in ("a.png", "b.png", "ok.csv"):
        shutil.copy(root / name, gone / name)
    assert main(["eval", "--dataset", "csv", "--root", str(gone), "--labels",
                 str(gone / "ok.csv"), "--bootstrap", "0", "--out", str(root / "run2"),
                 *whole]) == 0  # fmt: skip
    (gone / "b.png").unlink()
    for name, scores in (("ok", {"a": 1, "b": 1}), ("some", {"a": 1, "z": 1})):
        (root / f"{name}.json").write_text(json.dumps(scores))
    (root / "bad.json").write_text('[{"name": "a", "score": NaN}]')
    for release, names in (
        ("livec", ["a.png", "b.png"]),
        ("livec-some", ["a.png", "b.png", "c.png"]),
    ):
        (root / release / "Data").mkdir(parents=True)
        (root / release / "Images").mkdir()
        for name in ("a.png", "b.png"):
            shutil.copy(root / name, root / release / "Images" / name)
        listed = np.array([[n] for n in names], dtype=object)
        scipy.io.savemat(root / release / "Data" / "AllImages_release.mat",
                         {"AllImages_release": listed})  # fmt: skip
        mos = np.array([[30.0, 60.0, 90.0][: len(names)]])
        scipy.io.savemat(root / release / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos})
    (root / "one").mkdir()
    shutil.copy(root / "a.png", root / "one" / "a.png")
    return root, whole


def _case(command: str, status: int, root, whole, tmp, qwen, sam2, data) -> list:
    """The arguments of `command` that should end with `status`."""
    csv = ["eval", "--dataset", "csv", "--root", root, "--bootstrap", "0", "--out", tmp / "out"]
    again = ["reproduce", "--subset", "--bootstrap", "0", "--protocols", "paper", "--out",
             tmp / "repro", *whole]  # fmt: skip
    segment = ["segment", "-o", tmp / "regions.png", "--model", qwen, "--segmenter", sam2,
               *RANDOM_SAM2]  # fmt: skip
    check = ["check", "--images", root / "one", "--distortions", "blur", "--out", tmp, *whole]
    return {
        ("score", 0): ["score", root / "a.png", *whole],
        ("score", 1): ["score", root / "a.png", root / "gone.png", *whole],
        ("score", 2): ["score", root / "a.png", "--model", tmp],
        ("segment", 0): [*segment, root / "a.png"],
        ("segment", 1): [*segment, root / "gone.png"],
        ("segment", 2): [*segment, root / "a.png", "--model", "not/here"],
        ("prompt", 0): ["prompt", "--model", qwen],
        ("prompt", 2): ["prompt", "--model", tmp],
        ("eval", 0): [*csv, "--labels", root / "ok.csv", *whole],
        ("eval", 1): [*csv, "--labels", root / "some.csv", *whole],
        ("eval", 2): [*csv, "--labels", tmp / "none.csv", *whole],
        ("bound", 0): ["bound", "--dataset", "kadid10k", "--root", data / "labels" / "kadid10k"],
        ("bound", 2): ["bound", "--dataset", "kadid10k", "--root", tmp / "none"],
        ("ablate", 0): ["ablate", root / "run"],
        ("ablate", 1): ["ablate", root / "run2", "--axes", "levels"],  # b.png gone since
        ("ablate", 2): ["ablate", tmp / "none"],
        ("reproduce", 0): [*again, "--livec", root / "livec"],
        ("reproduce", 1): [*again, "--livec", root / "livec-some"],  # c.png missing
        ("reproduce", 2): [*again, "--livec", tmp / "none"],
        ("compare", 0): ["compare", root / "run", root / "ok.json", "--readout", "argmax"],
        ("compare", 1): ["compare", root / "run", root / "some.json", "--readout", "argmax"],
        ("compare", 2): ["compare", root / "run", root / "bad.json"],
        ("tiny", 2): ["tiny", root / "a.png" / "models"],
        ("check", 1): check,  # random weights: every distortion is flagged
        ("check", 2): ["check", "--images", tmp / "none", *whole],
        ("demo", 2): ["demo", "--model", tmp / "none"],
    }[command, status]


# (command, status) for every status a command can end with here. Not here: tiny's 0 (run
# as the README shows it, tests/test_readme.py) and check's 0 (random weights cannot pass).
EXIT_RULE = [("score", 0), ("score", 1), ("score", 2), ("segment", 0), ("segment", 1),
             ("segment", 2), ("prompt", 0), ("prompt", 2), ("eval", 0), ("eval", 1),
             ("eval", 2), ("bound", 0), ("bound", 2), ("ablate", 0), ("ablate", 1),
             ("ablate", 2), ("reproduce", 0), ("reproduce", 1), ("reproduce", 2),
             ("compare", 0), ("compare", 1), ("compare", 2), ("tiny", 2), ("check", 1),
             ("check", 2), ("demo", 2)]  # fmt: skip


@pytest.mark.parametrize(("command", "status"), EXIT_RULE)
def test_every_command_follows_the_one_exit_status_rule(
    command, status, llmiqa, inputs, tmp_path, qwen2_vl_dir, sam2_dir, data_dir
):
    """README's rule: 0 all done, 1 finished but some inputs failed (or did not match
    up, or were flagged), 2 nothing done: a whole-run problem in one line, before any
    output."""
    root, whole = inputs
    args = _case(command, status, root, whole, tmp_path, qwen2_vl_dir, sam2_dir, data_dir)
    code, out, err = llmiqa(*args)
    assert code == status, err
    assert "\r" not in err  # progress bars go to a terminal only, never into a log
    if status == 2:
        assert out == "" and err.count("\n") == 1 and "internal error" not in err
    if status == 1 and command in ("score", "eval", "reproduce", "segment"):
        assert "failed" in err or "error:" in err  # the failure is said, not only coded


def test_tiny_into_a_file_names_the_folder_it_cannot_make(tmp_path, capsys):
    file = tmp_path / "a.png"
    file.write_bytes(b"")
    assert main(["tiny", str(file / "models")]) == 2
    err = capsys.readouterr().err
    said = f"{file / 'models'}: cannot make this folder for the tiny models (Not a directory)"
    assert err == f"llmiqa: {said}\n"


def test_the_exit_status_rule_is_in_the_help_and_the_readme_word_for_word(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = capsys.readouterr().out
    start = shown.index("exit status")
    rule = shown[start : shown.index("\n\n", start)]
    assert rule.count("\n") >= 4 and rule in (ROOT / "README.md").read_text()


def test_score_prints_one_line_per_image_whatever_its_name(llmiqa, qwen2_vl_dir, two, tmp_path):
    odd = tmp_path / "two\nlines\tand a tab.png"
    shutil.copy(two[1], odd)
    code, out, _ = llmiqa("score", odd, two[0], "--model", qwen2_vl_dir,
                          "--region-mode", "whole-only")  # fmt: skip
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert json.loads(lines[0].split("\t", 1)[1]) == str(odd)  # a JSON string: escaped
    assert lines[1].endswith(f"\t{two[0]}")  # a plain name stays as it is


def test_regions_says_it_changes_what_is_shown_not_what_is_computed(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    shown = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse's wrap
    assert "it changes what is shown, not what is computed: SAM2 finds the regions with or" in shown
    assert "(only --region-mode whole-only skips SAM2)" in shown


def test_bound_says_which_images_and_prints_the_papers_value_beside(llmiqa, data_dir):
    livec = data_dir / "labels" / "livec"
    code, out, _ = llmiqa("bound", "--dataset", "livec", "--root", livec, "--levels", "3")
    first, _, row = out.splitlines()
    assert code == 0 and "n = 1,162: the 7 training images left out" in first
    assert "Table 1 is on all 1,169: --include-training" in first
    assert row.split() == ["3", "0.9101", "0.9210", "0.9155", "0.915"]
    code, out, _ = llmiqa("bound", "--dataset", "livec", "--root", livec, "--levels", "3",
                          "--include-training", "--json")  # fmt: skip
    (row,) = json.loads(out)
    assert (row["images"], row["paper"], round(row["mean"], 3)) == (1169, 0.915, 0.915)


def test_a_torchvision_built_for_another_torch_is_one_line_naming_both_and_the_fix(
    qwen2_5_vl_dir, two, tmp_path
):
    """A stand-in for a mismatched install: a torchvision 0.28.0 (for torch 2.13) whose
    import fails as the real one does beside torch 2.14 (its C++ operators do not load)."""
    fake = tmp_path / "site"
    (fake / "torchvision").mkdir(parents=True)
    (fake / "torchvision" / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n"
    )
    info = fake / "torchvision-0.28.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.28.0\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
        [str(fake), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "llmiqa.cli", "score", str(two[0]), "--model", str(qwen2_5_vl_dir),
         "--region-mode", "whole-only"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert "torchvision 0.28.0 do not go together" in line and "torchvision::nms" in line
    assert "pip install torch==2.14.1 torchvision==0.29.1" in line
    assert "internal error" not in done.stderr
