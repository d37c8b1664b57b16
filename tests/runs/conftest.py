"""Run folders on the real DIBR dataset with tiny random models: the metrics are computed
for real but mean nothing about accuracy."""

import pytest

from llmiqa.runs.config import RunConfig
from llmiqa.runs.evaluate import evaluate_run
from llmiqa.scoring.knobs import values_of
from llmiqa.scoring.presets import resolve
from llmiqa.tiny import PERMISSIVE_MASKS

LIMIT = 6


@pytest.fixture(scope="session")
def config_for():
    """config_for(dataset, model_dir, limit=6, preset=None, **scoring): a run's config,
    whole images unless told otherwise."""

    def make(dataset, model_dir, limit=LIMIT, preset=None, **scoring) -> RunConfig:
        explicit = {"model": [str(model_dir)], "region_mode": "whole-only", **scoring}
        return RunConfig.create(dataset, resolve(explicit, preset), preset, limit)

    return make


@pytest.fixture(scope="module")
def mixed_config(config_for, dibr, qwen2_vl_dir, sam2_dir):
    """Regions from a random SAM2 (thresholds off), rated as masked crops so that every
    region gets its own rating and the aggregation ablations differ."""
    masks = values_of(PERMISSIVE_MASKS)
    return config_for(dibr, qwen2_vl_dir, region_mode="mask", segmenter=str(sam2_dir), **masks)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mixed_config):
    out = tmp_path_factory.mktemp("run")
    summary = evaluate_run(mixed_config, out, resamples=50)
    return out, summary
