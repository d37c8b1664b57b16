"""The `llmiqa` command: a thin layer over the Scorer and the evaluation runner."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmiqa.pipeline import DEFAULT_MIN_AREA, DEFAULT_MODEL, DEFAULT_SEGMENTER, Scorer
from llmiqa.results import Aggregation, ImageResult
from llmiqa.standards import KINDS, Standard

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}

# Every scoring option, with its default; a preset replaces defaults, explicit flags win.
DEFAULTS = {
    "model": [DEFAULT_MODEL],
    "levels": 7,
    "standard": "word",
    "readout": "expected",
    "region_mode": "bbox",
    "aggregate": "area",
    "lam": 1.0,
    "min_area": DEFAULT_MIN_AREA,
    "segmenter": DEFAULT_SEGMENTER,
}
PRESETS = {
    # The paper's exact configuration (Section 4.1): mPLUG-Owl3 + SAM2, K = 7 words,
    # one greedy token (argmax), bbox sub-images, area weights, s = s_global + s_local.
    "paper": {
        "model": ["mPLUG/mPLUG-Owl3-7B-240728"],
        "segmenter": "facebook/sam2-hiera-large",
        "levels": 7,
        "standard": "word",
        "readout": "argmax",
        "region_mode": "bbox",
        "aggregate": "area",
        "lam": 1.0,
    },
}


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by `score`, `segment` and `eval` (defaults resolved in resolve())."""
    group = parser.add_argument_group("scoring")
    group.add_argument("--preset", choices=sorted(PRESETS), help="start from a named configuration")
    group.add_argument(
        "--model",
        action="append",
        help=f"hub id or local folder of an MLLM; repeat for an ensemble (default {DEFAULT_MODEL})",
    )
    group.add_argument("--levels", type=int, choices=(3, 5, 7, 9), help="number of levels K (7)")
    group.add_argument("--standard", choices=KINDS, help="how levels are described (word)")
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
    group.add_argument("--aggregate", choices=("area", "mean"), help="region weighting (area)")
    group.add_argument("--lam", type=float, help="weight λ of the local score (1)")
    group.add_argument(
        "--min-area",
        type=float,
        help=f"area threshold t of Algorithm 1, as a fraction of the image ({DEFAULT_MIN_AREA})",
    )
    group.add_argument("--segmenter", help=f"SAM2 hub id or local folder ({DEFAULT_SEGMENTER})")
    group.add_argument("--device", help="cuda, cuda:1, cpu, mps (default: best available)")
    group.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"))
    group.add_argument("--batch-size", type=int, help="sub-images per forward pass")
    group.add_argument("--store", help="SQLite file caching masks and ratings across runs")


def resolve(args: argparse.Namespace) -> dict:
    """Explicit flags over the preset over the defaults."""
    preset = PRESETS.get(args.preset or "", {})
    return {
        name: getattr(args, name) if getattr(args, name) is not None else preset.get(name, default)
        for name, default in DEFAULTS.items()
    }


def build_scorer(
    args: argparse.Namespace, store: str | None = None, progress: bool = False
) -> Scorer:
    options = resolve(args)
    return Scorer(
        options["model"],
        standard=Standard(options["standard"], options["levels"]),
        aggregation=Aggregation(options["readout"], options["aggregate"], options["lam"]),
        region_mode=options["region_mode"],
        min_area=options["min_area"],
        segmenter=options["segmenter"],
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        store=store or args.store,
        progress=progress,
    )


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
            record = result.to_dict()
            record["standard"] = str(scorer.standard)
            print(json.dumps(record), flush=True)
        else:
            print(f"{result.score:.4f}\t{result.name}", flush=True)
            if args.regions:
                print(region_table(result), flush=True)
    if failed:
        print(f"llmiqa: {failed} of {len(images)} images failed", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmiqa", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    score = commands.add_parser("score", help="score images (files or folders)")
    score.add_argument("images", nargs="+", help="image files or folders of images")
    score.add_argument("--json", action="store_true", help="one JSON object per image")
    score.add_argument("--regions", action="store_true", help="show each region's score")
    add_scoring_options(score)
    score.set_defaults(run=cmd_score)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("llmiqa: interrupted; everything rated so far is in the store", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as error:
        print(f"llmiqa: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
