"""The transformers rater on tiny random Qwen2-VL, Qwen2.5-VL and LLaVA checkpoints.

Random weights: these tests prove the plumbing (prompt, one forward pass, the digits'
full-vocabulary log-probabilities, batching), never that the scores mean anything.
"""

import shutil

import numpy as np
import pytest
import torch

from llmiqa import tiny
from llmiqa.inputs.images import load_image
from llmiqa.method.standards import IMAGE, Standard
from llmiqa.raters.base import ModelLoadError, RatingFailure, RatingRequest
from llmiqa.raters.hf import shrink
from llmiqa.raters.spec import RaterSpec

FAMILIES = ["qwen2_vl_dir", "qwen2_5_vl_dir", "llava_dir"]


@pytest.fixture(scope="module")
def images(photos):
    return [load_image(p).image for p in photos]


@pytest.fixture(scope="module", params=FAMILIES)
def rater(request):
    return RaterSpec(str(request.getfixturevalue(request.param))).load()


def probs(ratings) -> np.ndarray:
    return np.stack([r.probs() for r in ratings])


def test_the_prompt_carries_the_standard_through_the_chat_template(rater):
    prompt = Standard().prompt()
    text = rater.render(prompt)
    assert prompt.system in text
    assert text.rstrip().endswith(("assistant", "ASSISTANT:"))
    assert text.index(prompt.system) < text.index(prompt.after_image.strip())


def test_the_released_codes_prompt_is_one_user_turn_with_the_image_inside(qwen2_vl_dir):
    """No system turn of ours: Qwen2-VL's own template then writes its default one."""
    rater = RaterSpec(str(qwen2_vl_dir)).load()
    prompt = Standard("word", 7, "dogiqa").prompt("region")
    text = rater.render(prompt)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert text.count("<|im_start|>system") == 1
    image = "<|vision_start|><|image_pad|><|vision_end|>"
    assert f"<|im_start|>user\n{prompt.user.replace(IMAGE, image)}<|im_end|>" in text


@pytest.mark.parametrize("levels", [3, 5, 7, 9])
def test_probabilities_cover_exactly_the_k_levels(rater, images, rate, levels):
    ratings = rate(rater, images[:2], Standard("word", levels))
    assert probs(ratings).shape == (2, levels)
    np.testing.assert_allclose(probs(ratings).sum(axis=1), 1.0, atol=1e-9)
    assert all(np.exp(r.logprobs).sum() + np.exp(r.other_logprob) <= 1 + 1e-9 for r in ratings)


def test_ratings_are_the_full_vocabulary_log_softmax_of_one_forward(rater, images, rate):
    """Recompute every number of a Rating by hand from one plain forward pass."""
    standard = Standard()
    text = rater.render(standard.prompt())
    inputs = rater.processor(text=[text], images=[images[0]], return_tensors="pt")
    with torch.no_grad():
        logits = rater.model(**inputs).logits[0, -1].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    digits = [rater.tokenizer.convert_tokens_to_ids(str(k)) for k in range(1, 8)]
    (rating,) = rate(rater, images[:1], standard)
    np.testing.assert_allclose(rating.logprobs, logprobs[digits].numpy(), atol=1e-6)
    others = logprobs.clone()
    others[digits] = -torch.inf
    assert rating.other_logprob == pytest.approx(float(others.max()), abs=1e-6)
    expected = torch.softmax(logits[digits], dim=-1).numpy()
    np.testing.assert_allclose(rating.probs(), expected, atol=1e-6)


def test_batch_equals_one_by_one_with_left_padding(qwen2_vl_dir, llava_dir, images, rate):
    for folder in (qwen2_vl_dir, llava_dir):
        batched = rate(RaterSpec(str(folder), batch_size=4).load(), images)
        single = rate(RaterSpec(str(folder), batch_size=1).load(), images)
        np.testing.assert_allclose(probs(batched), probs(single), atol=1e-5)


def test_rating_is_deterministic(rater, images, rate):
    first = rate(rater, images[:2])
    np.testing.assert_array_equal(probs(first), probs(rate(rater, images[:2])))


def test_a_crop_the_processor_refuses_fails_alone(qwen2_vl_dir, images):
    rater = RaterSpec(str(qwen2_vl_dir), batch_size=3).load()
    strip = images[0].resize((1000, 3))  # Qwen-VL refuses aspect ratios over 200
    prompt = Standard().prompt()
    requests = [RatingRequest.of(im, prompt, 7) for im in (images[0], strip)]
    outcomes = dict(rater.rate(requests))
    assert not isinstance(outcomes[0], RatingFailure)
    assert isinstance(outcomes[1], RatingFailure) and "rating failed" in outcomes[1].error


def test_a_tokenizer_without_single_digit_tokens_is_refused(tmp_path, images, rate):
    folder = tiny.build_qwen2_vl(tmp_path / "no-digits", drop_digits=True)
    rater = RaterSpec(str(folder)).load()
    with pytest.raises(ModelLoadError, match=r"no-digits: .*answer '1' as one token"):
        rate(rater, images[:1])


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
        RaterSpec(str(folder)).load()


@pytest.mark.parametrize("bad", ["not/a-real-model-anywhere", "./no/such/folder"])
def test_unknown_models_fail_in_one_line(bad):
    with pytest.raises(ModelLoadError) as caught:
        RaterSpec(bad).check()
    assert bad in str(caught.value) and "\n" not in str(caught.value)


def test_a_template_without_a_system_role_gets_the_standard_in_the_user_turn(
    qwen2_vl_dir, tmp_path, images, rate
):
    folder = tmp_path / "no-system"
    shutil.copytree(qwen2_vl_dir, folder)
    refusing = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
        "supported') }}{% endif %}" + tiny.QWEN_TEMPLATE
    )
    (folder / "chat_template.jinja").write_text(refusing)
    rater = RaterSpec(str(folder)).load()
    prompt = Standard().prompt()
    text = rater.render(prompt)
    assert prompt.system not in text.split("<|im_start|>user\n", 1)[0]  # only the default
    user_turn = text.split("<|im_start|>user\n", 1)[1]
    assert user_turn.index(prompt.system) < user_turn.index(prompt.after_image.strip())
    assert len(rate(rater, images[:1])) == 1


def test_max_pixels_downscales_sub_images_before_the_processor(qwen2_vl_dir, images, rate):
    capped = RaterSpec(str(qwen2_vl_dir), options=(("max_pixels", 60 * 60),))
    plain = RaterSpec(str(qwen2_vl_dir))
    assert capped.identity != plain.identity and "max_pixels=3600" in capped.identity
    small = shrink(images[0], 60 * 60)
    assert small.width * small.height <= 3600
    assert small.width / small.height == pytest.approx(images[0].width / images[0].height, rel=0.05)
    np.testing.assert_allclose(
        probs(rate(capped.load(), images[:1])), probs(rate(plain.load(), [small])), atol=1e-6
    )
    tiny_image = images[0].resize((20, 10))
    assert shrink(tiny_image, 3600) is tiny_image
