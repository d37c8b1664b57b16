"""Rater for any chat VLM that transformers loads natively (Qwen2-VL, Qwen2.5-VL, LLaVA, ...)."""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING, ClassVar

from PIL import Image

from llmiqa.errors import ModelLoadError, one_line
from llmiqa.method.standards import Prompt
from llmiqa.raters.base import BackendOption, Spec
from llmiqa.raters.local import BatchedRater

if TYPE_CHECKING:
    import torch

# Bounds the visual tokens of models that take any resolution (Qwen-VL's own cap is 12.8 MP).
MAX_PIXELS = BackendOption(
    None,
    int,
    "downscale sub-images above this many pixels first (a cost cap; changes what the model sees)",
)


def chat_messages(prompt: Prompt, system_as_text: bool = False) -> list[dict]:
    """The prompt as transformers chat messages: the image is a content part of the user
    turn, between the texts before and after it (empty texts left out); the system turn
    as a list of parts, or as plain text."""
    parts = [{"type": "text", "text": prompt.before_image}, {"type": "image"}]
    parts.append({"type": "text", "text": prompt.after_image})
    user = [part for part in parts if part.get("text") != ""]
    messages = [{"role": "user", "content": user}]
    if prompt.system is not None:
        system = prompt.system if system_as_text else [{"type": "text", "text": prompt.system}]
        messages.insert(0, {"role": "system", "content": system})
    return messages


def shrink(image: Image.Image, max_pixels: int) -> Image.Image:
    """Downscale (Lanczos, aspect kept) to at most max_pixels; smaller images untouched."""
    pixels = image.width * image.height
    if pixels <= max_pixels:
        return image
    scale = (max_pixels / pixels) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _source(spec: Spec) -> str:
    checkpoint = spec.checkpoint
    return str(checkpoint.path) if checkpoint.path else checkpoint.source


def load_processor(spec: Spec):
    """The checkpoint's AutoProcessor; it must bring a tokenizer and a chat template."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(_source(spec), revision=spec.checkpoint.commit)
    except ImportError as error:  # e.g. SmolVLM2's processor without num2words
        raise ModelLoadError(
            f"{spec.model}: its processor needs a package that is not installed ({one_line(error)})"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(
            f"{spec.model}: cannot load as a vision-language model with AutoProcessor "
            f"({one_line(error)})"
        ) from None
    if getattr(processor, "image_processor", None) is None:
        raise ModelLoadError(
            f"{spec.model}: cannot load as a vision-language model: its processor takes no "
            "images (a text-only model?)"
        )
    if getattr(processor, "tokenizer", None) is None or not processor.chat_template:
        raise ModelLoadError(f"{spec.model}: its processor has no tokenizer or no chat template")
    return processor


def render_chat(processor, prompt: Prompt, model: str | None = None) -> str:
    """The chat template applied up to the answer. The system turn goes as a list of parts
    (LLaVA-OneVision's and Idefics3's templates drop a plain string, Mistral's refuses
    one); a template that prints the list as it is (GLM-4.1V) gets plain text instead; one
    that refuses a system turn (Llama 3.2 Vision beside an image) gets the standard at the
    start of the user turn. A prompt's opened answer follows the generation prompt.

    Every backend that renders with the checkpoint's processor (transformers, vLLM) calls
    this, so all read the same tokens. With `model`, the name of a model about to rate with
    the text, a template that writes today's date into it is warned about."""

    def render(messages: list[dict]) -> str:
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return text + prompt.answer  # the assistant's opening, as SeP-IQA and Q-Align write it

    try:
        text = render(chat_messages(prompt))
    except Exception as error:  # jinja raises on templates without a system role
        if prompt.system is None or "system" not in str(error).lower():
            raise
        text = render(chat_messages(prompt.merged()))
    else:
        if prompt.system is not None and "{'type': 'text'" in text:
            text = render(chat_messages(prompt, system_as_text=True))
    if model is not None and dated(text, prompt):
        logging.getLogger("llmiqa").warning(
            "%s: its chat template writes today's date into a prompt without a system "
            "turn, so its ratings change from day to day; give the prompt a system turn "
            "(e.g. --preset paper)",
            model,
        )
    return text


def dated(text: str, prompt: Prompt) -> bool:
    """Whether the template wrote today's date into the prompt (Mistral's default system
    prompt does): the model then reads another prompt every day."""
    today = datetime.date.today().isoformat()
    return today in text and today not in prompt.text


class TransformersRater(BatchedRater):
    """AutoModelForImageTextToText + AutoProcessor; one forward pass per batch, no generate()."""

    name: ClassVar[str] = "transformers"
    options: ClassVar[dict[str, BackendOption]] = {"max_pixels": MAX_PIXELS}
    # Qwen-VL's processor refuses sides under 28 px (and aspect ratios over 200).
    min_crop_side: ClassVar[int] = 28

    def __init__(self, spec: Spec) -> None:
        from transformers import AutoModelForImageTextToText

        self.device, self.dtype = spec.torch_device, spec.torch_dtype
        self.processor = load_processor(spec)
        try:
            model = AutoModelForImageTextToText.from_pretrained(
                _source(spec), revision=spec.checkpoint.commit, dtype=self.dtype
            )
        except (ImportError, OSError, ValueError, KeyError, TypeError) as error:
            raise ModelLoadError(
                f"{spec.model}: cannot load as a vision-language model with "
                f"AutoModelForImageTextToText ({one_line(error)})"
            ) from None
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"  # the answer position is then the last one
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        super().__init__(spec, tokenizer, model.to(self.device).eval())
        self.max_pixels = spec.backend_options["max_pixels"]

    @classmethod
    def render_for(cls, spec: Spec, prompt: Prompt) -> str:
        """The text the model would read, from its processor alone (no weights loaded)."""
        return render_chat(load_processor(spec), prompt)

    def _render(self, prompt: Prompt) -> str:
        return render_chat(self.processor, prompt, self.model_name)

    def prepare(self, requests) -> dict[str, torch.Tensor]:
        images = [request.pixels for request in requests]
        if self.max_pixels:
            images = [shrink(image, self.max_pixels) for image in images]
        texts = [self.render(request.prompt) for request in requests]
        bos = self.tokenizer.bos_token
        inputs = self.processor(
            text=texts,
            images=[[image] for image in images],  # one list per sample: every family batches
            padding=True,
            # templates that write BOS themselves (Gemma 3, Llama 3.2, Mistral) must not get
            # a second one from the tokenizer
            add_special_tokens=not (bos and all(text.startswith(bos) for text in texts)),
            return_tensors="pt",
        )
        return {
            key: value.to(self.device, self.dtype)
            if value.is_floating_point()
            else value.to(self.device)
            for key, value in inputs.items()
        }

    def forward(self, prepared: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**prepared, logits_to_keep=1).logits[:, -1, :]
