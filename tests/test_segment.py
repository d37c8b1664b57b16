"""SAM2 automatic mask generation: the pure bookkeeping on hand-made inputs, then the real
generation code on a tiny random SAM2 saved and loaded back by path like a real checkpoint."""

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

from llmiqa.raters.base import ModelLoadError
from llmiqa.regions import select_regions
from llmiqa.segment import (
    MaskSettings,
    Segmenter,
    box_iou,
    box_nms,
    keep_candidates,
    mask_boxes,
    point_grid,
    stability_score,
    upscale_mask,
)

# A random SAM2 passes no real threshold: keep every candidate (NMS at 1.0 removes nothing).
EVERYTHING = MaskSettings(
    points_per_side=4,
    points_per_batch=16,
    pred_iou_thresh=0.0,
    stability_score_thresh=0.0,
    box_nms_thresh=1.0,
)


def boxes(*rows: tuple[int, int, int, int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 4)


# --- pure helpers -------------------------------------------------------------------------


def test_point_grid_is_the_cell_centres_row_by_row():
    assert point_grid(1).tolist() == [[0.5, 0.5]]
    assert point_grid(2).tolist() == [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
    grid = point_grid(3)
    third = [1 / 6, 1 / 2, 5 / 6]
    expected = [[x, y] for y in third for x in third]
    assert torch.allclose(grid, torch.tensor(expected))
    for n in range(1, 9):
        grid = point_grid(n)
        assert grid.shape == (n * n, 2)
        assert grid.min() > 0 and grid.max() < 1
        assert torch.allclose(grid, 1 - grid.flip(0))  # symmetric about the image centre


def test_stability_score_is_the_iou_of_the_high_and_low_cuts():
    logits = torch.tensor([[3.0, 0.5], [-0.5, -3.0]])  # high cut (>1): 1 px, low cut (>-1): 3 px
    assert stability_score(logits, 0.0, 1.0).item() == pytest.approx(1 / 3)
    assert stability_score(logits, -0.25, 0.5).item() == pytest.approx(2 / 3)  # >.25 vs >-.75
    assert stability_score(logits, 2.0, 0.5).item() == 1.0  # >2.5 and >1.5: the same pixel
    assert stability_score(torch.full((2, 2), -5.0), 0.0, 1.0).item() == 0.0  # empty: 0, not NaN
    assert stability_score(torch.full((2, 2), 5.0), 0.0, 1.0).item() == 1.0
    batched = torch.stack([logits, -logits, torch.full((2, 2), 5.0)]).reshape(3, 1, 2, 2)
    scores = stability_score(batched, 0.0, 1.0)
    assert scores.shape == (3, 1)
    assert scores.flatten().tolist() == pytest.approx([1 / 3, 1 / 3, 1.0])


def test_mask_boxes_are_tight_with_exclusive_ends():
    masks = torch.zeros(4, 5, 6, dtype=torch.bool)
    masks[0, 1, 2] = True  # one pixel at row 1, column 2
    masks[1] = True  # everything
    masks[3, 0, 5] = masks[3, 4, 0] = True  # opposite corners: the box spans the whole image
    assert mask_boxes(masks).tolist() == [[2, 1, 3, 2], [0, 0, 6, 5], [0, 0, 0, 0], [0, 0, 6, 5]]
    l_shape = torch.zeros(1, 5, 6, dtype=torch.bool)
    l_shape[0, 1:4, 1] = True
    l_shape[0, 3, 1:5] = True
    assert mask_boxes(l_shape).tolist() == [[1, 1, 5, 4]]
    assert mask_boxes(torch.zeros(0, 5, 6, dtype=torch.bool)).shape == (0, 4)


def test_box_iou_of_pixel_boxes():
    square = boxes((0, 0, 2, 2))
    cases = [
        ((0, 0, 2, 2), 1.0),  # identical
        ((1, 0, 3, 2), 2 / 6),  # half of each: 2 px shared of 6
        ((2, 0, 4, 2), 0.0),  # touching edges share no pixel (ends are exclusive)
        ((5, 5, 7, 7), 0.0),  # apart
        ((0, 0, 4, 4), 4 / 16),  # inside a larger box
        ((0, 0, 0, 0), 0.0),  # an empty box
    ]
    iou = box_iou(square, boxes(*(box for box, _ in cases)))
    assert iou.shape == (1, len(cases))
    assert iou[0].tolist() == pytest.approx([value for _, value in cases])
    assert box_iou(boxes((0, 0, 0, 0)), boxes((0, 0, 0, 0))).item() == 0.0
    pair = boxes((0, 0, 2, 2), (1, 0, 3, 2))
    assert torch.equal(box_iou(pair, pair), box_iou(pair, pair).T)


def test_box_nms_keeps_the_best_of_overlapping_boxes():
    candidates = boxes(
        (0, 0, 10, 10),  # 0: score .5, overlaps 1 (IoU .81) -> suppressed by 1
        (0, 0, 9, 9),  # 1: score .9, the best
        (20, 20, 30, 30),  # 2: score .7, alone
        (0, 0, 10, 4),  # 3: score .8, IoU with 1 = 36/85 < .5 -> kept
    )
    scores = torch.tensor([0.5, 0.9, 0.7, 0.8])
    assert box_nms(candidates, scores, 0.5).tolist() == [1, 3, 2]
    assert box_nms(candidates, scores, 0.9).tolist() == [1, 3, 2, 0]  # .81 is not above .9
    assert box_nms(candidates, scores, 0.0).tolist() == [1, 2]  # any overlap goes
    assert box_nms(candidates, scores, 1.0).tolist() == [1, 3, 2, 0]


def test_box_nms_breaks_ties_by_position_and_takes_equal_iou_as_not_above():
    twins = boxes((0, 0, 4, 4), (0, 0, 4, 4), (0, 0, 4, 2))  # third: IoU .5 with the twins
    tied = torch.tensor([0.6, 0.6, 0.6])
    assert box_nms(twins, tied, 0.5).tolist() == [0, 2]  # twin 1 goes, IoU .5 stays
    assert box_nms(twins, tied, 1.0).tolist() == [0, 1, 2]  # identical boxes: IoU 1 not > 1
    assert box_nms(boxes(), torch.tensor([]), 0.5).tolist() == []


def test_keep_candidates_applies_every_threshold():
    sure = torch.full((4, 4), 8.0)  # stability 1
    edgy = torch.tensor([[8.0, 0.5], [0.5, -8.0]]).repeat_interleave(2, 0).repeat_interleave(2, 1)
    empty = torch.full((4, 4), -8.0)
    logits = torch.stack([sure, sure, edgy, empty])
    scores = torch.tensor([0.9, 0.5, 0.9, 0.9])
    settings = MaskSettings(pred_iou_thresh=0.8, stability_score_thresh=0.9)
    assert keep_candidates(logits, scores, settings).tolist() == [True, False, False, False]
    everything = MaskSettings(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    assert keep_candidates(logits, scores, everything).tolist() == [True, True, True, False]


def test_upscale_mask_resizes_bilinearly_then_cuts():
    logits = torch.tensor([[1.0, -1.0], [1.0, -1.0]])  # left half inside
    mask = upscale_mask(logits, (3, 8), 0.0)
    assert mask.dtype == bool and mask.shape == (3, 8)
    assert mask.tolist() == [[True] * 4 + [False] * 4] * 3
    assert upscale_mask(logits, (1, 2), 0.0).tolist() == [[True, False]]
    assert not upscale_mask(logits, (2, 2), 1.5).any()


def test_settings_refuse_an_empty_grid_or_batch():
    with pytest.raises(ValueError, match="points_per_side"):
        MaskSettings(points_per_side=0)
    with pytest.raises(ValueError, match="points_per_batch"):
        MaskSettings(points_per_batch=0)


# --- the tiny SAM2 ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo(data_dir: Path) -> Image.Image:
    """A real 512x384 photo: not square, so height and width cannot be swapped unnoticed."""
    return Image.open(data_dir / "images" / "KADID_I01.png").convert("RGB")


def segmenter_with(folder: Path, **changes) -> Segmenter:
    return Segmenter(str(folder), settings=replace(EVERYTHING, **changes))


@pytest.fixture(scope="module")
def everything(sam2_dir: Path, photo: Image.Image) -> list[np.ndarray]:
    return segmenter_with(sam2_dir).masks(photo)


def test_masks_of_a_real_photo_feed_algorithm_1(everything: list[np.ndarray]):
    assert len(everything) == 3 * 4 * 4  # every candidate: three nested masks per point
    areas = [int(mask.sum()) for mask in everything]
    assert areas == sorted(areas, reverse=True)
    for mask in everything:
        assert mask.dtype == bool and mask.shape == (384, 512) and mask.any()
    regions = select_regions(everything, (384, 512), min_area=0.05)
    assert [region.area for region in regions if region.kind == "object"] == [
        area for area in areas if area >= 0.05 * 384 * 512
    ]


def test_the_image_is_embedded_once_and_the_grid_decoded_in_batches(
    sam2_dir: Path, photo: Image.Image, monkeypatch
):
    segmenter = segmenter_with(sam2_dir, points_per_batch=5)
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
    segmenter.masks(photo)
    assert calls == {"embed": 1, "decode": 4}  # 16 points in batches of 5, 5, 5, 1
    # SAM2 stretches the 512x384 photo to its square 1024 input: the grid spans all of it.
    assert torch.equal(torch.cat(prompts), point_grid(4) * 1024)
    segmenter.masks(photo.resize((100, 60)))
    assert calls == {"embed": 2, "decode": 8}


def test_points_per_batch_changes_nothing(
    sam2_dir: Path, photo: Image.Image, everything: list[np.ndarray]
):
    whole = segmenter_with(sam2_dir)  # all 16 points in one batch
    batched = segmenter_with(sam2_dir, points_per_batch=5)
    assert batched.identity == whole.identity  # stored masks stay valid
    masks = batched.masks(photo)
    assert len(masks) == len(everything)
    # Equal up to float rounding: the decoder's sums differ by ~1e-6 between batch sizes,
    # which may flip a pixel whose logit sits right at the cut.
    for mask in masks:
        assert min(int((mask ^ other).sum()) for other in everything) <= 2


def test_nms_and_thresholds_thin_out_the_masks(
    sam2_dir: Path, photo: Image.Image, everything: list[np.ndarray]
):
    deduplicated = segmenter_with(sam2_dir, box_nms_thresh=0.7).masks(photo)
    assert 0 < len(deduplicated) < len(everything)
    kept_boxes = mask_boxes(torch.from_numpy(np.stack(deduplicated)))
    assert box_iou(kept_boxes, kept_boxes).fill_diagonal_(0).max() <= 0.7
    confident = segmenter_with(sam2_dir, pred_iou_thresh=0.5).masks(photo)
    stable = segmenter_with(sam2_dir, stability_score_thresh=0.3).masks(photo)
    assert 0 < len(confident) < len(everything) and 0 < len(stable) < len(everything)
    defaults = Segmenter(str(sam2_dir), settings=MaskSettings(points_per_side=4))
    assert defaults.masks(photo) == []  # random weights pass no default threshold


def test_identity_names_checkpoint_dtype_and_every_setting_that_changes_masks(sam2_dir: Path):
    plain = Segmenter(str(sam2_dir))
    assert plain.identity.startswith(str(sam2_dir.resolve()) + "#")
    assert "|float32|" in plain.identity
    for change in ({"points_per_side": 9}, {"pred_iou_thresh": 0.5}, {"mask_threshold": 0.1}):
        assert Segmenter(str(sam2_dir), settings=MaskSettings(**change)).identity != plain.identity


def test_tiny_images_are_segmented_at_their_own_size(sam2_dir: Path):
    segmenter = segmenter_with(sam2_dir)
    rng = np.random.default_rng(0)
    for width, height in ((8, 8), (64, 1), (1, 1)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        masks = segmenter.masks(image)
        assert masks, f"{width}x{height}"
        for mask in masks:
            assert mask.shape == (height, width) and mask.dtype == bool and mask.any()
    assert segmenter.masks(Image.new("RGB", (0, 5))) == []  # no pixels, no masks


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
    segmenter = Segmenter(str(tmp_path), settings=EVERYTHING)
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
            Segmenter(str(folder))
        assert reason in str(error.value) and "\n" not in str(error.value)
