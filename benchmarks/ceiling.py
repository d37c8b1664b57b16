"""The harness's own ceiling: what llmiqa costs per image when the model costs nothing.

The null backend (benchmarks/null_rater.py, registered here) rates every request at once
with a fixed answer (no model), so all that is left is llmiqa: reading and decoding the
file, converting and hashing the pixels, building requests, the store, the aggregation.
Each figure is set beside decoding the same files with PIL alone, on distinct 1024x768
images (../shared/data/dibr, mirrored and flipped to make as many as asked), as JPEG and
as PNG:

- decode: Image.open + load, nothing else;
- llmiqa: a first run with the null rater into a new store;
- store: the same images again, everything served from the store;

each whole-image only and with regions (masks put in the store beforehand, as a finished
segmentation pass leaves them: SAM2's time is a model's). Times are CPU seconds of this
process, all its threads (time.process_time), the minimum of `--repeats` runs: the
claim "llmiqa costs at most 1.5x a decode on one core" is about work, not about the other
processes of a shared machine. The scaling section gives wall time and images per second
for 1, 2, ... decoding threads (Runtime.decoders), also the minimum of the repeats.

    python benchmarks/ceiling.py [--images 300] [--repeats 3] [--decoders 1 2] [--json out]

Runs on older llmiqa too (PYTHONPATH=<a checkout of main>), to measure the before beside
the after; where Runtime has no `decoders`, the scaling section times its one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import null_rater
import numpy as np
from PIL import Image, ImageOps

from llmiqa.inputs.images import load_image
from llmiqa.loading.runtime import Runtime
from llmiqa.method.regions import RegionSettings
from llmiqa.scoring.pipeline import Scorer
from llmiqa.scoring.store import Store

DIBR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dibr"
WARMUP = 8  # images scored first, not measured: imports and first allocations
FORMATS = {"jpeg": dict(format="JPEG", quality=90), "png": dict(format="PNG")}
MODES = ("whole-only", "regions")


def make_images(folder: Path, count: int, fmt: str) -> list[Path]:
    """`count` distinct 1024x768 images: DIBR's, then mirrored, flipped, both."""
    sources = sorted(DIBR.glob("*.png"))
    made = []
    for n in range(count):
        image = Image.open(sources[n % len(sources)]).convert("RGB")
        turn = n // len(sources) % 4
        image = ImageOps.mirror(image) if turn & 1 else image
        image = ImageOps.flip(image) if turn & 2 else image
        path = folder / f"{n:04d}.{fmt}"
        image.save(path, **FORMATS[fmt])
        made.append(path)
    return made


def decode_ms(files: list[Path]) -> float:
    """CPU ms per image to decode the files with PIL alone."""
    started = time.process_time()
    for file in files:
        with Image.open(file) as image:
            image.load()
    return (time.process_time() - started) / len(files) * 1000


def scorer(store: Path, segmenter: str | None, decoders: int | None) -> Scorer:
    runtime = Runtime(backend="null", device="cpu")
    if decoders is not None:
        runtime = dataclasses.replace(runtime, decoders=decoders)
    if segmenter is None:
        return Scorer(["null"], regions=RegionSettings(region_mode="whole-only"),
                      runtime=runtime, store=store)  # fmt: skip
    return Scorer(["null"], segmenter=segmenter, runtime=runtime, store=store)


def score_ms(files, store, segmenter, decoders) -> tuple[float, float]:
    """CPU and wall ms per image of one llmiqa run over the files."""
    run = scorer(store, segmenter, decoders)
    started, wall = time.process_time(), time.perf_counter()
    results = run.score(files)
    cpu, wall = time.process_time() - started, time.perf_counter() - wall
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert run.usage.rated == 0 or run.usage.from_store == 0
    run.store.close()
    return cpu / len(files) * 1000, wall / len(files) * 1000


def put_masks(files: list[Path], store: Path, segmenter: str) -> None:
    """Three object masks per image, as SAM2 would have left them in the store."""
    identity = scorer(store, segmenter, None).segmenter.identity
    kept = Store(store)
    for file in files:
        loaded = load_image(file)
        height, width = loaded.image.height, loaded.image.width
        masks = []
        for left, top in ((0.05, 0.1), (0.4, 0.3), (0.6, 0.55)):
            mask = np.zeros((height, width), dtype=bool)
            y, x = int(top * height), int(left * width)
            mask[y : y + height // 3, x : x + width // 4] = True
            masks.append(mask)
        kept.put_masks(loaded.digest, identity, (height, width), masks)
    kept.close()


def measure(files, warm, root: Path, segmenter, repeats: int, decoders) -> dict:
    """decode, llmiqa (first run) and store (second run): CPU ms per image, best of repeats."""
    best = {"decode": [], "llmiqa": [], "store": []}
    for _ in range(repeats):
        store = root / f"store-{time.monotonic_ns()}.sqlite"
        if segmenter is not None:
            put_masks(files + warm, store, segmenter)
        score_ms(warm, store, segmenter, decoders)
        best["decode"].append(decode_ms(files))
        best["llmiqa"].append(score_ms(files, store, segmenter, decoders)[0])
        best["store"].append(score_ms(files, store, segmenter, decoders)[0])
    return {name: min(values) for name, values in best.items()}


def scaling(files, warm, root: Path, repeats: int, counts: list[int]) -> dict:
    """Wall ms per image of a first run (null rater, whole only) per decoding threads."""
    found = {}
    for count in counts:
        walls = []
        for _ in range(repeats):
            store = root / f"scale-{time.monotonic_ns()}.sqlite"
            score_ms(warm, store, None, count)
            walls.append(score_ms(files, store, None, count)[1])
        found[count] = min(walls)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decoders", type=int, nargs="*", default=[1, 2],
                        help="decoding threads to compare (the ratios use the first)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    has_decoders = "decoders" in {f.name for f in dataclasses.fields(Runtime)}
    one = args.decoders[0] if has_decoders and args.decoders else None
    null_rater.register()
    report: dict = {"images": args.images, "decoders": one, "rows": []}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        print(f"{args.images} distinct 1024x768 images per format, CPU ms per image (best of "
              f"{args.repeats}), decoding threads: {one or 'one background thread'}")  # fmt: skip
        print(f"{'format':<6} {'mode':<10} {'decode':>7} {'llmiqa':>7} {'x':>5} "
              f"{'store':>7} {'x':>5}")  # fmt: skip
        segmenter = None
        for mode in MODES:
            if mode == "regions":  # a tiny SAM2 only names the masks: it never runs
                from llmiqa import tiny

                segmenter = str(tiny.build_sam2(root / "sam2"))
            for fmt in FORMATS:
                images = root / fmt
                if not images.exists():
                    images.mkdir()
                    make_images(images, args.images + WARMUP, fmt)
                paths = sorted(images.iterdir())
                files, warm = paths[WARMUP:], paths[:WARMUP]
                figures = measure(files, warm, root, segmenter, args.repeats, one)
                row = {"format": fmt, "mode": mode, **figures}
                row["llmiqa_x"] = figures["llmiqa"] / figures["decode"]
                row["store_x"] = figures["store"] / figures["decode"]
                report["rows"].append(row)
                print(
                    f"{fmt:<6} {mode:<10} {row['decode']:7.2f} {row['llmiqa']:7.2f} "
                    f"{row['llmiqa_x']:5.2f} {row['store']:7.2f} {row['store_x']:5.2f}"
                )
            if mode == "whole-only":
                report["torch_imported"] = "torch" in sys.modules
                print(f"torch imported by the whole-only runs: {report['torch_imported']}")
        if args.decoders:
            counts = args.decoders if has_decoders else [None]  # None: its one thread
            paths = sorted((root / "jpeg").iterdir())
            walls = scaling(paths[WARMUP:], paths[:WARMUP], root, args.repeats, counts)
            report["scaling"] = {str(count): wall for count, wall in walls.items()}
            print("scaling (JPEG, whole only, null rater; wall ms per image, best of "
                  f"{args.repeats}):")  # fmt: skip
            for count, wall in walls.items():
                speedup = walls[counts[0]] / wall
                print(f"  {count or 'one background'} decoding thread(s): {wall:6.2f} ms/img  "
                      f"{1000 / wall:6.1f} img/s  x{speedup:.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
