"""`llmiqa reproduce`: the paper's Tables 2 and 3 on the benchmarks at hand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmiqa.commands import arguments


def add_command(commands: argparse._SubParsersAction) -> None:
    from llmiqa.paper.reproduce import BENCHMARKS, LABELS, PROTOCOLS

    again = commands.add_parser(
        "reproduce", help="the paper's Table 2 on the benchmarks you have, one file to share"
    )
    for name in BENCHMARKS:
        again.add_argument(f"--{name}", metavar="ROOT",
                           help=f"folder of the official {LABELS[name]} release")  # fmt: skip
    again.add_argument("--out", required=True, help="folder of the runs, the table and record")
    again.add_argument(
        "--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS),
        help="the paper's text and/or the released code (default: both)",
    )  # fmt: skip
    again.add_argument("--limit", type=int, help="only the first N images (a smoke run)")
    again.add_argument("--subset", action="store_true",
                       help="label files that list a deliberate subset of a release")  # fmt: skip
    again.add_argument("--bootstrap", type=int, default=1000,
                       help="resamples for the intervals (default: 1000)")  # fmt: skip
    again.add_argument("--overwrite", action="store_true",
                       help="replace runs of --out made with other options")  # fmt: skip
    arguments.add_arguments(again, preset=False)
    again.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Exit 1 when any run of this invocation had an image fail: its numbers are on fewer
    images than asked for."""
    from llmiqa.paper.reproduce import BENCHMARKS, reproduce

    roots = {name: getattr(args, name) for name in BENCHMARKS if getattr(args, name)}
    out = Path(args.out)
    record = reproduce(roots, out, arguments.explicit_options(args), args.protocols, args.limit,
                       args.subset, args.bootstrap, args.overwrite,
                       progress=sys.stderr.isatty())  # fmt: skip
    print((out / "reproduction.md").read_text(), end="")
    print(f"table: {out / 'reproduction.md'}  record to share: {out / 'reproduction.json'}"
          f" ({len(record['runs'])} runs)")  # fmt: skip
    failed = 0
    for key in (f"{protocol}/{name}" for protocol in args.protocols for name in roots):
        cell = record["runs"][key]["cell"]
        if cell["scored"] < cell["images"]:
            failed += 1
            print(f"llmiqa: {key}: {cell['images'] - cell['scored']} of {cell['images']} images "
                  f"failed (see {out / key / 'metrics.json'})", file=sys.stderr)  # fmt: skip
    return 1 if failed else 0
