"""vLLM's in-process engine behind the rater contract: continuous batching, prefix caching.

One request per rating gives every number a Rating holds, exactly, under the default
`raw_logprobs` mode (logprobs taken from the model's logits before any sampling step):
- `logprob_token_ids` = the K digit ids returns their full-vocabulary log-probabilities;
- a -inf logit bias on those digits makes the greedy token the most probable OTHER token,
  and vLLM always returns the sampled token's (raw, full-vocabulary) log-probability too.
The K-probabilities are then the softmax of the digit log-probabilities, i.e. of the digit
logits, as the transformers rater computes them. (The processed-logprobs route with
`allowed_token_ids` gives the K-probabilities alone and would need a second pass for the
full-vocabulary quantities.)

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
from llmiqa.raters.base import (
    BackendOption,
    Rating,
    RatingFailure,
    RatingRequest,
    Spec,
    answer_value,
)
from llmiqa.raters.hf import MAX_PIXELS, TransformersRater, load_processor, shrink
from llmiqa.raters.local import LocalRater

# Requests handed to the engine at once when the spec names no window: enough to keep a
# GPU's continuous batching full, few enough that decoded images stay bounded in memory.
DEFAULT_IN_FLIGHT = 64
# Extra LLM(...) keyword arguments as JSON, e.g. '{"gpu_memory_utilization": 0.8}'.
ARGS_ENV = "LLMIQA_VLLM_ARGS"


def engine_arguments(source: str, revision: str | None, dtype: str, max_in_flight: int) -> dict:
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

    # The prompt text exactly as the transformers rater renders it (system-role fallback
    # included), from the same processor files.
    _render = TransformersRater._render
    render_for = TransformersRater.render_for

    def __init__(self, spec: Spec) -> None:
        checkpoint = spec.checkpoint
        source = str(checkpoint.path) if checkpoint.path else checkpoint.source
        self.model_name, self.identity = spec.model, spec.identity
        self.max_pixels = spec.backend_options["max_pixels"]
        self.max_in_flight = spec.max_in_flight or DEFAULT_IN_FLIGHT
        self.processor = load_processor(spec)
        self.tokenizer = self.processor.tokenizer
        self.llm = load_engine(spec, source, checkpoint.commit, self.max_in_flight)

    def rate(
        self, requests: Sequence[RatingRequest]
    ) -> Iterator[tuple[int, Rating | RatingFailure]]:
        """All requests go to the engine through a window of `max_in_flight`; the engine
        batches whatever is queued at each step (continuous batching), and each rating is
        yielded when its request finishes, in completion order."""
        for request in requests:  # refuses a tokenizer without digit tokens before any work
            self.digit_ids(request.prompt, request.levels)
        engine = self.llm.llm_engine
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
        digits = self.digit_ids(request.prompt, request.levels)
        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprobs=len(digits),
            logprob_token_ids=list(digits),
            logit_bias=dict.fromkeys(digits, -math.inf),
            detokenize=False,
        )
        prompt = {"prompt": self.render(request.prompt), "multi_modal_data": {"image": image}}
        try:
            (request_id,) = self.llm.enqueue(prompt, params, use_tqdm=False)
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
        """The Rating in one finished output: digit log-probs and the greedy other token."""
        digits = self.digit_ids(request.prompt, request.levels)
        completion = output.outputs[0]
        if not completion.token_ids or not completion.logprobs:
            return RatingFailure("rating failed (the engine returned no token or logprobs)")
        returned = completion.logprobs[0]
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


def load_engine(spec: Spec, source: str, revision: str | None, max_in_flight: int):
    """vLLM's LLM for this spec, or one line saying why not (vLLM missing, wrong device)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its INFO lines drown ours
    try:
        from vllm import LLM
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
    dtype = str(spec.torch_dtype).removeprefix("torch.")
    # In this process, vLLM's CPU worker warns at every torch.set_num_threads call that
    # image processing makes: once per request.
    logging.getLogger("vllm.v1.worker.cpu_worker").setLevel(logging.ERROR)
    try:
        return LLM(**engine_arguments(source, revision, dtype, max_in_flight))
    except Exception as error:
        raise ModelLoadError(f"{spec.model}: vLLM cannot load it ({one_line(error)})") from None
