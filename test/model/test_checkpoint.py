"""Strict loading of every supported checkpoint layout, on small checkpoints made here in each layout.

The layouts are written by this test from the reference facts (deer-reference.md 5.2-5.3 and the HF/open_clip
naming), independently of checkpoint.export_reference_layout, and read back into a tiny model.
"""
from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

from deer_ros.model import checkpoint as ck
from deer_ros.model.config import DeerConfig
from deer_ros.model.deer import DeerModel
from deer_ros.model.factory import load_policy
from model_fixtures import tiny_model

TINY = DeerConfig.preset("tiny")


def assert_same_weights(a: DeerModel, b: DeerModel, skip: tuple[str, ...] = ()) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for k, v in sb.items():
        if not k.startswith(skip):
            assert torch.equal(sa[k], v), k


# ---------------------------------------------------------------------------- layout writers (test side)
def head_in_layout(head_state: dict[str, torch.Tensor], config: DeerConfig, layout: str) -> dict[str, torch.Tensor]:
    """Our head's tensors re-indexed as a reference MLP Sequential of the given dropout/layernorm layout."""
    def sequential() -> list[type]:
        mods: list[type] = []
        for _ in config.head_mlp_hidden:
            if layout == "last":  # 'last' dropout mode: Linear, LN, ReLU ... Dropout before the output Linear
                mods += [nn.Linear, nn.LayerNorm, nn.ReLU]
            elif layout == "layerwise":
                mods += [nn.Dropout, nn.Linear, nn.LayerNorm, nn.ReLU]
            else:  # legacy without dropout or LayerNorm: Linear 0, 2, 4, ...
                mods += [nn.Linear, nn.ReLU]
        mods += ([nn.Dropout] if layout != "plain" else []) + [nn.Linear]
        return mods

    out = {k: v for k, v in head_state.items() if not k.startswith(("actions.", "gripper."))}
    for mlp in ("actions.mlp", "gripper.mlp"):
        ours = sorted({int(k.split(".")[2]) for k in head_state if k.startswith(mlp)})  # Linear/LN indices
        theirs = [i for i, m in enumerate(sequential()) if m in (nn.Linear, nn.LayerNorm)]
        assert len(ours) == len(theirs)
        for i, j in zip(ours, theirs):
            for p in ("weight", "bias"):
                out[f"{mlp}.{j}.{p}"] = head_state[f"{mlp}.{i}.{p}"]
    return out


def deer_pth(model: DeerModel, *, layout: str = "layerwise", blocks_alias: str = "old", config_keys: bool = True,
             with_vision: bool = True) -> dict:
    """A DeeR .pth dict: module. prefix, both x-attn aliases, MPT blocks under one alias, extra_exit."""
    sd = model.state_dict()
    st: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("perceiver."):
            st[k] = v
        elif k == "wte.weight":
            st["lang_encoder.transformer.wte.weight"] = v
        elif k.startswith("xattn."):
            _, i, rest = k.split(".", 2)
            st[f"lang_encoder.gated_cross_attn_layers.{i}.{rest}"] = v
            st[f"lang_encoder.transformer.blocks.{i}.gated_cross_attn_layer.{rest}"] = v.clone()
        elif k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            name = (f"lang_encoder.old_decoder_blocks.{i}.{rest}" if blocks_alias == "old"
                    else f"lang_encoder.transformer.blocks.{i}.decoder_layer.{rest}")
            st[name] = v
        elif k.startswith("vision.") and with_vision:
            st["vision_encoder.visual." + k[len("vision."):]] = v
    head = {k[len("head."):]: v for k, v in sd.items() if k.startswith("head.")}
    st.update({"extra_exit." + k: v for k, v in head_in_layout(head, model.config, layout).items()})
    st["vision_encoder.transformer.resblocks.0.ln_1.weight"] = torch.ones(8)  # CLIP text tower: ignored
    data = {"model_state_dict": {"module." + k: v for k, v in st.items()},
            "optimizer_state_dict": {}, "exit_interval": model.config.exit_interval}
    if config_keys:
        data.update(early_exit_layer=model.config.last_layer, mlp_num_hidden_layers=len(model.config.head_mlp_hidden),
                    lstm_num_layers=model.config.head_lstm_layers, mlp_layernorm=layout != "plain",
                    lstm_layernorm=True, dropout_mode=layout, pooling="max", multi_exit=False)
    return data


def clip_state(model: DeerModel) -> dict[str, torch.Tensor]:
    """A whole-CLIP state dict: the vision tower under visual.* plus a text tower."""
    st = {"visual." + k[len("vision."):]: v for k, v in model.state_dict().items() if k.startswith("vision.")}
    st.update({"token_embedding.weight": torch.zeros(10, 8), "ln_final.weight": torch.ones(8),
               "logit_scale": torch.ones(())})
    return st


def mpt_state(model: DeerModel, foundry: bool = False, extra_vocab: int = 8) -> dict[str, torch.Tensor]:
    """HF MPT weights: transformer.blocks.*, ln_f, and an embedding with more rows than the Flamingo one."""
    st = {}
    for k, v in model.state_dict().items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            if foundry:
                rest = (rest.replace("ln_1.", "norm_1.").replace("ln_2.", "norm_2.")
                        .replace("mlp.mlp_up.", "ffn.up_proj.").replace("mlp.mlp_down.", "ffn.down_proj."))
            st[f"transformer.blocks.{i}.{rest}"] = v
    st["transformer.wte.weight"] = torch.zeros(model.config.vocab_size + extra_vocab, model.config.d_model)
    st["transformer.ln_f.weight"] = torch.ones(model.config.d_model)
    return st


# ---------------------------------------------------------------------------- our own format
def test_own_format_round_trip_and_max_exit(tmp_path):
    model = tiny_model()
    path = ck.save_checkpoint(model, tmp_path / "m.pt", extra={"epoch": 3})
    data = ck.read_file(path)
    assert data["format"] == "deer_ros" and data["epoch"] == 3
    assert_same_weights(model, ck.load_own(data))
    small = ck.load_own(data, max_exit=1)
    assert small.n_layers == 2 and small.exit_layers == [1] and len(small.blocks) == 2
    assert_same_weights(model, small)
    # a file saved from a DeeR-S model cannot grow layers it never had
    ck.save_checkpoint(small, tmp_path / "s.pt")
    with pytest.raises(ValueError, match="only has the layers of exits 1..1"):
        ck.load_own(ck.read_file(tmp_path / "s.pt"), max_exit=2)


def test_own_format_strictness(tmp_path):
    data = ck.read_file(ck.save_checkpoint(tiny_model(), tmp_path / "m.pt"))
    sd = data["model_state_dict"]
    del sd["blocks.3.attn.Wqkv.weight"]
    sd["blocks.0.attn.bogus"] = torch.zeros(1)
    sd["head.actions.mlp.9.weight"] = torch.zeros(3, 3)
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_own(data)
    e = err.value
    assert e.missing == ["blocks.3.attn.Wqkv.weight"] and e.unexpected == ["blocks.0.attn.bogus"]
    assert e.mis_shaped == ["head.actions.mlp.9.weight (3, 3) (model (6, 32))"]
    for text in ("1 missing", "1 unexpected", "1 mis-shaped", "blocks.3.attn.Wqkv.weight"):
        assert text in str(e)


# ---------------------------------------------------------------------------- the DeeR .pth layout
@pytest.mark.parametrize("layout", ["layerwise", "last", "plain"])
@pytest.mark.parametrize("blocks_alias", ["old", "decoder_layer"])
def test_deer_pth_layouts(tmp_path, layout, blocks_alias):
    overrides = {"head_mlp_layernorm": False} if layout == "plain" else {}
    model = tiny_model(**overrides)
    torch.save(deer_pth(model, layout=layout, blocks_alias=blocks_alias), tmp_path / "deer.pth")
    loaded = ck.load_reference(tmp_path / "deer.pth", base=TINY)
    assert loaded.config.head_mlp_layernorm == (layout != "plain")
    assert_same_weights(model, loaded)


def test_deer_pth_without_config_keys_reads_the_head_from_its_tensors(tmp_path):
    model = tiny_model()
    data = deer_pth(model, config_keys=False)
    torch.save(data, tmp_path / "deer.pth")
    loaded = ck.load_reference(tmp_path / "deer.pth", base=TINY)
    assert loaded.config.head_mlp_hidden == TINY.head_mlp_hidden and loaded.config.head_lstm_layers == 4
    assert_same_weights(model, loaded)
    del data["exit_interval"]  # the one thing the tensors cannot tell
    torch.save(data, tmp_path / "deer.pth")
    with pytest.raises(ck.CheckpointError, match="exit_interval"):
        ck.load_reference(tmp_path / "deer.pth", base=TINY)
    assert ck.load_reference(tmp_path / "deer.pth", base=TINY, exit_interval=2).exit_layers == [1, 3, 5]


def test_deer_pth_errors_are_specific(tmp_path):
    model = tiny_model()
    data = deer_pth(model)
    data["mlp_num_hidden_layers"] = 3  # the eval-side default that does not match a 2-hidden-layer head
    torch.save(data, tmp_path / "a.pth")
    with pytest.raises(ck.CheckpointError, match="mlp_num_hidden_layers: file says 3, tensors have 2"):
        ck.load_reference(tmp_path / "a.pth", base=TINY)

    data = deer_pth(model)
    data["model_state_dict"] = {k: v for k, v in data["model_state_dict"].items() if "extra_exit" not in k}
    torch.save(data, tmp_path / "b.pth")
    with pytest.raises(ck.CheckpointError, match="random head"):
        ck.load_reference(tmp_path / "b.pth", base=TINY)

    data = deer_pth(model)
    data["model_state_dict"]["module.lang_encoder.transformer.blocks.2.gated_cross_attn_layer.attn_gate"] += 1
    torch.save(data, tmp_path / "c.pth")
    with pytest.raises(ck.CheckpointError, match="hold different values"):
        ck.load_reference(tmp_path / "c.pth", base=TINY)

    data = deer_pth(model, with_vision=False)
    data["model_state_dict"]["module.lang_encoder.something_new"] = torch.zeros(2)
    torch.save(data, tmp_path / "d.pth")
    with pytest.raises(ck.CheckpointError) as err:
        ck.load_reference(tmp_path / "d.pth", base=TINY)
    assert any(k.startswith("vision.") for k in err.value.missing)
    assert err.value.unexpected == [f"{tmp_path / 'd.pth'}: lang_encoder.something_new"]
    assert "vision <- CLIP weights" in str(err.value)


def write_released(model: DeerModel, folder) -> dict:
    """The model as three released files in `folder`: deer.pth (no CLIP, no MPT blocks), clip.bin, mpt/ (HF)."""
    data = deer_pth(model, with_vision=False)
    data["model_state_dict"] = {k: v for k, v in data["model_state_dict"].items() if "decoder_blocks" not in k}
    torch.save(data, folder / "deer.pth")
    torch.save(clip_state(model), folder / "clip.bin")
    (folder / "mpt").mkdir()
    torch.save(mpt_state(model), folder / "mpt" / "pytorch_model.bin")
    return data


def test_deer_pth_with_separate_clip_and_mpt_weights_and_max_exit(tmp_path):
    model = tiny_model()
    write_released(model, tmp_path)
    loaded = ck.load_reference(tmp_path / "deer.pth", base=TINY, vision_weights=tmp_path / "clip.bin",
                               mpt_weights=tmp_path / "mpt", max_exit=2)
    assert loaded.n_layers == 4
    assert_same_weights(model, loaded)


def test_export_reference_layout_round_trip(tmp_path):
    model = tiny_model(aux_heads=True)
    ck.export_reference_layout(model, tmp_path / "ref.pth", include_vision=True)
    data = torch.load(tmp_path / "ref.pth", weights_only=True)
    keys = data["model_state_dict"]
    assert all(k.startswith("module.") for k in keys)
    assert "module.lang_encoder.transformer.blocks.1.gated_cross_attn_layer.attn_gate" in keys
    assert "module.lm_head.rnn.layers.0.weight_ih_l0" in keys and "module.lm_exit_modules.1.actions.mlp.9.bias" in keys
    assert_same_weights(model, ck.load_reference(tmp_path / "ref.pth", base=TINY, aux_heads=True))
    # for inference the aux heads are known-unused and are skipped, not errors
    assert ck.load_reference(tmp_path / "ref.pth", base=TINY).aux_heads is None


# ---------------------------------------------------------------------------- OpenFlamingo, HF MPT, open_clip
def openflamingo_state(model: DeerModel) -> dict[str, torch.Tensor]:
    """OpenFlamingo checkpoint.pt: no prefix, CLIP directly under vision_encoder.*, both aliases, ln_f."""
    st = {k[len("module."):]: v for k, v in deer_pth(model, with_vision=False)["model_state_dict"].items()
          if "extra_exit" not in k and "vision_encoder" not in k}
    st.update({"vision_encoder." + k[len("vision."):]: v for k, v in model.state_dict().items()
               if k.startswith("vision.")})
    st["lang_encoder.transformer.ln_f.weight"] = torch.ones(model.config.d_model)
    return st


def test_openflamingo_checkpoint_with_fresh_heads_for_training(tmp_path):
    deep = tiny_model(n_layers=8)  # an LLM deeper than the DeeR model: layers 6, 7 must be skipped
    full = tiny_model(n_layers=8, last_layer=7)
    torch.save(openflamingo_state(full), tmp_path / "checkpoint.pt")
    with pytest.raises(ck.CheckpointError, match="head <- a trained head"):
        ck.load_reference(openflamingo=tmp_path / "checkpoint.pt", config=deep.config)
    loaded = ck.load_reference(openflamingo=tmp_path / "checkpoint.pt", config=deep.config, fresh=("head.",))
    assert loaded.n_layers == 6
    assert_same_weights(full, loaded, skip=("head.",))
    assert all(torch.isfinite(p).all() for p in loaded.head.parameters())


@pytest.mark.parametrize("kind", ["bin", "safetensors", "sharded", "foundry"])
def test_hf_mpt_weights(tmp_path, kind):
    from safetensors.torch import save_file

    model = tiny_model()
    st = mpt_state(model, foundry=kind == "foundry")
    d = tmp_path / "mpt"
    d.mkdir()
    if kind in ("bin", "foundry"):
        torch.save(st, d / "pytorch_model.bin")
    elif kind == "safetensors":
        save_file(st, str(d / "model.safetensors"))
    else:
        names = sorted(st)
        half = len(names) // 2
        weight_map = {}
        for shard, part in (("model-00001-of-00002.safetensors", names[:half]),
                            ("model-00002-of-00002.safetensors", names[half:])):
            save_file({k: st[k] for k in part}, str(d / shard))
            weight_map.update({k: shard for k in part})
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (d / "config.json").write_text("{}")
    mapped = ck.map_hf_mpt(ck.state_of(ck.read_file(d)), TINY)
    assert "transformer.wte.weight" in mapped.ignored and "transformer.ln_f.weight" in mapped.ignored
    assert "wte.weight" not in mapped.tensors  # 100 rows in the HF file, 92 in the Flamingo-resized model
    blocks = {k: v for k, v in model.state_dict().items() if k.startswith("blocks.")}
    assert mapped.tensors.keys() == blocks.keys()
    assert all(torch.equal(mapped.tensors[k], v) for k, v in blocks.items())


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_open_clip_weights_give_the_same_tokens_as_open_clip(tmp_path):
    """Weights of a real open_clip CLIP model load by name, and our tokens equal open_clip 2.20's output_tokens."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    from deer_ros.model.vision import patch_tokens

    torch.manual_seed(1)
    vision = CLIPVisionCfg(layers=TINY.vision_layers, width=TINY.vision_width, head_width=TINY.vision_head_width,
                           patch_size=TINY.vision_patch, image_size=TINY.image_size)
    clip = open_clip.model.CLIP(TINY.vision_output_dim, vision, CLIPTextCfg(width=32, heads=2, layers=1),
                                quick_gelu=True).eval()
    torch.save(clip.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    torch.jit.script(clip).save(str(tmp_path / "ViT-tiny.pt"))  # OpenAI ships TorchScript archives
    for name in ("open_clip_pytorch_model.bin", "ViT-tiny.pt"):
        mapped = ck.map_open_clip(ck.state_of(ck.read_file(tmp_path / name)))
        assert "token_embedding.weight" in mapped.ignored
        model = tiny_model()
        ck.load_state(model, [mapped], fresh=tuple(k for k in ("perceiver", "wte", "blocks", "xattn", "head")))
        x = torch.randn(3, 3, TINY.image_size, TINY.image_size)
        clip.visual.output_tokens = True
        with torch.no_grad():
            _, expected = clip.visual(x)
            assert torch.equal(patch_tokens(model.vision, x), expected)


def test_unreadable_and_unknown_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        ck.read_file(tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):
        ck.read_file(tmp_path / "empty")
    torch.save({"args": argparse.Namespace(lr=1e-4)}, tmp_path / "pickled.pt")  # as training scripts do
    with pytest.raises(ck.CheckpointError, match="trust_pickle=True"):
        ck.read_file(tmp_path / "pickled.pt")
    assert ck.read_file(tmp_path / "pickled.pt", trust_pickle=True)["args"].lr == 1e-4
    with pytest.raises(ck.CheckpointError, match="no CLIP vision tower"):
        ck.map_open_clip({"vision_model.embeddings.patch_embedding.weight": torch.zeros(1)})


# ---------------------------------------------------------------------------- load_policy (the node's entry)
def test_load_policy_from_our_single_file_and_a_deer_pth(tmp_path, monkeypatch):
    model = tiny_model()
    path = ck.save_checkpoint(model, tmp_path / "tiny.pt")
    policy = load_policy(str(path), preset="tiny", max_exit=2)
    assert [e.index for e in policy.exits] == [1, 2] and policy.model.n_layers == 4
    with pytest.raises(ValueError, match="holds a 'tiny' model but model preset 'of3b'"):
        load_policy(str(path), preset="of3b")
    # the memory budget picks the deepest exit whose LLM weights fit
    from deer_ros.model.memory import llm_weight_bytes

    budget = llm_weight_bytes(TINY, 4, "fp32") / 2 ** 20 + 0.01
    assert load_policy(str(path), memory_budget_mb=budget).model.n_layers == 4
    with pytest.raises(ValueError, match="too small"):
        load_policy(str(path), memory_budget_mb=0.01)
    # no checkpoint: the bundled demo checkpoint, with a clear error while it does not exist
    import deer_ros.paths

    monkeypatch.setattr(deer_ros.paths, "demo_checkpoint", lambda: tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="make_demo_model.sh"):
        load_policy(None)
    monkeypatch.setattr(deer_ros.paths, "demo_checkpoint", lambda: path)
    assert load_policy(None).model.n_layers == 6
    # a DeeR .pth works too: sizes from the preset and the file
    torch.save(deer_pth(model), tmp_path / "deer.pth")
    assert_same_weights(model, load_policy(str(tmp_path / "deer.pth"), preset="tiny").model)
