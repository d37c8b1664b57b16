"""llmiqa.integrations.ray_data.Score: the map_batches step. Its batches (numpy, pandas,
pyarrow; bytes, arrays, paths) are checked here against the Scorer on the same real images;
the `ray` test runs it in a real pipeline on a local Ray cluster: read_webdataset, llmiqa,
a filter on the score, write_parquet (as the README shows)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from llmiqa.errors import UsageError
from llmiqa.inputs.images import load_image
from llmiqa.integrations.ray_data import COLUMNS, Score
from llmiqa.method.regions import RegionSettings
from llmiqa.scoring.pipeline import Scorer

PERMISSIVE = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def step(qwen2_vl_dir) -> Score:
    return Score(str(qwen2_vl_dir), column="jpg", region_mode="whole-only", device="cpu")


@pytest.fixture(scope="module")
def expected(qwen2_vl_dir, photos) -> list[float]:
    """What the Scorer gives the same photos."""
    scorer = Scorer([str(qwen2_vl_dir)], regions=RegionSettings("whole-only"))
    return [result.score for result in scorer.score(photos)]


def cells(photos: list[str]) -> list:
    """The four photos as each kind of cell a batch may hold, and two that are no image."""
    return [
        Path(photos[0]).read_bytes(),
        np.asarray(load_image(photos[1]).image),
        photos[2],
        Path(photos[3]).read_bytes(),
        b"not an image",
        np.zeros((4, 4, 3), dtype=np.float32),
    ]


def check(rows: list[dict], expected: list[float]) -> None:
    assert [r["score"] for r in rows[:4]] == expected
    assert all(r["error"] is None and r["view_scores"] == [r["score"]] for r in rows[:4])
    assert all(len(r["view_probs"]) == 1 and abs(sum(r["view_probs"][0]) - 1) < 1e-9
               for r in rows[:4])  # fmt: skip
    assert "<jpg 4>: not an image file PIL can read" in rows[4]["error"]
    assert "<jpg 5>: an image array must be uint8" in rows[5]["error"]
    assert all(r[name] is None for r in rows[4:] for name in COLUMNS[:4])


def test_a_numpy_batch_of_bytes_arrays_and_paths_scores_as_the_scorer(step, photos, expected):
    batch = {"jpg": np.empty(6, dtype=object), "key": np.arange(6)}
    batch["jpg"][:] = cells(photos)
    out = step(batch)
    assert list(out) == ["jpg", "key", *COLUMNS]
    assert out["key"].tolist() == list(range(6))
    check([{name: out[name][i] for name in COLUMNS} for i in range(6)], expected)


def test_a_pyarrow_batch_comes_back_as_a_table(step, photos, expected):
    table = pa.table({"jpg": [Path(p).read_bytes() for p in photos], "key": list("abcd")})
    out = step(table)
    assert isinstance(out, pa.Table) and out.column_names == ["jpg", "key", *COLUMNS]
    assert out.column("score").to_pylist() == expected
    assert pa.types.is_list(out.schema.field("view_probs").type)


@pytest.mark.ray  # pandas comes with the ray extra (ray[data]), not with llmiqa
def test_a_pandas_batch_comes_back_as_a_frame(step, photos, expected):
    import pandas as pd

    frame = step(pd.DataFrame({"jpg": cells(photos)}))
    assert isinstance(frame, pd.DataFrame)
    check(frame.to_dict("records"), expected)


def test_regions_give_one_view_score_and_distribution_per_view(qwen2_vl_dir, sam2_dir, photos):
    step = Score(str(qwen2_vl_dir), column="path", segmenter=str(sam2_dir), **PERMISSIVE)
    out = step({"path": np.array(photos[:1], dtype=object)})
    (result,) = step.scorer.score(photos[:1])
    assert len(result.regions) >= 1
    assert out["view_scores"][0] == [float(np.mean(result.s_global))] + [
        region.score for region in result.regions
    ]
    assert len(out["view_probs"][0]) == 1 + len(result.regions) and out["score"][0] == result.score


def test_a_problem_with_the_whole_step_raises_one_line(step):
    with pytest.raises(UsageError, match="unknown option"):
        Score("some/model", levle=5)
    with pytest.raises(UsageError, match="no column 'jpg' in the batch \\(it has png\\)"):
        step({"png": np.array([b""], dtype=object)})
    with pytest.raises(UsageError, match="already has column\\(s\\) score, error"):
        step({"jpg": np.array([b""], dtype=object), "score": [1], "error": [None]})


# ---- a real pipeline on a local Ray cluster -----------------------------------------------


def write_shards(folder: Path, images: list[Path], per_shard: int) -> list[str]:
    """WebDataset tar shards: one `KEY.jpg` member per image (KEY its position)."""
    folder.mkdir()
    shards = []
    for first in range(0, len(images), per_shard):
        shard = folder / f"shard-{first // per_shard:04d}.tar"
        with tarfile.open(shard, "w") as tar:
            for number, image in enumerate(images[first : first + per_shard], start=first):
                data = image.read_bytes()
                info = tarfile.TarInfo(f"{number:06d}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        shards.append(str(shard))
    return shards


@pytest.mark.ray
def test_a_ray_data_pipeline_reads_scores_filters_and_writes_parquet(
    tmp_path, qwen2_vl_dir, real_images
):
    ray = pytest.importorskip("ray")
    import pyarrow.parquet as pq

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    images = [*real_images, broken]  # 8 real images, then one that is no image
    shards = write_shards(tmp_path / "shards", images, per_shard=3)
    scorer = Scorer([str(qwen2_vl_dir)], regions=RegionSettings("whole-only"))
    truth = {f"{n:06d}": r.score for n, r in enumerate(scorer.score(real_images))}
    threshold = float(np.median(list(truth.values())))

    # a cluster of its own ("local"): ray.init() alone would join any Ray started here
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # the README's pipeline, bytes in (decoder=None); fractional CPUs: 2 cores hold the
        # reading task and both actors
        scored = ray.data.read_webdataset(shards, decoder=None).map_batches(
            Score,
            fn_constructor_args=(str(qwen2_vl_dir),),
            fn_constructor_kwargs={"column": "jpg", "region_mode": "whole-only"},
            batch_size=4,
            compute=ray.data.ActorPoolStrategy(size=2),
            num_cpus=0.5,
        )
        scored = scored.materialize()  # scored once: written below, its failures read
        kept = scored.filter(lambda row: row["error"] is None and row["score"] >= threshold)
        kept.drop_columns(["jpg"]).write_parquet(str(tmp_path / "out"))
        failed = scored.filter(lambda row: row["error"] is not None).take_all()
    finally:
        ray.shutdown()

    rows = pq.read_table(tmp_path / "out").to_pylist()
    assert {r["__key__"]: r["score"] for r in rows} == {
        key: score for key, score in truth.items() if score >= threshold
    }
    assert all(len(r["view_probs"][0]) == 7 and r["spread"] >= 0 for r in rows)
    assert [r["__key__"] for r in failed] == ["000008"]
    assert failed[0]["error"].endswith(": not an image file PIL can read")
