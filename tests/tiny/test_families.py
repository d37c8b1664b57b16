"""The models table: README shows it as llmiqa/tiny/families.py holds it, and each parameter
count is the one computed from the checkpoint's published config (on the meta device:
nothing downloaded, nothing allocated)."""

from pathlib import Path

import pytest

from llmiqa.tiny.families import FAMILIES, table

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_shows_the_models_table():
    assert table() in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.key)
def test_parameter_counts_are_computed_from_published_configs(family, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from model_sizes import count

    total, _ = count(family.checkpoint)
    assert round(total / 1e9, 3) == family.params
