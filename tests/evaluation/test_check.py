"""llmiqa check: seeded distortions that really get worse level by level, the verdicts on
models that do and do not see quality, and the command on a tiny random model."""

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from llmiqa.cli import main
from llmiqa.errors import UsageError
from llmiqa.evaluation.check import DISTORTIONS, SEVERITIES, distort, load_references, run_check
from llmiqa.inputs.images import from_pil
from llmiqa.method.aggregate import Aggregation
from llmiqa.method.standards import Standard


@pytest.fixture(scope="module")
def references():
    return load_references(max_side=128)  # the three shipped images, small for speed


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    mse = float(np.mean(diff**2))
    return np.inf if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_the_shipped_references_are_real_photos(references):
    assert [r.name.rsplit("/", 1)[-1] for r in references] == [
        "astronaut.png", "chelsea.png", "coffee.png"
    ]  # fmt: skip
    for ref in references:
        assert max(ref.image.size) == 128 and np.asarray(ref.image).std() > 30


@pytest.mark.parametrize("name", list(DISTORTIONS))
def test_each_level_is_further_from_the_reference(references, name):
    for ref in references:
        distances = [psnr(ref.image, distort(ref, DISTORTIONS[name], level)) for level in
                     range(SEVERITIES + 1)]  # fmt: skip
        assert distances[0] == np.inf
        assert all(a > b for a, b in itertools.pairwise(distances)), distances


def test_distortions_are_deterministic_and_seeded(references):
    ref = references[0]
    noise = DISTORTIONS["noise"]
    same = [np.asarray(distort(ref, noise, 3, seed=0)) for _ in range(2)]
    assert np.array_equal(*same)
    assert not np.array_equal(same[0], np.asarray(distort(ref, noise, 3, seed=1)))
    renamed = from_pil(ref.image, "elsewhere/" + ref.name.rsplit("/", 1)[-1])
    assert np.array_equal(same[0], np.asarray(distort(renamed, noise, 3, seed=0)))
    assert distort(ref, noise, 0) is ref.image


class Stub:
    """A scorer whose score is a function of the image and its reference."""

    def __init__(self, references, score, mass=1.0):
        self.by_size = {r.image.size: r.image for r in references}
        assert len(self.by_size) == len(references), "references of one size each"
        self.rule, self.mass = score, mass
        self.models, self.standard, self.aggregation = ("stub",), Standard(), Aggregation()

    def score(self, images):
        return [
            SimpleNamespace(ok=True, error=None, valid_mass=np.full((1, 1), self.mass),
                            score=self.rule(image, self.by_size[image.size]))
            for image in images
        ]  # fmt: skip


@pytest.fixture(scope="module")
def two(references):
    return references[:2]  # 128 x 128 and 128 x 85: a stub tells them apart by size


def test_a_model_that_sees_quality_gets_tau_minus_one_and_no_flag(two):
    sees = Stub(two, lambda image, ref: 1 + 6 * min(psnr(image, ref), 60) / 60)
    report = run_check(sees, two)
    assert [row.name for row in report.rows] == list(DISTORTIONS)
    for row in report.rows:
        assert row.tau == pytest.approx(-1.0) and row.verdict(report.span) == "ok"
        assert row.scores.shape == (2, SEVERITIES + 1) and (row.scores[:, 0] == 7).all()
    assert report.flagged == [] and report.notes() == []
    assert "plumbing only" not in report.text()


def test_a_blind_model_is_flagged_and_called_plumbing_only(two):
    blind = Stub(two, lambda image, ref: 4.0, mass=0.03)
    report = run_check(blind, two, ["blur", "jpeg"])
    assert report.flagged == ["blur", "jpeg"]
    assert all(np.isnan(row.taus).all() and row.tau == 0 for row in report.rows)
    text = report.text()
    assert "FLAGGED: cannot tell level 1 from level 5" in text
    assert "does not see quality" in text and "plumbing only" in text
    assert "only 3.0% of its next-token probability" in text


def test_scores_that_rise_with_the_distortion_are_flagged(two):
    backwards = Stub(two, lambda image, ref: 1 + 6 * (1 - min(psnr(image, ref), 60) / 60))
    report = run_check(backwards, two, ["noise"])
    (row,) = report.rows
    assert row.tau == pytest.approx(1.0)
    assert row.flags(report.span) == [
        "cannot tell level 1 from level 5", "scores rise with the distortion"
    ]  # fmt: skip


def test_unknown_distortions_and_empty_folders_are_one_line_errors(two, tmp_path):
    with pytest.raises(UsageError, match="unknown distortion"):
        run_check(Stub(two, lambda i, r: 1.0), two, ["sharpen"])
    (tmp_path / "empty").mkdir()
    code = main(["check", "--images", str(tmp_path / "empty"), "--model", "x"])
    assert code == 2


def test_the_command_on_a_tiny_random_model_says_it_proves_the_plumbing_only(
    qwen2_vl_dir, tmp_path, capsys
):
    out = tmp_path / "check"
    code = main([
        "check", "--model", str(qwen2_vl_dir), "--region-mode", "whole-only",
        "--distortions", "blur", "jpeg", "--max-side", "96", "--out", str(out),
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 1  # flagged: a random model cannot tell level 1 from level 5
    assert "blur" in printed and "jpeg" in printed and "plumbing only" in printed
    assert "does not follow the answer format" in printed
    report = json.loads((out / "check.json").read_text())
    assert report["flagged"] == ["blur", "jpeg"] and report["levels"] == 7
    assert np.array(report["distortions"][0]["scores"]).shape == (3, SEVERITIES + 1)
    assert Image.open(out / "check.png").size[0] > 400


def test_without_out_the_files_go_to_a_new_temporary_folder_named_at_the_end(
    qwen2_vl_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder
    main(["check", "--model", str(qwen2_vl_dir), "--region-mode", "whole-only",
          "--distortions", "blur", "--max-side", "64"])  # fmt: skip
    last = capsys.readouterr().out.strip().splitlines()[-1]
    png, numbers = last.removeprefix("plot: ").split("  numbers: ")
    assert Path(png).is_file() and Path(numbers).is_file()
    assert Path(png).parent.name.startswith("llmiqa-check-") and list(tmp_path.iterdir()) == []
