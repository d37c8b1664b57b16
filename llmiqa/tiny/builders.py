"""Tiny random checkpoints built offline from configs, for tests and benchmarks.

They are saved with save_pretrained and loaded back by path through the same code users
run on real checkpoints. Random weights prove the plumbing, never accuracy.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from llmiqa.scoring.knobs import flags_of
from llmiqa.segmenters.masks import MaskSettings

QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

OWL3_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # mPLUG-Owl3's (Qwen2's)

TEMPLATES = Path(__file__).resolve().parent / "templates"


def template(name: str) -> str:
    """A published chat template (where each comes from: templates/SOURCES.md)."""
    return (TEMPLATES / name).read_text()


# Qwen2-VL's and Qwen2.5-VL's own template: "You are a helpful assistant." when no system
# turn is given, the image as <|vision_start|><|image_pad|><|vision_end|>.
QWEN_TEMPLATE = template("qwen2_vl.jinja")

# The llava-1.5-hf template: system text bare, then "USER: <image>\n... ASSISTANT:".
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for c in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}"
    "{% endfor %}{% for c in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ c['text'] + ' ' }}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


# Words the training-free readouts read (Q-Align's five levels, Q-Bench's two), each one
# token with its leading space, as in real BPE vocabularies; every other word is spelled
# byte by byte.
WORDS = ("excellent", "good", "fair", "poor", "bad")


def byte_tokenizer(
    specials: tuple[str, ...],
    template: str,
    drop_digits: bool = False,
    *,
    eos: str | None = None,
    pad: str | None = None,
    bos: str | None = None,
    named: dict[str, str] | None = None,
    add_bos: bool = False,
) -> PreTrainedTokenizerFast:
    """Byte-level BPE whose only merges spell WORDS: digits are single tokens.

    `drop_digits` removes the digit bytes from the vocabulary (they become the unknown
    token) to build the "tokenizer lacks single-digit tokens" failure case. `eos` and `pad`
    default to the first special token. `named` become tokenizer attributes that
    processors read (tokenizer.boi_token, ...); `add_bos` prepends `bos` to every encoding
    with special tokens, as the real Gemma, Llama 3 and Mistral tokenizers do.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    if drop_digits:
        alphabet = [c for c in alphabet if not c.isdigit()]
    vocab = {c: i for i, c in enumerate(["<unk>", *alphabet])}
    merges = []
    for word in WORDS:
        spelled = "\u0120"  # the byte-level space
        for char in word:
            merges.append((spelled, char))
            spelled += char
            vocab.setdefault(spelled, len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    named = named or {}
    tokens = {"eos_token": eos or specials[0], "pad_token": pad or specials[0]}
    if bos is not None:
        tokens["bos_token"] = bos
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        add_bos_token=add_bos,
        extra_special_tokens=named,
        **tokens,
    )
    everything = dict.fromkeys([*specials, *named.values(), *tokens.values()])
    tokenizer.add_special_tokens({"additional_special_tokens": list(everything)})
    tokenizer.chat_template = template
    return tokenizer


def _special_ids(tokenizer: PreTrainedTokenizerFast, names: tuple[str, ...]) -> dict[str, int]:
    return {name: tokenizer.convert_tokens_to_ids(name) for name in names}


# Qwen2-VL dimensions by size. "tiny" (~0.2 M parameters) is the quickest; vLLM's CPU
# attention needs head sizes of 64 and up, which "vllm" (~2 M) has, text and vision
# alike; "bench" (~40 M) is big enough that the forward pass dominates a rating.
QWEN2_VL_SIZES: dict[str, dict[str, object]] = {
    "tiny": dict(hidden=64, intermediate=128, layers=2, heads=4, mrope=[2, 3, 3],
                 embed=32, vision_heads=2, depth=2, max_side=112),
    "vllm": dict(hidden=256, intermediate=512, layers=2, heads=4, mrope=[8, 12, 12],
                 embed=128, vision_heads=2, depth=2, max_side=112),
    "bench": dict(hidden=512, intermediate=2048, layers=9, heads=8, mrope=[8, 12, 12],
                  embed=256, vision_heads=4, depth=8, max_side=448),
}  # fmt: skip


def build_qwen2_vl(
    folder: str | Path,
    seed: int = 0,
    version: str = "2",
    drop_digits: bool = False,
    size: str = "tiny",
) -> Path:
    """A random Qwen2-VL (version "2") or Qwen2.5-VL (version "2.5") of a QWEN2_VL_SIZES size.

    Images are capped at max_side² pixels by the saved processor, so the tiny sizes stay fast.
    """
    dims = QWEN2_VL_SIZES[size]
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tokenizer = byte_tokenizer(QWEN_SPECIALS, QWEN_TEMPLATE, drop_digits)
    ids = _special_ids(tokenizer, QWEN_SPECIALS)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=dims["hidden"],
        intermediate_size=dims["intermediate"],
        num_hidden_layers=dims["layers"],
        num_attention_heads=dims["heads"],
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": dims["mrope"],
        },
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=dims["depth"],
        hidden_size=dims["hidden"],
        num_heads=dims["vision_heads"],
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    tokens = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    if version == "2":
        config = Qwen2VLConfig(
            text_config=text,
            vision_config={**vision, "embed_dim": dims["embed"], "mlp_ratio": 2},
            **tokens,
        )
        model_class = Qwen2VLForConditionalGeneration
    elif version == "2.5":
        vision = {
            **vision,
            "intermediate_size": dims["hidden"],
            "out_hidden_size": dims["hidden"],
            "window_size": 56,
        }
        config = Qwen2_5_VLConfig(
            text_config=text, vision_config={**vision, "fullatt_block_indexes": [1]}, **tokens
        )
        model_class = Qwen2_5_VLForConditionalGeneration
    else:
        raise ValueError(f"unknown Qwen-VL version {version!r}")
    torch.manual_seed(seed)
    model = model_class(config).eval()
    # Small images keep the tiny model fast; the processor still takes any size.
    side = dims["max_side"]
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=side * side)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN_TEMPLATE,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)


def hub_layout(folder: Path) -> Path:
    """The checkpoint's CLIP/SigLIP tower weights under `vision_tower.vision_model.`, as
    the hub's LLaVA checkpoints have them: transformers 5 saves them one level up (and
    reads both), vLLM 0.32 reads only this layout."""
    from safetensors.torch import load_file, save_file

    for file in folder.glob("*.safetensors"):
        tensors = load_file(file)
        renamed = {
            "vision_tower.vision_model." + key.removeprefix("vision_tower.")
            if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model.")
            else key: value
            for key, value in tensors.items()
        }
        save_file(renamed, file, metadata={"format": "pt"})
    return folder


def build_llava(folder: str | Path, seed: int = 0, width: int = 64) -> Path:
    """A tiny LLaVA: CLIP vision tower (56 px, patch 14) + a two-layer Llama `width` wide
    (4 heads; 128 gives the heads of 32 vLLM's CPU attention needs)."""
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    specials = ("</s>", "<image>", "<s>")
    tokenizer = byte_tokenizer(specials, LLAVA_TEMPLATE)
    ids = _special_ids(tokenizer, specials)
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
        projection_dim=32,
    )
    text = dict(
        model_type="llama",
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["</s>"],
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=ids["<image>"],
        vision_feature_layer=-2,
        image_seq_length=16,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_TEMPLATE,
        num_additional_image_tokens=1,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return hub_layout(Path(folder))


def retokenized_mplug_owl3(source: str | Path, folder: str | Path) -> Path:
    """A copy of an official-format mPLUG-Owl3 checkpoint (weights and config as they are)
    with the byte-level tokenizer above: the answer words are single tokens there, so
    Q-Align's and Q-Bench's readouts can tell them apart (the golden tiny checkpoint's own
    tokenizer starts four of them with the same token)."""
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for file in Path(source).iterdir():
        if file.suffix == ".safetensors" or file.name in ("config.json", "generation_config.json"):
            shutil.copy(file, folder / file.name)
    byte_tokenizer(OWL3_SPECIALS, QWEN_TEMPLATE, eos="<|im_end|>").save_pretrained(folder)
    return folder


def build_mplug_owl3(folder: str | Path, seed: int = 0) -> Path:
    """A random mPLUG-Owl3 (the paper's MLLM) in the official checkpoint format, the
    dimensions of the golden tiny one (a 4-layer Qwen2 64 wide, hyper-attention in layers
    1 and 3, a 3-layer SigLIP at 384 px) and the byte-level tokenizer above; llmiqa's own
    port loads it as a real checkpoint (no remote code, no hub)."""
    import json

    from safetensors.torch import save_file

    from llmiqa.models.mplug_owl3 import MplugOwl3Config, MplugOwl3Model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = byte_tokenizer(OWL3_SPECIALS, QWEN_TEMPLATE, eos="<|im_end|>")
    ids = _special_ids(tokenizer, OWL3_SPECIALS)
    config = {
        "architectures": ["mPLUGOwl3Model"],
        "model_type": "mplugowl3",
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hyper_layers": [1, 3],
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": False,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "torch_dtype": "float32",
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_hidden_layers": 3,
            "image_size": 384,
            "patch_size": 14,
        },
    }
    torch.manual_seed(seed)
    model = MplugOwl3Model(MplugOwl3Config.from_dict(config)).eval()
    weights = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save_pretrained(folder)
    return folder


def build_sam2(folder: str | Path, seed: int = 0, image_size: int = 1024) -> Path:
    """A ~0.1 M-parameter SAM2: by default the real geometry (1024 px input, 256x256 mask
    logits); `image_size=256` (64x64 logits) embeds an image about 4x faster, for tests
    that exercise the pipeline rather than the geometry.

    Initial weights 15x the default spread make its mask logits and IoU predictions vary (at
    the default every logit is about 1e-5 and every IoU 0.5), so thresholds have something
    to cut. Random all the same: it passes no default threshold.
    """
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor

    real = image_size == 1024
    side = image_size // 4  # the trunk's first feature map
    backbone = dict(
        model_type="sam2_hiera_det_model",
        hidden_size=8,
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        global_attention_blocks=[3],  # the second block of stage 3: never a stage's first
        image_size=[image_size, image_size],
        window_size_per_stage=[8, 4, 14, 7] if real else [8, 4, 4, 4],
        window_positional_embedding_background_size=[7, 7] if real else [4, 4],
    )
    config = Sam2Config(
        vision_config=dict(
            backbone_config=backbone,
            backbone_channel_list=[64, 32, 16, 8],
            backbone_feature_sizes=[[side, side], [side // 2, side // 2], [side // 4, side // 4]],
            fpn_hidden_size=32,
        ),
        prompt_encoder_config=dict(hidden_size=32, image_size=image_size),
        mask_decoder_config=dict(
            hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ),
        initializer_range=0.3,
    )
    torch.manual_seed(seed)
    model = Sam2Model(config).eval()
    model.save_pretrained(folder)
    size = {"height": image_size, "width": image_size}
    Sam2Processor(image_processor=Sam2ImageProcessor(size=size)).save_pretrained(folder)
    return Path(folder)


# A random SAM2 passes no real threshold: these settings keep its candidates (4 x 4
# prompts, to stay quick), so that the whole pipeline, regions included, runs on tiny models.
PERMISSIVE_MASKS = MaskSettings(pred_iou_thresh=0.0, stability_score_thresh=0.0, points_per_side=4)
PERMISSIVE_MASK_FLAGS = " ".join(flags_of(PERMISSIVE_MASKS))
