"""A collection's inputs as shards: the unit of work a run scores, resumes and (issue 27)
hands to a worker.

What a user may name, for `llmiqa score` and `llmiqa eval` alike: image files; folders
(their images, tar and Parquet files; subfolders with `recursive`); a text file (.txt)
listing one path per line, relative to its own folder; WebDataset tar shards, also as
brace patterns (`shards/{000..099}.tar`, expanded with braceexpand); Parquet files
(--image-col). A shard is one tar file, one Parquet row group, or up to FILES_PER_SHARD
image files. Each input has a stable id: its path; `tar#member` for a tar sample's image;
`parquet#row` for a Parquet row. `read_named` reads the images a list of such ids names
(an eval's label file), each container once.

A Shard is plain, frozen, picklable data: its key names it in file names, and its
fingerprint (sizes and modification times) tells a changed input from the one an
earlier run scored.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from braceexpand import UnbalancedBracesError, braceexpand

from llmiqa.errors import UsageError, one_line
from llmiqa.inputs import parquet, tars
from llmiqa.inputs.images import IMAGE_SUFFIXES, Encoded, expand_inputs, once, path_problem

FILES_PER_SHARD = 1000
TAR, PARQUET, LIST = ".tar", ".parquet", ".txt"
FOLDER_SUFFIXES = frozenset(IMAGE_SUFFIXES | {TAR, PARQUET})


@dataclass(frozen=True)
class Shard:
    """One unit of work: a tar file, a Parquet row group, or a slice of image files."""

    kind: str  # "files", "tar" or "parquet"
    source: str  # the tar or Parquet file ("" for files)
    key: str  # stable and unique in a run: names its part file
    fingerprint: str  # changes when its inputs' sizes or modification times do
    files: tuple[str, ...] = ()  # kind "files": the image paths
    group: int = 0  # kind "parquet": the row group
    first: int = 0  # kind "parquet": the group's first row in the file
    column: str = ""  # kind "parquet": the image column
    problem: str | None = None  # known unreadable when listed: read() says so, yields none


@dataclass(frozen=True)
class Item:
    """One input of a shard: its id, and the image (a path, or bytes read from a shard)."""

    id: str
    image: str | Encoded


@dataclass(frozen=True)
class Expanded:
    """What a command line names: the shards, and the paths named more than once."""

    shards: list[Shard]
    repeated: list[str]


def _hash(*parts: object) -> str:
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).hexdigest()


def _stamp(path: str) -> str:
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return "missing"
    return f"{info.st_size}:{info.st_mtime_ns}"


def _key(source: str, *more: object) -> str:
    """A file-name-safe key: the file's stem (readable) and a hash of its path (unique)."""
    stem = re.sub(r"[^\w.-]", "_", Path(source).name)[:60]
    return f"{stem}-{'-'.join(map(str, more))}{'-' if more else ''}{_hash(source)}"


def _paths(inputs: Sequence[str], recursive: bool, listed: bool = False) -> list[str]:
    """Brace patterns, folders and list files expanded into files, in the order given."""
    found = []
    for given in inputs:
        names = [given]
        if "{" in given and not os.path.exists(given):
            # not a pattern (unbalanced): a name with a brace, left to its shard to fail
            with suppress(UnbalancedBracesError):
                names = list(braceexpand(given))
        for name in names:
            if name.lower().endswith(LIST) and not listed and os.path.isfile(name):
                found += _paths(_listed(name), recursive, listed=True)
            else:
                found += expand_inputs([name], recursive, FOLDER_SUFFIXES)
    return found


def _listed(file: str) -> list[str]:
    """A list file's paths, each relative to its folder (blank and # lines skipped)."""
    try:
        lines = Path(file).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{file}: cannot read the list of inputs ({one_line(error)})") from None
    folder = os.path.dirname(file)
    return [os.path.join(folder, line.strip()) for line in lines
            if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip


def shards(
    inputs: Sequence[str], recursive: bool = False, image_col: str | None = None
) -> Expanded:
    """The shards the inputs stand for, in order. A missing or unreadable file is left to
    its shard (a failed input, or a damaged shard: the run goes on); what stops the run
    before any work is a UsageError: an empty folder, an unreadable list, a Parquet file
    without a usable image column."""
    files: list[str] = []
    found: list[Shard] = []
    kept, repeated = once(_paths(inputs, recursive))
    for path in kept:
        lowered = path.lower()
        if lowered.endswith((TAR, PARQUET)):
            found += _files(files)  # the files named before it, in their order
            files = []
        if lowered.endswith(TAR):
            found.append(Shard("tar", path, _key(path), _stamp(path)))
        elif lowered.endswith(PARQUET):
            found += _parquet(path, image_col)
        else:
            files.append(path)
    found += _files(files)
    if not found:
        raise UsageError(f"no inputs in {' '.join(inputs)} (an empty list file?)")
    return Expanded(found, repeated)


def adds_only(before: Sequence[str], now: Sequence[str], recursive: bool = False) -> bool:
    """Whether inputs `now` name every file that `before` names, and maybe more (a wider
    brace pattern, another shard, a folder that grew): a run over them continues the run
    over `before` instead of being another run. Inputs that no longer expand (a list file
    gone) are not taken to be covered."""
    try:
        return set(_paths(before, recursive)) <= set(_paths(now, recursive))
    except UsageError:
        return False


def _files(files: list[str]) -> list[Shard]:
    """Image files, FILES_PER_SHARD to a shard."""
    found = []
    for start in range(0, len(files), FILES_PER_SHARD):
        part = tuple(files[start : start + FILES_PER_SHARD])
        stamp = _hash(*(f"{p}\x1e{_stamp(p)}" for p in part))
        found.append(Shard("files", "", f"files-{_hash(*part)}", stamp, files=part))
    return found


def _parquet(path: str, image_col: str | None) -> list[Shard]:
    stamp = _stamp(path)
    try:
        where = parquet.layout(path, image_col)
    except parquet.Unreadable as error:
        return [Shard("parquet", path, _key(path), stamp, problem=str(error))]
    return [
        Shard(
            "parquet",
            path,
            _key(path, f"g{group}"),
            stamp,
            group=group,
            first=first,
            column=where.column,
        )
        for group, first in enumerate(where.starts)
    ]


def read(shard: Shard, damaged: Callable[[str], None]) -> Iterator[Item]:
    """The shard's inputs, in order, read lazily; damage (a truncated or unreadable shard)
    is said once through `damaged`, after the inputs read before it."""
    if shard.problem is not None:
        damaged(shard.problem)
        return
    if shard.kind == "files":
        yield from (Item(path, path) for path in shard.files)
    elif shard.kind == "tar":
        yield from (Item(item.name, item) for item in tars.read_tar(shard.source, damaged))
    else:
        try:
            for name, image in parquet.read_group(shard.source, shard.group, shard.first,
                                                  shard.column):  # fmt: skip
                yield Item(name, image)
        except (OSError, pa.ArrowException) as error:
            damaged(f"{shard.source}: unreadable Parquet row group {shard.group} "
                    f"({one_line(error)}); its rows are lost")  # fmt: skip


def describe(shard: Shard) -> str:
    """A shard as a person names it."""
    if shard.kind == "files":
        return f"{len(shard.files)} files from {shard.files[0]}"
    if shard.kind == "parquet":
        return f"{shard.source} (row group {shard.group})"
    return shard.source


def split_id(id: str) -> tuple[str, str] | None:
    """(container file, member) of an id naming a tar sample's image or a Parquet row (at
    the first `#` after a name ending .tar or .parquet); None for a plain file's path."""
    for at in (match.start() for match in re.finditer("#", id)):
        if id[:at].lower().endswith((TAR, PARQUET)):
            return id[:at], id[at + 1 :]
    return None


Numbered = Iterator[tuple[int, str | Encoded]]  # (index of the id, its image)


def read_named(ids: Sequence[str], image_col: str | None = None) -> Numbered:
    """The images the ids name, as (index in ids, image): a file's path as it is, in order;
    a container's members when the container first comes up, each tar or Parquet file
    read once, in its own order (a tar no further than its last member named, only the
    Parquet row groups named). A member not there, or lost to damage, is an Encoded with
    the reason: one failed image. UsageError: a Parquet file without a usable column."""
    wanted: dict[str, dict[str, list[int]]] = {}  # container -> member -> indices
    for index, id in enumerate(ids):
        if (where := split_id(id)) is not None:
            wanted.setdefault(where[0], {}).setdefault(where[1], []).append(index)
    for index, id in enumerate(ids):
        where = split_id(id)
        if where is None:
            yield index, id
        elif (members := wanted.pop(where[0], None)) is not None:
            if where[0].lower().endswith(TAR):
                yield from _tar_members(where[0], members)
            else:
                yield from _parquet_rows(where[0], members, image_col)


def _failed(source: str, members: dict, why: Callable[[object], str]) -> Numbered:
    """Each member as one failed image, with why it could not be read."""
    for member, indices in members.items():
        failed = Encoded(f"{source}#{member}", b"", why(member))
        yield from ((index, failed) for index in indices)


def _tar_members(source: str, members: dict[str, list[int]]) -> Numbered:
    """A tar's named members, in the tar's order; the tar read up to the last of them."""
    damage: list[str] = []
    problem = path_problem(source)
    if problem is None:
        with closing(tars.read_tar(source, damage.append)) as samples:
            for item in samples:
                for index in members.pop(item.name[len(source) + 1 :], ()):
                    yield index, item
                if not members:
                    return
        problem = damage[0] if damage else None

    def why(member: object) -> str:
        key = tars.split_key(str(member))[0]
        return problem or f"{source}: no sample {key!r} with an image {member!r} in this tar"

    yield from _failed(source, members, why)


def _parquet_rows(source: str, members: dict[str, list[int]], image_col: str | None) -> Numbered:
    """A Parquet file's named rows, in the file's order; only their row groups read."""
    rows: dict[int, list[int]] = {}
    for member in [member for member in members if member.isascii() and member.isdigit()]:
        rows.setdefault(int(member), []).extend(members.pop(member))
    yield from _failed(source, members, lambda member: f"{source}#{member}: not a row number "
                       "(a Parquet row's id is file.parquet#row, rows counted from 0)")  # fmt: skip
    problem = path_problem(source)
    try:
        where = parquet.layout(source, image_col) if problem is None else None
    except parquet.Unreadable as error:
        where, problem = None, str(error)
    for group, first in enumerate(where.starts if where else ()):
        end = where.starts[group + 1] if group + 1 < len(where.starts) else where.rows
        if not any(first <= row < end for row in rows):
            continue
        try:
            for row, (_, image) in enumerate(
                parquet.read_group(source, group, first, where.column), first
            ):
                yield from ((index, image) for index in rows.pop(row, ()))
        except (OSError, pa.ArrowException) as error:
            lost = f"{source}: unreadable Parquet row group {group} ({one_line(error)})"
            group_rows = {row: rows.pop(row) for row in list(rows) if first <= row < end}
            yield from _failed(source, group_rows, lambda _, lost=lost: lost)
    total = where.rows if where else 0
    yield from _failed(source, rows, lambda row: problem or f"{source}: no row {row} (the file "
                       f"has {total} rows, counted from 0)")  # fmt: skip
