"""The model's parts: config presets, tokenizer and prompt, preprocessing, vision tokens, MPT block, head, model."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from deer_ros.model import tokenizer as T
from deer_ros.model.config import DeerConfig
from deer_ros.model.deer import build_model
from deer_ros.model.head import ActionHead
from deer_ros.model.mpt import MPTBlock, alibi_slopes, causal_alibi_bias
from deer_ros.model.preprocess import ImagePreprocessor
from deer_ros.model.vision import patch_tokens
from model_fixtures import open_gates, tiny_model


# ---------------------------------------------------------------------------- config
def test_presets():
    of3b, of9b, tiny = (DeerConfig.preset(n) for n in ("of3b", "of9b", "tiny"))
    assert of3b.exit_layers == [1, 3, 5, 7, 9, 11] and of3b.visual_tokens == 128 and of3b.vision_tokens == 256
    assert (of3b.d_model, of3b.n_heads, of3b.n_layers, of3b.vocab_size, of3b.qk_ln) == (2048, 16, 24, 50280, True)
    assert all(of3b.has_xattn(i) for i in range(12))
    assert (of9b.d_model, of9b.n_layers, of9b.xattn_every, of9b.qk_ln, len(of9b.exit_layers)) == (4096, 32, 4, False, 8)
    assert tiny.exit_layers == [1, 3, 5] and tiny.layers_for_exit(2) == 4 and tiny.layers_for_exit(None) == 6
    assert DeerConfig.preset("of3b", max_text_tokens=40).max_text_tokens == 40
    assert DeerConfig.from_dict(json.loads(json.dumps(tiny.to_dict()))) == tiny
    assert DeerConfig.preset("of3b", exit_interval=1).exit_layers == list(range(12))


@pytest.mark.parametrize("changes, message", [
    ({"d_model": 65}, "not a multiple of n_heads"),
    ({"last_layer": 6}, "last_layer 6 must be in 0..n_layers-1"),
    ({"image_size": 70}, "not a multiple of vision_patch"),
    ({"n_heads": 0}, "n_heads must be a positive integer"),
    ({"pooling": "mean"}, "pooling must be 'max' or 'avg'"),
    ({"head_mlp_dropout": 1.0}, r"head_mlp_dropout must be in \[0, 1\)"),
    ({"head_mlp_hidden": ()}, "head_mlp_hidden"),
])
def test_invalid_configs_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        DeerConfig.preset("tiny", **changes)


def test_unknown_preset_key_and_exit():
    with pytest.raises(ValueError, match="unknown model preset 'of7b'; choose one of tiny, of3b, of9b"):
        DeerConfig.preset("of7b")
    with pytest.raises(ValueError, match="unknown DeerConfig keys"):
        DeerConfig.preset("tiny", n_layer=3)
    with pytest.raises(ValueError, match="max_exit=4 is out of range"):
        DeerConfig.preset("tiny").layers_for_exit(4)


# ---------------------------------------------------------------------------- tokenizer and prompt
def test_bundled_tokenizer_is_what_the_builder_makes(tmp_path, tiny_tokenizer):
    T.build_tiny_tokenizer(tmp_path)
    rebuilt = T.load_tokenizer(tmp_path)
    assert rebuilt.get_vocab() == tiny_tokenizer.get_vocab()
    assert len(tiny_tokenizer) == DeerConfig.preset("tiny").vocab_size


def test_prompt_format(tiny_tokenizer):
    enc = T.PromptEncoder(tiny_tokenizer, 32)(["  Pick up the red block ", "open the drawer"])
    tokens = tiny_tokenizer.convert_ids_to_tokens(enc.input_ids[0].tolist())
    assert tokens == ["<image>", "pick", "up", "the", "red", "block", "<|endofchunk|>", "<|endoftext|>"]
    assert enc.attention_mask.tolist() == [[True] * 8, [True] * 6 + [False] * 2]  # right padding
    assert enc.input_ids[1, 6:].tolist() == [tiny_tokenizer.pad_token_id] * 2
    assert enc.media_locations.tolist() == [[True] + [False] * 7] * 2
    long = T.PromptEncoder(tiny_tokenizer, 5)(["push the red block to the right"])
    assert long.input_ids.shape == (1, 5)  # truncated like the reference (max_length, truncation)


def test_openflamingo_special_tokens_are_appended_in_order(tmp_path):
    """A GPT-NeoX-like tokenizer without the Flamingo tokens gets <|endofchunk|>, <image>, <PAD> at the end."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"[UNK]": 0, "<|endoftext|>": 1, "open": 2, "the": 3, "drawer": 4},
                                      unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>").save_pretrained(str(tmp_path))
    tok = T.load_tokenizer(tmp_path)
    assert tok.convert_tokens_to_ids(["<|endofchunk|>", "<image>", "<PAD>"]) == [5, 6, 7]
    assert tok.pad_token == "<PAD>" and len(tok) == 8
    with pytest.raises(ValueError, match="only 7 rows"):
        T.PromptEncoder(tok, 32, vocab_size=7)


def test_tokenizer_errors(tmp_path):
    with pytest.raises(ValueError, match="no tokenizer given"):
        T.load_tokenizer("")
    with pytest.raises(FileNotFoundError, match="no hub downloads"):
        T.load_tokenizer(tmp_path / "gpt-neox-20b")


# ---------------------------------------------------------------------------- preprocessing
def clip_val_transform(image: np.ndarray, size: int) -> np.ndarray:
    """The open_clip val transform restated: PIL bicubic resize of the short side, centre crop, CLIP mean/std."""
    h, w = image.shape[:2]
    long = int(size * max(h, w) / min(h, w))  # torchvision truncates the long side
    resized = Image.fromarray(image).resize((size, long)[:: 1 if w <= h else -1], Image.BICUBIC)
    left, top = int(round((resized.width - size) / 2.0)), int(round((resized.height - size) / 2.0))
    x = np.asarray(resized.crop((left, top, left + size, top + size)), np.float32) / 255.0
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    return ((x - mean) / std).transpose(2, 0, 1).astype(np.float32)


def test_preprocessing_is_the_clip_val_transform(frames):
    static, gripper = frames[0]
    batch = ImagePreprocessor(224)(static, gripper)
    assert batch.shape == (1, 2, 3, 224, 224) and batch.dtype == torch.float32
    np.testing.assert_allclose(batch[0, 0].numpy(), clip_val_transform(static, 224), atol=1e-5)
    np.testing.assert_allclose(batch[0, 1].numpy(), clip_val_transform(gripper, 224), atol=1e-5)
    wide = np.random.default_rng(0).integers(0, 255, (120, 200, 3), np.uint8)
    np.testing.assert_allclose(ImagePreprocessor(64).one(wide).numpy(), clip_val_transform(wide, 64), atol=1e-5)


# ---------------------------------------------------------------------------- vision tokens
def test_patch_tokens_are_taken_before_ln_post(model):
    """Same tokens whichever transformer layout an open_clip version uses, and not ln_post-normalised."""
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = patch_tokens(model.vision, x)
        assert tokens.shape == (2, 16, 64)
        assert not torch.allclose(tokens, model.vision.ln_post(tokens), atol=1e-2)

        class BatchFirst(torch.nn.Module):  # a newer open_clip transformer: (N, L, D) in and out
            batch_first = True

            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, t):
                return self.inner(t.transpose(0, 1)).transpose(0, 1)

        model.vision.transformer = BatchFirst(model.vision.transformer)
        torch.testing.assert_close(patch_tokens(model.vision, x), tokens)


# ---------------------------------------------------------------------------- MPT
def test_alibi_slopes_follow_mosaicml():
    assert torch.allclose(alibi_slopes(16, 8), 2.0 ** -(torch.arange(1, 17) * 0.5))
    assert torch.allclose(alibi_slopes(4, 8), torch.tensor([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8]))
    eight = 2.0 ** -torch.arange(1, 9, dtype=torch.float32)  # 6 heads: MosaicML interleaves the 8-head slopes
    assert torch.allclose(alibi_slopes(6, 8), torch.cat([eight[1::2], eight[::2]])[:6])


def naive_mpt_block(block: MPTBlock, x: torch.Tensor, n_heads: int, bias_max: int) -> torch.Tensor:
    """MosaicML's block written out: bias slope*(j-(L-1)) on every row plus a causal mask, as mosaic_gpt does."""
    B, L, D = x.shape
    hd = D // n_heads
    h = block.ln_1(x)
    q, k, v = (h @ block.attn.Wqkv.weight.T).split(D, dim=-1)
    q, k = block.attn.q_ln(q), block.attn.k_ln(k)
    q, k, v = (t.reshape(B, L, n_heads, hd).permute(0, 2, 1, 3) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    slopes = 1.0 / 2 ** (torch.arange(1, n_heads + 1) * (bias_max / n_heads))
    scores = scores + slopes.view(1, n_heads, 1, 1) * torch.arange(1 - L, 1).view(1, 1, 1, L)
    scores = scores.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
    y = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(B, L, D) @ block.attn.out_proj.weight.T
    x = x + y
    up = torch.nn.functional.gelu(block.ln_2(x) @ block.mlp.mlp_up.weight.T)
    return x + up @ block.mlp.mlp_down.weight.T


def test_mpt_block_equals_mosaicml_formulation():
    torch.manual_seed(0)
    c = DeerConfig.preset("tiny")
    block = MPTBlock(c).eval()
    with torch.no_grad():
        for ln in (block.ln_1, block.ln_2, block.attn.q_ln, block.attn.k_ln):
            ln.weight.uniform_(0.5, 1.5)
        x = torch.randn(2, 9, c.d_model)
        out = block(x, causal_alibi_bias(c.n_heads, 9, c.alibi_bias_max))
        torch.testing.assert_close(out, naive_mpt_block(block, x, c.n_heads, c.alibi_bias_max), rtol=1e-5, atol=1e-5)
    names = {k for k in block.state_dict()}
    assert names == {"ln_1.weight", "ln_2.weight", "attn.Wqkv.weight", "attn.q_ln.weight", "attn.k_ln.weight",
                     "attn.out_proj.weight", "mlp.mlp_up.weight", "mlp.mlp_down.weight"}  # no biases


def test_mpt_block_is_causal_and_ignores_right_padding():
    torch.manual_seed(0)
    c = DeerConfig.preset("tiny")
    block = MPTBlock(c).eval()
    x = torch.randn(1, 8, c.d_model)
    y = x.clone()
    y[0, 5:] = torch.randn(3, c.d_model)  # change the future / the padding
    with torch.no_grad():
        a = block(x, causal_alibi_bias(c.n_heads, 8, 8))
        b = block(y, causal_alibi_bias(c.n_heads, 8, 8, key_mask=torch.tensor([[True] * 5 + [False] * 3])))
    torch.testing.assert_close(a[0, :5], b[0, :5])


# ---------------------------------------------------------------------------- head
def test_head_layout_and_step_equals_sequence():
    torch.manual_seed(0)
    c = DeerConfig.preset("tiny")
    head = ActionHead(c).eval()
    keys = set(head.state_dict())
    assert {"rnn.layers.0.weight_ih_l0", "rnn.layers.1.weight", "rnn.layers.9.weight_hh_l0", "rnn.layers.10.bias",
            "actions.mlp.1.weight", "actions.mlp.2.weight", "actions.mlp.9.weight", "gripper.mlp.9.bias"} <= keys
    assert head.state_dict()["actions.mlp.9.weight"].shape == (6, 32)
    feats = torch.randn(2, 5, c.d_model)
    with torch.no_grad():
        whole = head(feats)
        state = None
        for t in range(5):
            before = None if state is None else (state[0].clone(), state[1].clone())
            out = head.step(feats[:, t], state)
            if before is not None:  # step never modifies the state it is given
                assert torch.equal(before[0], state[0]) and torch.equal(before[1], state[1])
            torch.testing.assert_close(out.pose[:, 0], whole.pose[:, t], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(out.gripper_logit[:, 0], whole.gripper_logit[:, t], rtol=1e-5, atol=1e-6)
            state = out.state
    assert whole.pose.abs().max() <= 1 and state[0].shape == (4, 2, 64)
    plain = ActionHead(DeerConfig.preset("tiny", head_lstm_layernorm=False, head_mlp_layernorm=False))
    assert "rnn.weight_ih_l3" in plain.state_dict() and "actions.mlp.7.weight" in plain.state_dict()


# ---------------------------------------------------------------------------- the model
def test_cameras_are_encoded_in_one_batch_static_first(model):
    images = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        media = model.encode_vision(images)
        static = model.perceiver(patch_tokens(model.vision, images[:, 0])[:, None, None])
        swapped = model.encode_vision(images.flip(1))
    assert media.shape == (1, 1, 16, 64)
    torch.testing.assert_close(media[0, 0, :8], static[0, 0])
    torch.testing.assert_close(swapped[0, 0, 8:], media[0, 0, :8])  # no camera embedding: order is all there is


def test_closed_gates_hide_the_images_open_gates_show_them(tiny_tokenizer):
    torch.manual_seed(0)
    model = build_model(DeerConfig.preset("tiny")).eval()  # OpenFlamingo init: gates at 0
    enc = T.PromptEncoder(tiny_tokenizer, 32)(["open the drawer"])
    a, b = torch.randn(1, 2, 3, 64, 64), torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        def feats(images):
            return model.forward_exit_features(images, enc.input_ids, enc.media_locations)

        assert torch.equal(feats(a), feats(b))
        open_gates(model)
        assert not torch.allclose(feats(a), feats(b))


def test_max_exit_builds_only_the_layers_that_can_run():
    small = tiny_model(max_exit=1)
    assert small.n_layers == 2 and len(small.blocks) == 2 and list(small.xattn) == ["0", "1"]
    assert small.exit_layers == [1]
    assert tiny_model(aux_heads=True).aux_heads is not None and len(tiny_model(aux_heads=True).aux_heads) == 3
