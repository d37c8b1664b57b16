"""The Figure 6 overlay: masks tinted, boxes outlined, labels on dark plates."""

import numpy as np
import pytest
from PIL import Image

from llmiqa.evaluation.draw import PALETTE, draw_regions
from llmiqa.method.aggregate import Aggregation
from llmiqa.method.regions import Region, mask_box
from llmiqa.method.results import ImageResult


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
    assert small.width == 200 and small.height > 150  # the image part 200x150, then the legend


def test_regions_and_results_must_correspond(scene):
    image, regions, result = scene
    with pytest.raises(ValueError, match="1 regions for 2 region results"):
        draw_regions(image, regions[:1], result)


def test_labels_never_overlap_even_when_a_box_spans_the_frame(scene):
    """The sweep's case: a box over the whole frame puts the image's score, its region's
    score and its area label in the same corners."""
    from PIL import ImageDraw, ImageFont

    from llmiqa.evaluation.draw import corners, place

    image, _, _ = scene
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    taken: list = []
    place(draw, "4.21", ImageFont.load_default(size=28), [((6, 6), "lt")], taken, image.size)
    frame = (0, 0, 400, 300)
    for _ in range(3):  # three whole-frame regions: score and area each
        for text, first in (("4.00", "lt"), ("100%", "rb")):
            place(draw, text, font, corners(frame, 7, first, 21), taken, image.size)
    for i, a in enumerate(taken):
        assert min(a[0], a[1]) >= 0 and a[2] <= 400 and a[3] <= 300  # inside the image
        for b in taken[i + 1 :]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])


def test_the_drawing_carries_a_legend_below(scene):
    image, regions, result = scene
    drawn = draw_regions(image, regions, result)
    assert drawn.width == 400 and drawn.height > 300
    strip = np.asarray(drawn)[300:]
    swatches = [tuple(strip[y, 10]) for y in range(strip.shape[0])]
    assert PALETTE[0] in swatches and PALETTE[1] in swatches  # one swatch per region
