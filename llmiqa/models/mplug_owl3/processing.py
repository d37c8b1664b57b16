"""mPLUG-Owl3 (7B-240728) inputs: crops, the cut prompt, chunked tokenisation, media_offset.

Reproduces the official processor's output token for token, without its side effects
(it rewrote the caller's messages in place).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import Qwen2Tokenizer

from llmiqa.models.mplug_owl3.configuration import CROP_SIZE

IMAGE_MARKER = "<|image|>"  # plain text for the tokenizer: 3 tokens, not a special token
NO_MEDIA = -1_000_000  # media_offset of a sample without images, as the original writes it

# Cut grids (rows, cols) the 240728 processor chooses from ("grid_squ_6"); there is no 1 x 1.
GRIDS = ((2, 2), (1, 3), (1, 4), (3, 1), (4, 1), (2, 3), (3, 2))


def _iou_at_origin(w1: float, h1: float, w2: float, h2: float) -> float:
    inter = min(w1, w2) * min(h1, h2)
    return inter / (w1 * h1 + w2 * h2 - inter + 1e-5)


def select_grid(width: int, height: int, size: int = CROP_SIZE) -> tuple[int, int]:
    """The grid whose shape best matches the image's aspect ratio, then its area."""

    def score(grid: tuple[int, int]) -> float:
        grid_w, grid_h = grid[1] * size, grid[0] * size
        shape = _iou_at_origin(grid_w, grid_h, grid_w, grid_w * height / width)
        return 100 * shape + _iou_at_origin(grid_w, grid_h, width, height)

    return max(GRIDS, key=score)  # first of equals, like argmax


def _pixels(image: Image.Image, width: int, height: int) -> torch.Tensor:
    """PIL bicubic resize, then ToTensor and Normalize(0.5, 0.5) exactly as torchvision."""
    resized = image.resize((width, height), Image.Resampling.BICUBIC)
    tensor = torch.from_numpy(np.array(resized)).permute(2, 0, 1).float().div(255)
    return tensor.sub(0.5).div(0.5)


def image_crops(
    image: Image.Image, cut: bool, size: int = CROP_SIZE
) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """(N, 3, size, size) crops and the grid: row-major tiles then the global view, or
    the global view alone without cutting."""
    image = image.convert("RGB")
    global_view = _pixels(image, size, size)[None]
    if not cut:
        return global_view, None
    rows, cols = select_grid(*image.size, size)
    whole = _pixels(image, cols * size, rows * size)
    tiles = whole.unflatten(1, (rows, size)).unflatten(3, (cols, size))  # 3, r, s, c, s
    tiles = tiles.permute(1, 3, 0, 2, 4).flatten(0, 1)
    return torch.cat([tiles, global_view]), (rows, cols)


def cut_prompt(rows: int, cols: int) -> str:
    """The "v2_global" text that replaces an image marker: one marker per crop, in order."""
    grid = "\n".join(
        " ".join(f"subimg({i},{j}){IMAGE_MARKER}" for j in range(cols)) for i in range(rows)
    )
    return (
        f"Cut to {rows} rows {cols} columns with a global view\n{grid}\nglobal_view{IMAGE_MARKER}"
    )


@dataclass(frozen=True)
class Encoded:
    """One conversation, ready to batch."""

    input_ids: list[int]
    image_starts: list[int]  # index of each image marker's first token, one per crop
    pixel_values: torch.Tensor | None  # (crops, 3, size, size)
    grids: list[tuple[int, int] | None]  # per image: its cut grid, None when not cut


class MplugOwl3Processor:
    """Chat messages and images in, model inputs out (one conversation, then a batch)."""

    def __init__(self, tokenizer: Qwen2Tokenizer, image_size: int = CROP_SIZE) -> None:
        self.tokenizer = tokenizer
        self.image_size = image_size

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> MplugOwl3Processor:
        """The checkpoint's own Qwen2 tokenizer (by class: its config.json names remote code)."""
        config = json.loads((Path(folder) / "config.json").read_text())
        size = config.get("vision_config", {}).get("image_size", CROP_SIZE)
        return cls(Qwen2Tokenizer.from_pretrained(folder), size)

    def render(self, messages: Sequence[dict]) -> str:
        """The prompt text with one marker per image, ending where the answer starts."""
        return "".join(self._turns(messages))

    def _turns(self, messages: Sequence[dict]) -> list[str]:
        """ChatML turns, tokenised separately by the original (so kept apart here)."""
        turns = []
        if not messages or messages[0]["role"] != "system":
            turns.append("<|im_start|>system\n<|im_end|>")  # the original's empty system
        answer = ""
        for index, message in enumerate(messages):
            role, text = message["role"], _text(message["content"])
            if role == "system":
                turns.append(f"<|im_start|>system\n{text}<|im_end|>")
            elif role == "user":
                turns.append(f"\n<|im_start|>user\n{text}<|im_end|>")
            elif role == "assistant" and index == len(messages) - 1:
                answer = text  # left open: the model continues it (the original's preface)
            else:
                raise ValueError(
                    f"unsupported role {role!r}: give system and user messages, and at most "
                    "a last assistant turn to continue"
                )
        turns.append(f"\n<|im_start|>assistant\n{answer}")
        return turns

    def __call__(
        self, messages: Sequence[dict], images: Sequence[Image.Image] = (), cut: bool = True
    ) -> Encoded:
        """Tokens and crops of one conversation; each image fills one marker, in order."""
        turns = self._turns(messages)
        markers = sum(turn.count(IMAGE_MARKER) for turn in turns)
        if markers != len(images):
            raise ValueError(f"{markers} image markers in the messages for {len(images)} images")
        crops = [image_crops(image, cut, self.image_size) for image in images]
        grids = iter(grid for _, grid in crops)

        def expand(match: re.Match) -> str:
            grid = next(grids)
            return cut_prompt(*grid) if grid else match.group()

        input_ids: list[int] = []
        image_starts: list[int] = []
        for turn in turns:
            expanded = re.sub(re.escape(IMAGE_MARKER), expand, turn)
            for chunk in re.split(f"({re.escape(IMAGE_MARKER)})", expanded):
                if chunk == IMAGE_MARKER:
                    image_starts.append(len(input_ids))
                input_ids += self.tokenizer(chunk, add_special_tokens=False)["input_ids"]
        pixels = torch.cat([pixels for pixels, _ in crops]) if crops else None
        return Encoded(input_ids, image_starts, pixels, [grid for _, grid in crops])

    def collate(self, samples: Sequence[Encoded]) -> dict[str, torch.Tensor]:
        """Left-padded batch: input_ids, attention_mask, media_offset (+ pixel_values)."""
        length = max(len(sample.input_ids) for sample in samples)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        input_ids = torch.full((len(samples), length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        media_offset = torch.zeros((len(samples), length, 2), dtype=torch.long)
        before = 0  # images of the earlier samples
        for row, sample in enumerate(samples):
            offset = length - len(sample.input_ids)
            input_ids[row, offset:] = torch.tensor(sample.input_ids)
            attention_mask[row, offset:] = 1
            media_offset[row, :, 0] = media_offset[row, :, 1] = before
            if sample.image_starts:
                index = torch.arange(len(sample.input_ids))[:, None]
                seen = (index > torch.tensor(sample.image_starts)).sum(dim=1)
                media_offset[row, offset:, 1] += seen
            else:
                media_offset[row, :, 1] = NO_MEDIA
            before += len(sample.image_starts)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "media_offset": media_offset,
        }
        pixels = [sample.pixel_values for sample in samples if sample.pixel_values is not None]
        if pixels:
            batch["pixel_values"] = torch.cat(pixels)
        return batch


def _text(content: str | Sequence[dict]) -> str:
    """Message content as text: a string as is, or parts (image / text) joined by newlines."""
    if isinstance(content, str):
        return content
    return "\n".join(IMAGE_MARKER if part["type"] == "image" else part["text"] for part in content)
