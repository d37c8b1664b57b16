"""`llmiqa ablate`: the paper's ablations recomputed from a run's stored ratings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_command(commands: argparse._SubParsersAction) -> None:
    ablation = commands.add_parser("ablate", help="the paper's ablations from a run folder")
    ablation.add_argument("run", help="run folder written by llmiqa eval or llmiqa score --out")
    ablation.add_argument(
        "--axes",
        nargs="*",
        default=[],
        choices=("kind", "levels", "region-mode", "masks"),
        help="also vary these (they need new ratings; whatever is stored is reused)",
    )
    ablation.add_argument("--json", action="store_true", help="one JSON list of rows")
    ablation.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Exit 1 when images failed for a variant, or the rows could not be saved (they are
    printed all the same)."""
    from llmiqa.errors import RunError
    from llmiqa.runs.ablate import ablate, rows_markdown, save
    from llmiqa.runs.files import strict_json

    rows = ablate(Path(args.run), args.axes, progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps(strict_json([row.record() for row in rows])))
    else:
        print(rows_markdown(rows))
    try:
        save(Path(args.run), rows)
    except RunError as error:
        print(f"llmiqa: {error} (the rows above are complete)", file=sys.stderr)
        return 1
    return 1 if any(row.failed for row in rows) else 0
