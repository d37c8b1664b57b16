"""A run folder describes one run: its outputs are published as one unit (whatever
interrupts the publication, a reader finds the previous run whole or the new one whole),
with the modes the umask gives, and a finished run is not replaced unasked."""

import itertools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmiqa.cli import main
from llmiqa.errors import Interrupted, RunError
from llmiqa.runs import publish
from llmiqa.runs.ablate import ablate, save
from llmiqa.runs.config import RunConfig
from llmiqa.runs.evaluate import evaluate_run
from llmiqa.runs.publish import (
    CURRENT,
    ENTRIES,
    EVAL_OUTPUTS,
    PUBLISHED,
    Publication,
    publishing,
)


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
    held = [name for name in ENTRIES if (publication / name).exists()]
    assert held == list(EVAL_OUTPUTS)
    for name in ENTRIES:  # each through `current`; no link to what the run does not hold
        linked = (out / name).is_symlink() and os.readlink(out / name) == f"{CURRENT}/{name}"
        assert linked == (name in held)
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
    if run.returncode == 130 and snapshot(out) == before:
        assert "still holds its previous outputs" in err
    elif run.returncode == 130:  # the switch was done: the message says so
        assert "holds the new run" in err and RunConfig.read(out).scoring["levels"] == 5
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


def flatten(out: Path) -> None:
    """The folder as llmiqa wrote it before publications: plain files, no `current`."""
    current = (out / CURRENT).resolve()
    for name in EVAL_OUTPUTS:
        (out / name).unlink()
        os.rename(current / name, out / name)
    (out / CURRENT).unlink()
    shutil.rmtree(out / PUBLISHED)


def test_an_older_run_folder_of_plain_files_is_published_over(seven, config_for, dibr,
                                                              qwen2_vl_dir):  # fmt: skip
    """Folders written before publications hold plain files: they become links."""
    out, _ = seven
    flatten(out)
    assert RunConfig.read(out).scoring["levels"] == 7  # still readable as it is
    evaluate_run(config_for(dibr, qwen2_vl_dir, limit=3, levels=5), out, resamples=0,
                 overwrite=True)  # fmt: skip
    assert all((out / name).is_symlink() for name in EVAL_OUTPUTS) and len(run_ids(out)) == 1


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


# ---- a kill or a Ctrl-C at any step of a publication -------------------------------------


class Killed(BaseException):
    """Stands in for SIGKILL at one step: nothing after it runs (abort is stubbed out)."""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, config_for, dibr, qwen2_vl_dir):
    """A K = 7 run folder as an earlier llmiqa wrote it (plain files), and the published
    outputs of a K = 5 run to publish over it, with its run id."""
    root = tmp_path_factory.mktemp("two-runs")
    old, new = root / "old", root / "new"
    evaluate_run(config_for(dibr, qwen2_vl_dir, limit=3), old, resamples=0)
    flatten(old)
    evaluate_run(config_for(dibr, qwen2_vl_dir, limit=3, levels=5), new, resamples=0)
    return old, (new / CURRENT).resolve(), RunConfig.read(new).run_id


def contents(folder: Path) -> dict[str, bytes]:
    """Every output file by its path below the run folder, read through any link."""
    found = {}
    for name in ENTRIES:
        path = folder / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        found |= {str(f.relative_to(folder)): f.read_bytes() for f in files if f.is_file()}
    return found


def which_run(out: Path, old: dict, new: dict) -> str:
    """ "old" or "new": every output present is that run's (a mix fails); only figures/
    may be missing, for the one step that swaps that folder for a link."""
    runs = set()
    for name in new:
        path = out / name
        if not path.exists():
            assert name.startswith("figures"), f"{name} missing"
            continue
        data = path.read_bytes()
        runs.add("old" if data == old[name] else "new" if data == new[name] else "neither")
    assert len(runs) == 1 and runs <= {"old", "new"}, f"a mixed folder: {runs}"
    return runs.pop()


def publish_files(out: Path, files: Path, run_id: str) -> None:
    with publishing(out, run_id) as publication:
        shutil.copytree(files, publication.folder, dirs_exist_ok=True)


def cut_at(step: int, stop: type[BaseException], monkeypatch) -> None:
    """Raise `stop` instead of the step-th change of the run folder (a hard link, a link
    made or moved, a rename, a flush to disk)."""
    count = itertools.count()

    def cut(function):
        def step_or_stop(*args, **kwargs):
            if next(count) == step:
                raise stop
            return function(*args, **kwargs)

        return step_or_stop

    monkeypatch.setattr(publish, "_link", cut(publish._link))
    monkeypatch.setattr(publish, "_hard_link", cut(publish._hard_link))
    monkeypatch.setattr(publish, "_fsync", cut(publish._fsync))
    monkeypatch.setattr(os, "rename", cut(os.rename))


def test_a_kill_at_any_step_of_publishing_over_plain_files_leaves_one_run(
    two_runs, tmp_path, monkeypatch
):
    """The first publication over an earlier llmiqa's plain files, killed before each of
    its steps in turn: the folder holds the old run whole or the new one, never a mix, and
    the next publication finishes the job."""
    old_folder, new_files, run_id = two_runs
    old, new = contents(old_folder), contents(new_files)
    for step in itertools.count():
        out = tmp_path / f"killed-{step}"
        shutil.copytree(old_folder, out, symlinks=True)
        with monkeypatch.context() as patch:
            cut_at(step, Killed, patch)
            patch.setattr(Publication, "abort", lambda self: None)
            try:
                publish_files(out, new_files, run_id)
            except Killed:
                pass
            else:
                break
        which_run(out, old, new)
        publish_files(out, new_files, run_id)  # the next run, not interrupted
        assert which_run(out, old, new) == "new" and contents(out) == new
        assert all((out / name).is_symlink() for name in EVAL_OUTPUTS)
        assert len(list((out / PUBLISHED).iterdir())) == 1
    assert step > len(EVAL_OUTPUTS) * 2  # every hard link, link and rename was cut once
    assert contents(out) == new


def test_ctrl_c_at_any_step_of_a_publication_says_which_run_the_folder_holds(
    two_runs, tmp_path, monkeypatch
):
    old_folder, new_files, run_id = two_runs
    old, new = contents(old_folder), contents(new_files)
    said = set()
    for step in itertools.count():
        out = tmp_path / f"interrupted-{step}"
        shutil.copytree(old_folder, out, symlinks=True)
        with monkeypatch.context() as patch:
            cut_at(step, KeyboardInterrupt, patch)
            try:
                publish_files(out, new_files, run_id)
            except Interrupted as interrupted:
                message = interrupted.args[0]
            else:
                break
        holds = which_run(out, old, new)
        assert message == (
            f"{out} holds the new run (it was published before the interruption)"
            if holds == "new"
            else f"{out} still holds its previous outputs"
        )
        said.add(holds)
    assert said == {"old", "new"}  # both cases met


def test_links_of_the_previous_runs_ablation_go_with_it(seven, config_for, dibr, qwen2_vl_dir):
    out, _ = seven
    save(out, ablate(out))
    assert (out / "ablation.csv").is_file()
    evaluate_run(config_for(dibr, qwen2_vl_dir, limit=3, levels=5), out, resamples=0,
                 overwrite=True)  # fmt: skip
    dangling = [p.name for p in out.iterdir() if p.is_symlink() and not p.exists()]
    assert dangling == [] and not (out / "ablation.csv").is_symlink()


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(
    config_for, dibr, qwen2_vl_dir, tmp_path
):
    mine = tmp_path / "my-notes.txt"
    mine.write_text("keep me\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").symlink_to(mine)
    with pytest.raises(RunError, match=r"\.lock: is a symbolic link, not llmiqa's lock file"):
        evaluate_run(config_for(dibr, qwen2_vl_dir, limit=2), out, resamples=0)
    assert mine.read_text() == "keep me\n" and (out / ".lock").is_symlink()


# ---- what is the same run: more images, or only speed -----------------------------------


def test_a_larger_limit_resumes_the_smoke_run_and_rates_only_the_new_images(
    config_for, dibr, qwen2_vl_dir, tmp_path
):
    """The README's smoke -> full flow: --limit 2, then 4, then none (5 images)."""
    labels = tmp_path / "five.csv"
    labels.write_text("".join(Path(dibr["labels"]).read_text().splitlines(True)[:6]))
    five, out = {**dibr, "labels": str(labels)}, tmp_path / "run"
    evaluate_run(config_for(five, qwen2_vl_dir, limit=2), out, resamples=0)
    summary = evaluate_run(config_for(five, qwen2_vl_dir, limit=4), out, resamples=0)
    assert summary["images"] == 4 and summary["usage"]["rated"] == 2
    summary = evaluate_run(config_for(five, qwen2_vl_dir, limit=None), out, resamples=0)
    assert summary["images"] == 5 and summary["usage"]["rated"] == 1
    assert RunConfig.read(out).limit is None
    with pytest.raises(RunError, match=r"other options \(limit None -> 3\)"):
        evaluate_run(config_for(five, qwen2_vl_dir, limit=3), out, resamples=0)  # fewer


def test_options_that_change_no_number_are_the_same_run(seven, config_for, dibr, qwen2_vl_dir):
    out, _ = seven
    faster = config_for(dibr, qwen2_vl_dir, limit=3, batch_size=2, device="cpu")
    summary = evaluate_run(faster, out, resamples=0)
    assert summary["usage"]["rated"] == 0 and RunConfig.read(out).scoring["batch_size"] == 2
