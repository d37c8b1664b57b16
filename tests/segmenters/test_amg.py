"""SAM2's mask bookkeeping (llmiqa.segmenters.amg) on hand-made inputs: each stage on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from llmiqa.segmenters import amg


def test_point_grid_is_sam2s_cell_centres_row_by_row_in_float64():
    assert amg.point_grid(1).tolist() == [[0.5, 0.5]]
    assert amg.point_grid(2).tolist() == [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
    for n in (3, 8, 32):
        grid = amg.point_grid(n)
        assert grid.dtype == np.float64 and grid.shape == (n * n, 2)
        side = np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)  # build_point_grid's own values
        np.testing.assert_array_equal(grid[:n, 0], side)  # x runs along a row
        np.testing.assert_array_equal(grid[::n, 1], side)  # y steps between rows


def test_prompt_points_follow_the_originals_float_steps():
    pixels, frame = amg.prompt_points(3, width=500, height=375, side=1024)
    expected = torch.as_tensor(amg.point_grid(3) * np.array([[500, 375]])).float()
    assert torch.equal(pixels, expected)
    assert torch.equal(frame[:, 0], pixels[:, 0] / 500 * 1024)
    assert torch.equal(frame[:, 1], pixels[:, 1] / 375 * 1024)
    # a naive float64 computation differs in the last bits for some points: the decoder would see it
    naive = torch.as_tensor(amg.point_grid(3) * 1024).float()
    assert torch.allclose(frame, naive, atol=1e-3)


def test_small_regions_are_8_connected_and_at_most_the_area():
    mask = np.zeros((6, 7), dtype=bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one component of 2
    mask[4:6, 4:7] = True  # 6 pixels
    mask[0, 6] = True  # 1 pixel
    small = amg.small_regions(mask, 2)
    assert small[0, 0] and small[1, 1] and small[0, 6]  # 2 <= 2 and 1 <= 2
    assert not small[4:6, 4:7].any() and not small[~mask].any()
    assert amg.small_regions(mask, 6)[mask].all()
    assert not amg.small_regions(mask, 0).any()


def test_clean_up_fills_holes_and_removes_islands_of_the_decoders_logits():
    logits = torch.full((1, 10, 10), -3.0)
    logits[0, 1:6, 1:6] = 2.0  # a 25-pixel square...
    logits[0, 3, 3] = -1.0  # ...with a one-pixel hole
    logits[0, 8, 8] = 4.0  # and a one-pixel island apart
    cleaned = amg.remove_small_regions(logits, max_area=2, threshold=0.0)
    assert cleaned[0, 3, 3] == 10.0 and cleaned[0, 8, 8] == -10.0  # threshold -/+ 10
    untouched = torch.ones(10, 10, dtype=torch.bool)
    untouched[3, 3] = untouched[8, 8] = False
    assert torch.equal(cleaned[0][untouched], logits[0][untouched])
    # the surrounding background is a component too, but not a small one
    assert torch.equal(amg.remove_small_regions(logits, 0, 0.0), logits)  # 0: off


def test_clean_up_finds_both_kinds_of_region_on_the_uncleaned_logits():
    logits = torch.full((1, 7, 7), -2.0)
    logits[0, 1:6, 1:6] = 1.0  # a ring of 16 pixels...
    logits[0, 2:5, 2:5] = -1.0  # ...around a 9-pixel hole
    cleaned = amg.remove_small_regions(logits, max_area=16, threshold=0.0)
    # The hole is filled and the ring, small on the uncleaned mask, removed: a disc of 9 is
    # left, although ring + hole would make a 25-pixel region (SAM2 computes both on the input).
    assert (cleaned[0] > 0).sum() == 9 and (cleaned[0, 2:5, 2:5] == 10.0).all()
    only_islands = torch.full((2, 4, 4), -1.0)
    only_islands[0, 0, 0] = only_islands[0, 3, 3] = 1.0
    assert not (amg.remove_small_regions(only_islands, 3, 0.0)[0] > 0).any()  # all small: empty


def test_upscale_is_sam2s_bilinear_resize_and_chunking_changes_no_bit():
    torch.manual_seed(0)
    logits = torch.randn(5, 16, 16)
    whole = torch.nn.functional.interpolate(
        logits[None], (37, 50), mode="bilinear", align_corners=False
    )[0]  # SAM2 resizes a (batch, 3, h, w) block at once
    assert torch.equal(amg.upscale(logits, (37, 50)), whole)
    parts = torch.cat(
        [amg.upscale(logits[s], (37, 50)) for s in amg.chunks(5, (37, 50), 3 * 37 * 50 * 4)]
    )
    assert torch.equal(parts, whole)


def test_chunks_respect_the_budget_and_hold_at_least_one_map():
    assert [(s.start, s.stop) for s in amg.chunks(5, (10, 10), 2 * 400)] == [(0, 2), (2, 4), (4, 5)]
    assert len(list(amg.chunks(3, (10_000, 10_000), 1))) == 3
    assert list(amg.chunks(0, (10, 10))) == []


def test_stability_score_is_the_iou_of_the_high_and_low_cuts():
    logits = torch.tensor([[3.0, 0.5], [-0.5, -3.0]])  # high cut (>1): 1 px, low cut (>-1): 3 px
    assert amg.stability_score(logits, 0.0, 1.0).item() == pytest.approx(1 / 3)
    assert amg.stability_score(logits, -0.25, 0.5).item() == pytest.approx(2 / 3)
    assert amg.stability_score(logits, 2.0, 0.5).item() == 1.0  # >2.5 and >1.5: one pixel
    assert amg.stability_score(torch.full((2, 2), 5.0), 0.0, 1.0).item() == 1.0
    assert amg.stability_score(torch.full((2, 2), -5.0), 0.0, 1.0).isnan()  # SAM2: 0 / 0
    batched = torch.stack([logits, -logits]).reshape(2, 1, 2, 2)
    assert amg.stability_score(batched, 0.0, 1.0).flatten().tolist() == pytest.approx([1 / 3] * 2)
    assert amg.stability_score(logits, 0.0, 0.7).dtype == torch.float32


def test_mask_boxes_are_inclusive_and_zero_for_empty_masks():
    masks = torch.zeros(4, 5, 6, dtype=torch.bool)
    masks[0, 1, 2] = True  # one pixel at row 1, column 2
    masks[1] = True
    masks[3, 0, 5] = masks[3, 4, 0] = True  # opposite corners
    assert amg.mask_boxes(masks).tolist() == [
        [2, 1, 2, 1],
        [0, 0, 5, 4],
        [0, 0, 0, 0],
        [0, 0, 5, 4],
    ]
    assert amg.mask_boxes(torch.zeros(0, 5, 6, dtype=torch.bool)).shape == (0, 4)


def test_nms_suppresses_boxes_whose_iou_is_above_the_threshold():
    boxes = torch.tensor(
        [
            [0, 0, 10, 10],  # 0: score .5, IoU .81 with box 1 -> suppressed at .5
            [0, 0, 9, 9],  # 1: the best
            [20, 20, 30, 30],  # 2: alone
            [0, 0, 10, 4],  # 3: IoU with 1 = 36/85 < .5 -> kept
        ],
        dtype=torch.float,
    )
    scores = torch.tensor([0.5, 0.9, 0.7, 0.8])
    assert amg.nms(boxes, scores, 0.5).tolist() == [1, 3, 2]
    assert amg.nms(boxes, scores, 0.9).tolist() == [1, 3, 2, 0]  # .81 is not above .9
    assert amg.nms(boxes, scores, 0.0).tolist() == [1, 2]
    # inclusive pixel boxes are measured as SAM2 does: a one-pixel-wide box has area 0 and
    # neither suppresses nor is suppressed
    thin = torch.tensor([[5, 0, 5, 9], [5, 0, 5, 9]], dtype=torch.float)
    assert amg.nms(thin, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert amg.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def test_nms_is_torchvisions_batched_nms_also_on_ties():
    torch.manual_seed(0)
    corners = torch.randint(0, 50, (40, 2)).float()
    boxes = torch.cat([corners, corners + torch.randint(1, 30, (40, 2))], dim=1)
    scores = torch.randint(0, 3, (40,)).float()  # many ties: torch.sort decides their order
    expected = torchvision.ops.batched_nms(boxes, scores, torch.zeros(40), 0.3)
    assert torch.equal(amg.nms(boxes, scores, 0.3), expected)
    assert torch.equal(amg.nms(boxes, scores, 0.3), amg.nms(boxes.clone(), scores.clone(), 0.3))


def test_measure_gives_stability_box_and_area_at_the_image_size():
    logits = torch.full((2, 4, 4), -5.0)
    logits[0, :2, :2] = 5.0  # top-left quarter
    stability, boxes, areas = amg.measure(logits, (8, 12), threshold=0.0, offset=1.0)
    full = amg.upscale(logits, (8, 12))
    assert areas.tolist() == [int((full[0] > 0).sum()), 0]
    assert boxes[0].tolist() == amg.mask_boxes(full[:1] > 0)[0].tolist()
    assert boxes[1].tolist() == [0, 0, 0, 0]
    assert stability[0] == amg.stability_score(full[0], 0.0, 1.0) and stability[1].isnan()
    empty = amg.measure(torch.zeros(0, 4, 4), (8, 12), 0.0, 1.0)
    assert [t.shape for t in empty] == [(0,), (0, 4), (0,)]
