"""The zero-call path at scale: `llmiqa ablate` on a synthetic 10,000-image run.

Builds a run folder whose results (results.jsonl, ratings.npz) hold N images with 1 + R
views each (random but well-formed ratings, one model, K = 7), then times
`llmiqa ablate RUN` in a fresh Python process (start-up and imports included) and reports
its wall time, CPU time and peak memory.

    python benchmarks/ablate_scale.py [--images 10000] [--regions 8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from llmiqa.method.aggregate import Aggregation
from llmiqa.method.results import ImageResult
from llmiqa.runs.config import CONFIG, RunConfig
from llmiqa.runs.files import ARRAYS, RESULTS, arrays_npz, results_jsonl
from llmiqa.scoring.presets import resolve

PROBE = """
import resource, sys, time
started = time.perf_counter()
from llmiqa.cli import main
code = main(["ablate", sys.argv[1]])
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu = usage.ru_utime + usage.ru_stime
print(f"BENCH {seconds:.3f} {cpu:.3f} {usage.ru_maxrss / 1024:.0f} {'torch' in sys.modules}",
      file=sys.stderr)
sys.exit(code)
"""


def synthetic_run(out: Path, images: int, regions: int, seed: int = 0) -> None:
    """A run folder as `llmiqa eval` writes it, with random ratings."""
    rng = np.random.default_rng(seed)
    config = RunConfig.create(
        {"name": "csv", "root": str(out), "labels": str(out / "labels.csv")},
        resolve({"model": ["synthetic"]}),
    )
    results, mos = [], []
    for i in range(images):
        count = int(rng.integers(1, regions + 1))
        views = 1 + count
        logits = rng.normal(0, 1.5, (views, 1, 7))
        logprobs = logits - np.log(np.exp(logits).sum(-1, keepdims=True)) + np.log(0.95)
        areas = rng.integers(1_000, 200_000, count)
        results.append(
            ImageResult(
                name=f"img{i:05d}.png",
                models=("synthetic",),
                digest=f"{i:032x}",
                size=(1024, 768),
                kinds=("object",) * (count - 1) + ("complement",),
                boxes=((0, 0, 512, 384),) * count,
                areas=tuple(int(a) for a in areas),
                logprobs=logprobs,
                other_logprob=np.full((views, 1), np.log(0.05)),
                other_value=np.full((views, 1), np.nan),
                aggregation=Aggregation(),
            )
        )
        mos.append(float(rng.uniform(1, 5)))
    (out / RESULTS).write_text(results_jsonl(results, mos, config.run_id))
    (out / ARRAYS).write_bytes(arrays_npz(results, mos, config.run_id))
    (out / CONFIG).write_text(config.to_json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--regions", type=int, default=8, help="at most this many per image")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        started = time.perf_counter()
        synthetic_run(out, args.images, args.regions)
        size = (out / RESULTS).stat().st_size / 1e6
        print(f"built {args.images} images, results.jsonl {size:.1f} MB "
              f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", PROBE, str(out)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"llmiqa ablate failed: {done.stderr.strip()}")
        wall = time.perf_counter() - started
        _, seconds, cpu, peak, torch = done.stderr.strip().splitlines()[-1].split()
        rows = done.stdout.count("\n| ") + 1 - 2  # table rows below the header
        print(f"llmiqa ablate: {rows} variants, {wall:.2f} s wall (whole process), {seconds} s"
              f" inside Python, {cpu} s CPU, peak {peak} MB, torch imported: {torch}")  # fmt: skip


if __name__ == "__main__":
    main()
