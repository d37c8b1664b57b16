"""WebDataset tar shards read with tarfile: samples by key, the image by extension, and a
truncated or unreadable shard said in one line, never ended silently."""

import io
import tarfile

import pytest

from llmiqa.inputs.images import load_encoded
from llmiqa.inputs.tars import read_tar, split_key


def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.fixture
def shard(tmp_path, real_images):
    """Three samples: a PNG with a caption, a JPEG with a caption, and a caption alone."""
    path = tmp_path / "shard.tar"
    png = next(p for p in real_images if p.suffix == ".png")
    jpg = next(p for p in real_images if p.suffix.lower() == ".jpg")
    with tarfile.open(path, "w") as archive:
        add(archive, "a/000.txt", b"first")
        add(archive, "a/000.png", png.read_bytes())
        add(archive, "a/001.txt", b"second")
        add(archive, "a/001.seg.jpg", jpg.read_bytes())
        add(archive, "a/002.txt", b"no image")
    return path, png, jpg


def read_all(path) -> tuple[list, list[str]]:
    damage = []
    return list(read_tar(str(path), damage.append)), damage


def test_split_key_is_webdatasets():
    assert split_key("a/b.c.jpg") == ("a/b", "c.jpg")
    assert split_key("x.PNG") == ("x", "png")


def test_samples_are_grouped_by_key_and_their_image_taken_by_extension(shard):
    path, png, jpg = shard
    items, damage = read_all(path)
    assert damage == []
    assert [i.name for i in items] == [f"{path}#a/000.png", f"{path}#a/001.seg.jpg",
                                       f"{path}#a/002"]  # fmt: skip
    assert items[0].data == png.read_bytes() and items[1].data == jpg.read_bytes()
    assert load_encoded(items[0]).image.size == (512, 384)
    assert items[2].problem == f"{path}#a/002: no image member (has .txt)"  # failed, not gone


@pytest.mark.parametrize("cut", ["between members", "inside a member", "end marker"])
def test_a_truncated_shard_is_one_line_after_the_samples_before_it(shard, cut):
    path, _, _ = shard
    data = path.read_bytes()
    with tarfile.open(path) as archive:
        members = archive.getmembers()
    at = {
        "between members": members[2].offset,  # tarfile alone would end here, quietly
        "inside a member": members[3].offset_data + 100,
        "end marker": members[-1].offset_data + 512,  # the last member whole, no marker
    }[cut]
    path.write_bytes(data[:at])
    items, damage = read_all(path)
    kept = {"between members": 1, "inside a member": 1, "end marker": 3}[cut]
    assert len(items) == kept and all(i.problem is None for i in items[:1])
    (line,) = damage
    assert line.startswith(f"{path}: truncated or unreadable tar shard (")
    assert f"{kept} sample(s) read before it" in line and "\n" not in line


def test_an_empty_or_missing_shard_is_damage_not_a_crash(tmp_path):
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    for path in (empty, tmp_path / "missing.tar"):
        items, damage = read_all(path)
        assert items == [] and len(damage) == 1 and str(path) in damage[0]
    assert damage == [
        f"{tmp_path / 'missing.tar'}: cannot open this tar shard (No such file or directory)"
    ]
