"""WebDataset tar shards, read with the standard library's tarfile in stream mode.

A sample is the run of consecutive members that share a key (WebDataset's convention:
the member's name up to the first dot of its base name); its image is the member whose
extension is an image's. The `webdataset` package is not used: it ends a truncated shard
silently, as if it were complete. Here a shard that ends without tar's end-of-archive
blocks, or whose reading fails, is damage, said in one line naming it and how far it was
read; every sample read before is kept.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath

from llmiqa.errors import one_line
from llmiqa.inputs.images import Encoded

# Members taken as a sample's image, by extension (the first present, in this order).
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "ppm", "bmp", "tif", "tiff", "gif")
END_OF_ARCHIVE = 2 * tarfile.BLOCKSIZE  # two zero blocks close every tar archive


def split_key(member: str) -> tuple[str, str]:
    """(key, extension): 'a/b.c.jpg' -> ('a/b', 'c.jpg'), WebDataset's split."""
    path = PurePosixPath(member)
    base, _, extension = path.name.partition(".")
    return str(path.with_name(base)) if base else member, extension.lower()


def _sample(source: str, key: str, members: dict[str, bytes]) -> Encoded:
    """A sample's image, or why it has none (a failed input, never a silent gap)."""
    for extension in IMAGE_EXTENSIONS:
        for name, data in members.items():
            if split_key(name)[1].rpartition(".")[2] == extension:
                return Encoded(f"{source}#{name}", data)
    found = ", ".join(sorted("." + split_key(n)[1] for n in members)) or "nothing"
    return Encoded(f"{source}#{key}", b"", f"{source}#{key}: no image member (has {found})")


def read_tar(source: str, damaged: Callable[[str], None]) -> Iterator[Encoded]:
    """Each sample of the tar file `source`, in order; damage (a truncated or unreadable
    shard) is said once through `damaged`, after the samples read before it."""
    samples, key, members = 0, None, {}
    try:
        file = open(source, "rb")  # noqa: SIM115 (the with below closes it)
    except OSError as error:
        damaged(f"{source}: cannot open this tar shard ({error.strerror or one_line(error)})")
        return
    try:
        with file, tarfile.open(fileobj=file, mode="r|") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                name_key, _ = split_key(member.name)
                if key is not None and name_key != key:
                    yield _sample(source, key, members)
                    samples, members = samples + 1, {}
                key = name_key
                members[member.name] = archive.extractfile(member).read()
            end = archive.offset
        problem = _unterminated(source, end)
    except (tarfile.TarError, OSError, EOFError) as error:
        problem = one_line(error)
        members = {}  # a sample cut by the damage is incomplete: not taken as read
    if key is not None and members:
        yield _sample(source, key, members)
        samples += 1
    if problem:
        damaged(f"{source}: truncated or unreadable tar shard ({problem}); {samples} "
                "sample(s) read before it, the rest of the shard is lost")  # fmt: skip


def _unterminated(source: str, end: int) -> str | None:
    """Why the archive is not whole: tarfile ends quietly at a file cut between members."""
    with open(source, "rb") as file:
        file.seek(end)
        tail = file.read(END_OF_ARCHIVE)
    if len(tail) < END_OF_ARCHIVE or any(tail):
        size = os.path.getsize(source)
        return f"no end-of-archive marker after byte {end} of {size}"
    return None
