"""Where the time goes: per-stage seconds and the overhead of everything but model forwards.

Runs the full pipeline (SAM2 regions + MLLM ratings) on real 1024x768 images from
../shared/data/dibr with tiny random models, which make model forwards cheap so that
every other cost (decoding, hashing, cropping, processors, store, aggregation) shows.
Then reruns from the store, where no model runs at all. On real checkpoints the forwards
dominate; this bounds what the rest adds.

    python benchmarks/overhead.py [--images 16] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from llmiqa import tiny
from llmiqa.method.regions import RegionSettings
from llmiqa.scoring.pipeline import Scorer

DIBR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dibr"
# A random SAM2 passes no default threshold: keep every candidate, as the tests do. Its
# noise masks all have the whole image as box, which bbox mode rightly rates once as the
# global view; mask mode rates every region, so that every stage does its full work.
REGIONS = RegionSettings(region_mode="mask")


class ForwardTimer:
    """Wall time spent inside a module's forward, summed over calls."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seconds, self.calls, self._started = 0.0, 0, 0.0
        module.register_forward_pre_hook(self._start)
        module.register_forward_hook(self._stop)

    def _start(self, *_) -> None:
        self._started = time.perf_counter()

    def _stop(self, *_) -> None:
        self.seconds += time.perf_counter() - self._started
        self.calls += 1


def run(images: list[Path], models: dict[str, Path], store: Path, batch_size: int) -> dict:
    started = time.perf_counter()
    scorer = Scorer(
        [str(models["rater"])],
        segmenter=str(models["sam2"]),
        mask_settings=tiny.PERMISSIVE_MASKS,
        regions=REGIONS,
        batch_size=batch_size,
        store=store,
    )
    timers = {}
    if scorer.store.counts()["ratings"] == 0:  # cold: load and time the models up front
        timers["rater forward"] = ForwardTimer(scorer.raters[0].rater().model)
        with scorer.usage.timed("load models"):
            scorer.segmenter.loaded = scorer.segmenter_spec.load()
        sam2 = scorer.segmenter.loaded.model
        timers["sam2 embed"] = ForwardTimer(sam2.vision_encoder)
        timers["sam2 decode"] = ForwardTimer(sam2.mask_decoder)
    results = scorer.score(images)
    total = time.perf_counter() - started
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    usage = scorer.usage.as_dict()
    return {
        "total": total,
        "stages": usage.pop("seconds"),
        "forwards": {name: t.seconds for name, t in timers.items()},
        "stats": {k: v for k, v in usage.items() if k != "notes"},
        "regions": sum(len(r.regions) for r in results),
    }


def report(label: str, measured: dict, images: int) -> None:
    total = measured["total"]
    print(f"\n{label}: {total:.2f} s for {images} images ({total / images * 1000:.0f} ms/image)")
    for name, seconds in sorted(measured["stages"].items(), key=lambda kv: -kv[1]):
        print(f"  stage {name:<14} {seconds:8.3f} s  {seconds / total:6.1%}")
    forwards = sum(measured["forwards"].values())
    for name, seconds in measured["forwards"].items():
        print(f"  model {name:<14} {seconds:8.3f} s  {seconds / total:6.1%}")
    loading = measured["stages"].get("load models", 0.0)
    rest = total - forwards - loading
    print(f"  not a model forward (loading excluded): {rest:.3f} s = {rest / total:.1%} of total")
    print(f"  counts: {measured['stats']}, regions kept: {measured['regions']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    images = sorted(DIBR.glob("*.png"))[: args.images]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        models = {
            "rater": tiny.build_qwen2_vl(root / "qwen2-vl"),
            "sam2": tiny.build_sam2(root / "sam2"),
        }
        print(f"{len(images)} DIBR images 1024x768, torch threads {torch.get_num_threads()}")
        cold = run(images, models, root / "store.sqlite", args.batch_size)
        report("cold run (segment + rate + store)", cold, len(images))
        warm = run(images, models, root / "store.sqlite", args.batch_size)
        report("warm run (everything from the store, no model loaded)", warm, len(images))
        print(f"\nwarm / cold time: {warm['total'] / cold['total']:.3f}")


if __name__ == "__main__":
    main()
