"""Shared fixtures: paths to the real data beside the project, tiny random checkpoints."""

from __future__ import annotations

import json
import os

# Tests never reach a model hub: set before transformers / huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import numpy as np
import pytest

from llmiqa import tiny

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
GOLDEN = ROOT.parent / "shared" / "golden"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data: real images, labels and the DIBR dataset (read-only)."""
    assert DATA.is_dir(), f"{DATA} is missing: tests need ../shared beside the project"
    return DATA


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """../shared/golden: reference outputs of original model code on tiny checkpoints."""
    assert GOLDEN.is_dir(), f"{GOLDEN} is missing: tests need ../shared beside the project"
    return GOLDEN


@pytest.fixture(scope="session")
def real_images(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "images").iterdir())


@pytest.fixture(scope="session")
def qwen2_vl_dir(tmp_path_factory) -> Path:
    return tiny.build_qwen2_vl(tmp_path_factory.mktemp("qwen2-vl"))


@pytest.fixture(scope="session")
def qwen2_5_vl_dir(tmp_path_factory) -> Path:
    return tiny.build_qwen2_vl(tmp_path_factory.mktemp("qwen2.5-vl"), version="2.5")


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory) -> Path:
    return tiny.build_llava(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="session")
def sam2_dir(tmp_path_factory) -> Path:
    return tiny.build_sam2(tmp_path_factory.mktemp("sam2"))


@pytest.fixture(scope="session")
def golden(golden_dir) -> Path:
    """Outputs of the original mPLUG-Owl3 code on a tiny official-format checkpoint."""
    return golden_dir / "mplug-owl3-tiny"


@pytest.fixture(scope="session")
def owl3_dir(golden) -> Path:
    """The golden tiny mPLUG-Owl3 checkpoint, in the official format."""
    return golden / "checkpoint"


@pytest.fixture(scope="session")
def arrays(golden):
    return np.load(golden / "golden.npz")


@pytest.fixture(scope="session")
def meta(golden) -> dict:
    return json.loads((golden / "golden_meta.json").read_text())
