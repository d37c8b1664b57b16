"""`llmiqa compare`: per-image agreement of a run with published per-image outputs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_command(commands: argparse._SubParsersAction) -> None:
    matching = commands.add_parser(
        "compare", help="per-image agreement of a run with published per-image outputs"
    )
    matching.add_argument("run", help="run folder written by llmiqa eval")
    matching.add_argument("file", help="JSON of {name, score} per image (e.g. the authors')")
    matching.add_argument(
        "--readout", default="greedy", choices=("expected", "argmax", "greedy", "score"),
        help="ours: the whole image's rating read out so, or the run's final score "
        "(default: greedy, the released code's one token)",
    )  # fmt: skip
    matching.add_argument("--json", action="store_true", help="one JSON object")
    matching.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Exit 1 when the run and the file do not match up (an image on one side only, or
    failed in the run), or the agreement could not be saved (it is printed all the same)."""
    from llmiqa.errors import RunError
    from llmiqa.paper.compare import compare, matched_up, save, text

    run, file = Path(args.run), Path(args.file)
    found = compare(run, file, args.readout)
    print(json.dumps(vars(found)) if args.json else text(found, args.readout))
    try:
        save(run, file, args.readout, found)
    except RunError as error:
        print(f"llmiqa: {error} (the agreement above is complete)", file=sys.stderr)
        return 1
    return 0 if matched_up(found) else 1
