"""The mPLUG-Owl3 rater on the golden tiny checkpoint (official format, random weights).

Random weights prove the plumbing: the digit read-out equals the original code's logits,
batching changes nothing, unsupported releases are refused before any download.
"""

import json
import shutil

import numpy as np
import pytest
import torch

from llmiqa.images import load_image
from llmiqa.raters import ModelLoadError, RaterSpec, load_rater
from llmiqa.raters.mplug_owl3 import MplugOwl3Rater
from llmiqa.standards import Standard


@pytest.fixture(scope="module")
def checkpoint(owl3_dir):
    return str(owl3_dir)


@pytest.fixture(scope="module")
def rater(checkpoint):
    return load_rater(checkpoint)


@pytest.fixture(scope="module")
def regions(real_images, data_dir):
    """Whole images and region crops of realistic sizes, as Algorithm 1 hands them over."""
    photo = load_image(sorted((data_dir / "dibr").glob("*.png"))[0]).image
    crops = [
        photo.crop(box) for box in [(0, 0, 1024, 300), (100, 200, 420, 700), (600, 50, 700, 90)]
    ]
    return [load_image(path).image for path in (real_images[0], real_images[-1])] + crops


def softmax(logits) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits), dim=-1).double().numpy()


def test_load_rater_dispatches_mplugowl3_to_this_backend(rater):
    assert isinstance(rater, MplugOwl3Rater)
    assert rater.cut  # the official processor's default, which the paper used


def test_the_prompt_is_the_official_template_with_one_image_marker(rater, meta):
    assert rater.render_prompt(Standard()) == meta["cases"]["a_nocut"]["prompt_text"]


@pytest.mark.parametrize("cut", [True, False])
def test_probabilities_are_the_softmax_of_the_original_digit_logits(
    checkpoint, golden, arrays, cut
):
    rater = MplugOwl3Rater(checkpoint, cut=cut)
    image = load_image(golden / "images" / "a_LIVEC_1000.JPG").image
    expected = softmax(arrays[f"a_{'cut' if cut else 'nocut'}_last_logits_digits_1to7"])
    np.testing.assert_allclose(rater.rate([image], Standard())[0], expected, atol=1e-6)


@pytest.mark.parametrize("cut", [True, False])
def test_batch_equals_one_at_a_time(checkpoint, regions, cut):
    rater = MplugOwl3Rater(checkpoint, cut=cut)
    batched = rater.rate(regions, Standard())
    single = np.concatenate([rater.rate([region], Standard()) for region in regions])
    np.testing.assert_allclose(batched, single, atol=1e-5)


@pytest.mark.parametrize("levels", [3, 5, 9])
def test_probabilities_cover_exactly_the_k_levels(rater, regions, levels):
    probs = rater.rate(regions[:2], Standard("word", levels))
    assert probs.shape == (2, levels)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert rater.rate([], Standard("word", levels)).shape == (0, levels)


def test_identity_names_dtype_and_cut(checkpoint, qwen2_vl_dir):
    assert RaterSpec(checkpoint).identity.endswith("|float32|cut=True")  # the default
    spec = RaterSpec(checkpoint, options=(("cut", False),))
    assert spec.identity.endswith("|float32|cut=False")
    loaded = spec.load()
    assert not loaded.cut and loaded.identity == spec.identity
    # in an ensemble the option reaches only the models it applies to
    assert "cut" not in RaterSpec(str(qwen2_vl_dir), options=(("cut", False),)).identity


def test_bfloat16_runs_and_stays_close_to_float32(checkpoint, rater, regions):
    half = MplugOwl3Rater(checkpoint, dtype="bfloat16")
    np.testing.assert_allclose(
        half.rate(regions[:2], Standard()), rater.rate(regions[:2], Standard()), atol=0.02
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
        load_rater(str(tmp_path))


def test_a_hub_id_loads_a_snapshot_without_remote_code(checkpoint, tmp_path, monkeypatch):
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
    assert (repo, revision) == ("mPLUG/mPLUG-Owl3-7B-240728", "main")
    assert "*.safetensors" in patterns and not any(p.endswith(".py") for p in patterns)
    assert rater.identity == "mPLUG/mPLUG-Owl3-7B-240728@0123abc|float32|cut=True"
