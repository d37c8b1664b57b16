"""A run folder: its configuration, its published outputs, its lock.

A run's outputs are published as one unit: written into a fresh folder under
`published/`, then switched in by replacing one symbolic link, `current`, in a single
rename. The top-level names (results.csv, metrics.json, report.html, ...) are links
through `current`, made once; so a reader sees the previous run's outputs or the new
run's, whole, never a mix, whatever interrupts a run (Ctrl-C, a full disk, SIGKILL).
Outputs are created with the modes the user's umask gives a new file.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmiqa import __version__
from llmiqa.aggregate import RatingArrays
from llmiqa.datasets import Dataset, load_dataset
from llmiqa.errors import UsageError, one_line
from llmiqa.options import resolve
from llmiqa.results import ImageResult, stack

CONFIG, RESULTS, TABLE, METRICS = "config.json", "results.jsonl", "results.csv", "metrics.json"
ARRAYS, INVOCATIONS, LOCK = "ratings.npz", "invocations.jsonl", ".lock"
PUBLISHED, CURRENT = "published", "current"
# what a publication holds, each reachable at the top of the run folder through `current`
ENTRIES = (CONFIG, RESULTS, ARRAYS, TABLE, METRICS, "report.md", "report.html", "figures")


class RunError(UsageError):
    """A run folder that cannot be used as asked."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run, as written to config.json."""

    dataset: dict  # load_dataset keyword arguments, name, root and label file included
    scoring: dict  # resolved scoring options (see options.DEFAULTS)
    preset: str | None = None
    limit: int | None = None
    store: str | None = None  # None: store.sqlite inside the run folder

    @classmethod
    def create(
        cls,
        dataset: dict,
        scoring: dict,
        preset: str | None = None,
        limit: int | None = None,
        store: str | None = None,
    ) -> RunConfig:
        """A config with everything pinned that a rerun must not guess again: the label
        file a csv dataset chose, and the released protocol's LIVEC (all 1,169 images)."""
        dataset = dict(dataset)
        if preset == "dogiqa" and dataset["name"] == "livec":
            dataset.setdefault("include_training", True)
        if dataset["name"] == "csv" and "labels" not in dataset:
            dataset["labels"] = str(load_dataset(**dataset).labels)
        return cls(dataset, scoring, preset, limit, str(Path(store).resolve()) if store else None)

    @property
    def run_id(self) -> str:
        """Names this configuration; every output of the run carries it."""
        text = json.dumps(vars(self), sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    def load_dataset(self) -> Dataset:
        return load_dataset(**self.dataset)

    def samples(self, dataset: Dataset) -> list:
        samples = list(dataset.samples)
        return samples[: self.limit] if self.limit else samples

    def store_path(self, out: Path) -> Path:
        return Path(self.store) if self.store else out / "store.sqlite"

    def scorer(self, out: Path, progress: bool = False, **overrides):
        """A Scorer for this run; `overrides` change scoring options (for ablations)."""
        from llmiqa.pipeline import Scorer

        return Scorer.from_options({**self.scoring, **overrides}, self.store_path(out), progress)

    def to_json(self) -> str:
        record = {"llmiqa": __version__, "run_id": self.run_id, **vars(self)}
        return json.dumps(record, indent=2, default=str) + "\n"

    @classmethod
    def read(cls, out: Path) -> RunConfig:
        """config.json, validated: a file another version wrote or one edited by hand is
        refused with what is wrong, not guessed at."""
        file = out / CONFIG
        if not file.is_file():
            raise RunError(f"{out}: not a run folder (no {CONFIG}); run llmiqa eval first")
        try:
            record = json.loads(file.read_text())
            record.pop("llmiqa", None)
            run_id = record.pop("run_id")
            config = cls(**record)
            scoring = resolve(config.scoring)
        except (ValueError, TypeError, KeyError, UsageError) as error:
            raise RunError(f"{file}: not a valid run config ({one_line(error)})") from None
        if scoring != config.scoring or run_id != config.run_id:
            raise RunError(f"{file}: written by another llmiqa version or edited; rerun eval")
        return config


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


@contextmanager
def locked(out: Path, shared: bool) -> Iterator[None]:
    """Hold the run folder: exclusively for a run, shared among shards. The lock dies with
    its process (an flock), and its file says which process held it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / LOCK, "a+")  # noqa: SIM115 - held for the whole run
    except OSError as error:
        raise RunError(f"{out}: cannot write to the run folder ({one_line(error)})") from None
    try:
        fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunError(
            f"{out}: another llmiqa eval ({holder}) is using this run folder; wait for it, "
            "or use another --out (shards of one run may share it)"
        ) from None
    if not shared:
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
    try:
        yield
    finally:
        with suppress(OSError):  # the last holder leaves no lock file behind
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            (out / LOCK).unlink()
        handle.close()


def shard_of(samples: Sequence, shard: tuple[int, int] | None) -> list:
    """Samples i, i+n, i+2n, ... for shard (i, n): one process per GPU, one shared store."""
    if shard is None:
        return list(samples)
    index, count = shard
    return list(samples)[index::count]


def strict_json(value):
    """NaN -> null, recursively: metrics.json must parse in any JSON reader, not just Python."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def results_jsonl(results: Sequence[ImageResult], mos: Sequence[float], run_id: str) -> str:
    lines = [
        json.dumps({**result.to_dict(), "mos": value, "run": run_id})
        for result, value in zip(results, mos, strict=True)
    ]
    return "".join(line + "\n" for line in lines)


def read_results(out: Path, run_id: str | None = None) -> tuple[list[ImageResult], np.ndarray]:
    """The results of a finished run, rebuilt from results.jsonl (no model, no store)."""
    file = out / RESULTS
    if not file.is_file():
        raise RunError(f"{out}: no {RESULTS}; run llmiqa eval first")
    results, mos = [], []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if run_id is not None and record["run"] != run_id:
                raise ValueError(f"from run {record['run']}, not {run_id} of {CONFIG}")
            results.append(ImageResult.from_dict(record))
            mos.append(float(record["mos"]))
        except (ValueError, KeyError, TypeError) as error:
            raise RunError(f"{file}, line {number}: not a result ({one_line(error)})") from None
    return results, np.array(mos)


def results_csv(results: Sequence[ImageResult], mos: Sequence[float]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "mos", "score", "spread", "s_global", "s_local", "regions", "error"])
    for result, value in zip(results, mos, strict=True):
        if not result.ok:
            writer.writerow([result.name, value, "", "", "", "", "", result.error])
            continue
        s_local = float(np.mean(result.s_local))
        writer.writerow(
            [
                result.name,
                value,
                f"{result.score:.6f}",
                "" if np.isnan(result.spread) else f"{result.spread:.6f}",
                f"{float(np.mean(result.s_global)):.6f}",
                "" if np.isnan(s_local) else f"{s_local:.6f}",
                len(result.kinds),
                "",
            ]
        )
    return buffer.getvalue()


def invocations(out: Path) -> list[dict]:
    file = out / INVOCATIONS
    if not file.is_file():
        return []
    entries = []
    for line in file.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash: that invocation's time is unknown
    return entries


def log_invocation(out: Path, entry: dict) -> None:
    try:
        with open(out / INVOCATIONS, "a") as log:
            log.write(json.dumps(strict_json(entry)) + "\n")
    except OSError:
        pass  # the log only informs the report; losing a line loses no result


def arrays_npz(results: Sequence[ImageResult], mos: Sequence[float], run_id: str) -> bytes:
    """ARRAYS: the scored images' ratings as one padded array set, with their MOS: what
    every zero-call ablation reads (results.jsonl holds the same, slower to parse)."""
    keep = [i for i, r in enumerate(results) if r.ok]
    buffer = io.BytesIO()
    if keep:
        arrays = stack([results[i] for i in keep])
        fields = {name: getattr(arrays, name) for name in RatingArrays.__dataclass_fields__}
        models = np.array(results[keep[0]].models)
    else:
        fields, models = {}, np.array([], dtype=str)
    np.savez(buffer, run=np.array(run_id), mos=np.asarray(mos, dtype=float)[keep],
             models=models, **fields)  # fmt: skip
    return buffer.getvalue()


def read_arrays(out: Path, run_id: str) -> tuple[RatingArrays, np.ndarray, list[str]] | None:
    """The scored images as arrays, their MOS and the models; None when nothing was scored."""
    file = out / ARRAYS
    try:
        with np.load(file) as data:
            if str(data["run"]) != run_id:
                raise ValueError(f"from run {data['run']}, not {run_id} of {CONFIG}")
            if "logprobs" not in data:
                return None
            # arrays of runs made before answer words and top raw logits lack those fields
            names = [name for name in RatingArrays.__dataclass_fields__ if name in data]
            fields = {name: data[name] for name in names}
            return RatingArrays(**fields), data["mos"], [str(m) for m in data["models"]]
    except FileNotFoundError:
        raise RunError(f"{out}: no {ARRAYS}; rerun llmiqa eval (it reads the store)") from None
    except (OSError, ValueError, KeyError) as error:
        raise RunError(f"{file}: not the run's arrays ({one_line(error)})") from None
