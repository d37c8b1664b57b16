"""Published configs of real checkpoints, as numbers (no download): for parameter counts
(model_sizes.py) and real-size random models (gpu.py). Each dict holds the values of the
checkpoint's config.json that change the parameter count or the compute; the rest keep
the transformers defaults. Sources: the checkpoints' config.json as published on the hub,
read through stored public copies.
"""

from __future__ import annotations

SIGLIP_SO400M = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                     num_hidden_layers=27, num_attention_heads=16, patch_size=14,
                     vision_use_head=False)  # fmt: skip
QWEN2_7B = dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944,
                num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                tie_word_embeddings=False)  # fmt: skip
QWEN2_VL_TEXT = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                     num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                     rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                      "mrope_section": [16, 24, 24]})  # fmt: skip

# name: (config class, model class, config keyword arguments)
CONFIGS: dict[str, tuple[str, str, dict]] = {
    "Qwen/Qwen2-VL-7B-Instruct": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", dict(
        text_config=QWEN2_VL_TEXT,
        vision_config=dict(depth=32, embed_dim=1280, mlp_ratio=4, num_heads=16, hidden_size=3584,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        tie_word_embeddings=False)),
    "Qwen/Qwen2.5-VL-7B-Instruct": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", dict(
        text_config=QWEN2_VL_TEXT,
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                           out_hidden_size=3584, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31]),
        tie_word_embeddings=False)),
    "Qwen/Qwen3-VL-8B-Instruct": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration", dict(
        text_config=dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                         num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                         head_dim=128,
                         rope_parameters={"rope_type": "default", "rope_theta": 5e6,
                                          "mrope_section": [24, 20, 20],
                                          "mrope_interleaved": True}),
        vision_config=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16,
                           patch_size=16, out_hidden_size=4096, num_position_embeddings=2304,
                           deepstack_visual_indexes=[8, 16, 24]),
        tie_word_embeddings=False)),
    "google/gemma-3-12b-it": ("Gemma3Config", "Gemma3ForConditionalGeneration", dict(
        text_config=dict(vocab_size=262208, hidden_size=3840, intermediate_size=15360,
                         num_hidden_layers=48, num_attention_heads=16, num_key_value_heads=8,
                         head_dim=256),
        vision_config={**SIGLIP_SO400M, "image_size": 896}, mm_tokens_per_image=256)),
    "OpenGVLab/InternVL3-8B-hf": ("InternVLConfig", "InternVLForConditionalGeneration", dict(
        text_config={**QWEN2_7B, "vocab_size": 151674},
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                           num_attention_heads=16, image_size=[448, 448], patch_size=[14, 14]),
        downsample_ratio=0.5, tie_word_embeddings=False)),
    "llava-hf/llava-1.5-7b-hf": ("LlavaConfig", "LlavaForConditionalGeneration", dict(
        text_config=dict(model_type="llama", vocab_size=32064, hidden_size=4096,
                         intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32),
        vision_config=dict(model_type="clip_vision_model", hidden_size=1024,
                           intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=336, patch_size=14, projection_dim=768),
        vision_feature_layer=-2)),
    "llava-hf/llava-onevision-qwen2-7b-ov-hf": (
        "LlavaOnevisionConfig", "LlavaOnevisionForConditionalGeneration", dict(
            text_config={**QWEN2_7B, "vocab_size": 152128},
            vision_config={**SIGLIP_SO400M, "num_hidden_layers": 26, "image_size": 384})),
    "HuggingFaceTB/SmolVLM2-2.2B-Instruct": (
        "SmolVLMConfig", "SmolVLMForConditionalGeneration", dict(
        text_config=dict(model_type="llama", vocab_size=49280, hidden_size=2048,
                         intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                         num_key_value_heads=32, tie_word_embeddings=False),
        vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                           num_attention_heads=16, image_size=384, patch_size=14),
        scale_factor=3, tie_word_embeddings=False)),
    "HuggingFaceTB/SmolVLM-Instruct": ("Idefics3Config", "Idefics3ForConditionalGeneration", dict(
        text_config=dict(model_type="llama", vocab_size=49155, hidden_size=2048,
                         intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                         num_key_value_heads=32, tie_word_embeddings=False),
        vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                           num_attention_heads=16, image_size=384, patch_size=14),
        scale_factor=3, tie_word_embeddings=False)),
    "mistralai/Mistral-Small-3.1-24B-Instruct-2503": (
        "Mistral3Config", "Mistral3ForConditionalGeneration", dict(
            text_config=dict(model_type="mistral", vocab_size=131072, hidden_size=5120,
                             intermediate_size=32768, num_hidden_layers=40,
                             num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                             sliding_window=None, tie_word_embeddings=False),
            vision_config=dict(model_type="pixtral", hidden_size=1024, intermediate_size=4096,
                               num_hidden_layers=24, num_attention_heads=16, patch_size=14,
                               image_size=1540),
            spatial_merge_size=2, multimodal_projector_bias=False, tie_word_embeddings=False)),
    "meta-llama/Llama-3.2-11B-Vision-Instruct": (
        "MllamaConfig", "MllamaForConditionalGeneration", dict(
        text_config=dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=40, num_attention_heads=32, num_key_value_heads=8,
                         cross_attention_layers=[3, 8, 13, 18, 23, 28, 33, 38],
                         tie_word_embeddings=False),
        vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                           num_global_layers=8, attention_heads=16, image_size=560,
                           patch_size=14, max_num_tiles=4, vision_output_dim=7680,
                           intermediate_layers_indices=[3, 7, 15, 23, 30]))),
    "zai-org/GLM-4.1V-9B-Thinking": ("Glm4vConfig", "Glm4vForConditionalGeneration", dict(
        text_config=dict(vocab_size=151552, hidden_size=4096, intermediate_size=13696,
                         num_hidden_layers=40, num_attention_heads=32, num_key_value_heads=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [8, 12, 12],
                                          "partial_rotary_factor": 0.5}),
        vision_config=dict(depth=24, hidden_size=1536, intermediate_size=13696, num_heads=12,
                           out_hidden_size=4096, image_size=336, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        tie_word_embeddings=False)),
}  # fmt: skip

# mPLUG-Owl3-7B-240728 through llmiqa's port: Qwen2-7B with 4 hyper layers, SigLIP so400m.
OWL3_7B = dict(vocab_size=151851, hidden_size=3584, intermediate_size=18944,
               num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
               tie_word_embeddings=False)  # fmt: skip

# SAM2.1 hiera-large (facebook/sam2.1-hiera-large) as transformers' Sam2Config.
SAM2_LARGE = dict(vision_config=dict(backbone_config=dict(
    model_type="sam2_hiera_det_model", hidden_size=144, blocks_per_stage=[2, 6, 36, 4],
    embed_dim_per_stage=[144, 288, 576, 1152], num_attention_heads_per_stage=[2, 4, 8, 16],
    global_attention_blocks=[23, 33, 43], window_size_per_stage=[8, 4, 16, 8],
    window_positional_embedding_background_size=[7, 7]),
    backbone_channel_list=[1152, 576, 288, 144]))  # fmt: skip


def build(name: str, device: str = "meta", dtype=None):
    """A random model of that checkpoint's size (weights on `device`, uninitialised on
    meta)."""
    import torch
    import transformers

    if name == "mPLUG/mPLUG-Owl3-7B-240728":
        from llmiqa.models.mplug_owl3.configuration import MplugOwl3Config
        from llmiqa.models.mplug_owl3.modeling import MplugOwl3Model

        config, model_class = MplugOwl3Config(**OWL3_7B), MplugOwl3Model
    else:
        config_name, model_name, kwargs = CONFIGS[name]
        config = getattr(transformers, config_name)(**kwargs)
        model_class = getattr(transformers, model_name)
    with torch.device(device):
        model = model_class(config) if dtype is None else model_class(config).to(dtype)
    return model


NAMES = (*CONFIGS, "mPLUG/mPLUG-Owl3-7B-240728")
