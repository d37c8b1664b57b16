"""Scoring options: one table from the settings dataclasses, presets, explicit values winning."""

import argparse
from dataclasses import fields

import pytest

from llmiqa.commands.arguments import add_arguments, from_arguments
from llmiqa.errors import UsageError
from llmiqa.loading.runtime import Models, Runtime
from llmiqa.method.aggregate import Aggregation
from llmiqa.method.regions import RegionSettings
from llmiqa.method.standards import Standard
from llmiqa.scoring.knobs import GROUPS, build, flags_of, knobs, speed_only, values_of
from llmiqa.scoring.pipeline import Scorer
from llmiqa.scoring.presets import resolve
from llmiqa.segmenters.masks import DOGIQA_MASKS, MaskSettings
from llmiqa.settings import declared

# One value per option that differs from its default, as a user would type it.
CHANGED = {
    "model": ["a/b", "c/d"], "segmenter": "x/y", "kind": "sentence", "levels": 5,
    "wording": "dogiqa", "region_mode": "mask", "min_area": 0.2,
    "complement_area": "remainder", "readout": "greedy", "weighting": "mean",
    "global_weight": 0.5, "lam": 2.0, "count_weight": 0.1, "normalize": False,
    "complement": False, "points_per_side": 6, "points_per_batch": 16,
    "pred_iou_thresh": 0.5, "stability_score_thresh": 0.5, "stability_score_offset": 0.7,
    "box_nms_thresh": 0.6, "min_mask_region_area": 100, "backend": "vllm",
    "server": None, "device": "cpu", "dtype": "bfloat16", "segmenter_dtype": "float16",
    "batch_size": 3, "max_in_flight": 7, "decoders": 2, "max_pixels": 4096, "cut": False,
    "top": 50,
}  # fmt: skip


def parse(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_arguments(parser.parse_args(argv))


def test_an_empty_command_line_gives_every_settings_default():
    options = parse([])
    for cls in GROUPS:
        assert build(cls, options) == cls()
    assert options["max_pixels"] is None and options["cut"] is True  # backend defaults


def test_every_option_reaches_its_field_from_the_command_line():
    """Each knob round-trips: --its-name VALUE on the command line, the field of that name
    in the built settings (a missing, misnamed or mistyped flag fails here)."""
    assert {k.key for k in knobs()} == set(CHANGED)  # every option is listed above
    argv = []
    for key, value in CHANGED.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, list):
            argv += [part for item in value for part in (flag, item)]
        elif value is not None:
            argv += [flag, str(value)]
    options = parse(argv)
    for cls in GROUPS:
        built = build(cls, options)
        for f in declared(cls):
            expected = CHANGED[f.name]
            assert getattr(built, f.name) == (tuple(expected) if f.name == "model" else expected)
    assert (options["max_pixels"], options["cut"]) == (4096, False)


def test_option_names_are_field_names_and_unique():
    names = [k.key for k in knobs()]
    assert len(names) == len(set(names))
    for cls in GROUPS:
        assert {f.name for f in declared(cls)} <= {f.name for f in fields(cls)}


def test_flags_of_settings_give_those_settings_back():
    permissive = MaskSettings(pred_iou_thresh=0.0, stability_score_thresh=0.0, points_per_side=4)
    assert build(MaskSettings, parse(flags_of(permissive))) == permissive
    assert flags_of(MaskSettings()) == []
    assert build(Aggregation, parse(flags_of(Aggregation(normalize=False)))).normalize is False


def test_the_paper_preset_is_the_papers_text():
    paper = resolve({}, "paper")
    assert paper["model"] == ["mPLUG/mPLUG-Owl3-7B-240728"]
    assert build(Standard, paper) == Standard("word", 7, "paper")
    assert build(Aggregation, paper) == Aggregation("argmax", "area", 1.0, 1.0, 0.0, False)
    assert build(RegionSettings, paper).region_mode == "bbox"


def test_the_dogiqa_preset_is_the_released_code():
    dogiqa = resolve({}, "dogiqa")
    assert build(Standard, dogiqa) == Standard("word", 7, "dogiqa")
    assert build(Aggregation, dogiqa) == Aggregation("greedy", "area", 0.5, 1.0, 0.1, False)
    assert build(RegionSettings, dogiqa) == RegionSettings("bbox", 1000.0, "remainder")
    assert build(MaskSettings, dogiqa) == DOGIQA_MASKS
    assert dogiqa["segmenter"] == "facebook/sam2-hiera-large/sam2_hiera_large.pt"
    assert (dogiqa["dtype"], dogiqa["segmenter_dtype"]) == ("float16", "float32")
    assert values_of(DOGIQA_MASKS).items() <= dogiqa.items()


def test_explicit_values_win_over_the_preset():
    chosen = resolve({"readout": "expected", "levels": 5, "lam": None}, "paper")
    assert (chosen["readout"], chosen["levels"], chosen["lam"]) == ("expected", 5, 1.0)


@pytest.mark.parametrize(
    ("explicit", "preset", "message"),
    [
        ({}, "papr", "unknown preset 'papr'"),
        ({"levels": 4}, None, "defined for K in"),
        ({"kind": "number", "levels": 10}, None, "defined for K in"),
        ({"lam": -1.0}, None, "weights must be >= 0"),
        ({"temperature": 1.0}, None, "unknown option"),
        ({"batch_size": 0}, None, "batch_size must be at least 1"),
        ({"model": []}, None, "at least one model"),
    ],
)
def test_bad_values_are_one_usage_error(explicit, preset, message):
    with pytest.raises(UsageError, match=message):
        resolve(explicit, preset)


def test_the_number_standard_takes_the_levels_the_help_promises():
    assert resolve({"kind": "number", "levels": 2})["levels"] == 2


def test_the_scorer_gets_every_option_without_loading_a_model(qwen2_vl_dir):
    options = resolve(
        {"model": [str(qwen2_vl_dir)], "levels": 5, "kind": "sentence", "lam": 2.0,
         "max_pixels": 4096, "region_mode": "whole-only", "batch_size": 2}
    )  # fmt: skip
    scorer = Scorer.from_options(options)
    assert str(scorer.standard) == "sentence-5" and scorer.aggregation.lam == 2.0
    assert "max_pixels=4096" in scorer.specs[0].identity and scorer.specs[0].batch == 2
    assert scorer.usage.loaded == [] and scorer.segmenter is None
    assert build(Models, options).model == (str(qwen2_vl_dir),)
    assert build(Runtime, options) == Runtime(batch_size=2)


def test_the_options_that_change_no_number_are_named_once():
    """Where models run and how fast: a rerun changing only these is the same run (and a
    rating's identity in the store leaves them out)."""
    assert speed_only() == {"device", "batch_size", "max_in_flight", "decoders"}
