"""The in-process rater contract, checked: every backend that runs a checkpoint here is a
LocalRater with nothing left abstract, a class that leaves a part out cannot be made, the
state it holds is declared and worked out once, and the vLLM engine reads exactly the text
transformers reads (one rendering function, no vLLM needed to see it)."""

from __future__ import annotations

import inspect

import pytest

from llmiqa.inputs.images import load_image
from llmiqa.method.standards import Standard
from llmiqa.raters import registry
from llmiqa.raters.base import RatingRequest
from llmiqa.raters.hf import TransformersRater
from llmiqa.raters.local import BatchedRater, LocalRater
from llmiqa.raters.mplug_owl3 import MplugOwl3Rater
from llmiqa.raters.spec import RaterSpec
from llmiqa.raters.vllm import VllmRater


def test_the_in_process_backends_fulfil_the_contract_and_only_they_read_words():
    local = [b for b in registry.backends() if issubclass(b, LocalRater)]
    assert local == [TransformersRater, MplugOwl3Rater, VllmRater]
    assert not any(inspect.isabstract(b) for b in local)
    assert inspect.isabstract(LocalRater) and inspect.isabstract(BatchedRater)
    assert not issubclass(VllmRater, BatchedRater)  # its engine batches, not a forward pass
    assert {b.name for b in registry.backends() if b.reads_words} == {b.name for b in local}
    assert {b.name for b in registry.backends() if b.reads_checkpoint} == {b.name for b in local}


def test_a_rater_that_leaves_a_part_out_cannot_be_made(qwen2_vl_dir):
    class NoForward(BatchedRater):
        name = "no-forward"
        min_crop_side = 1

        @classmethod
        def render_for(cls, spec, prompt):
            return prompt.text

        def _render(self, prompt):
            return prompt.text

        def prepare(self, requests):
            return requests

    with pytest.raises(TypeError, match=r"abstract method '?forward"):
        NoForward(RaterSpec(str(qwen2_vl_dir)), tokenizer=None, model=None)
    with pytest.raises(ValueError, match="does not implement forward"):
        registry.register(NoForward)


def test_each_prompt_is_rendered_and_its_answers_tokenised_once(qwen2_vl_dir, photos):
    rater = RaterSpec(str(qwen2_vl_dir)).load()
    calls = []
    template = rater.processor.apply_chat_template
    rater.processor.apply_chat_template = lambda *a, **k: calls.append(1) or template(*a, **k)
    prompt = Standard().prompt()
    request = RatingRequest.of(load_image(photos[0]).image, prompt, 7)
    first = rater.answer_ids(request)
    assert rater.answer_ids(request) == first and rater.render(prompt) == rater.render(prompt)
    assert len(calls) == 1
    assert rater.model_name == str(qwen2_vl_dir) and rater.batch_size == 1
    assert rater.identity == RaterSpec(str(qwen2_vl_dir)).identity


@pytest.mark.parametrize("kind", ["word", "qalign"])
def test_vllm_reads_the_text_transformers_reads(qwen2_vl_dir, kind):
    prompt = Standard(kind, 5 if kind == "qalign" else 7).prompt()
    engine = RaterSpec(str(qwen2_vl_dir), backend="vllm")
    assert engine.runs_on is VllmRater
    assert engine.render(prompt) == RaterSpec(str(qwen2_vl_dir)).render(prompt)
    assert engine.render(prompt).endswith(prompt.answer)
