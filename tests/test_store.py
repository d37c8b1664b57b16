"""The SQLite store: round trips, idempotent writes, several processes on one file."""

import subprocess
import sys

import numpy as np

from llmiqa.store import RatingKey, Store, pack_masks, unpack_masks


def key(n: int, model: str = "m@1") -> RatingKey:
    return RatingKey(model, "prompt", f"image{n}", "whole")


def test_ratings_round_trip_exactly(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    store.put_ratings([(key(1), probs)])
    reopened = Store(tmp_path / "s.sqlite")
    found = reopened.ratings([key(1), key(2)])
    assert list(found) == [key(1)]
    np.testing.assert_array_equal(found[key(1)], probs)


def test_every_part_of_the_key_matters():
    store = Store()
    store.put_ratings([(key(1), np.ones(3) / 3)])
    variants = [
        RatingKey("m@2", "prompt", "image1", "whole"),
        RatingKey("m@1", "other prompt", "image1", "whole"),
        RatingKey("m@1", "prompt", "image1", "bbox:0,0,5,5"),
    ]
    assert store.ratings(variants) == {}


def test_a_second_write_of_a_key_keeps_the_first():
    store = Store()
    store.put_ratings([(key(1), np.array([1.0, 0.0]))])
    store.put_ratings([(key(1), np.array([0.0, 1.0])), (key(2), np.array([0.5, 0.5]))])
    found = store.ratings([key(1), key(2)])
    np.testing.assert_array_equal(found[key(1)], [1.0, 0.0])
    assert store.counts()["ratings"] == 2


def test_lookups_of_many_keys_are_chunked():
    store = Store()
    store.put_ratings([(key(n), np.full(2, n, dtype=float)) for n in range(1200)])
    found = store.ratings([key(n) for n in range(1300)])
    assert len(found) == 1200 and found[key(999)][0] == 999


def test_masks_round_trip_through_packed_bits(tmp_path):
    rng = np.random.default_rng(0)
    masks = [rng.random((37, 53)) > 0.5 for _ in range(3)]
    restored = unpack_masks(pack_masks(masks), 3, 37, 53)
    assert all((a == b).all() for a, b in zip(masks, restored, strict=True))
    store = Store(tmp_path / "s.sqlite")
    assert store.masks("img", "sam") is None
    store.put_masks("img", "sam", (37, 53), masks)
    store.put_masks("img2", "sam", (37, 53), [])
    assert all((a == b).all() for a, b in zip(masks, store.masks("img", "sam"), strict=True))
    assert store.masks("img2", "sam") == []
    assert store.masks("img", "another segmenter") is None


WRITER = """
import sys, numpy as np
from llmiqa.store import RatingKey, Store
store = Store(sys.argv[1])
who = sys.argv[2]
for n in range(200):
    names = [f"{who}-{n}-{i}" for i in range(5)] + [f"shared-{n}"]
    rows = [(RatingKey("m", "p", name, "whole"), np.full(7, n, dtype=float)) for name in names]
    store.put_ratings(rows)
"""


def test_two_processes_writing_one_store_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite"
    Store(path).close()
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), who]) for who in ("a", "b")
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    store = Store(path)
    assert store.counts()["ratings"] == 2 * 200 * 5 + 200
    (integrity,) = store.db.execute("PRAGMA integrity_check").fetchone()
    assert integrity == "ok"
