"""Rater for mPLUG-Owl3 (7B-240728 code family), the MLLM of the paper, without remote code.

The paper's checkpoint is mPLUG/mPLUG-Owl3-7B-240728, rated with mPLUG-Owl3's default
hyperparameters: the official processor cuts every image into a grid of 384-px crops
(3 to 6 of them, never 1) plus a global view, so `cut=True` is the faithful setting, for
regions too. `cut=False` shows one 384 x 384 view instead. Measured on 160 region crops
of 16 real photos (median 336 x 268 px): cutting gives 6.0 crops per sub-image on
average (4-7), i.e. ~6x the SigLIP work (about 0.6 TFLOP per crop; 9 s on two CPU
threads), and upsamples a median region 2.8x to fill its grid. Image tokens stay out of
the LLM's sequence (only the hyper layers read them), so by FLOP count a cut sub-image
costs ~2.5x an uncut one on the 7B model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from PIL import Image

from llmiqa.devices import resolve_device, resolve_dtype
from llmiqa.models.mplug_owl3 import MplugOwl3Model, MplugOwl3Processor, checkpoint_folder
from llmiqa.raters.base import DigitRater
from llmiqa.raters.hf import chat_messages
from llmiqa.standards import Standard


class MplugOwl3Rater(DigitRater):
    """One forward pass per batch up to the answer position; one image per sample."""

    options: ClassVar[dict[str, object]] = {"cut": True}  # RaterSpec puts these in the identity

    def __init__(
        self,
        model: str,
        device: str | None = None,
        dtype: str | None = None,
        revision: str | None = None,
        cut: bool = True,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        folder, _ = checkpoint_folder(model, revision)
        self.model = MplugOwl3Model.from_pretrained(folder, dtype=self.dtype, device=self.device)
        self.processor = MplugOwl3Processor.from_pretrained(folder)
        self.tokenizer = self.processor.tokenizer
        self.name = model
        self.cut = cut
        self.identity = model  # RaterSpec.load sets the full identity

    def _render_prompt(self, standard: Standard) -> str:
        """The template with one <|image|> marker; with `cut` each image's marker becomes
        its grid prompt, a function of the image size (and `cut` is in the identity)."""
        return self.processor.render(chat_messages(standard))

    def _last_logits(self, images: Sequence[Image.Image], standard: Standard) -> torch.Tensor:
        messages = chat_messages(standard)
        samples = [self.processor(messages, [image], cut=self.cut) for image in images]
        batch = {
            key: value.to(self.device) for key, value in self.processor.collate(samples).items()
        }
        batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        return self.model(**batch, logits_to_keep=1).logits[:, -1]
