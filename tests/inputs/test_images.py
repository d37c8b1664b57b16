"""Every odd or broken input becomes RGB pixels or one clear line naming the file."""

import errno
import io
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import llmiqa
from llmiqa.inputs import images
from llmiqa.inputs.images import (
    MAX_PIXELS,
    ImageError,
    from_pil,
    legacy_pixel_hash,
    load_image,
    pixel_hash,
)


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


@pytest.mark.parametrize("block", [images.HASH_BLOCK_BYTES, 1 << 30])
def test_the_content_hash_is_the_one_stores_already_hold(data_dir, monkeypatch, block):
    """Store keys must survive any rewrite of the hashing: pinned digests of known pixels,
    in blocks or whole; and the hash of stores made before schema 6, which their migration
    recomputes, is pinned too."""
    monkeypatch.setattr(images, "HASH_BLOCK_BYTES", block)
    koniq = load_image(data_dir / "images" / "KonIQ_6898804586.jpg")
    assert koniq.digest == "309c69ef1210ca6a1566e868d6b91f1b"
    assert legacy_pixel_hash(koniq.image) == "9864aa177b38bbc58893f594fbb8bf40"
    y, x = np.mgrid[0:1200, 0:1000]  # hashed in several blocks, or in one
    ramp = Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8))
    assert pixel_hash(ramp) == "6d9408296ed0fd47d1d2e5ffe5247e15"
    assert legacy_pixel_hash(ramp) == "75abbfd32e9667bdb5e7c2eeb0f82dd3"


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


def load_or_unblock(path: Path, seconds: float = 10) -> ImageError:
    """The ImageError load_image raises for path; fails (not hangs) if it blocks on a FIFO."""
    outcome = {}

    def load():
        try:
            load_image(path)
        except Exception as error:
            outcome["error"] = error

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():  # blocked opening a FIFO: open its other end so that it returns
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(seconds)
        pytest.fail(f"load_image blocked on {path}")
    assert isinstance(outcome.get("error"), ImageError), outcome
    return outcome["error"]


def _socket(path: Path) -> Path:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays
    return path


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda d: _fifo(d / "pipe.png"), "is a FIFO (named pipe)"),
        (lambda d: _socket(d / "s.png"), "is a socket"),
        (lambda d: _link(d / "zero.png", "/dev/zero"), "is a character device"),
    ],
    ids=["fifo", "socket", "device"],
)
def test_files_that_are_not_regular_are_refused_unopened(tmp_path, make, kind):
    path = make(tmp_path)
    message = str(load_or_unblock(path))
    assert message.startswith(f"{path}: {kind}") and message.endswith(", not an image file")


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: d / ("x" * 300 + ".png"), "file name too long"),
        (lambda d: _write(d / "file.png", b"") / "x.png", "a part of the path is a file"),
        (lambda d: _link(d / "a.png", _link(d / "b.png", d / "a.png")), "symbolic link loop"),
        (lambda d: _link(d / "gone.png", d / "moved.png"), "broken symbolic link"),
        (lambda d: Path(str(d / "nul") + "\0.png"), "invalid file name"),
    ],
    ids=["ENAMETOOLONG", "ENOTDIR", "ELOOP", "broken link", "NUL"],
)
def test_paths_the_os_cannot_open_are_an_image_error_not_a_crash(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert str(caught.value).startswith(f"{path}: {problem}")


def test_a_file_we_may_not_read_is_an_image_error(photo, tmp_path, monkeypatch):
    path = save(photo, tmp_path / "secret.png")
    path.chmod(0)
    real_open = os.open

    def open_as_a_user(file, *args):  # root reads a chmod-0 file: refuse it as a user's OS would
        if Path(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args)

    monkeypatch.setattr(os, "open", open_as_a_user)
    with pytest.raises(ImageError, match=r"secret\.png: permission denied$"):
        load_image(path)


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _link(path: Path, target) -> Path:
    path.symlink_to(target)
    return path


def test_truncated_files_are_reported_as_such(photo, tmp_path):
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG")
    path = _write(tmp_path / "cut.jpg", buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: truncated or corrupt"):
        load_image(path)


PEAK_MEMORY = """
import sys
from llmiqa.inputs.images import load_image

def peak():  # bytes: this process's resident-memory high-water mark (PIL buffers included)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024

load_image(sys.argv[1])  # warm up: the decoder imported, first allocations made
before = peak()
loaded = load_image(sys.argv[2])
print((peak() - before) / (loaded.image.width * loaded.image.height))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM")
def test_loading_a_large_photo_holds_one_decoded_copy(tmp_path):
    """PIL keeps RGB in 4 bytes a pixel; a copy per step (transpose, convert, hash) was 14."""
    y, x = np.mgrid[0:2000, 0:3000].astype(np.uint8)
    Image.fromarray(np.stack([x, y, x ^ y], -1)).save(tmp_path / "large.jpg")
    Image.new("RGB", (64, 48)).save(tmp_path / "small.jpg")
    env = {**os.environ, "PYTHONPATH": str(Path(llmiqa.__file__).parents[1])}
    command = [sys.executable, "-c", PEAK_MEMORY, tmp_path / "small.jpg", tmp_path / "large.jpg"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert float(run.stdout) < 6.0  # bytes a pixel above the baseline, at the peak


def _write(path, data: bytes):
    path.write_bytes(data)
    return path
