"""What the commands share: the scoring options as flags (from the options table,
llmiqa.scoring.knobs), the dataset and Ray flags, and building a Scorer from them."""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from pathlib import Path

from llmiqa.scoring import knobs
from llmiqa.scoring.presets import PRESETS, resolve

STORE_HELP = "SQLite file caching masks and ratings across runs (default: in memory)"


class CommandLineError(ValueError):
    """A command line that cannot run: one line, exit code 2."""


def add_arguments(
    parser: argparse.ArgumentParser,
    only: tuple[str, ...] | None = None,
    restrict: dict[str, tuple] | None = None,
    preset: bool = True,
) -> None:
    """Every option (or `only` those) as a --flag, grouped, each showing its default;
    `restrict` narrows an option's choices for a command that accepts fewer; `preset`
    offers --preset."""
    if preset:
        parser.add_argument(
            "--preset", choices=sorted(PRESETS), help="start from a named configuration: "
            "paper (the paper's text), dogiqa (the authors' released code), or another "
            "training-free protocol: sepiqa (SeP-IQA), qalign (Q-Align's readout), qbench "
            "(Q-Bench's); flags still win"
        )  # fmt: skip
    groups: dict[str, argparse._ArgumentGroup] = {}
    for knob in knobs.knobs():
        if only is not None and knob.key not in only:
            continue
        if knob.group not in groups:
            groups[knob.group] = parser.add_argument_group(knob.group)
        group = groups[knob.group]
        flag = "--" + knob.key.replace("_", "-")
        shown = ", ".join(knob.default) if isinstance(knob.default, list) else knob.default
        text = knob.help if knob.default is None else f"{knob.help} (default: {shown})"
        if knob.kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        elif knob.kind is list:
            group.add_argument(flag, action="append", help=text)
        else:
            choices = (restrict or {}).get(knob.key, knob.choices)
            group.add_argument(flag, type=knob.kind, choices=choices, help=text)


def add_store(parser: argparse.ArgumentParser, help: str = STORE_HELP) -> None:
    """--store, the same knob on every command that reads or fills a store."""
    parser.add_argument("--store", help=help)


def explicit_options(args: argparse.Namespace) -> dict[str, object]:
    """The options a command line gave (None: not given)."""
    return {knob.key: getattr(args, knob.key, None) for knob in knobs.knobs()}


def from_arguments(args: argparse.Namespace) -> dict[str, object]:
    """The resolved options of parsed arguments (absent flags take preset or default)."""
    return resolve(explicit_options(args), getattr(args, "preset", None))


def build_scorer(args: argparse.Namespace, progress: bool = False):
    from llmiqa.scoring.pipeline import Scorer

    return Scorer.from_options(from_arguments(args), args.store, progress)


def shown(name: str) -> str:
    """A name as one line of output: as it is, or as a JSON string (quoted, escaped) when
    it holds a control character (a newline, a tab) that would break the line."""
    if any(unicodedata.category(c) == "Cc" for c in name):
        return json.dumps(name, ensure_ascii=False)
    return name


def print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"llmiqa: note: {note}", file=sys.stderr)


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    from llmiqa.inputs.datasets import NAMES

    group = parser.add_argument_group("dataset")
    group.add_argument("--dataset", required=True, choices=NAMES)
    group.add_argument("--root", required=True, help="folder of the official release")
    group.add_argument("--split", default="all", help="all, or an official split (KonIQ: test)")
    group.add_argument("--score-col", help="another score column of the release")
    group.add_argument(
        "--labels",
        help="csv: the label file, a path as any other (relative to the working folder; "
        "default: the one CSV in --root)",
    )
    group.add_argument("--image-col", help="csv: image column (default: the first)")
    group.add_argument("--lower-better", action="store_true", help="csv: lower score = better")
    group.add_argument(
        "--include-training", action="store_true", help="livec: keep the 7 training images"
    )
    group.add_argument(
        "--subset",
        action="store_true",
        help="the label file lists a deliberate subset of an official release",
    )
    group.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept image names that lead outside --root (.., absolute paths)",
    )


def dataset_options(args: argparse.Namespace) -> dict:
    options = {"name": args.dataset, "root": str(Path(args.root).resolve()), "split": args.split}
    if args.labels is not None:
        options["labels"] = str(Path(args.labels).resolve())  # as typed, not under --root
    for name in ("image_col", "score_col", "parquet_col"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    for name in ("lower_better", "include_training", "subset", "allow_outside_root"):
        if getattr(args, name, False):
            options[name] = True
    return options


def parse_shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"shard must look like 0/4, got {text!r}") from None
    if not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"shard i/n needs 0 <= i < n, got {text!r}")
    return shard


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray (llmiqa[ray]: many GPUs and nodes)")
    group.add_argument(
        "--ray", nargs="?", const="", metavar="ADDRESS",
        help="fill the store on a Ray cluster: no ADDRESS starts Ray here (or joins "
        "$RAY_ADDRESS), 'auto' joins this machine's cluster, HOST:6379 or ray://HOST:10001 "
        "a remote one; images and local checkpoints must be at the same paths on every node",
    )  # fmt: skip
    group.add_argument("--ray-actors", type=int, help="actors per pool (default: one per GPU "
                       "share; without GPUs one per node)")  # fmt: skip
    group.add_argument("--gpus-per-rater", type=float, help="GPUs per MLLM actor (default: "
                       "1 when the cluster has GPUs, else 0; 0.5 puts two on a GPU)")  # fmt: skip
    group.add_argument("--gpus-per-segmenter", type=float, help="GPUs per SAM2 actor "
                       "(default as --gpus-per-rater)")  # fmt: skip
    group.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs per actor and per "
                       "decode task (default: 1)")  # fmt: skip
    group.add_argument("--ray-retries", type=int, default=3, help="restarts of a unit whose "
                       "worker died on it, and of a pool's actors that died loading their "
                       "model, before the run stops (default: 3)")  # fmt: skip


def ray_options(args: argparse.Namespace):
    """RayOptions from the command line, or None without --ray."""
    given = [f"--{n.replace('_', '-')}" for n in ("ray_actors", "gpus_per_rater",
             "gpus_per_segmenter") if getattr(args, n) is not None]  # fmt: skip
    if args.ray is None:
        if given:
            raise CommandLineError(f"{given[0]} needs --ray")
        return None
    from llmiqa.distributed.cluster import RayOptions

    return RayOptions(args.ray or None, args.ray_actors, args.gpus_per_rater,
                      args.gpus_per_segmenter, args.ray_cpus, args.ray_retries)  # fmt: skip
