"""SQLite store of everything expensive: SAM2 masks and the MLLM's ratings (and the
canaries that say a server still serves the model its ratings came from).

Every rating is committed as it arrives, so a run killed at any moment keeps what it
computed and a rerun computes only what is missing. WAL mode lets several processes (one
per GPU) share one store file safely. What is read back is validated twice: each row
carries a checksum over its key and every value, written in the same statement, so a
changed byte anywhere in it (a plausible log-probability included) is caught; and a row
that is not a rating (NaN, a log-probability above 0, digits whose probabilities sum
above 1, the wrong K) is refused too. A refused row counts as missing: it is computed
again and reported. Every problem with the file itself (damaged, read-only, a folder, a
disk that fills up) is one StoreError line.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from llmiqa import __version__
from llmiqa.errors import UsageError, one_line
from llmiqa.raters.base import Canary, Rating, RatingRequest, key_of

# 1: llmiqa 0.1, ratings held only the K-restricted probabilities; 2: no checksums;
# 3: no top raw logits, no SeP-IQA directions; 4: no canaries; 5: images keyed by the
# blake2b digest of their pixels (inputs.images.legacy_pixel_hash), now by xxh3's
SCHEMA = 6
_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ratings (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    image TEXT NOT NULL,
    geometry TEXT NOT NULL,
    levels INTEGER NOT NULL,
    logprobs BLOB NOT NULL,
    other_logprob REAL,
    other_value INTEGER,
    incomplete INTEGER NOT NULL,
    checksum BLOB NOT NULL,
    top_ids BLOB,
    top_logits BLOB,
    lse REAL
);
CREATE TABLE IF NOT EXISTS segmentations (
    key TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    segmenter TEXT NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    count INTEGER NOT NULL,
    masks BLOB NOT NULL,
    checksum BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS directions (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    words TEXT NOT NULL,
    cosines BLOB NOT NULL,
    checksum BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS canaries (
    identity TEXT PRIMARY KEY,
    logprobs BLOB NOT NULL,
    other_logprob REAL,
    fingerprint TEXT,
    checksum BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS legacy_images (digest TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS aliases (digest TEXT PRIMARY KEY, legacy TEXT NOT NULL);
"""


def _table_sql(name: str) -> str:
    """The CREATE statement of one table, as _SCHEMA_SQL writes it (for upgrades)."""
    start = _SCHEMA_SQL.index(f"CREATE TABLE IF NOT EXISTS {name} ")
    return _SCHEMA_SQL[start : _SCHEMA_SQL.index(";", start)]


_RATING_COLUMNS = ("key", "model", "prompt", "image", "geometry", "levels", "logprobs",
                   "other_logprob", "other_value", "incomplete")  # fmt: skip
_TOP_COLUMNS = ("top_ids", "top_logits", "lse")  # schema 4; NULL on digit ratings
_MASK_COLUMNS = ("key", "image", "segmenter", "height", "width", "count", "masks")
# what Store.merge copies, by table: the columns a row's checksum covers, in its order
_MERGED = {
    "ratings": (*_RATING_COLUMNS, *_TOP_COLUMNS),
    "segmentations": _MASK_COLUMNS,
    "directions": ("key", "model", "words", "cosines"),
    "canaries": ("identity", "logprobs", "other_logprob", "fingerprint"),
}
_MERGE_CHUNK = 10_000  # rows per read while merging another store
_CHUNK = 500  # keys per SELECT ... IN (...), below SQLite's variable limit
# Commits go to the -wal file beside the store first; at most this many seconds of them
# are missing from the main file alone (a copy without its -wal, a -wal lost after a kill).
CHECKPOINT_SECONDS = 10.0
_TOLERANCE = 1e-6  # on log-probabilities: float rounding, never a real excess


class StoreError(UsageError):
    """The store file cannot be used; the run stops before (or without) losing anything."""


def segmentation_key(image: str, segmenter: str) -> str:
    return key_of(image, segmenter)


def checksum(row: Sequence) -> bytes:
    """8 bytes of blake2b over every value of a row (its checksum column aside): text and
    numbers by their exact representation, blobs as they are. Trailing NULLs (columns
    added by a later schema, empty on a row that has none) count as absent, so a row's
    checksum outlives the migration that adds them."""
    digest = hashlib.blake2b(digest_size=8)
    row = list(row)
    while row and row[-1] is None:
        row.pop()
    for value in row:
        if isinstance(value, bytes):
            digest.update(b"b%d:" % len(value) + value)
        elif isinstance(value, float):
            digest.update(b"f" + value.hex().encode())
        else:
            digest.update(f"{type(value).__name__}:{value}".encode() + b"\x1f")
    return digest.digest()


def pack_masks(masks: Sequence[np.ndarray]) -> bytes:
    """Boolean masks as zlib-compressed bits (SAM2 masks are smooth: ~20x smaller)."""
    if not masks:
        return b""
    return zlib.compress(np.packbits(np.stack(masks).astype(bool)).tobytes(), level=6)


def unpack_masks(blob: bytes, count: int, height: int, width: int) -> list[np.ndarray]:
    if count == 0:
        return []
    bits = np.unpackbits(np.frombuffer(zlib.decompress(blob), dtype=np.uint8))
    # unpackbits gives 0 and 1: read as booleans in place, not copied
    return list(bits[: count * height * width].reshape(count, height, width).view(bool))


def rating_problem(rating: Rating, levels: int, top: int = 0) -> str | None:
    """Why a rating read back cannot be a model's, or None when it can."""
    logprobs = rating.logprobs
    if logprobs.shape != (levels,):
        return f"{logprobs.size} digit log-probabilities for K = {levels}"
    if top:
        problem = _top_problem(rating, top)
        if problem:
            return problem
    if np.isnan(logprobs).any() and not rating.incomplete:
        return "NaN digit log-probabilities"
    known = logprobs[~np.isnan(logprobs)]
    if np.isposinf(known).any() or (known > _TOLERANCE).any():
        return "a digit log-probability above 0"
    if not rating.incomplete and not np.isfinite(logprobs).any():
        return "every digit has probability 0"
    other = rating.other_logprob
    if math.isnan(other) and not rating.incomplete:
        return "no log-probability for the best other token"
    others = [] if math.isnan(other) else [other]
    pooled = np.concatenate([known, others])
    if pooled.size and np.logaddexp.reduce(pooled) > _TOLERANCE:
        return f"probabilities summing to {math.exp(np.logaddexp.reduce(pooled)):.6g} > 1"
    return None


def _top_problem(rating: Rating, top: int) -> str | None:
    """Why stored top raw logits cannot be a model's: missing, the wrong count, not
    finite, out of order, or above their log-sum-exp (a probability above 1)."""
    ids, values = rating.top_ids, rating.top_logits
    if ids is None or values is None or ids.shape != values.shape or not 0 < ids.size <= top:
        return f"not the {top} top raw logits asked for"
    if not np.isfinite(values).all() or (np.diff(values) > 0).any():
        return "top raw logits that are not finite or not in descending order"
    if not math.isfinite(rating.lse) or values[0] > rating.lse + _TOLERANCE:
        return "a top raw logit above the log-sum-exp"
    if (ids < 0).any() or len(set(ids.tolist())) < ids.size:
        return "repeated or negative token ids among the top raw logits"
    return None


class Store:
    """One SQLite file (or ":memory:"); safe to open from several processes at once.
    `frozen`: only read, a file no process writes while this one is open (opened as
    SQLite's immutable: no locks and no -wal, so it also reads over a network file system);
    a Ray worker reads the run's store so."""

    def __init__(self, path: str | Path = ":memory:", frozen: bool = False) -> None:
        self.path = str(path)
        self.notes: list[str] = []  # things a user should hear about the file
        self.checkpointed = time.monotonic()
        if self.path != ":memory:":
            file = Path(self.path)
            if file.is_dir():
                raise StoreError(f"{file}: is a folder; --store needs a file path")
            if file.is_file() and file.stat().st_size == 0:
                self.notes.append(f"{file}: empty file, used as a new store")
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(f"{file}: cannot create its folder ({one_line(error)})") from None
        self.migrating = False  # rows keyed by schema 5's digests are left (or aliased)
        with self._errors("open"):
            if frozen:  # read only: rows of schema 5's digests are not moved from it
                uri = f"{Path(self.path).resolve().as_uri()}?immutable=1"
                self.db = sqlite3.connect(uri, uri=True, isolation_level=None)
                self._check_schema()
                return
            self.db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self._wal()
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._check_schema()
            self.migrating = bool(self._exists("legacy_images") or self._exists("aliases"))

    def _wal(self) -> None:
        """Switch to WAL; a new file opened by several processes at once may be briefly
        locked by the one that switches it first, so wait for it (busy_timeout does not)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _check_schema(self) -> None:
        tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master")}
        if "ratings" in tables and "meta" not in tables:
            raise StoreError(
                f"{self.path}: written by llmiqa 0.1 (its ratings lack the full-vocabulary "
                "log-probabilities every readout now needs) and cannot be migrated; move it "
                "away or pass another --store"
            )
        if "meta" not in tables:
            with self._transaction():
                for statement in _SCHEMA_SQL.split(";"):
                    self.db.execute(statement)
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            return
        row = self.db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        found = row[0] if row else "?"
        upgrades = {
            "2": self._add_checksums,
            "3": self._add_top_logits,
            "4": self._add_canaries,
            "5": self._add_aliases,
        }
        if found != str(SCHEMA) and found not in upgrades:
            raise StoreError(
                f"{self.path}: store schema {found} is not {SCHEMA} (written by another "
                "llmiqa version); pass another --store"
            )
        while found != str(SCHEMA):
            self._upgrade(found, upgrades[found])
            found = str(int(found) + 1)

    def _upgrade(self, schema: str, change: Callable[[], str]) -> None:
        """One schema up, in one transaction (all or nothing), unless another process did it
        meanwhile; `change` alters the tables and says how, for the notes."""
        with self._transaction():
            row = self.db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
            if row[0] != schema:
                return
            how = change()
            upgraded = str(int(schema) + 1)
            self.db.execute("UPDATE meta SET value = ? WHERE name = 'schema'", (upgraded,))
        self.notes.append(f"{self.path}: upgraded to store schema {upgraded}{how}")

    def _add_checksums(self) -> str:
        """Schema 2 -> 3: every row gets its checksum (its earlier damage, if any, stays
        undetectable; plausibility checks still apply)."""
        for table, columns in (("ratings", _RATING_COLUMNS), ("segmentations", _MASK_COLUMNS)):
            self.db.execute(f"ALTER TABLE {table} ADD COLUMN checksum BLOB NOT NULL DEFAULT x''")
            rows = self.db.execute(f"SELECT rowid, {', '.join(columns)} FROM {table}")
            for rowid, *values in rows.fetchall():
                self.db.execute(
                    f"UPDATE {table} SET checksum = ? WHERE rowid = ?", (checksum(values), rowid)
                )
        counts = self.counts()
        return (
            f": checksums given to its {counts['ratings']} ratings and "
            f"{counts['segmentations']} segmentations"
        )

    def _add_top_logits(self) -> str:
        """Schema 3 -> 4: ratings may keep top raw logits (empty on every existing row, whose
        checksums stay valid), and SeP-IQA's directions get their table."""
        for column, kind in zip(_TOP_COLUMNS, ("BLOB", "BLOB", "REAL"), strict=True):
            self.db.execute(f"ALTER TABLE ratings ADD COLUMN {column} {kind}")
        self.db.execute(_table_sql("directions"))
        return " (ratings may keep top raw logits); its ratings are unchanged"

    def _add_canaries(self) -> str:
        """Schema 4 -> 5: servers' canaries get their table (every other row unchanged)."""
        self.db.execute(_table_sql("canaries"))
        return " (it keeps servers' canaries beside their ratings); its rows are unchanged"

    def _add_aliases(self) -> str:
        """Schema 5 -> 6: the content digest changed (blake2b to xxh3), and a digest cannot
        be recomputed without the pixels. So the store lists the old digests it holds rows
        of (`legacy_images`); as each image is loaded again, its old digest is computed
        beside the new one and recorded as its alias, and its rows move to the new keys as
        they are read (ratings and masks are never computed again)."""
        for table in ("legacy_images", "aliases"):
            self.db.execute(_table_sql(table))
        self.db.execute(
            "INSERT OR IGNORE INTO legacy_images "
            "SELECT image FROM ratings UNION SELECT image FROM segmentations"
        )
        (count,) = self.db.execute("SELECT COUNT(*) FROM legacy_images").fetchone()
        return (
            f": the ratings and masks of its {count} images move to their new content "
            "digests as each image is seen again, none computed again"
        )

    def check_writable(self) -> None:
        """Fail now, before any work, if ratings could not be committed later; record which
        llmiqa writes to the store."""
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('llmiqa', ?)", (__version__,))

    def close(self) -> None:
        self.db.close()

    def checkpoint(self) -> None:
        """Copy what the -wal file holds into the main file (PASSIVE: it waits for no other
        reader or writer), so that the main file alone has every rating committed so far."""
        if self.path != ":memory:":
            with self._errors("write to"):
                self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self.checkpointed = time.monotonic()

    # ---- ratings ------------------------------------------------------------------------

    def ratings(self, requests: Iterable[RatingRequest]) -> tuple[dict[str, Rating], list[str]]:
        """Stored ratings, by request key, of those requests that have a valid one, and why
        the others were refused (a refused row counts as missing: it will be rated again).
        A rating stored under its image's schema-5 digest moves to its key now."""
        asked = {request.key: request for request in requests}
        found, refused = self._read_ratings(asked)
        if not self.migrating or len(found) == len(asked):
            return found, refused
        missing = [request for key, request in asked.items() if key not in found]
        aliases = self._aliases({request.image for request in missing})
        legacy = {}
        for request in missing:
            if request.image in aliases:
                old = replace(request, image=aliases[request.image])
                legacy[old.key] = (old, request)
        moved, also_refused = self._read_ratings({k: old for k, (old, _) in legacy.items()})
        for old_key, rating in moved.items():
            request = legacy[old_key][1]
            with self._transaction():
                self._insert_rating(request, rating)
                self.db.execute("DELETE FROM ratings WHERE key = ?", (old_key,))
            found[request.key] = rating
        return found, refused + also_refused

    def _read_ratings(self, asked: dict[str, RatingRequest]) -> tuple[dict[str, Rating], list[str]]:
        """The valid stored ratings of these keys, and why the others' rows were refused."""
        found, refused = {}, []
        keys = list(asked)
        columns = ", ".join((*_RATING_COLUMNS, "checksum", *_TOP_COLUMNS))
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT {columns} FROM ratings WHERE key IN ({marks})"
            with self._errors("read"):
                rows = self.db.execute(query, chunk).fetchall()
            for *values, check, top_ids, top_logits, lse in rows:
                key, levels = values[0], values[5]
                problem = None
                if key not in asked:  # the key itself was changed (its index was not)
                    problem = "its key does not match its index (the row is damaged)"
                elif checksum([*values, top_ids, top_logits, lse]) != check:
                    problem = "checksum mismatch: the row changed after it was written"
                elif levels != asked[key].levels:
                    problem = f"K = {levels} for a K = {asked[key].levels} prompt"
                else:
                    rating = _rating(*values[6:], top_ids, top_logits, lse)
                    problem = rating_problem(rating, levels, asked[key].top)
                if problem:
                    refused.append(f"{self.path}: stored rating {key} refused ({problem})")
                    continue
                found[key] = rating
        return found, refused

    def put_rating(self, request: RatingRequest, rating: Rating) -> None:
        """Commit one rating (replacing a refused row of the same key)."""
        with self._transaction():
            self._insert_rating(request, rating)

    def _insert_rating(self, request: RatingRequest, rating: Rating) -> None:
        other = None if math.isnan(rating.other_logprob) else rating.other_logprob
        row = (
            request.key,
            request.model,
            request.prompt.text,
            request.image,
            request.view.geometry,
            request.levels,
            np.asarray(rating.logprobs, "<f8").tobytes(),
            other,
            rating.other_value,
            int(rating.incomplete),
        )
        top = (None, None, None)
        if rating.top_ids is not None:
            top = (
                np.asarray(rating.top_ids, "<i4").tobytes(),
                np.asarray(rating.top_logits, "<f4").tobytes(),
                rating.lse,
            )
        self.db.execute(
            f"INSERT OR REPLACE INTO ratings ({', '.join(_RATING_COLUMNS)}, checksum, "
            f"{', '.join(_TOP_COLUMNS)}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (*row, checksum((*row, *top)), *top),
        )

    # ---- schema 5's digests -------------------------------------------------------------

    def legacy_left(self) -> bool:
        """Whether rows keyed by a schema-5 digest of an image not seen since are left: a
        loader then computes each image's old digest too (`alias`)."""
        return self.migrating and self._exists("legacy_images")

    def alias(self, legacy: Mapping[str, str]) -> None:
        """Record, for each new digest -> its schema-5 digest, the alias of those images
        whose old digest keys rows here (their rows move as they are read)."""
        with self._transaction():
            for digest, old in legacy.items():
                if self.db.execute("DELETE FROM legacy_images WHERE digest = ?", (old,)).rowcount:
                    self.db.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?)", (digest, old))

    def _aliases(self, digests: Iterable[str]) -> dict[str, str]:
        """The schema-5 digest of each of these digests that has one."""
        digests, found = list(digests), {}
        for start in range(0, len(digests), _CHUNK):
            chunk = digests[start : start + _CHUNK]
            query = (
                f"SELECT digest, legacy FROM aliases WHERE digest IN ({','.join('?' * len(chunk))})"
            )
            with self._errors("read"):
                found.update(self.db.execute(query, chunk).fetchall())
        return found

    def _exists(self, table: str) -> bool:
        with self._errors("read"):
            return self.db.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0] == 1

    # ---- SeP-IQA's directions -----------------------------------------------------------

    def direction(self, model: str, words: str) -> np.ndarray | None:
        """The stored cosines of every token's input embedding with a word direction
        (SeP-IQA's weights), or None (also when the row is damaged: computed again)."""
        with self._errors("read"):
            row = self.db.execute(
                "SELECT key, model, words, cosines, checksum FROM directions WHERE key = ?",
                (key_of(model, words),),
            ).fetchone()
        if row is None or checksum(row[:4]) != row[4] or len(row[3]) % 4:
            return None
        return np.frombuffer(row[3], dtype="<f4").copy()

    def put_direction(self, model: str, words: str, cosines: np.ndarray) -> None:
        row = (key_of(model, words), model, words, np.asarray(cosines, "<f4").tobytes())
        with self._transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO directions VALUES (?, ?, ?, ?, ?)", (*row, checksum(row))
            )

    # ---- servers' canaries --------------------------------------------------------------

    def canary(self, identity: str) -> Canary | None:
        """The canary recorded for an identity, or None. A damaged row is one StoreError: it
        cannot be computed again (the model it fingerprinted may be gone)."""
        with self._errors("read"):
            row = self.db.execute(
                "SELECT identity, logprobs, other_logprob, fingerprint, checksum FROM canaries "
                "WHERE identity = ?",
                (identity,),
            ).fetchone()
        if row is None:
            return None
        if checksum(row[:4]) != row[4] or len(row[1]) % 8:
            raise StoreError(
                f"{self.path}: the canary recorded for {identity} is damaged (its checksum does "
                "not hold), so the model behind the name cannot be checked; pass another "
                "--store, or serve the model under another name"
            )
        return Canary(_rating(row[1], row[2], None, 0), row[3])

    def put_canary(self, identity: str, canary: Canary) -> None:
        """Record the canary of an identity seen for the first time (a recorded one stays)."""
        rating = canary.rating
        other = None if math.isnan(rating.other_logprob) else rating.other_logprob
        logprobs = np.asarray(rating.logprobs, "<f8").tobytes()
        row = (identity, logprobs, other, canary.fingerprint)
        with self._transaction():
            self.db.execute(
                "INSERT OR IGNORE INTO canaries VALUES (?, ?, ?, ?, ?)", (*row, checksum(row))
            )

    # ---- masks --------------------------------------------------------------------------

    def masks(self, image: str, segmenter: str) -> tuple[list[np.ndarray] | None, str | None]:
        """The stored masks of an image, or None; and why a stored row was refused, if it
        was (it is then computed again). Masks stored under the image's schema-5 digest
        move to its key now."""
        masks, refused, row = self._read_masks(image, segmenter)
        if row is not None or not self.migrating:
            return masks, refused
        old = self._aliases([image]).get(image)
        if old is None:
            return None, None
        masks, refused, row = self._read_masks(old, segmenter)
        if masks is not None:
            values = (segmentation_key(image, segmenter), image, segmenter, *row[3:])
            with self._transaction():
                self._insert_masks(values)
                self.db.execute(
                    "DELETE FROM segmentations WHERE key = ?", (segmentation_key(old, segmenter),)
                )
        return masks, refused

    def _read_masks(
        self, image: str, segmenter: str
    ) -> tuple[list[np.ndarray] | None, str | None, tuple | None]:
        """The stored masks, why they were refused, and the row's values (None: no row)."""
        with self._errors("read"):
            row = self.db.execute(
                f"SELECT {', '.join(_MASK_COLUMNS)}, checksum FROM segmentations WHERE key = ?",
                (segmentation_key(image, segmenter),),
            ).fetchone()
        if row is None:
            return None, None, None
        *values, check = row
        refused = f"{self.path}: stored masks of image {image} refused"
        if checksum(values) != check:
            why = "checksum mismatch: the row changed after it was written"
            return None, f"{refused} ({why})", tuple(values)
        _, _, _, height, width, count, blob = values
        try:
            return unpack_masks(blob, count, height, width), None, tuple(values)
        except (zlib.error, ValueError) as error:
            return None, f"{refused} ({one_line(error)})", tuple(values)

    def segmented(self, images: Iterable[str], segmenter: str) -> set[str]:
        """Which of these image digests have stored masks (nothing unpacked: a cheap check),
        under their key or their schema-5 digest's."""
        images = list(images)
        found = self._segmented(images, segmenter)
        if self.migrating:
            aliases = self._aliases(image for image in images if image not in found)
            old = self._segmented(aliases.values(), segmenter)
            found.update(image for image, legacy in aliases.items() if legacy in old)
        return found

    def _segmented(self, images: Iterable[str], segmenter: str) -> set[str]:
        by_key = {segmentation_key(image, segmenter): image for image in images}
        keys, found = list(by_key), set()
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            query = f"SELECT key FROM segmentations WHERE key IN ({','.join('?' * len(chunk))})"
            with self._errors("read"):
                found.update(by_key[row[0]] for row in self.db.execute(query, chunk))
        return found

    def put_masks(
        self, image: str, segmenter: str, shape: tuple[int, int], masks: Sequence[np.ndarray]
    ) -> None:
        key = segmentation_key(image, segmenter)
        row = (key, image, segmenter, shape[0], shape[1], len(masks), pack_masks(masks))
        with self._transaction():
            self._insert_masks(row)

    def _insert_masks(self, row: Sequence) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO segmentations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (*row, checksum(row)),
        )

    def merge(self, other: Path) -> dict[str, int]:
        """Every valid row of another store file (a Ray worker's) that this one lacks, in
        one transaction per table; rows whose checksum fails are left out, and so are the
        tables it lacks (a worker killed while it made them). Returns the rows added per
        table."""
        added = dict.fromkeys(_MERGED, 0)
        with self._errors("merge into"):
            self.db.execute("ATTACH DATABASE ? AS other", (str(other),))
            tables = "SELECT name FROM other.sqlite_master WHERE type = 'table'"
            there = {name for (name,) in self.db.execute(tables)}
        try:
            for table, columns in _MERGED.items():
                if table not in there:
                    continue
                names = ", ".join((*columns, "checksum"))
                insert = (f"INSERT OR IGNORE INTO main.{table} ({names}) "
                          f"VALUES ({','.join('?' * (len(columns) + 1))})")  # fmt: skip
                with self._transaction():
                    before = self.db.total_changes
                    rows = self.db.execute(f"SELECT {names} FROM other.{table}")
                    while chunk := rows.fetchmany(_MERGE_CHUNK):
                        valid = [row for row in chunk if checksum(row[:-1]) == row[-1]]
                        self.db.executemany(insert, valid)
                    added[table] = self.db.total_changes - before
        finally:
            with self._errors("merge into"):
                self.db.execute("DETACH DATABASE other")
        return added

    def counts(self) -> dict[str, int]:
        with self._errors("read"):
            (ratings,) = self.db.execute("SELECT COUNT(*) FROM ratings").fetchone()
            (segmentations,) = self.db.execute("SELECT COUNT(*) FROM segmentations").fetchone()
        return {"ratings": ratings, "segmentations": segmentations}

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE takes the write lock up front, so concurrent writers queue."""
        with self._errors("write to"):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if self.db.in_transaction:  # SQLite rolls back by itself on some errors
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        if time.monotonic() - self.checkpointed > CHECKPOINT_SECONDS:
            self.checkpoint()

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """sqlite3 errors as one line naming the file and what to do."""
        try:
            yield
        except sqlite3.DatabaseError as error:
            read_only = _read_only(Path(self.path)) if self.path != ":memory:" else None
            advice = (
                f"{read_only}: make it writable or pass another --store"
                if read_only
                else _advice(error)
            )
            raise StoreError(f"{self.path}: cannot {doing} the store ({advice})") from None


def _rating(
    blob: bytes,
    other: float | None,
    value: int | None,
    incomplete: int,
    top_ids: bytes | None = None,
    top_logits: bytes | None = None,
    lse: float | None = None,
) -> Rating:
    logprobs = np.frombuffer(blob, dtype="<f8").copy() if len(blob) % 8 == 0 else np.array([])
    top = {}
    whole = top_ids is not None and top_logits is not None and not len(top_ids) % 4
    if whole and not len(top_logits) % 4:
        top = dict(
            top_ids=np.frombuffer(top_ids, dtype="<i4").astype(np.int64),
            top_logits=np.frombuffer(top_logits, dtype="<f4").copy(),
            lse=math.nan if lse is None else lse,
        )
    return Rating(logprobs, math.nan if other is None else other, value, bool(incomplete), **top)


def _read_only(file: Path) -> str | None:
    """Why SQLite cannot write the store, if the file system says: a read-only mount, a
    read-only file, or a folder where it cannot create the -wal and -shm files beside it."""
    folder = file.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except OSError:
        return None
    if file.exists() and not os.access(file, os.W_OK):
        return "the file is read-only"
    if not os.access(folder, os.W_OK):
        return f"its folder {folder} is read-only (SQLite writes -wal and -shm files there)"
    return None


def _advice(error: sqlite3.DatabaseError) -> str:
    text = str(error)
    if "readonly" in text or "read-only" in text:
        return f"{text}: make it writable or pass another --store"
    if "full" in text:
        return f"{text}: free disk space, then rerun; everything committed is kept"
    if "malformed" in text or "not a database" in text:
        return f"{text}: the file is damaged; move it away or pass another --store"
    if "locked" in text:
        return f"{text}: another process holds it; retry when it is done"
    if "disk I/O" in text:
        return (
            f"{text}: if its -wal file was deleted or moved while an llmiqa used the store, "
            "stop that process, move the -shm file beside the store away too, and rerun "
            "(what only the lost -wal held is rated again)"
        )
    return text
