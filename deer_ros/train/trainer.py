"""The multi-exit training loop: stages, trainable parts, optimiser, schedule and resumable state (reference 4.1).

Stages
  joint  perceiver, gated cross-attention, the token embedding and all heads train; the CLIP tower and the MPT
         blocks are frozen unless `train_vision` / `train_llm` (a model trained from scratch, like the bundled
         tiny demo, needs both). Head parameters get `head_lr_scale` (0.25) of the learning rate.
  head   only the heads train (shared head + aux heads); the backbone runs under no_grad.
Each stage has its own AdamW and its own schedule: linear warm-up, then constant (the reference) or a cosine
decay to 0 over the stage (steadier for short runs from scratch); gradients are clipped to norm 1.0.
Weight decay applies to the cross-attention weight matrices only (not gates, norms or biases), as the reference.

Resuming: a training state holds the model, the optimiser, the schedule, the stage and step, and the RNG
states (the generator used for shuffling, augmentation and exit sampling, and torch's global one used by
dropout). The window order of epoch e depends only on (seed, stage, e), so training resumed from a state
takes the same path as training that never stopped.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from deer_ros.files import atomic_path
from deer_ros.model.checkpoint import save_checkpoint
from deer_ros.model.deer import DeerModel
from deer_ros.train.data import Batch, WindowDataset
from deer_ros.train.losses import MultiExitLoss, multi_exit_loss

log = logging.getLogger(__name__)

STAGES = ("joint", "head")
SCHEDULES = ("constant", "cosine")
STATE_KEY = "training_state"  # the key of the training state inside a checkpoint in our format


@dataclass(frozen=True)
class StageSettings:
    """How one stage trains. Defaults are the reference's joint-stage values (at its batch of 6 per GPU)."""

    stage: str = "joint"
    epochs: int = 1
    batch_size: int = 6
    lr: float = 1e-4
    head_lr_scale: float = 0.25  # joint stage only: heads learn slower than the backbone adapters
    warmup_steps: int = 2500
    weight_decay: float = 0.1  # on cross-attention weight matrices only
    grad_clip: float = 1.0
    train_vision: bool = False
    train_llm: bool = False
    augment: bool = True
    seed: int = 0
    schedule: str = "constant"  # after warm-up: 'constant' (reference) or 'cosine' (decay to 0 at the end)

    def __post_init__(self) -> None:
        problems = []
        if self.stage not in STAGES:
            problems.append(f"stage must be one of {STAGES} (got {self.stage!r})")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {SCHEDULES} (got {self.schedule!r})")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        for name in ("lr", "head_lr_scale", "grad_clip"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0 (got {getattr(self, name)})")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            problems.append("warmup_steps and weight_decay must be >= 0")
        if problems:
            raise ValueError("invalid training settings: " + "; ".join(problems))


def _is_head(name: str) -> bool:
    return name.startswith(("head.", "aux_heads."))


def set_trainable(model: DeerModel, s: StageSettings) -> list[str]:
    """Freeze and unfreeze the model's parts for the stage; returns the trainable parameter names."""
    for name, p in model.named_parameters():
        part = name.split(".")[0]
        if s.stage == "head":
            p.requires_grad_(_is_head(name))
        elif part == "vision":
            p.requires_grad_(s.train_vision)
        elif part == "blocks":
            p.requires_grad_(s.train_llm)
        else:  # perceiver, xattn, wte, heads
            p.requires_grad_(True)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def param_groups(model: DeerModel, s: StageSettings) -> list[dict[str, Any]]:
    """AdamW groups: cross-attention matrices (decayed), heads (scaled LR in the joint stage), the rest."""
    decayed, heads, rest = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if _is_head(name):
            heads.append(p)
        elif name.startswith("xattn.") and p.ndim >= 2:
            decayed.append(p)
        else:
            rest.append(p)
    head_lr = s.lr * (s.head_lr_scale if s.stage == "joint" else 1.0)
    groups = [{"params": decayed, "lr": s.lr, "weight_decay": s.weight_decay},
              {"params": heads, "lr": head_lr, "weight_decay": 0.0},
              {"params": rest, "lr": s.lr, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def open_xattn_gates(model: DeerModel, value: float) -> None:
    """Set every cross-attention gate (attention and feed-forward) to `value` (tanh(value) of the update passes).

    OpenFlamingo starts the gates at 0 so a pretrained LLM is untouched at first. A model trained from scratch
    then never starts using the images: with closed gates the vision tower and perceiver get no gradient, and the
    gates get only noise from random visual features (the tiny model stays at the mean action). Opening them at
    the start breaks that deadlock.
    """
    with torch.no_grad():
        for block in model.xattn.values():
            block.attn_gate.fill_(value)
            block.ff_gate.fill_(value)


def exit_features(model: DeerModel, batch: Batch) -> torch.Tensor:
    """The pooled features of every built exit for every step of every window: (B, T, E, d).

    Each of the B*T steps runs through the model independently (the reference's training path); the time axis
    only matters inside the heads.
    """
    B, T = batch.shape
    p = batch.prompt
    feats = model.forward_exit_features(batch.images.flatten(0, 1), p.input_ids.repeat_interleave(T, 0),
                                        p.media_locations.repeat_interleave(T, 0),
                                        p.attention_mask.repeat_interleave(T, 0))  # (B*T, n_layers, d)
    feats = feats[:, model.exit_layers]  # (B*T, E, d)
    return feats.view(B, T, *feats.shape[1:])


@dataclass
class StepLog:
    stage: str
    step: int  # steps done in this stage
    epoch: float
    loss: float
    parts: dict[str, float]
    lr: float
    seconds: float


class Trainer:
    """Trains one stage of a DeerModel on a WindowDataset; `state_dict` / `load_state_dict` to resume."""

    def __init__(self, model: DeerModel, data: WindowDataset, settings: StageSettings):
        self.model, self.data, self.settings = model, data, settings
        self.trainable = set_trainable(model, settings)
        if not self.trainable:
            raise ValueError(f"stage '{settings.stage}' has nothing to train")
        self.optimizer = torch.optim.AdamW(param_groups(model, settings))
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.step = 0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)

    # ------------------------------------------------------------------ schedule
    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.data) // self.settings.batch_size)  # the last partial batch is dropped

    @property
    def total_steps(self) -> int:
        return self.settings.epochs * self.steps_per_epoch

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier after `step` optimiser steps: linear warm-up, then constant or cosine."""
        s = self.settings
        if step < s.warmup_steps:
            return (step + 1) / s.warmup_steps
        if s.schedule == "constant":
            return 1.0
        progress = (step - s.warmup_steps) / max(1, self.total_steps - s.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The window permutation of `epoch`: a function of (seed, stage, epoch) only, so resuming repeats it."""
        stage_id = STAGES.index(self.settings.stage)
        g = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + stage_id * 10_007 + epoch)
        return torch.randperm(len(self.data), generator=g)

    def _indices(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.steps_per_epoch)
        size = self.settings.batch_size
        return self.epoch_order(epoch)[k * size:(k + 1) * size].tolist()

    # ------------------------------------------------------------------ training
    def train_step(self) -> StepLog:
        """One optimiser step on the next batch."""
        t0 = time.perf_counter()
        s = self.settings
        self.model.train()
        batch = self.data.batch(self._indices(self.step), augment=s.augment, generator=self.generator)
        batch = batch.to(self.model.wte.weight.device)
        with torch.set_grad_enabled(s.stage == "joint"):
            features = exit_features(self.model, batch)  # (B, T, E, d)
        loss: MultiExitLoss = multi_exit_loss(self.model.head, self.model.aux_heads, features, batch.actions,
                                              self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        params = [p for p in self.model.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return StepLog(s.stage, self.step, self.step / self.steps_per_epoch, float(loss.total.detach()), loss.parts,
                       self.optimizer.param_groups[0]["lr"], time.perf_counter() - t0)

    def run(self, on_step: Callable[[StepLog], None] | None = None,
            save: Callable[["Trainer"], None] | None = None, save_every: int = 0,
            max_steps: int | None = None) -> Iterator[StepLog]:
        """Train to the end of the stage (or `max_steps` more steps), yielding each step's log.

        `save(trainer)` is called every `save_every` steps (0: never mid-epoch) and at the end of every epoch.
        """
        end = self.total_steps if max_steps is None else min(self.total_steps, self.step + max_steps)
        while self.step < end:
            entry = self.train_step()
            if on_step is not None:
                on_step(entry)
            yield entry
            epoch_end = self.step % self.steps_per_epoch == 0
            if save is not None and (epoch_end or (save_every and self.step % save_every == 0)):
                save(self)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything besides the model weights that a resumed run needs."""
        return {"settings": asdict(self.settings), "step": self.step,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = StageSettings(**state["settings"])
        if saved.stage != self.settings.stage:
            raise ValueError(f"the training state is of stage '{saved.stage}', not '{self.settings.stage}'")
        self.step = int(state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])


def save_training_checkpoint(trainer: Trainer, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Model weights in our checkpoint format plus the trainer's state under STATE_KEY (written atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:  # a crash while writing leaves the previous checkpoint intact
        save_checkpoint(trainer.model, tmp, {STATE_KEY: {**trainer.state_dict(), **(extra or {})}})
    return path


def trainable_summary(model: nn.Module) -> dict[str, int]:
    """Trainable / total parameter counts per top-level part, for the training log."""
    out: dict[str, int] = {}
    for name, p in model.named_parameters():
        part = name.split(".")[0]
        out[part] = out.get(part, 0) + (p.numel() if p.requires_grad else 0)
    return out
