"""What keeping the top raw logits costs the store: the same views rated over the five
answer words, without and with their top N raw logits and log-sum-exp (SeP-IQA's sum
needs N = 100), on a 2,000-image store of 5 views each (10,000 ratings).

    python benchmarks/store_top_logits.py [--images 2000] [--top 100]

Prints the file size of each store (vacuumed: every page in it, no page free), the bytes
a view adds, and the time to read every rating back (all validated) in both.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from store_checksums import compacted

from llmiqa.method.regions import View
from llmiqa.method.standards import Standard
from llmiqa.raters.base import Rating, RatingRequest
from llmiqa.scoring.store import Store

VIEWS = 5
VOCABULARY = 151_936  # Qwen2's: ids take their full range


def requests(images: int, top: int) -> list[RatingRequest]:
    question = Standard("sepiqa", 5)
    prompt = question.prompt()
    views = [View(), *(View((i * 10, 0, i * 10 + 100, 80)) for i in range(VIEWS - 1))]
    return [
        RatingRequest(model="Qwen/Qwen2.5-VL-7B-Instruct@abc|bfloat16|backend=transformers",
                      image=f"{n:032x}", size=(1024, 768), view=view, prompt=prompt, levels=5,
                      words=question.words, top=top)
        for n in range(images) for view in views
    ]  # fmt: skip


def ratings(count: int, top: int, rng) -> list[Rating]:
    made = []
    for _ in range(count):
        logits = np.sort(rng.normal(10, 3, top).astype(np.float32))[::-1]
        ids = rng.choice(VOCABULARY, top, replace=False)
        words = np.log(rng.dirichlet(np.ones(5)) * 0.5)
        kept = dict(top_ids=ids, top_logits=logits, lse=float(logits[0]) + 1.5) if top else {}
        made.append(Rating(words, float(np.log(0.3)), None, **kept))
    return made


def measure(folder: Path, images: int, top: int) -> tuple[int, float]:
    """(file bytes, seconds to read every rating back) of a store of these ratings."""
    wanted = requests(images, top)
    store = Store(folder / f"top{top}.sqlite")
    for request, rating in zip(wanted, ratings(len(wanted), top, np.random.default_rng(0)),
                               strict=True):  # fmt: skip
        store.put_rating(request, rating)
    started = time.perf_counter()
    found, refused = store.ratings(wanted)
    read = time.perf_counter() - started
    assert len(found) == len(wanted) and not refused
    store.close()
    return compacted(folder / f"top{top}.sqlite"), read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--top", type=int, default=100)
    args = parser.parse_args()
    views = args.images * VIEWS
    with tempfile.TemporaryDirectory() as folder:
        plain, plain_read = measure(Path(folder), args.images, 0)
        kept, kept_read = measure(Path(folder), args.images, args.top)
    print(f"{views} views over 5 answer words; top {args.top} raw logits kept or not")
    print(f"without: {plain / 1e6:.2f} MB, read back {plain_read:.2f} s")
    print(f"with:    {kept / 1e6:.2f} MB, read back {kept_read:.2f} s")
    print(f"added:   {(kept - plain) / views:.0f} bytes per view "
          f"({(kept - plain) / views / 1024:.2f} KiB)")  # fmt: skip


if __name__ == "__main__":
    main()
