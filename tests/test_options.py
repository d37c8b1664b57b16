"""Scoring options: defaults, the paper preset, explicit values winning."""

import pytest

from llmiqa.options import DEFAULTS, make_scorer, resolve
from llmiqa.segment import MaskSettings


def test_nothing_given_means_the_defaults():
    assert resolve({}) == DEFAULTS
    assert DEFAULTS["points_per_side"] == MaskSettings().points_per_side


def test_the_paper_preset_is_the_papers_configuration():
    paper = resolve({}, "paper")
    assert paper["model"] == ["mPLUG/mPLUG-Owl3-7B-240728"]
    assert (paper["standard"], paper["levels"], paper["readout"]) == ("word", 7, "argmax")
    assert (paper["region_mode"], paper["aggregate"], paper["lam"]) == ("bbox", "area", 1.0)
    assert paper["segmenter"].startswith("facebook/sam2")


def test_explicit_values_win_over_the_preset():
    chosen = resolve({"readout": "expected", "levels": 5, "lam": None}, "paper")
    assert (chosen["readout"], chosen["levels"], chosen["lam"]) == ("expected", 5, 1.0)


def test_an_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset 'papr'"):
        resolve({}, "papr")


def test_the_scorer_gets_every_option_without_loading_a_model(qwen2_vl_dir):
    options = resolve(
        {"model": [str(qwen2_vl_dir)], "levels": 5, "standard": "sentence", "lam": 2.0,
         "box_nms_thresh": 0.6, "max_pixels": 4096, "min_area": 0.05}
    )  # fmt: skip
    scorer = make_scorer(options)
    assert str(scorer.standard) == "sentence-5" and scorer.aggregation.lam == 2.0
    assert scorer.mask_settings.box_nms_thresh == 0.6 and scorer.min_area == 0.05
    assert "max_pixels=4096" in scorer.specs[0].identity
    assert scorer._raters == {} and scorer._segmenter is None
