"""The `llmiqa` command: a thin layer over the Scorer and the evaluation runner."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmiqa.options import DEFAULTS, PRESETS, make_scorer, resolve
from llmiqa.pipeline import DEFAULT_MIN_AREA, DEFAULT_MODEL, DEFAULT_SEGMENTER, Scorer
from llmiqa.results import ImageResult
from llmiqa.runs import RATING_AXES
from llmiqa.standards import KINDS

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


MASK_OPTIONS = (
    ("points_per_side", int, "prompt grid n x n"),
    ("points_per_batch", int, "prompts per decoder call"),
    ("pred_iou_thresh", float, "min predicted mask IoU"),
    ("stability_score_thresh", float, "min mask stability"),
    ("box_nms_thresh", float, "box IoU above which NMS drops a mask"),
)


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `score`, `segment` and `eval` (defaults resolved in resolve())."""
    group = parser.add_argument_group("scoring")
    group.add_argument("--preset", choices=sorted(PRESETS), help="start from a named configuration")
    group.add_argument(
        "--model",
        action="append",
        help=f"hub id or local folder of an MLLM; repeat for an ensemble (default {DEFAULT_MODEL})",
    )
    group.add_argument(
        "--levels",
        type=int,
        choices=(3, 5, 7, 9),
        help=f"number of levels K ({DEFAULTS['levels']})",
    )
    group.add_argument(
        "--standard", choices=KINDS, help=f"how levels are described ({DEFAULTS['standard']})"
    )
    group.add_argument(
        "--readout",
        choices=("expected", "argmax"),
        help="expected = sum k*p_k (default); argmax = the paper's one greedy digit",
    )
    group.add_argument(
        "--region-mode",
        choices=("bbox", "mask", "whole-only"),
        help="bbox: box crops of the original image (default); mask: zero-padded masks; "
        "whole-only: no regions",
    )
    group.add_argument(
        "--aggregate", choices=("area", "mean"), help=f"region weighting ({DEFAULTS['aggregate']})"
    )
    group.add_argument("--lam", type=float, help=f"weight λ of the local score ({DEFAULTS['lam']})")
    group.add_argument(
        "--min-area",
        type=float,
        help=f"area threshold t of Algorithm 1, as a fraction of the image ({DEFAULT_MIN_AREA})",
    )
    group.add_argument("--segmenter", help=f"SAM2 hub id or local folder ({DEFAULT_SEGMENTER})")
    masks = parser.add_argument_group("SAM2 mask generation (coarse defaults)")
    for name, kind, meaning in MASK_OPTIONS:
        flag = "--" + name.replace("_", "-")
        masks.add_argument(flag, type=kind, help=f"{meaning} ({DEFAULTS[name]})")
    group.add_argument(
        "--cut",
        action=argparse.BooleanOptionalAction,
        help="mPLUG-Owl3: cut each (sub-)image into 384-px crops + a global view (default on)",
    )
    group.add_argument(
        "--max-pixels",
        type=int,
        help="transformers models: downscale sub-images above this many pixels first "
        "(default: never; the model's processor decides)",
    )
    group.add_argument("--device", help="cuda, cuda:1, cpu, mps (default: best available)")
    group.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"))
    group.add_argument("--batch-size", type=int, help="sub-images per forward pass")
    group.add_argument("--store", help="SQLite file caching masks and ratings across runs")


def scoring_options(args: argparse.Namespace) -> dict:
    return resolve({name: getattr(args, name, None) for name in DEFAULTS}, args.preset)


def build_scorer(args: argparse.Namespace, progress: bool = False) -> Scorer:
    return make_scorer(scoring_options(args), args.store, progress)


def expand_inputs(paths: list[str]) -> list[str]:
    """Folders stand for the image files directly inside them, sorted by name."""
    expanded = []
    for path in paths:
        folder = Path(path)
        if folder.is_dir():
            expanded += sorted(
                str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            expanded.append(path)
    return expanded


def region_table(result: ImageResult) -> str:
    lines = [f"  {'#':>2}  {'kind':<10} {'box (x0,y0,x1,y1)':<24} {'area':>6}  score"]
    lines.append(f"  {'-':>2}  {'whole':<10} {'':<24} {1:>6.1%}  {result.s_global.mean():.3f}")
    for i, region in enumerate(result.regions):
        box = ",".join(map(str, region.box))
        share = f"{region.area_fraction:>6.1%}"
        lines.append(f"  {i:>2}  {region.kind:<10} {box:<24} {share}  {region.score:.3f}")
    return "\n".join(lines)


def cmd_score(args: argparse.Namespace) -> int:
    images = expand_inputs(args.images)
    if not images:
        print("llmiqa: no images given", file=sys.stderr)
        return 2
    scorer = build_scorer(args, progress=not args.json and len(images) > 1 and sys.stderr.isatty())
    failed = 0
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
    if failed:
        print(f"llmiqa: {failed} of {len(images)} images failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_segment(args: argparse.Namespace) -> int:
    from llmiqa.draw import draw_regions
    from llmiqa.images import load_image

    image = load_image(args.image)
    scorer = build_scorer(args)
    if scorer.region_mode == "whole-only":
        raise ValueError("segment draws regions: use --region-mode bbox or mask")
    (result,) = scorer.score([image])
    if not result.ok:
        print(f"error: {result.error}", file=sys.stderr)
        return 1
    draw_regions(image.image, scorer.regions(image), result).save(args.output)
    print(f"{result.score:.4f}\t{result.name}\t{len(result.regions)} regions -> {args.output}")
    return 0


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    from llmiqa.datasets import NAMES

    group = parser.add_argument_group("dataset")
    group.add_argument("--dataset", required=True, choices=NAMES)
    group.add_argument("--root", required=True, help="folder of the official release")
    group.add_argument("--split", default="all", help="all, or an official split (KonIQ: test)")
    group.add_argument("--score-col", help="another score column of the release")
    group.add_argument("--labels", help="csv: the label file (default: the CSV in --root)")
    group.add_argument("--image-col", help="csv: image column (default: the first)")
    group.add_argument("--lower-better", action="store_true", help="csv: lower score = better")
    group.add_argument(
        "--include-training", action="store_true", help="livec: keep the 7 training images"
    )


def dataset_options(args: argparse.Namespace) -> dict:
    options = {"name": args.dataset, "root": str(Path(args.root).resolve()), "split": args.split}
    for name in ("labels", "image_col", "score_col"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    for name in ("lower_better", "include_training"):
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


def cmd_eval(args: argparse.Namespace) -> int:
    from llmiqa.runs import RunConfig, evaluate_run

    out = Path(args.out)
    config = RunConfig(dataset_options(args), scoring_options(args), args.limit, args.store)
    summary = evaluate_run(config, out, args.shard, args.bootstrap)
    if summary is None:
        print(f"shard {args.shard[0]}/{args.shard[1]} stored; run without --shard to collect")
        return 0
    values = summary["metrics"]
    line = "  ".join(
        f"{name.upper()} {values[name]['value']:.4f}" for name in ("srcc", "plcc", "krcc")
    )
    print(f"{summary['scored']} of {summary['images']} images scored  {line}")
    print(f"results, metrics and report in {out}")
    return 1 if summary["failed"] else 0


def cmd_bound(args: argparse.Namespace) -> int:
    from llmiqa.bound import upper_bound
    from llmiqa.datasets import load_dataset

    dataset = load_dataset(**dataset_options(args))
    rows = []
    for k in args.levels:
        bound = upper_bound(dataset.mos, k, strict=args.strict)
        rows.append(
            {
                "dataset": args.dataset,
                "levels": k,
                "srcc": bound.srcc,
                "plcc": bound.plcc,
                "mean": bound.mean,
            }
        )
    if args.json:
        print(json.dumps(rows))
        return 0
    kind = "strict K levels" if args.strict else "Equation (1) as printed"
    print(f"{args.dataset}: upper bound of K-level scoring ({kind}), n = {len(dataset.mos)}")
    print(f"{'K':>3}  {'SRCC':>6}  {'PLCC':>6}  {'mean':>6}")
    for row in rows:
        print(f"{row['levels']:>3}  {row['srcc']:.4f}  {row['plcc']:.4f}  {row['mean']:.4f}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from llmiqa.runs import ablate, rows_markdown, strict_json

    rows = ablate(Path(args.run), args.axes)
    if args.json:
        print(json.dumps(strict_json([vars(row) for row in rows])))
    else:
        print(rows_markdown(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmiqa", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    score = commands.add_parser("score", help="score images (files or folders)")
    score.add_argument("images", nargs="+", help="image files or folders of images")
    score.add_argument("--json", action="store_true", help="one JSON object per image")
    score.add_argument("--regions", action="store_true", help="show each region's score")
    add_scoring_options(score)
    score.set_defaults(handler=cmd_score)

    segment = commands.add_parser("segment", help="draw the regions, their scores and areas")
    segment.add_argument("image", help="one image file")
    segment.add_argument("-o", "--output", required=True, help="PNG file to write")
    add_scoring_options(segment)
    segment.set_defaults(handler=cmd_segment)

    evaluate = commands.add_parser("eval", help="score a benchmark and report its metrics")
    add_dataset_options(evaluate)
    evaluate.add_argument("--out", required=True, help="run folder (resumable)")
    evaluate.add_argument("--limit", type=int, help="only the first N images")
    evaluate.add_argument(
        "--shard", type=parse_shard, help="i/n: score every n-th image from i (one per GPU)"
    )
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="resamples for the CIs")
    add_scoring_options(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    bound = commands.add_parser("bound", help="Table 1: correlation bound of K-level scores")
    add_dataset_options(bound)
    bound.add_argument("--levels", type=int, nargs="+", default=[3, 5, 7, 9])
    bound.add_argument("--strict", action="store_true", help="exactly K levels, not K + 1")
    bound.add_argument("--json", action="store_true")
    bound.set_defaults(handler=cmd_bound)

    ablation = commands.add_parser("ablate", help="the paper's ablations from a run folder")
    ablation.add_argument("run", help="run folder written by llmiqa eval")
    ablation.add_argument(
        "--axes",
        nargs="*",
        default=[],
        choices=tuple(RATING_AXES),
        help="also vary these (they need new ratings; whatever is stored is reused)",
    )
    ablation.add_argument("--json", action="store_true")
    ablation.set_defaults(handler=cmd_ablate)

    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("llmiqa: interrupted; everything rated so far is in the store", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as error:
        print(f"llmiqa: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
