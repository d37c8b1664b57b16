"""Backends by name: a backend is a class plus its registration, and then the CLI, the API,
the options table and the store know it. This one is written here, in the test, and
touches no module of llmiqa."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import ClassVar

import numpy as np
import pytest

from llmiqa.cli import main
from llmiqa.errors import ModelLoadError
from llmiqa.loading.runtime import Runtime
from llmiqa.method.regions import RegionSettings
from llmiqa.method.standards import Prompt
from llmiqa.raters import registry
from llmiqa.raters.base import Backend, BackendOption, Rating, RatingRequest, Spec
from llmiqa.raters.spec import RaterSpec
from llmiqa.scoring.knobs import knobs
from llmiqa.scoring.pipeline import Scorer
from llmiqa.scoring.presets import resolve


class PeakRater(Backend):
    """Puts most probability on one level, `peak` (an option of its own): no model at all.
    Each image's rating is the same, so the score is known in advance."""

    name: ClassVar[str] = "peak"
    options: ClassVar[dict[str, BackendOption]] = {
        "peak": BackendOption(3, int, "the level to favour")
    }
    min_crop_side: ClassVar[int] = 1
    model_types: ClassVar[tuple[str, ...]] = ()
    loads = 0

    def __init__(self, spec: Spec) -> None:
        PeakRater.loads += 1
        self.identity = spec.identity
        self.peak = spec.backend_options["peak"]

    @classmethod
    def identify(cls, spec: Spec) -> str:
        return f"peak:{spec.model}|peak={spec.backend_options['peak']}"

    @classmethod
    def render_for(cls, spec: Spec, prompt: Prompt) -> str:
        return f"{prompt.system}\n{prompt.user}\nanswer:"

    def render(self, prompt: Prompt) -> str:
        return f"{prompt.system}\n{prompt.user}\nanswer:"

    def rate(self, requests: Sequence[RatingRequest]) -> Iterator[tuple[int, Rating]]:
        for index, request in enumerate(requests):
            probs = np.full(request.levels, 0.1 / (request.levels - 1))
            probs[self.peak - 1] = 0.9
            yield index, Rating(np.log(probs * 0.5), np.log(0.5), None)


@pytest.fixture(autouse=True)
def peak_registered(monkeypatch):
    monkeypatch.setattr(registry, "_BACKENDS", dict(registry._BACKENDS))  # undone after
    registry.register(PeakRater)
    PeakRater.loads = 0


def expected(peak: int, levels: int = 7) -> float:
    probs = np.full(levels, 0.1 / (levels - 1))
    probs[peak - 1] = 0.9
    return float(probs @ np.arange(1, levels + 1))


def test_a_registered_backend_scores_from_the_api(photos):
    scorer = Scorer(["anything"], regions=RegionSettings(region_mode="whole-only"),
                    runtime=Runtime(backend="peak"), backend_options={"peak": 5})  # fmt: skip
    results = scorer.score(photos[:2])
    assert [r.score for r in results] == pytest.approx([expected(5)] * 2)
    assert scorer.specs[0].identity == "peak:anything|peak=5" and PeakRater.loads == 1


def test_a_registered_backend_scores_from_the_command_line(photos, capsys, tmp_path):
    store = str(tmp_path / "s.sqlite")
    argv = ["score", *photos[:2], "--backend", "peak", "--model", "m", "--peak", "2",
            "--region-mode", "whole-only", "--json", "--store", store]  # fmt: skip
    assert main(argv) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["score"] for r in records] == pytest.approx([expected(2)] * 2)
    assert main(argv) == 0  # again: everything from the store
    assert PeakRater.loads == 1
    assert main(["prompt", "--backend", "peak", "--model", "m", "--view", "whole"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("answer:")


def test_its_options_are_flags_and_options_of_the_run(capsys):
    assert any(k.key == "peak" and k.default == 3 and "peak:" in k.help for k in knobs())
    assert resolve({"backend": "peak"})["peak"] == 3
    with pytest.raises(SystemExit):
        main(["score", "x.png", "--help"])
    assert "--peak PEAK" in capsys.readouterr().out


def test_names_are_unique_and_options_agree():
    with pytest.raises(ValueError, match="taken"):
        registry.register(type("Other", (PeakRater,), {}))  # the name "peak" again
    clash = type("Clash", (PeakRater,), {"name": "clash", "options": {
        "peak": BackendOption(4, int, "another default")}})  # fmt: skip
    with pytest.raises(ValueError, match="differs"):
        registry.register(clash)


def test_only_a_whole_backend_is_registered():
    with pytest.raises(ValueError, match=r"not a subclass of llmiqa\.raters\.base\.Backend"):
        registry.register(type("Loose", (), dict(vars(PeakRater), name="loose")))
    half = type("Half", (PeakRater,), {"name": "half", "rate": Backend.rate})  # abstract again
    with pytest.raises(ValueError, match="backend Half does not implement rate"):
        registry.register(half)


def test_unknown_backends_and_wrong_pairings_are_one_line(qwen2_vl_dir, owl3_dir):
    with pytest.raises(ModelLoadError, match="unknown backend 'nope'; choose one of auto, "):
        _ = RaterSpec("m", backend="nope").runs_on
    with pytest.raises(ModelLoadError, match="needs --server"):
        _ = RaterSpec("m", backend="server").runs_on
    with pytest.raises(ModelLoadError, match="runs on backend mplug-owl3"):
        _ = RaterSpec(str(owl3_dir), backend="transformers").runs_on
    assert RaterSpec(str(owl3_dir)).runs_on.name == "mplug-owl3"  # auto: the port
    assert RaterSpec(str(qwen2_vl_dir)).runs_on.name == "transformers"
