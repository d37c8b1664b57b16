"""Original SAM2 checkpoints (the `.pt` files of facebookresearch/sam2) as transformers' Sam2Model.

The original release ships a pickled `{"model": state_dict}` per model and a hydra yaml per
architecture; the authors of Dog-IQA used `sam2_hiera_large.pt`. This module reads such a file
without the sam2 package, hydra or remote code: the architecture is read off the tensors (trunk
width, blocks per stage, neck and decoder widths, 2.0 vs 2.1), the few settings tensors cannot
show (attention heads, window sizes, global-attention blocks) come from the official configs, or
from the model's own yaml beside the file for a non-official size, and the keys are renamed to
transformers' layout. Only the image path is kept: the video-memory tensors are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from llmiqa.errors import ModelLoadError, one_line

# Official trunks, from the sam2 package's configs (sam2/ and sam2.1/ agree on every image-path
# setting): (embed_dim, blocks per stage) -> (name, heads of stage 1, global-attention blocks,
# window size per stage, background size of the position embedding).
OFFICIAL_TRUNKS: dict[tuple[int, tuple[int, ...]], tuple[str, int, tuple, tuple, tuple]] = {
    (96, (1, 2, 7, 2)): ("tiny", 1, (5, 7, 9), (8, 4, 14, 7), (7, 7)),
    (96, (1, 2, 11, 2)): ("small", 1, (7, 10, 13), (8, 4, 14, 7), (7, 7)),
    (112, (2, 3, 16, 3)): ("base_plus", 2, (12, 16, 20), (8, 4, 14, 7), (14, 14)),
    (144, (2, 6, 36, 4)): ("large", 2, (23, 33, 43), (8, 4, 16, 8), (7, 7)),
}

# Hard-coded in sam2's SAM2Base._build_sam_heads, whatever the yaml says.
DECODER_HEADS = 8
MASK_INPUT_CHANNELS = 16
IMAGE_SIZE = 1024
BACKBONE_STRIDE = 16

# Tensors of the video path (memory attention and encoder, object pointers): unused on images.
_VIDEO_ONLY = re.compile(
    r"^(memory_attention|memory_encoder|obj_ptr_proj|obj_ptr_tpos_proj|mask_downsample)\.|"
    r"^(maskmem_tpos_enc|no_mem_pos_enc|no_obj_ptr|no_obj_embed_spatial)$"
)

# Original name -> transformers name, applied in order (each a regex substitution).
_RENAMES = [
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
    (r"patch_embed\.proj\.", "patch_embed.projection."),
    (r"(backbone\.blocks\.\d+)\.norm(\d)\.", r"\1.layer_norm\2."),
    (r"(backbone\.blocks\.\d+\.mlp)\.layers\.0\.", r"\1.proj_in."),
    (r"(backbone\.blocks\.\d+\.mlp)\.layers\.1\.", r"\1.proj_out."),
    (r"^sam_prompt_encoder\.", "prompt_encoder."),
    (r"pe_layer\.positional_encoding_gaussian_matrix$", "shared_embedding.positional_embedding"),
    (r"mask_downscaling\.0\.", "mask_embed.conv1."),
    (r"mask_downscaling\.1\.", "mask_embed.layer_norm1."),
    (r"mask_downscaling\.3\.", "mask_embed.conv2."),
    (r"mask_downscaling\.4\.", "mask_embed.layer_norm2."),
    (r"mask_downscaling\.6\.", "mask_embed.conv3."),
    (r"^sam_mask_decoder\.", "mask_decoder."),
    (r"(attn\w*)\.out_proj\.", r"\1.o_proj."),
    (r"(transformer\.layers\.\d+)\.norm(\d)\.", r"\1.layer_norm\2."),
    (r"(transformer\.layers\.\d+\.mlp)\.layers\.0\.", r"\1.proj_in."),
    (r"(transformer\.layers\.\d+\.mlp)\.layers\.1\.", r"\1.proj_out."),
    (r"transformer\.norm_final_attn\.", "transformer.layer_norm_final_attn."),
    (r"output_upscaling\.0\.", "upscale_conv1."),
    (r"output_upscaling\.1\.", "upscale_layer_norm."),
    (r"output_upscaling\.3\.", "upscale_conv2."),
    # three-layer MLP heads: first, middle, last layer
    (r"(mlps\.\d+|_head)\.layers\.0\.", r"\1.proj_in."),
    (r"(mlps\.\d+|_head)\.layers\.1\.", r"\1.layers.0."),
    (r"(mlps\.\d+|_head)\.layers\.2\.", r"\1.proj_out."),
]


@dataclass(frozen=True)
class Architecture:
    """What a SAM2 checkpoint is, as far as the image path cares."""

    name: str  # tiny, small, base_plus, large, or "custom" (settings from a yaml)
    version: str  # "2.0" or "2.1" (2.1 adds video-memory tensors only)
    embed_dim: int
    stages: tuple[int, ...]
    num_heads: int
    global_att_blocks: tuple[int, ...]
    window_spec: tuple[int, ...]
    window_pos_embed_bkg: tuple[int, ...]
    neck_channels: tuple[int, ...]  # backbone_channel_list: deepest stage first
    d_model: int  # neck, prompt encoder and mask decoder width
    decoder_mlp_dim: int
    decoder_layers: int
    iou_head_hidden_dim: int
    num_multimask_outputs: int

    def sam2_config(self):
        """The transformers Sam2Config of this architecture."""
        from transformers import Sam2Config

        heads = [self.num_heads * 2**stage for stage in range(len(self.stages))]
        backbone = dict(
            model_type="sam2_hiera_det_model",
            hidden_size=self.embed_dim,
            num_attention_heads=self.num_heads,
            blocks_per_stage=list(self.stages),
            embed_dim_per_stage=[self.embed_dim * 2**stage for stage in range(len(self.stages))],
            num_attention_heads_per_stage=heads,
            window_size_per_stage=list(self.window_spec),
            global_attention_blocks=list(self.global_att_blocks),
            window_positional_embedding_background_size=list(self.window_pos_embed_bkg),
        )
        return Sam2Config(
            vision_config=dict(
                backbone_config=backbone,
                backbone_channel_list=list(self.neck_channels),
                fpn_hidden_size=self.d_model,
            ),
            prompt_encoder_config=dict(
                hidden_size=self.d_model,
                image_size=IMAGE_SIZE,
                patch_size=BACKBONE_STRIDE,
                mask_input_channels=MASK_INPUT_CHANNELS,
            ),
            mask_decoder_config=dict(
                hidden_size=self.d_model,
                mlp_dim=self.decoder_mlp_dim,
                num_hidden_layers=self.decoder_layers,
                num_attention_heads=DECODER_HEADS,
                iou_head_hidden_dim=self.iou_head_hidden_dim,
                num_multimask_outputs=self.num_multimask_outputs,
            ),
        )


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict of an original SAM2 `.pt` (tensors only, no code run)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle, not a file, ...
        reason = one_line(error)
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise ModelLoadError(f"{path}: not a SAM2 checkpoint (no tensors under 'model')")
    if "image_encoder.trunk.patch_embed.proj.weight" not in state:
        raise ModelLoadError(f"{path}: not a SAM2 checkpoint (no image_encoder.trunk tensors)")
    return state


def infer_architecture(state: dict[str, torch.Tensor], path: str | Path) -> Architecture:
    """Read the architecture off the tensors; heads, windows and global blocks from the official
    config of that size, or from `<file>.yaml` beside a checkpoint of another size."""
    try:
        trunk = _trunk_shape(state)
        decoder = _decoder_shape(state)
    except (KeyError, IndexError, ValueError) as error:
        raise ModelLoadError(
            f"{path}: not a SAM2 checkpoint (tensors of an unexpected layout: {one_line(error)})"
        ) from None
    embed_dim, stages = trunk["embed_dim"], trunk["stages"]
    yaml_file = Path(path).with_suffix(".yaml")
    official = OFFICIAL_TRUNKS.get((embed_dim, stages))
    if yaml_file.is_file():  # the model's own config wins
        name = official[0] if official else "custom"
        settings = _yaml_trunk(yaml_file, embed_dim, stages)
    elif official:
        name, *settings = official
    else:
        raise ModelLoadError(
            f"{path}: tensors match no known SAM2 size (trunk width {embed_dim}, blocks per stage "
            f"{list(stages)}); put the yaml config it was built from beside it as {yaml_file.name}"
        )
    num_heads, global_blocks, window_spec, background = settings
    if tuple(background) != trunk["background"] or window_spec[0] != trunk["window"]:
        raise ModelLoadError(
            f"{path}: position-embedding tensors ({trunk['background']}, window {trunk['window']}) "
            f"do not match the {name} SAM2 config ({tuple(background)}, window {window_spec[0]})"
        )
    version = "2.1" if "no_obj_embed_spatial" in state else "2.0"
    return Architecture(
        name=name,
        version=version,
        embed_dim=embed_dim,
        stages=stages,
        num_heads=num_heads,
        global_att_blocks=tuple(global_blocks),
        window_spec=tuple(window_spec),
        window_pos_embed_bkg=tuple(background),
        **decoder,
    )


def _trunk_shape(state: dict[str, torch.Tensor]) -> dict:
    prefix = "image_encoder.trunk."
    embed_dim = state[prefix + "patch_embed.proj.weight"].shape[0]
    blocks = {int(m.group(1)) for k in state if (m := re.match(rf"{prefix}blocks\.(\d+)\.", k))}
    if blocks != set(range(len(blocks))):
        raise ValueError(f"trunk blocks {sorted(blocks)} are not numbered 0..n-1")
    # The first block of every later stage projects to the wider stage: it alone has `proj`.
    starts = [0] + [i for i in sorted(blocks) if f"{prefix}blocks.{i}.proj.weight" in state]
    stages = tuple(b - a for a, b in zip(starts, [*starts[1:], len(blocks)], strict=True))
    return {
        "embed_dim": embed_dim,
        "stages": stages,
        "background": tuple(state[prefix + "pos_embed"].shape[-2:]),
        "window": state[prefix + "pos_embed_window"].shape[-1],
    }


def _decoder_shape(state: dict[str, torch.Tensor]) -> dict:
    neck = "image_encoder.neck.convs.{}.conv.weight"
    levels = sum(1 for k in state if re.fullmatch(neck.format(r"\d+"), k))
    decoder = "sam_mask_decoder."
    layers = {int(m.group(1)) for k in state if (m := re.match(r".*transformer\.layers\.(\d+)", k))}
    return {
        "neck_channels": tuple(state[neck.format(i)].shape[1] for i in range(levels)),
        "d_model": state[neck.format(0)].shape[0],
        "decoder_mlp_dim": state[decoder + "transformer.layers.0.mlp.layers.0.weight"].shape[0],
        "decoder_layers": len(layers),
        "iou_head_hidden_dim": state[decoder + "iou_prediction_head.layers.0.weight"].shape[0],
        "num_multimask_outputs": state[decoder + "mask_tokens.weight"].shape[0] - 1,
    }


def _yaml_trunk(file: Path, embed_dim: int, stages: tuple[int, ...]) -> tuple:
    """Heads, global blocks, windows and background size from a sam2 yaml (plain YAML; the hydra
    `_target_` keys are ignored), after checking it describes these tensors."""
    import yaml

    try:
        model = yaml.safe_load(file.read_text())["model"]
        trunk = model["image_encoder"]["trunk"]
    except Exception as error:
        raise ModelLoadError(f"{file}: not a SAM2 yaml config ({one_line(error)})") from None
    if trunk.get("embed_dim") != embed_dim or tuple(trunk.get("stages", ())) != stages:
        raise ModelLoadError(
            f"{file}: describes trunk width {trunk.get('embed_dim')}, stages "
            f"{trunk.get('stages')}, but the checkpoint has {embed_dim}, {list(stages)}"
        )
    if model.get("image_size", IMAGE_SIZE) != IMAGE_SIZE:
        raise ModelLoadError(f"{file}: only {IMAGE_SIZE}-pixel SAM2 models are supported")
    # Defaults of sam2's Hiera class, for keys the yaml leaves out.
    return (
        trunk.get("num_heads", 1),
        tuple(trunk.get("global_att_blocks", (12, 16, 20))),
        tuple(trunk.get("window_spec", (8, 4, 14, 7))),
        tuple(trunk.get("window_pos_embed_bkg_spatial_size", (14, 14))),
    )


def convert_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original tensor names -> transformers' Sam2Model names (video-only tensors dropped)."""
    out = {}
    points = {}
    for key, value in state.items():
        if _VIDEO_ONLY.search(key):
            continue
        if m := re.fullmatch(r"sam_prompt_encoder\.point_embeddings\.(\d+)\.weight", key):
            points[int(m.group(1))] = value  # four (1, C) embeddings -> one (4, C) table
            continue
        name = key
        for pattern, replacement in _RENAMES:
            name = re.sub(pattern, replacement, name)
        out[name] = value
    if points:
        out["prompt_encoder.point_embed.weight"] = torch.cat([points[i] for i in sorted(points)])
    gaussian = out.get("prompt_encoder.shared_embedding.positional_embedding")
    if gaussian is not None:  # the prompt encoder and the image-wide encoding share it
        out["shared_image_embedding.positional_embedding"] = gaussian
    return out


def load_original(path: str | Path, dtype: torch.dtype = torch.float32):
    """An original SAM2 `.pt` as an eval-mode transformers Sam2Model, and its Architecture."""
    return to_transformers(read_checkpoint(path), path, dtype)


def to_transformers(
    state: dict[str, torch.Tensor], path: str | Path, dtype: torch.dtype = torch.float32
):
    """An original state dict as an eval-mode Sam2Model (its tensors assigned, not copied
    into freshly initialised ones), and its Architecture; `path` names it in errors."""
    from transformers import Sam2Model

    arch = infer_architecture(state, path)
    weights = convert_state(state)
    with torch.device("meta"):
        model = Sam2Model(arch.sam2_config())
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        found = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        problems = [
            f"{label} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
            for label, names in found
            if names
        ]
        raise ModelLoadError(f"{path}: not a {arch.name} SAM2 checkpoint ({'; '.join(problems)})")
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, assign=True)
    return model.eval(), arch
