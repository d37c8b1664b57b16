"""One tiny random checkpoint per model family of the matrix (see families.py), built from
its real transformers config class and carrying its published chat template
(templates/SOURCES.md), saved and loaded back by path like a real checkpoint.

Each one is ~0.2 M parameters with a byte-level tokenizer (every digit one token), and its
saved processor keeps images small, so any input image stays fast. Random weights prove
the plumbing, never accuracy. Config constraints that fail silently or late are named in
each builder's docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from llmiqa.tiny.builders import QWEN_SPECIALS, byte_tokenizer, hub_layout, template

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


# Text width: 64 (4 heads of 16) by default; 128 (heads of 32) for vLLM, whose CPU
# attention takes heads of 32 and up. Vision towers stay as they are.
VLLM_WIDTH = 128


def _text(tokenizer, bos: str | None, eos, pad: str, width: int = 64, **extra) -> dict:
    """A 2-layer text model `width` wide, 4 heads (2 KV heads)."""
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=ids(bos) if bos else None, pad_token_id=ids(pad),
        eos_token_id=[ids(e) for e in eos] if isinstance(eos, list) else ids(eos),
    ) | extra  # fmt: skip


VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def _save(model, processor, folder: str | Path) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)


def _see_image(model, names: tuple[str, ...], scale: float, seed: int) -> None:
    """Re-draw zero-initialised gates or projections from N(0, scale²): left at zero they
    keep the image from reaching the logits, and a random model would be blind."""
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(names):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


def build_qwen3_vl(folder: str | Path, seed: int = 0, width: int = 64) -> Path:
    """Qwen3-VL: patch 16, merge 2 (32 px per visual token), interleaved M-RoPE, DeepStack.

    Silent pitfalls: the text head_dim defaults to 128 whatever the width; mrope_section
    must sum to head_dim / 2; num_position_embeddings must be a square; DeepStack indexes
    must be below the vision depth. The image processor must be told patch 16.
    """
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
    )
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    chat = template("qwen3_vl.jinja")
    tokenizer = byte_tokenizer(QWEN_SPECIALS, chat, eos="<|im_end|>")
    ids = tokenizer.convert_tokens_to_ids
    sections = [2, 3, 3] if width == 64 else [4, 6, 6]  # sums to head_dim / 2
    rope = {"rope_type": "default", "rope_theta": 5e6, "mrope_section": sections,
            "mrope_interleaved": True}  # fmt: skip
    config = Qwen3VLConfig(
        text_config=_text(tokenizer, "<|endoftext|>", "<|im_end|>", "<|endoftext|>", width,
                          head_dim=width // 4, rope_parameters=rope),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                           out_hidden_size=width, num_position_embeddings=64,
                           deepstack_visual_indexes=[1]),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": 64 * 64, "longest_edge": 128 * 128}, patch_size=16,
        merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )  # fmt: skip
    video = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2)
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=video, chat_template=chat)  # fmt: skip
    return _save(model, processor, folder)


GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>",
                  "<start_of_image>", "<end_of_image>", "<image_soft_token>")  # fmt: skip


def build_gemma3(folder: str | Path, seed: int = 0) -> Path:
    """Gemma 3: SigLIP (56 px, patch 14), average-pooled to 4 soft tokens per image.

    The processor's image_seq_length must equal mm_tokens_per_image, a square whose side
    divides image_size / patch_size. `mm_input_projection_weight` starts at zero: re-drawn.
    """
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
    )

    chat = template("gemma3.jinja")
    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
             "image_token": "<image_soft_token>"}  # fmt: skip
    tokenizer = byte_tokenizer(GEMMA_SPECIALS, chat, eos="<eos>", pad="<pad>", bos="<bos>",
                               named=named, add_bos=True)  # fmt: skip
    ids = tokenizer.convert_tokens_to_ids
    config = Gemma3Config(
        text_config=_text(tokenizer, "<bos>", ["<eos>", "<end_of_turn>"], "<pad>", head_dim=16,
                          query_pre_attn_scalar=16, sliding_window=16,
                          layer_types=["sliding_attention", "full_attention"]),
        vision_config=VISION | dict(model_type="siglip_vision_model", image_size=56,
                                    patch_size=14, vision_use_head=False),
        mm_tokens_per_image=4, boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"), image_token_index=ids("<image_soft_token>"),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    _see_image(model, ("mm_input_projection_weight",), scale=0.5, seed=seed)
    image_processor = Gemma3ImageProcessor(
        size={"height": 56, "width": 56}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                chat_template=chat, image_seq_length=4)  # fmt: skip
    return _save(model, processor, folder)


INTERNVL_SPECIALS = (*QWEN_SPECIALS, "<img>", "</img>", "<IMG_CONTEXT>", "<video>")


def build_internvl(folder: str | Path, seed: int = 0, width: int = 64) -> Path:
    """InternVL (the transformers-native -hf layout): InternViT on 56-px tiles (up to 4 plus
    a thumbnail), pixel shuffle 0.5 to 4 tokens per tile, Qwen2 text.

    The processor's image_seq_length must be (image_size / patch_size)² · ratio².
    """
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
    )
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    chat = template("internvl_hf.jinja")
    named = {"start_image_token": "<img>", "end_image_token": "</img>",
             "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}  # fmt: skip
    tokenizer = byte_tokenizer(INTERNVL_SPECIALS, chat, eos="<|im_end|>", named=named)
    config = InternVLConfig(
        text_config=_text(tokenizer, "<|endoftext|>", "<|im_end|>", "<|endoftext|>", width,
                          model_type="qwen2"),
        vision_config=VISION | dict(image_size=[56, 56], patch_size=[14, 14]),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=4,
        downsample_ratio=0.5,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).eval()
    image_processor = GotOcr2ImageProcessor(
        size={"height": 56, "width": 56}, crop_to_patches=True, min_patches=1, max_patches=4,
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )  # fmt: skip
    video = InternVLVideoProcessor(size={"height": 56, "width": 56})
    processor = InternVLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                  video_processor=video, image_seq_length=4,
                                  chat_template=chat)  # fmt: skip
    return _save(model, processor, folder)


def build_llava_onevision(folder: str | Path, seed: int = 0, width: int = 64) -> Path:
    """LLaVA-OneVision: SigLIP on 28-px crops (4 tokens each), "anyres_max_9" tiling over
    small grid pinpoints, Qwen2 text.

    num_image_tokens must be (image_size / patch_size)², the feature strategy "full" in
    both config and processor, and the pinpoints identical in both: processor and model
    count the image tokens separately.
    """
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
    )
    from transformers.models.llava_onevision.video_processing_llava_onevision import (
        LlavaOnevisionVideoProcessor,
    )

    chat = template("llava_onevision.jinja")
    specials = (*QWEN_SPECIALS[:3], "<image>", "<video>")
    tokenizer = byte_tokenizer(specials, chat, eos="<|im_end|>")
    ids = tokenizer.convert_tokens_to_ids
    pinpoints = [[28, 28], [28, 56], [56, 28], [56, 56], [28, 84], [84, 28]]
    config = LlavaOnevisionConfig(
        text_config=_text(tokenizer, "<|endoftext|>", "<|im_end|>", "<|endoftext|>", width,
                          model_type="qwen2"),
        vision_config=VISION | dict(model_type="siglip_vision_model", image_size=28,
                                    patch_size=14, vision_use_head=False),
        image_token_index=ids("<image>"), video_token_index=ids("<video>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints, vision_aspect_ratio="anyres_max_9",
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    image_processor = LlavaOnevisionImageProcessor(
        size={"height": 28, "width": 28}, image_grid_pinpoints=pinpoints,
        image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )  # fmt: skip
    video = LlavaOnevisionVideoProcessor(size={"height": 28, "width": 28})
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video,
        num_image_tokens=4, vision_feature_select_strategy="full", chat_template=chat,
        vision_aspect_ratio="anyres_max_9",
    )  # fmt: skip
    return hub_layout(_save(model, processor, folder))


IDEFICS_GRID = tuple(f"<row_{r}_col_{c}>" for r in range(1, 5) for c in range(1, 5))
IDEFICS_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<end_of_utterance>",
                    "<fake_token_around_image>", "<image>", "<global-img>", "<video>",
                    *IDEFICS_GRID)  # fmt: skip
IDEFICS_NAMED = {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                 "end_of_utterance_token": "<end_of_utterance>",
                 "global_image_token": "<global-img>"}  # fmt: skip


def build_smolvlm(folder: str | Path, seed: int = 0, version: str = "2", width: int = 64) -> Path:
    """SmolVLM2 (version "2", SmolVLM classes, needs the num2words package) or
    SmolVLM-Instruct (version "1", Idefics3 classes): a SigLIP-like tower on 32-px crops
    (up to 2 x 2 plus the whole image), pixel shuffle 2 to 4 tokens per crop, Llama text.

    image_seq_len must be (image_size / patch_size)² / scale_factor²; the grid tags
    <row_r_col_c> must be special tokens.
    """
    import transformers
    from transformers.models.smolvlm import processing_smolvlm

    if version == "2":
        names = ("SmolVLMConfig", "SmolVLMForConditionalGeneration", "SmolVLMImageProcessor",
                 "SmolVLMProcessor")  # fmt: skip
        chat = processing_smolvlm.DEFAULT_CHAT_TEMPLATE
        named = IDEFICS_NAMED | {"video_token": "<video>"}
    else:
        names = ("Idefics3Config", "Idefics3ForConditionalGeneration", "Idefics3ImageProcessor",
                 "Idefics3Processor")  # fmt: skip
        chat, named = template("idefics3_smolvlm_v1.jinja"), IDEFICS_NAMED
    config_class, model_class, image_class, processor_class = (
        getattr(transformers, name) for name in names
    )
    tokenizer = byte_tokenizer(IDEFICS_SPECIALS, chat, eos="<end_of_utterance>",
                               pad="<|endoftext|>", bos="<|im_start|>", named=named)  # fmt: skip
    config = config_class(
        text_config=_text(tokenizer, "<|im_start|>", "<end_of_utterance>", "<|endoftext|>",
                          width, model_type="llama"),
        vision_config=VISION | dict(image_size=32, patch_size=8),
        scale_factor=2, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = model_class(config).eval()
    image_processor = image_class(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
        do_image_splitting=True, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )  # fmt: skip
    parts = dict(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat)
    if version == "2":
        from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

        sizes = {"size": {"longest_edge": 32}, "max_image_size": {"longest_edge": 32}}
        parts["video_processor"] = SmolVLMVideoProcessor(**sizes)
    return _save(model, processor_class(image_seq_len=4, **parts), folder)


MISTRAL_SPECIALS = ("<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                    "[IMG]", "[IMG_BREAK]", "[IMG_END]")  # fmt: skip


def build_mistral3(folder: str | Path, seed: int = 0, width: int = 64) -> Path:
    """Mistral 3 (Mistral-Small-3.1 layout): Pixtral tower (patch 8, 2-D RoPE), patch
    merger 2 (16 px per visual token), Mistral text; PixtralProcessor (there is no
    Mistral3Processor), whose patch and merge sizes must match the model's.
    """
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        PixtralImageProcessor,
        PixtralProcessor,
    )

    chat = template("mistral_small_3_1.jinja")
    tokenizer = byte_tokenizer(MISTRAL_SPECIALS, chat, eos="</s>", pad="</s>", bos="<s>",
                               add_bos=True)  # fmt: skip
    config = Mistral3Config(
        text_config=_text(tokenizer, "<s>", "</s>", "</s>", width, model_type="mistral",
                          head_dim=width // 4, sliding_window=None, tie_word_embeddings=False),
        vision_config=VISION | dict(model_type="pixtral", image_size=64, patch_size=8),
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"), spatial_merge_size=2,
        vision_feature_layer=-1, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Mistral3ForConditionalGeneration(config).eval()
    image_processor = PixtralImageProcessor(
        size={"longest_edge": 64}, patch_size={"height": 16, "width": 16},
        image_mean=CLIP_MEAN, image_std=CLIP_STD,
    )  # fmt: skip
    processor = PixtralProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 patch_size=8, spatial_merge_size=2,
                                 chat_template=chat)  # fmt: skip
    return _save(model, processor, folder)


LLAMA_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>",
                  "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<|image|>")  # fmt: skip


def build_mllama(folder: str | Path, seed: int = 0) -> Path:
    """Llama 3.2 Vision (mllama): a tiled ViT (28-px tiles, up to 4) feeding gated
    cross-attention layers of a Llama; the image is one <|image|> token of the text.

    vision_output_dim must be hidden_size · (len(intermediate_layers_indices) + 1). The
    cross-attention gates start at zero (tanh(0) = 0): re-drawn.
    """
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessor,
        MllamaProcessor,
    )

    chat = template("llama3_2_vision.jinja")
    tokenizer = byte_tokenizer(LLAMA_SPECIALS, chat, eos="<|eot_id|>",
                               pad="<|finetune_right_pad_id|>", bos="<|begin_of_text|>",
                               add_bos=True)  # fmt: skip
    config = MllamaConfig(
        text_config=_text(tokenizer, "<|begin_of_text|>", ["<|eot_id|>", "<|end_of_text|>"],
                          "<|finetune_right_pad_id|>", num_hidden_layers=3,
                          cross_attention_layers=[1],
                          rope_parameters={"rope_type": "default", "rope_theta": 5e5}),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_global_layers=1, attention_heads=2, image_size=28,
                           patch_size=14, max_num_tiles=4, intermediate_layers_indices=[0, 1],
                           vision_output_dim=32 * 3),
        image_token_index=tokenizer.convert_tokens_to_ids("<|image|>"),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(config).eval()
    _see_image(model, ("cross_attn_attn_gate", "cross_attn_mlp_gate"), scale=1.0, seed=seed)
    image_processor = MllamaImageProcessor(size={"height": 28, "width": 28}, max_image_tiles=4,
                                           image_mean=CLIP_MEAN, image_std=CLIP_STD)  # fmt: skip
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                chat_template=chat)  # fmt: skip
    return _save(model, processor, folder)


GLM_SPECIALS = ("<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
                "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
                "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
                "<|end_of_video|>", "<|image|>", "<|video|>", "<think>", "</think>")  # fmt: skip


def build_glm4v(folder: str | Path, seed: int = 0, width: int = 64) -> Path:
    """GLM-4.1V: a Qwen2-VL-like tower (28 px per visual token, learned positions
    interpolated), GLM-4 text with partial rotary 3-D M-RoPE: mrope_section must sum to
    head_dim · partial_rotary_factor / 2, here 4.
    """
    from transformers import (
        Glm4vConfig,
        Glm4vForConditionalGeneration,
        Glm4vImageProcessor,
        Glm4vProcessor,
    )
    from transformers.models.glm4v.video_processing_glm4v import Glm4vVideoProcessor

    chat = template("glm4_1v.jinja")
    tokenizer = byte_tokenizer(GLM_SPECIALS, chat)
    ids = tokenizer.convert_tokens_to_ids
    sections = [2, 1, 1] if width == 64 else [4, 2, 2]  # sums to head_dim / 4
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": sections,
            "partial_rotary_factor": 0.5}  # fmt: skip
    config = Glm4vConfig(
        text_config=_text(tokenizer, None, ["<|endoftext|>", "<|user|>"], "<|endoftext|>",
                          width, rope_parameters=rope),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                           image_size=56, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, out_hidden_size=width),
        image_token_id=ids("<|image|>"), video_token_id=ids("<|video|>"),
        image_start_token_id=ids("<|begin_of_image|>"),
        image_end_token_id=ids("<|end_of_image|>"),
        video_start_token_id=ids("<|begin_of_video|>"),
        video_end_token_id=ids("<|end_of_video|>"),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Glm4vForConditionalGeneration(config).eval()
    image_processor = Glm4vImageProcessor(
        size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112}, patch_size=14,
        merge_size=2, temporal_patch_size=2, image_mean=CLIP_MEAN, image_std=CLIP_STD,
    )  # fmt: skip
    video = Glm4vVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Glm4vProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               video_processor=video, chat_template=chat)  # fmt: skip
    return _save(model, processor, folder)


BUILDERS: dict[str, Callable[..., Path]] = {
    "qwen3_vl": build_qwen3_vl,
    "gemma3": build_gemma3,
    "internvl": build_internvl,
    "llava_onevision": build_llava_onevision,
    "smolvlm": build_smolvlm,
    "idefics3": lambda folder, seed=0, **kw: build_smolvlm(folder, seed, version="1", **kw),
    "mistral3": build_mistral3,
    "mllama": build_mllama,
    "glm4v": build_glm4v,
}
