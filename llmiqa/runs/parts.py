"""A collection run's finished shards, each one Parquet part file: what makes a killed
run's rerun exact and cheap.

`OUT/parts/<options id>/<shard key>.parquet` (`folder`) holds a shard's rows once all its
inputs are scored, written aside and renamed (never half a file under the name), with
page checksums and, in its metadata, the shard's fingerprint and summary. A rerun takes a
part whose fingerprint matches and whose pages and row count check out, and rescores any
other shard (its ratings come from the store, so without model calls).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from llmiqa.inputs.shards import Shard
from llmiqa.runs.config import RunConfig
from llmiqa.runs.rows import SCHEMA
from llmiqa.scoring.knobs import speed_only

PARTS = "parts"
_META = b"llmiqa.part"


@dataclass(frozen=True)
class ShardSummary:
    """What scoring one shard did: small enough to send back from a worker."""

    key: str
    inputs: int  # inputs seen: scored + failed
    scored: int
    failed: int
    damage: str | None = None  # the shard was truncated or unreadable: the one line
    errors: tuple[str, ...] = ()  # each failed input's error, in order
    reused: bool = False  # taken from a finished part, nothing scored


def folder(out: Path, config: RunConfig, models: dict[str, str]) -> Path:
    """Where a run's parts are, named by what makes a shard's rows: the options that change
    a number and each model's identity (`models`: a checkpoint retrained in place, a hub id
    that moved or another dtype give other rows), not the options that change only speed
    nor the list of inputs. A part is checked against its shard's fingerprint whichever run
    listed it, so a run that adds inputs, or resumes on another device, takes the earlier
    run's parts; a run with other numbers never does."""
    quiet = speed_only()
    made_by = [
        {k: v for k, v in config.dataset.items() if k != "inputs"},
        {k: v for k, v in config.scoring.items() if k not in quiet},
        config.preset,
        models,
    ]
    text = json.dumps(made_by, sort_keys=True, default=str)
    return out / PARTS / hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def part_file(parts: Path, shard: Shard) -> Path:
    return parts / f"{shard.key}.parquet"


def write_part(parts: Path, shard: Shard, table: pa.Table, summary: ShardSummary) -> None:
    """The shard's rows under its key, whole or not at all (written aside, then renamed)."""
    record = {"fingerprint": shard.fingerprint, "summary": asdict(summary)}
    table = table.replace_schema_metadata({_META: json.dumps(record).encode()})
    final = part_file(parts, shard)
    aside = final.with_name(f".{final.name}.{os.getpid()}")
    parts.mkdir(parents=True, exist_ok=True)
    try:
        with open(aside, "wb") as handle:
            pq.write_table(table, handle, write_page_checksum=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(aside, final)
    finally:
        aside.unlink(missing_ok=True)


def read_part(parts: Path, shard: Shard) -> tuple[pa.Table, ShardSummary] | None:
    """The shard's finished rows and summary; None when there is no part, or one of another
    version of the shard's files, or one that does not check out (then it is scored again)."""
    file = part_file(parts, shard)
    try:
        table = pq.read_table(file, page_checksum_verification=True, schema=SCHEMA)
        metadata = pq.read_schema(file).metadata or {}
        record = json.loads(metadata[_META])
        said = record["summary"]
        summary = ShardSummary(**{**said, "errors": tuple(said["errors"])})
    except (OSError, pa.ArrowException, KeyError, ValueError, TypeError):
        return None
    if record["fingerprint"] != shard.fingerprint or table.num_rows != summary.inputs:
        return None
    return table, summary
