"""What the store's row checksums cost, on a 10,000-image store (50,000 ratings: each image
whole and four regions, K = 7; and 10,000 segmentations of 8 masks at 512x384).

    python benchmarks/store_checksums.py [--images 10000]

Prints the time to write and to read back every rating (all validated), the part of that
time spent on checksums, and the bytes per row they add to the file (the same rows in a
store without the checksum column, both vacuumed). A checksum is 9 bytes of a record (8
of blake2b, 1 of header); whether the file grows depends on how rows fill 4 KiB pages.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from llmiqa.method.regions import View
from llmiqa.method.standards import Standard
from llmiqa.raters.base import Rating, RatingRequest
from llmiqa.scoring.store import Store, checksum

VIEWS = 5
MASKS_PER_IMAGE, MASK_SHAPE = 8, (384, 512)


def requests(images: int) -> list[RatingRequest]:
    prompt = Standard().prompt()
    views = [View(), *(View((i * 10, 0, i * 10 + 100, 80)) for i in range(VIEWS - 1))]
    return [
        RatingRequest(model="Qwen/Qwen2.5-VL-7B-Instruct@abc|bfloat16|backend=transformers",
                      image=f"{n:032x}", size=(1024, 768), view=view, prompt=prompt, levels=7)
        for n in range(images) for view in views
    ]  # fmt: skip


def compacted(path: Path) -> int:
    """The file's size once every page is in it and no page is free."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("VACUUM")
    db.close()
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    wanted = requests(args.images)
    probs = rng.dirichlet(np.ones(7), size=len(wanted))
    ratings = [Rating(np.log(p * 0.9), np.log(0.1), None) for p in probs]
    y, x = np.mgrid[: MASK_SHAPE[0], : MASK_SHAPE[1]]
    mask = (x - 250) ** 2 + (y - 190) ** 2 < 120**2  # smooth, as SAM2's masks are
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "store.sqlite"
        store = Store(path)
        started = time.perf_counter()
        for request, rating in zip(wanted, ratings, strict=True):
            store.put_rating(request, rating)
        write = time.perf_counter() - started
        for n in range(args.images // 10):  # masks: a tenth of the images suffices to size rows
            store.put_masks(f"{n:032x}", "sam2", MASK_SHAPE, [mask] * MASKS_PER_IMAGE)
        started = time.perf_counter()
        found, refused = store.ratings(wanted)
        read = time.perf_counter() - started
        assert len(found) == len(wanted) and not refused
        rows = store.db.execute(
            "SELECT key, model, prompt, image, geometry, levels, logprobs, other_logprob, "
            "other_value, incomplete FROM ratings"
        ).fetchall()
        started = time.perf_counter()
        for row in rows:
            checksum(row)
        checksums = time.perf_counter() - started
        store.close()
        with_checksums = compacted(path)
        plain = Path(folder) / "plain.sqlite"  # the same rows, without the checksum column
        with sqlite3.connect(path) as source, sqlite3.connect(plain) as target:
            for table, create in source.execute("SELECT name, sql FROM sqlite_master "
                                                "WHERE type = 'table'"):  # fmt: skip
                target.execute(create.replace(",\n    checksum BLOB NOT NULL", ""))
                columns = [c[1] for c in source.execute(f"PRAGMA table_info({table})")]
                kept = [c for c in columns if c != "checksum"]
                rows = source.execute(f"SELECT {', '.join(kept)} FROM {table}").fetchall()
                marks = ", ".join("?" * len(kept))
                target.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        without = compacted(plain)
    rows = len(wanted) + args.images // 10
    print(f"{len(wanted)} ratings of {args.images} images, {args.images // 10} segmentations")
    print(f"write every rating (one commit each): {write:.2f} s")
    share = f"{checksums / read:.0%}; {1e6 * checksums / len(wanted):.1f} us per rating"
    print(f"read back every rating, validated: {read:.3f} s, checksums {checksums:.3f} s ({share})")
    print(f"file {with_checksums} bytes with checksums, {without} without: "
          f"{(with_checksums - without) / rows:.1f} bytes per row")  # fmt: skip


if __name__ == "__main__":
    main()
