"""The released layouts as data: one table of rename rules per file format, applied by one function.

A rule matches a source key (re.fullmatch) and names where it goes:
  target "vision.\\1" ...   our tensor name (regex groups expanded)
  target None              a known tensor that the model does not use (CLIP text tower, ln_f, ...): ignored
  head="<name>"            a reference action head (DeterministicDecoder); its sub-keys are re-indexed by
                           heads.remap_head. "extra_exit" is the inference head; the others are aux heads
                           (lm_exit_modules.{i}, then lm_head), kept only when the config has aux heads.
  if_shape_matches=True    taken only when the shape equals the model's (the HF MPT embedding has 50432 rows,
                           the Flamingo-resized one 50280, which the OpenFlamingo/DeeR file provides)
The first matching rule wins; a key no rule matches is "unknown" and fails the strict assembly.

Formats (reference 5.2-5.4; key lists in test/model/data/manifests):
  DEER_PTH       DeeR .pth model_state_dict (after `module.`): perceiver, wte, x-attn under two aliases, the
                 frozen MPT blocks under old_decoder_blocks (or decoder_layer), extra_exit + aux heads, and when
                 present the whole CLIP under vision_encoder.visual (its text tower beside it)
  OPENFLAMINGO   OpenFlamingo checkpoint.pt: the same names, no prefix, CLIP's visual tower directly under
                 vision_encoder. (not in the released file), all 24 layers' x-attn
  HF_MPT         Hugging Face MPT: transformer.blocks.{i}.* in MosaicML (MPT-1B) or llm-foundry (MPT-7B) names
  OPEN_CLIP      open_clip / OpenAI CLIP: visual.* (the text tower is ignored)
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from deer_ros.model.checkpoint.assemble import Mapped
from deer_ros.model.checkpoint.errors import CheckpointError
from deer_ros.model.checkpoint.heads import head_layout, remap_head
from deer_ros.model.config import DeerConfig


@dataclass(frozen=True)
class Rule:
    pattern: str
    target: str | None = None
    head: str | None = None
    if_shape_matches: bool = False


@dataclass(frozen=True)
class Layout:
    name: str
    rules: tuple[Rule, ...]
    required: str = ""  # a regex one key must match, else the file is not this format (clear error)
    required_hint: str = ""


# llm-foundry (MPT-7B) block names -> MosaicML mosaic_gpt names (ours); the rest of a block's names are shared.
_BLOCK_NAMES = ((r"norm_1\.(.+)", r"ln_1.\g<r>"), (r"norm_2\.(.+)", r"ln_2.\g<r>"),
                (r"ffn\.up_proj\.(.+)", r"mlp.mlp_up.\g<r>"), (r"ffn\.down_proj\.(.+)", r"mlp.mlp_down.\g<r>"),
                (r"(.+)", r"\g<r>"))


def _block_rules(prefix: str) -> tuple[Rule, ...]:
    """Rules for MPT blocks under `prefix` (a regex with one group, the layer index), either naming."""
    return tuple(Rule(prefix + r"\." + name.replace("(.+)", "(?P<r>.+)"), r"blocks.\g<i>." + target)
                 for name, target in _BLOCK_NAMES)


_XATTN = (Rule(r"lang_encoder\.gated_cross_attn_layers\.(?P<i>\d+)\.(?P<r>.+)", r"xattn.\g<i>.\g<r>"),
          Rule(r"lang_encoder\.transformer\.blocks\.(?P<i>\d+)\.gated_cross_attn_layer\.(?P<r>.+)",
               r"xattn.\g<i>.\g<r>"))
_FLAMINGO_COMMON = (
    Rule(r"perceiver\.(.+)", r"perceiver.\1"),
    Rule(r"lang_encoder\.transformer\.wte\.weight", "wte.weight"),
    *_XATTN,
    *_block_rules(r"lang_encoder\.old_decoder_blocks\.(?P<i>\d+)"),
    *_block_rules(r"lang_encoder\.transformer\.blocks\.(?P<i>\d+)\.decoder_layer"),
    Rule(r"lang_encoder\.transformer\.(?:ln_f|norm_f)\..+"),  # never applied to exit features
    Rule(r"lang_encoder\.lm_head\..+"),
)

DEER_PTH = Layout("DeeR .pth", (
    *_FLAMINGO_COMMON,
    Rule(r"vision_encoder\.visual\.(.+)", r"vision.\1"),
    Rule(r"vision_encoder\..+"),  # CLIP's text tower
    Rule(r"extra_exit\.(.+)", head="extra_exit"),
    Rule(r"lm_exit_modules\.(\d+)\.(.+)", head=r"lm_exit_modules.\1"),
    Rule(r"lm_head\.(.+)", head="lm_head"),
), required=r"lang_encoder\.transformer\.wte\.weight",
    required_hint="not a DeeR/OpenFlamingo checkpoint (no LLM embedding)")

OPENFLAMINGO = Layout("OpenFlamingo checkpoint.pt", (
    *_FLAMINGO_COMMON,
    Rule(r"vision_encoder\.(.+)", r"vision.\1"),  # OpenFlamingo holds CLIP.visual itself
), required=r"lang_encoder\..+", required_hint="not an OpenFlamingo checkpoint (no lang_encoder.* keys)")

HF_MPT = Layout("HF MPT", (
    *_block_rules(r"(?:model\.)?transformer\.blocks\.(?P<i>\d+)"),
    Rule(r"(?:model\.)?transformer\.wte\.weight", "wte.weight", if_shape_matches=True),
    Rule(r"(?:model\.)?transformer\.wte\.weight"),
    Rule(r"(?:model\.)?transformer\.(?:ln_f|norm_f)\..+"),
    Rule(r"lm_head\.weight"),  # transformers' tied alias of wte
), required=r"(?:model\.)?transformer\.blocks\.0\..+",
    required_hint="no MPT blocks found: expected keys like 'transformer.blocks.0.attn.Wqkv.weight'")

OPEN_CLIP = Layout("open_clip", (
    Rule(r"visual\.(.+)", r"vision.\1"),
    Rule(r".+"),  # the text tower, logit_scale, ...
), required=r"visual\.conv1\.weight",
    required_hint="no CLIP vision tower found: expected open_clip/OpenAI keys such as 'visual.conv1.weight' "
                  "(HF transformers CLIP files are not supported)")
_BARE_VISION = Layout("open_clip vision tower", (Rule(r"(.+)", r"vision.\1"),))


def apply_layout(layout: Layout, state: dict[str, torch.Tensor], config: DeerConfig, source: str,
                 expected: dict[str, tuple[int, ...]] | None = None) -> Mapped:
    """`state` (keys without `module.`) under our names, by the first matching rule of `layout`.

    `expected` (our names -> shapes) decides the if_shape_matches rules; None = the shapes from `config`.
    """
    if layout is OPEN_CLIP and "conv1.weight" in state and not any(k.startswith("visual.") for k in state):
        layout = _BARE_VISION  # a CLIP vision tower saved on its own
    if layout.required and not any(re.fullmatch(layout.required, k) for k in state):
        raise CheckpointError(source, hint=layout.required_hint)
    compiled = [(re.compile(r.pattern), r) for r in layout.rules]
    out = Mapped(source, read=len(state))
    heads: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        for regex, rule in compiled:
            m = regex.fullmatch(key)
            if m is None:
                continue
            if rule.head is not None:
                heads.setdefault(m.expand(rule.head), {})[m.groups()[-1]] = tensor
            elif rule.target is None:
                out.ignored.append(key)
            else:
                name = m.expand(rule.target)
                if rule.if_shape_matches and tuple(tensor.shape) != _shape_of(name, config, expected):
                    continue  # a later rule (ignore) takes it
                out.put(name, tensor, key)
            break
        else:
            out.unknown.append(key)
    _put_heads(heads, config, out)
    return out


def _shape_of(name: str, config: DeerConfig, expected: dict[str, tuple[int, ...]] | None) -> tuple[int, ...]:
    if expected is not None and name in expected:
        return tuple(expected[name])
    if name == "wte.weight":
        return (config.vocab_size, config.d_model)
    raise KeyError(name)


def _put_heads(heads: dict[str, dict[str, torch.Tensor]], config: DeerConfig, out: Mapped) -> None:
    """extra_exit -> head; aux heads in exit order (lm_exit_modules 0.., then lm_head) if the config has them."""
    if not heads:
        return
    target = head_layout(config)
    if "extra_exit" in heads:
        for name, v in remap_head(heads.pop("extra_exit"), target, f"{out.source}: extra_exit").items():
            out.put("head." + name, v, "extra_exit." + name)
    aux_order = sorted((k for k in heads if k.startswith("lm_exit_modules.")), key=lambda k: int(k.split(".")[1]))
    aux_order += ["lm_head"] if "lm_head" in heads else []
    for k, src in enumerate(aux_order):
        if not config.aux_heads:
            out.ignored += [f"{src}.{n}" for n in heads[src]]
            continue
        for name, v in remap_head(heads[src], target, f"{out.source}: {src}").items():
            out.put(f"aux_heads.{k}.{name}", v, f"{src}.{name}")
