"""Shared fixtures: paths to the real data beside the project, tiny random checkpoints."""

from __future__ import annotations

import json
import os

# Tests never reach a model hub: set before transformers / huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
# `make test` runs two pytest workers on two cores: one torch thread each, not two
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import numpy as np
import pytest

from llmiqa import tiny
from llmiqa.method.standards import Standard
from llmiqa.raters.base import Rating, RatingRequest

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
    """A tiny random SAM2 with a 256-px input (the pipeline's tests need no real geometry)."""
    return tiny.build_sam2(tmp_path_factory.mktemp("sam2"), image_size=256)


@pytest.fixture(scope="session")
def golden(golden_dir) -> Path:
    """Outputs of the original mPLUG-Owl3 code on a tiny official-format checkpoint."""
    return golden_dir / "mplug-owl3-tiny"


@pytest.fixture(scope="session")
def owl3_dir(golden) -> Path:
    """The golden tiny mPLUG-Owl3 checkpoint, in the official format."""
    return golden / "checkpoint"


@pytest.fixture(scope="session")
def owl3_words_dir(owl3_dir, tmp_path_factory) -> Path:
    """The golden tiny mPLUG-Owl3 with a tokenizer in which the answer words are single
    tokens (its own starts four of them with the same token)."""
    return tiny.retokenized_mplug_owl3(owl3_dir, tmp_path_factory.mktemp("owl3-words"))


@pytest.fixture(scope="session")
def arrays(golden):
    return np.load(golden / "golden.npz")


@pytest.fixture(scope="session")
def meta(golden) -> dict:
    return json.loads((golden / "golden_meta.json").read_text())


@pytest.fixture(scope="session", autouse=True)
def hash_cache(tmp_path_factory):
    """Checkpoint content hashes are cached per test session, never in the user's home."""
    os.environ["LLMIQA_CACHE"] = str(tmp_path_factory.mktemp("llmiqa-cache"))


@pytest.fixture(scope="session")
def photos(real_images) -> list[str]:
    """Four real photos (LIVEC, KonIQ, KADID) as paths."""
    return [str(p) for p in real_images[:4]]


@pytest.fixture(scope="session")
def dibr(data_dir) -> dict:
    """The real DIBR dataset (96 images with MOS) as load_dataset arguments."""
    root = data_dir / "dibr"
    return {"name": "csv", "root": str(root), "labels": str(root / "mos.csv")}


@pytest.fixture(scope="session")
def rating():
    """Make a Rating whose K digits carry `probs` (scaled by the mass the best other token
    leaves them): rating(probs, other_logprob=-30.0, other_value=None)."""

    def make(probs, other_logprob: float = -30.0, other_value: int | None = None) -> Rating:
        probs = np.asarray(probs, dtype=np.float64)
        with np.errstate(divide="ignore"):
            logprobs = np.log(probs * (1.0 - np.exp(other_logprob)))
        return Rating(logprobs, other_logprob, other_value)

    return make


@pytest.fixture(scope="session")
def rate():
    """rate(rater, images, standard=Standard(), view="whole") -> its Ratings, in order."""

    def run(rater, images, standard: Standard = Standard(), view: str = "whole") -> list[Rating]:
        prompt = standard.prompt(view)
        requests = [RatingRequest.of(image, prompt, standard.levels) for image in images]
        outcomes = dict(rater.rate(requests))
        return [outcomes[i] for i in range(len(images))]

    return run


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(size) -> a folder on a fresh tmpfs of that size (e.g. "2m"): a disk that fills
    up, or is remounted read-only, for real. Needs root, as the machines tests run on."""
    import subprocess

    mounted = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (root needed): {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
