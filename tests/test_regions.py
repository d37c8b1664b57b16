"""Algorithm 1 and the sub-images it yields, on hand-made masks."""

import numpy as np
import pytest
from PIL import Image

from llmiqa.regions import Region, crop_box, mask_box, select_regions, sub_image, widen_box


def rect(shape, x0, y0, x1, y1):
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


SHAPE = (100, 200)  # height, width: 20 000 pixels


def test_mask_box_is_tight_and_exclusive():
    assert mask_box(rect(SHAPE, 10, 20, 30, 25)) == (10, 20, 30, 25)


def test_masks_below_the_threshold_are_dropped_and_the_complement_added():
    big = rect(SHAPE, 0, 0, 100, 100)  # 10 000 px = 50 %
    small = rect(SHAPE, 150, 0, 160, 10)  # 100 px = 0.5 %
    regions = select_regions([big, small], SHAPE, min_area=0.01)
    assert [r.kind for r in regions] == ["object", "complement"]
    assert regions[0].area == 10_000 and regions[0].box == (0, 0, 100, 100)
    complement = regions[1]
    # the dropped small mask does not count as covered: its pixels are in the complement
    np.testing.assert_array_equal(complement.mask, ~big)
    assert complement.area == 10_000 and complement.box == (100, 0, 200, 100)
    assert complement.area_fraction() == 0.5


def test_overlapping_masks_keep_their_own_areas_and_cover_their_union():
    left = rect(SHAPE, 0, 0, 120, 100)
    right = rect(SHAPE, 80, 0, 180, 100)
    regions = select_regions([left, right], SHAPE, min_area=0.05)
    assert [r.area for r in regions] == [12_000, 10_000, 2_000]
    np.testing.assert_array_equal(regions[2].mask, ~(left | right))
    assert regions[2].box == (180, 0, 200, 100)


def test_no_masks_makes_the_whole_image_the_one_region():
    (region,) = select_regions([], SHAPE, min_area=0.01)
    assert region.kind == "complement" and region.box == (0, 0, 200, 100) and region.area == 20_000


def test_a_small_complement_is_dropped():
    almost_all = rect(SHAPE, 0, 0, 199, 100)  # leaves a 100-pixel column
    regions = select_regions([almost_all], SHAPE, min_area=0.01)
    assert [r.kind for r in regions] == ["object"]


def test_the_threshold_is_inclusive_and_empty_masks_never_count():
    exactly = rect(SHAPE, 0, 0, 20, 10)  # 200 px = 1 %
    empty = np.zeros(SHAPE, dtype=bool)
    regions = select_regions([exactly, empty], SHAPE, min_area=0.01)
    assert regions[0].area == 200 and len(regions) == 2


def test_a_mask_of_the_wrong_size_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        select_regions([np.ones((5, 5), bool)], SHAPE, 0.01)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (100, 200, 3), dtype=np.uint8))


def test_bbox_crops_are_the_original_pixels_inside_the_box(image):
    mask = rect(SHAPE, 30, 40, 90, 80) & ~rect(SHAPE, 50, 50, 60, 60)
    region = Region(mask_box(mask), int(mask.sum()), "object", mask)
    crop = np.asarray(sub_image(image, region, "bbox"))
    np.testing.assert_array_equal(crop, np.asarray(image)[40:80, 30:90])


def test_mask_mode_zeroes_exactly_the_pixels_outside_the_mask(image):
    mask = rect(SHAPE, 30, 40, 90, 80) & ~rect(SHAPE, 50, 50, 60, 60)
    region = Region(mask_box(mask), int(mask.sum()), "object", mask)
    crop = np.asarray(sub_image(image, region, "mask"))
    original = np.asarray(image)[40:80, 30:90]
    inside = mask[40:80, 30:90]
    np.testing.assert_array_equal(crop[inside], original[inside])
    assert (crop[~inside] == 0).all() and (~inside).sum() == 100


def test_thin_boxes_are_widened_with_original_pixels_within_the_image():
    assert widen_box((100, 10, 101, 90), (200, 100)) == (87, 10, 115, 90)
    assert widen_box((10, 10, 11, 90), (200, 100)) == (0, 10, 28, 90)  # clamped at the edge
    assert widen_box((0, 0, 2, 2), (200, 100)) == (0, 0, 28, 28)
    assert widen_box((195, 98, 200, 100), (200, 100)) == (172, 72, 200, 100)
    assert widen_box((0, 0, 5, 5), (10, 12)) == (0, 0, 10, 12)  # image smaller than 28


def test_crop_box_keeps_boxes_that_are_large_enough():
    mask = rect(SHAPE, 30, 40, 90, 80)
    region = Region(mask_box(mask), int(mask.sum()), "object", mask)
    assert crop_box(region, (200, 100)) == (30, 40, 90, 80)
