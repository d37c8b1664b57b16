"""`llmiqa eval`: score a benchmark and publish its results, metrics and report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmiqa.commands import arguments


def add_command(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("eval", help="score a benchmark and report its metrics")
    arguments.add_dataset_options(evaluate)
    evaluate.add_argument(
        "--parquet-col",
        help="the column of image bytes or paths of the Parquet files the labels name "
        "(file.parquet#row), as score's --image-col for its Parquet inputs (default: the "
        "sole binary column, else one named image); --image-col names the label file's column",
    )  # fmt: skip
    evaluate.add_argument("--out", required=True, help="run folder (resumable)")
    evaluate.add_argument("--limit", type=int, help="only the first N images")
    evaluate.add_argument(
        "--shard",
        type=arguments.parse_shard,
        help="i/n: score every n-th image from i (one process "
        "per GPU of this machine, without Ray)",
    )
    evaluate.add_argument(
        "--bootstrap", type=int, default=1000,
        help="resamples for the confidence intervals (default: 1000; 0: none)",
    )  # fmt: skip
    evaluate.add_argument(
        "--overwrite", action="store_true",
        help="replace a finished run of --out that has other options (its ratings stay in the "
        "store); without it, such a run folder is refused",
    )  # fmt: skip
    arguments.add_store(evaluate, "SQLite store (default: OUT/store.sqlite)")
    arguments.add_ray_options(evaluate)
    arguments.add_arguments(evaluate)
    evaluate.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from llmiqa.runs.config import RunConfig
    from llmiqa.runs.evaluate import evaluate_run

    out = Path(args.out)
    config = RunConfig.create(
        arguments.dataset_options(args),
        arguments.from_arguments(args),
        args.preset,
        args.limit,
        args.store,
    )
    summary = evaluate_run(
        config,
        out,
        args.shard,
        args.bootstrap,
        ray=arguments.ray_options(args),
        overwrite=args.overwrite,
        progress=sys.stderr.isatty(),
    )
    if summary is None:
        print(f"shard {args.shard[0]}/{args.shard[1]} stored; run without --shard to collect")
        return 0
    arguments.print_notes(summary["usage"]["notes"])
    values = summary["metrics"]
    line = "  ".join(
        f"{name.upper()} {values[name]['value']:.4f}" for name in ("srcc", "plcc", "krcc")
    )
    print(f"{summary['scored']} of {summary['images']} images scored  {line}")
    print(f"results, metrics and report in {out}")
    if summary["failed"]:
        first = arguments.shown(summary["failures"][0]["error"])
        print(f"llmiqa: {summary['failed']} of {summary['images']} images failed (see "
              f"{out / 'metrics.json'}); the first: {first}", file=sys.stderr)  # fmt: skip
    return 1 if summary["failed"] else 0
