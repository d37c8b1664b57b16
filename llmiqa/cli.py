"""Score image quality the way a careful human rater does: a multimodal LLM rates the whole
image and its main objects against an explicit quality standard, and the ratings are
combined into one score (LLM-IQA / Dog-IQA, training-free).

examples:
  llmiqa score photo.jpg more_photos/ --regions
  llmiqa eval --dataset spaq --root /data/SPAQ --out runs/spaq --preset dogiqa
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from llmiqa import __version__
from llmiqa import options as knobs


class CommandLineError(ValueError):
    """A command line that cannot run: one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """An argument error first, in one line, then where the options are (argparse's own
    prints the whole usage, tens of lines, before the error)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n(all options: {self.prog} --help)\n")


def unknown_options(command: argparse.ArgumentParser, extras: list[str]) -> str:
    """The one line for arguments a command does not take, with the closest it does."""
    known = [flag for action in command._actions for flag in action.option_strings]
    said = []
    for extra in extras:
        flag = extra.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=1) if flag.startswith("-") else []
        said.append(f"{extra} (did you mean {close[0]}?)" if close else extra)
    return f"unrecognized arguments: {' '.join(said)}"


def quiet_libraries() -> None:
    """One llmiqa line per model loaded (logger "llmiqa"), instead of transformers' bars."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("llmiqa: %(message)s"))
    log = logging.getLogger("llmiqa")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def build_scorer(args: argparse.Namespace, progress: bool = False):
    from llmiqa.pipeline import Scorer

    return Scorer.from_options(knobs.from_arguments(args), args.store, progress)


def print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"llmiqa: note: {note}", file=sys.stderr)


def region_table(result) -> str:
    lines = [f"  {'#':>2}  {'kind':<10} {'box (x0,y0,x1,y1)':<24} {'area':>6}  score"]
    lines.append(f"  {'-':>2}  {'whole':<10} {'':<24} {1:>6.1%}  {result.s_global.mean():.3f}")
    for i, region in enumerate(result.regions):
        box = ",".join(map(str, region.box))
        share = f"{region.area_fraction:>6.1%}"
        lines.append(f"  {i:>2}  {region.kind:<10} {box:<24} {share}  {region.score:.3f}")
    return "\n".join(lines)


def cmd_score(args: argparse.Namespace) -> int:
    from llmiqa.images import expand_inputs, once, path_problem

    given, repeated = once(expand_inputs(args.images, args.recursive))
    for path in repeated:
        print(f"llmiqa: note: {path} given more than once: scored once", file=sys.stderr)
    problems = {path: path_problem(path) for path in given}
    for problem in filter(None, problems.values()):  # known in a millisecond: said first
        print(f"error: {problem}", file=sys.stderr)
    images = [path for path, problem in problems.items() if problem is None]
    failed = len(given) - len(images)
    if not images:
        print(f"llmiqa: {failed} of {len(given)} images failed", file=sys.stderr)
        return 1
    scorer = build_scorer(args, progress=not args.json and len(images) > 1 and sys.stderr.isatty())
    for result in scorer.iter_score(images):
        if not result.ok:
            failed += 1
            print(f"error: {result.error}", file=sys.stderr)
            continue
        if args.json:
            record = {"path": result.name, **result.to_dict(), "standard": str(scorer.standard)}
            del record["name"]
            print(json.dumps(record), flush=True)
        else:
            print(f"{result.score:.4f}\t{result.name}", flush=True)
            if args.regions:
                print(region_table(result), flush=True)
    print_notes(scorer.usage.notes)
    if failed:
        print(f"llmiqa: {failed} of {len(given)} images failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_segment(args: argparse.Namespace) -> int:
    from llmiqa.draw import draw_regions
    from llmiqa.images import load_image

    image = load_image(args.image)
    scorer = build_scorer(args)
    (result,) = scorer.score([image])
    if not result.ok:
        print(f"error: {result.error}", file=sys.stderr)
        return 1
    draw_regions(image.image, scorer.regions(image), result).save(args.output)
    print(f"{result.score:.4f}\t{result.name}\t{len(result.regions)} regions -> {args.output}")
    return 0


def cmd_prompt(args: argparse.Namespace) -> int:
    from llmiqa.raters.spec import RaterSpec

    options = knobs.from_arguments(args)
    standard = knobs.build(knobs.Standard, options)
    runtime = knobs.build(knobs.Runtime, options)
    for model in options["model"]:
        spec = RaterSpec.create(model, runtime, knobs.backend_options(options))
        for view in ("whole", "region") if args.view == "both" else (args.view,):
            prompt = standard.prompt(view)
            print(f"# {model}, {standard}, {view} view: what the model reads before its answer")
            rendered = spec.render(prompt)
            if rendered is None:  # a server applies its chat template to these turns
                print(f"# (the server applies its chat template)\nsystem: {prompt.system}")
                print(f"user: {prompt.user}")
            else:
                print(rendered)
    return 0


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    from llmiqa.datasets import NAMES

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
    for name in ("image_col", "score_col"):
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


def cmd_eval(args: argparse.Namespace) -> int:
    from llmiqa.runs.evaluate import evaluate_run
    from llmiqa.runs.folder import RunConfig

    out = Path(args.out)
    config = RunConfig.create(
        dataset_options(args), knobs.from_arguments(args), args.preset, args.limit, args.store
    )
    summary = evaluate_run(
        config, out, args.shard, args.bootstrap, ray=ray_options(args), overwrite=args.overwrite
    )
    if summary is None:
        print(f"shard {args.shard[0]}/{args.shard[1]} stored; run without --shard to collect")
        return 0
    print_notes(summary["usage"]["notes"])
    values = summary["metrics"]
    line = "  ".join(
        f"{name.upper()} {values[name]['value']:.4f}" for name in ("srcc", "plcc", "krcc")
    )
    print(f"{summary['scored']} of {summary['images']} images scored  {line}")
    print(f"results, metrics and report in {out}")
    return 1 if summary["failed"] else 0


def cmd_bound(args: argparse.Namespace) -> int:
    from llmiqa.bound import FORMULAS, upper_bound
    from llmiqa.datasets import load_dataset

    dataset = load_dataset(**dataset_options(args))
    rows = []
    for k in args.levels:
        bound = upper_bound(dataset.mos, k, formula=args.formula)
        rows.append(
            {"dataset": args.dataset, "levels": k, "formula": args.formula,
             "srcc": bound.srcc, "plcc": bound.plcc, "mean": bound.mean}
        )  # fmt: skip
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{args.dataset}: upper bound of K-level scoring ({FORMULAS[args.formula]}),"
          f" n = {len(dataset.mos)}")  # fmt: skip
    print(f"{'K':>3}  {'SRCC':>6}  {'PLCC':>6}  {'mean':>6}")
    for row in rows:
        print(f"{row['levels']:>3}  {row['srcc']:.4f}  {row['plcc']:.4f}  {row['mean']:.4f}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from llmiqa.runs.ablate import ablate, rows_markdown
    from llmiqa.runs.folder import strict_json

    rows = ablate(Path(args.run), args.axes)
    if args.json:
        print(json.dumps(strict_json([vars(row) for row in rows])))
    else:
        print(rows_markdown(rows))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from llmiqa.reproduce import BENCHMARKS, reproduce

    roots = {name: getattr(args, name) for name in BENCHMARKS if getattr(args, name)}
    out = Path(args.out)
    record = reproduce(roots, out, knobs.explicit_options(args), args.protocols, args.limit,
                       args.subset, args.bootstrap, args.overwrite)  # fmt: skip
    print((out / "reproduction.md").read_text(), end="")
    print(f"table: {out / 'reproduction.md'}  record to share: {out / 'reproduction.json'}"
          f" ({len(record['runs'])} runs)")  # fmt: skip
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from llmiqa.compare import compare, text

    found = compare(Path(args.run), Path(args.file), args.readout)
    print(json.dumps(vars(found)) if args.json else text(found, args.readout))
    return 0


def cmd_tiny(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from llmiqa import tiny

    transformers_logging.disable_progress_bar()  # its "Writing model shards" bars say nothing
    folder = Path(args.folder)
    model, segmenter = tiny.build_qwen2_vl(folder / "qwen2-vl"), tiny.build_sam2(folder / "sam2")
    print(f"tiny random checkpoints in {folder} (random weights: the scores mean nothing)")
    print(
        f"try: llmiqa score IMAGE --model {model} --segmenter {segmenter} "
        f"{tiny.PERMISSIVE_MASK_FLAGS}"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    top = Parser(
        prog="llmiqa", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("--version", action="version", version=f"llmiqa {__version__}")
    commands = top.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )

    score = commands.add_parser("score", help="score images (files or folders)")
    score.add_argument("images", nargs="+", help="image files or folders of images")
    score.add_argument("--json", action="store_true", help="one JSON object per image")
    score.add_argument("--regions", action="store_true", help="show each region's score")
    score.add_argument("--recursive", action="store_true", help="also images in subfolders")
    knobs.add_store(score)
    knobs.add_arguments(score)
    score.set_defaults(handler=cmd_score)

    segment = commands.add_parser("segment", help="draw the regions, their scores and areas")
    segment.add_argument("image", help="one image file")
    segment.add_argument("-o", "--output", required=True, help="PNG file to write")
    knobs.add_store(segment)
    knobs.add_arguments(segment, restrict={"region_mode": ("bbox", "mask")})
    segment.set_defaults(handler=cmd_segment)

    prompt = commands.add_parser("prompt", help="print the exact text a model reads")
    prompt.add_argument(
        "--view", choices=("whole", "region", "both"), default="both",
        help="the whole image's prompt, a region's, or both (default: both)",
    )  # fmt: skip
    knobs.add_arguments(prompt, only=("model", "kind", "levels", "wording", "backend", "server"))
    prompt.set_defaults(handler=cmd_prompt)

    evaluate = commands.add_parser("eval", help="score a benchmark and report its metrics")
    add_dataset_options(evaluate)
    evaluate.add_argument("--out", required=True, help="run folder (resumable)")
    evaluate.add_argument("--limit", type=int, help="only the first N images")
    evaluate.add_argument(
        "--shard",
        type=parse_shard,
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
    knobs.add_store(evaluate, "SQLite store (default: OUT/store.sqlite)")
    add_ray_options(evaluate)
    knobs.add_arguments(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    bound = commands.add_parser("bound", help="Table 1: correlation bound of K-level scores")
    add_dataset_options(bound)
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
    bound.set_defaults(handler=cmd_bound)

    ablation = commands.add_parser("ablate", help="the paper's ablations from a run folder")
    ablation.add_argument("run", help="run folder written by llmiqa eval")
    ablation.add_argument(
        "--axes",
        nargs="*",
        default=[],
        choices=("kind", "levels", "region-mode", "masks"),
        help="also vary these (they need new ratings; whatever is stored is reused)",
    )
    ablation.add_argument("--json", action="store_true", help="one JSON list of rows")
    ablation.set_defaults(handler=cmd_ablate)

    from llmiqa.reproduce import BENCHMARKS, LABELS, PROTOCOLS

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
    knobs.add_arguments(again, preset=False)
    again.set_defaults(handler=cmd_reproduce)

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
    matching.set_defaults(handler=cmd_compare)

    tiny = commands.add_parser("tiny", help="build tiny random models to try llmiqa offline")
    tiny.add_argument("folder", help="where to write them")
    tiny.set_defaults(handler=cmd_tiny)

    from llmiqa import check, demo  # each registers its own command

    check.add_command(commands)
    demo.add_command(commands)
    top.command_parsers = commands.choices  # name -> its parser, for its own error lines
    return top


def main(argv: list[str] | None = None) -> int:
    top = parser()
    args, extras = top.parse_known_args(argv)
    if extras:  # the command's own usage line, not the top level's
        command = top.command_parsers[args.command]
        command.error(unknown_options(command, extras))
    quiet_libraries()
    from llmiqa.datasets import DatasetError
    from llmiqa.errors import UsageError
    from llmiqa.images import ImageError

    try:
        code = args.handler(args)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # finished: a late Ctrl-C changes nothing
        return code
    except KeyboardInterrupt:
        print(
            "llmiqa: interrupted; everything rated so far is in the store, and a run folder "
            "still holds its previous outputs",
            file=sys.stderr,
        )
        from llmiqa.background import working

        if working():  # a normal exit could abort inside torch (see llmiqa.background)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except (UsageError, CommandLineError, DatasetError, ImageError, OSError) as error:
        print(f"llmiqa: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("LLMIQA_DEBUG"):
            raise
        print(
            f"llmiqa: internal error ({type(error).__name__}: {error}); rerun with "
            "LLMIQA_DEBUG=1 for the traceback and please report it",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
