"""`llmiqa score INPUTS --out DIR` on real images in every input form, with a rater that
needs no model (digest_rater): one row per input, failures and damage counted, a killed
run's rerun identical to an uninterrupted one, and ablate on the run with no model call."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from llmiqa.cli import main
from llmiqa.raters import registry
from llmiqa.runs.parts import PARTS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import digest_rater  # noqa: E402


def rows_of(out: Path) -> str:
    """The run's rows, comparable (NaN, as in other_value, equals itself as text)."""
    return json.dumps(pq.read_table(out / "results.parquet").to_pylist())


FLAGS = ["--backend", "digest", "--model", "m", "--region-mode", "whole-only"]


@pytest.fixture(autouse=True)
def digest(monkeypatch):
    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))  # undone after
    digest_rater.register()
    digest_rater.DigestRater.calls = 0


def crops(real_images, count: int) -> list[Image.Image]:
    """Distinct real pixels: 64-px crops of the real photos."""
    photos = [Image.open(p).convert("RGB") for p in real_images]
    return [photos[n % len(photos)].crop((8 * n, 0, 8 * n + 64, 64)) for n in range(count)]


def tar_of(path: Path, images: list[Image.Image], start: int = 0) -> None:
    with tarfile.open(path, "w") as archive:
        for n, image in enumerate(images, start):
            file = path.parent / f"{n:04d}.png"
            image.save(file)
            archive.add(file, arcname=f"{n:04d}.png")
            file.unlink()


@pytest.fixture
def collection(tmp_path, real_images):
    """A folder of 3 photos and an unreadable file, a list of 2, two tar shards (one
    truncated), and a Parquet file of 3: 4 + 2 + 4 + 2 + 3 inputs seen."""
    root = tmp_path / "data"
    (root / "photos").mkdir(parents=True)
    for photo in real_images[:3]:
        shutil.copy(photo, root / "photos" / photo.name)
    (root / "photos" / "broken.png").write_bytes(b"not a png")
    (root / "list.txt").write_text(f"{real_images[3]}\n{real_images[4]}\n")
    images = crops(real_images, 12)
    tar_of(root / "shard-0.tar", images[:4])
    tar_of(root / "shard-1.tar", images[4:8], 4)
    data = (root / "shard-1.tar").read_bytes()
    with tarfile.open(root / "shard-1.tar") as archive:
        third = archive.getmembers()[2].offset  # two samples whole, then cut
    (root / "shard-1.tar").write_bytes(data[:third])
    cells = [real_images[5].read_bytes(), real_images[6].read_bytes(), None]
    pq.write_table(pa.table({"image": pa.array(cells, pa.binary())}), root / "rows.parquet")
    return root


def inputs(root: Path) -> list[str]:
    return [str(root / "photos"), str(root / "list.txt"), str(root / "shard-{0..1}.tar"),
            str(root / "rows.parquet")]  # fmt: skip


def test_every_input_form_gives_one_row_per_input(collection, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["score", *inputs(collection), *FLAGS, "--out", str(out)]) == 1
    err = capsys.readouterr()
    assert "broken.png: not an image file PIL can read" in err.err
    assert f"{collection}/shard-1.tar: truncated or unreadable tar shard" in err.err
    assert "13 of 15 inputs scored, 2 failed, 1 damaged shard(s) of 4" in err.out
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == 15 and len({r["id"] for r in rows}) == 15
    by_id = {r["id"]: r for r in rows}
    assert by_id[f"{collection}/shard-0.tar#0003.png"]["width"] == 64
    assert by_id[f"{collection}/rows.parquet#2"]["error"].endswith("(empty)")
    assert by_id[f"{collection}/photos/broken.png"]["bytes"] == 9
    for row in rows:
        if row["error"] is None:
            probs = digest_rater.probs_of(row["digest"], 7)
            assert row["score"] == pytest.approx(probs @ np.arange(1, 8))
            assert np.shape(row["logprobs"]) == (1, 1, 7)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["inputs"], summary["scored"], summary["failed"]) == (15, 13, 2)
    assert [d["shard"] for d in summary["damaged_shards"]] == [f"{collection}/shard-1.tar"]
    assert summary["scores"]["count"] == 13 and sum(summary["scores"]["histogram"]["counts"]) == 13
    csv = (out / "results.csv").read_text().splitlines()
    assert len(csv) == 16 and csv[0].startswith('"id","shard","digest"')
    assert (out / "figures" / "histogram.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((out / "config.json").read_text())["dataset"]["name"] == "collection"

    calls = digest_rater.DigestRater.calls
    assert main(["score", *inputs(collection), *FLAGS, "--out", str(out)]) == 1  # resumed
    assert digest_rater.DigestRater.calls == calls
    assert json.loads((out / "summary.json").read_text())["shards_reused"] == 4  # from parts
    assert rows_of(out) == json.dumps(rows)


def test_ablate_reads_the_rows_with_no_model_call(collection, tmp_path, capsys):
    out = tmp_path / "run"
    main(["score", str(collection / "photos"), str(collection / "rows.parquet"), *FLAGS,
          "--out", str(out)])  # fmt: skip
    digest_rater.DigestRater.calls = 0
    capsys.readouterr()
    assert main(["ablate", str(out), "--json"]) == 0
    rows = {r["variant"]: r for r in json.loads(capsys.readouterr().out)}
    assert digest_rater.DigestRater.calls == 0
    expected = rows["readout=expected"]
    scores = pq.read_table(out / "results.parquet").column("score").to_numpy()
    scored = scores[np.isfinite(scores)]
    assert expected["scored"] == 5 and expected["metrics"]["mean"] == pytest.approx(scored.mean())
    assert "srcc" not in expected["metrics"]  # no MOS: described, not correlated
    assert rows["view=local (Table 3, exp. 7)"]["note"].startswith("n/a: no regions")
    table = (out / "ablation-scores.csv").read_text().splitlines()
    assert table[0].startswith("id,readout=expected,readout=argmax") and len(table) == 6


def test_another_run_is_refused_without_overwrite(collection, tmp_path, capsys):
    out = tmp_path / "run"
    photos = str(collection / "photos")
    assert main(["score", photos, *FLAGS, "--out", str(out)]) == 1
    capsys.readouterr()
    assert main(["score", photos, *FLAGS, "--out", str(out), "--levels", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "levels 7 -> 5" in err and "--overwrite" in err and "\n" not in err
    assert main(["score", photos, *FLAGS, "--out", str(out), "--levels", "5",
                 "--overwrite"]) == 1  # fmt: skip
    assert len(os.listdir(out / PARTS)) == 1  # the replaced run's parts are gone


def test_a_run_that_adds_inputs_continues_the_earlier_one(collection, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["score", str(collection / "shard-0.tar"), *FLAGS, "--out", str(out)]) == 0
    calls = digest_rater.DigestRater.calls
    wider = [str(collection / "shard-{0..1}.tar"), str(collection / "rows.parquet")]
    assert main(["score", *wider, *FLAGS, "--out", str(out)]) == 1  # shard-1 is truncated
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["shards"], summary["shards_reused"], summary["inputs"]) == (3, 1, 9)
    assert digest_rater.DigestRater.calls == calls + 4  # only the new inputs are rated
    assert len(os.listdir(out / PARTS)) == 1
    capsys.readouterr()
    narrower = [str(collection / "rows.parquet")]  # drops inputs: another run
    assert main(["score", *narrower, *FLAGS, "--out", str(out)]) == 2
    assert "other options (inputs" in capsys.readouterr().err


def test_parts_outlive_speed_options_but_not_another_model(collection, tmp_path, monkeypatch):
    out = tmp_path / "run"
    argv = ["score", str(collection / "shard-0.tar"), *FLAGS, "--out", str(out)]

    def reused() -> int:
        return json.loads((out / "summary.json").read_text())["shards_reused"]

    assert main(argv) == 0
    assert main([*argv, "--batch-size", "3", "--decoders", "1"]) == 0 and reused() == 1
    # the same options, another checkpoint behind them (retrained in place, a moved hub id)
    monkeypatch.setattr(digest_rater.DigestRater, "identify", classmethod(lambda c, s: "other"))
    calls = digest_rater.DigestRater.calls
    assert main(argv) == 0 and reused() == 0
    assert digest_rater.DigestRater.calls == calls + 4
    assert len(os.listdir(out / PARTS)) == 1  # the other model's parts are gone


def test_a_part_that_does_not_check_out_is_scored_again(collection, tmp_path):
    out = tmp_path / "run"
    argv = ["score", str(collection / "shard-0.tar"), *FLAGS, "--out", str(out)]
    assert main(argv) == 0
    rows = rows_of(out)
    (part,) = (out / PARTS).glob("*/*.parquet")
    data = bytearray(part.read_bytes())
    data[200] ^= 0xFF  # one flipped bit in a page: its checksum fails
    part.write_bytes(bytes(data))
    assert main(argv) == 0
    assert rows_of(out) == rows


CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import digest_rater
digest_rater.register()
from llmiqa.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_kill_then_a_rerun_gives_the_rows_of_an_uninterrupted_run(tmp_path, real_images):
    """A real SIGKILL once the first shard is finished: the rerun finishes the rest, and
    its rows equal those of a run never interrupted, none lost or duplicated."""
    root = tmp_path / "data"
    root.mkdir()
    images = crops(real_images, 24)
    for n in range(3):
        tar_of(root / f"part-{n}.tar", images[8 * n : 8 * n + 8], 8 * n)
    argv = ["score", str(root / "part-{0..2}.tar"), *FLAGS]
    killed = tmp_path / "killed"
    env = {**os.environ, "LLMIQA_TEST_DELAY": "0.15", "PYTHONPATH": str(HERE.parents[1])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(HERE), *argv, "--out",
                              str(killed)], env=env, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list((killed / PARTS).glob("*/*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished = list((killed / PARTS).glob("*/*.parquet"))
    assert 1 <= len(finished) < 3 and not (killed / "results.parquet").exists()
    assert main([*argv, "--out", str(killed)]) == 0
    rated_on_rerun = digest_rater.DigestRater.calls
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    resumed = rows_of(killed)
    assert resumed == rows_of(tmp_path / "whole")
    ids = [row["id"] for row in json.loads(resumed)]
    assert len(set(ids)) == len(ids) == 24
    assert rated_on_rerun <= 24 - 8  # the finished shard was not rated again
    assert json.loads((killed / "summary.json").read_text())["shards_reused"] == len(finished)


def test_without_out_every_form_is_printed_line_by_line(collection, capsys):
    assert main(["score", *inputs(collection), *FLAGS]) == 1  # a failure, a damaged shard
    out, err = capsys.readouterr()
    names = [line.split("\t")[1] for line in out.splitlines()]
    assert len(names) == 13 and f"{collection}/shard-0.tar#0000.png" in names
    assert f"{collection}/rows.parquet#1" in names and str(collection / "list.txt") not in names
    assert "llmiqa: 2 of 15 images failed" in err and "1 shard(s) damaged" in err
