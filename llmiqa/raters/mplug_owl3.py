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

from typing import TYPE_CHECKING, ClassVar

from llmiqa.method.standards import IMAGE, Prompt
from llmiqa.raters.base import BackendOption, Spec
from llmiqa.raters.local import BatchedRater

if TYPE_CHECKING:
    import torch


def owl3_messages(prompt: Prompt) -> list[dict]:
    """The prompt as the original processor takes it: text with one <|image|> marker, the
    way the released evaluation code writes it; an opened answer as the last, open
    assistant turn (the original's `preface=True`, as SeP-IQA calls it)."""
    from llmiqa.models.mplug_owl3.processing import IMAGE_MARKER

    messages = [{"role": "user", "content": prompt.user.replace(IMAGE, IMAGE_MARKER)}]
    if prompt.system is not None:
        messages.insert(0, {"role": "system", "content": prompt.system})
    if prompt.answer:
        messages.append({"role": "assistant", "content": prompt.answer})
    return messages


class MplugOwl3Rater(BatchedRater):
    """One forward pass per batch up to the answer position; one image per sample."""

    name: ClassVar[str] = "mplug-owl3"
    model_types: ClassVar[tuple[str, ...]] = ("mplugowl3",)  # remote code only: our port
    options: ClassVar[dict[str, BackendOption]] = {
        "cut": BackendOption(True, bool, "cut each sub-image into 384-px crops plus a global view")
    }
    min_crop_side: ClassVar[int] = 1  # its processor resizes any crop to 384-px tiles

    @classmethod
    def identify(cls, spec: Spec) -> str:
        from llmiqa.models.mplug_owl3 import check_supported

        check_supported(spec.checkpoint.config, spec.model)  # before any weights download
        return super().identify(spec)

    def __init__(self, spec: Spec) -> None:
        from llmiqa.models.mplug_owl3 import CHECKPOINT_FILES, MplugOwl3Model, MplugOwl3Processor

        folder = spec.checkpoint.local_folder(CHECKPOINT_FILES)
        self.device, self.dtype = spec.torch_device, spec.torch_dtype
        model = MplugOwl3Model.from_pretrained(folder, dtype=self.dtype, device=self.device)
        self.processor = MplugOwl3Processor.from_pretrained(folder)
        super().__init__(spec, self.processor.tokenizer, model)
        self.cut = spec.backend_options["cut"]

    def input_embeddings(self) -> torch.Tensor:
        return self.model.language_model.model.embed_tokens.weight

    @classmethod
    def render_for(cls, spec: Spec, prompt: Prompt) -> str:
        """The text the model would read, from its tokenizer alone (no weights loaded)."""
        from llmiqa.models.mplug_owl3 import MplugOwl3Processor

        folder = spec.checkpoint.local_folder(("*.json", "*.txt"))
        return MplugOwl3Processor.from_pretrained(folder).render(owl3_messages(prompt))

    def _render(self, prompt: Prompt) -> str:
        """The template with one <|image|> marker; with `cut` each image's marker becomes
        its grid prompt, a function of the image size (and `cut` is in the identity)."""
        return self.processor.render(owl3_messages(prompt))

    def prepare(self, requests) -> dict[str, torch.Tensor]:
        samples = [
            self.processor(owl3_messages(request.prompt), [request.pixels], cut=self.cut)
            for request in requests
        ]
        batch = {
            key: value.to(self.device) for key, value in self.processor.collate(samples).items()
        }
        batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        return batch

    def forward(self, prepared: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**prepared, logits_to_keep=1).logits[:, -1]
