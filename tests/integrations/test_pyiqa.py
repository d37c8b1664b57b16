"""llmiqa.create_metric: a pyiqa-style metric on tensors, PIL images and paths; and the same
metric through pyiqa's own create_metric when pyiqa is installed (real pyiqa, no stub)."""

import importlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import llmiqa
from llmiqa.errors import UsageError
from llmiqa.inputs.images import ImageError, load_image
from llmiqa.integrations.pyiqa import as_images, tensor_to_pil
from llmiqa.method.aggregate import Aggregation, score_range
from llmiqa.method.regions import RegionSettings
from llmiqa.scoring.knobs import build
from llmiqa.scoring.pipeline import Scorer
from llmiqa.scoring.presets import PRESETS, resolve


def need(module: str, extra: str):
    """Skip without an optional extra, unless `make test-face` installed it (it lists the
    extras it installed in LLMIQA_REQUIRE_FACE: then a missing one fails)."""
    if extra in os.environ.get("LLMIQA_REQUIRE_FACE", "").split(","):
        return importlib.import_module(module)
    return pytest.importorskip(module)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """What pyiqa and torchvision's to_tensor give: (3, H, W) floats x / 255."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


@pytest.fixture(scope="module")
def metric(qwen2_vl_dir):
    return llmiqa.create_metric(str(qwen2_vl_dir), region_mode="whole-only", device="cpu")


@pytest.fixture(scope="module")
def two(data_dir):
    return [data_dir / "images" / "KADID_I01.png", data_dir / "images" / "LIVEC_1000.JPG"]


def test_the_metric_scores_paths_as_the_scorer_does(metric, qwen2_vl_dir, two):
    scores = metric([str(p) for p in two])
    expected = Scorer([str(qwen2_vl_dir)], regions=RegionSettings("whole-only")).score(two)
    assert scores.dtype == torch.float64 and scores.shape == (2,)
    assert scores.tolist() == [r.score for r in expected]
    assert metric.lower_better is False and metric.score_range == (1.0, 7.0)
    assert isinstance(metric.scorer, Scorer)


def test_a_tensor_batch_of_8_bit_pixels_scores_exactly_as_the_files(metric, two):
    pixels = [load_image(p).image for p in two]
    same_size = [image.resize((96, 64)) for image in pixels]
    batch = torch.stack([to_tensor(image) for image in same_size])  # (2, 3, 64, 96) in [0, 1]
    assert metric(batch).tolist() == metric(same_size).tolist()
    single = metric(to_tensor(pixels[0]))  # (3, H, W): one image
    assert single.tolist() == metric(str(two[0])).tolist()
    (second,) = metric(str(two[1])).tolist()
    mixed = metric([str(two[1]), pixels[0], to_tensor(pixels[1])])
    assert mixed.tolist() == [second, single.item(), second]


def test_tensor_conversion_rounds_and_repeats_grey(metric):
    grey = torch.tensor([[[0.0, 0.5, 1.0]]])  # (1, 1, 3)
    assert np.asarray(tensor_to_pil(grey)).tolist() == [[[0, 0, 0], [128] * 3, [255] * 3]]
    with pytest.raises(UsageError, match=r"values in \[0, 1\]"):
        metric(torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(UsageError, match="must be"):
        as_images(torch.zeros(2, 2, 2))
    with pytest.raises(UsageError, match="cannot score a dict"):
        as_images([{}])


def test_an_unreadable_file_raises_one_line_or_scores_nan(metric, qwen2_vl_dir, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    with pytest.raises(ImageError, match=r"broken\.png: not an image file"):
        metric(str(broken))
    lenient = llmiqa.create_metric(str(qwen2_vl_dir), region_mode="whole-only", errors="nan")
    assert math.isnan(lenient(str(broken)).item())


def test_presets_and_options_resolve_like_the_cli(qwen2_vl_dir):
    tuned = llmiqa.create_metric(
        "paper", model=str(qwen2_vl_dir), region_mode="whole-only", levels=5, lam=2.0
    )
    assert tuned.options["readout"] == "argmax" and tuned.options["levels"] == 5
    assert tuned.scorer.aggregation.lam == 2.0 and tuned.score_range == (
        1.0,
        15.0,
    )  # (g + λ) K, summed
    with pytest.raises(UsageError, match="not both"):
        llmiqa.create_metric(str(qwen2_vl_dir), model="other")
    with pytest.raises(UsageError, match="unknown option"):
        llmiqa.create_metric(str(qwen2_vl_dir), lambda_=1)


def test_score_range_follows_k_and_the_aggregation():
    def of(preset):
        options = resolve({}, preset)
        return score_range(build(Aggregation, options), options["levels"])

    assert of(None) == (1.0, 7.0)  # normalised: exactly 1..K
    assert of("paper") == (1.0, 14.0)  # s_global + s_local, summed
    assert of("dogiqa") == (1.0, math.inf)  # 0.5 s_global + s_local + 0.1 N: N is unbounded
    assert PRESETS["dogiqa"]["count_weight"] == 0.1
    assert score_range(Aggregation(global_weight=0.5, normalize=False), 9) == (1.0, 13.5)
    assert score_range(Aggregation(count_weight=-0.1), 7) == (-math.inf, 7.0)


def test_without_pyiqa_registering_says_how_to_install_it():
    code = (
        "import sys\nsys.modules['pyiqa'] = None  # as if not installed\n"
        "from llmiqa.integrations.pyiqa import register_pyiqa\nregister_pyiqa()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pyiqa is not installed: pip install 'llmiqa[pyiqa]'" in done.stderr


def test_import_llmiqa_stays_light():
    code = "import sys, llmiqa\nassert 'torch' not in sys.modules\nllmiqa.create_metric\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_pyiqa_create_metric_builds_the_same_metric(metric, qwen2_vl_dir, two):
    pyiqa = need("pyiqa", "pyiqa")
    from llmiqa.integrations.pyiqa import register_pyiqa

    assert register_pyiqa() == ["llmiqa", "llmiqa-paper", "llmiqa-dogiqa"]
    assert register_pyiqa() == ["llmiqa", "llmiqa-paper", "llmiqa-dogiqa"]  # idempotent
    assert {"llmiqa", "llmiqa-paper", "llmiqa-dogiqa"} <= set(pyiqa.list_models(metric_mode="NR"))
    wrapped = pyiqa.create_metric(
        "llmiqa", model=str(qwen2_vl_dir), region_mode="whole-only", device="cpu"
    )
    assert wrapped.lower_better is False and wrapped.score_range == "1, 7"
    assert wrapped.net.scorer.specs[0].torch_device.type == "cpu"  # pyiqa's device reached us
    image = load_image(two[0]).image
    batch = to_tensor(image).unsqueeze(0)
    assert wrapped(batch).tolist() == metric(batch).tolist() == metric(str(two[0])).tolist()
    assert wrapped(str(two[0])).tolist() == metric(str(two[0])).tolist()  # pyiqa decodes
    dogiqa = pyiqa.create_metric(
        "llmiqa-dogiqa", model=str(qwen2_vl_dir), region_mode="whole-only", device="cpu"
    )
    assert dogiqa.score_range == "1, ~" and dogiqa.net.score_range == (1.0, math.inf)
