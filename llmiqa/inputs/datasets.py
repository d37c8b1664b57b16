"""The five benchmarks of the paper, read from their official release layouts, plus any CSV.

name      label file(s) under root                         images under   score columns (scale)
koniq10k  koniq10k_scores_and_distributions.csv            1024x768/      MOS (1-5), MOS_zscore
livec     Data/AllImages_release.mat, AllMOS_release.mat   Images/        AllMOS_release (0-100)
spaq      Annotations/MOS and Image attribute scores.xlsx  TestImage/     MOS (0-100)
kadid10k  dmos.csv                                         images/        dmos (1-5)
agiqa3k   data.csv                                         root itself    mos_quality, mos_align

Every official score is already higher = better (KADID's column is named "dmos", but 5
means no visible degradation) and is kept in the release's own units; correlations do
not care about the scale, and Table 1 rescales by the observed min and max. KonIQ's
default is `MOS` (1-5), not `MOS_zscore`: only `MOS` reproduces the paper's Table 1
(see llmiqa/paper/bound.py).

Reading labels never touches the images: Table 1 needs only labels, and a label file is
checked on its own. `Dataset.check_images` tells whether the image folder is there at
all. An image name may also be an input id as `llmiqa score --out` writes it: a tar
sample's image (`shards/0001.tar#key.jpg`) or a Parquet row (`images.parquet#12`),
relative to the image folder like a file's name or absolute; `Dataset.images` reads each
such tar or Parquet file once (llmiqa.inputs.shards.read_named).

A listed image whose file is missing is NOT dropped here: the runner tries it and
counts it as a failure, so the reported n always says what was left out. An image name
that leads outside the root (`..`, an absolute path) is refused unless the caller allows
it (`allow_outside_root=True`): a label file must not make us open any file. A malformed
label file (missing column, non-numeric or non-finite score, empty file, duplicate image
name, score outside the scale) raises DatasetError naming the file and the row.

A cut-short label file is never read as a shorter one:
- Each official release lists a known number of images (OFFICIAL_COUNT); any other count
  is refused unless the caller declares a subset (`subset=True`, the CLI's --subset).
- A CSV must end with a line ending, and it is parsed strictly. Every official CSV ends
  with one (CRLF, or LF for KonIQ's sets file), as does any CSV written by Python's csv,
  pandas, R or Excel. A file cut at an arbitrary byte then either ends mid-line (refused,
  even as a subset: its last number may be cut short, 2.45 read as 2.4), or ends inside a
  quoted field (refused by the strict parser), or ends right after a line ending, where
  every row read is whole and only the count tells, as above.
- A cut xlsx (a zip) or MATLAB file fails to parse and is refused.
"""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from llmiqa.errors import UsageError, one_line
from llmiqa.inputs import parquet
from llmiqa.inputs.shards import PARQUET, Numbered, read_named, split_id


class DatasetError(ValueError):
    """A dataset that cannot be read as asked; str(error) is one line naming the file."""


@dataclass(frozen=True)
class Sample:
    """One labelled image."""

    image: str  # the name as in the label file, relative to Dataset.image_dir (or an id)
    mos: float  # oriented so that higher = better
    split: str | None = None  # the official split, where the release defines one


@dataclass(frozen=True)
class Dataset:
    """Labelled images of one benchmark (or one CSV), in label-file order."""

    name: str
    root: Path
    image_dir: Path
    labels: Path  # the label file the scores were read from (csv: absolute, to pass back)
    score_column: str
    scale: tuple[float, float] | None  # the rating scale of score_column; None for csv
    samples: tuple[Sample, ...]
    parquet_col: str | None = None  # the column of the Parquet files the labels name

    def path(self, sample: Sample) -> Path:
        """The image file, or the tar or Parquet file holding the image, `..` in its name
        collapsed as written: the path the root check read."""
        where = split_id(sample.image)
        return self.image_dir / os.path.normpath(where[0] if where else sample.image)

    def locate(self, sample: Sample) -> str:
        """The image as an input id: its file's path, or its container's path#member."""
        where = split_id(sample.image)
        return f"{self.path(sample)}#{where[1]}" if where else str(self.path(sample))

    def images(self, samples: Sequence[Sample]) -> Numbered:
        """The samples' images as (index in samples, path or Encoded bytes), each tar or
        Parquet file read once, in its own order (llmiqa.inputs.shards.read_named)."""
        return read_named([self.locate(sample) for sample in samples], self.parquet_col)

    @property
    def mos(self) -> np.ndarray:
        return np.array([sample.mos for sample in self.samples])

    def check_images(self) -> None:
        """Raise DatasetError unless image_dir exists and holds at least one listed image,
        or a Parquet file named cannot give its images (no usable column).

        Only what is cheap is looked at: a file's stat; a tar's stat (finding a member
        takes a pass over the tar, which the run makes once anyway, naming each member
        not there); a Parquet row against its file's footer (read anyway for the column).
        Individual missing images are left to the runner, which counts them as failures.
        """
        if not self.image_dir.is_dir():
            raise DatasetError(f"{self.image_dir}: image folder of {self.name} not found")
        rows = self._parquet_rows()
        if not any(self._there(sample, rows) for sample in self.samples):
            raise DatasetError(f"{self.image_dir}: none of the {self.name} images is there")

    def _parquet_rows(self) -> dict[Path, int]:
        """The row count of each readable Parquet file the labels name, from its footer."""
        rows = {}
        for path in {self.path(s) for s in self.samples if _in_parquet(s.image)}:
            try:
                rows[path] = parquet.layout(str(path), self.parquet_col, "--parquet-col").rows
            except parquet.Unreadable:
                continue  # missing or damaged: its images fail, each said in a line
            except UsageError as error:
                raise DatasetError(str(error)) from None
        return rows

    def _there(self, sample: Sample, rows: dict[Path, int]) -> bool:
        """Whether the image looks there: its file (or tar) is, or its Parquet row is."""
        path = self.path(sample)
        if not _in_parquet(sample.image):
            return _is_file(path)
        row = split_id(sample.image)[1]
        return row.isascii() and row.isdigit() and int(row) < rows.get(path, 0)


def _in_parquet(name: str) -> bool:
    where = split_id(name)
    return where is not None and where[0].lower().endswith(PARQUET)


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def _is_file(path: Path) -> bool:
    """Path.is_file, False also where the OS refuses the name (too long, NUL byte, ...)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _check_label_file(path: Path) -> None:
    """Raise DatasetError unless path is a regular file, before anything opens it.

    Opening a FIFO would wait for a writer forever; a folder or device is no label file.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DatasetError(f"{path}: label file not found") from None
    except (OSError, ValueError) as error:
        problem = getattr(error, "strerror", None) or one_line(error)
        raise DatasetError(f"{path}: cannot read the label file ({problem})") from None
    if not stat.S_ISREG(mode):
        kind = next((kind for test, kind in _FILE_KINDS if test(mode)), "not a file")
        raise DatasetError(f"{path}: not a regular file ({kind}), so not a label file")


@dataclass(frozen=True)
class _Release:
    """Where an official release keeps its labels and images."""

    labels: str
    image_dir: str
    image_col: str
    count: int  # images the official label file lists
    scales: dict[str, tuple[float, float]]  # score columns offered; the first is the default
    splits_file: str | None = None  # a label file with a `set` column, where one exists
    splits: tuple[str, ...] = ()


RELEASES = {
    "koniq10k": _Release(
        "koniq10k_scores_and_distributions.csv",
        "1024x768",
        "image_name",
        10073,
        {"MOS": (1, 5), "MOS_zscore": (0, 100)},
        "koniq10k_distributions_sets.csv",
        ("training", "validation", "test"),
    ),
    "livec": _Release(
        "Data/AllMOS_release.mat",
        "Images",
        "AllImages_release",
        1169,
        {"AllMOS_release": (0, 100)},
    ),
    "spaq": _Release(
        "Annotations/MOS and Image attribute scores.xlsx",
        "TestImage",
        "Image name",
        11125,
        {"MOS": (0, 100)},
    ),
    "kadid10k": _Release("dmos.csv", "images", "dist_img", 10125, {"dmos": (1, 5)}),
    "agiqa3k": _Release(
        "data.csv", ".", "name", 2982, {"mos_quality": (0, 5), "mos_align": (0, 5)}
    ),
}
NAMES = (*RELEASES, "csv")
OFFICIAL_COUNT = {name: release.count for name, release in RELEASES.items()}
# AllImages_release starts with these, the training images the benchmarks leave out.
LIVEC_TRAINING = frozenset(f"t{i}.bmp" for i in range(1, 8))

# A label entry before checking: (where in the file, image name, score), as read.
_Entry = tuple[str, object, object]


def _table(path: Path) -> tuple[list[str], list[tuple[str, list]]]:
    """Header and data rows of a CSV or of the first sheet of an xlsx, each row with its place."""
    _check_label_file(path)
    rows = _xlsx_rows(path) if path.suffix == ".xlsx" else _csv_rows(path)
    if not rows:
        raise DatasetError(f"{path}: empty file")
    header = [str(cell).strip() if cell is not None else "" for cell in rows[0][1]]
    if len(rows) == 1:
        raise DatasetError(f"{path}: no data rows")
    return header, rows[1:]


def _xlsx_rows(path: Path) -> list[tuple[str, list]]:
    """Non-empty rows of the first sheet, each with its row number."""
    import openpyxl  # imported here: only SPAQ's labels need it

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            return [
                (f"row {number}", list(row))
                for number, row in enumerate(book.worksheets[0].iter_rows(values_only=True), 1)
                if any(cell is not None for cell in row)
            ]
        finally:
            book.close()
    except Exception as error:  # a damaged zip or XML fails in many ways deep inside openpyxl
        problem = f"{type(error).__name__}: {one_line(error)}"
        raise DatasetError(f"{path}: not a readable xlsx file ({problem})") from None


def _csv_rows(path: Path) -> list[tuple[str, list]]:
    """Non-empty rows of a CSV, each with its line; a file that looks cut short is refused."""
    rows = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file, strict=True)  # strict: an unclosed quote is an error
            for row in reader:
                if row:
                    rows.append((f"line {reader.line_num}", row))
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the label file ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not a readable CSV file ({error})") from None
    except csv.Error as error:
        problem = (
            "a quoted field never closes: the file looks cut short"
            if "unexpected end of data" in str(error)
            else f"not valid CSV ({error})"
        )
        raise DatasetError(f"{path}, line {reader.line_num}: {problem}") from None
    if rows and not _ends_with_line_ending(path):
        raise DatasetError(
            f"{path}, {rows[-1][0]}: the last line has no line ending, so the file looks cut "
            "short; if it is complete, end it with a newline"
        )
    return rows


def _ends_with_line_ending(path: Path) -> bool:
    """Whether a non-empty file's last byte is CR or LF (a cut at a random byte is not)."""
    with path.open("rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) in (b"\r", b"\n")


def _columns(path: Path, image_col: str, score_col: str) -> list[_Entry]:
    """(place, image, score) of every data row of a table."""
    header, rows = _table(path)
    return _pick(path, header, rows, image_col, score_col)


def _pick(
    path: Path, header: list[str], rows: list[tuple[str, list]], image_col: str, score_col: str
) -> list[_Entry]:
    """(place, image, score) of every row, from the two named columns of the header."""
    index = []
    for column in (image_col, score_col):
        if column not in header:
            raise DatasetError(f"{path}: no column {column!r} (columns: {', '.join(header)})")
        index.append(header.index(column))
    return [
        (where, *(row[i] if i < len(row) else None for i in index))  # a short row reads None
        for where, row in rows
    ]


def _outside(root: Path, image_dir: Path, name: str) -> bool:
    """Whether image_dir/name leaves root, read as written: `..` collapsed, no link followed.

    Not following symlinks accepts a linked image or folder inside the root (the user put
    it there); Dataset.path opens the same collapsed path, so the file opened is the file
    checked even where `..` follows a symlink.
    """
    if ".." not in name and not os.path.isabs(name):
        return False  # the common case, kept fast: below image_dir, which lies in root
    base = os.path.abspath(root)
    return os.path.commonpath([base, os.path.abspath(os.path.join(image_dir, name))]) != base


def _samples(
    path: Path,
    entries: list[_Entry],
    scale: tuple[float, float] | None,
    confine: tuple[Path, Path] | None,
) -> list[Sample]:
    """Checked samples: a non-empty unique name and a finite number within the scale each.

    confine: (root, image_dir) to refuse image names that lead outside root; None allows them.
    """
    samples, seen = [], {}
    for where, image, score in entries:
        name = "" if image is None else str(image)  # as written: " a.png" is not "a.png"
        if not name.strip():
            raise DatasetError(f"{path}, {where}: empty image name")
        if confine and _outside(*confine, (split_id(name) or (name,))[0]):
            raise DatasetError(
                f"{path}, {where}: image {name!r} lies outside the dataset root {confine[0]}; "
                "pass --allow-outside-root (allow_outside_root=True) if that is intended"
            )
        if name in seen:
            raise DatasetError(f"{path}, {where}: image {name!r} already listed at {seen[name]}")
        seen[name] = where
        if score is None or str(score).strip() == "":
            raise DatasetError(f"{path}, {where}: no score")
        try:
            mos = float(score)
        except (TypeError, ValueError):
            raise DatasetError(f"{path}, {where}: score {score!r} is not a number") from None
        if not np.isfinite(mos):
            raise DatasetError(f"{path}, {where}: score {score!r} is not finite")
        if scale and not scale[0] <= mos <= scale[1]:
            raise DatasetError(f"{path}, {where}: score {mos} outside the scale {scale}")
        samples.append(Sample(name, mos))
    return samples


def _mat_vector(path: Path, variable: str) -> np.ndarray:
    """One variable of a MATLAB file, flattened (LIVE's 1xN doubles and Nx1 cell arrays)."""
    import scipy.io  # imported here: only LIVE Challenge's labels need it

    _check_label_file(path)
    try:
        content = scipy.io.loadmat(path)
    except Exception as error:  # a cut or damaged file fails in many ways inside scipy
        problem = f"{type(error).__name__}: {one_line(error)}"
        raise DatasetError(f"{path}: not a readable MATLAB file ({problem})") from None
    if variable not in content:
        raise DatasetError(f"{path}: no variable {variable!r}")
    return np.asarray(content[variable]).ravel()


def _livec_entries(root: Path, release: _Release, score_col: str) -> list[_Entry]:
    """Every entry of LIVE Challenge's two MATLAB files, training images included."""
    names = _mat_vector(root / "Data" / "AllImages_release.mat", release.image_col)
    scores = _mat_vector(root / release.labels, score_col)
    if names.size != scores.size:
        raise DatasetError(f"{root / release.labels}: {scores.size} scores for {names.size} images")
    # A cell of a cell array loads as a 1-element string array; an empty cell as an empty one.
    return [
        (
            f"entry {i + 1}",
            np.asarray(names[i]).ravel()[0] if np.size(names[i]) else None,
            scores[i],
        )
        for i in range(names.size)
    ]


def _check_count(path: Path, name: str, found: int, subset: bool) -> None:
    """Refuse a release listing other than its official number of images, unless a subset."""
    expected = OFFICIAL_COUNT[name]
    if found != expected and not subset:
        raise DatasetError(
            f"{path}: {found} images listed where the official {name} release lists {expected}; "
            "if this is a deliberate subset, pass --subset (subset=True)"
        )


def _splits(root: Path, release: _Release, samples: list[Sample], subset: bool) -> list[Sample]:
    """Samples tagged with their official split from the release's `set` column.

    A subset of the scores may come with the full sets file: its extra images are ignored.
    """
    path = root / release.splits_file
    tagged = {}
    for where, cell, split in _columns(path, release.image_col, "set"):
        image = "" if cell is None else str(cell)
        if split not in release.splits:
            raise DatasetError(f"{path}, {where}: set {split!r} is not one of {release.splits}")
        if image in tagged:
            raise DatasetError(f"{path}, {where}: image {image!r} listed twice")
        tagged[image] = split
    if missing := [s.image for s in samples if s.image not in tagged]:
        raise DatasetError(f"{path}: no set for {len(missing)} image(s), e.g. {missing[0]!r}")
    if not subset and (extra := tagged.keys() - {s.image for s in samples}):
        raise DatasetError(f"{path}: {len(extra)} image(s) without a score, e.g. {min(extra)!r}")
    return [Sample(s.image, s.mos, tagged[s.image]) for s in samples]


def _load_release(
    name: str,
    root: Path,
    split: str,
    score_col: str | None,
    include_training: bool,
    subset: bool,
    allow_outside_root: bool,
) -> Dataset:
    release = RELEASES[name]
    score_col = score_col or next(iter(release.scales))
    if score_col not in release.scales:
        raise DatasetError(
            f"{name}: no score column {score_col!r}; choose one of {[*release.scales]}"
        )
    if split != "all" and not release.splits:
        raise DatasetError(f"{name} has no official splits; use split='all'")
    if split not in ("all", *release.splits):
        raise DatasetError(
            f"{name}: unknown split {split!r}; choose one of {('all', *release.splits)}"
        )
    labels = root / release.labels
    if name == "livec":
        entries = _livec_entries(root, release, score_col)
    else:
        entries = _columns(labels, release.image_col, score_col)
    image_dir = root / release.image_dir
    confine = None if allow_outside_root else (root, image_dir)
    samples = _samples(labels, entries, release.scales[score_col], confine)
    _check_count(labels, name, len(samples), subset)
    if name == "livec" and not include_training:
        samples = [s for s in samples if s.image not in LIVEC_TRAINING]
    if release.splits_file and (root / release.splits_file).is_file():
        samples = _splits(root, release, samples, subset)
    elif split != "all":
        raise DatasetError(f"{root / release.splits_file}: needed for split {split!r}, not found")
    if split != "all":
        samples = [s for s in samples if s.split == split]
    return Dataset(
        name,
        root,
        image_dir,
        labels,
        score_col,
        release.scales[score_col],
        tuple(samples),
    )


def _the_one_csv(root: Path) -> Path:
    """The label file of a csv dataset named by its folder alone: its only CSV file."""
    found = sorted(root.glob("*.csv"))
    if not found:
        raise DatasetError(f"{root}: no CSV file here; name the label file with --labels")
    if len(found) > 1:
        names = ", ".join(path.name for path in found[:5]) + (", ..." if len(found) > 5 else "")
        raise DatasetError(
            f"{root}: {len(found)} CSV files here ({names}); choose the label file with "
            "--labels (labels=...)"
        )
    return found[0]


def _load_csv(
    root: Path,
    labels: str | Path | None,
    image_col: str | None,
    score_col: str | None,
    lower_better: bool,
    allow_outside_root: bool,
) -> Dataset:
    path = root / labels if labels else _the_one_csv(root)  # an absolute labels path stays
    header, rows = _table(path)
    if len(header) < 2:
        raise DatasetError(
            f"{path}: only one column, {header[0]!r} (are the columns separated by commas?); "
            "name the score column with --score-col"
        )
    image_col = image_col or header[0]
    score_col = score_col or next((c for c in header if c != image_col), header[1])
    for column, role, flag in (
        (image_col, "image", "--image-col"),
        (score_col, "score", "--score-col"),
    ):
        if column not in header:
            raise DatasetError(
                f"{path}: no column {column!r} (columns: {', '.join(header)}); "
                f"name the {role} column with {flag}"
            )
    confine = None if allow_outside_root else (root, root)
    samples = _samples(path, _pick(path, header, rows, image_col, score_col), None, confine)
    if lower_better:  # mirror within the observed range: same units, order reversed
        low, high = min(s.mos for s in samples), max(s.mos for s in samples)
        samples = [Sample(s.image, low + high - s.mos) for s in samples]
    labels_file = Path(os.path.abspath(path))  # absolute: a run can record it and pass it back
    return Dataset("csv", root, root, labels_file, score_col, None, tuple(samples))


def load_dataset(
    name: str,
    root: str | Path,
    *,
    split: str = "all",
    labels: str | Path | None = None,
    image_col: str | None = None,
    score_col: str | None = None,
    lower_better: bool = False,
    include_training: bool = False,
    subset: bool = False,
    allow_outside_root: bool = False,
    parquet_col: str | None = None,
) -> Dataset:
    """Labels of dataset `name` whose release (or CSV and images) is at `root`.

    split: "all", or an official split (KonIQ: training, validation, test).
    score_col: another score column the release offers (KonIQ MOS_zscore, AGIQA mos_align).
    labels, image_col, lower_better: csv only (defaults: the first two columns; a
    lower-is-better score is mirrored so that higher = better).
    include_training: livec only, keeps the 7 training images the benchmarks leave out.
    subset: an official release's label file that deliberately lists fewer (or more) images
    than the official one; without it such a file is refused as damaged.
    allow_outside_root: accept image names that lead outside root (`..`, absolute paths);
    without it they are refused, so a label file cannot make us open any file it names.
    parquet_col: the column of image bytes or paths of the Parquet files the labels name
    (default: the sole binary column, else one named image).
    """
    root = Path(root)
    if name not in NAMES:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {NAMES}")
    if not root.is_dir():
        what = "not a folder" if root.exists() else "folder not found"
        raise DatasetError(f"{root}: {what} (the dataset's root, --root)")
    given = {
        "labels": labels is not None,
        "image_col": image_col is not None,
        "lower_better": lower_better,
        "include_training": include_training,
        "subset": subset,
    }
    allowed = {"csv": {"labels", "image_col", "lower_better"}, "livec": {"include_training"}}
    release_options = {"subset"} if name in RELEASES else set()
    if wrong := [
        option
        for option, used in given.items()
        if used and option not in allowed.get(name, set()) | release_options
    ]:
        raise DatasetError(f"{name}: option {wrong[0]} does not apply")
    if name == "csv":
        if split != "all":
            raise DatasetError(f"{root}: a csv dataset has no splits; use split='all'")
        dataset = _load_csv(root, labels, image_col, score_col, lower_better, allow_outside_root)
    else:
        dataset = _load_release(
            name, root, split, score_col, include_training, subset, allow_outside_root
        )
    if parquet_col is None:
        return dataset
    if not any(_in_parquet(sample.image) for sample in dataset.samples):
        raise DatasetError(f"{dataset.labels}: option parquet_col does not apply: no image "
                           "is named as a Parquet row (file.parquet#row)")  # fmt: skip
    return replace(dataset, parquet_col=parquet_col)
