"""A run folder: its configuration, its published outputs, its lock.

A run's outputs are published as one unit: written into a fresh folder under
`published/`, then switched in by replacing one symbolic link, `current`, in a single
rename. The top-level names (results.csv, metrics.json, report.html, ...) are links
through `current`, made once; so a reader sees the previous run's outputs or the new
run's, whole, never a mix, whatever interrupts a run (Ctrl-C, a full disk, SIGKILL).
Outputs are created with the modes the user's umask gives a new file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from llmiqa.errors import Interrupted, RunError, one_line
from llmiqa.runs.config import CONFIG
from llmiqa.runs.files import ARRAYS, METRICS, RESULTS, TABLE

PUBLISHED, CURRENT = "published", "current"
# what a publication holds, each reachable at the top of the run folder through `current`:
# an eval run's outputs, and a collection's (config, results.csv and figures besides)
EVAL_OUTPUTS = (CONFIG, RESULTS, ARRAYS, TABLE, METRICS, "report.md", "report.html", "figures")
ENTRIES = (*EVAL_OUTPUTS, "results.parquet", "summary.json")
# what is computed from a publication later and added to it (llmiqa ablate, compare)
ATTACHMENTS = ("ablation.json", "ablation.csv", "ablation-scores.csv", "compare-*.json")


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
        self.final = self.folder.with_name(self.folder.name[1:])
        try:
            self.folder.mkdir(parents=True)  # the mode the umask gives a new folder
        except OSError as error:
            raise RunError(f"{out}: cannot write the run's outputs ({one_line(error)})") from None
        except BaseException:  # a Ctrl-C as the folder appears: nothing of it is left
            self.abort()
            raise

    def write(self, path: Path, data: str | bytes) -> None:
        """One new file of the publication (a path inside its folder), flushed to disk."""
        with self.writing(path) as handle:
            handle.write(data.encode() if isinstance(data, str) else data)

    @contextmanager
    def writing(self, path: Path) -> Iterator[BinaryIO]:
        """One new file of the publication written as a stream (a file too large to hold
        whole), flushed to disk when the block ends."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "xb") as handle:  # a new file: the mode the umask gives it
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise RunError(
                f"{self.out}: cannot write the run's outputs ({one_line(error)}); the run "
                "folder still holds the previous run's, and the store every rating"
            ) from None

    def switch(self) -> None:
        """The one rename that publishes: every top-level name is already a link through
        `current` (an old version's plain files are adopted first), so moving `current`
        moves them all. Then links the new run lacks go, and the old outputs."""
        try:
            adopt(self.out)
            _fsync(self.folder)
            os.rename(self.folder, self.final)
            for name in ENTRIES:  # a fresh folder's links dangle until `current` exists
                if (self.final / name).exists():
                    _link(self.out / name, Path(CURRENT) / name)
            _link(self.out / CURRENT, Path(PUBLISHED) / self.final.name)
            _fsync(self.out)
        except OSError as error:
            raise RunError(
                f"{self.out}: cannot publish the run's outputs ({one_line(error)}); "
                f"{self.holding()}"
            ) from None
        self.tidy()

    def published(self) -> bool:
        """Whether `current` names this publication (the switch is done)."""
        link = self.out / CURRENT
        return link.is_symlink() and Path(os.readlink(link)).name == self.final.name

    def tidy(self) -> None:
        """After the switch: the previous run's links the new one lacks (ablation.csv and
        the like, an eval run's report in a collection's folder) and its outputs go."""
        for link in self.out.iterdir():
            if link.is_symlink() and not link.exists():
                link.unlink(missing_ok=True)
        for old in (self.out / PUBLISHED).iterdir():
            if old != self.final:
                shutil.rmtree(old, ignore_errors=True)

    def holding(self) -> str:
        """Which run the folder holds now: said when a publication is cut short."""
        if self.published():
            return f"{self.out} holds the new run (it was published before the interruption)"
        return f"{self.out} still holds its previous outputs"

    def abort(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def publishing(out: Path, run_id: str) -> Iterator[Publication]:
    """Write a run's outputs into the Publication, then switch; on any failure (a full
    disk, Ctrl-C) nothing of it is left, and the previous outputs stay as they were (a
    Ctrl-C after the switch says the folder holds the new run)."""
    publication = None
    try:
        publication = Publication(out, run_id)  # a Ctrl-C in there leaves nothing of it
        yield publication
        publication.switch()
    except BaseException as error:
        if publication is None:
            raise
        publication.abort()
        if publication.published():  # stopped after the switch: finish tidying
            publication.tidy()
        if isinstance(error, KeyboardInterrupt):
            raise Interrupted(publication.holding()) from None
        raise


def adopt(out: Path) -> None:
    """A run folder an earlier llmiqa wrote (plain files, no `current`) becomes a
    publication of its own, in steps that each leave one run in the folder: its files are
    hard-linked into published/, `current` is made to name that copy (one rename), then
    each plain name is replaced by a link through `current` to the same file. A kill
    between steps leaves the old run readable, and the next publication goes on from
    there."""
    plain = [p for p in _outputs(out) if not p.is_symlink()]
    if not plain:
        return
    if not (out / CURRENT).is_symlink():
        adopted = out / PUBLISHED / f"{_run_id(out)}-adopted"
        shutil.rmtree(adopted, ignore_errors=True)  # a copy cut short: made again
        adopted.mkdir(parents=True)
        for path in plain:
            if path.is_dir():
                shutil.copytree(path, adopted / path.name, copy_function=_hard_link)
            else:
                _hard_link(path, adopted / path.name)
        _fsync(adopted)
        _link(out / CURRENT, Path(PUBLISHED) / adopted.name)
    for path in plain:
        _link(path, Path(CURRENT) / path.name)


def _outputs(out: Path) -> list[Path]:
    """The run folder's published names (outputs and attachments) that exist there."""
    found = [out / name for name in ENTRIES if (out / name).is_symlink() or (out / name).exists()]
    return found + sorted({p for pattern in ATTACHMENTS for p in out.glob(pattern)})


def _run_id(out: Path) -> str:
    try:
        return str(json.loads((out / CONFIG).read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def _hard_link(source: Path | str, target: Path | str) -> None:
    """The same file under a second name (a copy where the file system has no hard links)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_file(path: Path, data: str) -> None:
    """Replace one file atomically (written aside, then renamed), with the mode the umask
    gives a new file; the previous one is kept where it cannot be written."""
    try:
        _replace(path, data)
    except OSError as error:
        raise RunError(f"{path.parent} {_unwritable(error)}: {path.name} was not saved") from None


def attach(out: Path, files: dict[str, str]) -> None:
    """Add files to the run's current publication (what is computed from it later, as an
    ablation), each atomically and reachable as out/name. Those that cannot be written are
    named in one RunError, after the others are saved."""
    published = current(out)
    failed: dict[str, OSError] = {}
    for name, data in files.items():
        try:
            _replace(published / name, data)
            if published != out:
                _link(out / name, Path(CURRENT) / name)
        except OSError as error:
            failed[name] = error
    if failed:
        why = _unwritable(next(iter(failed.values())))
        names = " and ".join(failed) + (" were" if len(failed) > 1 else " was")
        raise RunError(f"{out} {why}: {names} not saved")


def _replace(path: Path, data: str) -> None:
    fresh = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(fresh, "x") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(fresh, path)
    except OSError:
        with suppress(OSError):
            fresh.unlink(missing_ok=True)
        raise


def _unwritable(error: OSError) -> str:
    """Why a folder took no file, as the rest of a sentence naming it."""
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"is read-only ({error.strerror})"
    return f"cannot be written ({one_line(error)})"


def _link(link: Path, target: Path) -> None:
    """Make `link` point to `target`, atomically (a link, or an old version's file, is
    replaced by one rename)."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    fresh = link.with_name(f".{link.name}.{os.getpid()}.link")
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(target)
    if link.is_dir() and not link.is_symlink():  # an old version's figures/ folder
        aside = link.with_name(f".{link.name}.{os.getpid()}.old")
        os.rename(link, aside)  # (no rename replaces a folder with a link)
        os.replace(fresh, link)
        shutil.rmtree(aside, ignore_errors=True)
        return
    os.replace(fresh, link)


def _fsync(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
