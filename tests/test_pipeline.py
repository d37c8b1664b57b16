"""The Scorer end to end on tiny random models and real images (plumbing, not accuracy)."""

import numpy as np
import pytest
from PIL import Image

from llmiqa.aggregate import readout
from llmiqa.images import load_image
from llmiqa.pipeline import Scorer
from llmiqa.regions import sub_image
from llmiqa.results import Aggregation
from llmiqa.segment import MaskSettings
from llmiqa.standards import Standard
from llmiqa.store import Store


@pytest.fixture(scope="module")
def photos(real_images):
    return [str(p) for p in real_images[:4]]


def whole_only(model_dir, **options) -> Scorer:
    return Scorer([str(model_dir)], region_mode="whole-only", **options)


def test_whole_image_scores_are_the_expected_level_of_the_probabilities(qwen2_vl_dir, photos):
    results = whole_only(qwen2_vl_dir).score(photos)
    assert [r.name for r in results] == photos
    for result in results:
        assert result.ok and 1 <= result.score <= 7
        np.testing.assert_allclose(result.probs.sum(), 1.0)
        assert result.score == pytest.approx(float(readout(result.probs)))
        assert result.regions == () and np.isnan(result.s_local).all()


def test_a_second_run_on_the_same_store_loads_no_model(qwen2_vl_dir, photos, tmp_path):
    first = whole_only(qwen2_vl_dir, store=tmp_path / "s.sqlite")
    before = [r.score for r in first.score(photos)]
    assert first.stats["model calls"] > 0
    again = whole_only(qwen2_vl_dir, store=tmp_path / "s.sqlite")
    after = [r.score for r in again.score(photos)]
    assert after == before
    assert again.stats["model calls"] == 0 and again.stats["from store"] == len(photos)
    assert again._raters == {}  # nothing was even loaded


def test_identical_images_are_rated_once(qwen2_vl_dir, photos):
    scorer = whole_only(qwen2_vl_dir)
    results = scorer.score([photos[0], photos[1], photos[0]])
    assert scorer.stats["rated"] == 2
    assert results[0].score == results[2].score


@pytest.mark.parametrize("batch_size", [1, 3])
def test_batch_size_changes_no_score(qwen2_vl_dir, photos, batch_size):
    reference = [r.score for r in whole_only(qwen2_vl_dir, batch_size=4).score(photos)]
    scores = [r.score for r in whole_only(qwen2_vl_dir, batch_size=batch_size).score(photos)]
    np.testing.assert_allclose(scores, reference, atol=1e-5)


def test_bad_inputs_fail_alone_and_in_place(qwen2_vl_dir, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    # a 1000x3 strip: Qwen-VL's processor refuses aspect ratios over 200, so rating fails
    strip = tmp_path / "strip.png"
    Image.new("RGB", (1000, 3), (90, 90, 90)).save(strip)
    inputs = [photos[0], str(tmp_path / "missing.png"), str(broken), str(strip), photos[1]]
    scorer = whole_only(qwen2_vl_dir, batch_size=4)
    results = scorer.score(inputs)
    assert [r.ok for r in results] == [True, False, False, False, True]
    assert "missing.png: no such file" in results[1].error
    assert "broken.jpg: not an image file" in results[2].error
    assert "strip.png: rating failed" in results[3].error
    assert scorer.stats["failed"] == 3
    good = whole_only(qwen2_vl_dir).score([photos[0], photos[1]])
    np.testing.assert_allclose(
        [results[0].score, results[4].score], [r.score for r in good], atol=1e-5
    )


def test_in_memory_images_score_like_their_files(qwen2_vl_dir, photos):
    scorer = whole_only(qwen2_vl_dir)
    from_file = scorer.score(photos[0])[0]
    from_memory = scorer.score(Image.open(photos[0]))[0]
    assert from_memory.digest == from_file.digest and from_memory.score == from_file.score
    assert scorer.stats["model calls"] == 1  # the second was served from the store


def test_an_ensemble_is_the_mean_of_its_models(qwen2_vl_dir, llava_dir, photos):
    ensemble = Scorer([str(qwen2_vl_dir), str(llava_dir)], region_mode="whole-only").score(photos)
    alone = [whole_only(d).score(photos) for d in (qwen2_vl_dir, llava_dir)]
    for i, result in enumerate(ensemble):
        assert result.global_probs.shape == (2, 7)
        expected = (alone[0][i].score + alone[1][i].score) / 2
        assert result.score == pytest.approx(expected, abs=1e-6)
        assert result.only_model(1).score == pytest.approx(alone[1][i].score, abs=1e-6)


def test_results_round_trip_through_json_and_rescore_without_a_model(qwen2_vl_dir, photos):
    (result,) = whole_only(qwen2_vl_dir).score(photos[:1])
    from llmiqa.results import ImageResult

    restored = ImageResult.from_dict(result.to_dict())
    assert restored.score == pytest.approx(result.score)
    argmax = restored.rescored(Aggregation(readout="argmax"))
    assert argmax.score == float(np.argmax(result.probs) + 1)


def test_the_store_can_be_shared_by_passing_the_object(qwen2_vl_dir, photos):
    store = Store()
    whole_only(qwen2_vl_dir, store=store).score(photos[:2])
    assert store.counts()["ratings"] == 2


# ---- regions ------------------------------------------------------------------------

# A random SAM2 passes no default threshold: keep its candidates (noise masks, but real
# mask generation) and let NMS thin them out.
RANDOM_SAM2 = MaskSettings(pred_iou_thresh=0.0, stability_score_thresh=0.0, points_per_side=4)


def mixed(model_dir, sam2_dir, **options) -> Scorer:
    return Scorer([str(model_dir)], segmenter=str(sam2_dir), mask_settings=RANDOM_SAM2, **options)


def test_sam2_regions_are_rated_and_weighted_by_mask_area(qwen2_vl_dir, sam2_dir, photos):
    scorer = mixed(qwen2_vl_dir, sam2_dir)
    (result,) = scorer.score(photos[:1])
    assert result.ok and len(result.regions) >= 1 and scorer.stats["segmented"] == 1
    areas = np.array([r.area for r in result.regions])
    scores = np.array([r.score for r in result.regions])
    s_local = float(areas @ scores / areas.sum())
    assert result.s_local[0] == pytest.approx(s_local)
    assert result.score == pytest.approx((result.s_global[0] + s_local) / 2)
    assert sum(r.area_fraction for r in result.regions) >= 0.99  # with the complement, all


def test_stored_masks_serve_another_threshold_without_sam2(qwen2_vl_dir, sam2_dir, photos):
    store = Store()
    mixed(qwen2_vl_dir, sam2_dir, store=store).score(photos[:2])
    again = mixed(qwen2_vl_dir, sam2_dir, store=store, min_area=0.3)
    results = again.score(photos[:2])
    assert all(r.ok for r in results)
    assert again.stats["segmented"] == 0 and again.stats["masks from store"] == 2
    assert again._segmenter is None


def rect(shape, x0, y0, x1, y1):
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture(scope="module")
def hand_segmented(photos):
    """A real photo with two hand-made object masks (as if SAM2 had found them)."""
    image = load_image(photos[0])
    shape = (image.image.height, image.image.width)
    masks = [rect(shape, 0, 0, 200, 300), rect(shape, 250, 100, 400, 220)]
    masks[1][150:170, 300:320] = False  # a hole: mask mode must zero it
    return image, masks


@pytest.mark.parametrize("mode", ["bbox", "mask"])
def test_each_region_is_rated_on_exactly_its_crop(qwen2_vl_dir, sam2_dir, hand_segmented, mode):
    image, masks = hand_segmented
    scorer = mixed(qwen2_vl_dir, sam2_dir, region_mode=mode)
    shape = (image.image.height, image.image.width)
    scorer.store.put_masks(image.digest, scorer.segmenter_identity, shape, masks)
    (result,) = scorer.score([image])
    assert [r.kind for r in result.regions] == ["object", "object", "complement"]
    assert [r.box for r in result.regions][:2] == [(0, 0, 200, 300), (250, 100, 400, 220)]
    regions = scorer.regions(image)
    rater = scorer.rater(0)
    for region, rated in zip(regions, result.regions, strict=True):
        crop = sub_image(image.image, region, mode)
        np.testing.assert_allclose(rated.probs[0], rater.rate([crop], Standard())[0], atol=1e-6)
    assert scorer._segmenter is None  # the stored masks were used


def test_a_crop_equal_to_the_whole_image_is_the_global_rating(
    qwen2_vl_dir, sam2_dir, hand_segmented
):
    image, _ = hand_segmented
    shape = (image.image.height, image.image.width)
    # one mask touching all four borders: its box is the whole image
    frame = ~rect(shape, 10, 10, shape[1] - 10, shape[0] - 10)
    scorer = mixed(qwen2_vl_dir, sam2_dir)
    scorer.store.put_masks(image.digest, scorer.segmenter_identity, shape, [frame])
    (result,) = scorer.score([image])
    assert result.regions[0].box == (0, 0, shape[1], shape[0])
    np.testing.assert_array_equal(result.regions[0].probs, result.global_probs)
    assert scorer.stats["rated"] == 2  # the whole image and the complement, not three
