"""`llmiqa score`: score images, one line (or JSON object) per image."""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata

from llmiqa.commands import arguments


def add_command(commands: argparse._SubParsersAction) -> None:
    score = commands.add_parser("score", help="score images (files or folders)")
    score.add_argument("images", nargs="+", help="image files or folders of images")
    score.add_argument("--json", action="store_true", help="one JSON object per image")
    score.add_argument(
        "--regions", action="store_true",
        help="also print each region's box, area and score; it changes what is shown, not "
        "what is computed: SAM2 finds the regions with or without it (only --region-mode "
        "whole-only skips SAM2)",
    )  # fmt: skip
    score.add_argument("--recursive", action="store_true", help="also images in subfolders")
    arguments.add_store(score)
    arguments.add_arguments(score)
    score.set_defaults(handler=run)


def shown(name: str) -> str:
    """A name as one line of output: as it is, or as a JSON string (quoted, escaped) when
    it holds a control character (a newline, a tab) that would break the line."""
    if any(unicodedata.category(c) == "Cc" for c in name):
        return json.dumps(name, ensure_ascii=False)
    return name


def region_table(result) -> str:
    lines = [f"  {'#':>2}  {'kind':<10} {'box (x0,y0,x1,y1)':<24} {'area':>6}  score"]
    lines.append(f"  {'-':>2}  {'whole':<10} {'':<24} {1:>6.1%}  {result.s_global.mean():.3f}")
    for i, region in enumerate(result.regions):
        box = ",".join(map(str, region.box))
        share = f"{region.area_fraction:>6.1%}"
        lines.append(f"  {i:>2}  {region.kind:<10} {box:<24} {share}  {region.score:.3f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from llmiqa.inputs.images import expand_inputs, once, path_problem

    given, repeated = once(expand_inputs(args.images, args.recursive))
    for path in repeated:
        print(f"llmiqa: note: {path} given more than once: scored once", file=sys.stderr)
    problems = {path: path_problem(path) for path in given}
    for problem in filter(None, problems.values()):  # known in a millisecond: said first
        print(f"error: {shown(problem)}", file=sys.stderr)
    images = [path for path, problem in problems.items() if problem is None]
    failed = len(given) - len(images)
    if not images:
        print(f"llmiqa: {failed} of {len(given)} images failed", file=sys.stderr)
        return 1
    scorer = arguments.build_scorer(
        args, progress=not args.json and len(images) > 1 and sys.stderr.isatty()
    )
    for result in scorer.iter_score(images):
        if not result.ok:
            failed += 1
            print(f"error: {shown(result.error)}", file=sys.stderr)
            continue
        if args.json:
            record = {"path": result.name, **result.to_dict(), "standard": str(scorer.standard)}
            del record["name"]
            print(json.dumps(record), flush=True)
        else:
            print(f"{result.score:.4f}\t{shown(result.name)}", flush=True)
            if args.regions:
                print(region_table(result), flush=True)
    arguments.print_notes(scorer.usage.notes)
    if failed:
        print(f"llmiqa: {failed} of {len(given)} images failed", file=sys.stderr)
    return 1 if failed else 0
