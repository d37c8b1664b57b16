"""Rater for any chat VLM that transformers loads natively (Qwen2-VL, Qwen2.5-VL, LLaVA, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from PIL import Image

from llmiqa.devices import resolve_device, resolve_dtype
from llmiqa.errors import ModelLoadError, one_line
from llmiqa.raters.base import DigitRater
from llmiqa.standards import Standard


def chat_messages(standard: Standard, system_role: bool = True) -> list[dict]:
    """The paper's two messages; without a system role the standard opens the user turn."""
    user = [{"type": "image"}, {"type": "text", "text": standard.user_prompt()}]
    if not system_role:
        user[1]["text"] = f"{standard.system_prompt()}\n{standard.user_prompt()}"
        return [{"role": "user", "content": user}]
    return [
        {"role": "system", "content": [{"type": "text", "text": standard.system_prompt()}]},
        {"role": "user", "content": user},
    ]


def shrink(image: Image.Image, max_pixels: int) -> Image.Image:
    """Downscale (Lanczos, aspect kept) to at most max_pixels; smaller images untouched."""
    pixels = image.width * image.height
    if pixels <= max_pixels:
        return image
    scale = (max_pixels / pixels) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


class TransformersRater(DigitRater):
    """AutoModelForImageTextToText + AutoProcessor; one forward pass per batch, no generate()."""

    # max_pixels: sub-images above it are downscaled first (aspect kept), bounding the
    # visual tokens of models that take any resolution (Qwen-VL's own cap is 12.8 MP).
    options: ClassVar[dict[str, object]] = {"max_pixels": None}

    def __init__(
        self,
        model: str,
        device: str | None = None,
        dtype: str | None = None,
        revision: str | None = None,
        max_pixels: int | None = None,
    ) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        try:
            self.processor = AutoProcessor.from_pretrained(model, revision=revision)
            self.model = AutoModelForImageTextToText.from_pretrained(
                model, revision=revision, dtype=self.dtype
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ModelLoadError(
                f"{model}: cannot load as a vision-language model with "
                f"AutoModelForImageTextToText/AutoProcessor ({one_line(error)})"
            ) from None
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None or not getattr(self.processor, "chat_template", None):
            raise ModelLoadError(f"{model}: its processor has no tokenizer or no chat template")
        self.tokenizer.padding_side = "left"  # the answer position is then the last one
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.to(self.device).eval()
        self.name = model
        self.identity = model  # RaterSpec.load sets the full identity
        self.max_pixels = max_pixels

    def _render_prompt(self, standard: Standard) -> str:
        try:
            return self.processor.apply_chat_template(
                chat_messages(standard), add_generation_prompt=True, tokenize=False
            )
        except Exception as error:  # jinja raises on templates without a system role
            if "system" not in str(error).lower():
                raise
            return self.processor.apply_chat_template(
                chat_messages(standard, system_role=False),
                add_generation_prompt=True,
                tokenize=False,
            )

    def _last_logits(self, images: Sequence[Image.Image], standard: Standard) -> torch.Tensor:
        prompt = self.render_prompt(standard)
        if self.max_pixels:
            images = [shrink(image, self.max_pixels) for image in images]
        inputs = self.processor(
            text=[prompt] * len(images), images=list(images), padding=True, return_tensors="pt"
        ).to(self.device)
        for key, value in inputs.items():
            if torch.is_floating_point(value):
                inputs[key] = value.to(self.dtype)
        return self.model(**inputs, logits_to_keep=1).logits[:, -1, :]
