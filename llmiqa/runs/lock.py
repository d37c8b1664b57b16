"""One process writes a run folder at a time: an flock that dies with its process."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from llmiqa.errors import RunError, one_line

LOCK = ".lock"


@contextmanager
def locked(out: Path, shared: bool, command: str) -> Iterator[None]:
    """Hold the run folder: exclusively for a run, shared among shards. The lock dies with
    its process (an flock), and its file says which command (`eval`, `score --out`) and
    process held it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        # never through a link: a .lock pointing at a user's file must not overwrite it
        descriptor = os.open(out / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        handle = os.fdopen(descriptor, "r+")
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise RunError(
                f"{out / LOCK}: is a symbolic link, not llmiqa's lock file; remove it"
            ) from None
        raise RunError(f"{out}: cannot write to the run folder ({one_line(error)})") from None
    try:
        fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another llmiqa process"
        handle.close()
        raise RunError(
            f"{out}: {holder} is using this run folder; wait for it, or use another --out "
            "(the shards of one eval run may share it)"
        ) from None
    if not shared:
        handle.truncate(0)
        handle.write(f"llmiqa {command} (pid {os.getpid()} on {socket.gethostname()})\n")
        handle.flush()
    try:
        yield
    finally:
        with suppress(OSError):  # the last holder leaves no lock file behind
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            (out / LOCK).unlink()
        handle.close()
