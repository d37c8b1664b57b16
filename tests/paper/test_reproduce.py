"""The reproduction kit end to end: both protocols on two benchmarks laid out as their
official releases (small label subsets of real images), then per-image agreement with a
file in the authors' format. Tiny random models: this proves the plumbing only; whether
llmiqa reproduces the paper's numbers is for the first run on a GPU to say."""

import csv
import json
import shutil

import numpy as np
import pytest
import scipy.io

from llmiqa.cli import main
from llmiqa.errors import UsageError
from llmiqa.paper.compare import agreement
from llmiqa.paper.reproduce import PAPER, reproduce

IMAGES = 3


@pytest.fixture(scope="module")
def releases(tmp_path_factory, real_images):
    """LIVE Challenge and KonIQ-10k folders as released, holding three real photos each."""
    root = tmp_path_factory.mktemp("releases")
    photos = [p for p in real_images if p.suffix.lower() in (".png", ".jpg")][:IMAGES]
    livec = root / "livec"
    (livec / "Data").mkdir(parents=True)
    (livec / "Images").mkdir()
    names = [f"{100 + i}.bmp" for i in range(IMAGES)]
    for photo, name in zip(photos, names, strict=True):
        shutil.copy(photo, livec / "Images" / name)  # PIL reads the content, not the suffix
    listed = np.array([[n] for n in names], dtype=object)
    scipy.io.savemat(livec / "Data" / "AllImages_release.mat", {"AllImages_release": listed})
    scipy.io.savemat(livec / "Data" / "AllMOS_release.mat",
                     {"AllMOS_release": np.array([[30.0, 60.0, 90.0]])})  # fmt: skip
    koniq = root / "koniq"
    (koniq / "1024x768").mkdir(parents=True)
    columns = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"]
    with open(koniq / "koniq10k_scores_and_distributions.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for i, photo in enumerate(photos):
            name = f"{1000 + i}.jpg"
            shutil.copy(photo, koniq / "1024x768" / name)
            writer.writerow([name, 0, 0, 1, 0, 0, 1, 2.0 + i, 0.5, 40.0 + 10 * i])
    return {"livec": livec, "koniq10k": koniq}


@pytest.fixture(scope="module")
def kit(releases, owl3_dir, sam2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduction")
    argv = ["reproduce", "--livec", str(releases["livec"]), "--koniq10k",
            str(releases["koniq10k"]), "--subset", "--out", str(out), "--bootstrap", "20",
            "--model", str(owl3_dir), "--segmenter", str(sam2_dir), "--dtype", "float32",
            "--no-cut"]  # fmt: skip
    return out, argv


def test_both_protocols_on_every_benchmark_given_make_one_table_and_one_record(kit, capsys):
    out, argv = kit
    assert main(argv) == 0
    table = (out / "reproduction.md").read_text()
    assert table in capsys.readouterr().out
    record = json.loads((out / "reproduction.json").read_text())
    assert set(record["runs"]) == {"paper/livec", "paper/koniq10k", "dogiqa/livec",
                                   "dogiqa/koniq10k"}  # fmt: skip
    for key, run in record["runs"].items():
        assert (out / key / "results.csv").is_file()
        assert run["cell"]["scored"] == IMAGES and len(run["cell"]["srcc_ci"]) == 2
        assert run["whole_only"]["scored"] == IMAGES
        checkpoint = run["checkpoints"][run["models"][0]]
        assert "#" in checkpoint and "backend=mplug-owl3" in checkpoint  # a content hash
        assert run["seconds"] > 0
    assert {"torch", "transformers"} <= set(record["versions"]) and record["machine"]["cpu"]
    for row in PAPER:  # the paper's rows, then ours with intervals
        assert f"| paper, {row} |" in table
    assert "| ours, --preset paper | " in table and "| ours, --preset dogiqa, whole" in table
    paper_livec = record["runs"]["paper/livec"]["cell"]
    assert f"{paper_livec['srcc']:.3f} [" in table or paper_livec["srcc"] is None


def test_a_rerun_resumes_from_the_store_and_rates_nothing(kit):
    out, argv = kit
    main(argv)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("store.sqlite")}
    assert main(argv) == 0
    for run in ("paper/livec", "dogiqa/koniq10k"):
        summary = json.loads((out / run / "metrics.json").read_text())
        assert summary["usage"]["rated"] == 0 and summary["usage"]["loaded"] == []
    assert len(before) == 1  # one store for every run


def test_compare_gives_per_image_agreement_with_the_authors_file(kit, tmp_path, capsys):
    out, argv = kit
    main(argv)
    capsys.readouterr()
    run = out / "dogiqa" / "livec"
    results = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    theirs = tmp_path / "livec-test.json"  # the authors' format; names matched sans extension
    authors = [{"name": r["name"].replace(".bmp", ".JPG"), "score": 4} for r in results]
    theirs.write_text(json.dumps(authors))
    assert main(["compare", str(run), str(theirs), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["matched"] == IMAGES and found["only_ours"] == found["only_theirs"] == 0
    saved = json.loads((run / "compare-livec-test.json").read_text())
    assert saved["matched"] == IMAGES and saved["readout"] == "greedy"
    assert sum(sum(row.values()) for row in saved["confusion"].values()) == IMAGES


def test_agreement_counts_exact_and_near_matches():
    mine = {"a": 5.0, "b": 3.0, "c": 4.0, "d": 1.0, "mine only": 2.0}
    theirs = {"a": 5.0, "b": 4.0, "c": 4.0, "d": 3.0, "theirs only": 7.0}
    found = agreement(mine, theirs)
    assert (found.matched, found.only_ours, found.only_theirs) == (4, 1, 1)
    assert found.exact == 0.5 and found.within_one == 0.75
    assert found.confusion == {"5": {"5": 1}, "4": {"3": 1, "4": 1}, "3": {"1": 1}}
    assert found.mean_abs_diff == pytest.approx(0.75)


def test_a_benchmark_folder_that_is_not_there_is_named_by_its_flag(tmp_path):
    with pytest.raises(UsageError, match=r"^--livec /nonexistent: folder not found$"):
        reproduce({"livec": "/nonexistent"}, tmp_path / "out", {})


def test_the_record_keeps_earlier_runs_and_every_cell_says_its_n(kit, capsys):
    """A later run of one protocol on one benchmark keeps what the earlier ones recorded;
    every cell of ours, the whole-image-only ones included, names the images it is on."""
    out, argv = kit
    main(argv)
    at = argv.index("--koniq10k")
    fewer = [*argv[:at], *argv[at + 2 :], "--protocols", "paper"]
    capsys.readouterr()
    assert main(fewer) == 0
    assert "(4 runs)" in capsys.readouterr().out
    record = json.loads((out / "reproduction.json").read_text())
    assert set(record["runs"]) == {"paper/livec", "paper/koniq10k", "dogiqa/livec",
                                   "dogiqa/koniq10k"}  # fmt: skip
    for run in record["runs"].values():
        assert run["cell"]["images"] == run["whole_only"]["images"] == IMAGES
        assert run["cell"]["scored"] == run["whole_only"]["scored"] == IMAGES
    rows = [line for line in (out / "reproduction.md").read_text().splitlines()
            if line.startswith("| ours")]  # fmt: skip
    assert len(rows) == 4  # paper and dogiqa, each with its whole-image-only row
    cells = [cell.strip() for row in rows for cell in row.split("|")[2:-1]]
    assert len(cells) == 16 and all(cell.endswith(f"n = {IMAGES})") for cell in cells)
