"""vLLM's in-process engine behind the rater contract: continuous batching, prefix caching.

One request per rating gives every number a Rating holds, exactly, under the default
`raw_logprobs` mode (logprobs taken from the model's logits before any sampling step):
- `logprob_token_ids` = the K answer ids returns their full-vocabulary log-probabilities;
- a -inf logit bias on those answers makes the greedy token the most probable OTHER token,
  and vLLM always returns the sampled token's (raw, full-vocabulary) log-probability too.
The K-probabilities are then the softmax of the answer log-probabilities, i.e. of their
logits, as the transformers rater computes them. (The processed-logprobs route with
`allowed_token_ids` gives the K-probabilities alone and would need a second pass for the
full-vocabulary quantities.)

Top raw logits (SeP-IQA) need the logits themselves and their log-sum-exp, which no one
mode gives (it is engine-wide: raw logits or log-probabilities, never both). An engine
for such requests runs in `raw_logits` mode and returns each rating's whole row
(`logprobs=-1`), from which every quantity is computed as the transformers rater does.
The engine is started by the first ratings, in the mode they need.

The prompt text is rendered by the checkpoint's own processor, as the transformers rater
renders it, and given to vLLM as text plus a PIL image, so both backends read the same
tokens. Requests are fed to the engine through a bounded window and each rating is
yielded as soon as its request finishes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from typing import ClassVar

import numpy as np

from llmiqa.errors import ModelLoadError, one_line
from llmiqa.loading.checkpoints import input_embeddings
from llmiqa.method.standards import Prompt
from llmiqa.raters.base import (
    BackendOption,
    Rating,
    RatingFailure,
    RatingRequest,
    Spec,
    answer_value,
)
from llmiqa.raters.hf import MAX_PIXELS, load_processor, render_chat, shrink
from llmiqa.raters.local import LocalRater, ratings_from_logits

# Requests handed to the engine at once when the spec names no window: enough to keep a
# GPU's continuous batching full, few enough that decoded images stay bounded in memory.
DEFAULT_IN_FLIGHT = 64
# Extra LLM(...) keyword arguments as JSON, e.g. '{"gpu_memory_utilization": 0.8}'.
ARGS_ENV = "LLMIQA_VLLM_ARGS"


def engine_arguments(
    source: str, revision: str | None, dtype: str, max_in_flight: int, raw_logits: bool = False
) -> dict:
    """LLM(...) arguments: what the contract needs, then per-platform defaults, then the
    user's LLMIQA_VLLM_ARGS. None of these changes a rating (see the module doc)."""
    from vllm.platforms import current_platform

    arguments: dict[str, object] = {
        "model": source,
        "revision": revision,
        "dtype": dtype,
        "seed": 0,
        "max_num_seqs": max_in_flight,
        "limit_mm_per_prompt": {"image": 1, "video": 0},  # one image per request, no video
        "enable_prefix_caching": True,  # every request shares the standard's long prefix
    }
    if raw_logits:  # whole rows of raw logits (see the module doc)
        arguments |= {"logprobs_mode": "raw_logits", "max_logprobs": -1}
    if current_platform.is_cpu():
        # Measured on 2 cores: a compiled engine in its own processes took 180 s to start,
        # an eager one in this process 9 s. 1 GiB of KV cache holds hundreds of prompts
        # of a few hundred tokens. A set OMP_NUM_THREADS keeps vLLM from cutting torch to
        # one thread in this process.
        arguments |= {"enforce_eager": True, "distributed_executor_backend": "uni"}
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    try:
        extra = json.loads(os.environ.get(ARGS_ENV) or "{}")
    except ValueError as error:
        raise ModelLoadError(f"{ARGS_ENV} is not JSON ({one_line(error)})") from None
    if not isinstance(extra, dict):
        raise ModelLoadError(f"{ARGS_ENV} must be a JSON object of LLM(...) arguments")
    return arguments | extra


class VllmRater(LocalRater):
    """An MLLM served by vLLM's LLM engine in this process; same prompts as TransformersRater."""

    name: ClassVar[str] = "vllm"
    options: ClassVar[dict[str, BackendOption]] = {"max_pixels": MAX_PIXELS}
    min_crop_side: ClassVar[int] = 28  # the Qwen-VL processors' minimum, as for transformers

    def __init__(self, spec: Spec) -> None:
        self.processor = load_processor(spec)
        super().__init__(spec, self.processor.tokenizer)
        self.spec = spec
        self.max_pixels = spec.backend_options["max_pixels"]
        self.max_in_flight = spec.max_in_flight or DEFAULT_IN_FLIGHT
        check_engine(spec)
        self.llm, self.raw_logits = None, False

    @classmethod
    def render_for(cls, spec: Spec, prompt: Prompt) -> str:
        """The text the model would read, from its processor alone (no weights loaded)."""
        return render_chat(load_processor(spec), prompt)

    def _render(self, prompt: Prompt) -> str:
        """The prompt text exactly as the transformers rater renders it (system-role
        fallback included), from the same processor files."""
        return render_chat(self.processor, prompt, self.model_name)

    def _engine(self, raw_logits: bool):
        """The engine, started in the mode these requests need (see the module doc)."""
        if self.llm is None:
            self.llm = load_engine(self.spec, self.max_in_flight, raw_logits)
            self.raw_logits = raw_logits
        elif raw_logits != self.raw_logits:
            raise ModelLoadError(
                f"{self.model_name}: this vLLM engine reads "
                f"{'raw logits' if self.raw_logits else 'log-probabilities'}; top raw logits "
                "and digit answers need engines in two modes: rate them in separate runs"
            )
        return self.llm

    def input_embeddings(self):
        """The input embedding table, read from the checkpoint's weight files (the engine
        keeps its own copy out of reach)."""
        return input_embeddings(self.spec.checkpoint)

    def rate(
        self, requests: Sequence[RatingRequest]
    ) -> Iterator[tuple[int, Rating | RatingFailure]]:
        """All requests go to the engine through a window of `max_in_flight`; the engine
        batches whatever is queued at each step (continuous batching), and each rating is
        yielded when its request finishes, in completion order."""
        for request in requests:  # refuses a tokenizer without answer tokens before any work
            self.answer_ids(request)
        if not requests:
            return
        engine = self._engine(any(r.top for r in requests)).llm_engine
        waiting = iter(range(len(requests)))
        running: dict[str, tuple[str, int]] = {}  # external request id: (internal id, index)
        try:
            while True:
                for index in itertools.islice(waiting, self.max_in_flight - len(running)):
                    submitted = self._submit(requests[index])
                    if isinstance(submitted, RatingFailure):
                        yield index, submitted
                    else:
                        # vLLM's own id is the external one plus "-" and 8 random
                        # characters (InputProcessor.assign_request_id); outputs carry the
                        # external one.
                        running[submitted.rsplit("-", 1)[0]] = (submitted, index)
                if not running:
                    return
                for output in self._step(engine):
                    if output.finished:
                        if output.request_id not in running:
                            raise ModelLoadError(f"vLLM finished an unknown request {output}")
                        index = running.pop(output.request_id)[1]
                        yield index, self._rating(output, requests[index])
        finally:
            if running:  # the caller stopped early or the engine failed: drop the rest
                with contextlib.suppress(Exception):
                    engine.abort_request([i for i, _ in running.values()], internal=True)

    def _submit(self, request: RatingRequest) -> str | RatingFailure:
        """Hand one request to the engine (its id); a request its processor refuses fails
        alone."""
        from vllm import SamplingParams

        image = request.pixels.convert("RGB")
        if self.max_pixels:
            image = shrink(image, self.max_pixels)
        answers = self.answer_ids(request)
        if self.raw_logits:  # the whole row (see the module doc)
            params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=-1, detokenize=False)
        else:
            params = SamplingParams(
                max_tokens=1,
                temperature=0.0,
                logprobs=len(answers),
                logprob_token_ids=list(answers),
                logit_bias=dict.fromkeys(answers, -math.inf),
                detokenize=False,
            )
        text = self.render(request.prompt)
        bos = self.tokenizer.bos_token
        # a template that writes BOS itself must not get a second one (as for transformers)
        special = {"add_special_tokens": not (bos and text.startswith(bos))}
        prompt = {"prompt": text, "multi_modal_data": {"image": image}}
        try:
            (request_id,) = self.llm.enqueue(
                prompt, params, use_tqdm=False, tokenization_kwargs=special
            )
        except Exception as error:
            return RatingFailure(f"rating failed ({one_line(error)})")
        return request_id

    def _step(self, engine) -> list:
        try:
            return engine.step()
        except Exception as error:  # the engine itself failed: nothing more can be rated
            message = f"{self.model_name}: the vLLM engine failed ({one_line(error)})"
            raise ModelLoadError(message) from None

    def _rating(self, output, request: RatingRequest) -> Rating | RatingFailure:
        """The Rating in one finished output: answer log-probs and the greedy other token
        (or, from a whole row of raw logits, everything the transformers rater gives)."""
        digits = self.answer_ids(request)
        completion = output.outputs[0]
        if not completion.token_ids or not completion.logprobs:
            return RatingFailure("rating failed (the engine returned no token or logprobs)")
        returned = completion.logprobs[0]
        if self.raw_logits:
            import torch

            row = torch.full((max(returned) + 1,), -torch.inf)
            row[list(returned)] = torch.tensor([value.logprob for value in returned.values()])
            (rating,) = ratings_from_logits(row[None], [digits], [request.top], self.tokenizer)
            return rating
        other = completion.token_ids[0]
        if other in digits or other not in returned or any(d not in returned for d in digits):
            # Only if every non-digit token had probability 0: no other token to report.
            logprobs = [returned[d].logprob if d in returned else math.nan for d in digits]
            return Rating(np.asarray(logprobs, dtype=np.float64), math.nan, None, True)
        return Rating(
            logprobs=np.asarray([returned[d].logprob for d in digits], dtype=np.float64),
            other_logprob=float(returned[other].logprob),
            other_value=answer_value(self.tokenizer.decode([other])),
        )


# Families vLLM serves but whose ratings its CPU backend changes: Gemma 3's image tokens
# attend to each other both ways, and vLLM's CPU attention runs them causally (measured on
# a tiny Gemma 3: 1e-3 in probability, 3.6e-7 once transformers runs them causally too).
CPU_REFUSED = {"Gemma3ForConditionalGeneration": "Gemma 3's image tokens attend both ways"}


def check_engine(spec: Spec) -> None:
    """One line, before any engine starts, when vLLM is missing, runs on another device,
    or does not serve this architecture (faithfully, here)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines drown ours
    try:
        import vllm
        from vllm import ModelRegistry
        from vllm.platforms import current_platform
    except ImportError as error:
        raise ModelLoadError(
            f"the vllm backend needs vLLM installed ({one_line(error)}); see `make venv-vllm`"
        ) from None
    wanted = spec.torch_device.type
    if wanted != current_platform.device_type:
        raise ModelLoadError(
            f"{spec.model}: this vLLM build runs on {current_platform.device_type}, "
            f"not on {wanted} (pass --device {current_platform.device_type})"
        )
    architectures = spec.checkpoint.config.get("architectures") or []
    served = set(ModelRegistry.get_supported_archs())
    if architectures and not served.intersection(architectures):
        raise ModelLoadError(
            f"{spec.model}: vLLM {vllm.__version__} does not serve {architectures[0]} (Llama "
            "3.2 Vision left it after 0.10.2); use --backend transformers"
        )
    refused = [CPU_REFUSED[a] for a in architectures if a in CPU_REFUSED]
    if refused and current_platform.is_cpu():
        raise ModelLoadError(
            f"{spec.model}: vLLM's CPU backend would change its ratings ({refused[0]}; it runs "
            "them causally); use --backend transformers, or vLLM on a GPU"
        )


def load_engine(spec: Spec, max_in_flight: int, raw_logits: bool):
    """vLLM's LLM for this spec (checked by check_engine), or one line saying why not."""
    from vllm import LLM

    checkpoint = spec.checkpoint
    source = str(checkpoint.path) if checkpoint.path else checkpoint.source
    dtype = str(spec.torch_dtype).removeprefix("torch.")
    # In this process, vLLM's CPU worker warns at every torch.set_num_threads call that
    # image processing makes: once per request.
    logging.getLogger("vllm.v1.worker.cpu_worker").setLevel(logging.ERROR)
    arguments = engine_arguments(source, checkpoint.commit, dtype, max_in_flight, raw_logits)
    try:
        return LLM(**arguments)
    except Exception as error:
        raise ModelLoadError(f"{spec.model}: vLLM cannot load it ({one_line(error)})") from None
