"""`llmiqa ablate`: variants of a finished run from its stored ratings (zero model calls),
and those that need new ratings through the store."""

import math
import re
import subprocess
import sys

import numpy as np
import pytest

from llmiqa.cli import main
from llmiqa.evaluation import correlation
from llmiqa.raters.spec import RaterSpec
from llmiqa.runs.ablate import AGGREGATION_VARIANTS, NO_REGIONS, ablate, rows_markdown
from llmiqa.runs.evaluate import evaluate_run
from llmiqa.runs.files import read_results


def test_aggregation_ablations_call_no_model(finished_run, monkeypatch):
    out, _ = finished_run

    def refuse(spec):
        raise AssertionError(f"ablation tried to load {spec.model}")

    monkeypatch.setattr(RaterSpec, "load", refuse)
    rows = {row.variant: row for row in ablate(out)}
    assert all(row.new_ratings == 0 for row in rows.values())
    results, mos = read_results(out)
    s_global = np.array([r.s_global[0] for r in results])
    assert rows["view=global (Table 3, exp. 6)"].metrics["srcc"] == pytest.approx(
        correlation.srcc(s_global, mos)
    )
    mean_weighted = np.array(
        [(r.s_global[0] + np.mean([g.score for g in r.regions])) / 2 for r in results]
    )
    assert rows["weighting=mean (Table 3, exp. 4)"].metrics["plcc"] == pytest.approx(
        correlation.plcc(mean_weighted, mos)
    )
    lam2 = np.array([(r.s_global[0] + 2 * r.s_local[0]) / 3 for r in results])
    assert rows["lambda=2"].metrics["srcc"] == pytest.approx(correlation.srcc(lam2, mos))
    assert len({round(row.metrics["plcc"], 12) for row in rows.values()}) > 3  # they differ


def test_ablating_a_finished_run_imports_no_torch(finished_run):
    out, _ = finished_run
    code = (
        "import sys\nfrom llmiqa.runs.ablate import ablate\n"
        f"rows = ablate(__import__('pathlib').Path({str(out)!r}))\n"
        "assert rows and 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_rating_ablations_reuse_the_store_and_rate_only_what_is_new(
    config_for, tmp_path, dibr, qwen2_vl_dir
):
    out = tmp_path / "run"
    evaluate_run(config_for(dibr, qwen2_vl_dir, limit=3), out, resamples=0)
    rows = {row.variant: row for row in ablate(out, ["levels"])}
    assert rows["levels=7"].new_ratings == 0  # the run's own ratings
    assert rows["levels=3"].new_ratings == 3 and rows["levels=3"].scored == 3
    rows = {row.variant: row for row in ablate(out, ["levels"])}
    assert rows["levels=3"].new_ratings == 0  # stored by the first ablation


def test_a_word_run_gives_every_word_readout_with_no_model_call(
    config_for, tmp_path, dibr, qwen2_vl_dir, monkeypatch
):
    """A Q-Align run keeps what SeP-IQA and Q-Bench read too: both come from the stored
    ratings (RaterSpec.load refuses to run), equal to recomputing them from results.jsonl."""
    out = tmp_path / "qalign"
    evaluate_run(config_for(dibr, qwen2_vl_dir, limit=4, preset="qalign"), out, resamples=0)

    def refuse(spec):
        raise AssertionError(f"ablation tried to load {spec.model}")

    monkeypatch.setattr(RaterSpec, "load", refuse)
    rows = {row.variant: row for row in ablate(out)}
    readouts = [variant for variant in rows if variant.startswith("readout=")]
    assert readouts == ["readout=qalign (Q-Align)",
                        "readout=qbench (Q-Bench A3, read from the qalign question)",
                        "readout=argmax",
                        "readout=sepiqa (SeP-IQA, read from the qalign question)"]  # fmt: skip
    assert all(row.new_ratings == 0 for row in rows.values())
    results, mos = read_results(out)
    sepiqa = [np.nansum(r.top_logits[0, 0] * r.top_weights[0, 0]) for r in results]
    own = rows["readout=sepiqa (SeP-IQA, read from the qalign question)"]
    assert own.metrics["srcc"] == pytest.approx(correlation.srcc(np.array(sepiqa), mos))


def test_a_whole_only_run_gives_no_numbers_for_what_needs_regions(
    config_for, tmp_path, dibr, qwen2_vl_dir
):
    """Without regions, view=local, the weightings, λ, the count weight and the complement
    all equal the global view: they are marked n/a, with why, instead of repeating it."""
    out = tmp_path / "whole"
    evaluate_run(config_for(dibr, qwen2_vl_dir, limit=3), out, resamples=0)
    rows = {row.variant: row for row in ablate(out, ["masks"])}
    needs_regions = [variant for variant, _ in AGGREGATION_VARIANTS[1:]]
    for variant in [*needs_regions, "masks=SAM2 defaults (Table 5)"]:
        row = rows[variant]
        assert row.note == NO_REGIONS and row.scored == 0 and row.new_ratings == 0
        assert all(math.isnan(value) for value in row.metrics.values())
    assert rows["view=global (Table 3, exp. 6)"].scored == 3
    table = rows_markdown(list(rows.values()))
    (mark,) = re.findall(r"\[(\d+)\] " + re.escape(NO_REGIONS), table)  # one note for all
    assert f"| lambda=2 [{mark}] | n/a | n/a | n/a | n/a | n/a | 0 | 0 |" in table
    assert "nan" not in table


def test_a_read_only_run_folder_still_prints_the_rows_and_says_in_one_line_what_was_not_saved(
    config_for, dibr, qwen2_vl_dir, tmpfs, tmp_path, capsys
):
    disk = tmpfs("8m")
    out = disk / "run"
    config = config_for(dibr, qwen2_vl_dir, limit=3)
    evaluate_run(type(config).create(config.dataset, config.scoring, None, 3,
                                     str(tmp_path / "store.sqlite")), out, resamples=0)  # fmt: skip
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    capsys.readouterr()
    assert main(["ablate", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("| variant | SRCC |") and "view=global" in captured.out
    assert captured.err.count("\n") == 1 and "Errno" not in captured.err
    assert f"{out} is read-only" in captured.err
    assert "ablation.json and ablation.csv were not saved" in captured.err
