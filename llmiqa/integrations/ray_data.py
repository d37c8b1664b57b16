"""llmiqa as a step of any Ray Data pipeline: a callable class for `Dataset.map_batches`.

    scored = dataset.map_batches(
        Score, fn_constructor_args=("Qwen/Qwen2.5-VL-7B-Instruct",),
        fn_constructor_kwargs={"column": "jpg", "region_mode": "whole-only"},
        compute=ray.data.ActorPoolStrategy(size=2), num_gpus=1)
    scored.filter(lambda row: row["error"] is None and row["score"] >= 4).write_parquet(...)

Each actor builds one Scorer (any backend) and loads its models once, on its first batch:
Ray Data calls a class's methods on another thread than its constructor, and a Scorer's
SQLite store belongs to the thread that opened it. The image column holds encoded bytes
(a WebDataset member, a Parquet cell), a decoded uint8 array (H, W[, C]) or a path. An image
that cannot be scored is a row with `error` set, never an exception that stops the
pipeline; a problem with the whole step (an unknown option, a missing column, a model that
does not load) raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from llmiqa.errors import UsageError
from llmiqa.inputs.images import Encoded, ImageError, from_pil
from llmiqa.integrations.pyiqa import resolve_call
from llmiqa.method.aggregate import level_probs
from llmiqa.method.results import ImageResult

if TYPE_CHECKING:
    from llmiqa.scoring.pipeline import ImageInput, Scorer

# The columns Score adds: view 0 of view_scores and view_probs is the whole image, then its
# regions in the order of `llmiqa score --json`'s "regions"; view_probs are each view's
# P(level 1..K), averaged over the models.
COLUMNS = ("score", "spread", "view_scores", "view_probs", "error")


class Score:
    """`map_batches(Score, fn_constructor_kwargs=...)`: adds COLUMNS to every batch.

    `preset_or_model` and `options` are those of `llmiqa.create_metric` (a preset name or a
    model, then the CLI's options by key: device, backend, region_mode, ...); `column` names
    the image column; `store` caches masks and ratings in a SQLite file (default:
    memory). Batches may be dicts of numpy arrays (Ray's default), pandas DataFrames or
    pyarrow Tables; each comes back in its own format.
    """

    def __init__(
        self,
        preset_or_model: str | Sequence[str] | None = None,
        *,
        column: str = "image",
        store: str | Path | None = None,
        **options: Any,
    ) -> None:
        self.options = resolve_call(preset_or_model, options)  # a bad option fails here
        self.column = column
        self.store = store
        self._scorer: Scorer | None = None

    @property
    def scorer(self) -> Scorer:
        """The actor's one Scorer, built on first use, on the thread that scores."""
        if self._scorer is None:
            from llmiqa.scoring.pipeline import Scorer

            self._scorer = Scorer.from_options(self.options, self.store)
        return self._scorer

    def __call__(self, batch: Any) -> Any:
        values = _column(batch, self.column)
        taken = [name for name in COLUMNS if name in _names(batch)]
        if taken:
            raise UsageError(f"the batch already has column(s) {', '.join(taken)}: rename them")
        names = [f"<{self.column} {number}>" for number in range(len(values))]
        rows = self.rows(values, names)
        return _with_columns(batch, {name: [r[name] for r in rows] for name in COLUMNS})

    def rows(self, values: Sequence[Any], names: Sequence[str]) -> list[dict[str, Any]]:
        """COLUMNS for each image (cells as `as_input` takes them, named for errors)."""
        items: list[ImageInput | ImageResult] = []
        for value, name in zip(values, names, strict=True):
            try:
                items.append(as_input(value, name))
            except ImageError as error:
                items.append(ImageResult(name=name, error=str(error)))
        inputs = [item for item in items if not isinstance(item, ImageResult)]
        scored = iter(self.scorer.score(inputs) if inputs else [])
        return [row(item if isinstance(item, ImageResult) else next(scored)) for item in items]


def as_input(value: Any, name: str) -> ImageInput:
    """One cell of the image column as what a Scorer takes; ImageError when it is none."""
    if isinstance(value, bytes | bytearray | memoryview):
        return Encoded(name, bytes(value))
    if isinstance(value, str | Path):
        return value
    if isinstance(value, np.ndarray):
        shape, channels = value.shape, value.shape[2] if value.ndim == 3 else 1
        if value.dtype != np.uint8 or value.ndim not in (2, 3) or channels not in (1, 3, 4):
            raise ImageError(
                f"{name}: an image array must be uint8 (H, W) or (H, W, 1|3|4), "
                f"got {value.dtype} {shape}"
            )
        pixels = value[..., 0] if value.ndim == 3 and channels == 1 else value
        return from_pil(Image.fromarray(np.ascontiguousarray(pixels)), name)
    kind = "null" if value is None else f"a {type(value).__name__}"
    raise ImageError(f"{name}: {kind} is not an image: give encoded bytes, a uint8 array or a path")


def row(result: ImageResult) -> dict[str, Any]:
    """The added columns of one image, as plain Python values Arrow stores."""
    if not result.ok:
        return {"score": None, "spread": None, "view_scores": None, "view_probs": None,
                "error": result.error}  # fmt: skip
    spread = result.spread
    views = [float(np.mean(result.s_global)), *(region.score for region in result.regions)]
    return {
        "score": result.score,
        "spread": None if np.isnan(spread) else spread,
        "view_scores": views,
        "view_probs": level_probs(result.logprobs).mean(axis=1).tolist(),
        "error": None,
    }


def _names(batch: Any) -> list[str]:
    if isinstance(batch, dict):
        return list(batch)
    return list(batch.column_names if hasattr(batch, "column_names") else batch.columns)


def _column(batch: Any, column: str) -> list[Any]:
    """The image column's cells, whatever the batch format."""
    if column not in _names(batch):
        raise UsageError(f"no column {column!r} in the batch (it has {', '.join(_names(batch))})")
    cells = batch[column]
    if hasattr(cells, "combine_chunks"):  # pyarrow (Ray's tensor columns too)
        return list(cells.combine_chunks().to_numpy(zero_copy_only=False))
    return list(cells)


def _with_columns(batch: Any, columns: dict[str, list[Any]]) -> Any:
    """The batch in its own format with the columns added, None kept as None."""
    if hasattr(batch, "append_column"):  # pyarrow
        import pyarrow as pa

        for name, cells in columns.items():
            batch = batch.append_column(name, pa.array(cells))
        return batch
    if isinstance(batch, dict):
        return {**batch, **{name: _objects(cells) for name, cells in columns.items()}}
    import pandas as pd  # a DataFrame: pandas would read None in a text column as NaN

    added = {
        name: pd.Series(cells, index=batch.index, dtype=object) for name, cells in columns.items()
    }
    return batch.assign(**added)


def _objects(cells: list[Any]) -> np.ndarray:
    """A 1-D object array of the cells (numpy would stack lists of one length into 2-D)."""
    array = np.empty(len(cells), dtype=object)
    for number, cell in enumerate(cells):
        array[number] = cell
    return array
