"""The store in front of the models: what is stored is served, what is missing is rated once
and committed as it arrives, and the seam (missing, commit, offline) the Ray driver uses
gives the same answers as rating through the cache. Tiny random Qwen2-VL, real store."""

import numpy as np
import pytest

from llmiqa.inputs.images import load_image
from llmiqa.method.regions import View
from llmiqa.method.standards import Standard
from llmiqa.raters.base import RatingFailure, RatingRequest
from llmiqa.raters.spec import RaterSpec
from llmiqa.scoring.caching import CachingRater, CachingSegmenter, NoModels, Usage
from llmiqa.scoring.store import Store
from llmiqa.segmenters.spec import SegmenterSpec
from llmiqa.tiny import PERMISSIVE_MASKS


@pytest.fixture(scope="module")
def spec(qwen2_vl_dir) -> RaterSpec:
    return RaterSpec(str(qwen2_vl_dir))


@pytest.fixture(scope="module")
def requests(spec, photos) -> list[RatingRequest]:
    """Two photos whole, a crop of the first, and the first again (a duplicate)."""
    prompt = Standard().prompt()
    images = [load_image(p) for p in photos[:2]]
    made = [
        RatingRequest(model=spec.identity, image=i.digest, size=i.image.size, view=View(),
                      prompt=prompt, levels=7, source=i.image)
        for i in images
    ]  # fmt: skip
    first = images[0]
    made.append(RatingRequest(model=spec.identity, image=first.digest, size=first.image.size,
                              view=View((0, 0, 64, 64)), prompt=prompt, levels=7,
                              source=first.image))  # fmt: skip
    return [*made, made[0]]


def cache(spec, store=None) -> CachingRater:
    return CachingRater(spec, store or Store(), Usage())


def test_each_key_is_rated_once_and_every_index_answered(spec, requests):
    rater = cache(spec)
    outcomes = dict(rater.rate(requests))
    assert sorted(outcomes) == [0, 1, 2, 3] and outcomes[3] is outcomes[0]
    assert (rater.usage.rated, rater.usage.from_store) == (3, 0)
    assert rater.usage.loaded == [spec.model]
    again = cache(spec, rater.store)
    stored = dict(again.rate(requests))
    for index in outcomes:
        np.testing.assert_array_equal(stored[index].logprobs, outcomes[index].logprobs)
    assert (again.usage.rated, again.usage.from_store, again.usage.loaded) == (0, 3, [])


def test_missing_is_each_key_the_store_lacks_smallest_first(spec, requests):
    rater = cache(spec)
    missing = rater.missing(requests)
    assert [r.key for r in missing] == [requests[2].key, requests[0].key, requests[1].key]
    rater.commit(requests[2], next(iter(dict(cache(spec).rate(requests[2:3])).values())))
    assert [r.key for r in rater.missing(requests)] == [requests[0].key, requests[1].key]
    assert rater.usage.rated == 1 and rater.usage.loaded == []


def test_a_failure_is_remembered_in_memory_not_stored(spec, requests):
    rater = cache(spec)
    failure = RatingFailure("rating failed (a processor refused it)")
    rater.commit(requests[1], failure)
    assert rater.missing(requests[:2]) == [requests[0]]
    outcomes = dict(rater.rate(requests[1:2]))
    assert outcomes == {0: failure} and rater.usage.loaded == []
    assert rater.store.counts()["ratings"] == 0  # the next run rates it again


def test_offline_serves_what_was_committed_and_stops_on_the_rest(spec, requests):
    online = cache(spec)
    for index, outcome in cache(spec).rate(requests[:2]):  # as Ray workers would send them
        online.commit(requests[index], outcome)
    offline = online.offline()
    outcomes = dict(offline.rate(requests[:2]))
    assert len(outcomes) == 2 and online.usage.rated == 2
    assert online.usage.from_store == 0  # committed by this process: counted once, as rated
    with pytest.raises(NoModels, match="missing from the store after the Ray phases"):
        dict(offline.rate(requests[2:3]))
    assert online.usage.loaded == []


def test_refused_rows_are_counted_noted_and_rated_again(spec, requests, tmp_path):
    store = Store(tmp_path / "s.sqlite")
    dict(cache(spec, store).rate(requests[:1]))
    store.db.execute("UPDATE ratings SET logprobs = ?", (np.full(7, 0.5).tobytes(),))
    rater = cache(spec, store)
    assert rater.missing(requests[:1]) == requests[:1]
    assert rater.usage.refused == 1 and "checksum mismatch" in rater.usage.notes[0]


def test_masks_are_segmented_once_and_served_after(sam2_dir, photos):
    spec = SegmenterSpec(str(sam2_dir), PERMISSIVE_MASKS)
    image = load_image(photos[0])
    segmenter = CachingSegmenter(spec, Store(), Usage())
    assert segmenter.missing([image.digest, image.digest]) == [image.digest]
    masks = segmenter.masks(image)
    assert segmenter.missing([image.digest]) == []
    again = CachingSegmenter(spec, segmenter.store, Usage())
    assert all(np.array_equal(a, b) for a, b in zip(again.masks(image), masks, strict=True))
    assert (again.usage.masks_from_store, again.usage.loaded) == (1, [])
    assert (segmenter.usage.segmented, segmenter.usage.loaded) == (1, [str(sam2_dir)])


def test_a_committed_segmentation_error_is_raised_again_and_offline_loads_nothing(sam2_dir, photos):
    spec = SegmenterSpec(str(sam2_dir), PERMISSIVE_MASKS)
    first, second = (load_image(p) for p in photos[:2])
    segmenter = CachingSegmenter(spec, Store(), Usage())
    segmenter.commit(first.digest, (1, 1), "out of memory")
    with pytest.raises(RuntimeError, match="out of memory"):
        segmenter.masks(first)
    with pytest.raises(NoModels, match=r"masks of .* are missing"):
        segmenter.offline().masks(second)
    assert segmenter.usage.loaded == []
