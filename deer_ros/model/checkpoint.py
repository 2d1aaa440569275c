"""Strict checkpoint loading: our own format, the DeeR `.pth` layout, OpenFlamingo, HF MPT and open_clip weights.

Every load ends in one strict check against the model being built: each expected tensor must be provided
exactly once with the right shape, and nothing unknown may be left over. A failure raises CheckpointError
listing the missing, unexpected and mis-shaped keys (the reference loads everything with strict=False, which
silently leaves random heads when a key is renamed: reference section 8 item 14).

Layouts understood (source -> our names):
  ours          {'format': 'deer_ros', 'config', 'model_state_dict', ...}: names as in DeerModel.state_dict()
  DeeR .pth     top-level config keys + model_state_dict with a `module.` prefix (reference 5.2-5.3):
                  perceiver.*                                        -> perceiver.*
                  lang_encoder.transformer.wte.weight                -> wte.weight
                  lang_encoder.gated_cross_attn_layers.{i}.*  (and its alias
                  lang_encoder.transformer.blocks.{i}.gated_cross_attn_layer.*) -> xattn.{i}.*
                  lang_encoder.old_decoder_blocks.{i}.*       (and its alias
                  lang_encoder.transformer.blocks.{i}.decoder_layer.*)          -> blocks.{i}.*
                  extra_exit.* (the inference head)                  -> head.* (MLP index layouts remapped)
                  lm_exit_modules.{k}.*, lm_head.* (aux heads)       -> aux_heads.* when the config has them
                  vision_encoder.visual.* (if present)               -> vision.*
  OpenFlamingo  checkpoint.pt: the same names, no prefix, 24 layers, CLIP under vision_encoder.* (no .visual)
  HF MPT        a model directory (pytorch_model.bin / model.safetensors, sharded or not) or file:
                transformer.wte.weight, transformer.blocks.{i}.* (MosaicML `mosaic_gpt` or llm-foundry names)
  open_clip     a CLIP state dict (open_clip .bin/.pt or OpenAI's TorchScript ViT-L-14.pt): visual.* -> vision.*
Layers beyond the ones built (max_exit) are skipped, never an error. Known-unused tensors (ln_f, the CLIP
text tower, optimizer states) are listed as ignored.
"""
from __future__ import annotations

import json
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deer_ros.model.config import DeerConfig
from deer_ros.model.deer import DeerModel, build_model

FORMAT = "deer_ros"
FORMAT_VERSION = 1
SHOW = 25  # keys listed per category in an error message

# Top-level keys of a DeeR .pth that hold run configuration (reference 5.2).
REFERENCE_CONFIG_KEYS = ("epoch", "head_type", "early_exit_layer", "multi_exit", "share_exit", "exit_interval",
                         "exit_dropout", "lstm_dropout", "dropout_mode", "mlp_layernorm", "lstm_layernorm",
                         "mlp_num_hidden_layers", "lstm_num_layers", "pooling", "precision", "layernorm")
# llm-foundry (MPT-7B) block names -> MosaicML mosaic_gpt names (ours).
_FOUNDRY_NAMES = (("norm_1.", "ln_1."), ("norm_2.", "ln_2."), ("ffn.up_proj.", "mlp.mlp_up."),
                  ("ffn.down_proj.", "mlp.mlp_down."))


class CheckpointError(RuntimeError):
    """A checkpoint does not match the model: lists what is missing, unexpected or mis-shaped, and what to do."""

    def __init__(self, source: str, missing: list[str] = (), unexpected: list[str] = (),
                 mis_shaped: list[str] = (), hint: str = ""):
        self.missing, self.unexpected, self.mis_shaped = list(missing), list(unexpected), list(mis_shaped)
        parts = [f"{source} does not match the model"]
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("mis-shaped", self.mis_shaped)):
            if keys:
                more = f" (+{len(keys) - SHOW} more)" if len(keys) > SHOW else ""
                parts.append(f"{len(keys)} {name}: " + ", ".join(keys[:SHOW]) + more)
        if hint:
            parts.append(hint)
        super().__init__("\n  ".join(parts))


@dataclass
class Mapped:
    """Tensors of one source under our names, plus the source keys deliberately not used."""
    source: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def put(self, name: str, tensor: torch.Tensor, origin: str) -> None:
        """Add a tensor; a second copy under an alias must be identical (the reference stores some twice)."""
        if name in self.tensors:
            if not torch.equal(self.tensors[name], tensor):
                raise CheckpointError(self.source, hint=f"'{origin}' and another alias of '{name}' hold different "
                                                        "values: the file is inconsistent")
            return
        self.tensors[name] = tensor


# ====================================================================== reading files
def read_file(path: str | Path, trust_pickle: bool = False) -> dict[str, Any]:
    """A checkpoint file or Hugging Face model directory as a dict (tensors, and config values where present).

    torch files load with weights_only=True unless `trust_pickle` (only for files you trust: pickles run code).
    """
    path = Path(path)
    if path.is_dir():
        return _read_hf_dir(path, trust_pickle)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if zipfile.is_zipfile(path) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist()):
        with warnings.catch_warnings():  # deprecated in favour of torch.export, but OpenAI ships CLIP this way
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.load.*")
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # noqa: BLE001 - report every unpickling failure the same way
        if trust_pickle:
            raise
        raise CheckpointError(str(path), hint=f"cannot be read with weights_only=True ({exc.__class__.__name__}: "
                                              f"{str(exc).splitlines()[0][:200]}). If you trust the file, load "
                                              "it with trust_pickle=True") from exc
    if not isinstance(data, dict):
        raise CheckpointError(str(path), hint=f"holds a {type(data).__name__}, not a dict of tensors")
    return data


def _read_hf_dir(path: Path, trust_pickle: bool) -> dict[str, Any]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            merged: dict[str, Any] = {}
            for shard in shards:
                merged.update(read_file(path / shard, trust_pickle))
            return merged
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return read_file(path / name, trust_pickle)
    raise FileNotFoundError(f"{path} holds no model.safetensors, pytorch_model.bin or a sharded index of them")


def state_of(data: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint dict: its model_state_dict / state_dict if it has one, without `module.`."""
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):  # DistributedDataParallel
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


# ====================================================================== key maps
def map_open_clip(state: dict[str, torch.Tensor], source: str = "open_clip weights") -> Mapped:
    """CLIP (open_clip or OpenAI) weights: the vision tower under `visual.`, or a bare vision tower."""
    out = Mapped(source)
    prefix = "visual." if any(k.startswith("visual.") for k in state) else ""
    if not prefix and "conv1.weight" not in state:
        raise CheckpointError(source, hint="no CLIP vision tower found: expected open_clip/OpenAI keys such as "
                                           "'visual.conv1.weight' (HF transformers CLIP files are not supported)")
    for k, v in state.items():
        if k.startswith(prefix):
            out.put("vision." + k[len(prefix):], v, k)
        else:
            out.ignored.append(k)  # the text tower, logit_scale, ...
    return out


def _mpt_block_name(rest: str) -> str:
    for old, new in _FOUNDRY_NAMES:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def map_hf_mpt(state: dict[str, torch.Tensor], config: DeerConfig, source: str = "HF MPT weights") -> Mapped:
    """MosaicML MPT weights. The embedding is taken only if its shape matches: the HF file has 50432 rows, the
    Flamingo-resized embedding 50280, and the OpenFlamingo/DeeR checkpoint then provides it."""
    out = Mapped(source)
    if any(k.startswith("model.transformer.") for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items()}
    for k, v in state.items():
        m = re.fullmatch(r"transformer\.blocks\.(\d+)\.(.+)", k)
        if m:
            out.put(f"blocks.{m[1]}.{_mpt_block_name(m[2])}", v, k)
        elif k == "transformer.wte.weight" and tuple(v.shape) == (config.vocab_size, config.d_model):
            out.put("wte.weight", v, k)
        elif k in ("transformer.wte.weight", "lm_head.weight") or k.startswith(("transformer.ln_f.",
                                                                                 "transformer.norm_f.")):
            out.ignored.append(k)  # resized embedding comes from Flamingo; ln_f is never applied to exit features
        else:
            out.unknown.append(k)
    if not out.tensors:
        raise CheckpointError(source, hint="no MPT blocks found: expected keys like "
                                           "'transformer.blocks.0.attn.Wqkv.weight'")
    return out


def map_flamingo(state: dict[str, torch.Tensor], config: DeerConfig, source: str) -> Mapped:
    """OpenFlamingo checkpoint.pt and the DeeR .pth model_state_dict (already without `module.`)."""
    out = Mapped(source)
    # DeeR stores the whole CLIP model (vision_encoder.visual.*, text tower beside it); OpenFlamingo stores the
    # visual tower itself (vision_encoder.conv1.weight, ...). Anything else under vision_encoder is a text tower.
    visual_prefix = ("vision_encoder.visual." if any(k.startswith("vision_encoder.visual.") for k in state)
                     else "vision_encoder." if "vision_encoder.conv1.weight" in state else None)
    head_keys: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        if k.startswith("perceiver."):
            out.put(k, v, k)
        elif k == "lang_encoder.transformer.wte.weight":
            out.put("wte.weight", v, k)
        elif m := re.fullmatch(r"lang_encoder\.(?:gated_cross_attn_layers\.(\d+)|transformer\.blocks\.(\d+)"
                               r"\.gated_cross_attn_layer)\.(.+)", k):
            out.put(f"xattn.{m[1] or m[2]}.{m[3]}", v, k)
        elif m := re.fullmatch(r"lang_encoder\.(?:old_decoder_blocks\.(\d+)|transformer\.blocks\.(\d+)"
                               r"\.decoder_layer)\.(.+)", k):
            out.put(f"blocks.{m[1] or m[2]}.{_mpt_block_name(m[3])}", v, k)
        elif k.startswith("vision_encoder."):
            if visual_prefix and k.startswith(visual_prefix):
                out.put("vision." + k[len(visual_prefix):], v, k)
            else:
                out.ignored.append(k)  # CLIP text tower
        elif m := re.fullmatch(r"(extra_exit|lm_head|lm_exit_modules\.(\d+))\.(.+)", k):
            head_keys.setdefault(m[1], {})[m[3]] = v
        elif k.startswith(("lang_encoder.transformer.ln_f.", "lang_encoder.transformer.norm_f.",
                           "lang_encoder.lm_head.")):
            out.ignored.append(k)
        else:
            out.unknown.append(k)
    _map_heads(head_keys, config, out)
    return out


def _map_heads(heads: dict[str, dict[str, torch.Tensor]], config: DeerConfig, out: Mapped) -> None:
    """extra_exit -> head; aux heads in exit order (lm_exit_modules 0.., then lm_head) if the config has them."""
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


def head_layout(config: DeerConfig) -> dict[str, tuple[int, ...]]:
    """Our head's tensor names and shapes (built on the meta device: no memory, no init)."""
    from deer_ros.model.head import ActionHead

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in ActionHead(config).state_dict().items()}


def _mlp_groups(keys: dict[str, Any], prefix: str) -> list[tuple[int, str]]:
    """[(index, kind)] of the Linear ('linear') and LayerNorm ('norm') modules of an MLP Sequential, in order."""
    groups: dict[int, str] = {}
    for k, v in keys.items():
        m = re.fullmatch(re.escape(prefix) + r"\.(\d+)\.weight", k)
        if m:
            ndim = v.dim() if isinstance(v, torch.Tensor) else len(v)  # a tensor, or a shape tuple
            groups[int(m[1])] = "linear" if ndim == 2 else "norm"
    return sorted(groups.items())


def remap_head(src: dict[str, torch.Tensor], target: dict[str, tuple[int, ...]],
               source: str) -> dict[str, torch.Tensor]:
    """Map a reference head onto our layout: LSTM names as they are, MLP modules by their order.

    The MLP Sequential index of each Linear/LayerNorm depends on the dropout_mode and layernorm flags of the
    run that wrote the file (reference 5.3); the order and the shapes do not, so we map ordinal to ordinal.
    """
    out = {k: v for k, v in src.items() if not k.startswith(("actions.mlp.", "gripper.mlp."))}
    for mlp in ("actions.mlp", "gripper.mlp"):
        have, want = _mlp_groups(src, mlp), _mlp_groups(target, mlp)
        if [kind for _, kind in have] != [kind for _, kind in want]:
            raise CheckpointError(source, hint=f"{mlp} has modules {[k for _, k in have]} but the model expects "
                                               f"{[k for _, k in want]}: the head config (mlp_layernorm, number of "
                                               "hidden layers) does not match the file")
        for (i, _), (j, _) in zip(have, want):
            for param in ("weight", "bias"):
                if f"{mlp}.{i}.{param}" in src:
                    out[f"{mlp}.{j}.{param}"] = src[f"{mlp}.{i}.{param}"]
    return out


# ====================================================================== config of reference files
def config_from_reference(data: dict[str, Any], base: DeerConfig | None = None, source: str = "DeeR checkpoint",
                          **overrides: Any) -> DeerConfig:
    """A DeerConfig for a DeeR .pth: sizes read from its tensors, cross-checked with its config keys.

    The head structure is read from the extra_exit tensors, so a file whose config keys are missing still loads
    correctly (the reference's eval defaults for missing keys differ from its training defaults: reference 8.14).
    `exit_interval` cannot be read from tensors, so it must be in the file or in `overrides`.
    """
    state = state_of(data)
    if "lang_encoder.transformer.wte.weight" not in state:
        raise CheckpointError(source, missing=["lang_encoder.transformer.wte.weight"],
                              hint="not a DeeR/OpenFlamingo checkpoint (no LLM embedding)")
    vocab, d = state["lang_encoder.transformer.wte.weight"].shape
    if base is None:
        base = DeerConfig.preset({2048: "of3b", 4096: "of9b"}.get(int(d), "of3b"))
    head = {k[len("extra_exit."):]: v for k, v in state.items() if k.startswith("extra_exit.")}
    if not head:
        raise CheckpointError(source, missing=["extra_exit.*"], hint="the file has no inference head (extra_exit): "
                                                                      "refusing to run with a random head")
    lstm_hh = [v for k, v in sorted(head.items()) if "weight_hh" in k]
    groups = _mlp_groups(head, "actions.mlp")
    linears = [i for i, kind in groups if kind == "linear"]
    found: dict[str, Any] = {
        "vocab_size": int(vocab), "d_model": int(d),
        "head_lstm_layernorm": any(k.startswith("rnn.layers.") for k in head),
        "head_lstm_layers": len(lstm_hh),
        "head_hidden": int(lstm_hh[0].shape[1]),
        "head_mlp_layernorm": any(kind == "norm" for _, kind in groups),
        "head_mlp_hidden": tuple(int(head[f"actions.mlp.{i}.weight"].shape[0]) for i in linears[:-1]),
        "pose_dim": int(head[f"actions.mlp.{linears[-1]}.weight"].shape[0]),
    }
    declared = {"head_lstm_layernorm": data.get("lstm_layernorm"), "head_lstm_layers": data.get("lstm_num_layers"),
                "head_mlp_layernorm": data.get("mlp_layernorm", data.get("layernorm"))}
    conflicts = [f"{k}: file says {v!r}, tensors say {found[k]!r}" for k, v in declared.items()
                 if v is not None and v != found[k]]
    n_hidden = data.get("mlp_num_hidden_layers")
    if n_hidden is not None and n_hidden != len(found["head_mlp_hidden"]):
        conflicts.append(f"mlp_num_hidden_layers: file says {n_hidden}, tensors have {len(found['head_mlp_hidden'])}")
    if conflicts:
        raise CheckpointError(source, hint="config keys contradict the tensors: " + "; ".join(conflicts))

    # The last layer: the file's early_exit_layer, else the deepest layer it holds tensors for.
    layers = [int(m[1]) for k in state if (m := re.match(r"lang_encoder\.(?:gated_cross_attn_layers|"
                                                         r"old_decoder_blocks|transformer\.blocks)\.(\d+)\.", k))]
    eel = data.get("early_exit_layer")
    found["last_layer"] = int(eel) if eel is not None and eel >= 0 else max(layers, default=base.last_layer)
    if data.get("exit_interval") is not None:
        found["exit_interval"] = int(data["exit_interval"])
    for key, ours in (("exit_dropout", "head_mlp_dropout"), ("lstm_dropout", "head_lstm_dropout"),
                      ("pooling", "pooling")):
        if data.get(key) is not None:
            found[ours] = data[key]
    merged = {**found, **overrides}
    if "exit_interval" not in merged:
        raise CheckpointError(source, hint="the file does not say its exit_interval (the reference eval would "
                                           "silently assume 1); pass exit_interval=2 for the released DeeR models")
    return base.replace(**merged)


# ====================================================================== strict assembly
def load_state(model: DeerModel, sources: list[Mapped], fresh: tuple[str, ...] = ()) -> list[str]:
    """Load tensors from `sources` (later ones win, as the reference's load order) into `model`, strictly.

    `fresh` are name prefixes that are deliberately left as initialised (e.g. ('head.',) when starting training
    from a backbone); they keep the model's current values, so build such a model initialised, not with
    empty=True (load_reference does this). Returns the keys skipped because their layers are not built.
    Raises CheckpointError.
    """
    unknown = [f"{s.source}: {k}" for s in sources for k in s.unknown]
    merged: dict[str, torch.Tensor] = {}
    for s in sources:
        merged.update(s.tensors)
    expected = model.state_dict()
    skipped = [k for k in merged if k not in expected and _not_built(model, k)]
    for k in skipped:
        del merged[k]
    missing = [k for k in expected if k not in merged and not k.startswith(fresh)]
    unexpected = unknown + [k for k in merged if k not in expected]
    mis_shaped = [f"{k} {tuple(merged[k].shape)} (model {tuple(expected[k].shape)})" for k in merged
                  if k in expected and merged[k].shape != expected[k].shape]
    if missing or unexpected or mis_shaped:
        names = " + ".join(s.source for s in sources) or "no source"
        raise CheckpointError(names, missing, unexpected, mis_shaped, hint=_hint(missing, mis_shaped))
    fresh_state = {k: v for k, v in expected.items() if k not in merged}
    model.load_state_dict({**fresh_state, **merged}, strict=True)
    return skipped


def _not_built(model: DeerModel, key: str) -> bool:
    """True for tensors of LLM layers / aux heads beyond what `model` built (max_exit)."""
    m = re.match(r"(blocks|xattn)\.(\d+)\.", key)
    if m:
        return int(m[2]) >= model.n_layers and int(m[2]) < model.config.n_layers
    m = re.match(r"aux_heads\.(\d+)\.", key)
    return bool(m) and model.config.aux_heads and int(m[1]) >= len(model.exit_layers)


def _hint(missing: list[str], mis_shaped: list[str]) -> str:
    hints = ["mis-shaped tensors: the model config (preset, sizes) is not the one the file was made with"] \
        if mis_shaped else []
    groups = sorted({k.split(".")[0] for k in missing})
    if not groups:
        return "; ".join(hints) or "the file has tensors this model does not know: check the preset/config"
    where = {"vision": "CLIP weights (vision_weights=...)", "blocks": "MPT weights (mpt_weights=...)",
             "head": "a trained head (a DeeR checkpoint)", "perceiver": "an OpenFlamingo or DeeR checkpoint",
             "xattn": "an OpenFlamingo or DeeR checkpoint", "wte": "an OpenFlamingo or DeeR checkpoint"}
    return "; ".join(hints + ["missing parts need: " + ", ".join(f"{g} <- {where.get(g, 'a file that has them')}"
                                                                  for g in groups)])


# ====================================================================== our format
def save_checkpoint(model_or_policy: Any, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write our format: {'format', 'version', 'config', 'built_exits', 'model_state_dict', **extra}."""
    model = getattr(model_or_policy, "model", model_or_policy)
    if any(hasattr(m, "_packed_params") for m in model.modules()):
        raise ValueError("cannot save an int8-quantised model: save the fp32 model, quantise when loading")
    reserved = {"format", "version", "config", "built_exits", "model_state_dict"}
    if extra and reserved & set(extra):
        raise ValueError(f"extra must not use the reserved keys {sorted(reserved & set(extra))}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "config": model.config.to_dict(),
                "built_exits": len(model.exit_layers), "model_state_dict": state, **(extra or {})}, str(path))
    return path


def is_own_format(data: dict[str, Any]) -> bool:
    return data.get("format") == FORMAT


def load_own(data: dict[str, Any], max_exit: int | None = None, source: str = "checkpoint") -> DeerModel:
    """A DeerModel from a dict in our format; `max_exit` builds fewer layers than the file has."""
    if data.get("version") != FORMAT_VERSION:
        raise CheckpointError(source, hint=f"format version {data.get('version')!r} is not {FORMAT_VERSION}")
    config = DeerConfig.from_dict(data["config"])
    built = int(data.get("built_exits", len(config.exit_layers)))
    if max_exit is not None and max_exit > built:
        raise ValueError(f"max_exit={max_exit} but {source} only has the layers of exits 1..{built}")
    model = build_model(config, max_exit if max_exit is not None else built, empty=True)
    load_state(model, [Mapped(source, dict(data["model_state_dict"]))])
    return model


# ====================================================================== reference layouts
def load_reference(deer: str | Path | dict | None = None, *, config: DeerConfig | None = None,
                   vision_weights: str | Path | None = None, mpt_weights: str | Path | None = None,
                   openflamingo: str | Path | None = None, max_exit: int | None = None,
                   fresh: tuple[str, ...] = (), trust_pickle: bool = False, base: DeerConfig | None = None,
                   **overrides: Any) -> DeerModel:
    """Assemble a DeerModel from released files, in the reference's order (MPT, then OpenFlamingo, then DeeR).

    deer: a DeeR .pth path (or its already-read dict); its config keys and tensors decide the config unless
        `config` is given (`base`: the preset whose vision/perceiver sizes to assume, default by LLM width).
    vision_weights: open_clip / OpenAI ViT-L-14 weights (needed unless a file provides vision_encoder.*).
    mpt_weights: HF MPT directory or file (needed unless a file holds the MPT blocks).
    openflamingo: OpenFlamingo checkpoint.pt (perceiver, x-attn, embedding; overridden by `deer`).
    fresh: name prefixes to leave initialised, e.g. ('head.', 'aux_heads.') to start training from a backbone.
    """
    deer_name = "DeeR checkpoint" if isinstance(deer, dict) else str(deer)
    deer_data = deer if isinstance(deer, dict) or deer is None else read_file(deer, trust_pickle)
    if config is None:
        if deer_data is None:
            raise ValueError("pass config=DeerConfig.preset(...) when no DeeR checkpoint is given")
        config = config_from_reference(deer_data, base, deer_name, **overrides)
    elif overrides:
        config = config.replace(**overrides)
    model = build_model(config, max_exit, empty=True)
    sources: list[Mapped] = []
    if vision_weights is not None:
        sources.append(map_open_clip(state_of(read_file(vision_weights, trust_pickle)), str(vision_weights)))
    if mpt_weights is not None:
        sources.append(map_hf_mpt(state_of(read_file(mpt_weights, trust_pickle)), config, str(mpt_weights)))
    if openflamingo is not None:
        sources.append(map_flamingo(state_of(read_file(openflamingo, trust_pickle)), config, str(openflamingo)))
    if deer_data is not None:
        sources.append(map_flamingo(state_of(deer_data), config, deer_name))
    if fresh:  # freshly initialised parts must be real values, not the uninitialised memory of empty=True
        init = build_model(config, max_exit).state_dict()
        model.load_state_dict({k: init[k] for k in init if k.startswith(fresh)}, strict=False)
    load_state(model, sources, fresh)
    return model


def export_reference_layout(model_or_policy: Any, path: str | Path, *, include_vision: bool = False,
                            epoch: int = 0) -> Path:
    """Write a DeeR-style .pth (module. prefix, both x-attn aliases, old_decoder_blocks, extra_exit, config keys)
    that `load_reference` (and the reference's own eval) can read."""
    model = getattr(model_or_policy, "model", model_or_policy)
    c = model.config
    state: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        head, _, rest = k.partition(".")
        if head == "perceiver":
            state[k] = v
        elif head == "wte":
            state["lang_encoder.transformer.wte.weight"] = v
        elif head == "xattn":
            i, _, name = rest.partition(".")
            state[f"lang_encoder.gated_cross_attn_layers.{i}.{name}"] = v
            state[f"lang_encoder.transformer.blocks.{i}.gated_cross_attn_layer.{name}"] = v
        elif head == "blocks":
            state[f"lang_encoder.old_decoder_blocks.{rest}"] = v
        elif head == "head":
            state[f"extra_exit.{rest}"] = v
        elif head == "aux_heads":
            k_aux, _, name = rest.partition(".")
            last = int(k_aux) == len(model.exit_layers) - 1
            state[f"lm_head.{name}" if last else f"lm_exit_modules.{k_aux}.{name}"] = v
        elif head == "vision" and include_vision:
            state[f"vision_encoder.visual.{rest}"] = v
    data = {"epoch": epoch, "head_type": "deterministic", "early_exit_layer": model.exit_layers[-1],
            "multi_exit": c.aux_heads, "share_exit": False, "exit_interval": c.exit_interval,
            "exit_dropout": c.head_mlp_dropout, "lstm_dropout": c.head_lstm_dropout, "dropout_mode": "layerwise",
            "mlp_layernorm": c.head_mlp_layernorm, "lstm_layernorm": c.head_lstm_layernorm,
            "mlp_num_hidden_layers": len(c.head_mlp_hidden), "lstm_num_layers": c.head_lstm_layers,
            "pooling": c.pooling, "precision": "fp32",
            "model_state_dict": {"module." + k: v for k, v in state.items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, str(path))
    return path


# ====================================================================== the node's entry point
def load_policy(checkpoint: str | Path | None = None, preset: str | None = "tiny", device: str = "cpu",
                dtype: str = "fp32", max_exit: int | None = None, memory_budget_mb: float | None = None, *,
                tokenizer: str | Path | None = None, vision_weights: str | Path | None = None,
                mpt_weights: str | Path | None = None, exit_interval: int | None = None):
    """A ready DeerPolicy from a checkpoint (ours or a DeeR .pth), building only the layers that may run.

    checkpoint None = the bundled tiny demo checkpoint. `preset` must match the checkpoint's model (None: any).
    `max_exit` and `memory_budget_mb` (LLM weights, in `dtype`) both cap the exits built; the stricter wins.
    `tokenizer` overrides the config's tokenizer directory (needed for of3b/of9b: a local GPT-NeoX tokenizer).
    """
    from deer_ros.model.memory import check_dtype, max_exit_for_budget
    from deer_ros.model.policy import DeerPolicy
    from deer_ros.model.tokenizer import load_tokenizer

    check_dtype(dtype)
    if checkpoint is None:
        from deer_ros.paths import demo_checkpoint

        if preset not in (None, "tiny"):
            raise ValueError(f"model '{preset}' needs a checkpoint: set 'checkpoint' to a file (the bundled demo "
                             "checkpoint is a tiny model)")
        checkpoint = demo_checkpoint()
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"the bundled demo checkpoint {checkpoint} is missing: train it with "
                                    "`deer-ros train` (see README) or pass a checkpoint")
    data = read_file(checkpoint)
    if is_own_format(data):
        config = DeerConfig.from_dict(data["config"])
    else:  # a DeeR .pth: vision/perceiver sizes from the preset, the rest from the file
        config = config_from_reference(data, DeerConfig.preset(preset) if preset else None, str(checkpoint),
                                       **({"exit_interval": exit_interval} if exit_interval else {}))
    if preset is not None and config.name != preset:
        raise ValueError(f"{checkpoint} holds a '{config.name}' model but model preset '{preset}' was requested: "
                         f"set the model parameter to '{config.name}'")
    caps = [k for k in (max_exit, max_exit_for_budget(config, memory_budget_mb, dtype) if memory_budget_mb else None)
            if k is not None]
    cap = min(caps) if caps else None
    if is_own_format(data):
        model = load_own(data, cap, str(checkpoint))
    else:
        model = load_reference(data, config=config, vision_weights=vision_weights, mpt_weights=mpt_weights,
                               max_exit=cap)
    return DeerPolicy(model, load_tokenizer(tokenizer or config.tokenizer), device=device, dtype=dtype)
