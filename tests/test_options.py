"""Scoring options: one table from the settings dataclasses, presets, explicit values winning."""

import pytest

from llmiqa.aggregate import Aggregation
from llmiqa.errors import UsageError
from llmiqa.masks import DOGIQA_MASKS, MaskSettings
from llmiqa.options import DEFAULTS, KNOBS, build, make_scorer, resolve
from llmiqa.regions import RegionSettings
from llmiqa.standards import Standard


def test_every_settings_field_with_help_is_an_option_with_its_dataclass_default():
    assert build(Aggregation, DEFAULTS) == Aggregation()
    assert build(RegionSettings, DEFAULTS) == RegionSettings()
    assert build(MaskSettings, DEFAULTS) == MaskSettings()
    assert build(Standard, DEFAULTS) == Standard()
    assert len({knob.key for knob in KNOBS}) == len(KNOBS)  # one flag per option


def test_the_paper_preset_is_the_papers_text():
    paper = resolve({}, "paper")
    assert paper["model"] == ["mPLUG/mPLUG-Owl3-7B-240728"]
    assert build(Standard, paper) == Standard("word", 7, "paper")
    assert build(Aggregation, paper) == Aggregation("argmax", "area", 1.0, 1.0, 0.0, False)
    assert build(RegionSettings, paper).mode == "bbox"


def test_the_dogiqa_preset_is_the_released_code():
    dogiqa = resolve({}, "dogiqa")
    assert build(Standard, dogiqa) == Standard("word", 7, "dogiqa")
    assert build(Aggregation, dogiqa) == Aggregation("greedy", "area", 0.5, 1.0, 0.1, False)
    assert build(RegionSettings, dogiqa) == RegionSettings("bbox", 1000.0, "remainder")
    assert build(MaskSettings, dogiqa) == DOGIQA_MASKS
    assert dogiqa["segmenter"] == "facebook/sam2-hiera-large/sam2_hiera_large.pt"
    assert (dogiqa["dtype"], dogiqa["segmenter_dtype"]) == ("float16", "float32")


def test_explicit_values_win_over_the_preset():
    chosen = resolve({"readout": "expected", "levels": 5, "lam": None}, "paper")
    assert (chosen["readout"], chosen["levels"], chosen["lam"]) == ("expected", 5, 1.0)


@pytest.mark.parametrize(
    ("explicit", "preset", "message"),
    [
        ({}, "papr", "unknown preset 'papr'"),
        ({"levels": 4}, None, "defined for K in"),
        ({"standard": "number", "levels": 10}, None, "defined for K in"),
        ({"lam": -1.0}, None, "weights must be >= 0"),
        ({"temperature": 1.0}, None, "unknown option"),
    ],
)
def test_bad_values_are_one_usage_error(explicit, preset, message):
    with pytest.raises(UsageError, match=message):
        resolve(explicit, preset)


def test_the_number_standard_takes_the_levels_the_help_promises():
    assert resolve({"standard": "number", "levels": 2})["levels"] == 2


def test_the_scorer_gets_every_option_without_loading_a_model(qwen2_vl_dir):
    options = resolve(
        {"model": [str(qwen2_vl_dir)], "levels": 5, "standard": "sentence", "lam": 2.0,
         "max_pixels": 4096, "region_mode": "whole-only"}
    )  # fmt: skip
    scorer = make_scorer(options)
    assert str(scorer.standard) == "sentence-5" and scorer.aggregation.lam == 2.0
    assert "max_pixels=4096" in scorer.specs[0].identity
    assert scorer.raters[0].loaded is None and scorer.segmenter is None
