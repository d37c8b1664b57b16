"""`llmiqa score`: score images, one line (or JSON object) per image; with --out, a
collection into a run folder (llmiqa.runs.collection)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmiqa.commands import arguments


def add_command(commands: argparse._SubParsersAction) -> None:
    score = commands.add_parser(
        "score", help="score images (files, folders, lists, tar shards, Parquet files)"
    )
    score.add_argument(
        "images", nargs="+",
        help="image files; folders (their images, .tar and .parquet files); a .txt file "
        "listing paths, one a line, relative to it; WebDataset .tar shards, also as brace "
        "patterns (shards/{000..099}.tar); Parquet files (see --image-col)",
    )  # fmt: skip
    score.add_argument("--json", action="store_true", help="one JSON object per image")
    score.add_argument(
        "--regions", action="store_true",
        help="also print each region's box, area and score; it changes what is shown, not "
        "what is computed: SAM2 finds the regions with or without it (only --region-mode "
        "whole-only skips SAM2)",
    )  # fmt: skip
    score.add_argument("--recursive", action="store_true", help="also images in subfolders")
    score.add_argument(
        "--image-col",
        help="Parquet: the column of image bytes (binary, or a struct with a bytes field) or "
        "of image paths (default: the sole binary column, else one named image)",
    )  # fmt: skip
    score.add_argument(
        "--out",
        help="a run folder for the collection: results.parquet (one row per input, with "
        "every rating), results.csv, summary.json, figures/histogram.png; resumable",
    )  # fmt: skip
    score.add_argument(
        "--overwrite", action="store_true",
        help="with --out: replace a finished run with other options (its ratings stay in "
        "the store); without it, such a run folder is refused",
    )  # fmt: skip
    arguments.add_store(score, arguments.STORE_HELP.replace(")", "; with --out: OUT/store.sqlite)"))
    arguments.add_ray_options(score)
    arguments.add_arguments(score)
    score.set_defaults(handler=run)


def region_table(result) -> str:
    lines = [f"  {'#':>2}  {'kind':<10} {'box (x0,y0,x1,y1)':<24} {'area':>6}  score"]
    lines.append(f"  {'-':>2}  {'whole':<10} {'':<24} {1:>6.1%}  {result.s_global.mean():.3f}")
    for i, region in enumerate(result.regions):
        box = ",".join(map(str, region.box))
        share = f"{region.area_fraction:>6.1%}"
        lines.append(f"  {i:>2}  {region.kind:<10} {box:<24} {share}  {region.score:.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.out is not None:
        return run_collection(args)
    if args.overwrite:
        raise arguments.CommandLineError("--overwrite goes with --out")
    if args.ray is not None:
        raise arguments.CommandLineError("--ray goes with --out (a run folder the workers write)")
    arguments.ray_options(args)  # other --ray-* flags need --ray
    from llmiqa.inputs.images import path_problem
    from llmiqa.inputs.shards import read, shards

    expanded = shards(args.images, args.recursive, args.image_col)
    for path in expanded.repeated:
        print(f"llmiqa: note: {path} given more than once: scored once", file=sys.stderr)
    files = [path for shard in expanded.shards for path in shard.files]
    problems = {path: path_problem(path) for path in files}
    for problem in filter(None, problems.values()):  # known in a millisecond: said first
        print(f"error: {arguments.shown(problem)}", file=sys.stderr)
    failed = seen = sum(problem is not None for problem in problems.values())
    if seen == len(files) and all(shard.kind == "files" for shard in expanded.shards):
        print(f"llmiqa: {failed} of {seen} images failed", file=sys.stderr)
        return 1
    scorer = arguments.build_scorer(
        args, progress=not args.json and len(files) != 1 and sys.stderr.isatty()
    )
    damaged = []

    def damage(line: str) -> None:
        damaged.append(line)
        print(f"error: {arguments.shown(line)}", file=sys.stderr)

    images = (item.image for shard in expanded.shards for item in read(shard, damage)
              if problems.get(item.id) is None)  # fmt: skip
    for result in scorer.iter_score(images):
        seen += 1
        if not result.ok:
            failed += 1
            print(f"error: {arguments.shown(result.error)}", file=sys.stderr)
            continue
        if args.json:
            record = {"path": result.name, **result.to_dict(), "standard": str(scorer.standard)}
            del record["name"]
            print(json.dumps(record), flush=True)
        else:
            print(f"{result.score:.4f}\t{arguments.shown(result.name)}", flush=True)
            if args.regions:
                print(region_table(result), flush=True)
    arguments.print_notes(scorer.usage.notes)
    if failed:
        print(f"llmiqa: {failed} of {seen} images failed", file=sys.stderr)
    if damaged:
        print(f"llmiqa: {len(damaged)} shard(s) damaged", file=sys.stderr)
    return 1 if failed or damaged else 0


def run_collection(args: argparse.Namespace) -> int:
    """A run folder for the collection: exit 1 when an input failed or a shard was
    damaged (each said in one line as its shard is done)."""
    from llmiqa.runs.collection import collection_config, score_collection

    for flag in ("json", "regions"):
        if getattr(args, flag):
            raise arguments.CommandLineError(
                f"--{flag} prints each image; with --out every result is in the run folder"
            )
    config = collection_config(args.images, arguments.from_arguments(args), args.recursive,
                               args.image_col, args.preset, args.store)  # fmt: skip

    def said(_, summary) -> None:
        for line in (*summary.errors, *filter(None, [summary.damage])):
            print(f"error: {arguments.shown(line)}", file=sys.stderr)

    out = Path(args.out)
    ray = arguments.ray_options(args)
    summary = score_collection(config, out, args.overwrite, sys.stderr.isatty(), said, ray)
    arguments.print_notes(summary["usage"]["notes"])
    damaged = len(summary["damaged_shards"])
    counts = f"{summary['scored']} of {summary['inputs']} inputs scored, {summary['failed']}"
    print(f"{counts} failed, {damaged} damaged shard(s) of {summary['shards']}; results in {out}")
    return 1 if summary["failed"] or damaged else 0
