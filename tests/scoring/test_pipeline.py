"""The Scorer end to end on tiny random models and real images (plumbing, not accuracy)."""

import sqlite3

import numpy as np
import pytest
from PIL import Image

from llmiqa.errors import ModelLoadError, UsageError
from llmiqa.inputs import images
from llmiqa.inputs.images import Encoded, load_image
from llmiqa.loading.checkpoints import split_revision
from llmiqa.loading.runtime import Runtime
from llmiqa.method.aggregate import Aggregation, readout
from llmiqa.method.regions import RegionSettings
from llmiqa.method.standards import SEP_IQA_WORDS, Standard
from llmiqa.raters.base import Rating, RatingRequest
from llmiqa.raters.spec import RaterSpec
from llmiqa.scoring.pipeline import Scorer, check_readout
from llmiqa.scoring.store import Store
from llmiqa.tiny import PERMISSIVE_MASKS

WHOLE = RegionSettings(region_mode="whole-only")


def whole_only(model_dir, **options) -> Scorer:
    return Scorer([str(model_dir)], regions=WHOLE, **options)


def test_whole_image_scores_are_the_expected_level_of_the_probabilities(qwen2_vl_dir, photos):
    results = whole_only(qwen2_vl_dir).score(photos)
    assert [r.name for r in results] == photos
    for result in results:
        assert result.ok and 1 <= result.score <= 7
        np.testing.assert_allclose(result.probs.sum(), 1.0)
        assert result.score == pytest.approx(float(result.probs @ np.arange(1, 8)))
        assert result.regions == () and np.isnan(result.s_local).all()


def test_a_second_run_on_the_same_store_loads_no_model(qwen2_vl_dir, photos, tmp_path):
    first = whole_only(qwen2_vl_dir, store=tmp_path / "s.sqlite")
    before = [r.score for r in first.score(photos)]
    assert first.usage.rated == len(photos)
    again = whole_only(qwen2_vl_dir, store=tmp_path / "s.sqlite")
    after = [r.score for r in again.score(photos)]
    assert after == before
    assert again.usage.rated == 0 and again.usage.from_store == len(photos)
    assert again.usage.loaded == []  # nothing was even loaded


def test_a_stored_row_that_is_not_a_rating_is_rated_again_and_reported(
    qwen2_vl_dir, photos, tmp_path
):
    store = Store(tmp_path / "s.sqlite")
    good = [r.score for r in whole_only(qwen2_vl_dir, store=store).score(photos[:2])]
    store.db.execute(
        "UPDATE ratings SET logprobs = ? WHERE rowid = 1", (np.full(7, np.nan).tobytes(),)
    )
    again = whole_only(qwen2_vl_dir, store=store)
    assert [r.score for r in again.score(photos[:2])] == pytest.approx(good)
    assert (again.usage.refused, again.usage.rated, again.usage.from_store) == (1, 1, 1)
    assert "refused (checksum mismatch" in again.usage.notes[0]


def test_identical_images_are_rated_once(qwen2_vl_dir, photos):
    scorer = whole_only(qwen2_vl_dir)
    results = scorer.score([photos[0], photos[1], photos[0]])
    assert scorer.usage.rated == 2
    assert results[0].score == results[2].score


@pytest.mark.parametrize("batch_size", [1, 3])
def test_batch_size_changes_no_score(qwen2_vl_dir, photos, batch_size):
    four = whole_only(qwen2_vl_dir, runtime=Runtime(batch_size=4))
    other = whole_only(qwen2_vl_dir, runtime=Runtime(batch_size=batch_size))
    reference = [r.score for r in four.score(photos)]
    scores = [r.score for r in other.score(photos)]
    np.testing.assert_allclose(scores, reference, atol=1e-5)


def test_bad_inputs_fail_alone_and_in_place(qwen2_vl_dir, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    # a 1000x3 strip: Qwen-VL's processor refuses aspect ratios over 200, so rating fails
    strip = tmp_path / "strip.png"
    Image.new("RGB", (1000, 3), (90, 90, 90)).save(strip)
    inputs = [photos[0], str(tmp_path / "missing.png"), broken, str(strip), photos[1]]
    scorer = whole_only(qwen2_vl_dir, runtime=Runtime(batch_size=4))
    results = scorer.score(inputs)
    assert [r.ok for r in results] == [True, False, False, False, True]
    assert "missing.png: no such file" in results[1].error
    assert "broken.jpg: not an image file" in results[2].error
    assert results[2].name == str(broken)  # a Path named whole, folder and all
    assert "strip.png: rating failed" in results[3].error
    assert scorer.usage.failed == 3
    good = whole_only(qwen2_vl_dir).score([photos[0], photos[1]])
    np.testing.assert_allclose(
        [results[0].score, results[4].score], [r.score for r in good], atol=1e-5
    )


def test_several_decoding_threads_change_no_result_nor_its_place(qwen2_vl_dir, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    inputs = [photos[0], str(broken), *photos[1:], str(tmp_path / "missing.png"), photos[0]]
    store = Store()
    one, three = (
        whole_only(qwen2_vl_dir, store=store, runtime=Runtime(decoders=n)) for n in (1, 3)
    )
    assert (one.decoders, three.decoders) == (1, 3)
    first, again = one.score(inputs), three.score(inputs)
    assert [r.name for r in again] == inputs
    assert [(r.digest, r.error) for r in again] == [(r.digest, r.error) for r in first]
    assert [r.score for r in again if r.ok] == [r.score for r in first if r.ok]
    assert "broken.jpg: not an image file" in again[1].error
    assert "missing.png: no such file" in again[-2].error


def test_in_memory_images_score_like_their_files(qwen2_vl_dir, photos):
    scorer = whole_only(qwen2_vl_dir)
    from_file = scorer.score(photos[0])[0]
    from_memory = scorer.score(Image.open(photos[0]))[0]
    assert from_memory.digest == from_file.digest and from_memory.score == from_file.score
    assert scorer.usage.rated == 1  # the second was served from the store


def test_an_ensemble_is_the_mean_of_its_models(qwen2_vl_dir, llava_dir, photos):
    pair = Scorer([str(qwen2_vl_dir), str(llava_dir)], regions=WHOLE).score(photos[:2])
    alone = [whole_only(d).score(photos[:2]) for d in (qwen2_vl_dir, llava_dir)]
    for i, result in enumerate(pair):
        assert result.global_probs.shape == (2, 7)
        expected = (alone[0][i].score + alone[1][i].score) / 2
        assert result.score == pytest.approx(expected, abs=1e-6)
        assert result.only_model(1).score == pytest.approx(alone[1][i].score, abs=1e-6)


def test_results_rescore_without_a_model(qwen2_vl_dir, photos):
    (result,) = whole_only(qwen2_vl_dir).score(photos[:1])
    argmax = result.rescored(Aggregation(readout="argmax"))
    assert argmax.score == float(np.argmax(result.probs) + 1)
    assert argmax.score == readout(result.logprobs[0, 0], "argmax")


# ---- everything wrong with the whole run is said before any image is touched ------------


def test_a_wrong_model_is_refused_before_any_work(sam2_dir, tmp_path):
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        Scorer([str(tmp_path)], segmenter=str(sam2_dir))


def test_a_segmenter_that_is_not_sam2_is_refused_before_any_work(qwen2_vl_dir):
    with pytest.raises(ModelLoadError, match="not a SAM2 checkpoint"):
        Scorer([str(qwen2_vl_dir)], segmenter=str(qwen2_vl_dir))


def test_a_device_this_machine_lacks_is_refused_once(qwen2_vl_dir):
    with pytest.raises(UsageError, match="--device cuda: torch sees no CUDA GPU here"):
        whole_only(qwen2_vl_dir, runtime=Runtime(device="cuda"))


def test_model_revisions_are_part_of_the_name():
    assert split_revision("Qwen/Qwen2-VL-2B-Instruct@a1b2c3") == (
        "Qwen/Qwen2-VL-2B-Instruct",
        "a1b2c3",
    )
    assert split_revision("Qwen/Qwen2-VL-2B-Instruct") == ("Qwen/Qwen2-VL-2B-Instruct", None)


# ---- regions ------------------------------------------------------------------------


def mixed(model_dir, sam2_dir, **options) -> Scorer:
    return Scorer([str(model_dir)], segmenter=str(sam2_dir), masks=PERMISSIVE_MASKS, **options)


def test_sam2_regions_are_rated_and_weighted_by_mask_area(qwen2_vl_dir, sam2_dir, photos):
    scorer = mixed(qwen2_vl_dir, sam2_dir, regions=RegionSettings(region_mode="mask"))
    (result,) = scorer.score(photos[:1])
    assert result.ok and len(result.regions) >= 1 and scorer.usage.segmented == 1
    areas = np.array([r.area for r in result.regions])
    scores = np.array([r.score for r in result.regions])
    s_local = float(areas @ scores / areas.sum())
    assert result.s_local[0] == pytest.approx(s_local)
    assert result.score == pytest.approx((result.s_global[0] + s_local) / 2)
    assert sum(r.area_fraction for r in result.regions) >= 0.99  # with the complement, all


def test_stored_masks_serve_another_threshold_without_sam2(qwen2_vl_dir, sam2_dir, photos):
    store = Store()
    mixed(qwen2_vl_dir, sam2_dir, store=store).score(photos[:2])
    again = mixed(qwen2_vl_dir, sam2_dir, store=store, regions=RegionSettings(min_area=0.3))
    results = again.score(photos[:2])
    assert all(r.ok for r in results)
    assert again.usage.segmented == 0 and again.usage.masks_from_store == 2
    assert str(sam2_dir) not in again.usage.loaded


def test_a_store_of_the_old_content_digests_serves_every_rating_and_mask(
    qwen2_vl_dir, sam2_dir, photos, tmp_path, monkeypatch
):
    """The content digest changed (blake2b to xxh3): a store that llmiqa wrote under the old
    digests (schema 5) loses nothing and computes nothing again; its rows move to the new
    digests as the images are seen, and later runs skip the old hash."""
    path, mask = tmp_path / "v5.sqlite", RegionSettings(region_mode="mask")
    with monkeypatch.context() as before_the_change:
        before_the_change.setattr(images, "pixel_hash", images.legacy_pixel_hash)
        old = mixed(qwen2_vl_dir, sam2_dir, store=path, regions=mask)
        before = old.score(photos[:2])
    old.store.close()
    with sqlite3.connect(path) as db:  # as llmiqa wrote it before the change: schema 5
        db.execute("DROP TABLE legacy_images")
        db.execute("DROP TABLE aliases")
        db.execute("UPDATE meta SET value = '5' WHERE name = 'schema'")
    new = mixed(qwen2_vl_dir, sam2_dir, store=path, regions=mask)
    assert new.legacy and "upgraded to store schema 6" in new.usage.notes[0]
    after = new.score(photos[:2])
    assert [r.score for r in after] == [r.score for r in before]
    assert (new.usage.rated, new.usage.segmented, new.usage.loaded) == (0, 0, [])
    digests = [load_image(photo).digest for photo in photos[:2]]
    assert [r.digest for r in after] == digests != [r.digest for r in before]
    for table in ("ratings", "segmentations"):
        stored = {row[0] for row in new.store.db.execute(f"SELECT image FROM {table}")}
        assert stored == set(digests)
    again = mixed(qwen2_vl_dir, sam2_dir, store=path, regions=mask)
    assert not again.legacy
    assert [r.score for r in again.score(photos[:2])] == [r.score for r in before]
    assert (again.usage.rated, again.usage.segmented) == (0, 0)


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


def put(scorer: Scorer, image, masks) -> None:
    shape = (image.image.height, image.image.width)
    scorer.store.put_masks(image.digest, scorer.segmenter.identity, shape, masks)


@pytest.mark.parametrize("mode", ["bbox", "mask"])
def test_each_region_is_rated_on_exactly_its_crop(
    qwen2_vl_dir, sam2_dir, hand_segmented, rate, mode
):
    image, masks = hand_segmented
    scorer = mixed(qwen2_vl_dir, sam2_dir, regions=RegionSettings(region_mode=mode))
    put(scorer, image, masks)
    (result,) = scorer.score([image])
    assert [r.kind for r in result.regions] == ["object", "object", "complement"]
    assert [r.box for r in result.regions][:2] == [(0, 0, 200, 300), (250, 100, 400, 220)]
    rater = scorer.specs[0].load()
    for region, rated in zip(scorer.regions(image), result.regions, strict=True):
        x0, y0, x1, y1 = region.box
        crop = image.image.crop(region.box)
        if mode == "mask":
            pixels = np.asarray(crop).copy()
            pixels[~region.mask[y0:y1, x0:x1]] = 0
            crop = Image.fromarray(pixels)
        (expected,) = rate(rater, [crop])
        np.testing.assert_allclose(rated.probs[0], expected.probs(), atol=1e-6)
    assert scorer.usage.loaded == [str(qwen2_vl_dir)]  # the stored masks were used


def test_a_crop_equal_to_the_whole_image_is_the_global_rating(
    qwen2_vl_dir, sam2_dir, hand_segmented
):
    image, _ = hand_segmented
    shape = (image.image.height, image.image.width)
    frame = ~rect(shape, 10, 10, shape[1] - 10, shape[0] - 10)  # touches all four borders
    scorer = mixed(qwen2_vl_dir, sam2_dir)
    put(scorer, image, [frame])
    (result,) = scorer.score([image])
    assert result.regions[0].box == (0, 0, shape[1], shape[0])
    np.testing.assert_array_equal(result.regions[0].probs, result.global_probs)
    assert scorer.usage.rated == 2  # the whole image and the complement, not three


def test_the_released_wording_rates_regions_with_their_own_prompt(
    qwen2_vl_dir, sam2_dir, hand_segmented
):
    """Its region prompt differs from the whole image's by indentation: a region whose crop
    is the whole image is a different request, as it was for the authors."""
    image, _ = hand_segmented
    shape = (image.image.height, image.image.width)
    frame = ~rect(shape, 10, 10, shape[1] - 10, shape[0] - 10)
    scorer = mixed(qwen2_vl_dir, sam2_dir, standard=Standard("word", 7, "dogiqa"))
    put(scorer, image, [frame])
    (result,) = scorer.score([image])
    assert scorer.usage.rated == 3
    assert not np.array_equal(result.regions[0].probs, result.global_probs)


def test_an_incomplete_rating_fails_its_image_with_the_reason(qwen2_vl_dir, photos):
    """A server that returned only its top tokens can miss a digit: such a rating is kept
    (marked incomplete) but scores nothing."""
    scorer = whole_only(qwen2_vl_dir)
    image = load_image(photos[0])
    (request,) = scorer.requests(image, [])[0]
    partial = Rating(np.array([np.nan] * 6 + [-1.0]), np.nan, None, incomplete=True)
    scorer.raters[0].commit(request, partial)
    (result,) = scorer.score([image])
    assert "incomplete rating" in result.error


def test_what_the_seam_commits_the_collect_pass_serves_without_a_model(qwen2_vl_dir, photos):
    """The Ray driver's whole use of a Scorer: plan through its seam (no model loads), commit
    what workers computed, then collect offline: the single process's results, rated once."""
    single = whole_only(qwen2_vl_dir)
    expected = single.score(photos[:2])
    driver = whole_only(qwen2_vl_dir)
    seam = driver.seam()
    planned = [seam.requests(load_image(p))[0] for p in photos[:2]]
    (rater,) = seam.raters
    wanted = rater.missing([r for requests in planned for r in requests])
    assert len(wanted) == 2 and driver.usage.loaded == []
    worked = dict(single.raters[0].rate(wanted))  # what the workers send back
    for index, outcome in worked.items():
        rater.commit(wanted[index], outcome)
    assert rater.missing(wanted) == []
    collected = driver.offline().score(photos[:2])
    assert [r.score for r in collected] == [r.score for r in expected]
    assert (driver.usage.rated, driver.usage.from_store, driver.usage.loaded) == (2, 0, [])


# ---- other protocols' questions: answer words, top raw logits ---------------------------


def by_hand(rater, question: Standard, image) -> dict:
    """Every readout recomputed from one plain forward pass of the loaded model: the word
    tokens' logits, the top 100 raw logits, SeP-IQA's cosines from the embedding table."""
    import torch

    prepared = rater.prepare([RatingRequest.of(image, question.prompt(), 5, words=question.words)])
    with torch.no_grad():
        logits = rater.forward(prepared)[0].double()
    tokenizer = rater.tokenizer
    ids = [tokenizer(f" {w}", add_special_tokens=False)["input_ids"][0] for w in question.words]
    probs = torch.softmax(logits[ids], dim=-1).numpy()
    table = rater.input_embeddings().detach().double()
    means = [table[tokenizer(text)["input_ids"]].mean(0) for text in SEP_IQA_WORDS]
    cosines = torch.nn.functional.cosine_similarity(table, (means[0] - means[1])[None], dim=-1)
    top = torch.topk(logits, 100)
    return {
        "qalign": float(probs @ np.arange(1, 6)),
        "qbench": float(1 / (1 + np.exp(-(np.log(probs[3]) - np.log(probs[1])) / 100))),
        "sepiqa": float((top.values * cosines[top.indices]).sum()),
    }


@pytest.mark.parametrize("question", ["sepiqa", "qalign", "qbench"])
@pytest.mark.parametrize("model", ["qwen2_vl_dir", "owl3_words_dir"])
def test_other_protocols_score_as_their_readouts_of_one_forward(question, model, request, photos):
    folder = str(request.getfixturevalue(model))
    scorer = Scorer(
        [folder], standard=Standard(question, 5), aggregation=Aggregation(readout=question),
        regions=WHOLE,
    )  # fmt: skip
    (result,) = scorer.score(photos[:1])
    expected = by_hand(scorer.specs[0].load(), Standard(question, 5), load_image(photos[0]).image)
    assert result.score == pytest.approx(expected[question], abs=1e-5)
    others = {how: result.rescored(Aggregation(readout=how)).score for how in expected}
    assert others == pytest.approx(expected, abs=1e-5)  # every word readout, no new rating


def test_sep_iqa_weights_are_computed_once_per_model_and_kept(qwen2_vl_dir, photos):
    store = Store()
    question = dict(standard=Standard("sepiqa", 5), aggregation=Aggregation(readout="sepiqa"))
    first = whole_only(qwen2_vl_dir, store=store, **question)
    first.score(photos[:1])
    again = whole_only(qwen2_vl_dir, store=store, **question)
    again.score(photos[:1])
    assert again.usage.rated == 0 and str(qwen2_vl_dir) not in again.usage.loaded


def test_a_readout_that_cannot_read_the_answers_is_one_line_before_any_work(qwen2_vl_dir):
    with pytest.raises(UsageError, match=r"readout \(--readout\) qbench cannot read digit"):
        whole_only(qwen2_vl_dir, aggregation=Aggregation(readout="qbench"))
    with pytest.raises(UsageError, match="question's words: choose one of qalign, qbench"):
        whole_only(qwen2_vl_dir, standard=Standard("qalign", 5))


def test_a_question_runs_mix_grained_and_in_an_ensemble(
    qwen2_vl_dir, owl3_words_dir, sam2_dir, photos
):
    question = dict(standard=Standard("sepiqa", 5), aggregation=Aggregation(readout="sepiqa"))
    store = Store()
    pair = Scorer([str(qwen2_vl_dir), str(owl3_words_dir)], segmenter=str(sam2_dir),
                  masks=PERMISSIVE_MASKS, regions=RegionSettings(region_mode="mask"),
                  store=store, **question)  # fmt: skip
    (result,) = pair.score(photos[:1])
    assert (
        result.ok and result.regions and result.top_logits.shape[:2] == (1 + len(result.regions), 2)
    )
    assert result.score == pytest.approx(result.s_model.mean())
    alone = result.only_model(1)
    s_local = np.average([r.scores[0] for r in alone.regions], weights=alone.areas)
    assert alone.score == pytest.approx((alone.s_global[0] + s_local) / 2)


def test_the_server_backend_refuses_answer_words_in_one_line():
    server = RaterSpec("served-name", server="http://127.0.0.1:9")
    with pytest.raises(UsageError, match="the server backend reads digit answers only"):
        check_readout(Standard("qalign", 5), Aggregation(readout="qalign"), [server])


def test_image_bytes_read_elsewhere_score_as_their_file_does(qwen2_vl_dir, real_images):
    """An Encoded image (a tar member's or a Parquet cell's bytes) is decoded as the file
    with those bytes, under the name given; a corrupt one fails alone, by that name."""
    scorer = Scorer([str(qwen2_vl_dir)], regions=RegionSettings(region_mode="whole-only"))
    path = real_images[0]
    encoded = Encoded(name="shard-0.tar#photo", data=path.read_bytes())
    broken = Encoded(name="shard-0.tar#broken", data=path.read_bytes()[:100])
    from_file, from_bytes, failed = scorer.score([path, encoded, broken])
    assert from_bytes.name == "shard-0.tar#photo" and from_bytes.digest == from_file.digest
    assert from_bytes.score == from_file.score
    assert failed.name == "shard-0.tar#broken" and "truncated or corrupt" in failed.error


def test_a_stream_of_images_is_read_one_chunk_at_a_time(qwen2_vl_dir, real_images):
    scorer = Scorer([str(qwen2_vl_dir)], regions=RegionSettings(region_mode="whole-only"))
    taken = []

    def stream():
        for n in range(10 * scorer.chunk_size):
            taken.append(n)
            yield real_images[n % len(real_images)]

    results = scorer.iter_score(stream())
    next(results)
    # the first chunk scored, the second decoded and waiting, the third being decoded
    assert len(taken) <= 3 * scorer.chunk_size
    assert len(list(results)) == 10 * scorer.chunk_size - 1
