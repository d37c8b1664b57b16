"""A run folder: its configuration, its published outputs, its lock.

A run's outputs are published as one unit: written into a fresh folder under
`published/`, then switched in by replacing one symbolic link, `current`, in a single
rename. The top-level names (results.csv, metrics.json, report.html, ...) are links
through `current`, made once; so a reader sees the previous run's outputs or the new
run's, whole, never a mix, whatever interrupts a run (Ctrl-C, a full disk, SIGKILL).
Outputs are created with the modes the user's umask gives a new file.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmiqa.errors import RunError, one_line
from llmiqa.runs.config import CONFIG
from llmiqa.runs.files import ARRAYS, METRICS, RESULTS, TABLE

PUBLISHED, CURRENT = "published", "current"
# what a publication holds, each reachable at the top of the run folder through `current`
ENTRIES = (CONFIG, RESULTS, ARRAYS, TABLE, METRICS, "report.md", "report.html", "figures")


def current(out: Path) -> Path:
    """The folder holding the run's published outputs (`out` itself for a run folder
    written before publications)."""
    link = out / CURRENT
    return link.resolve() if link.is_symlink() else out


class Publication:
    """The outputs of one finished run, written into a fresh folder beside the published
    ones; `switch` makes them the run folder's, all at once."""

    def __init__(self, out: Path, run_id: str) -> None:
        self.out = out
        self.folder = out / PUBLISHED / f".{run_id}-{time.time_ns()}-{os.getpid()}"
        try:
            self.folder.mkdir(parents=True)  # the mode the umask gives a new folder
        except OSError as error:
            raise RunError(f"{out}: cannot write the run's outputs ({one_line(error)})") from None

    def write(self, path: Path, data: str | bytes) -> None:
        """One new file of the publication (a path inside its folder), flushed to disk."""
        raw = data.encode() if isinstance(data, str) else data
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "xb") as handle:  # a new file: the mode the umask gives it
                handle.write(raw)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise RunError(
                f"{self.out}: cannot write the run's outputs ({one_line(error)}); the run "
                "folder still holds the previous run's, and the store every rating"
            ) from None

    def switch(self) -> None:
        """The one rename that publishes; then the top-level links, and the old outputs go."""
        try:
            _fsync(self.folder)
            final = self.folder.with_name(self.folder.name[1:])
            os.rename(self.folder, final)
            _link(self.out / CURRENT, Path(PUBLISHED) / final.name)
            _fsync(self.out)
        except OSError as error:
            raise RunError(
                f"{self.out}: cannot publish the run's outputs ({one_line(error)}); the run "
                "folder still holds the previous run's"
            ) from None
        for name in ENTRIES:  # once per run folder; an old version's plain files replaced
            _link(self.out / name, Path(CURRENT) / name)
        for old in (self.out / PUBLISHED).iterdir():
            if old != final:
                shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def publishing(out: Path, run_id: str) -> Iterator[Publication]:
    """Write a run's outputs into the Publication, then switch; on any failure (a full
    disk, Ctrl-C) nothing of it is left, and the previous outputs stay as they were."""
    publication = Publication(out, run_id)
    try:
        yield publication
        publication.switch()
    except BaseException:
        publication.abort()
        raise


def write_file(path: Path, data: str) -> None:
    """Replace one file atomically (written aside, then renamed), with the mode the umask
    gives a new file."""
    fresh = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(fresh, "x") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(fresh, path)
    except OSError as error:
        fresh.unlink(missing_ok=True)
        kept = "the previous one is kept"
        raise RunError(f"{path}: cannot write ({one_line(error)}); {kept}") from None


def attach(out: Path, name: str, data: str) -> Path:
    """Add a file to the run's current publication (something computed from it later, as
    an ablation), atomically, reachable as out/name; returns that path."""
    published = current(out)
    write_file(published / name, data)
    if published != out:
        _link(out / name, Path(CURRENT) / name)
    return out / name


def _link(link: Path, target: Path) -> None:
    """Make `link` point to `target`, atomically (a link, or an old version's file, is
    replaced by one rename)."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    fresh = link.with_name(f".{link.name}.{os.getpid()}.link")
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(target)
    if link.is_dir() and not link.is_symlink():  # an old version's figures/ folder
        shutil.rmtree(link)
    os.replace(fresh, link)


def _fsync(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
