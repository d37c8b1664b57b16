"""SQLite store of everything expensive: SAM2 masks and the MLLM's K-level probabilities.

Rows are written one batch per transaction, so a run killed at any moment keeps every
finished batch and a rerun computes only what is missing. WAL mode lets several processes
(one per GPU) share one store file safely.
"""

from __future__ import annotations

import hashlib
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    image TEXT NOT NULL,
    geometry TEXT NOT NULL,
    probs BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS segmentations (
    key TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    segmenter TEXT NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    count INTEGER NOT NULL,
    masks BLOB NOT NULL
);
"""
_CHUNK = 500  # keys per SELECT ... IN (...), below SQLite's variable limit


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class RatingKey:
    """Everything a rating depends on: model, rendered prompt, image content, sub-image."""

    model: str  # RaterSpec.identity
    prompt: str  # the standard's system + user text
    image: str  # pixel hash of the whole image
    geometry: str  # "whole", "bbox:x0,y0,x1,y1" or "mask:x0,y0,x1,y1:<mask hash>"

    @property
    def key(self) -> str:
        return _digest(self.model, self.prompt, self.image, self.geometry)


def segmentation_key(image: str, segmenter: str) -> str:
    return _digest(image, segmenter)


def pack_masks(masks: Sequence[np.ndarray]) -> bytes:
    """Boolean masks as zlib-compressed bits (SAM2 masks are smooth: ~20x smaller)."""
    if not masks:
        return b""
    return zlib.compress(np.packbits(np.stack(masks).astype(bool)).tobytes(), level=6)


def unpack_masks(blob: bytes, count: int, height: int, width: int) -> list[np.ndarray]:
    if count == 0:
        return []
    bits = np.unpackbits(np.frombuffer(zlib.decompress(blob), dtype=np.uint8))
    return list(bits[: count * height * width].reshape(count, height, width).astype(bool))


class Store:
    """One SQLite file (or ":memory:"); safe to open from several processes at once."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def ratings(self, keys: Iterable[RatingKey]) -> dict[RatingKey, np.ndarray]:
        """Stored probabilities for those keys that have them."""
        by_digest = {key.key: key for key in keys}
        found = {}
        digests = list(by_digest)
        for start in range(0, len(digests), _CHUNK):
            chunk = digests[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, probs FROM ratings WHERE key IN ({marks})"
            for digest, blob in self.db.execute(query, chunk):
                found[by_digest[digest]] = np.frombuffer(blob, dtype="<f8").copy()
        return found

    def put_ratings(self, rows: Sequence[tuple[RatingKey, np.ndarray]]) -> None:
        """Insert one batch atomically; a key already present (another process) is kept."""
        values = [
            (k.key, k.model, k.prompt, k.image, k.geometry, np.asarray(p, "<f8").tobytes())
            for k, p in rows
        ]
        with self._transaction():
            self.db.executemany("INSERT OR IGNORE INTO ratings VALUES (?, ?, ?, ?, ?, ?)", values)

    def masks(self, image: str, segmenter: str) -> list[np.ndarray] | None:
        row = self.db.execute(
            "SELECT height, width, count, masks FROM segmentations WHERE key = ?",
            (segmentation_key(image, segmenter),),
        ).fetchone()
        if row is None:
            return None
        height, width, count, blob = row
        return unpack_masks(blob, count, height, width)

    def put_masks(
        self, image: str, segmenter: str, shape: tuple[int, int], masks: Sequence[np.ndarray]
    ) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO segmentations VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    segmentation_key(image, segmenter),
                    image,
                    segmenter,
                    shape[0],
                    shape[1],
                    len(masks),
                    pack_masks(masks),
                ),
            )

    def counts(self) -> dict[str, int]:
        (ratings,) = self.db.execute("SELECT COUNT(*) FROM ratings").fetchone()
        (segmentations,) = self.db.execute("SELECT COUNT(*) FROM segmentations").fetchone()
        return {"ratings": ratings, "segmentations": segmentations}

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE takes the write lock up front, so concurrent writers queue."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
