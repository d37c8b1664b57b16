"""`llmiqa ablate`: variants of a finished run from its stored ratings (zero model calls),
and those that need new ratings through the store."""

import subprocess
import sys

import numpy as np
import pytest

from llmiqa.evaluation import correlation
from llmiqa.raters.spec import RaterSpec
from llmiqa.runs.ablate import ablate
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
    assert readouts == ["readout=qalign (Q-Align)", "readout=qbench (Q-Bench A3)",
                        "readout=argmax", "readout=sepiqa (SeP-IQA)"]  # fmt: skip
    assert all(row.new_ratings == 0 for row in rows.values())
    results, mos = read_results(out)
    sepiqa = [np.nansum(r.top_logits[0, 0] * r.top_weights[0, 0]) for r in results]
    assert rows["readout=sepiqa (SeP-IQA)"].metrics["srcc"] == pytest.approx(
        correlation.srcc(np.array(sepiqa), mos)
    )
