"""A collection's inputs as shards: every form a user names, in order, each input with a
stable id, each shard with a key and a fingerprint that follows its files."""

import os
import pickle
import shutil
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmiqa.errors import UsageError
from llmiqa.inputs import shards as shards_module
from llmiqa.inputs.shards import read, shards


@pytest.fixture
def collection(tmp_path, real_images):
    """A folder with a subfolder, a list file, two tar shards and a Parquet file."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for photo in real_images[:2]:
        shutil.copy(photo, folder / photo.name)
    shutil.copy(real_images[2], folder / "sub" / real_images[2].name)
    (tmp_path / "list.txt").write_text(f"# two photos\nphotos/{real_images[0].name}\n\n"
                                       f"{real_images[3]}\n")  # fmt: skip
    for n in range(2):
        with tarfile.open(tmp_path / f"shard-{n}.tar", "w") as archive:
            archive.add(real_images[n], arcname=f"s{n}.png")
    table = pa.table({"image": [p.read_bytes() for p in real_images[:3]]})
    pq.write_table(table, tmp_path / "rows.parquet", row_group_size=2)
    return tmp_path


def ids(expanded) -> list[str]:
    return [item.id for shard in expanded.shards for item in read(shard, pytest.fail)]


def test_every_input_form_in_the_order_given(collection, real_images):
    root = str(collection)
    expanded = shards([f"{root}/photos", f"{root}/list.txt", f"{root}/shard-{{0..1}}.tar",
                       f"{root}/rows.parquet"], recursive=True)  # fmt: skip
    assert [s.kind for s in expanded.shards] == ["files", "tar", "tar", "parquet", "parquet"]
    listed = [f"{root}/photos/{real_images[0].name}", str(real_images[3])]
    folder = sorted([f"{root}/photos/{p.name}" for p in real_images[:2]]
                    + [f"{root}/photos/sub/{real_images[2].name}"])  # fmt: skip
    assert ids(expanded) == [
        *folder, str(real_images[3]),  # the list's first photo is the folder's: once
        f"{root}/shard-0.tar#s0.png", f"{root}/shard-1.tar#s1.png",
        *(f"{root}/rows.parquet#{row}" for row in range(3)),
    ]  # fmt: skip
    assert expanded.repeated == [listed[0]]
    assert pickle.loads(pickle.dumps(expanded.shards)) == expanded.shards  # to a worker
    keys = [s.key for s in expanded.shards]
    assert len(set(keys)) == len(keys) and all("/" not in k for k in keys)


def test_keys_are_stable_and_fingerprints_follow_the_files(collection):
    first = shards([str(collection / "photos"), str(collection / "shard-0.tar")]).shards
    assert shards([str(collection / "photos"), str(collection / "shard-0.tar")]).shards == first
    tar = collection / "shard-0.tar"
    os.utime(tar, ns=(0, 0))
    again = shards([str(collection / "photos"), str(tar)]).shards
    assert [s.key for s in again] == [s.key for s in first]
    assert again[0].fingerprint == first[0].fingerprint
    assert again[1].fingerprint != first[1].fingerprint  # a changed tar: not its old part


def test_files_are_cut_into_shards_of_a_thousand(collection, monkeypatch, real_images):
    monkeypatch.setattr(shards_module, "FILES_PER_SHARD", 2)
    expanded = shards([str(p) for p in real_images[:5]])
    assert [len(s.files) for s in expanded.shards] == [2, 2, 1]


def test_what_stops_a_run_before_work_is_one_line(tmp_path, collection):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no image files in this folder"):
        shards([str(tmp_path / "empty")])
    (tmp_path / "none.txt").write_text("# nothing\n")
    with pytest.raises(UsageError, match="no inputs in"):
        shards([str(tmp_path / "none.txt")])


def test_a_missing_file_is_left_to_its_shard(collection):
    """Named but absent: a failed input (a path) or a damaged shard, never dropped."""
    expanded = shards([str(collection / "gone.png"), str(collection / "gone.tar"),
                       str(collection / "gone.parquet")])  # fmt: skip
    damage = []
    items = [i for s in expanded.shards for i in read(s, damage.append)]
    assert [i.id for i in items] == [str(collection / "gone.png")]
    assert len(damage) == 2 and "gone.tar" in damage[0] and "gone.parquet" in damage[1]
