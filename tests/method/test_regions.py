"""Algorithm 1 and the sub-images it yields, on hand-made masks."""

import numpy as np
import pytest
from PIL import Image

from llmiqa.method.regions import (
    Region,
    RegionSettings,
    View,
    mask_box,
    region_view,
    select_regions,
    widen_box,
)

PAPER = RegionSettings(min_area=0.01)  # t = 1 % of the image, complement = uncovered pixels
RELEASED = RegionSettings(min_area=1000, complement_area="remainder")  # t = 1000 px


def rect(shape, x0, y0, x1, y1):
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


SHAPE = (100, 200)  # height, width: 20 000 pixels


def test_mask_box_is_tight_and_exclusive_over_every_component():
    assert mask_box(rect(SHAPE, 10, 20, 30, 25)) == (10, 20, 30, 25)
    two = rect(SHAPE, 10, 20, 30, 25) | rect(SHAPE, 100, 5, 120, 8)
    assert mask_box(two) == (10, 5, 120, 25)  # the union of the components' boxes


def test_masks_below_the_threshold_are_dropped_and_the_complement_added():
    big = rect(SHAPE, 0, 0, 100, 100)  # 10 000 px = 50 %
    small = rect(SHAPE, 150, 0, 160, 10)  # 100 px = 0.5 %
    regions = select_regions([big, small], SHAPE, PAPER)
    assert [r.kind for r in regions] == ["object", "complement"]
    assert regions[0].area == 10_000 and regions[0].box == (0, 0, 100, 100)
    complement = regions[1]
    # the dropped small mask does not count as covered: its pixels are in the complement
    np.testing.assert_array_equal(complement.mask, ~big)
    assert complement.area == 10_000 and complement.box == (100, 0, 200, 100)
    assert complement.area_fraction() == 0.5


def test_overlaps_count_once_for_the_paper_and_twice_for_the_released_code():
    left = rect(SHAPE, 0, 0, 120, 100)  # 12 000 px
    right = rect(SHAPE, 80, 0, 180, 100)  # 10 000 px, 4 000 of them shared
    paper = select_regions([left, right], SHAPE, RegionSettings(min_area=0.05))
    assert [r.area for r in paper] == [12_000, 10_000, 2_000]
    np.testing.assert_array_equal(paper[2].mask, ~(left | right))
    assert paper[2].box == (180, 0, 200, 100)
    # the released code: H*W minus the SUM of kept areas, 20 000 - 22 000 < t: no complement
    assert [r.kind for r in select_regions([left, right], SHAPE, RELEASED)] == ["object"] * 2
    narrower = rect(SHAPE, 80, 0, 150, 100)  # 7 000 px: remainder 1 000 = t, kept
    released = select_regions([left, narrower], SHAPE, RELEASED)
    assert released[2].area == 1_000 and released[2].mask.sum() == 5_000


def test_no_masks_makes_the_whole_image_the_one_region():
    for settings in (PAPER, RELEASED):
        (region,) = select_regions([], SHAPE, settings)
        assert region.kind == "complement" and region.box == (0, 0, 200, 100)
        assert region.area == 20_000


def test_a_small_complement_is_dropped():
    almost_all = rect(SHAPE, 0, 0, 199, 100)  # leaves a 100-pixel column
    assert [r.kind for r in select_regions([almost_all], SHAPE, PAPER)] == ["object"]


def test_the_threshold_is_inclusive_a_fraction_below_one_and_pixels_above():
    exactly = rect(SHAPE, 0, 0, 20, 10)  # 200 px = 1 %
    empty = np.zeros(SHAPE, dtype=bool)
    regions = select_regions([exactly, empty], SHAPE, PAPER)
    assert regions[0].area == 200 and len(regions) == 2
    assert RegionSettings(min_area=0.01).threshold(SHAPE) == 200
    assert RegionSettings(min_area=1000).threshold(SHAPE) == 1000
    assert RegionSettings(min_area=201).threshold(SHAPE) > 200
    assert select_regions([exactly], SHAPE, RegionSettings(min_area=201))[0].kind == "complement"


def test_a_mask_of_the_wrong_size_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        select_regions([np.ones((5, 5), bool)], SHAPE, PAPER)


@pytest.mark.parametrize(
    "change", [{"region_mode": "crop"}, {"complement_area": "all"}, {"min_area": 0.0}]
)
def test_bad_settings_are_refused(change):
    with pytest.raises(ValueError):
        RegionSettings(**change)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (100, 200, 3), dtype=np.uint8))


@pytest.fixture
def holed() -> Region:
    mask = rect(SHAPE, 30, 40, 90, 80) & ~rect(SHAPE, 50, 50, 60, 60)
    return Region(mask_box(mask), int(mask.sum()), "object", mask)


def test_bbox_crops_are_the_original_pixels_inside_the_box(image, holed):
    view = region_view(holed, image.size, "bbox", 28)
    np.testing.assert_array_equal(np.asarray(view.pixels(image)), np.asarray(image)[40:80, 30:90])
    assert view.geometry == "bbox:30,40,90,80" and view.area(image.size) == 60 * 40


def test_mask_mode_zeroes_exactly_the_pixels_outside_the_mask(image, holed):
    view = region_view(holed, image.size, "mask", 28)
    crop = np.asarray(view.pixels(image))
    original = np.asarray(image)[40:80, 30:90]
    inside = holed.mask[40:80, 30:90]
    np.testing.assert_array_equal(crop[inside], original[inside])
    assert (crop[~inside] == 0).all() and (~inside).sum() == 100
    other = region_view(Region(holed.box, holed.area, "object", rect(SHAPE, 30, 40, 90, 80)),
                        image.size, "mask", 28)  # fmt: skip
    assert view.geometry.startswith("mask:30,40,90,80:") and other.geometry != view.geometry


def test_a_box_covering_the_image_is_the_whole_image(image):
    everything = np.ones(SHAPE, dtype=bool)
    region = Region(mask_box(everything), everything.size, "complement", everything)
    assert region_view(region, image.size, "bbox", 28) == View()
    assert View().geometry == "whole" and View().pixels(image) is image


def test_thin_boxes_are_widened_with_original_pixels_within_the_image():
    assert widen_box((100, 10, 101, 90), (200, 100), 28) == (87, 10, 115, 90)
    assert widen_box((10, 10, 11, 90), (200, 100), 28) == (0, 10, 28, 90)  # clamped at the edge
    assert widen_box((0, 0, 2, 2), (200, 100), 28) == (0, 0, 28, 28)
    assert widen_box((195, 98, 200, 100), (200, 100), 28) == (172, 72, 200, 100)
    assert widen_box((0, 0, 5, 5), (10, 12), 28) == (0, 0, 10, 12)  # image smaller than 28
    assert widen_box((100, 10, 101, 90), (200, 100), 1) == (100, 10, 101, 90)  # mPLUG-Owl3


def test_views_keep_boxes_that_are_large_enough(holed):
    assert region_view(holed, (200, 100), "bbox", 28).box == (30, 40, 90, 80)
    with pytest.raises(ValueError, match="region mode"):
        region_view(holed, (200, 100), "whole-only", 28)
