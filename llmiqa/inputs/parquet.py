"""Parquet files of images, read with pyarrow one row group at a time (bounded memory).

The image column holds each image's encoded bytes (binary, or a struct with a `bytes`
field, as Hugging Face datasets store an Image), or a path to the image file (relative to
the Parquet file's folder). `--image-col` names it; without it, the sole binary or
image-struct column, else one named `image`, is taken, and anything else is one line
naming the columns there are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from llmiqa.errors import UsageError, one_line
from llmiqa.inputs.images import Encoded


class Unreadable(ValueError):
    """A file that is no readable Parquet file: a damaged shard, not a failed run."""


@dataclass(frozen=True)
class Layout:
    """Where a Parquet file's images are: its row groups' first rows and the column."""

    column: str
    holds: str  # "bytes" (binary or struct.bytes) or "path"
    starts: tuple[int, ...]  # the first row of each row group
    rows: int  # rows in the file


def _kind(field: pa.Field) -> str | None:
    kind = field.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "bytes"
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
        return "bytes"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "path"
    return None


def layout(source: str, image_col: str | None, flag: str = "--image-col") -> Layout:
    """The file's image column and row groups, from its footer alone (no data read);
    Unreadable for a file that is no Parquet file, one UsageError for one without a
    usable image column (`flag`: the option that names it, on this command)."""
    try:
        metadata = pq.ParquetFile(source).metadata
        schema = metadata.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as error:
        raise Unreadable(f"{source}: not a readable Parquet file ({one_line(error)})") from None
    fields = {field.name: _kind(field) for field in schema}
    if image_col is not None:
        if fields.get(image_col) is None:
            what = "no such column" if image_col not in fields else "neither bytes nor paths"
            raise UsageError(f"{source}: {flag} {image_col}: {what} (columns: "
                             f"{', '.join(fields)})")  # fmt: skip
        column = image_col
    else:
        binary = [name for name, kind in fields.items() if kind == "bytes"]
        if len(binary) == 1:
            column = binary[0]
        elif fields.get("image"):
            column = "image"
        else:
            raise UsageError(
                f"{source}: which column holds the images? give {flag} (columns: "
                f"{', '.join(f'{n} ({schema.field(n).type})' for n in fields)})"
            )
    starts, row = [], 0
    for group in range(metadata.num_row_groups):
        starts.append(row)
        row += metadata.row_group(group).num_rows
    return Layout(column, fields[column], tuple(starts), row)


def read_group(
    source: str, group: int, first: int, column: str
) -> Iterator[tuple[str, str | Encoded]]:
    """Row group `group`'s images as (id, image): the id `source#row` (rows counted from 0
    over the whole file), the image as Encoded bytes or the path a path column gives
    (an image struct without bytes: its path). OSError or ArrowException when the group
    cannot be read (a damaged file)."""
    table = pq.ParquetFile(source).read_row_group(group, columns=[column])
    folder = os.path.dirname(source)
    for offset, value in enumerate(table.column(0).to_pylist()):
        name = f"{source}#{first + offset}"
        if isinstance(value, dict):  # an image struct: its bytes, else its path
            value = value.get("bytes") or value.get("path")
        if value is None or value in (b"", ""):
            yield name, Encoded(name, b"", f"{name}: no image in column {column} (empty)")
        elif isinstance(value, str):
            yield name, os.path.join(folder, value)
        else:
            yield name, Encoded(name, value)
