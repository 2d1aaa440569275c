"""`deer-ros convert`: released weights (or our single-file checkpoint) -> one self-contained model folder.

  deer-ros convert --deer DeeR_task_D_D.pth --vision-weights ViT-L-14.pt --tokenizer gpt-neox-20b/ \\
      --out models/deer_d      # + --mpt-weights mpt-1b-redpajama-200b-dolly/ if the .pth lacks the MPT blocks

Every key of every input is accounted for (mapped, or known and unused), every tensor the model needs is
provided exactly once with the right shape; anything else stops the conversion with the file and keys to fix.
The values a DeeR eval run cached in the .pth (`values`) become the folder's calibration.npz.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deer_ros.cli_options import add_deprecated_alias
from deer_ros.model.checkpoint import (Assembly, CheckpointError, Mapped, ModelFolder, assemble,
                                       config_from_reference, load_own, read_file, reference_sources, save_folder)
from deer_ros.model.config import PRESETS, DeerConfig
from deer_ros.model.deer import DeerModel, build_model

FRESH_HEADS = ("head.", "aux_heads.")


@dataclass
class Conversion:
    """What a conversion read, mapped and wrote."""
    config: DeerConfig
    sources: list[Mapped]
    assembly: Assembly | None  # None when converting our own checkpoint (already in our names)
    expected: int  # tensors the model needs
    folder: ModelFolder | None = None  # None for a dry run
    calibration_from: str = ""
    notes: list[str] = field(default_factory=list)
    cached_values: np.ndarray | None = field(default=None, repr=False)  # the .pth's `values`, if any

    def table(self) -> str:
        lines = [f"{'source':<60} {'read':>6} {'mapped':>7} {'ignored':>8} {'unknown':>8} {'used':>6}"]
        per = self.assembly.per_source if self.assembly else [{} for _ in self.sources]
        for s, p in zip(self.sources, per):
            name = s.source if len(s.source) <= 60 else "..." + s.source[-57:]
            lines.append(f"{name:<60} {s.read:>6} {len(s.tensors):>7} {len(s.ignored):>8} {len(s.unknown):>8} "
                         f"{p.get('used', len(s.tensors)):>6}")
        filled = len(self.assembly.tensors) if self.assembly else self.expected
        skipped = len(self.assembly.skipped) if self.assembly else 0
        lines.append(f"model {self.config.name}: {filled} of {self.expected} tensors filled, "
                     f"{skipped} skipped (layers not built), nothing left over")
        lines += self.notes
        return "\n".join(lines)


def convert(out: str | Path | None, *, deer: str | Path | dict | None = None, checkpoint: str | Path | None = None,
            preset: str = "of3b", vision_weights: Any = None, mpt_weights: Any = None, openflamingo: Any = None,
            tokenizer: str | Path | None = None, calibration: str | Path | None = None,
            exit_interval: int | None = None, max_exit: int | None = None, fresh_heads: bool = False,
            dry_run: bool = False, trust_pickle: bool = False) -> Conversion:
    """Assemble the model from the given files and write the model folder `out` (nothing when dry_run).

    deer / vision_weights / mpt_weights / openflamingo: paths, or already-read dicts (tests feed meta tensors).
    checkpoint: instead of released files, one of our checkpoints (single .pt or a folder) to repack.
    """
    from deer_ros.exits.calibration import Calibration

    if checkpoint is not None:
        if any(x is not None for x in (deer, vision_weights, mpt_weights, openflamingo)) or fresh_heads:
            raise ValueError("--checkpoint repacks one of our checkpoints; do not combine it with released files")
        result, model = _from_own(Path(checkpoint).expanduser(), max_exit)
    else:
        result, model = _from_released(deer, preset, vision_weights, mpt_weights, openflamingo, exit_interval,
                                       max_exit, fresh_heads, dry_run, trust_pickle)
    config = result.config
    tok = tokenizer if tokenizer is not None else (config.tokenizer or None)
    if tok is None and not dry_run:
        raise ValueError(f"model '{config.name}' needs a tokenizer: pass --tokenizer DIR, a local copy of the "
                         "GPT-NeoX-20B tokenizer files (tokenizer.json, tokenizer_config.json, "
                         "special_tokens_map.json) for of3b/of9b")
    if tok is not None and not dry_run:
        _check_tokenizer(tok, config)
    cal = None
    if calibration is not None:
        cal = Calibration.load(calibration)
        result.calibration_from = str(calibration)
    elif isinstance(result.cached_values, np.ndarray):
        from deer_ros.exits.calibration_reference import cached_calibration

        cal = cached_calibration(result.cached_values, config, str(deer))
        result.calibration_from = f"the values cached in {deer}"
    if cal is not None:
        cal.for_exits([layer + 1 for layer in config.exit_layers[: len(_built_exits(config, max_exit))]])
        result.notes.append(f"calibration: {cal.n_samples} samples x {cal.n_exits} exits "
                            f"from {result.calibration_from}")
    if dry_run:
        return result
    source = {"deer": _name(deer), "checkpoint": _name(checkpoint), "vision_weights": _name(vision_weights),
              "mpt_weights": _name(mpt_weights), "openflamingo": _name(openflamingo), "fresh_heads": fresh_heads,
              "tokenizer": Path(str(tok)).name, "calibration": result.calibration_from}
    result.folder = save_folder(model, out, tokenizer=tok, calibration=cal, source=source)
    return result


def _from_own(path: Path, max_exit: int | None) -> tuple[Conversion, DeerModel]:
    data = read_file(path)  # a model folder reads as our own format too
    if data.get("format") != "deer_ros":
        raise ValueError(f"--checkpoint {path} is not one of our checkpoints: pass released files with --deer")
    model = load_own(data, max_exit, str(path))
    tensors = Mapped(str(path), dict(model.state_dict()), read=len(data["model_state_dict"]))
    return Conversion(model.config, [tensors], None, len(tensors.tensors)), model


def _from_released(deer, preset, vision_weights, mpt_weights, openflamingo, exit_interval, max_exit, fresh_heads,
                   dry_run, trust_pickle) -> tuple[Conversion, DeerModel | None]:
    if deer is None and not fresh_heads:
        raise ValueError("without a DeeR .pth the heads would be untrained: pass fresh_heads (--fresh-heads) to "
                         "mean that")
    overrides = {"exit_interval": exit_interval} if exit_interval else {}
    base = DeerConfig.preset(preset)
    deer_name = "DeeR checkpoint" if isinstance(deer, dict) else str(deer)
    deer_data = deer if isinstance(deer, dict) or deer is None else read_file(deer, trust_pickle)
    config = config_from_reference(deer_data, base, deer_name, **overrides) if deer_data is not None \
        else base.replace(**overrides)
    with torch.device("meta"):  # shapes only: no memory, no init
        shape_model = DeerModel(config, max_exit)
    expected = {k: tuple(v.shape) for k, v in shape_model.state_dict().items()}
    sources = reference_sources(config, deer=deer_data, deer_name=deer_name, vision_weights=vision_weights,
                                mpt_weights=mpt_weights, openflamingo=openflamingo, trust_pickle=trust_pickle,
                                expected=expected)
    fresh = FRESH_HEADS if fresh_heads else ()
    done = assemble(expected, sources, built_layers=shape_model.n_layers, full_layers=config.n_layers,
                    aux_heads_built=len(shape_model.exit_layers) if config.aux_heads else None, fresh=fresh)
    result = Conversion(config, sources, done, len(expected))
    values = (deer_data or {}).get("values")
    if isinstance(values, torch.Tensor) and not values.is_meta:
        result.cached_values = values.detach().cpu().double().numpy()
    if dry_run:
        return result, None
    model = build_model(config, max_exit, empty=not fresh)  # fresh parts need real initial values
    state = model.state_dict()
    model.load_state_dict({**{k: v for k, v in state.items() if k not in done.tensors}, **done.tensors}, strict=True)
    return result, model


def _built_exits(config: DeerConfig, max_exit: int | None) -> list[int]:
    return config.exit_layers[:max_exit] if max_exit else config.exit_layers


def _check_tokenizer(tokenizer: str | Path, config: DeerConfig) -> None:
    from deer_ros.model.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    if len(tok) > config.vocab_size:
        raise ValueError(f"the tokenizer {tokenizer} has {len(tok)} tokens but the model's embedding has "
                         f"{config.vocab_size} rows: it is not the tokenizer this model was trained with")


def _name(x: Any) -> str | None:
    return None if x is None else "(in memory)" if isinstance(x, dict) else Path(str(x)).name


def convert_main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="deer-ros convert", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--out", required=True, help="the model folder to write (new, or an existing model folder)")
    parser.add_argument("--deer", help="DeeR .pth (heads, perceiver, x-attn, embedding, MPT blocks; config keys)")
    parser.add_argument("--checkpoint", help="instead: one of our checkpoints (.pt or folder) to repack")
    parser.add_argument("--model", default="of3b", choices=sorted(PRESETS), help="model preset: the architecture "
                        "(default of3b)")
    add_deprecated_alias(parser, "--preset", "--model", dest="model")
    parser.add_argument("--vision-weights", help="open_clip / OpenAI ViT-L-14 weights (no DeeR file has them)")
    parser.add_argument("--mpt-weights", help="Hugging Face MPT folder or weights file (when the .pth lacks blocks)")
    parser.add_argument("--openflamingo", help="OpenFlamingo checkpoint.pt")
    parser.add_argument("--tokenizer", help="local tokenizer folder (GPT-NeoX-20B for of3b/of9b); copied in")
    parser.add_argument("--calibration", help="a calibration .npz to put in the folder (default: the values "
                        "cached in the .pth, if any)")
    parser.add_argument("--exit-interval", type=int, help="needed when the .pth does not record it (DeeR: 2)")
    parser.add_argument("--max-exit", type=int, help="keep only the layers of exits 1..N")
    parser.add_argument("--fresh-heads", action="store_true",
                        help="no DeeR file: initialise the action heads (a starting point for training)")
    parser.add_argument("--dry-run", action="store_true", help="check and map every key, write nothing")
    args = parser.parse_args(argv)
    if args.deer is None and args.checkpoint is None and not args.fresh_heads:
        parser.error("without --deer the heads would be untrained: pass --fresh-heads to mean that "
                     "(or --checkpoint to repack one of ours)")
    try:
        result = convert(args.out, deer=args.deer, checkpoint=args.checkpoint, preset=args.model,
                         vision_weights=args.vision_weights, mpt_weights=args.mpt_weights,
                         openflamingo=args.openflamingo, tokenizer=args.tokenizer, calibration=args.calibration,
                         exit_interval=args.exit_interval, max_exit=args.max_exit, fresh_heads=args.fresh_heads,
                         dry_run=args.dry_run)
    except (CheckpointError, OSError, ValueError) as exc:
        print(f"deer-ros convert: {exc}", file=sys.stderr)
        return 1
    print(result.table())
    if result.folder is not None:
        print(f"wrote {result.folder.path} (fingerprint {result.folder.fingerprint[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(convert_main(None))
