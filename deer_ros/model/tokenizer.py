"""Text side: the tokenizer (a local Hugging Face tokenizer or the bundled tiny one) and the DeeR prompt.

Prompt per control step (reference 1.5): "<image>" + instruction.strip() + "<|endofchunk|>" + eos, no BOS,
right padding to the longest prompt of a batch, truncated to `max_text_tokens`. The `<image>` position marks
where the visual tokens become visible to the gated cross-attention; every token after it attends to them.

Real models use the MPT tokenizer (GPT-NeoX-20B BPE) from a local directory; OpenFlamingo appends
`<|endofchunk|>`, `<image>` and then `<PAD>` to it, which this module repeats so token ids match the released
embedding rows. The `tiny` preset ships a small word-level tokenizer over the CALVIN instruction vocabulary
(deer_ros/model/assets/tiny_tokenizer, rebuilt by `build_tiny_tokenizer`), so the demo needs no download.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from deer_ros.model.config import BUNDLED_TOKENIZER

IMAGE_TOKEN = "<image>"
END_OF_CHUNK = "<|endofchunk|>"
PAD_TOKEN = "<PAD>"
EOS_TOKEN = "<|endoftext|>"
UNK_TOKEN = "[UNK]"

ASSETS = Path(__file__).resolve().parent / "assets"
TINY_TOKENIZER_DIR = ASSETS / "tiny_tokenizer"

# Every word of the CALVIN instruction annotations (calvin_models/conf/annotations/new_playtable*.yaml), sorted.
# The tiny tokenizer maps any other word to [UNK]; it is a demo tokenizer, not a language model vocabulary.
CALVIN_WORDS = (
    "90 a all and another block blocks blue bulb button cabinet close collapse degrees door down downwards "
    "drawer each falls from go grasp grasped green handle in into is it led left let lift light lightbulb "
    "lying lamp move object of off on one open other pick pink place pull push put red remove right rotate "
    "shelf side slide slider sliding stack stacked store sweep switch table take that the then to toggle top "
    "tower towards turn unstack up upwards yellow"
).split()
PUNCTUATION = (",", ".", "!", "?", "'", "-")


def build_tiny_tokenizer(out_dir: Path = TINY_TOKENIZER_DIR) -> Path:
    """Write the bundled word-level tokenizer (lower-cased, whitespace/punctuation split) to `out_dir`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [UNK_TOKEN, EOS_TOKEN, PAD_TOKEN, END_OF_CHUNK, IMAGE_TOKEN]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(CALVIN_WORDS)) + list(PUNCTUATION))}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
                                   unk_token=UNK_TOKEN, padding_side="right")
    fast.add_tokens([END_OF_CHUNK, IMAGE_TOKEN], special_tokens=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return out_dir


def load_tokenizer(source: str | Path):
    """A transformers tokenizer from BUNDLED_TOKENIZER or a local directory, with OpenFlamingo's special tokens.

    Never downloads: a directory that does not exist is an error that says what to pass instead.
    """
    from transformers import AutoTokenizer

    if not source:
        raise ValueError("no tokenizer given: pass a local tokenizer directory (e.g. a copy of "
                         "EleutherAI/gpt-neox-20b's tokenizer files for the of3b/of9b presets) or "
                         f"'{BUNDLED_TOKENIZER}' for the tiny preset")
    path = TINY_TOKENIZER_DIR if str(source) == BUNDLED_TOKENIZER else Path(source)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist: pass a local directory holding "
                                "tokenizer.json / tokenizer_config.json (no hub downloads are made)")
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    # OpenFlamingo's additions, in its order, so ids match the released embedding rows (50277, 50278, 50279).
    missing = [t for t in (END_OF_CHUNK, IMAGE_TOKEN) if t not in tok.get_vocab()]
    if missing:
        tok.add_tokens(missing, special_tokens=True)
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": PAD_TOKEN})
    if tok.eos_token is None:
        raise ValueError(f"tokenizer in {path} has no eos token; the DeeR prompt ends with it")
    tok.padding_side = "right"
    return tok


def prompt(instruction: str, eos_token: str) -> str:
    """The DeeR prompt string for one instruction."""
    return IMAGE_TOKEN + instruction.strip() + END_OF_CHUNK + eos_token


@dataclass(frozen=True)
class EncodedPrompt:
    input_ids: torch.Tensor  # (B, L) int64
    attention_mask: torch.Tensor  # (B, L) bool, False on right padding
    media_locations: torch.Tensor  # (B, L) bool, True at <image>


class PromptEncoder:
    """Tokenises instructions into DeeR prompts (batched, right-padded)."""

    def __init__(self, tokenizer, max_tokens: int, vocab_size: int | None = None):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if vocab_size is not None and len(tokenizer) > vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding has only "
                             f"{vocab_size} rows: use the tokenizer the model was trained with")

    def __call__(self, instructions: list[str]) -> EncodedPrompt:
        for text in instructions:
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"instruction must be a non-empty string (got {text!r})")
        texts = [prompt(t, self.tokenizer.eos_token) for t in instructions]
        enc = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_tokens,
                             return_tensors="pt", add_special_tokens=False)
        ids = enc["input_ids"].long()
        return EncodedPrompt(ids, enc["attention_mask"].bool(), ids == self.image_token_id)
