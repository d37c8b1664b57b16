"""Decoding any image file a user may hand us into the RGB pixels a rater sees.

Every failure becomes one ImageError whose message names the file and the problem, so a
batch can record it and go on with the other images. Only regular files are opened: a
FIFO would block the run forever (Ctrl-C cannot interrupt the open) and a device may act
on being opened. Memory: decoding holds the decoded image plus, for modes other than
RGB, one converted copy; hashing reads the pixels in blocks, never as one copy.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import xxhash
from PIL import Image, ImageOps, UnidentifiedImageError

from llmiqa.errors import UsageError, one_line

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
# PIL's decompression-bomb guard (about 89.5 megapixels): larger files are refused unread.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
# raw pixels hashed 64 KiB at a time, never as one full copy: a block under malloc's mmap
# threshold (128 KiB) reuses freed memory, a larger one may be fresh pages each time
HASH_BLOCK_BYTES = 64 << 10

# What the OS says when a path cannot be opened, in words a user can act on.
_OS_PROBLEMS = {
    errno.ENOENT: "no such file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "file name too long for the file system",
    errno.ELOOP: "symbolic link loop (or too many links in the path)",
}
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class ImageError(ValueError):
    """An input that cannot be scored; str(error) is one line naming the file."""


@dataclass(frozen=True)
class LoadedImage:
    """Decoded RGB pixels plus what identifies them."""

    name: str  # the path as given, or "<image N>" for in-memory images
    image: Image.Image  # mode "RGB", EXIF orientation applied
    digest: str  # hash of the decoded pixels: the store's key for this image
    legacy: str | None = None  # its schema-5 digest, for a store that still holds such keys


@dataclass(frozen=True)
class Encoded:
    """An image file's bytes read from elsewhere (a tar shard's member, a Parquet cell),
    under the stable name that says where: decoded like a file of that name. `problem`:
    why there are no bytes to decode (a sample without an image member, an empty cell),
    so a damaged item is one failed result, not a crash or a silent gap."""

    name: str
    data: bytes
    problem: str | None = None


def pixel_hash(image: Image.Image) -> str:
    """Content hash of decoded RGB pixels; same pixels, same key, whatever the file format.

    xxh3-128 (a key, not a defence: 30x faster than blake2b, which cost as much as the
    decoding) of "WxH:" and the raw row-major buffer, fed as PIL encodes it.
    """
    return _raw_hash(xxhash.xxh3_128(), image)


def legacy_pixel_hash(image: Image.Image) -> str:
    """The content hash of store schema 5 and before (blake2b-128 over the same bytes):
    computed only to find an image's ratings in a store made before (scoring.store)."""
    return _raw_hash(hashlib.blake2b(digest_size=16), image)


def _raw_hash(digest: Any, image: Image.Image) -> str:
    """Feed `digest` "WxH:" and the raw pixels, block by block as Image.tobytes() encodes
    them but hashed instead of joined: no copy of the image, no crop, and small blocks that
    reuse freed memory (a full copy, or MiB strips, faulted in fresh pages each time)."""
    digest.update(f"{image.width}x{image.height}:".encode())
    if image.width and image.height:
        image.load()
        encoder = Image._getencoder(image.mode, "raw", image.mode)
        encoder.setimage(image.im, (0, 0, *image.size))
        status = 0
        while not status:
            _, status, block = encoder.encode(max(HASH_BLOCK_BYTES, image.width * 4))
            digest.update(block)
        if status < 0:
            raise OSError(f"PIL's raw encoder failed ({status}) on {image.mode} pixels")
    return digest.hexdigest()


def keep_freed_pixels(images: int) -> None:
    """Have PIL keep the pixel memory of this many freed images (a block of at most 16 MiB
    each) for the next ones, instead of returning it to the OS: a run holds chunks of
    decoded images at once, and each new image's pixels were otherwise fresh pages,
    faulted in one by one (a third of a JPEG's decoding time). Memory a run used stays
    with it; PILLOW_BLOCKS_MAX, when set, decides instead."""
    if "PILLOW_BLOCKS_MAX" not in os.environ:
        Image.core.set_blocks_max(max(Image.core.get_blocks_max(), images))


def _deep_to_rgb(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float images rescaled (not clipped) to 8 bits, in place."""
    array = np.asarray(image, dtype=np.float64)
    peak = array.max(initial=0)
    if image.mode.startswith("I;16") or (image.mode == "I" and peak > 255):
        full_scale = 65535.0
    else:
        full_scale = 1.0 if image.mode == "F" and peak <= 1.0 else 255.0
    array /= full_scale  # in place: the same arithmetic as array / s * 255, no temporaries
    array *= 255.0
    np.clip(array, 0, 255, out=array)
    np.round(array, out=array)
    return Image.fromarray(array.astype(np.uint8)).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB as a viewer would show it.

    Transparency is composited over white (what most viewers and web pages show), and
    16/32-bit and float images are rescaled rather than clipped. An RGB image is returned
    as it is, not copied.
    """
    if image.mode.startswith("I") or image.mode == "F":
        return _deep_to_rgb(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _os_problem(file: Path, error: OSError) -> str:
    """Why the OS would not stat or open file, in words a user can act on."""
    if error.errno == errno.ENOENT and os.path.islink(file):
        return "broken symbolic link"
    return _OS_PROBLEMS.get(error.errno, error.strerror or type(error).__name__)


def _os_call(call: Callable[..., Any], file: Path, name: str, *args: int) -> Any:
    """call(file, *args), an OSError or a NUL byte in the name becoming one ImageError."""
    try:
        return call(file, *args)
    except OSError as error:
        raise ImageError(f"{name}: {_os_problem(file, error)}") from None
    except ValueError as error:  # embedded null byte
        raise ImageError(f"{name}: invalid file name ({error})") from None


def _refuse_irregular(mode: int, name: str) -> None:
    """Raise ImageError unless st_mode is a regular file's, saying what the file is."""
    for test, kind in _FILE_KINDS:
        if test(mode):
            raise ImageError(f"{name}: is {kind}, not an image file")
    if not stat.S_ISREG(mode):
        raise ImageError(f"{name}: is not a regular file, so not an image file")


def _open_regular(file: Path, name: str) -> BinaryIO:
    """Open a regular file for reading; anything else is refused before it is opened.

    stat() decides before open(); opening with O_NONBLOCK and checking fstat() again
    closes the race where the file is replaced by a FIFO in between.
    """
    _refuse_irregular(_os_call(os.stat, file, name).st_mode, name)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    descriptor = _os_call(os.open, file, name, flags)
    try:
        _refuse_irregular(os.fstat(descriptor).st_mode, name)
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "rb")


def path_problem(path: str | Path) -> str | None:
    """Why a path cannot be an image file, known from the file system alone (a stat, no
    read: before any model loads); None when it might be one."""
    try:
        _refuse_irregular(_os_call(os.stat, Path(path), str(path)).st_mode, str(path))
    except ImageError as error:
        return str(error)
    return None


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says, in place (no copy when upright)."""
    ImageOps.exif_transpose(image, in_place=True)
    return image


def load_image(path: str | Path) -> LoadedImage:
    """Open, fully decode and normalise one image file; raise ImageError on any problem."""
    name = str(path)
    with _open_regular(Path(path), name) as file:
        return decode(file, name)


def load_encoded(item: Encoded) -> LoadedImage:
    """Decode an image's bytes as `load_image` decodes a file."""
    if item.problem is not None:
        raise ImageError(item.problem)
    return decode(io.BytesIO(item.data), item.name)


def decode(file: BinaryIO, name: str) -> LoadedImage:
    """Fully decode and normalise the image in `file`; raise ImageError naming `name`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(file)
            image.seek(0)  # animated files: the first frame
            image.load()
            image = to_rgb(_upright(image))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{name}: too many pixels to decode safely ({error})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file PIL can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        problem = one_line(error)
        raise ImageError(f"{name}: truncated or corrupt image data ({problem})") from None
    if image.width < 1 or image.height < 1:
        raise ImageError(f"{name}: empty image ({image.width}x{image.height})")
    return LoadedImage(name=name, image=image, digest=pixel_hash(image))


def from_pil(image: Image.Image, name: str) -> LoadedImage:
    """Wrap an in-memory PIL image (API use) the same way a file is loaded.

    exif_transpose copies, so the caller's image stays theirs to change.
    """
    rgb = to_rgb(ImageOps.exif_transpose(image))
    return LoadedImage(name=name, image=rgb, digest=pixel_hash(rgb))


def expand_inputs(
    paths: list[str], recursive: bool = False, suffixes: frozenset[str] | set[str] = IMAGE_SUFFIXES
) -> list[str]:
    """Folders stand for the image files inside them (sorted; subfolders with `recursive`);
    `suffixes` says which files those are (a collection also takes its tar and Parquet
    shards)."""
    expanded = []
    for path in paths:
        folder = Path(path)
        if not folder.is_dir():
            expanded.append(path)
            continue
        found = folder.rglob("*") if recursive else folder.iterdir()
        images = sorted(str(p) for p in found if p.suffix.lower() in suffixes)
        if not images:
            subfolders = sum(p.is_dir() for p in folder.iterdir())
            hint = f" ({subfolders} subfolder(s): add --recursive)" if subfolders else ""
            raise UsageError(f"{folder}: no image files in this folder{hint}")
        expanded += images
    return expanded


def once(paths: list[str]) -> tuple[list[str], list[str]]:
    """Each file once, in order (however its path is written), and the paths dropped."""
    kept, repeated, seen = [], [], set()
    for path in paths:
        same = _same(path)
        (repeated if same in seen else kept).append(path)
        seen.add(same)
    return kept, repeated


def _same(path: str) -> str:
    """What names one file, however the path is written (a missing file: its text)."""
    try:
        return str(Path(path).resolve(strict=True))
    except (OSError, RuntimeError, ValueError):
        return path
