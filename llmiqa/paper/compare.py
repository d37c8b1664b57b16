"""`llmiqa compare RUN FILE`: per-image agreement between a run and published per-image
outputs of the original code, the proof that a protocol is reproduced exactly (both sides
can correlate with MOS equally and still disagree image by image).

FILE is a JSON list of {"name", "score"} as the authors' code wrote it (e.g. the Dog-IQA
repository's results/livec-test.json: integer mPLUG-Owl3 scores of a whole-image run),
or a JSON object name -> score. Names are matched without their extension, as the
authors' evaluation does, so each such name must be listed once on each side (a file that
names one twice, or a run with x/img.png and y/img.png, is refused), and every score must
be a finite JSON number. Ours is each image's whole-image rating read out as `readout`
(default greedy: the released code's one generated token), or with `readout="score"` the
run's own final score.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmiqa.errors import UsageError, one_line
from llmiqa.evaluation import correlation
from llmiqa.method import aggregate
from llmiqa.runs.config import RunConfig
from llmiqa.runs.files import read_results, strict_json
from llmiqa.runs.publish import attach, current


@dataclass(frozen=True)
class Agreement:
    matched: int
    only_ours: int
    only_theirs: int
    failed: int  # images of the run that failed (no value of ours)
    exact: float  # share of matched images with the same value
    within_one: float  # share within one level
    srcc: float
    plcc: float
    mean_abs_diff: float
    confusion: dict[str, dict[str, int]]  # theirs -> ours -> count (integer values)


def read_theirs(file: Path) -> dict[str, float]:
    """Published per-image scores by name without extension; one line on any problem."""
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"{file}: not a readable JSON file ({one_line(error)})") from None
    if isinstance(data, dict):
        data = [{"name": name, "score": score} for name, score in data.items()]
    if not isinstance(data, list):
        raise UsageError(f"{file}: expected a list of {{name, score}} or an object name: score")
    found, where = {}, {}
    for number, item in enumerate(data, 1):
        try:
            name, score = Path(str(item["name"])).stem, item["score"]
        except (KeyError, TypeError):
            raise UsageError(f"{file}, entry {number}: not a {{name, score}} pair") from None
        if isinstance(score, bool) or not isinstance(score, int | float) or not np.isfinite(score):
            raise UsageError(f"{file}, entry {number}: score {score!r} is not a finite number")
        if name in found:
            raise UsageError(
                f"{file}, entries {where[name]} and {number}: both name {name!r} (names are "
                "matched without their extension); list each image once"
            )
        found[name], where[name] = float(score), number
    return found


def ours(run: Path, readout: str) -> tuple[dict[str, float], int]:
    """The run's per-image values by name without extension, and how many images failed
    (left out)."""
    published = current(run)
    config = RunConfig.read(published)
    results, _ = read_results(published, config.run_id)
    values, names, failed = {}, {}, 0
    for result in results:
        stem = Path(result.name).stem
        if stem in names:
            raise UsageError(
                f"{run}: images {names[stem]} and {result.name} have the same name without "
                "extension, which is what compare matches on; it cannot tell them apart"
            )
        names[stem] = result.name
        if not result.ok:
            failed += 1
            continue
        if readout == "score":
            value = result.score
        else:
            whole = result.logprobs[0]  # (models, K): the whole image
            value = float(np.mean(aggregate.readout(whole, readout, result.other_logprob[0],
                                                     result.other_value[0])))  # fmt: skip
        values[stem] = value
    return values, failed


def agreement(mine: dict[str, float], theirs: dict[str, float], failed: int = 0) -> Agreement:
    names = sorted(set(mine) & set(theirs))
    if not names:
        raise UsageError("no image name in common between the run and the file")
    a = np.array([mine[n] for n in names])
    b = np.array([theirs[n] for n in names])
    integers = np.all(a == np.round(a)) and np.all(b == np.round(b))
    confusion: dict[str, dict[str, int]] = {}
    if integers:
        for x, y in zip(b.astype(int), a.astype(int), strict=True):
            row = confusion.setdefault(str(x), {})
            row[str(y)] = row.get(str(y), 0) + 1
    return Agreement(
        matched=len(names),
        only_ours=len(set(mine) - set(theirs)),
        only_theirs=len(set(theirs) - set(mine)),
        failed=failed,
        exact=float(np.mean(a == b)),
        within_one=float(np.mean(np.abs(a - b) <= 1)),
        srcc=correlation.srcc(a, b),
        plcc=correlation.plcc(a, b),
        mean_abs_diff=float(np.mean(np.abs(a - b))),
        confusion=confusion,
    )


def compare(run: Path, file: Path, readout: str = "greedy") -> Agreement:
    """The agreement (`save` keeps it beside the run)."""
    if readout not in (*aggregate.READOUTS, "score"):
        raise UsageError(
            f"unknown readout {readout!r}; choose from {[*aggregate.READOUTS, 'score']}"
        )
    theirs = read_theirs(file)
    mine, failed = ours(run, readout)
    return agreement(mine, theirs, failed)


def save(run: Path, file: Path, readout: str, found: Agreement) -> None:
    """compare-<file>.json beside the run's outputs (a RunError where it cannot be written)."""
    record = {"file": str(file), "readout": readout, **vars(found)}
    attach(run, {f"compare-{file.stem}.json": json.dumps(strict_json(record), indent=1) + "\n"})


def matched_up(found: Agreement) -> bool:
    """Every image on both sides, and none failed in the run."""
    return not (found.only_ours or found.only_theirs or found.failed)


def text(found: Agreement, readout: str) -> str:
    failed = f", {found.failed} failed in the run" if found.failed else ""
    lines = [
        f"{found.matched} images in common ({found.only_ours} only in the run, "
        f"{found.only_theirs} only in the file{failed}); ours: whole-image {readout}",
        f"exact agreement {found.exact:.1%}, within one level {found.within_one:.1%}, "
        f"mean |difference| {found.mean_abs_diff:.3f}",
        f"between the two: SRCC {found.srcc:.4f}, PLCC {found.plcc:.4f}",
    ]
    if found.confusion:
        levels = sorted({int(k) for row in found.confusion.values() for k in row}
                        | {int(k) for k in found.confusion})  # fmt: skip
        lines.append("theirs \\ ours " + " ".join(f"{v:>5}" for v in levels))
        for x in levels:
            row = found.confusion.get(str(x), {})
            lines.append(f"{x:>13} " + " ".join(f"{row.get(str(y), 0):>5}" for y in levels))
    return "\n".join(lines)
