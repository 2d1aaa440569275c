"""Convert released weights (DeeR .pth + CLIP + MPT, or OpenFlamingo + CLIP + MPT) into one deer_ros checkpoint.

The policy node loads a single file (its `checkpoint` parameter); real models come as several files. This joins
them once, strictly (checkpoint.load_reference), and records the local tokenizer directory in the config:

  python -m deer_ros.model.convert --deer DeeR_task_D_D.pth --vision-weights ViT-L-14.pt \\
      --mpt-weights mpt-1b-redpajama-200b-dolly/ --tokenizer gpt-neox-20b/ --exit-interval 2 --out deer_d.pt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deer_ros.cli import add_deprecated_alias
from deer_ros.model.checkpoint import CheckpointError, load_reference, save_checkpoint
from deer_ros.model.config import PRESETS, DeerConfig


def convert(out: str | Path, *, deer: str | Path | None = None, preset: str = "of3b",
            vision_weights: str | Path | None = None, mpt_weights: str | Path | None = None,
            openflamingo: str | Path | None = None, tokenizer: str | Path | None = None,
            exit_interval: int | None = None, max_exit: int | None = None, fresh_heads: bool = False) -> Path:
    """Assemble the model from the given files and save it in our format; returns the written path."""
    overrides = {"exit_interval": exit_interval} if exit_interval else {}
    if tokenizer is not None:
        tokenizer = Path(tokenizer).resolve()
        if not tokenizer.is_dir():
            raise FileNotFoundError(f"tokenizer directory {tokenizer} does not exist")
        overrides["tokenizer"] = str(tokenizer)
    base = DeerConfig.preset(preset)
    model = load_reference(deer, base=base, config=None if deer else base.replace(**overrides),
                           vision_weights=vision_weights, mpt_weights=mpt_weights, openflamingo=openflamingo,
                           max_exit=max_exit, fresh=("head.", "aux_heads.") if fresh_heads else (),
                           **(overrides if deer else {}))
    return save_checkpoint(model, out, extra={"converted_from": {
        "deer": str(deer), "vision_weights": str(vision_weights), "mpt_weights": str(mpt_weights),
        "openflamingo": str(openflamingo), "fresh_heads": fresh_heads}})


def convert_main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="deer-ros convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the deer_ros checkpoint to write")
    parser.add_argument("--deer", help="DeeR .pth (heads, perceiver, x-attn, embedding; config keys)")
    parser.add_argument("--model", default="of3b", choices=sorted(PRESETS), help="model preset: the architecture "
                        "(default of3b)")
    add_deprecated_alias(parser, "--preset", "--model", dest="model")
    parser.add_argument("--vision-weights", help="open_clip / OpenAI ViT-L-14 weights")
    parser.add_argument("--mpt-weights", help="Hugging Face MPT directory or weights file")
    parser.add_argument("--openflamingo", help="OpenFlamingo checkpoint.pt")
    parser.add_argument("--tokenizer", help="local tokenizer directory (GPT-NeoX-20B for of3b/of9b)")
    parser.add_argument("--exit-interval", type=int, help="needed when the .pth does not record it (DeeR: 2)")
    parser.add_argument("--max-exit", type=int, help="keep only the layers of exits 1..N")
    parser.add_argument("--fresh-heads", action="store_true",
                        help="no DeeR file: initialise the action heads (a starting point for training)")
    args = parser.parse_args(argv)
    if args.deer is None and not args.fresh_heads:
        parser.error("without --deer the heads would be untrained: pass --fresh-heads to mean that")
    try:
        path = convert(args.out, deer=args.deer, preset=args.model, vision_weights=args.vision_weights,
                       mpt_weights=args.mpt_weights, openflamingo=args.openflamingo, tokenizer=args.tokenizer,
                       exit_interval=args.exit_interval, max_exit=args.max_exit, fresh_heads=args.fresh_heads)
    except (CheckpointError, OSError, ValueError) as exc:
        print(f"deer-ros convert: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(convert_main(None))
