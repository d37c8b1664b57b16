"""`llmiqa compare`: what it refuses to match (names twice, names it cannot tell apart,
scores that are not numbers) and what it says when the run and the file do not match up."""

import json
import shutil
import subprocess

import pytest

from llmiqa.cli import main
from llmiqa.errors import UsageError
from llmiqa.paper.compare import read_theirs
from llmiqa.runs.config import RunConfig
from llmiqa.runs.evaluate import evaluate_run
from llmiqa.scoring.presets import resolve


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"name": "a.png", "score": 3}, {"name": "a.JPG", "score": 5}]',
         r"entries 1 and 2: both name 'a' \(names are matched without their extension\)"),
        ('{"a": Infinity}', r"entry 1: score inf is not a finite number"),
        ('[{"name": "a", "score": NaN}]', r"entry 1: score nan is not a finite number"),
        ('[{"name": "a", "score": true}]', r"entry 1: score True is not a finite number"),
        ('[{"name": "a", "score": "4"}]', r"entry 1: score '4' is not a finite number"),
    ],
)  # fmt: skip
def test_a_file_compare_cannot_read_as_one_score_per_image_is_refused_in_one_line(
    tmp_path, content, message
):
    file = tmp_path / "theirs.json"
    file.write_text(content)
    with pytest.raises(UsageError, match=message) as error:
        read_theirs(file)
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def run(tmp_path_factory, real_images, qwen2_vl_dir):
    """A whole-image run of three real photos listed by a CSV: a.png, b.png, c.png."""
    root = tmp_path_factory.mktemp("three")
    for name, photo in zip("abc", real_images, strict=False):
        shutil.copy(photo, root / f"{name}.png")
    (root / "mos.csv").write_text("image,mos\na.png,1\nb.png,2\nc.png,3\n")
    options = resolve({"model": [str(qwen2_vl_dir)], "region_mode": "whole-only"})
    config = RunConfig.create({"name": "csv", "root": str(root)}, options)
    out = tmp_path_factory.mktemp("run") / "run"
    evaluate_run(config, out, resamples=0)
    return out


def test_a_run_and_file_that_do_not_match_up_exit_1_and_say_so(run, tmp_path, capsys):
    file = tmp_path / "theirs.json"
    file.write_text(json.dumps({"a.JPG": 1, "b.JPG": 1, "z.JPG": 1}))  # c missing, z extra
    assert main(["compare", str(run), str(file), "--readout", "argmax"]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("2 images in common (1 only in the run, 1 only in the file)")
    file.write_text(json.dumps({"a": 1, "b": 1, "c": 1}))
    assert main(["compare", str(run), str(file), "--readout", "argmax"]) == 0


def test_two_run_images_with_one_name_without_extension_are_refused(
    tmp_path, real_images, qwen2_vl_dir, capsys
):
    root = tmp_path / "two"
    for folder, photo in zip("xy", real_images, strict=False):
        (root / folder).mkdir(parents=True)
        shutil.copy(photo, root / folder / "img.png")
    (root / "mos.csv").write_text("image,mos\nx/img.png,1\ny/img.png,2\n")
    options = resolve({"model": [str(qwen2_vl_dir)], "region_mode": "whole-only"})
    out = tmp_path / "run"
    evaluate_run(RunConfig.create({"name": "csv", "root": str(root)}, options), out, resamples=0)
    file = tmp_path / "theirs.json"
    file.write_text(json.dumps({"img": 4}))
    capsys.readouterr()
    assert main(["compare", str(out), str(file)]) == 2
    err = capsys.readouterr().err
    assert "images x/img.png and y/img.png have the same name without extension" in err
    assert err.count("\n") == 1


def test_a_read_only_run_folder_prints_the_agreement_and_says_it_was_not_saved(
    run, tmpfs, tmp_path, capsys
):
    disk = tmpfs("8m")
    copy = disk / "run"
    shutil.copytree(run, copy, symlinks=True)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    file = tmp_path / "theirs.json"
    file.write_text(json.dumps({"a": 1, "b": 1, "c": 1}))
    assert main(["compare", str(copy), str(file)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("3 images in common")
    assert captured.err.count("\n") == 1 and "Errno" not in captured.err
    assert (
        f"{copy} is read-only" in captured.err
        and "compare-theirs.json was not saved" in captured.err
    )
