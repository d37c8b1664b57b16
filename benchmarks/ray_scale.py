"""The Ray path against the single-process path, on this machine: wall times, their ratio,
and what the Ray path costs per image beyond the models.

Scores the real DIBR images (1024x768) with tiny random models, which make model work
cheap so that every other cost shows: once in one process, once through a local Ray (one
actor per pool, `--cpus` CPUs), results.csv checked byte-identical; then both again over
the full store, where no model runs. The per-image overhead of the Ray path is its time
not spent loading or running a model (decode tasks, scheduling, transfers, the driver's
planning, commits and collect pass), divided by the images.

    python benchmarks/ray_scale.py [--images 96] [--regions] [--cpus 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llmiqa import tiny
from llmiqa.distributed import RayOptions, require_ray
from llmiqa.options import resolve
from llmiqa.runs import RunConfig, evaluate_run

DIBR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dibr"


def timed(run) -> tuple[dict, float]:
    started = time.perf_counter()
    summary = run()
    return summary, time.perf_counter() - started


def model_seconds(usage: dict) -> tuple[float, float]:
    """(loading, computing) seconds of the single-process run."""
    seconds = usage["seconds"]
    return seconds.get("load models", 0.0), seconds.get("rate", 0.0) + seconds.get("segment", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--regions", action="store_true", help="SAM2 regions (mask mode)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    args = parser.parse_args()
    ray = require_ray()
    root = Path(tempfile.mkdtemp(prefix="ray-scale-"))
    model = tiny.build_qwen2_vl(root / "qwen2-vl")
    scoring: dict = {"model": [str(model)], "region_mode": "whole-only"}
    if args.regions:
        permissive = {k: getattr(tiny.PERMISSIVE_MASKS, k) for k in
                      ("pred_iou_thresh", "stability_score_thresh", "points_per_side")}  # fmt: skip
        scoring.update(region_mode="mask", segmenter=str(tiny.build_sam2(root / "sam2")))
        scoring.update(permissive)
    dataset = {"name": "csv", "root": str(DIBR), "labels": str(DIBR / "mos.csv")}
    config = RunConfig.create(dataset, resolve(scoring), None, args.images)
    n = min(args.images, 96)

    single, single_wall = timed(lambda: evaluate_run(config, root / "single", resamples=0))
    _, start = timed(
        lambda: ray.init(
            num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING,
            log_to_driver=False,
        )
    )  # fmt: skip
    options = RayOptions(cpus=1.0)
    spread, ray_wall = timed(lambda: evaluate_run(config, root / "ray", resamples=0, ray=options))
    table = [(root / run / "results.csv").read_bytes() for run in ("single", "ray")]
    same = table[0] == table[1]
    _, ray_rerun = timed(lambda: evaluate_run(config, root / "ray", resamples=0, ray=options))
    _, single_rerun = timed(lambda: evaluate_run(config, root / "single", resamples=0))
    ray.shutdown()

    load, compute = model_seconds(single["usage"])
    info = spread["usage"]["ray"]
    pools = info["pools"]
    phases = info["seconds"]
    in_models = sum(p["load_seconds"] + p["busy_seconds"] for p in pools.values())
    collect = ray_wall - sum(phases.values())
    mode = "mask regions (SAM2)" if args.regions else "whole images only"
    print(f"\n{n} DIBR images 1024x768, {mode}, tiny random models, {args.cpus} CPUs, "
          f"one actor per pool; results.csv identical: {same}")  # fmt: skip
    print(f"single process      {single_wall:8.1f} s  ({single_wall / n * 1000:6.0f} ms/image)"
          f"  models: load {load:.1f} s, compute {compute:.1f} s")  # fmt: skip
    print(f"Ray start (once)    {start:8.1f} s")
    print(f"Ray path            {ray_wall:8.1f} s  ({ray_wall / n * 1000:6.0f} ms/image)"
          f"  ratio Ray / single: {ray_wall / single_wall:.2f}")  # fmt: skip
    for name, seconds in phases.items():
        print(f"  phase {name:<24} {seconds:7.1f} s")
    print(f"  collect + report            {collect:7.1f} s")
    for name, pool in pools.items():
        print(f"  pool {name}: {pool['actors']} actor(s), load {pool['load_seconds']:.1f} s, "
              f"busy {pool['busy_seconds']:.1f} s, {pool['units']} units")  # fmt: skip
    overhead = ray_wall - in_models
    single_other = single_wall - load - compute
    print(f"not in a model: Ray {overhead:.1f} s = {overhead / n * 1000:.0f} ms/image, "
          f"single process {single_other:.1f} s = {single_other / n * 1000:.0f} ms/image; "
          f"Ray adds {(overhead - single_other) / n * 1000:.0f} ms/image")  # fmt: skip
    print(f"everything stored (no model): Ray {ray_rerun:.1f} s "
          f"({ray_rerun / n * 1000:.0f} ms/image), single process {single_rerun:.1f} s "
          f"({single_rerun / n * 1000:.0f} ms/image)")  # fmt: skip


if __name__ == "__main__":
    main()
