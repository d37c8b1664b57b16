"""Original SAM2 checkpoints (.pt) loaded as transformers' Sam2Model (llmiqa.segmenters.original).

The official checkpoints are far too big for tests: their tensor names and shapes, as the
original sam2 package builds them from its eight configs, are in
tests/golden/sam2/official_shapes.json.gz, and zero-stride tensors of those shapes stand in for
the weights. The tiny committed checkpoint (tiny.pt) is a real one, loaded end to end.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from llmiqa.errors import ModelLoadError
from llmiqa.segmenters import spec as segmenter_spec
from llmiqa.segmenters.masks import MaskSettings
from llmiqa.segmenters.original import (
    convert_state,
    infer_architecture,
    load_original,
    read_checkpoint,
    to_transformers,
)
from llmiqa.segmenters.spec import (
    HUB_FILES,
    SegmenterSpec,
    is_original_checkpoint,
    sam2_checkpoint_identity,
)

GOLDEN = Path(__file__).parents[1] / "golden" / "sam2"
TINY = GOLDEN / "tiny.pt"
NAMES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}


@pytest.fixture(scope="module")
def official() -> dict[str, dict[str, list[int]]]:
    with gzip.open(GOLDEN / "official_shapes.json.gz", "rt") as file:
        return json.load(file)


def fake_state(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Tensors of the right shapes that take no memory."""
    return {name: torch.zeros(()).expand(shape) for name, shape in shapes.items()}


def test_every_official_checkpoint_maps_onto_sam2model_exactly(official):
    assert len(official) == 8
    for config, shapes in official.items():
        version, size = re.fullmatch(
            r"configs/sam2(\.1)?/sam2(?:\.1)?_hiera_(.+)\.yaml", config
        ).groups()
        model, arch = to_transformers(fake_state(shapes), config)  # raises on any mismatch
        assert arch.name == NAMES[size] and arch.version == ("2.1" if version else "2.0"), config
        expected = model.state_dict()
        converted = convert_state(fake_state(shapes))
        assert sorted(converted) == sorted(expected)
        assert all(converted[k].shape == expected[k].shape for k in expected), config
        dropped = {k for k in shapes if k.startswith(("memory_", "obj_ptr", "maskmem", "no_obj"))}
        assert dropped and not any(k in converted for k in dropped)


def test_official_architectures_match_the_configs_transformers_ships(official):
    large = infer_architecture(fake_state(official["configs/sam2/sam2_hiera_l.yaml"]), "x.pt")
    assert (large.embed_dim, large.stages, large.num_heads) == (144, (2, 6, 36, 4), 2)
    assert large.global_att_blocks == (23, 33, 43) and large.window_spec == (8, 4, 16, 8)
    assert large.neck_channels == (1152, 576, 288, 144) and large.d_model == 256
    # transformers' Sam2HieraDetConfig defaults are SAM 2.1 tiny's (its docstring says so)
    from transformers import Sam2HieraDetConfig

    tiny = infer_architecture(fake_state(official["configs/sam2.1/sam2.1_hiera_t.yaml"]), "x.pt")
    ours = tiny.sam2_config().vision_config.backbone_config
    theirs = Sam2HieraDetConfig()
    for field in (
        "hidden_size",
        "blocks_per_stage",
        "embed_dim_per_stage",
        "num_attention_heads_per_stage",
        "window_size_per_stage",
        "global_attention_blocks",
        "window_positional_embedding_background_size",
    ):
        assert getattr(ours, field) == getattr(theirs, field), field


def test_the_tiny_checkpoint_loads_with_its_yaml_and_every_tensor_lands():
    state = read_checkpoint(TINY)
    model, arch = load_original(TINY)
    assert (arch.name, arch.version, arch.embed_dim, arch.stages) == (
        "custom",
        "2.0",
        8,
        (1, 1, 2, 1),
    )
    assert arch.global_att_blocks == (3,) and arch.d_model == 32
    loaded = model.state_dict()
    assert torch.equal(loaded["no_memory_embedding"], state["no_mem_embed"])
    assert torch.equal(
        loaded["vision_encoder.backbone.blocks.1.mlp.proj_out.weight"],
        state["image_encoder.trunk.blocks.1.mlp.layers.1.weight"],
    )
    assert torch.equal(
        loaded["mask_decoder.iou_prediction_head.layers.0.bias"],
        state["sam_mask_decoder.iou_prediction_head.layers.1.bias"],
    )
    assert torch.equal(
        loaded["prompt_encoder.point_embed.weight"],
        torch.cat([state[f"sam_prompt_encoder.point_embeddings.{i}.weight"] for i in range(4)]),
    )
    assert torch.equal(
        loaded["shared_image_embedding.positional_embedding"],
        state["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"],
    )
    assert not model.training and next(model.parameters()).dtype == torch.float32
    half, _ = load_original(TINY, torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16


def one_line_error(source: str | Path, match: str, named: str | Path | None = None) -> str:
    """The error loading `source` gives: one line, naming the file at fault (`named`)."""
    with pytest.raises(ModelLoadError) as error:
        SegmenterSpec(str(source), MaskSettings(points_per_side=1)).load()
    message = str(error.value)
    assert message.startswith(f"{named or source}: ") and "\n" not in message, message
    assert match in message, message
    return message


def test_bad_files_are_refused_in_one_line_naming_the_file(tmp_path: Path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    one_line_error(text, "not a readable PyTorch checkpoint")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(TINY.read_bytes()[: TINY.stat().st_size // 2])
    one_line_error(truncated, "not a readable PyTorch checkpoint")
    other = tmp_path / "other.pt"
    torch.save({"model": {"linear.weight": torch.zeros(2, 2)}}, other)
    one_line_error(other, "not a SAM2 checkpoint")
    nested = tmp_path / "nested.pt"
    torch.save({"model": {"a": {"b": torch.zeros(1)}}}, nested)
    one_line_error(nested, "not a SAM2 checkpoint")
    code = tmp_path / "code.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "run": print}, code)  # a pickled function
    one_line_error(code, "not a readable PyTorch checkpoint")  # weights_only: nothing runs


def test_shapes_of_no_known_size_need_their_yaml(tmp_path: Path, official):
    alone = tmp_path / "sam2_custom.pt"
    shutil.copy(TINY, alone)  # the tiny trunk is no official size, and no yaml is beside it
    message = one_line_error(alone, "match no known SAM2 size")
    assert "sam2_custom.yaml" in message
    (tmp_path / "sam2_custom.yaml").write_text(
        (GOLDEN / "tiny.yaml").read_text().replace("embed_dim: 8", "embed_dim: 16")
    )
    yaml_file = tmp_path / "sam2_custom.yaml"
    one_line_error(alone, "describes trunk width 16, stages [1, 1, 2, 1], but the", yaml_file)
    yaml_file.write_text("model: [1, 2\n")
    one_line_error(alone, "not a SAM2 yaml config", yaml_file)
    wrong = fake_state(official["configs/sam2/sam2_hiera_l.yaml"])
    wrong["image_encoder.trunk.pos_embed"] = torch.zeros(()).expand(1, 144, 14, 14)
    with pytest.raises(ModelLoadError, match="position-embedding tensors"):
        to_transformers(wrong, "large.pt")
    del wrong["sam_mask_decoder.conv_s0.weight"]
    wrong["image_encoder.trunk.pos_embed"] = torch.zeros(()).expand(1, 144, 7, 7)
    with pytest.raises(ModelLoadError, match=r"large.pt: not a large SAM2 checkpoint \(missing"):
        to_transformers(wrong, "large.pt")


def test_sources_that_name_original_checkpoints():
    assert is_original_checkpoint(str(TINY))
    assert is_original_checkpoint("facebook/sam2-hiera-large/sam2_hiera_large.pt")
    assert not is_original_checkpoint("facebook/sam2-hiera-large")
    assert not is_original_checkpoint("missing.pt")  # neither a file nor owner/name/file
    assert HUB_FILES["facebook/sam2-hiera-large"] == "sam2_hiera_large.pt"
    assert HUB_FILES["facebook/sam2.1-hiera-base-plus"] == "sam2.1_hiera_base_plus.pt"
    assert len(HUB_FILES) == 8


def fake_hub(monkeypatch, tmp_path: Path, files: dict[str, Path]) -> list[tuple]:
    """A hub cache that holds `files` of one commit; config.json is missing, as on the
    original SAM2 repos. Records every download asked for."""
    from huggingface_hub.errors import EntryNotFoundError

    snapshot = tmp_path / "snapshots" / ("c0ffee" * 6 + "c0ff")
    asked = []

    def download(repo, filename, revision=None, **kwargs):
        asked.append((repo, filename, revision))
        if filename not in files:
            raise EntryNotFoundError(f"{filename} not in {repo}")
        target = snapshot / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(files[filename], target)
        return str(target)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", download)
    return asked


def test_a_hub_repo_without_transformers_files_loads_through_its_pt(monkeypatch, tmp_path):
    asked = fake_hub(
        monkeypatch, tmp_path, {"weights/tiny.pt": TINY, "weights/tiny.yaml": GOLDEN / "tiny.yaml"}
    )
    monkeypatch.setattr(segmenter_spec, "HUB_FILES", {"owner/tiny-sam2": "weights/tiny.pt"})
    spec = SegmenterSpec("owner/tiny-sam2", MaskSettings(points_per_side=1))
    assert spec.load().masks(Image.new("RGB", (32, 24), (200, 40, 90))) is not None
    assert [name for _, name, _ in asked] == ["config.json", "weights/tiny.pt", "weights/tiny.yaml"]
    assert spec.identity.startswith("owner/tiny-sam2/weights/tiny.pt@c0ffee")
    explicit = SegmenterSpec("owner/tiny-sam2/weights/tiny.pt", MaskSettings(points_per_side=1))
    assert explicit.identity.split("|")[0] == spec.identity.split("|")[0]
    # what the pipeline names stored masks with, before loading anything
    assert sam2_checkpoint_identity("owner/tiny-sam2") == spec.identity.split("|")[0]
    local = SegmenterSpec(str(TINY), MaskSettings(points_per_side=1))
    assert sam2_checkpoint_identity(str(TINY)) == local.identity.split("|")[0]


def test_an_unreachable_hub_checkpoint_is_one_line(monkeypatch, tmp_path):
    fake_hub(monkeypatch, tmp_path, {})
    official = "facebook/sam2-hiera-large/sam2_hiera_large.pt"  # the repo's official file
    one_line_error("facebook/sam2-hiera-large", "not in the local hub cache", named=official)
    one_line_error(official, "not in the local hub cache")
