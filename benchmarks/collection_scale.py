"""A collection at scale on one node: `llmiqa score SHARDS --out DIR` over N small generated
images in WebDataset tar shards, rated by a null backend (benchmarks/null_rater.py: a
fixed rating, at once), so what is measured is llmiqa's own work: reading shards,
decoding, hashing, the store, the rows, the parts and the publication.

For each size it reports the wall time, images per second and the child's peak RSS
(memory should stay flat from 10k to 100k), then kills a second run with SIGKILL at a
random moment, reruns it, and counts: the rerun's rows must equal the uninterrupted
run's, with no input lost or duplicated.

    python benchmarks/collection_scale.py [--sizes 10000 100000] [--per-shard 1000]
        [--work DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import sys

import null_rater

null_rater.register()
from llmiqa.cli import main

sys.exit(main(sys.argv[1:]))
"""
FLAGS = ["--backend", "null", "--model", "null", "--region-mode", "whole-only"]


def make_shards(folder: Path, images: int, per_shard: int, seed: int = 0) -> str:
    """N distinct 24x24 PNGs of noise in tar shards; returns their brace pattern."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    count = (images + per_shard - 1) // per_shard
    for shard in range(count):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as archive:
            for n in range(shard * per_shard, min(images, (shard + 1) * per_shard)):
                buffer = io.BytesIO()
                pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
                info = tarfile.TarInfo(f"{n:08d}.png")
                info.size = buffer.tell()
                buffer.seek(0)
                archive.addfile(info, buffer)
    return str(folder / f"{{{0:05d}..{count - 1:05d}}}.tar")


def score(pattern: str, out: Path, kill_after: float | None = None) -> dict:
    """One `llmiqa score --out` in a child process: its seconds, exit code and peak RSS."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}"}
    command = [sys.executable, "-c", CHILD, "score", pattern, *FLAGS, "--out", str(out)]
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    if kill_after is not None:
        try:
            child.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": time.perf_counter() - started, "code": child.returncode,
            "peak_rss_mb": usage.ru_maxrss / 1024}  # fmt: skip


def rows_digest(out: Path) -> tuple[int, int, str]:
    """(rows, distinct ids, a digest of every row's id, shard, digest and score)."""
    table = pq.read_table(out / "results.parquet", columns=["id", "shard", "digest", "score"])
    digest = hashlib.blake2b(digest_size=16)
    for batch in table.to_batches():
        for column in batch.columns:
            digest.update(repr(column.to_pylist()).encode())
    ids = table.column("id").to_pylist()
    return len(ids), len(set(ids)), digest.hexdigest()


def measure(work: Path, images: int, per_shard: int, seed: int) -> dict:
    started = time.perf_counter()
    pattern = make_shards(work / f"shards-{images}", images, per_shard)
    generated = time.perf_counter() - started
    whole = score(pattern, work / f"whole-{images}")
    rows, ids, digest = rows_digest(work / f"whole-{images}")
    summary = json.loads((work / f"whole-{images}" / "summary.json").read_text())
    kill_after = random.Random(seed).uniform(0.1, 0.9) * whole["seconds"]
    killed_out = work / f"killed-{images}"
    killed = score(pattern, killed_out, kill_after)
    parts = len(list((killed_out / "parts").glob("*/*.parquet")))
    rerun = score(pattern, killed_out)
    again = rows_digest(killed_out)
    return {
        "images": images,
        "shards": summary["shards"],
        "generate_s": generated,
        "seconds": whole["seconds"],
        "img_per_s": images / whole["seconds"],
        "peak_rss_mb": whole["peak_rss_mb"],
        "exit": whole["code"],
        "rows": rows,
        "distinct_ids": ids,
        "scored": summary["scored"],
        "kill": {
            "after_s": kill_after,
            "killed_exit": killed["code"],
            "parts_finished_at_kill": parts,
            "rerun_s": rerun["seconds"],
            "rerun_exit": rerun["code"],
            "rerun_peak_rss_mb": rerun["peak_rss_mb"],
            "rows": again[0],
            "distinct_ids": again[1],
            "identical_to_uninterrupted": again[2] == digest,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--work", type=Path, help="folder for shards and runs (default: temp)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--seed", type=int, default=0, help="picks the moment of the kill")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="collection-scale-"))
    try:
        report = [measure(work, n, args.per_shard, args.seed) for n in args.sizes]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    for row in report:
        kill = row["kill"]
        print(f"{row['images']:>7} images in {row['shards']} shards: {row['seconds']:.1f} s, "
              f"{row['img_per_s']:.0f} img/s, peak RSS {row['peak_rss_mb']:.0f} MB; "
              f"rows {row['rows']} ({row['distinct_ids']} distinct); killed after "
              f"{kill['after_s']:.1f} s with {kill['parts_finished_at_kill']} parts done, "
              f"rerun {kill['rerun_s']:.1f} s: rows {kill['rows']} ({kill['distinct_ids']} "
              f"distinct), identical: {kill['identical_to_uninterrupted']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
