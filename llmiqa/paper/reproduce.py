"""`llmiqa reproduce`: the paper's Table 2 on the benchmarks at hand, in one command, with
one small file to send back.

For every benchmark given (`--koniq10k ROOT`, ...) and every protocol (the paper's text,
`--preset paper`; the authors' released code, `--preset dogiqa`) it runs `llmiqa eval`
into OUT/<protocol>/<benchmark>, all sharing one store (OUT/store.sqlite), so a rerun
resumes and `--limit N` gives a smoke run first. Then it writes:

    reproduction.md    ours against the paper's numbers, each of ours with its bootstrap
                       interval, and the whole-image-only variant of each run (computed
                       from the stored ratings, no model call: the paper's Table 3, exp. 6)
    reproduction.json  the same numbers, the versions, the machine, the identity of every
                       checkpoint (hub commit or content hash) and the time each run took

The paper does not say which MLLMs its ensemble holds (Table 2's row is its Table 3
experiment 9, "Area+Ensemble"); its single-model row (experiment 8) is shown beside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from llmiqa import __version__
from llmiqa.environment import machine, versions
from llmiqa.errors import UsageError
from llmiqa.evaluation import correlation
from llmiqa.method import aggregate
from llmiqa.method.aggregate import Aggregation
from llmiqa.runs.config import CONFIG, RunConfig
from llmiqa.runs.evaluate import VERSIONED, evaluate_run
from llmiqa.runs.files import read_arrays, read_summary, strict_json
from llmiqa.runs.publish import current, write_file
from llmiqa.scoring.knobs import build
from llmiqa.scoring.presets import resolve

BENCHMARKS = ("koniq10k", "livec", "spaq", "kadid10k", "agiqa3k")
LABELS = {"koniq10k": "KonIQ", "livec": "LIVE Challenge", "spaq": "SPAQ",
          "kadid10k": "KADID-10k", "agiqa3k": "AGIQA-3k"}  # fmt: skip
PROTOCOLS = ("paper", "dogiqa")
# (SRCC, PLCC) printed in the paper
PAPER = {
    "Table 2 (LLM-IQA, an ensemble of unnamed MLLMs)": {
        "koniq10k": (0.864, 0.875), "livec": (0.835, 0.842), "spaq": (0.907, 0.911),
        "kadid10k": (0.671, 0.678), "agiqa3k": (0.743, 0.801),
    },
    "Table 3 exp. 8 (one MLLM, bbox + whole)": {
        "spaq": (0.886, 0.885), "agiqa3k": (0.687, 0.689), "livec": (0.739, 0.718),
    },
    "Table 3 exp. 6 (one MLLM, whole image only)": {
        "spaq": (0.891, 0.883), "agiqa3k": (0.680, 0.684), "livec": (0.708, 0.707),
    },
}  # fmt: skip
WHOLE_ONLY = {"lam": 0.0, "count_weight": 0.0}  # the global view alone, from stored ratings


@dataclass(frozen=True)
class Cell:
    """One benchmark's agreement with MOS under one protocol, and what it is computed on."""

    srcc: float
    plcc: float
    srcc_ci: tuple[float, float]
    plcc_ci: tuple[float, float]
    scored: int
    images: int
    reason: str | None = None  # why SRCC or PLCC is NaN


def reproduce(
    roots: dict[str, str],
    out: Path,
    explicit: dict[str, object],
    protocols: Sequence[str] = PROTOCOLS,
    limit: int | None = None,
    subset: bool = False,
    resamples: int = 1000,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Run every protocol on every benchmark given, then write the table and the record of
    every run OUT holds (those of earlier invocations too); `progress` draws the runs' bars."""
    if not roots:
        raise UsageError("give at least one benchmark's folder, e.g. --livec /data/LIVEC")
    unknown = sorted(set(protocols) - set(PROTOCOLS))
    if unknown:
        raise UsageError(f"unknown protocol(s) {unknown}; choose from {list(PROTOCOLS)}")
    for name, root in roots.items():
        if not Path(root).is_dir():
            raise UsageError(f"--{name} {root}: folder not found")
    store = str((out / "store.sqlite").resolve())
    configs = {
        (protocol, name): RunConfig.create(
            {"name": name, "root": str(Path(root).resolve()), **({"subset": True} if subset
                                                                  else {})},
            resolve(explicit, protocol), protocol, limit, store,
        )
        for protocol in protocols
        for name, root in roots.items()
    }  # fmt: skip
    for config in configs.values():  # every benchmark's labels and images, before any work
        config.load_dataset().check_images()
    for (protocol, name), config in configs.items():
        evaluate_run(
            config,
            out / protocol / name,
            resamples=resamples,
            overwrite=overwrite,
            progress=progress,
        )
    record = {"llmiqa": __version__, "machine": machine(), "versions": versions(VERSIONED),
              "runs": runs_in(out)}  # fmt: skip
    write_file(out / "reproduction.json", json.dumps(strict_json(record), indent=1) + "\n")
    write_file(out / "reproduction.md", table(record))
    return record


def runs_in(out: Path) -> dict[str, dict]:
    """Every published run under OUT/<protocol>/<benchmark>, read from its own files: what
    an earlier invocation ran stays in the record when a later one runs fewer."""
    runs = {}
    for protocol in PROTOCOLS:
        for name in BENCHMARKS:
            folder = current(out / protocol / name)
            if (folder / CONFIG).is_file():
                runs[f"{protocol}/{name}"] = _entry(folder)
    return runs


def _entry(folder: Path) -> dict:
    config = RunConfig.read(folder)
    summary = read_summary(folder, config.run_id)
    cell = _cell(summary)
    return {
        "checkpoints": summary["checkpoints"],
        "models": config.scoring["model"],
        "segmenter": config.scoring["segmenter"],
        "limit": config.limit,
        "llmiqa": summary["llmiqa"],
        "seconds": summary["usage"]["seconds_all_invocations"],
        "cell": vars(cell),
        "whole_only": vars(_whole_only(folder, config, cell)),
    }


def _cell(summary: dict) -> Cell:
    values = summary["metrics"]
    reason = values["srcc"]["reason"] or values["plcc"]["reason"]
    return Cell(values["srcc"]["value"], values["plcc"]["value"], tuple(values["srcc"]["ci"]),
                tuple(values["plcc"]["ci"]), summary["scored"], summary["images"],
                reason)  # fmt: skip


def _whole_only(folder: Path, config: RunConfig, cell: Cell) -> Cell:
    """The run's scores from its whole-image ratings alone (no model call), on the same
    images as the run's own cell."""
    arrays = read_arrays(folder, config.run_id)
    nan = (float("nan"), float("nan"))
    if arrays is None:
        return Cell(*nan, nan, nan, 0, cell.images, "no image was scored")
    ratings, mos, _ = arrays
    base = build(Aggregation, config.scoring)
    pred = aggregate.scores(ratings, replace(base, **WHOLE_ONLY)).score
    values = correlation.evaluate(pred, np.asarray(mos), resamples=0)
    reason = values["srcc"]["reason"] or values["plcc"]["reason"]
    return Cell(values["srcc"]["value"], values["plcc"]["value"], nan, nan, int(pred.size),
                cell.images, reason)  # fmt: skip


def table(record: dict) -> str:
    """reproduction.md: the paper's rows, then ours (value [95 % interval], n images)."""
    names = [n for n in BENCHMARKS if any(k.endswith(f"/{n}") for k in record["runs"])]
    header = "| | " + " | ".join(f"{LABELS[n]} SRCC | {LABELS[n]} PLCC" for n in names) + " |"
    lines = [header, "|---" * (1 + 2 * len(names)) + "|"]
    for row, cells in PAPER.items():
        values = [f"{v:.3f}" if n in cells else "" for n in names for v in cells.get(n, (0, 0))]
        lines.append(f"| paper, {row} | " + " | ".join(values) + " |")
    protocols = [p for p in PROTOCOLS if any(k.startswith(f"{p}/") for k in record["runs"])]
    for protocol in protocols:
        for variant, label in (("cell", ""), ("whole_only", ", whole image only")):
            values = []
            for name in names:
                run = record["runs"].get(f"{protocol}/{name}")
                values += _shown(run[variant]) if run else ["not run", "not run"]
            lines.append(f"| ours, --preset {protocol}{label} | " + " | ".join(values) + " |")
    lines.append("")
    lines.append(f"llmiqa {record['llmiqa']}; images scored per run: " + ", ".join(
        f"{key} {run['cell']['scored']}/{run['cell']['images']}"
        for key, run in record["runs"].items()))  # fmt: skip
    for key, run in record["runs"].items():
        failed = run["cell"]["images"] - run["cell"]["scored"]
        if failed:
            lines.append(f"**{key}: {failed} of {run['cell']['images']} images failed**: its "
                         f"numbers are on the {run['cell']['scored']} scored (see its "
                         "metrics.json).")  # fmt: skip
    limited = [f"{key} (first {run['limit']})" for key, run in record["runs"].items()
               if run["limit"]]  # fmt: skip
    if limited:
        lines.append(f"Limited runs, smoke runs not comparable with the paper's numbers: "
                     f"{', '.join(limited)}.")  # fmt: skip
    lines.append("Intervals: 95 % percentile bootstrap over images (metrics.json of each run); "
                 "n: the images a cell is computed on.")  # fmt: skip
    return "\n".join(lines) + "\n"


def _shown(cell: dict) -> list[str]:
    """SRCC and PLCC cells: the value, its interval where there is one, and its n."""
    n = f"n = {cell['scored']}" + (f" of {cell['images']}" if cell["scored"] < cell["images"]
                                   else "")  # fmt: skip
    shown = []
    for name in ("srcc", "plcc"):
        value, ci = cell[name], cell[f"{name}_ci"]
        if value is None or not np.isfinite(value):
            shown.append(f"n/a ({cell['reason'] or 'not computed'}; {n})")
            continue
        text = f"{value:.3f}"
        if ci[0] is not None and np.isfinite(ci[0]):
            text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        shown.append(f"{text} ({n})")
    return shown
