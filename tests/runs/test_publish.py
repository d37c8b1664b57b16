"""A run folder describes one run: its outputs are published as one unit (whatever
interrupts the publication, a reader finds the previous run whole or the new one whole),
with the modes the umask gives, and a finished run is not replaced unasked."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmiqa.cli import main
from llmiqa.errors import RunError
from llmiqa.runs.config import RunConfig
from llmiqa.runs.evaluate import evaluate_run
from llmiqa.runs.publish import CURRENT, ENTRIES, PUBLISHED, Publication


def run_ids(out: Path) -> set[str]:
    """The run id every output of the folder names (one element when they agree)."""
    ids = {json.loads((out / "config.json").read_text())["run_id"]}
    ids |= {json.loads(line)["run"] for line in (out / "results.jsonl").read_text().splitlines()}
    ids.add(json.loads((out / "metrics.json").read_text())["run_id"])
    ids.add(RunConfig.read(out).run_id)
    report = (out / "report.md").read_text()  # names its run in its settings table
    if not all(i in report for i in ids):
        ids.add("a report of another run")
    return ids


def snapshot(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ENTRIES if (out / name).is_file()}


@pytest.fixture
def seven(config_for, dibr, qwen2_vl_dir, tmp_path) -> tuple[Path, dict]:
    """A finished K = 7 run, and what its folder holds."""
    out = tmp_path / "run"
    evaluate_run(config_for(dibr, qwen2_vl_dir, limit=3), out, resamples=0)
    return out, snapshot(out)


def test_outputs_are_links_into_one_publication(seven):
    out, _ = seven
    assert (out / CURRENT).is_symlink()
    (publication,) = (out / PUBLISHED).iterdir()
    assert (out / CURRENT).resolve() == publication
    for name in ENTRIES:
        assert (out / name).is_symlink() and os.readlink(out / name) == f"{CURRENT}/{name}"
    assert len(run_ids(out)) == 1


@pytest.mark.parametrize("fail_at", [0, 2, 5, "switch"])
def test_a_publication_interrupted_anywhere_leaves_the_previous_run_whole(
    seven, config_for, dibr, qwen2_vl_dir, monkeypatch, fail_at
):
    """Ctrl-C (or any failure) at the first, third or sixth file written, or at the switch:
    the previous run's outputs, whole, and nothing of the new publication left."""
    out, before = seven
    writes = []
    original_write, original_switch = Publication.write, Publication.switch

    def write(self, path, data):
        if len(writes) == fail_at:
            raise KeyboardInterrupt
        writes.append(path)
        original_write(self, path, data)

    def switch(self):
        if fail_at == "switch":
            raise KeyboardInterrupt
        original_switch(self)

    monkeypatch.setattr(Publication, "write", write)
    monkeypatch.setattr(Publication, "switch", switch)
    with pytest.raises(KeyboardInterrupt):
        other = config_for(dibr, qwen2_vl_dir, limit=3, levels=5)
        evaluate_run(other, out, resamples=0, overwrite=True)
    assert snapshot(out) == before and len(run_ids(out)) == 1
    assert len(list((out / PUBLISHED).iterdir())) == 1  # the aborted one is gone


def test_ctrl_c_during_publication_leaves_one_run_in_the_folder(seven, dibr, qwen2_vl_dir):
    """A real SIGINT as soon as the new publication's folder appears: whatever it lands on,
    the folder holds one run, whole (the old one, unless the switch was done)."""
    out, before = seven
    command = [
        sys.executable, "-m", "llmiqa.cli", "eval", "--dataset", "csv", "--root", dibr["root"],
        "--labels", dibr["labels"], "--limit", "3", "--model", str(qwen2_vl_dir),
        "--region-mode", "whole-only", "--bootstrap", "0", "--levels", "5", "--overwrite",
        "--out", str(out),
    ]  # fmt: skip
    run = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not any(p.name.startswith(".") for p in (out / PUBLISHED).iterdir()):
        assert run.poll() is None or time.monotonic() > deadline, "finished unseen"
        time.sleep(0.001)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode in (0, 130) and "Traceback" not in err
    assert len(run_ids(out)) == 1
    if run.returncode == 130:
        assert snapshot(out) == before and "still holds its previous outputs" in err
    assert len(list((out / PUBLISHED).iterdir())) == 1
    print(f"exit {run.returncode}")  # 130: stopped before the switch (the usual case)


def test_a_disk_that_fills_up_during_publication_leaves_the_previous_run_whole(
    tmpfs, config_for, dibr, qwen2_vl_dir, tmp_path
):
    """A real full disk (a small tmpfs) under the run folder; the store lives elsewhere."""
    out = tmpfs("4m") / "run"
    store = str(tmp_path / "store.sqlite")
    first = RunConfig.create(dibr, config_for(dibr, qwen2_vl_dir, limit=3).scoring, None, 3, store)
    evaluate_run(first, out, resamples=0)
    before = snapshot(out)
    used = sum(f.stat().st_size for f in (out / PUBLISHED).rglob("*") if f.is_file())
    filler = out.parent / "filler"
    free = os.statvfs(out).f_bavail * os.statvfs(out).f_frsize
    filler.write_bytes(b"\0" * (free - used // 2))  # room for half a publication
    other = RunConfig.create(dibr, {**first.scoring, "levels": 5}, None, 3, store)
    with pytest.raises(RunError, match=r"No space left on device.*still holds the previous"):
        evaluate_run(other, out, resamples=0, overwrite=True)
    assert snapshot(out) == before and len(list((out / PUBLISHED).iterdir())) == 1
    filler.unlink()
    summary = evaluate_run(other, out, resamples=0, overwrite=True)  # all ratings stored
    assert summary["usage"]["rated"] == 0 and RunConfig.read(out).scoring["levels"] == 5


@pytest.mark.parametrize(
    ("umask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_outputs_get_the_modes_the_umask_gives(
    config_for, dibr, qwen2_vl_dir, tmp_path, umask, file_mode, folder_mode
):
    before = os.umask(umask)
    try:
        out = tmp_path / "run"
        evaluate_run(config_for(dibr, qwen2_vl_dir, limit=2), out, resamples=0)
    finally:
        os.umask(before)
    publication = (out / CURRENT).resolve()
    for path in [publication, *publication.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (folder_mode if path.is_dir() else file_mode), path


def test_a_finished_run_is_replaced_only_when_asked(seven, config_for, dibr, qwen2_vl_dir):
    out, before = seven
    other = config_for(dibr, qwen2_vl_dir, limit=3, levels=5, lam=2.0)
    with pytest.raises(RunError, match=r"other options \(lam 1\.0 -> 2\.0; levels 7 -> 5\)"):
        evaluate_run(other, out, resamples=0)
    assert snapshot(out) == before
    same = config_for(dibr, qwen2_vl_dir, limit=3)
    assert evaluate_run(same, out, resamples=0)["usage"]["rated"] == 0  # a rerun is fine
    evaluate_run(other, out, resamples=0, overwrite=True)
    assert RunConfig.read(out).scoring["levels"] == 5


def test_the_command_line_says_which_options_differ_and_how_to_replace(seven, dibr, qwen2_vl_dir,
                                                                        capsys):  # fmt: skip
    out, _ = seven
    argv = ["eval", "--dataset", "csv", "--root", dibr["root"], "--labels", dibr["labels"],
            "--limit", "3", "--model", str(qwen2_vl_dir), "--region-mode", "whole-only",
            "--bootstrap", "0", "--levels", "5", "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "levels 7 -> 5" in err and "--overwrite" in err and "\n" not in err
    assert main([*argv, "--overwrite"]) == 0


def test_an_older_run_folder_of_plain_files_is_published_over(seven, config_for, dibr,
                                                              qwen2_vl_dir):  # fmt: skip
    """Folders written before publications hold plain files: they become links."""
    out, _ = seven
    current = (out / CURRENT).resolve()
    for name in ENTRIES:
        (out / name).unlink()
        os.rename(current / name, out / name)
    (out / CURRENT).unlink()
    assert RunConfig.read(out).scoring["levels"] == 7  # still readable as it is
    evaluate_run(config_for(dibr, qwen2_vl_dir, limit=3, levels=5), out, resamples=0,
                 overwrite=True)  # fmt: skip
    assert all((out / name).is_symlink() for name in ENTRIES) and len(run_ids(out)) == 1


def test_a_late_ctrl_c_after_the_command_finished_changes_nothing(data_dir):
    code = (
        "import os, signal, sys\nfrom llmiqa.cli import main\n"
        f"status = main(['bound', '--dataset', 'livec', '--root', "
        f"{str(data_dir / 'labels' / 'livec')!r}, '--levels', '3'])\n"
        "os.kill(os.getpid(), signal.SIGINT)  # arrives as the command returns\n"
        "sys.exit(status)\n"
    )
    default = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          preexec_fn=default)  # fmt: skip
    assert done.returncode == 0, done.stderr
