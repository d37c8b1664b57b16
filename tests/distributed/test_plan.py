"""Planning a Ray run without Ray: the jobs are the requests a single process would rate,
in its chunks and order, each once, without pixels."""

import pickle

import pytest

from llmiqa.distributed.plan import Decoded, Undecoded, plan
from llmiqa.errors import UsageError
from llmiqa.inputs.images import load_image
from llmiqa.loading.runtime import Runtime
from llmiqa.method.regions import RegionSettings
from llmiqa.scoring.pipeline import Scorer
from llmiqa.scoring.store import Store
from llmiqa.tiny import PERMISSIVE_MASKS


@pytest.fixture(scope="module")
def decoded(photos) -> list[Decoded]:
    """The photos as a decode task reports them (twice each: duplicates are planned once)."""
    found = []
    for path in photos * 2:
        image = load_image(path)
        found.append(Decoded(path, image.digest, image.image.size))
    return found


def scorer(qwen2_vl_dir, sam2_dir, store=None, batch_size=1) -> Scorer:
    return Scorer([str(qwen2_vl_dir)], segmenter=str(sam2_dir), masks=PERMISSIVE_MASKS,
                  runtime=Runtime(batch_size=batch_size), store=store or Store())  # fmt: skip


def segment(scorer: Scorer, decoded: list[Decoded]) -> None:
    """What the mask phase leaves in the store."""
    for item in decoded:
        scorer.segmenter.masks(load_image(item.path))


def test_jobs_are_what_a_single_process_rates_each_once(qwen2_vl_dir, sam2_dir, decoded):
    planner = scorer(qwen2_vl_dir, sam2_dir)
    segment(planner, decoded)
    (jobs,), unplanned = plan(planner.seam(), decoded)
    assert unplanned == set() and planner.usage.loaded == [str(sam2_dir)]  # no MLLM
    keys = [r.key for job in jobs for r in job.requests]
    assert len(keys) == len(set(keys))
    single = scorer(qwen2_vl_dir, sam2_dir, store=planner.store)
    single.score([d.path for d in decoded])
    assert single.usage.rated == len(keys)  # the same work, and all of it


def test_each_job_is_one_chunk_in_rating_order_without_pixels(qwen2_vl_dir, sam2_dir, decoded):
    planner = scorer(qwen2_vl_dir, sam2_dir)
    segment(planner, decoded)
    (jobs,), _ = plan(planner.seam(), decoded)
    assert len(jobs) == -(-len({d.digest for d in decoded}) // planner.chunk_size)
    for job in jobs:
        assert all(r.source is None for r in job.requests)
        costs = [r.cost for r in job.requests]
        assert costs == sorted(costs)  # smallest first: little padding per batch
        assert {digest for _, digest in job.images} == {r.image for r in job.requests}
        assert pickle.loads(pickle.dumps(job)) == job  # plain data for the workers


def test_stored_ratings_and_failed_masks_are_not_planned(qwen2_vl_dir, sam2_dir, decoded):
    planner = scorer(qwen2_vl_dir, sam2_dir)
    segment(planner, decoded[1:])
    planner.segmenter.commit(decoded[0].digest, (1, 1), "SAM2 ran out of memory")
    whole = scorer(qwen2_vl_dir, sam2_dir, store=planner.store)
    whole.score([decoded[1].path])  # one image already rated
    (jobs,), unplanned = plan(planner.seam(), decoded)
    assert unplanned == {decoded[0].digest}
    planned = {r.image for job in jobs for r in job.requests}
    assert decoded[0].digest not in planned and decoded[1].digest not in planned


def test_planning_needs_the_masks_and_never_the_pixels(qwen2_vl_dir, sam2_dir, decoded):
    planner = scorer(qwen2_vl_dir, sam2_dir)
    with pytest.raises(UsageError, match=r"masks of .* are missing from the store"):
        plan(planner.seam(), decoded)  # the mask phase did not run: stop, in one line
    assert planner.usage.loaded == []
    whole_only = Scorer([str(qwen2_vl_dir)], regions=RegionSettings(region_mode="whole-only"))
    (jobs,), _ = plan(whole_only.seam(), decoded)
    assert sum(len(job.requests) for job in jobs) == len({d.digest for d in decoded})
    with pytest.raises(UsageError, match="pixels were needed"):
        Undecoded("a.png", 10, 10).crop((0, 0, 1, 1))
