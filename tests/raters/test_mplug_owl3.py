"""The mPLUG-Owl3 rater on the golden tiny checkpoint (official format, random weights).

Random weights prove the plumbing: the ratings equal the original code's logits (full
vocabulary), its greedy token, batching changes nothing, unsupported releases are
refused before any download.
"""

import json
import shutil

import numpy as np
import pytest
import torch

from llmiqa.inputs.images import load_image
from llmiqa.method.aggregate import readout
from llmiqa.method.standards import Standard
from llmiqa.raters.base import ModelLoadError, RatingRequest, answer_value
from llmiqa.raters.mplug_owl3 import MplugOwl3Rater
from llmiqa.raters.spec import RaterSpec


@pytest.fixture(scope="module")
def checkpoint(owl3_dir):
    return str(owl3_dir)


@pytest.fixture(scope="module")
def rater(checkpoint):
    return RaterSpec(checkpoint).load()


def cut(checkpoint: str, on: bool, **options) -> MplugOwl3Rater:
    return RaterSpec(checkpoint, options=(("cut", on),), **options).load()


@pytest.fixture(scope="module")
def regions(real_images, data_dir):
    """Whole images and region crops of realistic sizes, as Algorithm 1 hands them over."""
    photo = load_image(sorted((data_dir / "dibr").glob("*.png"))[0]).image
    crops = [
        photo.crop(box) for box in [(0, 0, 1024, 300), (100, 200, 420, 700), (600, 50, 700, 90)]
    ]
    return [load_image(path).image for path in (real_images[0], real_images[-1])] + crops


def probs(ratings) -> np.ndarray:
    return np.stack([r.probs() for r in ratings])


def test_load_rater_dispatches_mplugowl3_to_this_backend(rater):
    assert isinstance(rater, MplugOwl3Rater)
    assert rater.cut  # the official processor's default, which the paper used


def test_the_prompt_is_the_official_template_with_one_image_marker(rater, meta):
    assert rater.render(Standard().prompt()) == meta["cases"]["a_nocut"]["prompt_text"]


def test_the_released_codes_prompt_has_no_system_text_and_the_image_in_place(rater):
    prompt = Standard("word", 7, "dogiqa").prompt("whole")
    text = rater.render(prompt)
    # the original processor adds an empty system turn before a lone user turn
    assert text.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n ")
    assert prompt.user.replace("<image>", "<|image|>") in text


@pytest.mark.parametrize("on", [True, False])
def test_ratings_are_the_original_codes_full_vocabulary_logits(
    checkpoint, golden, arrays, rate, on
):
    case = f"a_{'cut' if on else 'nocut'}"
    image = load_image(golden / "images" / "a_LIVEC_1000.JPG").image
    rater = cut(checkpoint, on)
    (rating,) = rate(rater, [image])
    full = torch.log_softmax(torch.as_tensor(arrays[f"{case}_last_logits"]).double(), -1)
    digits = rater.answer_ids(RatingRequest.of(image, Standard().prompt(), 7))
    np.testing.assert_allclose(rating.logprobs, full[digits].numpy(), atol=1e-6)
    full[digits] = -torch.inf
    assert rating.other_logprob == pytest.approx(float(full.max()), abs=1e-6)
    restricted = torch.as_tensor(arrays[f"{case}_last_logits_digits_1to7"]).double()
    np.testing.assert_allclose(rating.probs(), torch.softmax(restricted, -1).numpy(), atol=1e-6)
    # the released code's answer: the original generate()'s first token, read by int()
    first = int(arrays[f"{case}_greedy_new_ids"][0])
    expected = answer_value(rater.tokenizer.decode([first])) or 1
    value = np.nan if rating.other_value is None else rating.other_value
    assert readout(rating.logprobs, "greedy", rating.other_logprob, value) == expected


@pytest.mark.parametrize("on", [True, False])
def test_batch_equals_one_at_a_time(checkpoint, regions, rate, on):
    batched = rate(cut(checkpoint, on, batch_size=5), regions)
    single = rate(cut(checkpoint, on, batch_size=1), regions)
    np.testing.assert_allclose(probs(batched), probs(single), atol=1e-5)


@pytest.mark.parametrize("levels", [3, 5, 9])
def test_probabilities_cover_exactly_the_k_levels(rater, regions, rate, levels):
    ratings = rate(rater, regions[:2], Standard("word", levels))
    assert probs(ratings).shape == (2, levels)
    np.testing.assert_allclose(probs(ratings).sum(axis=1), 1.0, atol=1e-9)


def test_identity_names_dtype_and_cut(checkpoint, qwen2_vl_dir):
    assert RaterSpec(checkpoint).identity.endswith("|float32|backend=mplug-owl3|cut=True")
    spec = RaterSpec(checkpoint, options=(("cut", False),))
    assert spec.identity.endswith("|float32|backend=mplug-owl3|cut=False")
    loaded = spec.load()
    assert not loaded.cut and loaded.identity == spec.identity
    # in an ensemble the option reaches only the models it applies to
    assert "cut" not in RaterSpec(str(qwen2_vl_dir), options=(("cut", False),)).identity


def test_bfloat16_runs_and_stays_close_to_float32(checkpoint, rater, regions, rate):
    half = RaterSpec(checkpoint, dtype="bfloat16").load()
    np.testing.assert_allclose(
        probs(rate(half, regions[:2])), probs(rate(rater, regions[:2])), atol=0.02
    )


@pytest.mark.parametrize(
    ("change", "family"),
    [
        ({"vision_config": {"image_size": 378}}, "241101"),
        ({"tie_word_embeddings": True}, "241014"),
    ],
)
def test_later_releases_are_refused_before_loading_weights(golden, tmp_path, change, family):
    config = json.loads((golden / "checkpoint" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))  # no weights at all
    with pytest.raises(ModelLoadError, match=rf"mPLUG-Owl3-.*{family} family .* not supported yet"):
        RaterSpec(str(tmp_path)).check()


def test_a_hub_id_loads_a_snapshot_without_remote_code(checkpoint, tmp_path, monkeypatch):
    """The hub is replaced by a local snapshot folder (no hub here); the code path is the
    one users run: config.json first, then the snapshot of the pinned commit."""
    snapshot = tmp_path / "snapshots" / "0123abc"
    shutil.copytree(checkpoint, snapshot)
    calls = []

    def download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, allow_patterns))
        return str(snapshot)

    monkeypatch.setattr("huggingface_hub.snapshot_download", download)
    monkeypatch.setattr(
        "huggingface_hub.hf_hub_download", lambda repo_id, name, revision=None: snapshot / name
    )
    spec = RaterSpec("mPLUG/mPLUG-Owl3-7B-240728", revision="main")
    rater = spec.load()
    [(repo, revision, patterns)] = calls
    assert (repo, revision) == ("mPLUG/mPLUG-Owl3-7B-240728", "0123abc")  # the resolved commit
    assert "*.safetensors" in patterns and not any(p.endswith(".py") for p in patterns)
    expected = "mPLUG/mPLUG-Owl3-7B-240728@0123abc|float32|backend=mplug-owl3|cut=True"
    assert rater.identity == expected
