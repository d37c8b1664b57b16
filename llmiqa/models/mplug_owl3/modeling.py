"""mPLUG-Owl3 (7B-240728 code family) in plain PyTorch, loading the official checkpoints.

SigLIP tower (output of its second-to-last layer) -> Linear projector -> Qwen2 whose
"hyper" layers add a gated cross-attention from the text to the image tokens. Written
from the documented behaviour; building blocks come from transformers' Qwen2/SigLIP code.
Attention runs through torch SDPA and nothing assumes a dtype, so the same code serves
float32 on a CPU and bfloat16/float16 on a GPU.

A batch is left-padded; `media_offset` (B, L, 2) says which images each token sees: the
flat images [col0, col1) of `pixel_values`, where col0 is the sample's first image and
col1 - col0 the number of its image markers that start before the token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from transformers import SiglipVisionConfig
from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP, Qwen2RMSNorm, repeat_kv, rotate_half
from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

from llmiqa.errors import ModelLoadError
from llmiqa.loading.checkpoints import resolve
from llmiqa.models.mplug_owl3.configuration import (
    CHECKPOINT_FILES,
    MplugOwl3Config,
    load_config,
)


@dataclass
class MplugOwl3Output:
    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings, layers..., final norm


@dataclass
class Media:
    """Each sample's images as the hyper layers attend to them (computed once per forward)."""

    embeds: torch.Tensor  # (B, S, hidden): the sample's images' tokens, padded to the same S
    cos: torch.Tensor  # (B, S, head_dim) float32 MI-RoPE angles of each image token
    sin: torch.Tensor
    mask: torch.Tensor  # (B, 1, L, S) bool: which image tokens each text token may attend to
    active: torch.Tensor  # (B, 1, L, 1) bool: tokens that see at least one image


def rotary_angles(
    positions: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (float32) of the rotate-half RoPE that Qwen2 uses, at integer positions."""
    exponent = torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim
    freqs = positions[..., None].float() * (1.0 / theta**exponent)
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply RoPE to (B, heads, S, D) with (B, S, D) angles."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


class SiglipPatchEmbeddings(nn.Module):
    """Patches plus learned positions (crops are always image_size, so no interpolation)."""

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        size = config.patch_size
        self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size, size, size)
        patches = (config.image_size // size) ** 2
        self.position_embedding = nn.Embedding(patches, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        return patches.flatten(2).transpose(1, 2) + self.position_embedding.weight


class SiglipPenultimateEncoder(nn.Module):
    """The SigLIP encoder without its last layer: mPLUG-Owl3 reads hidden_states[-2]."""

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        layers = config.num_hidden_layers - 1
        self.layers = nn.ModuleList(SiglipEncoderLayer(config) for _ in range(layers))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden = layer(hidden, None)
        return hidden


class SiglipTower(nn.Module):
    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        self.embeddings = SiglipPatchEmbeddings(config)
        self.encoder = SiglipPenultimateEncoder(config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embeddings(pixel_values))


class HyperQwen2Attention(nn.Module):
    """Qwen2 self-attention; in hyper layers, mixed by a per-token gate with image attention."""

    def __init__(self, config: MplugOwl3Config, hyper: bool) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = config.hidden_size // self.heads
        hidden, kv_width = config.hidden_size, self.kv_heads * self.head_dim
        self.q_proj = nn.Linear(hidden, self.heads * self.head_dim)
        self.k_proj = nn.Linear(hidden, kv_width)
        self.v_proj = nn.Linear(hidden, kv_width)
        self.o_proj = nn.Linear(self.heads * self.head_dim, hidden, bias=False)
        self.hyper = hyper
        if hyper:
            self.v_kv_proj = nn.Linear(hidden, 2 * kv_width)
            self.gate_proj = nn.Sequential(nn.Linear(self.head_dim, self.head_dim), nn.Sigmoid())

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        return x.unflatten(-1, (heads, self.head_dim)).transpose(1, 2)

    def forward(
        self,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor,
        media: Media | None,
        images: torch.Tensor | None,
    ) -> torch.Tensor:
        query = rotate(self._heads(self.q_proj(hidden), self.heads), *rope)
        key = rotate(self._heads(self.k_proj(hidden), self.kv_heads), *rope)
        value = self._heads(self.v_proj(hidden), self.kv_heads)
        groups = self.heads // self.kv_heads
        out = F.scaled_dot_product_attention(
            query, repeat_kv(key, groups), repeat_kv(value, groups), attn_mask=mask
        )
        if images is not None:
            out = self._mix_in_images(query, out, images, media)
        return self.o_proj(out.transpose(1, 2).flatten(2))

    def _mix_in_images(
        self, query: torch.Tensor, text: torch.Tensor, images: torch.Tensor, media: Media
    ) -> torch.Tensor:
        """Cross-attention to the visible images, gated per head by the self-attention output."""
        pairs = self.v_kv_proj(images).unflatten(-1, (self.kv_heads, 2, self.head_dim))
        key, value = pairs.transpose(1, 2).unbind(dim=3)  # (B, kv_heads, S, D) each
        key = rotate(key.float(), media.cos, media.sin).to(key.dtype)  # MI-RoPE, in float32
        groups = self.heads // self.kv_heads
        seen = F.scaled_dot_product_attention(
            query, repeat_kv(key, groups), repeat_kv(value, groups), attn_mask=media.mask
        )
        gate = self.gate_proj(text)
        return torch.where(media.active, text * (1 - gate) + seen * gate, text)


class HyperQwen2DecoderLayer(nn.Module):
    def __init__(self, config: MplugOwl3Config, hyper: bool) -> None:
        super().__init__()
        self.self_attn = HyperQwen2Attention(config, hyper)
        self.mlp = Qwen2MLP(config)
        self.input_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor,
        media: Media | None,
    ) -> torch.Tensor:
        # The image tokens go through the same input norm as the text.
        images = None
        if self.self_attn.hyper and media is not None:
            images = self.input_layernorm(media.embeds)
        attended = self.self_attn(self.input_layernorm(hidden), rope, mask, media, images)
        hidden = hidden + attended
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class HyperQwen2Model(nn.Module):
    def __init__(self, config: MplugOwl3Config) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        hyper = {index - 1 for index in config.hyper_layers}
        self.layers = nn.ModuleList(
            HyperQwen2DecoderLayer(config, i in hyper) for i in range(config.num_hidden_layers)
        )
        self.norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class HyperQwen2ForCausalLM(nn.Module):
    def __init__(self, config: MplugOwl3Config) -> None:
        super().__init__()
        self.model = HyperQwen2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)


class MplugOwl3Model(nn.Module):
    """The whole model; module names follow the official checkpoint's tensor names."""

    def __init__(self, config: MplugOwl3Config) -> None:
        super().__init__()
        self.config = config
        config.vision_config._attn_implementation = "sdpa"
        self.vision_model = SiglipTower(config.vision_config)
        self.vision2text_model = nn.Linear(config.vision_config.hidden_size, config.hidden_size)
        self.language_model = HyperQwen2ForCausalLM(config)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        revision: str | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> MplugOwl3Model:
        """Load an official checkpoint (hub id or folder); any tensor mismatch is refused."""
        folder = resolve(str(source), revision).local_folder(CHECKPOINT_FILES)
        config = load_config(folder, str(source))
        with torch.device("meta"):  # no memory and no random init for weights we overwrite
            model = cls(config)
        model.load_state_dict(read_weights(model, folder, dtype, device), assign=True)
        return model.requires_grad_(False).eval()

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, patches, vision hidden): SigLIP's second-to-last hidden states."""
        return self.vision_model(pixel_values)

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, patches, hidden): crops as the language model sees them."""
        return self.vision2text_model(self.vision_features(pixel_values))

    def forward(
        self,
        input_ids: torch.Tensor,
        media_offset: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool = False,
    ) -> MplugOwl3Output:
        """Logits of every position, or of the last `logits_to_keep` ones."""
        images = None if pixel_values is None else self.embed_images(pixel_values)
        return self.decode(
            input_ids,
            media_offset,
            images,
            attention_mask,
            logits_to_keep=logits_to_keep,
            output_hidden_states=output_hidden_states,
        )

    def decode(
        self,
        input_ids: torch.Tensor,
        media_offset: torch.Tensor,
        image_embeds: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        output_hidden_states: bool = False,
    ) -> MplugOwl3Output:
        """The language model on precomputed image embeddings; positions skip the padding."""
        llm = self.language_model.model
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if positions is None:
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = llm.embed_tokens(input_ids)
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        theta = self.config.rope_parameters["rope_theta"]
        cos, sin = rotary_angles(positions, head_dim, theta)
        rope = (cos.to(hidden.dtype), sin.to(hidden.dtype))
        mask = causal_mask(attention_mask.bool())
        media = None
        if image_embeds is not None:
            media = media_context(media_offset, image_embeds, positions, head_dim, theta)
        states = [hidden]
        for layer in llm.layers:
            hidden = layer(hidden, rope, mask, media)
            states.append(hidden)
        states[-1] = hidden = llm.norm(hidden)
        logits = self.language_model.lm_head(hidden[:, -logits_to_keep:])
        return MplugOwl3Output(logits, tuple(states) if output_hidden_states else None)

    @torch.inference_mode()
    def greedy(
        self,
        input_ids: torch.Tensor,
        media_offset: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 5,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Argmax continuation (B, n) and each step's logits (B, n, vocab), as the original's
        generate(): new tokens see every image of their sample, and their rotary positions
        lag one behind their index (the first repeats the last prompt position). No KV
        cache: for checks, not throughput.
        """
        images = None if pixel_values is None else self.embed_images(pixel_values)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        steps = []
        for step in range(max_new_tokens):
            logits = self.decode(
                input_ids, media_offset, images, attention_mask, positions, logits_to_keep=1
            ).logits[:, -1]
            steps.append(logits)
            input_ids = torch.cat([input_ids, logits.argmax(-1, keepdim=True)], dim=1)
            media_offset = torch.cat([media_offset, media_offset[:, -1:]], dim=1)
            attention_mask = torch.cat([attention_mask, attention_mask[:, -1:]], dim=1)
            positions = torch.cat([positions, positions[:, -1:] + min(step, 1)], dim=1)
        return input_ids[:, -max_new_tokens:], torch.stack(steps, dim=1)


def causal_mask(real: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool: causal over real tokens; padding rows see only themselves (no NaN)."""
    length = real.shape[1]
    index = torch.arange(length, device=real.device)
    causal = index[None, :] <= index[:, None]
    allowed = causal & (real[:, None, :] | torch.eye(length, dtype=torch.bool, device=real.device))
    return allowed[:, None]


def media_context(
    media_offset: torch.Tensor,
    image_embeds: torch.Tensor,
    positions: torch.Tensor,
    head_dim: int,
    theta: float,
) -> Media | None:
    """Gather each sample's images and the text-to-image mask from media_offset.

    Image j of a sample sits at the rotary position of the first token that sees it (one
    past its marker's first token): MI-RoPE. Tokens before a sample's first image attend
    to no image; their rows of the mask are opened only to keep SDPA finite.
    """
    start = media_offset[:, :1, 0]  # (B, 1): the sample's first flat image, same on every row
    end = media_offset[..., 1]  # (B, L)
    counts = (end - start).amax(dim=1).clamp(min=0)  # images per sample
    slots = int(counts.max())
    if slots == 0:
        return None
    local = torch.arange(slots, device=media_offset.device)
    flat = (start + local).clamp(max=image_embeds.shape[0] - 1)  # (B, slots)
    tokens = image_embeds.shape[1]
    embeds = image_embeds[flat].flatten(1, 2)  # (B, slots * tokens, hidden)

    visible = (start[:, None, :] + local) < end[..., None]  # (B, L, slots)
    visible &= local < counts[:, None, None]
    seen_from = visible.int().argmax(dim=1)  # first token that sees each image
    cos, sin = rotary_angles(positions.gather(1, seen_from), head_dim, theta)
    active = visible.any(dim=-1)[:, None, :, None]
    mask = (visible | ~active[:, 0]).repeat_interleave(tokens, dim=-1)[:, None]
    return Media(
        embeds=embeds,
        cos=cos.repeat_interleave(tokens, dim=1),
        sin=sin.repeat_interleave(tokens, dim=1),
        mask=mask,
        active=active,
    )


def _unused_prefixes(config: MplugOwl3Config) -> tuple[str, ...]:
    """Checkpoint tensors mPLUG-Owl3 never uses: SigLIP's last layer, post-norm and head."""
    last = config.vision_config.num_hidden_layers - 1
    return (
        f"vision_model.encoder.layers.{last}.",
        "vision_model.post_layernorm.",
        "vision_model.head.",
    )


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder}: no *.safetensors weights in this checkpoint")
    return files


def read_weights(
    model: MplugOwl3Model, folder: Path, dtype: torch.dtype, device: str | torch.device
) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors for `model`, after checking every name and shape first."""
    found: dict[str, tuple[int, ...]] = {}  # name -> shape, read from the headers only
    for file in _weight_files(folder):
        with safe_open(file, framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 (safe_open is not a dict)
                found[name] = tuple(weights.get_slice(name).get_shape())
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    unused = _unused_prefixes(model.config)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(n for n in set(found) - set(expected) if not n.startswith(unused))
    mismatched = [
        f"{name} {list(found[name])} (model: {list(shape)})"
        for name, shape in sorted(expected.items())
        if name in found and found[name] != shape
    ]
    problems = [
        f"{label}: {', '.join(names)}"
        for label, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", mismatched),
        )
        if names
    ]
    if problems:
        raise ModelLoadError(
            f"{folder}: weights do not match the mPLUG-Owl3 240728 architecture; "
            + "; ".join(problems)
        )
    tensors = {}
    for file in _weight_files(folder):
        with safe_open(file, framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 (safe_open is not a dict)
                if name in expected:
                    tensors[name] = weights.get_tensor(name).to(device=device, dtype=dtype)
    return tensors
