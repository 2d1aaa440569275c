"""DeerConfig: every size and switch of a DeeR multi-exit model, validated, with the three presets.

A config describes the whole architecture (the full LLM depth included, so FLOPs of the unpruned LLM can be
reported); how many LLM layers are actually *built* is decided separately (`max_exit`, `memory_budget_mb`).

Presets (reference facts: deer-reference.md sections 1.6-1.12):
  tiny   a few-MB model with the same structure, for tests and the demo (steps in milliseconds on a CPU)
  of3b   OpenFlamingo-3B (CLIP ViT-L/14 + MPT-1B, x-attn before every layer), 12 of 24 layers, 6 exits
  of9b   OpenFlamingo-9B (CLIP ViT-L/14 + MPT-7B, x-attn every 4 layers), 16 of 32 layers, 8 exits
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

BUNDLED_TOKENIZER = "bundled:tiny"  # the word-level tokenizer shipped in deer_ros/model/assets


@dataclass(frozen=True)
class DeerConfig:
    name: str = "custom"

    # Vision: an open_clip VisionTransformer; patch tokens are taken before ln_post (reference 1.2).
    image_size: int = 224
    vision_patch: int = 14
    vision_width: int = 1024
    vision_layers: int = 24
    vision_head_width: int = 64
    vision_mlp_ratio: float = 4.0
    vision_output_dim: int = 768  # only sizes the (unused) CLIP projection, so CLIP weights load by name
    vision_quick_gelu: bool = True  # OpenAI CLIP weights were trained with QuickGELU
    n_cameras: int = 2  # static then gripper, concatenated after the shared perceiver ("post" fusion)

    # Perceiver resampler (open_flamingo), one shared by all cameras; its width is the vision width.
    perceiver_depth: int = 6
    perceiver_heads: int = 8
    perceiver_dim_head: int = 64
    perceiver_latents: int = 64
    perceiver_ff_mult: int = 4

    # LLM: MPT blocks (ALiBi, optional q/k LayerNorm, no biases).
    vocab_size: int = 50280  # GPT-NeoX 50277 + <|endofchunk|>, <image>, <PAD>
    d_model: int = 2048
    n_heads: int = 16
    n_layers: int = 24  # depth of the full LLM; only layers 0..last_layer exist in the DeeR model
    mlp_ratio: int = 4
    qk_ln: bool = True
    alibi_bias_max: int = 8
    ln_eps: float = 1e-5

    # Gated cross-attention (open_flamingo) before every `xattn_every`-th layer: layer i has one if (i+1) % n == 0.
    xattn_every: int = 1
    xattn_heads: int = 8
    xattn_dim_head: int = 64
    xattn_ff_mult: int = 4

    # Exits: after layers interval-1, 2*interval-1, ... below last_layer, and after last_layer (0-based).
    last_layer: int = 11
    exit_interval: int = 2
    pooling: str = "max"  # over all text tokens, as the reference (pads included in padded batches)

    # Shared action head (reference 1.9): LSTM stack + pose MLP (tanh) + gripper MLP (sigmoid).
    head_hidden: int = 1024
    head_lstm_layers: int = 4
    head_mlp_hidden: tuple[int, ...] = (1024, 512)
    head_lstm_layernorm: bool = True
    head_mlp_layernorm: bool = True
    head_mlp_dropout: float = 0.0
    head_lstm_dropout: float = 0.0
    pose_dim: int = 6
    aux_heads: bool = False  # one extra head per exit, trained on its own layer (training only)

    # Text.
    tokenizer: str = ""  # BUNDLED_TOKENIZER or a local directory with a Hugging Face tokenizer
    max_text_tokens: int = 32
    typical_prompt_tokens: int = 14  # CALVIN prompt length used for the "typical" FLOPs of an exit

    def __post_init__(self) -> None:
        object.__setattr__(self, "head_mlp_hidden", tuple(int(h) for h in self.head_mlp_hidden))
        problems = _problems(self)
        if problems:
            raise ValueError(f"invalid DeerConfig '{self.name}': " + "; ".join(problems))

    # ------------------------------------------------------------------ derived sizes
    @property
    def vision_heads(self) -> int:
        return self.vision_width // self.vision_head_width

    @property
    def vision_tokens(self) -> int:
        """Patch tokens per camera (the CLS token is dropped)."""
        return (self.image_size // self.vision_patch) ** 2

    @property
    def visual_tokens(self) -> int:
        """Visual tokens the LLM cross-attends to: perceiver latents of every camera."""
        return self.n_cameras * self.perceiver_latents

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def exit_layers(self) -> list[int]:
        """0-based LLM layer indices whose outputs feed an exit, in order (reference 1.7)."""
        return list(range(self.exit_interval - 1, self.last_layer, self.exit_interval)) + [self.last_layer]

    def has_xattn(self, layer: int) -> bool:
        return (layer + 1) % self.xattn_every == 0

    def layers_for_exit(self, max_exit: int | None) -> int:
        """LLM layers to build so that exits 1..max_exit can run (None: all exits)."""
        exits = self.exit_layers
        if max_exit is None:
            return exits[-1] + 1
        if not 1 <= max_exit <= len(exits):
            raise ValueError(f"max_exit={max_exit} is out of range: model '{self.name}' has exits 1..{len(exits)}")
        return exits[max_exit - 1] + 1

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["head_mlp_hidden"] = list(self.head_mlp_hidden)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DeerConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> DeerConfig:
        return self.from_dict({**self.to_dict(), **changes})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DeerConfig:
        """One of PRESETS, with any field overridden (the result is validated)."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], "name": name, **overrides})


def _problems(c: DeerConfig) -> list[str]:
    p: list[str] = []
    positive = ["image_size", "vision_patch", "vision_width", "vision_layers", "vision_head_width", "n_cameras",
                "perceiver_depth", "perceiver_heads", "perceiver_dim_head", "perceiver_latents", "perceiver_ff_mult",
                "vocab_size", "d_model", "n_heads", "n_layers", "mlp_ratio", "xattn_every", "xattn_heads",
                "xattn_dim_head", "xattn_ff_mult", "exit_interval", "head_hidden", "head_lstm_layers", "pose_dim",
                "max_text_tokens", "typical_prompt_tokens", "vision_output_dim"]
    p += [f"{k} must be a positive integer (got {getattr(c, k)!r})" for k in positive
          if not isinstance(getattr(c, k), int) or isinstance(getattr(c, k), bool) or getattr(c, k) <= 0]
    if p:
        return p
    if c.image_size % c.vision_patch:
        p.append(f"image_size {c.image_size} is not a multiple of vision_patch {c.vision_patch}")
    if c.vision_width % c.vision_head_width:
        p.append(f"vision_width {c.vision_width} is not a multiple of vision_head_width {c.vision_head_width}")
    if c.d_model % c.n_heads:
        p.append(f"d_model {c.d_model} is not a multiple of n_heads {c.n_heads}")
    if not 0 <= c.last_layer < c.n_layers:
        p.append(f"last_layer {c.last_layer} must be in 0..n_layers-1 = 0..{c.n_layers - 1}")
    if c.pooling not in ("max", "avg"):
        p.append(f"pooling must be 'max' or 'avg' (got {c.pooling!r})")
    if not c.head_mlp_hidden or any(h <= 0 for h in c.head_mlp_hidden):
        p.append(f"head_mlp_hidden must be a non-empty tuple of positive sizes (got {c.head_mlp_hidden!r})")
    for k in ("head_mlp_dropout", "head_lstm_dropout"):
        if not 0.0 <= getattr(c, k) < 1.0:
            p.append(f"{k} must be in [0, 1) (got {getattr(c, k)!r})")
    if c.vision_mlp_ratio <= 0 or c.ln_eps <= 0:
        p.append("vision_mlp_ratio and ln_eps must be positive")
    if c.typical_prompt_tokens > c.max_text_tokens:
        p.append(f"typical_prompt_tokens {c.typical_prompt_tokens} exceeds max_text_tokens {c.max_text_tokens}")
    return p


_OF3B: dict[str, Any] = {}  # the dataclass defaults are the OpenFlamingo-3B sizes

_OF9B: dict[str, Any] = dict(
    d_model=4096, n_heads=32, n_layers=32, qk_ln=False,  # MPT-7B has no q/k LayerNorm
    xattn_every=4, last_layer=15,
)

_TINY: dict[str, Any] = dict(
    image_size=64, vision_patch=16, vision_width=64, vision_layers=2, vision_head_width=32, vision_output_dim=32,
    perceiver_depth=1, perceiver_heads=2, perceiver_dim_head=32, perceiver_latents=8,
    vocab_size=92,  # len() of the bundled tiny tokenizer
    d_model=64, n_heads=4, n_layers=6, last_layer=5,
    xattn_heads=2, xattn_dim_head=32,
    head_hidden=64, head_mlp_hidden=(64, 32),
    tokenizer=BUNDLED_TOKENIZER, typical_prompt_tokens=11,  # median prompt of the bundled sample
)

PRESETS: dict[str, dict[str, Any]] = {"tiny": _TINY, "of3b": _OF3B, "of9b": _OF9B}
