"""Loaders on the real label files, in the official layouts, and on broken label files."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.io
from PIL import Image

from llmiqa.evaluation.correlation import srcc
from llmiqa.inputs.datasets import NAMES, RELEASES, DatasetError, Sample, load_dataset

# name: rows, MOS min and max, first image, default score column
REAL = {
    "koniq10k": (10073, 1.096153846, 4.31, "10004473376.jpg", "MOS"),
    "livec": (1162, 3.42, 92.4319526627219, "100.bmp", "AllMOS_release"),
    "spaq": (11125, 2.0, 96.0, "00001.jpg", "MOS"),
    "kadid10k": (10125, 1.0, 4.93, "I01_01_01.png", "dmos"),
    "agiqa3k": (2982, 0.0, 4.488740784, "AttnGAN_normal_000.jpg", "mos_quality"),
}
# Real images in data/images: (dataset, file there, name in the release, score column, score)
KNOWN = [
    ("koniq10k", "KonIQ_6898804586.jpg", "6898804586.jpg", "MOS_zscore", 32.71),
    ("livec", "LIVEC_1000.JPG", "1000.JPG", None, 56.51),
    ("kadid10k", "KADID_I01_01_02.png", "I01_01_02.png", None, 4.33),
    ("kadid10k", "KADID_I01_01_05.png", "I01_01_05.png", None, 1.10),
    ("kadid10k", "KADID_I01_06_05.png", "I01_06_05.png", None, 2.27),
    ("kadid10k", "KADID_I01_15_05.png", "I01_15_05.png", None, 1.33),
    ("kadid10k", "KADID_I02_01_03.png", "I02_01_03.png", None, 2.07),
]
KADID_HEADER = "dist_img,ref_img,dmos,var\n"
# Images each official release lists (LIVE Challenge: with its 7 training images).
OFFICIAL = {"koniq10k": 10073, "livec": 1169, "spaq": 11125, "kadid10k": 10125, "agiqa3k": 2982}


@pytest.fixture(scope="module")
def labels(data_dir) -> Path:
    return data_dir / "labels"


@pytest.fixture(scope="module")
def real(labels):
    return {name: load_dataset(name, labels / name) for name in REAL}


def release(labels: Path, tmp_path: Path, name: str) -> Path:
    """A writable copy of a release's label files, laid out as the release lays them out."""
    return Path(shutil.copytree(labels / name, tmp_path / name))


def keep_first(root: Path, name: str, count: int) -> Path:
    """Cut a release's labels to their first `count` images, as a deliberate subset would.

    Returns the label file the loader names in its messages.
    """
    if name == "livec":
        for variable in ("AllImages_release", "AllMOS_release"):
            path = root / "Data" / f"{variable}.mat"
            values = scipy.io.loadmat(path)[variable]
            values = values[:count] if values.shape[0] > 1 else values[:, :count]
            scipy.io.savemat(path, {variable: values})
        return path
    if name == "spaq":  # a small workbook of our own: reading the real one takes a second
        path = root / "Annotations" / "MOS and Image attribute scores.xlsx"
        book = openpyxl.Workbook()
        book.active.append(("Image name", "MOS"))
        for number in range(1, count + 1):
            book.active.append((f"{number:05d}.jpg", 50))
        book.save(path)
        return path
    path = root / RELEASES[name].labels
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[: count + 1]))
    return path


@pytest.mark.parametrize("name", list(REAL))
def test_real_labels(real, name):
    rows, low, high, first, column = REAL[name]
    dataset = real[name]
    assert len(dataset.samples) == rows
    assert (dataset.mos.min(), dataset.mos.max()) == pytest.approx((low, high))
    assert dataset.samples[0].image == first
    assert dataset.score_column == column
    assert dataset.scale[0] <= low <= high <= dataset.scale[1]
    assert len({sample.image for sample in dataset.samples}) == rows


@pytest.mark.parametrize("name", list(REAL))
def test_a_release_with_rows_missing_is_refused_unless_declared_a_subset(labels, tmp_path, name):
    root = release(labels, tmp_path, name)
    label_file = keep_first(root, name, 100)
    expected = f"{label_file}: 100 images listed where the official {name} release lists "
    with pytest.raises(DatasetError, match=re.escape(f"{expected}{OFFICIAL[name]}; if")):
        load_dataset(name, root)
    subset = load_dataset(name, root, subset=True)
    assert len(subset.samples) == (93 if name == "livec" else 100)  # livec: less t1..t7.bmp


def test_a_release_with_rows_added_is_refused_too(labels, tmp_path):
    root = release(labels, tmp_path, "kadid10k")
    with (root / "dmos.csv").open("a") as file:
        file.write("extra.png,I01.png,3.0,0.5\r\n")
    with pytest.raises(DatasetError, match="10126 images listed where the official kadid10k"):
        load_dataset("kadid10k", root)
    assert len(load_dataset("kadid10k", root, subset=True).samples) == 10126


def test_a_koniq_subset_takes_its_splits_from_the_full_sets_file(labels, tmp_path, real):
    root = release(labels, tmp_path, "koniq10k")
    keep_first(root, "koniq10k", 50)
    subset = load_dataset("koniq10k", root, subset=True)
    assert subset.samples == real["koniq10k"].samples[:50]


def test_a_livec_subset_leaves_out_the_training_images_by_name(tmp_path):
    data = tmp_path / "Data"
    data.mkdir()
    names = np.array([["100.bmp"], ["t3.bmp"], ["101.bmp"]], dtype=object)
    scipy.io.savemat(data / "AllImages_release.mat", {"AllImages_release": names})
    scipy.io.savemat(data / "AllMOS_release.mat", {"AllMOS_release": np.array([[50, 60, 70.0]])})
    subset = load_dataset("livec", tmp_path, subset=True)
    assert [(s.image, s.mos) for s in subset.samples] == [("100.bmp", 50), ("101.bmp", 70)]
    everything = load_dataset("livec", tmp_path, subset=True, include_training=True)
    assert [s.image for s in everything.samples] == ["100.bmp", "t3.bmp", "101.bmp"]


def cut_at_every_byte_of_a_row(path: Path, row: int):
    """(cut, bytes kept) for the file cut after each byte of data row `row`."""
    original = path.read_bytes()
    start = sum(len(line) for line in original.splitlines(keepends=True)[:row])
    end = start + len(original.splitlines(keepends=True)[row])
    return [(cut, original[:cut]) for cut in range(start + 1, end + 1)]


@pytest.mark.parametrize("name", ["kadid10k", "koniq10k", "agiqa3k"])
def test_a_label_file_cut_at_any_byte_is_refused_even_as_a_subset(labels, tmp_path, real, name):
    """Either the file is refused, or every row read is exactly the official row."""
    root = release(labels, tmp_path, name)
    path = keep_first(root, name, 30)  # any length: a shorter file only makes this faster
    loaded = 0
    for cut, content in cut_at_every_byte_of_a_row(path, 30):
        path.write_bytes(content)
        try:
            samples = load_dataset(name, root, subset=True).samples
        except DatasetError as error:
            assert str(error).startswith(f"{path}, line 31: "), cut
            continue
        assert samples == real[name].samples[: len(samples)], cut
        assert content.endswith((b"\r", b"\n")), cut
        loaded += 1
    assert loaded == 2  # cut after the row's \r or its \n: the rows read are all whole


def test_the_attackers_truncated_kadid_is_refused(labels, tmp_path):
    root = release(labels, tmp_path, "kadid10k")
    path = root / "dmos.csv"
    content = path.read_bytes()
    path.write_bytes(content[: content.index(b"I40_25_05.png,I40.png,2.45") + 25])  # 2.45 -> 2.4
    for subset in (False, True):
        with pytest.raises(DatasetError, match="the last line has no line ending"):
            load_dataset("kadid10k", root, subset=subset)


def test_a_csv_cut_inside_a_quoted_multi_line_field_is_refused(tmp_path):
    (tmp_path / "mos.csv").write_text('image,mos,note\na.png,3,"fine"\nb.png,4,"two\n')
    with pytest.raises(DatasetError, match=re.escape("mos.csv, line 3: a quoted field never")):
        load_dataset("csv", tmp_path)


@pytest.mark.parametrize("file", ["AllImages_release.mat", "AllMOS_release.mat"])
def test_a_mat_file_cut_at_any_byte_is_refused(labels, tmp_path, file):
    root = release(labels, tmp_path, "livec")
    path = root / "Data" / file
    original = path.read_bytes()
    # Cuts in the first variable's header fail in the most varied ways (IndexError, ...).
    for cut in [*range(0, 140, 7), *range(140, len(original), len(original) // 20)]:
        path.write_bytes(original[:cut])
        with pytest.raises(DatasetError) as error:
            load_dataset("livec", root, subset=True)
        assert str(error.value).startswith(f"{path}: "), cut


@pytest.mark.parametrize(("name", "file", "image", "column", "score"), KNOWN)
def test_real_images_sit_where_the_loader_looks(
    labels, tmp_path, data_dir, name, file, image, column, score
):
    root = release(labels, tmp_path, name)
    dataset = load_dataset(name, root, score_col=column)
    sample = next(s for s in dataset.samples if s.image == image)
    assert sample.mos == pytest.approx(score, abs=0.005)
    dataset.path(sample).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(data_dir / "images" / file, dataset.path(sample))
    dataset.check_images()
    with Image.open(dataset.path(sample)) as image_file:
        assert image_file.width >= 500


@pytest.mark.parametrize("name", ["spaq", "agiqa3k", "koniq10k"])
def test_missing_images_are_kept_for_the_runner_to_count(real, tmp_path, name):
    image_dir = tmp_path / RELEASES[name].image_dir  # the release's layout, somewhere writable
    dataset = replace(real[name], root=tmp_path, image_dir=image_dir)
    for sample in dataset.samples[:3]:  # stand-in images for a few rows only
        dataset.path(sample).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 24), (90, 120, 30)).save(dataset.path(sample))
    dataset.check_images()
    assert len(dataset.samples) == REAL[name][0]
    assert [dataset.path(s).is_file() for s in dataset.samples[:4]] == [True, True, True, False]


@pytest.mark.parametrize(("name", "problem"), [("spaq", "image folder"), ("agiqa3k", "none of")])
def test_labels_without_images_read_but_fail_the_image_check(real, name, problem):
    with pytest.raises(DatasetError, match=problem):
        real[name].check_images()


def test_kadid_dmos_is_higher_better(real):
    by_level = {
        level: np.mean(
            [s.mos for s in real["kadid10k"].samples if s.image.endswith(f"_0{level}.png")]
        )
        for level in (1, 5)
    }
    assert by_level[1] > by_level[5] + 1.5  # the mildest of 5 distortion levels scores highest


def test_koniq_offers_the_zscore_in_the_same_direction(labels, real):
    zscore = load_dataset("koniq10k", labels / "koniq10k", score_col="MOS_zscore")
    assert zscore.scale == (0, 100)
    assert zscore.mos.max() == pytest.approx(88.3888888889)
    assert srcc(zscore.mos, real["koniq10k"].mos) > 0.99


def test_koniq_official_splits(labels, real):
    sizes = {}
    for split in ("training", "validation", "test"):
        subset = load_dataset("koniq10k", labels / "koniq10k", split=split)
        assert {s.split for s in subset.samples} == {split}
        sizes[split] = len(subset.samples)
    assert sizes == {"training": 7058, "validation": 1000, "test": 2015}
    assert {s.split for s in real["koniq10k"].samples} == {"training", "validation", "test"}


def test_koniq_without_the_sets_file(labels, tmp_path):
    root = release(labels, tmp_path, "koniq10k")
    (root / "koniq10k_distributions_sets.csv").unlink()
    assert {s.split for s in load_dataset("koniq10k", root).samples} == {None}
    with pytest.raises(
        DatasetError, match=re.escape("koniq10k_distributions_sets.csv: needed for split")
    ):
        load_dataset("koniq10k", root, split="test")


def test_koniq_sets_file_must_cover_the_scores(labels, tmp_path):
    root = release(labels, tmp_path, "koniq10k")
    sets = root / "koniq10k_distributions_sets.csv"
    sets.write_text("".join(sets.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(DatasetError, match=re.escape("sets.csv: no set for 1 image")):
        load_dataset("koniq10k", root)


def test_livec_training_images(real, labels):
    everything = load_dataset("livec", labels / "livec", include_training=True)
    assert [s.image for s in everything.samples[:8]] == [
        *(f"t{i}.bmp" for i in range(1, 8)),
        "100.bmp",
    ]
    assert everything.samples[7:] == real["livec"].samples
    assert real["livec"].path(real["livec"].samples[0]) == labels / "livec" / "Images" / "100.bmp"


def test_agiqa_alignment_scores(labels, real):
    align = load_dataset("agiqa3k", labels / "agiqa3k", score_col="mos_align")
    assert [s.image for s in align.samples] == [s.image for s in real["agiqa3k"].samples]
    assert align.mos[0] == pytest.approx(0.40889324)


def test_csv_loader_on_the_dibr_dataset(data_dir):
    root = data_dir / "dibr"
    dataset = load_dataset("csv", root, labels="mos.csv")
    assert (len(dataset.samples), dataset.score_column, dataset.scale) == (96, "mos_acr_1to5", None)
    assert (dataset.mos.min(), dataset.mos.max()) == pytest.approx((1.02, 4.37), abs=0.005)
    assert all(dataset.path(s).is_file() for s in dataset.samples)
    dataset.check_images()
    flipped = load_dataset(
        "csv", root, labels=root / "mos.csv", image_col="image", lower_better=True
    )
    assert flipped.mos + dataset.mos == pytest.approx(dataset.mos.min() + dataset.mos.max())
    assert load_dataset("csv", root).labels == root / "mos.csv"  # the one CSV in the folder


def csv_dataset(root: Path, names: list[str]) -> Path:
    """A csv dataset at root: mos.csv listing these image names, each scored 3."""
    root.mkdir(exist_ok=True)
    (root / "mos.csv").write_text("image,mos\n" + "".join(f"{name},3\n" for name in names))
    return root


@pytest.mark.parametrize(
    "name", ["../secret.png", "/etc/passwd", "sub/../../secret.png", "./a/../../data2/x.png"]
)
def test_image_names_that_leave_the_root_are_refused_unless_allowed(tmp_path, name):
    root = csv_dataset(tmp_path / "data", ["a.png", name])
    with pytest.raises(
        DatasetError,
        match=re.escape(f"mos.csv, line 3: image {name!r} lies outside the dataset root {root};"),
    ):
        load_dataset("csv", root)
    allowed = load_dataset("csv", root, allow_outside_root=True)
    assert os.path.abspath(allowed.path(allowed.samples[1])) == os.path.abspath(root / name)


def test_symlinks_inside_the_root_are_legitimate(tmp_path, data_dir):
    root = tmp_path / "data"
    root.mkdir()
    (root / "photo.jpg").symlink_to(data_dir / "images" / "LIVEC_1000.JPG")
    (root / "more").symlink_to(data_dir / "images", target_is_directory=True)
    # "more/../photo.jpg" is read as written: root/photo.jpg, not data_dir/photo.jpg.
    csv_dataset(root, ["photo.jpg", "more/KADID_I01.png", "more/../photo.jpg"])
    dataset = load_dataset("csv", root)
    assert [dataset.path(s) for s in dataset.samples] == [
        root / "photo.jpg",
        root / "more" / "KADID_I01.png",
        root / "photo.jpg",
    ]
    assert all(dataset.path(s).is_file() for s in dataset.samples)
    csv_dataset(root, ["more/../../escape.png"])
    with pytest.raises(DatasetError, match=re.escape("'more/../../escape.png' lies outside")):
        load_dataset("csv", root)


def test_the_label_file_a_csv_dataset_chose_can_be_passed_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv_dataset(tmp_path / "data", ["a.png"])
    chosen = load_dataset("csv", "data").labels  # what a run records to rerun the same way
    assert chosen == tmp_path / "data" / "mos.csv"
    assert load_dataset("csv", "data", labels=chosen).samples == (Sample("a.png", 3.0),)


def test_a_csv_dataset_names_its_label_file_or_asks_for_one(tmp_path):
    root = csv_dataset(tmp_path / "data", ["a.png"])
    assert load_dataset("csv", root).labels == root / "mos.csv"  # to record for a rerun
    (root / "results.csv").write_text("image,score\na.png,5\n")  # say, a run's output
    with pytest.raises(
        DatasetError,
        match=re.escape(
            f"{root}: 2 CSV files here (mos.csv, results.csv); choose the label file with "
            "--labels (labels=...)"
        ),
    ):
        load_dataset("csv", root)
    assert load_dataset("csv", root, labels="mos.csv").labels == root / "mos.csv"
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path}: no CSV file here; name")):
        load_dataset("csv", tmp_path)


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        (
            "image;mos\na.png;3\n",
            {},
            ": only one column, 'image;mos' (are the columns separated by commas?); "
            "name the score column with --score-col",
        ),
        (
            "image,mos\na.png,3\n",
            {"score_col": "MOS"},
            ": no column 'MOS' (columns: image, mos); name the score column with --score-col",
        ),
        (
            "image,mos\na.png,3\n",
            {"image_col": "file"},
            ": no column 'file' (columns: image, mos); name the image column with --image-col",
        ),
    ],
)
def test_csv_columns_that_are_not_there_say_which_option_names_them(
    tmp_path, content, options, message
):
    (tmp_path / "mos.csv").write_text(content)
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path / 'mos.csv'}{message}")):
        load_dataset("csv", tmp_path, **options)


def test_a_csv_score_column_defaults_to_the_first_one_that_is_not_the_images(tmp_path):
    (tmp_path / "mos.csv").write_text("mos,image\n3,a.png\n")
    dataset = load_dataset("csv", tmp_path, image_col="image")
    assert (dataset.score_column, dataset.samples[0].image) == ("mos", "a.png")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", ": empty file"),
        (KADID_HEADER, ": no data rows"),
        ("dist_img,ref_img,score,var\nA.png,I.png,3,0.1\n", ": no column 'dmos'"),
        (
            KADID_HEADER + "A.png,I.png,3,0.1\nB.png,I.png,abc,0.1\n",
            ", line 3: score 'abc' is not a number",
        ),
        (KADID_HEADER + "A.png,I.png,,0.1\n", ", line 2: no score"),
        (KADID_HEADER + "A.png,I.png\n", ", line 2: no score"),
        (KADID_HEADER + "A.png,I.png,NaN,0.1\n", ", line 2: score 'NaN' is not finite"),
        (KADID_HEADER + "A.png,I.png,7,0.1\n", ", line 2: score 7.0 outside the scale (1, 5)"),
        (KADID_HEADER + " ,I.png,3,0.1\n", ", line 2: empty image name"),
        (
            KADID_HEADER + "../../x.png,I.png,3,0.1\n",
            ", line 2: image '../../x.png' lies outside the dataset root",
        ),
        (
            KADID_HEADER + "A.png,I.png,3,0.1\nA.png,I.png,2,0.1\n",
            ", line 3: image 'A.png' already listed at line 2",
        ),
    ],
)
def test_malformed_csv_labels(tmp_path, content, message):
    (tmp_path / "dmos.csv").write_text(content)
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path / 'dmos.csv'}{message}")) as error:
        load_dataset("kadid10k", tmp_path)
    assert "\n" not in str(error.value)


def test_binary_csv_labels(tmp_path):
    (tmp_path / "dmos.csv").write_bytes(b"\xff\xfe\x00\x00binary")
    with pytest.raises(DatasetError, match=re.escape("dmos.csv: not a readable CSV file")):
        load_dataset("kadid10k", tmp_path)


def spaq_workbook(root: Path, rows) -> Path:
    """A SPAQ-layout label workbook with these rows under the official header."""
    path = root / "Annotations" / "MOS and Image attribute scores.xlsx"
    path.parent.mkdir(exist_ok=True)
    book = openpyxl.Workbook()
    for row in [("Image name", "MOS"), *rows]:
        book.active.append(row)
    book.save(path)
    return path


def test_malformed_xlsx_labels(tmp_path):
    path = spaq_workbook(tmp_path, [("00001.jpg", 40), ("00002.jpg", "n/a")])
    with pytest.raises(
        DatasetError, match=re.escape("scores.xlsx, row 3: score 'n/a' is not a number")
    ):
        load_dataset("spaq", tmp_path)
    path.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match=re.escape("scores.xlsx: not a readable xlsx file")):
        load_dataset("spaq", tmp_path)


def damage(path: Path, member: str, change) -> None:
    """Rewrite one member of a zip (an xlsx) through `change`, keeping the others."""
    with zipfile.ZipFile(path) as old:
        members = {name: old.read(name) for name in old.namelist()}
    members[member] = change(members[member])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as new:
        for name, data in members.items():
            new.writestr(name, data)


@pytest.mark.parametrize(
    "damaged",
    [
        lambda path: damage(path, "xl/worksheets/sheet1.xml", lambda xml: xml[: len(xml) // 2]),
        lambda path: damage(path, "xl/workbook.xml", lambda xml: b"<?xml" + xml),
        lambda path: damage(path, "xl/_rels/workbook.xml.rels", lambda xml: b"\x00" * len(xml)),
        lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3]),
        lambda path: path.write_bytes(flip_bytes_in_the_middle(path.read_bytes())),
    ],
    ids=["sheet xml cut", "workbook xml broken", "relations zeroed", "zip cut", "bytes flipped"],
)
def test_a_damaged_xlsx_is_one_line_naming_the_file(tmp_path, damaged):
    path = spaq_workbook(tmp_path, [(f"{i:05d}.jpg", i) for i in range(1, 60)])
    damaged(path)
    with pytest.raises(DatasetError) as error:
        load_dataset("spaq", tmp_path, subset=True)
    assert str(error.value).startswith(f"{path}: not a readable xlsx file (")
    assert "\n" not in str(error.value)


def flip_bytes_in_the_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return (
        data[:middle]
        + bytes(255 - byte for byte in data[middle : middle + 64])
        + data[middle + 64 :]
    )


def test_malformed_mat_labels(tmp_path):
    data = tmp_path / "Data"
    data.mkdir()
    names = np.array([["t1.bmp"], ["100.bmp"], ["101.bmp"]], dtype=object)
    scipy.io.savemat(data / "AllImages_release.mat", {"AllImages_release": names})
    scipy.io.savemat(data / "AllMOS_release.mat", {"AllMOS_release": np.array([[50.0, 60.0]])})
    with pytest.raises(DatasetError, match=re.escape("AllMOS_release.mat: 2 scores for 3 images")):
        load_dataset("livec", tmp_path)
    scipy.io.savemat(data / "AllMOS_release.mat", {"MOS": np.array([[50.0, 60.0, 70.0]])})
    with pytest.raises(
        DatasetError, match=re.escape("AllMOS_release.mat: no variable 'AllMOS_release'")
    ):
        load_dataset("livec", tmp_path)
    for garbage in (b"", b"garbage" * 30):
        (data / "AllMOS_release.mat").write_bytes(garbage)
        with pytest.raises(DatasetError, match=re.escape("_release.mat: not a readable MATLAB")):
            load_dataset("livec", tmp_path)


@pytest.mark.parametrize(
    ("name", "options", "problem"),
    [
        ("tid2013", {}, "unknown dataset 'tid2013'"),
        ("kadid10k", {"split": "test"}, "kadid10k has no official splits"),
        ("koniq10k", {"split": "train"}, "unknown split 'train'"),
        ("koniq10k", {"score_col": "SD"}, "no score column 'SD'"),
        ("koniq10k", {"include_training": True}, "option include_training does not apply"),
        ("spaq", {"labels": "x.csv"}, "option labels does not apply"),
        ("csv", {}, "2 CSV files here (koniq10k_distributions_sets.csv, koniq10k_scores_"),
        ("csv", {"labels": "mos.csv", "subset": True}, "option subset does not apply"),
        ("csv", {"labels": "mos.csv", "split": "test"}, "no splits"),
    ],
)
def test_options_that_do_not_fit_are_refused(labels, name, options, problem):
    with pytest.raises(DatasetError, match=re.escape(problem)):
        load_dataset(name, labels / "koniq10k", **options)


def test_a_label_file_that_is_not_a_regular_file_is_refused_unopened(tmp_path):
    os.mkfifo(tmp_path / "dmos.csv")  # opening it would wait for a writer forever
    with pytest.raises(DatasetError, match=re.escape("dmos.csv: not a regular file (a FIFO")):
        load_dataset("kadid10k", tmp_path)
    (tmp_path / "mos.csv").mkdir()
    with pytest.raises(DatasetError, match=re.escape("mos.csv: not a regular file (a directory")):
        load_dataset("csv", tmp_path, labels="mos.csv")
    with pytest.raises(DatasetError, match=re.escape("x.csv: cannot read the label file (File")):
        load_dataset("csv", tmp_path, labels="x" * 300 + ".csv")


def test_image_names_too_long_for_the_os_do_not_break_the_image_check(tmp_path):
    root = csv_dataset(tmp_path / "data", ["a" * 300 + ".png", "b.png"])
    dataset = load_dataset("csv", root)
    with pytest.raises(DatasetError, match="none of the csv images is there"):
        dataset.check_images()
    Image.new("RGB", (8, 8)).save(root / "b.png")
    dataset.check_images()  # the long name is left to the runner, which counts it as failed


def test_missing_label_file(tmp_path):
    for name in NAMES[:-1]:
        with pytest.raises(DatasetError, match="label file not found"):
            load_dataset(name, tmp_path)


def test_an_image_name_is_kept_as_written_leading_space_and_all(tmp_path):
    """ " a.png" is a file name of its own: stripping it would open another file (or none)."""
    (tmp_path / " a.png").write_bytes(b"")
    (tmp_path / "mos.csv").write_text('image,mos\n" a.png",3\nb.png ,4\n')
    dataset = load_dataset("csv", tmp_path)
    assert [s.image for s in dataset.samples] == [" a.png", "b.png "]
    assert dataset.path(dataset.samples[0]) == tmp_path / " a.png"


# ---- labels naming images inside tar shards and Parquet files -----------------------------


@pytest.fixture
def containers(tmp_path, real_images) -> Path:
    """A tar shard of two photos and a Parquet file of three, as `score --out` reads them."""
    with tarfile.open(tmp_path / "shard.tar", "w") as archive:
        for n in range(2):
            archive.add(real_images[n], arcname=f"s{n}.png")
    table = pa.table({"image": [p.read_bytes() for p in real_images[:3]]})
    pq.write_table(table, tmp_path / "rows.parquet", row_group_size=2)
    return tmp_path


def csv_of(root: Path, *names: str, **options):
    (root / "labels.csv").write_text("image,mos\n" + "".join(f"{n},{i}\n" for i, n in
                                                             enumerate(names)))  # fmt: skip
    return load_dataset("csv", root, labels="labels.csv", **options)


def test_labels_may_name_tar_members_and_parquet_rows_as_score_ids(containers):
    dataset = csv_of(containers, "shard.tar#s0.png", "rows.parquet#1",
                     f"{containers}/shard.tar#s1.png", "shard.tar#../s1.png")  # fmt: skip
    assert [dataset.locate(s) for s in dataset.samples] == [
        f"{containers}/shard.tar#s0.png", f"{containers}/rows.parquet#1",
        f"{containers}/shard.tar#s1.png", f"{containers}/shard.tar#../s1.png",
    ]  # fmt: skip
    assert dataset.path(dataset.samples[2]) == containers / "shard.tar"
    dataset.check_images()
    indices = [index for index, _ in dataset.images(dataset.samples)]
    assert sorted(indices) == [0, 1, 2, 3]
    with pytest.raises(DatasetError, match=r"'\.\./shard\.tar#s0\.png' lies outside"):
        csv_of(containers, "../shard.tar#s0.png")


def test_the_image_check_looks_at_containers_and_parquet_footers(containers):
    csv_of(containers, "shard.tar#nokey.png").check_images()  # members: found by the run
    with pytest.raises(DatasetError, match="none of the csv images is there"):
        csv_of(containers, "rows.parquet#3", "gone.tar#s0.png").check_images()
    csv_of(containers, "rows.parquet#2").check_images()
    with pytest.raises(DatasetError, match=r"rows\.parquet: --parquet-col mos: no such column"):
        csv_of(containers, "rows.parquet#2", parquet_col="mos").check_images()
    with pytest.raises(DatasetError, match="option parquet_col does not apply"):
        csv_of(containers, "shard.tar#s0.png", parquet_col="image")
