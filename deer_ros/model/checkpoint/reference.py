"""Released files -> a DeerModel: the config of a DeeR .pth, assembly in the reference's load order, and the
reverse (a DeeR-style .pth from our model, which the reference's own eval can read)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from deer_ros.model.checkpoint.assemble import Mapped, load_state
from deer_ros.model.checkpoint.errors import CheckpointError
from deer_ros.model.checkpoint.files import read_file, state_of
from deer_ros.model.checkpoint.heads import mlp_groups
from deer_ros.model.checkpoint.layouts import DEER_PTH, HF_MPT, OPEN_CLIP, OPENFLAMINGO, apply_layout
from deer_ros.model.config import DeerConfig
from deer_ros.model.deer import DeerModel, build_model

# Top-level keys of a DeeR .pth that hold run configuration (reference 5.2).
REFERENCE_CONFIG_KEYS = ("epoch", "head_type", "early_exit_layer", "multi_exit", "share_exit", "exit_interval",
                         "exit_dropout", "lstm_dropout", "dropout_mode", "mlp_layernorm", "lstm_layernorm",
                         "mlp_num_hidden_layers", "lstm_num_layers", "pooling", "precision", "layernorm")


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
    groups = mlp_groups(head, "actions.mlp")
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


def reference_sources(config: DeerConfig, *, deer: dict | None = None, deer_name: str = "DeeR checkpoint",
                      vision_weights: str | Path | dict | None = None, mpt_weights: str | Path | dict | None = None,
                      openflamingo: str | Path | dict | None = None, trust_pickle: bool = False,
                      expected: dict[str, tuple[int, ...]] | None = None) -> list[Mapped]:
    """Each given source (a path or an already-read dict) mapped by its format's rules, in the reference's load
    order: CLIP, MPT, OpenFlamingo, then the DeeR file (later sources win)."""
    def state(src: str | Path | dict) -> dict[str, torch.Tensor]:
        return state_of(src if isinstance(src, dict) else read_file(src, trust_pickle))

    def name(src: str | Path | dict, default: str) -> str:
        return default if isinstance(src, dict) else str(src)

    sources: list[Mapped] = []
    for src, layout, default in ((vision_weights, OPEN_CLIP, "CLIP weights"), (mpt_weights, HF_MPT, "MPT weights"),
                                 (openflamingo, OPENFLAMINGO, "OpenFlamingo checkpoint")):
        if src is not None:
            sources.append(apply_layout(layout, state(src), config, name(src, default), expected))
    if deer is not None:
        sources.append(apply_layout(DEER_PTH, state_of(deer), config, deer_name, expected))
    return sources


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
    sources = reference_sources(config, deer=deer_data, deer_name=deer_name, vision_weights=vision_weights,
                                mpt_weights=mpt_weights, openflamingo=openflamingo, trust_pickle=trust_pickle)
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
