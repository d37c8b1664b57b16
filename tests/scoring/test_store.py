"""The SQLite store: round trips, validation of what is read back, damaged and locked files,
several processes on one file."""

import math
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from llmiqa.method.regions import View
from llmiqa.method.standards import IMAGE, Prompt
from llmiqa.raters.base import Canary, Rating, RatingRequest
from llmiqa.scoring.store import Store, StoreError, pack_masks, unpack_masks

PROMPT = Prompt("standard", f"{IMAGE} score it")
TABLES = ("ratings", "segmentations", "directions")


def key(
    n: int, model: str = "m@1", levels: int = 4, prompt: Prompt = PROMPT, view: View = View()
) -> RatingRequest:
    """A request for image n (no pixels: the store needs none)."""
    return RatingRequest(
        model=model, image=f"image{n}", size=(10, 10), view=view, prompt=prompt, levels=levels
    )


@pytest.fixture
def good(rating) -> Rating:
    return rating([0.1, 0.2, 0.3, 0.4], other_logprob=math.log(0.25), other_value=8)


def test_ratings_round_trip_exactly(tmp_path, good):
    store = Store(tmp_path / "s.sqlite")
    store.put_rating(key(1), good)
    found, refused = Store(tmp_path / "s.sqlite").ratings([key(1), key(2)])
    assert list(found) == [key(1).key] and refused == []
    again = found[key(1).key]
    np.testing.assert_array_equal(again.logprobs, good.logprobs)
    assert (again.other_logprob, again.other_value, again.incomplete) == (math.log(0.25), 8, False)
    np.testing.assert_allclose(again.probs(), [0.1, 0.2, 0.3, 0.4])


def test_every_part_of_the_key_matters(good):
    store = Store()
    store.put_rating(key(1), good)
    variants = [
        key(1, model="m@2"),
        key(1, prompt=Prompt("other standard", f"{IMAGE} score it")),
        key(1, levels=5),
        key(1, view=View((0, 0, 5, 5))),
        key(2),
    ]
    assert store.ratings(variants) == ({}, [])


@pytest.mark.parametrize(
    ("logprobs", "other", "why"),
    [
        ([math.nan, -1.0, -2.0, -3.0], -4.0, "NaN"),
        ([0.5, -1.0, -2.0, -3.0], -4.0, "above 0"),
        ([-0.1, -0.1, -2.0, -3.0], -4.0, "summing to"),  # the digits alone exceed 1
        ([-np.inf] * 4, -0.1, "probability 0"),
        ([-1.0, -2.0, -3.0], -4.0, "3 digit log-probabilities for K = 4"),
        ([-2.0, -2.0, -2.0, -2.0], math.nan, "best other token"),
    ],
)
def test_rows_that_cannot_be_a_models_rating_are_refused_and_replaced(logprobs, other, why, good):
    store = Store()
    bad = Rating(np.array(logprobs), other, None)
    store.put_rating(key(1), bad)
    found, refused = store.ratings([key(1)])
    assert found == {} and len(refused) == 1 and why in refused[0]
    store.put_rating(key(1), good)  # rated again: the bad row is replaced
    assert list(store.ratings([key(1)])[0]) == [key(1).key]


def test_an_incomplete_rating_is_kept_as_such():
    store = Store()
    partial = Rating(np.array([-1.0, math.nan, -2.0, -3.0]), math.nan, None, incomplete=True)
    store.put_rating(key(1), partial)
    found, _ = store.ratings([key(1)])
    assert found[key(1).key].incomplete and np.isnan(found[key(1).key].logprobs[1])


def test_lookups_of_many_keys_are_chunked(rating):
    store = Store()
    for n in range(1200):
        store.put_rating(key(n), rating([0.25] * 4))
    found, _ = store.ratings([key(n) for n in range(1300)])
    assert len(found) == 1200


def test_masks_round_trip_through_packed_bits(tmp_path):
    rng = np.random.default_rng(0)
    masks = [rng.random((37, 53)) > 0.5 for _ in range(3)]
    restored = unpack_masks(pack_masks(masks), 3, 37, 53)
    assert all((a == b).all() for a, b in zip(masks, restored, strict=True))
    store = Store(tmp_path / "s.sqlite")
    assert store.masks("img", "sam") == (None, None)
    store.put_masks("img", "sam", (37, 53), masks)
    store.put_masks("img2", "sam", (37, 53), [])
    stored, refused = store.masks("img", "sam")
    assert all((a == b).all() for a, b in zip(masks, stored, strict=True)) and refused is None
    assert store.masks("img2", "sam") == ([], None)
    assert store.masks("img", "another segmenter") == (None, None)


# ---- checksums: a changed byte anywhere is caught ---------------------------------------


def with_top(rating: Rating, n: int = 5) -> Rating:
    """The rating with n top raw logits (ids 10.., descending) and their log-sum-exp."""
    logits = np.linspace(2.0, 1.0, n, dtype=np.float32)
    lse = float(np.logaddexp.reduce(logits.astype(np.float64))) + 1.0
    return replace(rating, top_ids=np.arange(10, 10 + n), top_logits=logits, lse=lse)


def test_top_raw_logits_round_trip_exactly_and_are_checked(tmp_path, good):
    store = Store(tmp_path / "s.sqlite")
    asked = replace(key(1), top=5)
    store.put_rating(asked, with_top(good))
    again = Store(tmp_path / "s.sqlite").ratings([asked])[0][asked.key]
    np.testing.assert_array_equal(again.top_ids, np.arange(10, 15))
    np.testing.assert_array_equal(again.top_logits, with_top(good).top_logits)
    assert again.lse == with_top(good).lse
    flip_byte(store, "ratings", "top_logits")
    found, refused = store.ratings([asked])
    assert found == {} and "checksum mismatch" in refused[0]


@pytest.mark.parametrize(
    ("change", "problem"),
    [(dict(top_ids=None, top_logits=None), "not the 5 top raw logits"),
     (dict(top_logits=np.float32([1, 2, 3, 4, 5])), "not in descending order"),
     (dict(lse=0.5), "above the log-sum-exp"),
     (dict(top_ids=np.array([10, 10, 11, 12, 13])), "repeated")],
)  # fmt: skip
def test_implausible_top_raw_logits_are_refused(good, change, problem):
    store, asked = Store(), replace(key(1), top=5)
    store.put_rating(asked, replace(with_top(good), **change))
    found, refused = store.ratings([asked])
    assert found == {} and problem in refused[0]


def test_sep_iqa_directions_are_kept_per_model_and_word_lists(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    cosines = np.linspace(-1, 1, 7, dtype=np.float32)
    store.put_direction("m@1", "good|bad", cosines)
    np.testing.assert_array_equal(
        Store(tmp_path / "s.sqlite").direction("m@1", "good|bad"), cosines
    )
    assert store.direction("m@2", "good|bad") is None
    assert store.direction("m@1", "fine|bad") is None
    flip_byte(store, "directions", "cosines")
    assert store.direction("m@1", "good|bad") is None  # damaged: computed again


def test_a_servers_canary_is_kept_once_per_identity_and_travels_with_the_file(tmp_path, good):
    store = Store(tmp_path / "s.sqlite")
    assert store.canary("server:m") is None
    incomplete = replace(good, other_logprob=math.nan, incomplete=True)
    store.put_canary("server:m", Canary(incomplete, "fp-1"))
    store.put_canary("server:m", Canary(good, "fp-2"))  # the first one recorded stays
    copied = tmp_path / "elsewhere.sqlite"
    store.db.execute(f"VACUUM INTO '{copied}'")  # the store copied to another machine
    back = Store(copied).canary("server:m")
    np.testing.assert_array_equal(back.rating.logprobs, good.logprobs)
    assert math.isnan(back.rating.other_logprob) and back.fingerprint == "fp-1"
    assert back.distance(Canary(incomplete)) == 0 and Store().canary("server:m") is None


@pytest.mark.parametrize("column", ["logprobs", "other_logprob", "fingerprint"])
def test_a_damaged_canary_is_refused_in_one_line_not_trusted(tmp_path, good, column):
    store = Store(tmp_path / "s.sqlite")
    store.put_canary("server:m", Canary(good, "fp-1"))
    flip_byte(store, "canaries", column)
    with pytest.raises(StoreError, match="canary recorded for server:m is damaged") as caught:
        store.canary("server:m")
    assert str(tmp_path / "s.sqlite") in str(caught.value) and "\n" not in str(caught.value)


def flip_byte(store: Store, table: str, column: str, at: int = 3) -> None:
    """Change one byte of one value in place, as a disk or a careless edit would."""
    (value,) = store.db.execute(f"SELECT {column} FROM {table} LIMIT 1").fetchone()
    raw = bytearray(value if isinstance(value, bytes) else str(value).encode())
    raw[at] ^= 0x01
    new = bytes(raw) if isinstance(value, bytes) else raw.decode()
    store.db.execute(f"UPDATE {table} SET {column} = ?", (new,))


def test_a_plausible_change_to_a_stored_log_probability_is_refused(good):
    """The sweep's case: one byte of a log-probability changed gives another valid-looking
    rating (3.939809 -> 3.939792); the checksum refuses it, and the rerun replaces it."""
    store = Store()
    store.put_rating(key(1), good)
    (blob,) = store.db.execute("SELECT logprobs FROM ratings").fetchone()
    changed = np.frombuffer(blob, "<f8").copy()
    changed[2] = -3.0  # a plausible value: probabilities still sum below 1
    store.db.execute("UPDATE ratings SET logprobs = ?", (changed.tobytes(),))
    found, refused = store.ratings([key(1)])
    assert found == {} and "checksum mismatch" in refused[0] and key(1).key in refused[0]
    store.put_rating(key(1), good)
    assert list(store.ratings([key(1)])[0]) == [key(1).key]


@pytest.mark.parametrize("column", ["other_logprob", "prompt", "model", "geometry", "levels"])
def test_any_changed_value_of_a_rating_row_is_refused(good, column):
    store = Store()
    store.put_rating(key(1), good)
    if column == "other_logprob":
        store.db.execute("UPDATE ratings SET other_logprob = other_logprob + 1e-9")
    elif column == "levels":
        store.db.execute("UPDATE ratings SET levels = 4")  # same value, rewritten: still fine
        assert store.ratings([key(1)])[0]
        store.db.execute("UPDATE ratings SET levels = 5")
    else:
        flip_byte(store, "ratings", column, at=0)
    found, refused = store.ratings([key(1)])
    assert found == {} and len(refused) == 1


def test_a_damaged_key_is_a_refused_row_not_an_internal_error(tmp_path, good):
    """One changed byte of a row's key text in the file, in the table or in its index: never
    an internal error (the sweep's SQLite read the table's damaged key for a row its index
    found, and every rerun stopped on a KeyError). The row is served intact where SQLite
    reads the key from its index, refused where it reads the table's, missing where the
    index itself is damaged; a rerun writes it again."""
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.put_rating(key(1), good)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    pristine = path.read_bytes()
    text = key(1).key.encode()
    places = [i for i in range(len(pristine)) if pristine.startswith(text, i)]
    assert len(places) == 2  # the row, and its primary-key index entry
    for place in places:
        damaged = bytearray(pristine)
        damaged[place + 5] ^= 0x01
        path.write_bytes(bytes(damaged))
        store = Store(path)
        found, refused = store.ratings([key(1)])
        for rating in found.values():  # served: then exactly the rating written
            np.testing.assert_array_equal(rating.logprobs, good.logprobs)
        assert all("refused" in reason for reason in refused)
        store.put_rating(key(1), good)  # the rerun writes the row again
        assert key(1).key in store.ratings([key(1)])[0]
        store.close()


def test_damaged_masks_are_refused_with_a_reason_and_computed_again(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.put_masks("img", "sam", (8, 8), [np.eye(8, dtype=bool)])
    flip_byte(store, "segmentations", "masks")
    masks, refused = store.masks("img", "sam")
    assert masks is None and "checksum mismatch" in refused and "img" in refused


def test_a_schema_2_store_gets_checksums_once_and_keeps_its_rows(tmp_path, good):
    """Stores written before checksums are upgraded in place, in one transaction."""
    path = tmp_path / "old.sqlite"
    Store(path).put_rating(key(1), good)
    back_to_schema_3(path)
    with sqlite3.connect(path) as db:  # back to schema 2: no checksum column
        db.execute("ALTER TABLE ratings DROP COLUMN checksum")
        db.execute("ALTER TABLE segmentations DROP COLUMN checksum")
        db.execute("UPDATE meta SET value = '2' WHERE name = 'schema'")
    upgraded = Store(path)
    assert "upgraded to store schema 3" in upgraded.notes[0] and "1 ratings" in upgraded.notes[0]
    assert "upgraded to store schema 4" in upgraded.notes[1]
    assert list(upgraded.ratings([key(1)])[0]) == [key(1).key]
    assert Store(path).notes == []  # once
    flip_byte(upgraded, "ratings", "logprobs")
    assert upgraded.ratings([key(1)])[0] == {}  # and checked from then on


def back_to_schema_3(path) -> None:
    """The store as llmiqa 0.2 wrote it: no top raw logits, no SeP-IQA directions."""
    back_to_schema_4(path)
    with sqlite3.connect(path) as db:
        for column in ("top_ids", "top_logits", "lse"):
            db.execute(f"ALTER TABLE ratings DROP COLUMN {column}")
        db.execute("DROP TABLE directions")
        db.execute("UPDATE meta SET value = '3' WHERE name = 'schema'")


def back_to_schema_4(path) -> None:
    """The store before it kept servers' canaries."""
    back_to_schema_5(path)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE canaries")
        db.execute("UPDATE meta SET value = '4' WHERE name = 'schema'")


def test_a_schema_4_store_keeps_every_row_and_checksum_and_takes_canaries(tmp_path, good):
    path = tmp_path / "v4.sqlite"
    store = Store(path)
    store.put_rating(replace(key(1), top=5), with_top(good))
    store.put_masks("img", "sam", (8, 8), [np.eye(8, dtype=bool)])
    store.put_direction("m@1", "good|bad", np.linspace(-1, 1, 7, dtype=np.float32))
    before = {t: store.db.execute(f"SELECT * FROM {t}").fetchall() for t in TABLES}
    back_to_schema_4(path)
    upgraded = Store(path)
    assert upgraded.notes[0] == (
        f"{path}: upgraded to store schema 5 (it keeps servers' canaries beside their "
        "ratings); its rows are unchanged"
    )
    assert {t: upgraded.db.execute(f"SELECT * FROM {t}").fetchall() for t in TABLES} == before
    assert list(upgraded.ratings([replace(key(1), top=5)])[0]) == [replace(key(1), top=5).key]
    assert upgraded.masks("img", "sam")[1] is None  # checksums hold
    upgraded.put_canary("server:m", Canary(good))
    assert Store(path).canary("server:m") is not None and Store(path).notes == []  # once


def test_a_schema_3_store_keeps_its_rows_and_checksums_and_takes_top_logits(tmp_path, good):
    path = tmp_path / "v3.sqlite"
    Store(path).put_rating(key(1), good)
    back_to_schema_3(path)
    upgraded = Store(path)
    assert "upgraded to store schema 4" in upgraded.notes[0]
    assert list(upgraded.ratings([key(1)])[0]) == [key(1).key]  # its checksum still holds
    flip_byte(upgraded, "ratings", "logprobs")
    assert upgraded.ratings([key(1)])[0] == {}
    assert Store(path).notes == []  # once


def back_to_schema_5(path) -> None:
    """The store before the content digest changed (blake2b to xxh3)."""
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE legacy_images")
        db.execute("DROP TABLE aliases")
        db.execute("UPDATE meta SET value = '5' WHERE name = 'schema'")


def test_a_schema_5_stores_rows_move_to_the_new_digests_as_their_images_are_seen(tmp_path, good):
    """Rows keyed by an old digest are served under the new one once the image's alias is
    recorded, and moved there (checksums valid, the old row gone); the other images' rows
    wait, untouched, for their images."""
    path = tmp_path / "v5.sqlite"
    store = Store(path)
    for n in (1, 2):
        store.put_rating(replace(key(n), top=5), with_top(good))
        store.put_masks(f"image{n}", "sam", (8, 8), [np.eye(8, dtype=bool)])
    store.close()
    back_to_schema_5(path)
    upgraded = Store(path)
    assert "upgraded to store schema 6: the ratings and masks of its 2 images" in upgraded.notes[0]
    new = replace(key(1), image="new1", top=5)
    assert upgraded.legacy_left() and upgraded.ratings([new])[0] == {}  # no alias yet
    upgraded.alias({"new1": "image1", "new9": "image9"})  # image9: no rows, no alias
    assert upgraded.segmented(["new1", "new2"], "sam") == {"new1"}
    assert list(upgraded.ratings([new])[0]) == [new.key]
    assert upgraded.masks("new1", "sam")[0][0].tolist() == np.eye(8, dtype=bool).tolist()
    again = Store(path)
    assert again.notes == [] and again.legacy_left()  # image2 not seen yet
    found, refused = again.ratings([new])  # moved, and its checksum holds
    assert refused == [] and found[new.key].top_logits.tolist() == [2.0, 1.75, 1.5, 1.25, 1.0]
    assert again.masks("new1", "sam")[1] is None
    images = {row[0] for row in again.db.execute("SELECT image FROM ratings")}
    assert images == {"new1", "image2"}
    assert {row[0] for row in again.db.execute("SELECT image FROM segmentations")} == images
    again.alias({"new2": "image2"})
    assert not again.legacy_left() and list(again.ratings([replace(new, image="new2")])[0])


# ---- the file itself --------------------------------------------------------------------


def test_a_store_written_by_llmiqa_0_1_is_refused_with_what_to_do(tmp_path):
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE ratings (key TEXT PRIMARY KEY, probs BLOB)")
    with pytest.raises(StoreError, match=r"llmiqa 0\.1.*cannot be migrated.*another --store"):
        Store(old)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"this is not a database at all" * 100, "not a database"),
     (b"SQLite format 3\x00" + b"\x01" * 4000, "damaged|malformed|not a database")],
)  # fmt: skip
def test_a_damaged_store_is_one_line_naming_the_file(tmp_path, content, message):
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(content)
    with pytest.raises(StoreError, match=message) as error:
        Store(damaged)
    assert str(damaged) in str(error.value) and "\n" not in str(error.value)


def test_an_empty_file_becomes_a_new_store_and_says_so(tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    store = Store(empty)
    assert store.counts() == {"ratings": 0, "segmentations": 0}
    assert "empty file, used as a new store" in store.notes[0]


def test_a_folder_is_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="is a folder"):
        Store(tmp_path)


def test_a_read_only_store_is_found_before_any_work(tmp_path, good):
    """A query_only connection refuses writes as a read-only file does (even to root)."""
    store = Store(tmp_path / "s.sqlite")
    store.db.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreError, match=r"readonly.*make it writable or pass another --store"):
        store.check_writable()
    with pytest.raises(StoreError, match="readonly"):
        store.put_rating(key(1), good)


def test_a_full_disk_inside_a_commit_names_the_store_and_keeps_what_was_committed(rating):
    store = Store()
    store.put_rating(key(0), rating([0.25] * 4))
    (pages,) = store.db.execute("PRAGMA page_count").fetchone()
    store.db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now full
    with pytest.raises(StoreError, match=r"full.*free disk space.*committed is kept"):
        for n in range(1, 500):
            store.put_masks(
                f"img{n}", "sam", (64, 64), [np.random.default_rng(n).random((64, 64)) > 0.5]
            )
    assert list(store.ratings([key(0)])[0]) == [key(0).key]


WRITER = """
import sys, numpy as np
from llmiqa.raters.base import Canary, Rating, RatingRequest
from llmiqa.method.regions import View
from llmiqa.method.standards import Prompt
from llmiqa.scoring.store import Store
store = Store(sys.argv[1])
who = sys.argv[2]
for n in range(150):
    names = [f"{who}-{n}-{i}" for i in range(3)] + [f"shared-{n}"]
    for name in names:
        request = RatingRequest(model="m", image=name, size=(1, 1), view=View(),
                                prompt=Prompt(None, "<image>"), levels=2)
        store.put_rating(request, Rating(np.log([0.5, 0.25]), np.log(0.25), None))
"""


def test_several_processes_opening_a_new_store_at_once_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite"  # not created beforehand: the WAL switch races
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), who]) for who in "abc"]
    assert [w.wait(timeout=180) for w in writers] == [0, 0, 0]
    store = Store(path)
    assert store.counts()["ratings"] == 3 * 150 * 3 + 150
    (integrity,) = store.db.execute("PRAGMA integrity_check").fetchone()
    assert integrity == "ok"


def test_a_store_on_a_read_only_file_system_says_so(tmpfs, good):
    """The sweep's case: "cannot open the store (unable to open database file)"."""
    import subprocess

    folder = tmpfs("1m")
    store = Store(folder / "s.sqlite")
    store.put_rating(key(1), good)
    store.close()
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    with pytest.raises(StoreError, match="read-only file system: make it writable") as error:
        Store(folder / "s.sqlite").check_writable()
    assert str(folder / "s.sqlite") in str(error.value) and "\n" not in str(error.value)


def test_the_store_records_which_llmiqa_writes_to_it(tmp_path):
    from llmiqa import __version__

    store = Store(tmp_path / "s.sqlite")
    store.check_writable()
    (written,) = store.db.execute("SELECT value FROM meta WHERE name = 'llmiqa'").fetchone()
    assert written == __version__


# ---- the main file alone: a store copied without its -wal --------------------------------


def test_ratings_checkpointed_before_a_kill_outlive_a_lost_wal_file(tmp_path):
    """A process commits, checkpoints, commits more and is killed; its -wal and -shm files
    are then lost (deleted, or left out of a copy): what came before the checkpoint is in
    the main file."""
    path = tmp_path / "store.sqlite"
    child = (
        "import math, os, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_store import key\n"
        "from llmiqa.raters.base import Rating\n"
        "from llmiqa.scoring.store import Store\n"
        f"store = Store({str(path)!r})\n"
        "good = Rating(__import__('numpy').log([0.1, 0.2, 0.3, 0.3]), math.log(0.05), 8)\n"
        "for n in range(3):\n    store.put_rating(key(n), good)\n"
        "store.checkpoint()\n"
        "for n in range(3, 5):\n    store.put_rating(key(n), good)\n"
        "os._exit(0)  # killed: no close, no final checkpoint\n"
    )
    subprocess.run([sys.executable, "-c", child], check=True)
    for lost in ("store.sqlite-wal", "store.sqlite-shm"):
        (tmp_path / lost).unlink()
    found, refused = Store(path).ratings([key(n) for n in range(5)])
    assert {key(n).key for n in range(3)} <= set(found) and refused == []


def test_long_runs_checkpoint_on_their_own_and_a_copy_of_the_main_file_has_them(
    tmp_path, good, monkeypatch
):
    store = Store(tmp_path / "store.sqlite")
    store.put_rating(key(1), good)
    monkeypatch.setattr(store, "checkpointed", store.checkpointed - 3600)  # an hour on
    store.put_rating(key(2), good)  # commits past CHECKPOINT_SECONDS checkpoint
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes((tmp_path / "store.sqlite").read_bytes())  # no -wal beside it
    found, _ = Store(copy).ratings([key(1), key(2)])
    assert set(found) == {key(1).key, key(2).key}


def test_a_wal_file_deleted_under_a_running_store_is_one_line_saying_what_to_do(tmp_path, good):
    store = Store(tmp_path / "store.sqlite")
    store.put_rating(key(1), good)
    (tmp_path / "store.sqlite-wal").unlink()  # while `store` still uses it
    with pytest.raises(StoreError, match=r"disk I/O error.*-wal file was deleted.*-shm") as error:
        Store(tmp_path / "store.sqlite")
    assert "\n" not in str(error.value)


def test_merge_adds_the_valid_rows_another_store_has_and_leaves_damaged_ones(
    tmp_path, good, rating
):
    """How a Ray driver gathers its workers' stores: rows it lacks, checksums checked."""
    main, other = Store(tmp_path / "main.sqlite"), Store(tmp_path / "other.sqlite")
    main.put_rating(key(0), good)
    other.put_rating(key(0), rating([0.4, 0.3, 0.2, 0.1]))  # the same key: main's stays
    other.put_rating(key(1), good)
    other.put_rating(key(2), good)
    other.put_masks("image1", "sam", (2, 3), [np.ones((2, 3), dtype=bool)])
    other.put_direction("m@1", "good\x1fbad", np.ones(5))
    other.db.execute("UPDATE ratings SET levels = 5 WHERE key = ?", (key(2).key,))  # damaged
    other.close()
    added = main.merge(tmp_path / "other.sqlite")
    assert added == {"ratings": 1, "segmentations": 1, "directions": 1, "canaries": 0}
    found, refused = main.ratings([key(0), key(1), key(2)])
    assert sorted(found) == sorted([key(0).key, key(1).key]) and refused == []
    assert np.allclose(found[key(0).key].logprobs, good.logprobs)
    assert main.segmented(["image1"], "sam") == {"image1"}
    assert main.direction("m@1", "good\x1fbad") is not None
    assert main.merge(tmp_path / "other.sqlite")["ratings"] == 0  # merging twice adds nothing
    sqlite3.connect(tmp_path / "bare.sqlite").close()  # a worker killed before its tables
    assert main.merge(tmp_path / "bare.sqlite") == dict.fromkeys(added, 0)
