"""A collection run's rows: one per input, as Parquet (SCHEMA), with every rating a readout
or an ablation needs, so a run is rescored later without a model.

Per row: the input's id and shard, its pixels' digest, width and height, its encoded
size in bytes (null for a path that failed before it was read), the score, its spread,
s_global and s_local (means over the models), the region count, and the ratings of its
views (view 0 the whole image, then each region: logprobs (views, models, K),
other_logprob and other_value (views, models), top raw logits and their SeP-IQA weights
(views, models, T) where kept) with the regions' kinds, boxes and areas; `error` says why
a failed input has none of these.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llmiqa.method.aggregate import Aggregation
from llmiqa.method.results import ImageResult

_MATRIX = pa.list_(pa.list_(pa.float64()))
_CUBE = pa.list_(_MATRIX)
SCHEMA = pa.schema([
    ("id", pa.string()), ("shard", pa.string()), ("digest", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("bytes", pa.int64()),
    ("score", pa.float64()), ("spread", pa.float64()),
    ("s_global", pa.float64()), ("s_local", pa.float64()), ("regions", pa.int32()),
    ("models", pa.list_(pa.string())), ("kinds", pa.list_(pa.string())),
    ("boxes", pa.list_(pa.list_(pa.int64()))), ("areas", pa.list_(pa.int64())),
    ("logprobs", _CUBE), ("other_logprob", _MATRIX), ("other_value", _MATRIX),
    ("top_logits", _CUBE), ("top_weights", _CUBE),
    ("error", pa.string()),
])  # fmt: skip
# what results.csv shows of a row (the ratings stay in the Parquet file)
CSV_COLUMNS = ("id", "shard", "digest", "width", "height", "bytes", "score", "spread",
               "s_global", "s_local", "regions", "error")  # fmt: skip


def _float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def to_row(result: ImageResult, id: str, shard: str, size: int | None) -> dict:
    """One input's row (a failed one: its id, shard, size and error)."""
    if not result.ok:
        return {"id": id, "shard": shard, "bytes": size, "error": result.error}
    top = {}
    if result.top_logits is not None:
        top = {"top_logits": result.top_logits.tolist(), "top_weights": result.top_weights.tolist()}
    return {
        "id": id, "shard": shard, "digest": result.digest, "width": result.size[0],
        "height": result.size[1], "bytes": size, "score": result.score,
        "spread": _float(result.spread), "s_global": float(np.mean(result.s_global)),
        "s_local": _float(float(np.mean(result.s_local))), "regions": len(result.kinds),
        "models": list(result.models), "kinds": list(result.kinds),
        "boxes": [list(box) for box in result.boxes], "areas": list(result.areas),
        "logprobs": result.logprobs.tolist(), "other_logprob": result.other_logprob.tolist(),
        "other_value": result.other_value.tolist(), **top,
    }  # fmt: skip


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def from_row(row: dict, aggregation: Aggregation, words: tuple[str, ...]) -> ImageResult:
    """The ImageResult a row records (under the run's aggregation and answer words)."""
    if row["error"] is not None:
        return ImageResult(name=row["id"], error=row["error"])
    top = {}
    if row["top_logits"] is not None:
        top = {
            "top_logits": np.array(row["top_logits"], dtype=np.float64),
            "top_weights": np.array(row["top_weights"], dtype=np.float64),
        }
    return ImageResult(
        name=row["id"], models=tuple(row["models"]), digest=row["digest"],
        size=(row["width"], row["height"]), kinds=tuple(row["kinds"]),
        boxes=tuple(tuple(box) for box in row["boxes"]), areas=tuple(row["areas"]),
        logprobs=np.array(row["logprobs"], dtype=np.float64),
        other_logprob=np.array(row["other_logprob"], dtype=np.float64),
        other_value=np.array(row["other_value"], dtype=np.float64),
        aggregation=aggregation, words=words, **top,
    )  # fmt: skip


def iter_rows(file: Path, columns: list[str] | None = None) -> Iterator[dict]:
    """The rows of a results Parquet file, one record batch in memory at a time."""
    for batch in pq.ParquetFile(file).iter_batches(batch_size=1024, columns=columns):
        yield from batch.to_pylist()
