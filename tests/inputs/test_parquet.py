"""Parquet files of images through pyarrow: bytes, image structs or paths, one row group
at a time; a column that cannot be told is one line, an unreadable file a damaged shard."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmiqa.errors import UsageError
from llmiqa.inputs.images import Encoded, load_encoded
from llmiqa.inputs.parquet import Unreadable, layout, read_group


@pytest.fixture
def photos_bytes(real_images) -> list[bytes]:
    return [p.read_bytes() for p in real_images[:3]]


def test_bytes_are_read_by_row_group_with_rows_counted_over_the_file(tmp_path, photos_bytes):
    file = tmp_path / "images.parquet"
    pq.write_table(pa.table({"label": [1, 2, 3], "jpg": photos_bytes}), file, row_group_size=2)
    where = layout(str(file), None)  # the sole binary column
    assert (where.column, where.holds, where.starts) == ("jpg", "bytes", (0, 2))
    second = list(read_group(str(file), 1, where.starts[1], where.column))
    assert second == [(f"{file}#2", Encoded(f"{file}#2", photos_bytes[2]))]
    assert load_encoded(second[0][1]).digest


def test_image_structs_give_bytes_or_else_their_path(tmp_path, photos_bytes, real_images):
    """As Hugging Face datasets store an Image: {bytes, path}."""
    file = tmp_path / "hf.parquet"
    images = [
        {"bytes": photos_bytes[0], "path": None},
        {"bytes": None, "path": str(real_images[1])},
        {"bytes": None, "path": None},
    ]
    pq.write_table(pa.table({"image": images, "text": ["a", "b", "c"]}), file)
    where = layout(str(file), None)
    assert where.column == "image"
    rows = list(read_group(str(file), 0, 0, "image"))
    assert rows[0][1].data == photos_bytes[0] and rows[1][1] == str(real_images[1])
    assert rows[2][1].problem == f"{file}#2: no image in column image (empty)"


def test_a_path_column_is_relative_to_the_files_folder(tmp_path, real_images):
    (tmp_path / "a.png").write_bytes(real_images[0].read_bytes())
    file = tmp_path / "paths.parquet"
    pq.write_table(pa.table({"file": ["a.png"], "caption": ["x"]}), file)
    with pytest.raises(UsageError, match=r"give --image-col \(columns: file \(string\), capt"):
        layout(str(file), None)  # two string columns: which?
    assert layout(str(file), "file").holds == "path"
    assert list(read_group(str(file), 0, 0, "file")) == [(f"{file}#0", str(tmp_path / "a.png"))]


def test_a_wrong_column_and_an_unreadable_file_are_one_line(tmp_path):
    file = tmp_path / "t.parquet"
    pq.write_table(pa.table({"n": [1]}), file)
    with pytest.raises(UsageError, match=r"--image-col n: neither bytes nor paths \(columns: n\)"):
        layout(str(file), "n")
    with pytest.raises(UsageError, match="--image-col img: no such column"):
        layout(str(file), "img")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(file.read_bytes()[:-20])
    with pytest.raises(Unreadable, match=f"{broken}: not a readable Parquet file"):
        layout(str(broken), None)
