"""`llmiqa tiny`: tiny random checkpoints to try llmiqa offline."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_command(commands: argparse._SubParsersAction) -> None:
    tiny = commands.add_parser("tiny", help="build tiny random models to try llmiqa offline")
    tiny.add_argument("folder", help="where to write them")
    tiny.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from llmiqa import tiny
    from llmiqa.errors import UsageError

    transformers_logging.disable_progress_bar()  # its "Writing model shards" bars say nothing
    folder = Path(args.folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{folder}: cannot make this folder for the tiny models "
                         f"({error.strerror})") from None  # fmt: skip
    model, segmenter = tiny.build_qwen2_vl(folder / "qwen2-vl"), tiny.build_sam2(folder / "sam2")
    owl3 = tiny.build_mplug_owl3(folder / "mplug-owl3")
    print(f"tiny random Qwen2-VL, mPLUG-Owl3 (the paper's MLLM) and SAM2 in {folder} (random "
          "weights: the scores mean nothing)")  # fmt: skip
    flags = f"--segmenter {segmenter} {tiny.PERMISSIVE_MASK_FLAGS}"
    print(f"try: llmiqa score IMAGE --model {model} {flags}")
    print(f"try: llmiqa score IMAGE --preset dogiqa --model {owl3} {flags}")
    return 0
