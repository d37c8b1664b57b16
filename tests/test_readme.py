"""README.md stays true: its Python example runs as written, on tiny models instead of the
hub ones (the only substitution), and its commands exist."""

import re
import shutil
from pathlib import Path

import pytest

from llmiqa.cli import parser

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
