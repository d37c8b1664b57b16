"""`llmiqa check`: the labels-free self-check (llmiqa.evaluation.check)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from llmiqa.commands import arguments
from llmiqa.evaluation import check as self_check
from llmiqa.evaluation.check import (
    DISTORTIONS,
    MAX_SIDE,
    distortion_table,
    load_references,
    run_check,
)


def add_command(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "check", help="labels-free self-check: do scores fall as distortions grow?",
        description=self_check.__doc__ + "\n" + distortion_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    check.add_argument("--images", help="folder of reference images (default: 3 shipped ones)")
    check.add_argument(
        "--out",
        help="folder for check.json and check.png (default: a new temporary folder, named at "
        "the end)",
    )
    check.add_argument(
        "--distortions", nargs="+", default=list(DISTORTIONS), choices=list(DISTORTIONS),
        help="which distortions (default: all)",
    )  # fmt: skip
    check.add_argument(
        "--seed", type=int, default=0, help="seed of the noise distortion (default: 0)"
    )
    check.add_argument(
        "--max-side", type=int, default=MAX_SIDE,
        help=f"scale references down to this first (default: {MAX_SIDE})",
    )  # fmt: skip
    arguments.add_store(check)
    check.add_argument("--json", action="store_true", help="print the JSON report instead")
    arguments.add_arguments(check)
    check.set_defaults(handler=run)


def run(args) -> int:
    """Exit code 1 when a distortion is flagged, so scripts can stop on a blind model."""
    from llmiqa.scoring.pipeline import Scorer

    references = load_references(args.images, args.max_side)
    options = arguments.from_arguments(args)
    scorer = Scorer.from_options(options, args.store, progress=sys.stderr.isatty())
    report = run_check(scorer, references, args.distortions, args.seed)
    out = args.out or tempfile.mkdtemp(prefix="llmiqa-check-")
    json_path, png_path = report.save(out)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(report.text())
        print(f"plot: {png_path}  numbers: {json_path}")
    return 1 if report.flagged else 0
