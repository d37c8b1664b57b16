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
    gone = ["gone.png", "gone.tar", "gone.parquet", "gone{.png"]  # the last: no pattern
    expanded = shards([str(collection / name) for name in gone])
    damage = []
    items = [i for s in expanded.shards for i in read(s, damage.append)]
    assert [i.id for i in items] == [str(collection / n) for n in ("gone.png", "gone{.png")]
    assert len(damage) == 2 and "gone.tar" in damage[0] and "gone.parquet" in damage[1]


# ---- read_named: the images an eval's label file names, each container read once ----------


def named(ids, monkeypatch, image_col=None) -> tuple[list, dict[str, int]]:
    """read_named's (index, id or error) pairs, and how often each reader was started."""
    started = {"tar": 0, "group": 0}
    read_tar, read_group = shards_module.tars.read_tar, shards_module.parquet.read_group

    def counted(kind, reader):
        def wrapper(*args):
            started[kind] += 1
            yield from reader(*args)

        return wrapper

    monkeypatch.setattr(shards_module.tars, "read_tar", counted("tar", read_tar))
    monkeypatch.setattr(shards_module.parquet, "read_group", counted("group", read_group))
    found = []
    for index, image in shards_module.read_named(ids, image_col):
        if isinstance(image, str):
            found.append((index, image))
        else:
            found.append((index, image.problem or (image.name, image.data)))
    return found, started


def test_named_members_are_read_once_per_container_in_its_order(
    collection, monkeypatch, real_images
):
    tar0, tar1, rows = (str(collection / n) for n in ("shard-0.tar", "shard-1.tar", "rows.parquet"))
    photo = str(real_images[3])
    ids = [f"{rows}#2", f"{tar0}#s0.png", photo, f"{rows}#0", f"{tar1}#s1.png", f"{rows}#2"]
    found, started = named(ids, monkeypatch)
    data = [p.read_bytes() for p in real_images[:3]]
    assert dict(found) == {0: (f"{rows}#2", data[2]), 1: (f"{tar0}#s0.png", data[0]), 2: photo,
                           3: (f"{rows}#0", data[0]), 4: (f"{tar1}#s1.png", data[1]),
                           5: (f"{rows}#2", data[2])}  # fmt: skip
    # the Parquet file when it first comes up, its rows in file order; then the rest in turn
    assert [index for index, _ in found] == [3, 0, 5, 1, 2, 4]
    assert started == {"tar": 2, "group": 2}
    found, started = named([f"{rows}#2"], monkeypatch)
    assert found == [(0, (f"{rows}#2", data[2]))] and started["group"] == 1  # group 0 unread


def test_a_member_not_there_is_one_failed_image_naming_file_and_key(collection, monkeypatch):
    tar, rows = str(collection / "shard-0.tar"), str(collection / "rows.parquet")
    gone = str(collection / "gone.tar")
    ids = [f"{tar}#nokey.jpg", f"{tar}#s0.png", f"{rows}#7", f"{rows}#x", f"{gone}#a.jpg",
           f"{rows}#\u00b2"]  # fmt: skip
    found = dict(named(ids, monkeypatch)[0])
    assert found[0] == f"{tar}: no sample 'nokey' with an image 'nokey.jpg' in this tar"
    assert found[1][0] == f"{tar}#s0.png"
    assert found[2] == f"{rows}: no row 7 (the file has 3 rows, counted from 0)"
    assert found[3].startswith(f"{rows}#x: not a row number")
    assert found[5].startswith(f"{rows}#\u00b2: not a row number")  # a digit, not 0-9
    assert found[4] == f"{gone}: no such file"


def test_members_after_damage_fail_with_the_damage(collection, monkeypatch, real_images):
    tar = collection / "two.tar"
    with tarfile.open(tar, "w") as archive:
        for n in range(2):
            archive.add(real_images[n], arcname=f"s{n}.png")
    with tarfile.open(tar) as archive:
        cut = archive.getmembers()[1].offset_data + 100  # the second image cut short
    tar.write_bytes(tar.read_bytes()[:cut])
    found = dict(named([f"{tar}#s0.png", f"{tar}#s1.png"], monkeypatch)[0])
    assert found[0] == (f"{tar}#s0.png", real_images[0].read_bytes())
    assert "truncated or unreadable tar shard" in found[1] and str(tar) in found[1]
