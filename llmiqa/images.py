"""Decoding any image file a user may hand us into the RGB pixels a rater sees.

Every failure becomes one ImageError whose message names the file and the problem, so a
batch can record it and go on with the other images.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from llmiqa.errors import one_line

# PIL's decompression-bomb guard (about 89.5 megapixels): larger files are refused unread.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


class ImageError(ValueError):
    """An input that cannot be scored; str(error) is one line naming the file."""


@dataclass(frozen=True)
class LoadedImage:
    """Decoded RGB pixels plus what identifies them."""

    name: str  # the path as given, or "<image N>" for in-memory images
    image: Image.Image  # mode "RGB", EXIF orientation applied
    digest: str  # hash of the decoded pixels: the store's key for this image


def pixel_hash(image: Image.Image) -> str:
    """Content hash of decoded RGB pixels; same pixels, same key, whatever the file format."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB as a viewer would show it.

    Transparency is composited over white (what most viewers and web pages show), and
    16/32-bit and float images are rescaled rather than clipped.
    """
    if image.mode.startswith("I") or image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        peak = array.max(initial=0)
        if image.mode.startswith("I;16") or (image.mode == "I" and peak > 255):
            full_scale = 65535.0
        else:
            full_scale = 1.0 if image.mode == "F" and peak <= 1.0 else 255.0
        array = np.clip(array / full_scale * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path) -> LoadedImage:
    """Open, fully decode and normalise one image file; raise ImageError on any problem."""
    name = str(path)
    file = Path(path)
    if not file.exists():
        raise ImageError(f"{name}: no such file")
    if file.is_dir():
        raise ImageError(f"{name}: is a directory, not an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as opened:
                opened.seek(0)  # animated files: the first frame
                opened.load()
                image = ImageOps.exif_transpose(opened)
                image = to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{name}: too many pixels to decode safely ({error})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(f"{name}: truncated or corrupt image data ({one_line(error)})") from None
    if image.width < 1 or image.height < 1:
        raise ImageError(f"{name}: empty image ({image.width}x{image.height})")
    return LoadedImage(name=name, image=image, digest=pixel_hash(image))


def from_pil(image: Image.Image, name: str) -> LoadedImage:
    """Wrap an in-memory PIL image (API use) the same way a file is loaded."""
    rgb = to_rgb(ImageOps.exif_transpose(image))
    return LoadedImage(name=name, image=rgb, digest=pixel_hash(rgb))
