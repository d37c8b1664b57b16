"""`llmiqa segment`: draw an image's regions with their scores and areas (Figure 6)."""

from __future__ import annotations

import argparse
import sys

from llmiqa.commands import arguments


def add_command(commands: argparse._SubParsersAction) -> None:
    segment = commands.add_parser("segment", help="draw the regions, their scores and areas")
    segment.add_argument("image", help="one image file")
    segment.add_argument("-o", "--output", required=True, help="PNG file to write")
    arguments.add_store(segment)
    arguments.add_arguments(segment, restrict={"region_mode": ("bbox", "mask")})
    segment.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Exit 1 when the image cannot be read or scored (the one input failed), as `score`."""
    from llmiqa.evaluation.draw import draw_regions
    from llmiqa.inputs.images import ImageError, load_image

    try:
        image = load_image(args.image)
    except ImageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    scorer = arguments.build_scorer(args)
    (result,) = scorer.score([image])
    if not result.ok:
        print(f"error: {result.error}", file=sys.stderr)
        return 1
    draw_regions(image.image, scorer.regions(image), result).save(args.output)
    print(f"{result.score:.4f}\t{result.name}\t{len(result.regions)} regions -> {args.output}")
    return 0
