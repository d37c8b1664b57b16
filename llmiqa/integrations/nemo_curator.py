"""llmiqa as a NeMo Curator stage: scores each ImageBatch, writes the score into every
image's metadata and, given a threshold, drops the images below it.

    Pipeline(name="curate", stages=[
        FilePartitioningStage(file_paths="shards/", file_extensions=[".tar"]),
        ImageReaderStage(),                                   # or any reader of ImageBatch
        LlmiqaStage("Qwen/Qwen2.5-VL-7B-Instruct", threshold=4.0,
                    options={"region_mode": "whole-only"}).with_(resources=Resources(gpus=1)),
        ImageWriterStage(output_dir="kept/"),
    ]).run(executor=RayDataExecutor())

Metadata keys: `llmiqa_score` and `llmiqa_spread` (None where the readout has none), and
`llmiqa_error` (None, or the one line saying why an image could not be scored). An image
that cannot be scored stays in the batch with its error, except under a threshold, which
only images scoring at least the threshold pass. NeMo Curator 1.4 (`nemo-curator[image-cpu]`,
`make test-nemo`); this module imports it, so only code that uses the stage imports this.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from nemo_curator.backends.base import WorkerMetadata
from nemo_curator.stages.base import ProcessingStage
from nemo_curator.tasks import ImageBatch

from llmiqa.integrations.ray_data import Score

log = logging.getLogger("llmiqa")
KEYS = {"score": "llmiqa_score", "spread": "llmiqa_spread", "error": "llmiqa_error"}


@dataclass
class LlmiqaStage(ProcessingStage[ImageBatch, ImageBatch]):
    """`model` and `options` are those of `llmiqa.create_metric` (a preset name or a model,
    then the CLI's options by key); `store` a SQLite file caching ratings (default: memory).
    Each worker (an actor: the stage has a setup) loads its models once; give it a GPU with
    `.with_(resources=Resources(gpus=1))` (nemo_curator.stages.resources)."""

    model: str | list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    store: str | None = None
    name: str = "llmiqa"

    def __post_init__(self) -> None:
        self._score = Score(self.model, store=self.store, **self.options)  # checked here

    def inputs(self) -> tuple[list[str], list[str]]:
        return ["data"], []

    def outputs(self) -> tuple[list[str], list[str]]:
        return ["data"], []

    def setup(self, worker_metadata: WorkerMetadata | None = None) -> None:
        """Once per worker; the Scorer itself is built on its first batch, on the thread
        that scores (NeMo's Ray Data executor calls setup and process on different ones)."""

    def process(self, task: ImageBatch) -> ImageBatch:
        images = task.data
        values = [i.image_path if i.image_data is None else i.image_data for i in images]
        names = [i.image_id or i.image_path for i in images]
        for image, row in zip(images, self._score.rows(values, names), strict=True):
            image.metadata.update({key: row[column] for column, key in KEYS.items()})
        kept = images
        if self.threshold is not None:
            kept = [i for i in images if passes(i.metadata["llmiqa_score"], self.threshold)]
            log.info("llmiqa kept %d of %d images (score >= %g)", len(kept), len(images),
                     self.threshold)  # fmt: skip
        return ImageBatch(
            data=kept,
            dataset_name=task.dataset_name,
            _metadata=task._metadata,
            _stage_perf=task._stage_perf,
        )


def passes(score: float | None, threshold: float) -> bool:
    """An image passes a threshold with a score at least that high; unscored, it does not."""
    return score is not None and score >= threshold
