"""A run's configuration (config.json): the dataset and every scoring option, resolved,
and the run id every output carries."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmiqa import __version__
from llmiqa.errors import RunError, UsageError, one_line
from llmiqa.inputs.datasets import Dataset, load_dataset
from llmiqa.scoring.presets import resolve

CONFIG = "config.json"


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
        from llmiqa.scoring.pipeline import Scorer

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


def shard_of(samples: Sequence, shard: tuple[int, int] | None) -> list:
    """Samples i, i+n, i+2n, ... for shard (i, n): one process per GPU, one shared store."""
    if shard is None:
        return list(samples)
    index, count = shard
    return list(samples)[index::count]
