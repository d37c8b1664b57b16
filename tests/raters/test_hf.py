"""The transformers rater on tiny random Qwen2-VL, Qwen2.5-VL and LLaVA checkpoints.

Random weights: these tests prove the plumbing (prompt, one forward pass, digit read-out,
batching), never that the scores mean anything.
"""

import shutil

import numpy as np
import pytest
import torch

from llmiqa import tiny
from llmiqa.aggregate import readout
from llmiqa.images import load_image
from llmiqa.raters import ModelLoadError, RaterSpec, load_rater
from llmiqa.raters.hf import shrink
from llmiqa.standards import Standard

FAMILIES = ["qwen2_vl_dir", "qwen2_5_vl_dir", "llava_dir"]


@pytest.fixture(scope="module")
def photos(real_images):
    return [load_image(p).image for p in real_images[:4]]


@pytest.fixture(scope="module", params=FAMILIES)
def rater(request):
    return load_rater(str(request.getfixturevalue(request.param)))


def test_the_prompt_carries_the_papers_standard_through_the_chat_template(rater):
    prompt = rater.render_prompt(Standard())
    assert Standard().system_prompt() in prompt
    assert prompt.rstrip().endswith(("assistant", "ASSISTANT:"))
    assert prompt.index(Standard().system_prompt()) < prompt.index(Standard().user_prompt())


@pytest.mark.parametrize("levels", [3, 5, 7, 9])
def test_probabilities_cover_exactly_the_k_levels(rater, photos, levels):
    probs = rater.rate(photos[:2], Standard("word", levels))
    assert probs.shape == (2, levels)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (probs > 0).all()


def test_probabilities_are_the_softmax_of_the_digit_logits(rater, photos):
    """Recompute the read-out by hand from one plain forward pass of the same model."""
    standard = Standard()
    prompt = rater.render_prompt(standard)
    inputs = rater.processor(text=[prompt], images=[photos[0]], return_tensors="pt")
    with torch.no_grad():
        logits = rater.model(**inputs).logits[0, -1]
    digits = [rater.tokenizer.convert_tokens_to_ids(str(k)) for k in range(1, 8)]
    expected = torch.softmax(logits[digits], dim=-1).numpy()
    np.testing.assert_allclose(rater.rate([photos[0]], standard)[0], expected, atol=1e-6)


def test_batch_equals_one_by_one_with_left_padding(rater, photos):
    standard = Standard()
    batched = rater.rate(photos, standard)
    single = np.concatenate([rater.rate([photo], standard) for photo in photos])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_rating_is_deterministic(rater, photos):
    first = rater.rate(photos[:2], Standard())
    np.testing.assert_array_equal(first, rater.rate(photos[:2], Standard()))


def test_readouts_agree_with_the_probabilities(rater, photos):
    probs = rater.rate(photos, Standard())
    np.testing.assert_array_equal(readout(probs, "argmax"), probs.argmax(axis=1) + 1)
    np.testing.assert_allclose(readout(probs, "expected"), probs @ np.arange(1, 8))


def test_a_tokenizer_without_single_digit_tokens_is_refused(tmp_path, photos):
    folder = tiny.build_qwen2_vl(tmp_path / "no-digits", drop_digits=True)
    rater = load_rater(str(folder))
    with pytest.raises(ModelLoadError, match=r"no-digits: .*score '1' as one token"):
        rater.rate(photos[:1], Standard())


def test_a_text_only_model_is_not_a_rater(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "text-only"
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tiny.byte_tokenizer(("</s>",), tiny.LLAVA_TEMPLATE).save_pretrained(folder)
    with pytest.raises(ModelLoadError, match=r"text-only: cannot load as a vision-language model"):
        load_rater(str(folder))


@pytest.mark.parametrize("bad", ["not/a-real-model-anywhere", "./no/such/folder"])
def test_unknown_models_fail_in_one_line(bad):
    with pytest.raises(ModelLoadError) as caught:
        load_rater(bad)
    assert bad in str(caught.value) and "\n" not in str(caught.value)


def test_a_template_without_a_system_role_gets_the_standard_in_the_user_turn(
    qwen2_vl_dir, tmp_path, photos
):
    folder = tmp_path / "no-system"
    shutil.copytree(qwen2_vl_dir, folder)
    refusing = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
        "supported') }}{% endif %}" + tiny.QWEN_TEMPLATE
    )
    (folder / "chat_template.jinja").write_text(refusing)
    rater = load_rater(str(folder))
    prompt = rater.render_prompt(Standard())
    assert "<|im_start|>system" not in prompt
    user_turn = prompt.split("<|im_start|>user\n", 1)[1]
    assert user_turn.index(Standard().system_prompt()) < user_turn.index(Standard().user_prompt())
    assert rater.rate(photos[:1], Standard()).shape == (1, 7)


def test_max_pixels_downscales_sub_images_before_the_processor(qwen2_vl_dir, photos):
    capped = RaterSpec(str(qwen2_vl_dir), options=(("max_pixels", 60 * 60),))
    plain = RaterSpec(str(qwen2_vl_dir))
    assert capped.identity != plain.identity and "max_pixels=3600" in capped.identity
    small = shrink(photos[0], 60 * 60)
    assert small.width * small.height <= 3600
    assert small.width / small.height == pytest.approx(photos[0].width / photos[0].height, rel=0.05)
    np.testing.assert_allclose(
        capped.load().rate(photos[:1], Standard()),
        plain.load().rate([small], Standard()),
        atol=1e-6,
    )
    tiny_image = photos[0].resize((20, 10))
    assert shrink(tiny_image, 3600) is tiny_image
