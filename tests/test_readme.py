"""README.md stays true: its Python example runs as written, on tiny models instead of the
hub ones (the only substitution), and its commands exist."""

import re
import shlex
import shutil
from pathlib import Path

import pytest

from llmiqa.cli import main, parser

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_python_example_runs_as_written(
    qwen2_vl_dir, sam2_dir, photos, tmp_path, monkeypatch, capsys
):
    example = python_blocks()[0]
    for name, photo in zip(("a.jpg", "b.png"), photos, strict=False):
        shutil.copy(photo, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    offline = example.replace('"Qwen/Qwen2.5-VL-7B-Instruct"]', f'"{qwen2_vl_dir}"]').replace(
        'store="cache.sqlite")',
        f'store="cache.sqlite", segmenter="{sam2_dir}", masks=PERMISSIVE_MASKS)',
    )
    assert offline != example
    exec("from llmiqa.tiny import PERMISSIVE_MASKS\n" + offline, {})
    printed = capsys.readouterr().out
    assert printed.startswith("a.jpg ") and "\nb.png " in printed
    assert (tmp_path / "cache.sqlite").is_file()


def test_the_metric_example_runs_as_written(qwen2_vl_dir, capsys):
    example = python_blocks()[1]
    offline = example.replace('"Qwen/Qwen2.5-VL-7B-Instruct"', f'"{qwen2_vl_dir}"')
    assert offline != example
    exec(offline, {})
    scores, properties = capsys.readouterr().out.strip().splitlines()
    assert scores.startswith("tensor([") and properties == "False (1.0, 7.0) Scorer"


@pytest.mark.parametrize(
    "command", sorted(set(re.findall(r"^llmiqa (\w+)", README.read_text(), flags=re.M)))
)
def test_every_command_the_readme_shows_exists(command):
    (commands,) = [a for a in parser()._actions if a.dest == "command"]
    assert command in commands.choices


def test_the_try_it_offline_commands_run_as_written(photos, tmp_path, monkeypatch, capsys):
    """README's "Try it offline", line by line on a photo: `llmiqa tiny` builds the tiny
    models (mPLUG-Owl3 among them) and prints the same commands, which score it."""
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
                if b.startswith("llmiqa tiny")]  # fmt: skip
    commands = [shlex.split(line, comments=True) for line in block.strip().splitlines()]
    shutil.copy(photos[0], tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    printed = []
    for command in commands:
        assert command[0] == "llmiqa" and main(command[1:]) == 0, command
        printed.append(capsys.readouterr())
    tried = [line.removeprefix("try: ").replace("IMAGE", "photo.jpg")
             for line in printed[0].out.splitlines() if line.startswith("try: ")]  # fmt: skip
    assert tried == [shlex.join(command) for command in commands[1:]]
    assert "Writing model shards" not in printed[0].err
    assert "--preset dogiqa --model .tiny/mplug-owl3" in tried[1]
    for scored in printed[1:]:
        score, name = scored.out.strip().split("\t")
        assert name == "photo.jpg" and float(score) >= 1


def test_the_collection_filtering_example_runs_as_written(photos, tmp_path, monkeypatch, capsys):
    """README's "Curating a collection": a run folder from `llmiqa score --out` (a rater
    registered here that needs no model), then its pyarrow example as written."""
    import sys

    import pyarrow.parquet as pq

    from llmiqa.raters import registry

    sys.path.insert(0, str(README.parent / "tests" / "runs"))
    import digest_rater

    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))
    digest_rater.register()
    (example,) = [b for b in python_blocks() if "runs/photos/results.parquet" in b]
    monkeypatch.chdir(tmp_path)
    argv = ["score", *photos, "--backend", "digest", "--model", "m", "--region-mode",
            "whole-only", "--out", "runs/photos"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    exec(example, {})
    scores = pq.read_table("runs/photos/results.parquet").column("score").to_pylist()
    kept = [line for line in (tmp_path / "keep.txt").read_text().splitlines()]
    assert len(kept) == sum(score >= 5 for score in scores)
    assert capsys.readouterr().out == f"{len(kept)} of 4 inputs score 5 or more\n"
