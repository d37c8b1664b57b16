"""The Figure 6 overlay: masks tinted, boxes outlined, labels on dark plates."""

import numpy as np
import pytest
from PIL import Image

from llmiqa.aggregate import Aggregation
from llmiqa.draw import PALETTE, draw_regions
from llmiqa.regions import Region, mask_box
from llmiqa.results import ImageResult


def rect(shape, x0, y0, x1, y1):
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture
def scene():
    """A flat grey 400x300 image, one object region and its complement."""
    shape = (300, 400)
    image = Image.new("RGB", shape[::-1], (128, 128, 128))
    mask = rect(shape, 40, 60, 200, 220)
    regions = [
        Region(mask_box(mask), int(mask.sum()), "object", mask),
        Region(mask_box(~mask), int((~mask).sum()), "complement", ~mask),
    ]
    logprobs = np.log(np.full((3, 1, 7), 1 / 7) * 0.9)
    result = ImageResult(
        name="grey", models=("m",), digest="d", size=(400, 300),
        kinds=tuple(r.kind for r in regions), boxes=tuple(r.box for r in regions),
        areas=tuple(r.area for r in regions), logprobs=logprobs,
        other_logprob=np.full((3, 1), np.log(0.1)), other_value=np.full((3, 1), np.nan),
        aggregation=Aggregation(),
    )  # fmt: skip
    return image, regions, result


def test_each_region_is_tinted_in_its_colour(scene):
    image, regions, result = scene
    drawn = np.asarray(draw_regions(image, regions, result), dtype=float)
    inside = drawn[150, 120]  # inside the object, away from labels and the outline
    expected = 0.6 * 128 + 0.4 * np.array(PALETTE[0])
    np.testing.assert_allclose(inside, expected, atol=1)
    outside = drawn[280, 350]
    np.testing.assert_allclose(outside, 0.6 * 128 + 0.4 * np.array(PALETTE[1]), atol=1)


def test_a_huge_image_is_drawn_at_max_side(scene):
    image, regions, result = scene
    small = draw_regions(image, regions, result, max_side=200)
    assert small.size == (200, 150)


def test_regions_and_results_must_correspond(scene):
    image, regions, result = scene
    with pytest.raises(ValueError, match="1 regions for 2 region results"):
        draw_regions(image, regions[:1], result)
