"""Every odd or broken input becomes RGB pixels or one clear line naming the file."""

import io

import numpy as np
import pytest
from PIL import Image

from llmiqa.images import MAX_PIXELS, ImageError, from_pil, load_image


@pytest.fixture
def photo(data_dir):
    return Image.open(data_dir / "images" / "LIVEC_1000.JPG").convert("RGB")


def save(image: Image.Image, path, **options):
    image.save(path, **options)
    return path


def test_a_real_jpeg_loads_as_rgb_with_a_stable_content_hash(data_dir):
    first = load_image(data_dir / "images" / "KonIQ_6898804586.jpg")
    again = load_image(str(data_dir / "images" / "KonIQ_6898804586.jpg"))
    assert first.image.mode == "RGB" and first.image.size == (1024, 768)
    assert first.digest == again.digest


def test_same_pixels_in_another_format_share_the_hash(photo, tmp_path):
    png = load_image(save(photo, tmp_path / "a.png"))
    bmp = load_image(save(photo, tmp_path / "a.bmp"))
    assert png.digest == bmp.digest == from_pil(photo, "mem").digest


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("CMYK", ".jpg"),
        ("P", ".png"),
        ("L", ".png"),
        ("1", ".png"),
        ("LA", ".png"),
        ("RGBA", ".png"),
    ],
)
def test_odd_modes_become_rgb(photo, tmp_path, mode, suffix):
    loaded = load_image(save(photo.convert(mode), tmp_path / f"odd{suffix}"))
    assert loaded.image.mode == "RGB" and loaded.image.size == photo.size


def test_transparency_is_composited_over_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    loaded = load_image(save(rgba, tmp_path / "clear.png"))
    assert np.asarray(loaded.image).min() == 255


def test_sixteen_bit_images_are_rescaled_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64), (8, 1)).astype(np.uint16)
    loaded = load_image(save(Image.fromarray(ramp), tmp_path / "deep.png"))
    row = np.asarray(loaded.image)[0, :, 0]
    assert row[0] == 0 and row[-1] == 255
    assert 100 < row[len(row) // 2] < 155  # mid-grey stays mid-grey


def test_exif_orientation_is_applied(photo, tmp_path):
    wide = photo.resize((60, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    loaded = load_image(save(wide, tmp_path / "rotated.jpg", exif=exif))
    assert loaded.image.size == (30, 60)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), color) for color in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    pixel = load_image(path).image.getpixel((4, 4))
    assert pixel[0] > 200 and pixel[2] < 50


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    side = int(MAX_PIXELS**0.5) + 100
    path = save(Image.new("1", (side, side)), tmp_path / "bomb.png")
    with pytest.raises(ImageError, match=r"bomb\.png: too many pixels"):
        load_image(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.jpg", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "notes.jpg", b"this is text, not a picture"), "not an image file"),
        (lambda d: _write(d / "empty.png", b""), "not an image file"),
    ],
)
def test_unreadable_inputs_name_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ImageError) as caught:
        load_image(path)
    text = str(caught.value)
    assert str(path) in text and message in text and "\n" not in text


def test_truncated_files_are_reported_as_such(photo, tmp_path):
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG")
    path = _write(tmp_path / "cut.jpg", buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: truncated or corrupt"):
        load_image(path)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path
