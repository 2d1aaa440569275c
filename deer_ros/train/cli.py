"""`deer-ros train`: multi-exit training on a CALVIN-format dataset, and `deer-ros train curve`.

Runs the joint stage, then the head-only stage (either may be 0 epochs), saving a resumable training state
(our checkpoint format + optimiser, schedule, step and RNG states) every --save-every steps and at each epoch
end. At the end it writes the inference checkpoint (--out, without the training-only aux heads), optionally the
reference (.pth) layout (--export-reference) and a calibration on the training split (--calibrate).

The bundled demo model (data/demo/tiny_demo/) is made by scripts/make_demo_model.sh with this command and
`deer-ros convert`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from deer_ros.cli_options import add_deprecated_alias
from deer_ros.paths import split_folder

log = logging.getLogger("deer_ros.train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deer-ros train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                epilog="`deer-ros train curve --help`: the accuracy-compute curve of a checkpoint")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="tiny", help="model preset of a freshly initialised model (tiny, of3b, of9b)")
    add_deprecated_alias(g, "--preset", "--model", dest="model")
    g.add_argument("--init", default="", help="start from this checkpoint (ours or a DeeR .pth) instead of random "
                   "weights; parts it lacks (e.g. aux heads) start fresh")
    g.add_argument("--openflamingo", default="", help="OpenFlamingo checkpoint.pt to start from (perceiver, x-attn)")
    g.add_argument("--vision-weights", default="", help="open_clip / OpenAI ViT-L-14 weights (real presets)")
    g.add_argument("--mpt-weights", default="", help="HF MPT-1B/7B directory or file (real presets)")
    g.add_argument("--tokenizer", default="", help="local tokenizer directory ('' = the model config's; the real "
                   "presets need a local copy of the GPT-NeoX-20B tokenizer)")
    g.add_argument("--no-aux-heads", action="store_true", help="train without the per-exit auxiliary heads")
    g.add_argument("--xattn-gate-init", type=float, default=None,
                   help="start the cross-attention gates at this value instead of 0 (a model trained from "
                        "scratch needs it, e.g. 0.5; ignored with --init and --resume)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="", help="CALVIN dataset root or split folder ('' = the bundled sample)")
    g.add_argument("--split", default="training", choices=("training", "validation"))
    g.add_argument("--segments", default="", help="segments to train on: indices and/or task ids ('' = all)")
    g.add_argument("--window", type=int, default=12, help="time steps per training window")
    g.add_argument("--no-augment", action="store_true", help="turn off the random-shift augmentation")
    g = p.add_argument_group("optimisation")
    g.add_argument("--joint-epochs", type=int, default=1, help="epochs of the joint stage (0 = skip)")
    g.add_argument("--head-epochs", type=int, default=0, help="epochs of the head-only stage (0 = skip)")
    g.add_argument("--batch-size", type=int, default=6, help="windows per step")
    g.add_argument("--lr", type=float, default=1e-4, help="joint-stage learning rate")
    g.add_argument("--head-lr-scale", type=float, default=0.25, help="joint stage: head LR = lr * this")
    g.add_argument("--head-stage-lr", type=float, default=2.5e-5, help="head-stage learning rate")
    g.add_argument("--warmup", type=int, default=2500, help="linear warm-up steps of each stage")
    g.add_argument("--schedule", default="constant", choices=("constant", "cosine"),
                   help="learning rate after the warm-up: constant (the reference) or cosine decay to 0")
    g.add_argument("--weight-decay", type=float, default=0.1, help="on cross-attention weight matrices")
    g.add_argument("--train-vision", action="store_true", help="unfreeze the CLIP vision tower (joint stage)")
    g.add_argument("--train-llm", action="store_true", help="unfreeze the MPT blocks (joint stage)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    add_deprecated_alias(g, "--threads", "--cpu-threads", dest="cpu_threads", type=int)
    g.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, help="inference checkpoint to write (our format, .pt)")
    g.add_argument("--state", default="", help="resumable training state ('' = <out without .pt>.train.pt)")
    g.add_argument("--resume", action="store_true", help="continue from --state")
    g.add_argument("--save-every", type=int, default=0, help="also save the state every N steps (0 = per epoch)")
    g.add_argument("--keep-aux-heads", action="store_true", help="keep the aux heads in --out")
    g.add_argument("--export-reference", default="", help="also write the DeeR .pth layout here")
    g.add_argument("--calibrate", nargs="?", const="auto", default="",
                   help="calibrate the result on the training split; optional path ('auto' = "
                        "<out without .pt>_calibration.npz)")
    g.add_argument("--log-every", type=int, default=20, help="print a progress line every N steps")
    g.add_argument("--json", action="store_true", help="print the final summary as JSON")
    return p


def _check(args: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    for name in ("joint_epochs", "head_epochs", "warmup", "save_every", "cpu_threads"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("batch_size", "window", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.joint_epochs + args.head_epochs == 0:
        p.error("nothing to train: give --joint-epochs and/or --head-epochs > 0")
    if Path(args.out).suffix != ".pt":
        p.error(f"--out {args.out}: checkpoints are .pt files")


def state_path(args: argparse.Namespace) -> Path:
    out = Path(args.out).expanduser()
    return Path(args.state).expanduser() if args.state else out.with_suffix(".train.pt")


def calibration_path(args: argparse.Namespace) -> Path | None:
    if not args.calibrate:
        return None
    out = Path(args.out).expanduser()
    return out.with_name(out.stem + "_calibration.npz") if args.calibrate == "auto" else Path(args.calibrate)


def initial_model(args: argparse.Namespace):
    """A DeerModel with all exits built: random (seeded) or from --init / --openflamingo / real weights."""
    import torch

    from deer_ros.model.checkpoint import Mapped, is_own_format, load_reference, load_state, read_file
    from deer_ros.model.config import DeerConfig
    from deer_ros.model.deer import build_model
    from deer_ros.train.trainer import open_xattn_gates

    aux = not args.no_aux_heads
    torch.manual_seed(args.seed)
    fresh = ("aux_heads.",) if aux else ()
    if args.init:
        data = read_file(args.init)
        if is_own_format(data):
            model = build_model(DeerConfig.from_dict(data["config"]).replace(aux_heads=aux))
            state = {k: v for k, v in data["model_state_dict"].items() if aux or not k.startswith("aux_heads.")}
            load_state(model, [Mapped(args.init, state)], fresh)
            return model
        return load_reference(data, vision_weights=args.vision_weights or None,
                              mpt_weights=args.mpt_weights or None, openflamingo=args.openflamingo or None,
                              fresh=fresh, aux_heads=aux)
    config = DeerConfig.preset(args.model, aux_heads=aux)
    if args.openflamingo or args.vision_weights or args.mpt_weights:
        return load_reference(None, config=config, vision_weights=args.vision_weights or None,
                              mpt_weights=args.mpt_weights or None, openflamingo=args.openflamingo or None,
                              fresh=("head.",) + fresh)
    model = build_model(config)
    if args.xattn_gate_init is not None:
        open_xattn_gates(model, args.xattn_gate_init)
    return model


def stage_plan(args: argparse.Namespace):
    from deer_ros.train.trainer import StageSettings

    common = dict(batch_size=args.batch_size, warmup_steps=args.warmup, weight_decay=args.weight_decay,
                  augment=not args.no_augment, seed=args.seed, schedule=args.schedule)
    plan = []
    if args.joint_epochs:
        plan.append(StageSettings("joint", args.joint_epochs, lr=args.lr, head_lr_scale=args.head_lr_scale,
                                  train_vision=args.train_vision, train_llm=args.train_llm, **common))
    if args.head_epochs:
        plan.append(StageSettings("head", args.head_epochs, lr=args.head_stage_lr, **common))
    return plan


def inference_model(model):
    """The model without its training-only aux heads (a copy; the weights are shared)."""
    from deer_ros.model.deer import build_model

    if model.aux_heads is None:
        return model
    lean = build_model(model.config.replace(aux_heads=False), empty=True)
    lean.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("aux_heads.")})
    return lean


def _format_log(e) -> str:
    parts = " ".join(f"{k} {v:.4f}" for k, v in e.parts.items())
    return (f"[{e.stage}] step {e.step} epoch {e.epoch:.2f} loss {e.loss:.4f} ({parts}) lr {e.lr:.3g} "
            f"{e.seconds * 1e3:.0f} ms/step")


def read_resume_state(args: argparse.Namespace) -> dict[str, Any] | None:
    """The training state to resume from (--resume), or None."""
    from deer_ros.model.checkpoint import read_file
    from deer_ros.train.trainer import STATE_KEY

    if not args.resume:
        return None
    state_file = state_path(args)
    if not state_file.is_file():
        raise FileNotFoundError(f"--resume: no training state at {state_file} (give --state)")
    data = read_file(state_file)
    if STATE_KEY not in data:
        raise ValueError(f"{state_file} is a checkpoint without a training state: use it with --init instead")
    return data


def run_plan(model, data, plan, resume: dict[str, Any] | None, args: argparse.Namespace) -> dict[str, Any]:
    """Train the stages of `plan` in order (skipping those a resumed state has finished); saves the state to
    --state every --save-every steps and at each epoch end. Returns the mean losses of each stage's last epoch."""
    from deer_ros.train.trainer import STATE_KEY, Trainer, save_training_checkpoint, trainable_summary

    names = [s.stage for s in plan]
    saved = resume[STATE_KEY] if resume is not None else None
    if saved is not None and saved["settings"]["stage"] not in names:
        raise ValueError(f"the state is of stage '{saved['settings']['stage']}', which this plan ({names}) "
                         "does not run")
    first = names.index(saved["settings"]["stage"]) if saved is not None else 0
    state_file = state_path(args)
    last_parts: dict[str, dict[str, float]] = {}
    for settings in plan[first:]:
        trainer = Trainer(model, data, settings)
        if saved is not None and saved["settings"]["stage"] == settings.stage:
            trainer.load_state_dict(saved)
            log.info("resumed stage %s at step %d of %d", settings.stage, trainer.step, trainer.total_steps)
        log.info("stage %s: %d epochs x %d steps; trainable parameters %s", settings.stage, settings.epochs,
                 trainer.steps_per_epoch, trainable_summary(model))
        epoch_parts: list[dict[str, float]] = []
        for entry in trainer.run(save=lambda t: save_training_checkpoint(t, state_file),
                                 save_every=args.save_every):
            epoch_parts.append(entry.parts)
            if entry.step % args.log_every == 0:
                log.info(_format_log(entry))
            if entry.step % trainer.steps_per_epoch == 0:  # epoch end: the mean over its steps
                mean = {k: sum(p[k] for p in epoch_parts) / len(epoch_parts) for k in epoch_parts[0]}
                log.info("[%s] epoch %d done: mean loss %.4f (%s)", settings.stage, round(entry.epoch),
                         sum(mean.values()), " ".join(f"{k} {v:.4f}" for k, v in mean.items()))
                last_parts[settings.stage], epoch_parts = mean, []
    return last_parts


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole plan and write the outputs; returns the summary. Raises on bad input."""
    import torch

    from deer_ros.calvin.dataset import CalvinSplit
    from deer_ros.model.checkpoint import Mapped, load_state, save_checkpoint
    from deer_ros.model.preprocess import ImagePreprocessor
    from deer_ros.model.tokenizer import PromptEncoder, load_tokenizer
    from deer_ros.train.data import WindowDataset

    t_start = time.perf_counter()
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    resume = read_resume_state(args)
    model = initial_model(args)
    if resume is not None:
        load_state(model, [Mapped(str(state_path(args)), dict(resume["model_state_dict"]))])
    model.to(args.device)
    c = model.config
    split = CalvinSplit(split_folder(args.dataset, args.split))
    prompts = PromptEncoder(load_tokenizer(args.tokenizer or c.tokenizer), c.max_text_tokens, c.vocab_size)
    data = WindowDataset(split, split.segments(args.segments), ImagePreprocessor(c.image_size), prompts,
                         args.window)
    log.info("data: %s -> %d windows of %d steps (%d frames), shift pads %s", split, len(data), args.window,
             data.n_frames, data.shift_pads)
    t_data = time.perf_counter() - t_start
    plan = stage_plan(args)
    last_parts = run_plan(model, data, plan, resume, args)
    t_train = time.perf_counter() - t_start - t_data

    out = Path(args.out).expanduser()
    model.cpu().eval()
    final = model if args.keep_aux_heads else inference_model(model)
    save_checkpoint(final, out, {"trained_on": {"dataset": str(split.path.resolve()), "segments": args.segments,
                                                "windows": len(data), "stages": [asdict(s) for s in plan]}})
    summary: dict[str, Any] = {
        "out": str(out), "state": str(state_path(args)), "windows": len(data), "frames": data.n_frames,
        "data_seconds": round(t_data, 1), "train_seconds": round(t_train, 1),
        "final_epoch_losses": last_parts, "size_mb": round(out.stat().st_size / 2 ** 20, 2)}
    if args.export_reference:
        from deer_ros.model.checkpoint import export_reference_layout

        summary["reference_layout"] = str(export_reference_layout(final, args.export_reference, include_vision=True))
    cal = calibration_path(args)
    if cal is not None:
        from deer_ros.exits.calibration import calibration_meta, collect_calibration, split_segments
        from deer_ros.model.factory import load_policy

        # the saved checkpoint, loaded as the node loads it, on the training split's segments
        meta = {**calibration_meta(c.name, out, split, args.segments), "max_frames_per_segment": None}
        calibration = collect_calibration(load_policy(checkpoint=out, preset=c.name),
                                          split_segments(split, args.segments), None, meta)
        summary["calibration"] = str(calibration.save(cal))
    summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
    return summary


def train_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "curve":
        from deer_ros.train.curve import curve_main

        return curve_main(argv[1:])
    p = build_parser()
    args = p.parse_args(argv)
    _check(args, p)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from deer_ros.calvin.dataset import CalvinDatasetError
    from deer_ros.model.checkpoint import CheckpointError

    try:
        summary = train(args)
    except (CalvinDatasetError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"deer-ros train: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print("\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
