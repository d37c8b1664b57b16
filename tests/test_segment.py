"""SAM2 automatic mask generation (llmiqa.segment) against the ORIGINAL sam2 code's outputs.

tests/golden/sam2 holds what sam2 1.1.0's SAM2AutomaticMaskGenerator gave on four real images
with a tiny SAM2 checkpoint in the original format (scripts/make_sam2_golden.py says how): the
final masks with their records, and every candidate of the prompt grid with each stage's
survivors. Our loader and generator run on the same checkpoint here; the stages are compared
one by one by watching the pure functions of llmiqa.amg while `generate` runs.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llmiqa import amg
from llmiqa.errors import ModelLoadError
from llmiqa.masks import DOGIQA_MASKS, MaskSettings
from llmiqa.regions import RegionSettings, region_crop, select_regions
from llmiqa.segment import SegmenterSpec, segmenter_identity

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "sam2"
TINY = GOLDEN / "tiny.pt"
TOLERANCE = 1e-4  # predicted IoU and stability, original vs ours
MIN_MASK_IOU = 0.99


def decode_rle(counts: np.ndarray, height: int, width: int) -> np.ndarray:
    """Uncompressed COCO RLE (column-major runs, zeros first) -> bool (height, width)."""
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape(width, height).T


def mask_settings(values: dict) -> MaskSettings:
    """The golden run's generator arguments as MaskSettings (the rest are no-ops: one crop
    layer, no mask-to-mask refinement)."""
    assert values.get("crop_n_layers", 0) == 0 and not values.get("use_m2m", False)
    return MaskSettings(
        points_per_side=values["points_per_side"],
        points_per_batch=values["points_per_batch"],
        pred_iou_thresh=values["pred_iou_thresh"],
        stability_score_thresh=values["stability_score_thresh"],
        stability_score_offset=values.get("stability_score_offset", 1.0),
        box_nms_thresh=values["box_nms_thresh"],
        min_mask_region_area=values.get("min_mask_region_area", 0),
    )


@pytest.fixture(scope="module", autouse=True)
def golden_threads():
    """Two torch threads, as the golden data was made (scripts/make_sam2_golden.py): another
    summation order flips pixels at the stability threshold (with one thread, a small
    candidate's stability moved by 6e-4)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def golden() -> tuple[dict, dict]:
    meta = json.loads((GOLDEN / "golden.json").read_text())
    with np.load(GOLDEN / "golden.npz") as arrays:
        return meta, {key: arrays[key] for key in arrays.files}


class Spy:
    """Records the inputs and outputs of amg.measure and amg.nms during one generate()."""

    def __init__(self, monkeypatch) -> None:
        self.measured: list[tuple] = []
        self.nms: list[tuple] = []
        measure, nms = amg.measure, amg.nms

        def spy_measure(logits, size, threshold, offset):
            out = measure(logits, size, threshold, offset)
            self.measured.append(out)
            return out

        def spy_nms(boxes, scores, iou_thresh):
            keep = nms(boxes, scores, iou_thresh)
            self.nms.append((boxes, scores, keep))
            return keep

        monkeypatch.setattr(amg, "measure", spy_measure)
        monkeypatch.setattr(amg, "nms", spy_nms)


@pytest.fixture(scope="module")
def photos(golden) -> dict[str, Image.Image]:
    meta, _ = golden
    return {key: Image.open(ROOT / image["path"]) for key, image in meta["images"].items()}


@pytest.fixture(scope="module")
def runs(golden, photos) -> dict[str, tuple]:
    """Our generate() on every golden image and setting: (masks, spied stages).

    Each image is embedded once: the settings share the checkpoint, so the later segmenters
    reuse the first one's embedding of the same photo (saves half the time on 2 cores).
    """
    meta, _ = golden
    out = {}
    embeddings = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for setting, values in meta["settings"].items():
            segmenter = SegmenterSpec(str(TINY), mask_settings(values)).load()
            segmenter._embed = lambda photo, embed=segmenter._embed: (
                embeddings[id(photo)]
                if id(photo) in embeddings
                else embeddings.setdefault(id(photo), embed(photo))
            )
            for key, photo in photos.items():
                spy = Spy(monkeypatch)
                out[f"{setting}/{key}"] = (segmenter.generate(photo), spy)
                monkeypatch.undo()
    return out


def test_the_golden_data_covers_every_stage(golden):
    """Guards the data, not the code: each filter removes some candidates somewhere."""
    meta, arrays = golden
    runs = meta["runs"]
    assert len(meta["images"]) >= 4 and set(meta["settings"]) >= {"dogiqa", "permissive"}
    assert mask_settings(meta["settings"]["dogiqa"]) == DOGIQA_MASKS
    for setting in ("dogiqa", "permissive"):
        stages = [runs[f"{setting}/{key}"] for key in meta["images"]]
        assert any(s["pass_iou"] < s["candidates"] for s in stages), setting
        assert any(s["pass_iou_and_stability"] < s["pass_iou"] for s in stages), setting
        assert any(1 < s["after_nms"] < s["pass_iou_and_stability"] for s in stages), setting
    # min_mask_region_area changed candidates: some masks lost every pixel (NaN stability)
    stability = np.concatenate([arrays[f"dogiqa/{k}/candidates/stability"] for k in meta["images"]])
    assert np.isnan(stability).any()


def test_masks_equal_the_originals_in_count_order_and_pixels(golden, runs):
    meta, arrays = golden
    worst = 1.0
    for run, (generated, _) in runs.items():
        image = meta["images"][run.split("/")[1]]
        lengths = arrays[f"{run}/rle_lengths"]
        assert len(generated) == len(lengths), run
        counts = np.split(arrays[f"{run}/rle"], np.cumsum(lengths)[:-1]) if len(lengths) else []
        for i, (ours, rle) in enumerate(zip(generated, counts, strict=True)):
            theirs = decode_rle(rle, image["height"], image["width"])
            union = (ours.mask | theirs).sum()
            iou = (ours.mask & theirs).sum() / union if union else 1.0
            worst = min(worst, iou)
            assert iou >= MIN_MASK_IOU, f"{run} mask {i}: IoU {iou:.4f}"
        np.testing.assert_allclose(
            [g.predicted_iou for g in generated], arrays[f"{run}/predicted_iou"], atol=TOLERANCE
        )
        np.testing.assert_allclose(
            [g.stability_score for g in generated], arrays[f"{run}/stability_score"], atol=TOLERANCE
        )
        assert [g.point for g in generated] == [tuple(p) for p in arrays[f"{run}/point"].tolist()]
        areas = np.array([g.area for g in generated])
        np.testing.assert_allclose(areas, arrays[f"{run}/area"], rtol=1 - MIN_MASK_IOU)
        x, y, w, h = arrays[f"{run}/bbox_xywh"].T if len(generated) else np.zeros((4, 0))
        boxes = np.stack([x, y, x + w + 1, y + h + 1], 1) * (arrays[f"{run}/area"] > 0)[:, None]
        assert (
            np.abs(np.array([g.box for g in generated]).reshape(-1, 4) - boxes).max(initial=0) <= 1
        )
    print(f"minimum mask IoU with the original: {worst:.6f}")


RELEASED = RegionSettings(min_area=1000, complement_area="remainder")  # the authors' t


def authors_view(masks: list[np.ndarray], shape: tuple[int, int]) -> list[dict]:
    """Algorithm 1 and the crops as llmiqa makes them, written as the golden data records
    what the authors' get_final_mask + get_masked_image made (mPLUG-Owl3: no widening)."""
    return [
        {
            "area": region.area,
            "complement": region.kind == "complement",
            "pixels": int(region.mask.sum()),
            "crop": list(region_crop(region, shape[::-1], "bbox", min_side=1).box),
        }
        for region in select_regions(masks, shape, RELEASED)
    ]


def test_algorithm_1_and_the_crops_equal_the_authors_own(golden, runs):
    """On the original generator's masks and on ours: the same regions, weights and crops as
    the authors' code computed, including a complement whose weight (H*W minus the SUM of
    the kept areas) differs from its pixel count."""
    meta, arrays = golden
    checked = differing = 0
    for run, (generated, _) in runs.items():
        image = meta["images"][run.split("/")[1]]
        shape = (image["height"], image["width"])
        lengths = arrays[f"{run}/rle_lengths"]
        counts = np.split(arrays[f"{run}/rle"], np.cumsum(lengths)[:-1]) if len(lengths) else []
        theirs = [decode_rle(c, *shape) for c in counts]
        ours = [g.mask for g in generated]
        expected = {"all": meta["runs"][run]["authors_regions"]}
        for k, regions in meta["runs"][run].get("authors_regions_of_first", {}).items():
            expected[k] = regions
        for which, regions in expected.items():
            n = len(theirs) if which == "all" else int(which)
            assert authors_view(theirs[:n], shape) == regions, (run, which)
            assert authors_view(ours[:n], shape) == regions, (run, which)
            checked += 1
            differing += sum(r["complement"] and r["area"] != r["pixels"] for r in regions)
    assert checked >= 12 and differing >= 1


def test_each_stage_keeps_what_the_originals_kept(golden, runs):
    meta, arrays = golden
    for run, (_, spy) in runs.items():
        values = meta["settings"][run.split("/")[0]]
        cand = {
            k.rsplit("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{run}/candidates/")
        }
        # 1. the predicted-IoU filter (strictly above; off at 0) on identical predictions
        iou_pass = (
            cand["iou"] > values["pred_iou_thresh"] if values["pred_iou_thresh"] > 0 else None
        )
        iou_pass = np.ones(len(cand["iou"]), bool) if iou_pass is None else iou_pass
        # 2. what measure() saw: exactly those candidates, measured as the original measured them
        stability, boxes, areas = (torch.cat(t).numpy() for t in zip(*spy.measured, strict=True))
        assert len(stability) == iou_pass.sum(), run
        np.testing.assert_allclose(stability, cand["stability"][iou_pass], atol=TOLERANCE)
        assert np.abs(boxes - cand["boxes"][iou_pass]).max(initial=0) <= 1, run
        np.testing.assert_allclose(areas, cand["areas"][iou_pass], rtol=0.01, atol=2)
        # 3. box NMS: the same boxes and scores in, the same order out
        ((nms_boxes, nms_scores, keep),) = spy.nms
        np.testing.assert_allclose(nms_scores.numpy(), cand["nms_scores"], atol=TOLERANCE)
        assert np.abs(nms_boxes.numpy() - cand["nms_boxes"]).max(initial=0) <= 1, run
        assert keep.tolist() == cand["nms_keep"].tolist(), run


def test_candidates_are_every_grid_candidate_measured_as_the_original(golden, photos):
    meta, arrays = golden
    run = "unfiltered/KADID_I01"
    segmenter = SegmenterSpec(str(TINY), mask_settings(meta["settings"]["unfiltered"])).load()
    candidates = segmenter.candidates(photos["KADID_I01"])
    expected = {
        k.rsplit("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{run}/candidates/")
    }
    assert torch.equal(candidates.points, torch.from_numpy(expected["points"]))
    np.testing.assert_allclose(candidates.predicted_iou, expected["iou"], atol=TOLERANCE)
    np.testing.assert_allclose(candidates.stability_score, expected["stability"], atol=TOLERANCE)
    assert np.isnan(expected["stability"]).any()  # emptied by the clean-up: NaN, as in SAM2
    assert np.abs(candidates.boxes.numpy() - expected["boxes"]).max() <= 1
    np.testing.assert_allclose(candidates.areas, expected["areas"], rtol=0.01, atol=2)


def test_full_resolution_maps_are_held_a_few_at_a_time(golden, photos, runs, monkeypatch):
    meta, _ = golden
    sizes = []
    upscale = amg.upscale

    def counted(logits, size):
        sizes.append(len(logits))
        return upscale(logits, size)

    monkeypatch.setattr(amg, "upscale", counted)
    monkeypatch.setattr(amg, "FULL_RES_BYTES", 1)  # one map at a time
    segmenter = SegmenterSpec(str(TINY), mask_settings(meta["settings"]["unfiltered"])).load()
    generated = segmenter.generate(photos["KonIQ_6898804586"])
    assert sizes and max(sizes) == 1
    before = runs["unfiltered/KonIQ_6898804586"][0]  # all maps of a batch at once (~100 MB)
    assert len(generated) == len(before)
    for one, other in zip(generated, before, strict=True):
        assert np.array_equal(one.mask, other.mask)
        assert one.stability_score == other.stability_score or np.isnan(other.stability_score)


# --- settings and names ----------------------------------------------------------------------


def test_settings_refuse_an_empty_grid_or_batch_and_negative_areas():
    with pytest.raises(ValueError, match="points_per_side"):
        MaskSettings(points_per_side=0)
    with pytest.raises(ValueError, match="points_per_batch"):
        MaskSettings(points_per_batch=0)
    with pytest.raises(ValueError, match="min_mask_region_area"):
        MaskSettings(min_mask_region_area=-1)


def test_identity_names_dtype_and_every_setting_that_changes_masks():
    plain = segmenter_identity("ckpt@abc", torch.float32, MaskSettings())
    assert plain.startswith("ckpt@abc|float32|sam2-amg-1.1.0:")
    for change in (
        {"points_per_side": 9},
        {"pred_iou_thresh": 0.5},
        {"stability_score_thresh": 0.5},
        {"stability_score_offset": 0.7},
        {"box_nms_thresh": 0.9},
        {"mask_threshold": 0.1},
        {"min_mask_region_area": 1000},
    ):
        assert segmenter_identity("ckpt@abc", torch.float32, MaskSettings(**change)) != plain
    batched = segmenter_identity("ckpt@abc", torch.float32, MaskSettings(points_per_batch=1))
    assert batched == plain  # speed and memory only
    assert segmenter_identity("ckpt@abc", torch.bfloat16, MaskSettings()) != plain


# --- a random transformers-format SAM2, loaded by folder ---------------------------------------

# A random SAM2 passes no real threshold: thresholds at 0 turn the filters off (as in SAM2) and
# NMS at 1.0 removes nothing.
EVERYTHING = MaskSettings(
    points_per_side=4,
    points_per_batch=16,
    pred_iou_thresh=0.0,
    stability_score_thresh=0.0,
    box_nms_thresh=1.0,
)


@pytest.fixture(scope="module")
def photo(data_dir: Path) -> Image.Image:
    """A real 512x384 photo: not square, so height and width cannot be swapped unnoticed."""
    return Image.open(data_dir / "images" / "KADID_I01.png").convert("RGB")


@pytest.fixture(scope="module")
def everything(sam2_dir: Path, photo: Image.Image) -> list:
    return SegmenterSpec(str(sam2_dir), EVERYTHING).load().generate(photo)


def test_output_order_is_nms_order_and_masks_feed_algorithm_1(everything):
    assert len(everything) == 3 * 4 * 4  # every candidate: three nested masks per point
    ious = [g.predicted_iou for g in everything]
    assert ious == sorted(ious, reverse=True)
    for generated in everything:
        assert generated.mask.dtype == bool and generated.mask.shape == (384, 512)
        assert generated.area == generated.mask.sum()
    masks = [g.mask for g in everything]
    regions = select_regions(masks, (384, 512), RegionSettings(min_area=0.05))
    objects = [r.area for r in regions if r.kind == "object"]
    assert objects == [g.area for g in everything if g.area >= 0.05 * 384 * 512]


def test_the_image_is_embedded_once_and_the_grid_decoded_in_batches(
    sam2_dir: Path, photo: Image.Image, monkeypatch
):
    segmenter = SegmenterSpec(str(sam2_dir), replace(EVERYTHING, points_per_batch=5)).load()
    calls = {"embed": 0, "decode": 0}
    prompts = []

    def counted(name, method):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            if "input_points" in kwargs:
                prompts.append(kwargs["input_points"].reshape(-1, 2))
            return method(*args, **kwargs)

        return wrapper

    model = segmenter.model
    monkeypatch.setattr(model, "get_image_embeddings", counted("embed", model.get_image_embeddings))
    monkeypatch.setattr(model, "forward", counted("decode", model.forward))
    segmenter.generate(photo)
    assert calls == {"embed": 1, "decode": 4}  # 16 points in batches of 5, 5, 5, 1
    # SAM2 stretches the 512x384 photo to its square input: the grid spans all of it.
    side = model.config.prompt_encoder_config.image_size
    assert torch.equal(torch.cat(prompts), amg.prompt_points(4, 512, 384, side)[1])


def test_points_per_batch_changes_nothing(sam2_dir: Path, photo: Image.Image, everything):
    batched = SegmenterSpec(str(sam2_dir), replace(EVERYTHING, points_per_batch=5)).load()
    masks = batched.generate(photo)
    assert len(masks) == len(everything)
    # Equal up to float rounding: the decoder's sums differ by ~1e-6 between batch sizes,
    # which may flip a pixel whose logit sits right at the cut.
    for one in masks:
        assert min(int((one.mask ^ other.mask).sum()) for other in everything) <= 2


def test_tiny_images_are_segmented_at_their_own_size(sam2_dir: Path):
    segmenter = SegmenterSpec(str(sam2_dir), replace(EVERYTHING, points_per_side=2)).load()
    rng = np.random.default_rng(0)
    for width, height in ((8, 8), (64, 1), (1, 1)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        generated = segmenter.generate(image)
        assert generated, f"{width}x{height}"
        for one in generated:
            assert one.mask.shape == (height, width) and one.mask.dtype == bool
    assert segmenter.generate(Image.new("RGB", (0, 5))) == []  # no pixels, no masks


def test_loads_sam2_video_checkpoints_as_the_official_repos_are(tmp_path: Path, sam2_dir: Path):
    from transformers import Sam2ImageProcessor, Sam2Processor, Sam2VideoConfig, Sam2VideoModel

    parts = json.loads((sam2_dir / "config.json").read_text())
    config = Sam2VideoConfig(
        **{
            key: parts[key]
            for key in ("vision_config", "prompt_encoder_config", "mask_decoder_config")
        }
    )
    video = Sam2VideoModel(config).eval()
    video.save_pretrained(tmp_path)
    Sam2Processor(image_processor=Sam2ImageProcessor()).save_pretrained(tmp_path)
    segmenter = SegmenterSpec(str(tmp_path), EVERYTHING).load()
    expected = video.state_dict()
    for name, weights in segmenter.model.state_dict().items():  # every weight loaded
        assert torch.equal(weights, expected[name]), name
    assert segmenter.masks(Image.new("RGB", (32, 24), (200, 40, 90)))


def test_a_folder_that_is_not_sam2_is_refused_in_one_line(tmp_path: Path, sam2_dir: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    no_weights = tmp_path / "sam2-config-only"
    no_weights.mkdir()
    shutil.copy(sam2_dir / "config.json", no_weights)
    for folder, reason in (
        (empty, "no config.json"),
        (other, "not a SAM2"),
        (no_weights, "cannot load as SAM2"),
    ):
        with pytest.raises(ModelLoadError, match=re.escape(str(folder))) as error:
            SegmenterSpec(str(folder)).load()
        assert reason in str(error.value) and "\n" not in str(error.value)
