"""The Ray path against the single-process path, on this machine: wall times, their ratio,
and what the Ray path costs beyond the models, once per run and per image.

Scores the real DIBR images (1024x768) with tiny random models, which make model work
cheap so that every other cost shows: in one process, and through a local Ray (one actor
per pool, `--cpus` CPUs), results.csv checked byte-identical. Each run is repeated and the
fastest counts (this machine is shared). The Ray path's costs come from its own clocks:
fixed (Ray start, the worker probe, each actor's model load) and per image (the decode
tasks, pool time spent neither loading nor computing: scheduling, transfers, the tail;
the driver's planning, commits and collect pass). Then both again over the full store,
where no model runs.

    python benchmarks/ray_scale.py [--images 96] [--regions] [--cpus 2] [--repeats 3]

With --collection, `llmiqa score SHARDS --out DIR` instead, over --sizes small generated
images in tar shards of 1000 (benchmarks/collection_scale.py) rated by the null backend
(benchmarks/null_rater.py), in one process and with --ray on a local cluster of --cpus
CPUs (one actor per CPU), each driver a child process: its CPU time per image (Ray's
connection and the imports aside, reported apart), images per second against the single
process's, peak driver memory, and the rows compared.

    python benchmarks/ray_scale.py --collection [--sizes 10000 100000] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llmiqa import tiny
from llmiqa.distributed.cluster import RayOptions, require_ray
from llmiqa.runs.config import RunConfig
from llmiqa.runs.evaluate import evaluate_run
from llmiqa.scoring.presets import resolve

DIBR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dibr"
HERE = Path(__file__).resolve().parent
DRIVER = """
import json, resource, sys, time
import null_rater
null_rater.register()
address, runtime_env, report = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
wall, cpu = time.perf_counter(), time.process_time()
import llmiqa.cli, llmiqa.runs.collection, llmiqa.scoring.pipeline
if address:
    import ray
    import llmiqa.distributed.shards
    ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
start = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
wall, cpu = time.perf_counter(), time.process_time()
code = llmiqa.cli.main(sys.argv[4:])
run = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with open(report, "w") as file:
    json.dump({"code": code, "start": start, "run": run, "peak_rss_mb": peak}, file)
"""


def timed(run) -> tuple[dict, float]:
    started = time.perf_counter()
    summary = run()
    return summary, time.perf_counter() - started


def model_seconds(usage: dict) -> tuple[float, float]:
    """(loading, computing) seconds of the single-process run."""
    seconds = usage["seconds"]
    return seconds.get("load models", 0.0), seconds.get("rate", 0.0) + seconds.get("segment", 0.0)


def drive(pattern: str, out: Path, address: str = "", env: dict | None = None) -> dict:
    """One `llmiqa score --out` driver in a child process (with --ray when `address`)."""
    import collection_scale

    report = out.with_suffix(".json")
    command = [sys.executable, "-c", DRIVER, address, json.dumps(env or {}), str(report),
               "score", pattern, *collection_scale.FLAGS, "--out", str(out)]  # fmt: skip
    if address:
        command += ["--ray", address, "--ray-cpus", "1"]
    paths = {"PYTHONPATH": f"{HERE.parent}:{HERE}"}
    subprocess.run(command, env={**os.environ, **paths}, check=True, stdout=subprocess.DEVNULL)
    return json.loads(report.read_text())


def collection(sizes: list[int], cpus: int) -> None:
    """score --ray against one process on generated tar shards (the module's docstring)."""
    sys.path.insert(0, str(HERE))
    import collection_scale

    ray = require_ray()
    root = Path(tempfile.mkdtemp(prefix="ray-scale-collection-"))
    started = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)  # fmt: skip
    start = time.perf_counter() - started
    address = ray.get_runtime_context().gcs_address
    env = {"env_vars": {"PYTHONPATH": f"{HERE.parent}:{HERE}"},
           "worker_process_setup_hook": "null_rater.register"}  # fmt: skip
    print(f"local Ray of {cpus} CPUs started in {start:.1f} s; one actor per CPU", flush=True)
    for n in sizes:
        pattern = collection_scale.make_shards(root / f"shards-{n}", n, 1000)
        single = drive(pattern, root / f"single-{n}")
        spread = drive(pattern, root / f"ray-{n}", address, env)
        same = (collection_scale.rows_digest(root / f"single-{n}")
                == collection_scale.rows_digest(root / f"ray-{n}"))  # fmt: skip
        used = json.loads((root / f"ray-{n}" / "summary.json").read_text())["usage"]["ray"]
        rate, ray_rate = n / single["run"]["wall"], n / spread["run"]["wall"]
        steady = n / (spread["run"]["wall"] - used["start_seconds"])
        print(f"{n:>7} images, {n // 1000} shards: single process {single['run']['wall']:.1f} s "
              f"= {rate:.0f} img/s (peak {single['peak_rss_mb']:.0f} MB); --ray "
              f"{spread['run']['wall']:.1f} s = {ray_rate:.0f} img/s = {ray_rate / rate:.2f}x, of "
              f"which the actors' start-up {used['start_seconds']:.1f} s; without it "
              f"{steady:.0f} img/s = {steady / rate:.2f}x; driver CPU "
              f"{spread['run']['cpu'] * 1000 / n:.3f} ms/img (in the Ray part "
              f"{used['driver_cpu_seconds'] * 1000 / n:.3f}), peak driver memory "
              f"{spread['peak_rss_mb']:.0f} MB, {used['actors']} actors; the driver's imports "
              f"and connection {spread['start']['wall']:.1f} s; rows identical: {same}",
              flush=True)  # fmt: skip
    ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", action="store_true", help="score --out --ray instead")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--regions", action="store_true", help="SAM2 regions (mask mode)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3, help="the fastest run of each counts")
    args = parser.parse_args()
    if args.collection:
        return collection(args.sizes, args.cpus)
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

    _, start = timed(
        lambda: ray.init(
            num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING,
            log_to_driver=False,
        )
    )  # fmt: skip
    options = RayOptions(cpus=1.0)
    best: dict[str, tuple[float, dict, Path]] = {}
    for repeat in range(args.repeats):  # interleaved: load from other processes hits both
        for name, on in (("single", None), ("ray", options)):
            out = root / f"{name}-{repeat}"
            run = lambda o=out, r=on: evaluate_run(config, o, resamples=0, ray=r)  # noqa: E731
            summary, wall = timed(run)
            if name not in best or wall < best[name][0]:
                best[name] = (wall, summary, out)
    (single_wall, single, single_out), (ray_wall, spread, ray_out) = best["single"], best["ray"]
    same = (ray_out / "results.csv").read_bytes() == (single_out / "results.csv").read_bytes()
    warm, ray_rerun = timed(lambda: evaluate_run(config, ray_out, resamples=0, ray=options))
    _, single_rerun = timed(lambda: evaluate_run(config, single_out, resamples=0))
    ray.shutdown()

    load, compute = model_seconds(single["usage"])
    phases = spread["usage"]["ray"]["seconds"]
    pools = spread["usage"]["ray"]["pools"]
    mode = "mask regions (SAM2)" if args.regions else "whole images only"
    ms = 1000 / n
    print(f"\n{n} DIBR images 1024x768, {mode}, tiny random models, {args.cpus} CPUs, "
          f"one actor per pool, fastest of {args.repeats}; results.csv identical: "
          f"{same}")  # fmt: skip
    print(f"single process {single_wall:6.1f} s  (models: load {load:.1f} s, "
          f"compute {compute:.1f} s)")  # fmt: skip
    print(f"Ray path       {ray_wall:6.1f} s  ratio Ray / single {ray_wall / single_wall:.2f}"
          f"  (+ Ray start {start:.1f} s, once per cluster)")  # fmt: skip
    loads = sum(p["load_seconds"] for p in pools.values())
    print(f"  fixed: worker probe {phases['probe']:.1f} s, model loads in actors {loads:.1f} s")
    print(f"  decode tasks {phases['decode']:6.1f} s = {phases['decode'] * ms:4.0f} ms/image")
    if "segment" in phases:
        print(f"  segment      {phases['segment']:6.1f} s = {phases['segment'] * ms:4.0f} ms/image")
    print(f"  plan         {phases['plan']:6.1f} s = {phases['plan'] * ms:4.0f} ms/image (driver)")
    for name, pool in pools.items():
        wall = phases[name]
        idle = wall * pool["actors"] - pool["load_seconds"] - pool["busy_seconds"]
        print(f"  pool {name}: {wall:.1f} s, "
              f"{pool['actors']} actor(s) {pool['units']} units, load {pool['load_seconds']:.1f}"
              f" s, busy {pool['busy_seconds']:.1f} s, neither {idle:.1f} s = "
              f"{idle * ms:.0f} ms/image")  # fmt: skip
    rest = ray_wall - sum(phases.values())
    print(f"  collect pass, metrics, report: {rest:.1f} s = {rest * ms:.0f} ms/image (driver)")
    print(f"everything stored (no model): Ray {ray_rerun:.1f} s = {ray_rerun * ms:.0f} ms/image "
          f"(decode {warm['usage']['ray']['seconds']['decode']:.1f} s), single process "
          f"{single_rerun:.1f} s = {single_rerun * ms:.0f} ms/image")  # fmt: skip


if __name__ == "__main__":
    main()
