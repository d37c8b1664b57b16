"""llmiqa.integrations.nemo_curator.LlmiqaStage in a real NeMo Curator pipeline on the CPU,
run by NeMo's Ray Data executor on a local Ray cluster: file partitioning, a reader of tar
shards (NeMo's own ImageReaderStage needs DALI), llmiqa, then NeMo's ImageWriterStage.

Needs NeMo Curator (`make test-nemo`, in .venv-nemo); elsewhere the file is skipped, except
under `make test-nemo`, which sets LLMIQA_REQUIRE_NEMO=1: then a missing package fails.
"""

from __future__ import annotations

import ast
import importlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def need(module: str):
    if os.environ.get("LLMIQA_REQUIRE_NEMO") == "1":
        return importlib.import_module(module)
    return pytest.importorskip(module)


need("nemo_curator")

from nemo_curator.pipeline import Pipeline  # noqa: E402
from nemo_curator.stages.base import ProcessingStage  # noqa: E402
from nemo_curator.tasks import FileGroupTask, ImageBatch, ImageObject  # noqa: E402

from llmiqa.errors import UsageError  # noqa: E402
from llmiqa.integrations.nemo_curator import LlmiqaStage  # noqa: E402
from llmiqa.method.regions import RegionSettings  # noqa: E402
from llmiqa.scoring.pipeline import Scorer  # noqa: E402

SHARD = 3  # images per tar shard


@dataclass
class TarReaderStage(ProcessingStage[FileGroupTask, ImageBatch]):
    """One ImageBatch per tar shard, each member decoded by PIL to an RGB (H, W, 3) array;
    a member PIL cannot read keeps no pixels (what a lenient reader does)."""

    name: str = "tar_reader"

    def inputs(self) -> tuple[list[str], list[str]]:
        return ["data"], []

    def outputs(self) -> tuple[list[str], list[str]]:
        return ["data"], []

    def process(self, task: FileGroupTask) -> list[ImageBatch]:
        batches = []
        for shard in task.data:
            images = []
            with tarfile.open(shard) as tar:
                for member in tar.getmembers():
                    data = tar.extractfile(member).read()
                    try:
                        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                    except OSError:
                        pixels = np.zeros((2, 2), dtype=np.float32)  # not an image
                    images.append(ImageObject(image_path=f"{shard}/{member.name}",
                                              image_id=Path(member.name).stem,
                                              image_data=pixels))  # fmt: skip
            batches.append(ImageBatch(data=images, dataset_name="shards"))
        return batches


def write_shards(folder: Path, images: list[Path]) -> None:
    folder.mkdir()
    for first in range(0, len(images), SHARD):
        with tarfile.open(folder / f"shard-{first // SHARD:04d}.tar", "w") as tar:
            for number, image in enumerate(images[first : first + SHARD], start=first):
                data = image.read_bytes()
                info = tarfile.TarInfo(f"{number:06d}{image.suffix.lower()}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def truth(qwen2_vl_dir, real_images) -> dict[str, tuple[float, float]]:
    scorer = Scorer([str(qwen2_vl_dir)], regions=RegionSettings("whole-only"))
    return {f"{n:06d}": (r.score, r.spread) for n, r in enumerate(scorer.score(real_images))}


def test_a_nemo_curator_pipeline_keeps_the_images_above_the_threshold(
    tmp_path, monkeypatch, qwen2_vl_dir, real_images, truth
):
    ray = pytest.importorskip("ray")
    import pyarrow.parquet as pq
    from nemo_curator.backends.ray_data import RayDataExecutor
    from nemo_curator.stages.file_partitioning import FilePartitioningStage
    from nemo_curator.stages.image.io.image_writer import ImageWriterStage

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    write_shards(tmp_path / "shards", [*real_images, broken])  # 8 photos, then no image
    threshold = float(np.median([score for score, _ in truth.values()]))
    stage = LlmiqaStage(
        str(qwen2_vl_dir), options={"region_mode": "whole-only"}, threshold=threshold
    )
    pipeline = Pipeline(
        name="llmiqa",
        stages=[
            FilePartitioningStage(
                file_paths=str(tmp_path / "shards"), file_extensions=[".tar"], files_per_partition=1
            ),
            TarReaderStage(),
            stage,
            ImageWriterStage(output_dir=str(tmp_path / "kept"), images_per_tar=SHARD),
        ],
    )
    # a cluster of its own ("local"), which any ray.init() in NeMo's code joins through
    # RAY_ADDRESS (other Ray clusters may run on this machine); the executor shuts it down
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    try:
        pipeline.run(executor=RayDataExecutor())
    finally:
        ray.shutdown()

    kept = sorted((tmp_path / "kept").iterdir())
    rows = [
        row for file in kept if file.suffix == ".parquet" for row in pq.read_table(file).to_pylist()
    ]
    metadata = {r["image_id"]: ast.literal_eval(r["metadata"]) for r in rows}
    expected = {key: score for key, (score, _) in truth.items() if score >= threshold}
    assert {key: m["llmiqa_score"] for key, m in metadata.items()} == expected
    assert all(m["llmiqa_spread"] == truth[key][1] and m["llmiqa_error"] is None
               for key, m in metadata.items())  # fmt: skip
    members = set()
    for file in kept:
        if file.suffix == ".tar":
            with tarfile.open(file) as tar:
                members |= set(tar.getnames())
    assert members == {f"{key}.jpg" for key in expected}


def test_without_a_threshold_every_image_stays_and_a_failed_one_says_why(
    qwen2_vl_dir, real_images, truth
):
    stage = LlmiqaStage(str(qwen2_vl_dir), options={"region_mode": "whole-only"})
    stage.setup()
    images = [
        ImageObject(image_id="000000", image_data=np.asarray(Image.open(real_images[0]))),
        ImageObject(image_id="000001", image_path=str(real_images[1])),  # no pixels: the path
        ImageObject(image_id="bad", image_data=np.zeros((2, 2, 3), dtype=np.float64)),
    ]
    out = stage.process(ImageBatch(data=images, dataset_name="d"))
    assert [i.image_id for i in out.data] == ["000000", "000001", "bad"]
    assert [i.metadata["llmiqa_score"] for i in out.data[:2]] == [truth["000000"][0],
                                                                  truth["000001"][0]]  # fmt: skip
    assert out.data[2].metadata["llmiqa_score"] is None
    assert out.data[2].metadata["llmiqa_error"].startswith("bad: an image array must be uint8")


def test_a_bad_option_fails_when_the_pipeline_is_built():
    with pytest.raises(UsageError, match="unknown option"):
        LlmiqaStage("some/model", options={"levle": 5})
