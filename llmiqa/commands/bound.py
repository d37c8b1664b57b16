"""`llmiqa bound`: Table 1, the correlation bound of K-level scores on a dataset's MOS."""

from __future__ import annotations

import argparse
import json

from llmiqa.commands import arguments


def add_command(commands: argparse._SubParsersAction) -> None:
    bound = commands.add_parser("bound", help="Table 1: correlation bound of K-level scores")
    arguments.add_dataset_options(bound)
    bound.add_argument(
        "--levels", type=int, nargs="+", default=[3, 5, 7, 9],
        help="the K to compute it for (default: 3 5 7 9)",
    )  # fmt: skip
    bound.add_argument(
        "--formula",
        choices=("printed", "code", "strict"),
        default="code",
        help="printed: Equation (1) as printed; code: the released code's; strict: K levels "
        "(default: code)",
    )
    bound.add_argument("--json", action="store_true", help="one JSON list of rows")
    bound.set_defaults(handler=run)


def images_used(args: argparse.Namespace, count: int) -> str:
    """Which images the bound is on, and how that set differs from the paper's Table 1."""
    if args.dataset != "livec":
        return f"n = {count:,}"
    if args.include_training:
        return f"n = {count:,}: all images, the 7 training ones included, as the paper's Table 1"
    return (f"n = {count:,}: the 7 training images left out (the paper's Table 1 is on all "
            "1,169: --include-training)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from llmiqa.inputs.datasets import load_dataset
    from llmiqa.paper.bound import FORMULAS, TABLE_1, upper_bound

    dataset = load_dataset(**arguments.dataset_options(args))
    same_labels = args.split == "all" and args.score_col is None
    printed = TABLE_1.get(args.dataset, {}) if same_labels else {}
    rows = []
    for k in args.levels:
        bound = upper_bound(dataset.mos, k, formula=args.formula)
        rows.append(
            {"dataset": args.dataset, "levels": k, "formula": args.formula,
             "images": len(dataset.mos), "srcc": bound.srcc, "plcc": bound.plcc,
             "mean": bound.mean, "paper": printed.get(k)}
        )  # fmt: skip
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{args.dataset}: upper bound of K-level scoring ({FORMULAS[args.formula]}); "
          f"{images_used(args, len(dataset.mos))}")  # fmt: skip
    print(f"{'K':>3}  {'SRCC':>6}  {'PLCC':>6}  {'mean':>6}  paper (Table 1)")
    for row in rows:
        paper = "" if row["paper"] is None else f"{row['paper']:.3f}"
        print(f"{row['levels']:>3}  {row['srcc']:.4f}  {row['plcc']:.4f}  {row['mean']:.4f}  "
              f"{paper:>6}")  # fmt: skip
    return 0
