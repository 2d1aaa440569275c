"""Multi-exit training losses and the two exit-sampling strategies for the shared head (reference 4.2, 4.3).

Outputs supervised per batch (every time step of every window):
  aux[k]   the auxiliary head of exit k on exit k's own features (the reference's 5 aux heads + the last-layer
           head; training only), when the model has aux heads
  shared1  the shared (inference) head on features whose exit is drawn per (window, step)   - strategy 1
  shared2  the shared head on two-segment features: exit a before a split point, exit b from it - strategy 2
Each output costs Huber(pose, target[:6]) (delta 1, mean) + 0.01 * BCE-with-logits(gripper, (g + 1) / 2);
the total is their plain sum (the 0.01 weighs the gripper, not the aux heads).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from deer_ros.model.head import ActionHead, HeadOutput

GRIPPER_WEIGHT = 0.01
HUBER_DELTA = 1.0


def sample_exits_per_step(batch: int, steps: int, n_exits: int,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Strategy 1: an exit drawn uniformly (the last one included) for every (window, step). (B, T) int64."""
    return torch.randint(0, n_exits, (batch, steps), generator=generator)


def sample_exits_two_segments(batch: int, steps: int, n_exits: int,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """Strategy 2: one split s ~ U{1..T} for the whole batch; each window draws exits (a, b); steps < s use a,
    steps >= s use b (s = T: all a). (B, T) int64 - it mimics a history of one exit followed by another."""
    split = int(torch.randint(1, steps + 1, (1,), generator=generator))
    a, b = torch.randint(0, n_exits, (2, batch, 1), generator=generator)  # (B, 1) each
    before = torch.arange(steps)[None, :] < split  # (1, T)
    return torch.where(before, a, b)  # (B, T)


def gather_exits(features: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """features (B, T, E, d) and choice (B, T) in [0, E) -> (B, T, d): each step's feature from its chosen exit."""
    choice = choice.to(features.device)  # drawn on the CPU generator
    index = choice[..., None, None].expand(*choice.shape, 1, features.shape[-1])  # (B, T, 1, d)
    return features.gather(2, index).squeeze(2)


def action_loss(out: HeadOutput, target: torch.Tensor, gripper_weight: float = GRIPPER_WEIGHT) -> torch.Tensor:
    """Huber on the 6 pose values + gripper_weight * BCE-with-logits on the gripper. target (B, T, 7)."""
    pose = F.huber_loss(out.pose, target[..., :6], delta=HUBER_DELTA)
    gripper = F.binary_cross_entropy_with_logits(out.gripper_logit[..., 0], (target[..., 6] + 1) / 2)
    return pose + gripper_weight * gripper


@dataclass
class MultiExitLoss:
    total: torch.Tensor  # scalar, what is back-propagated
    parts: dict[str, float]  # 'aux1'..'auxE', 'shared1', 'shared2' -> detached values


def multi_exit_loss(head: ActionHead, aux_heads: torch.nn.ModuleList | None, features: torch.Tensor,
                    target: torch.Tensor, generator: torch.Generator | None = None,
                    gripper_weight: float = GRIPPER_WEIGHT) -> MultiExitLoss:
    """The summed loss of every supervised output. features (B, T, E, d): pooled features of each exit,
    target (B, T, 7) rel_actions. Every head starts each window from a zero LSTM state (as the reference)."""
    B, T, E, _ = features.shape
    if aux_heads is not None and len(aux_heads) != E:
        raise ValueError(f"{len(aux_heads)} aux heads for {E} exits: build the model with one aux head per exit")
    losses: dict[str, torch.Tensor] = {}
    for k, aux in enumerate(aux_heads or []):
        losses[f"aux{k + 1}"] = action_loss(aux(features[:, :, k]), target, gripper_weight)
    for name, sample in (("shared1", sample_exits_per_step), ("shared2", sample_exits_two_segments)):
        mixed = gather_exits(features, sample(B, T, E, generator))  # (B, T, d)
        losses[name] = action_loss(head(mixed), target, gripper_weight)
    total = torch.stack(list(losses.values())).sum()
    return MultiExitLoss(total, {k: float(v.detach()) for k, v in losses.items()})
