"""The files a run publishes, written and read back validated: results.jsonl, results.csv,
ratings.npz (what ablations read) and the invocations log."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmiqa.errors import RunError, one_line
from llmiqa.method.aggregate import RatingArrays
from llmiqa.method.results import ImageResult, stack
from llmiqa.runs.config import CONFIG

RESULTS, TABLE, METRICS = "results.jsonl", "results.csv", "metrics.json"
ARRAYS, INVOCATIONS = "ratings.npz", "invocations.jsonl"


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


def read_summary(out: Path, run_id: str) -> dict:
    """metrics.json of a finished run, refused when it names another run than its config."""
    file = out / METRICS
    try:
        summary = json.loads(file.read_text())
        if summary["run_id"] != run_id:
            raise ValueError(f"from run {summary['run_id']}, not {run_id} of {CONFIG}")
    except FileNotFoundError:
        raise RunError(f"{out}: no {METRICS}; rerun llmiqa eval") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError(f"{file}: not the run's metrics ({one_line(error)})") from None
    return summary


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
