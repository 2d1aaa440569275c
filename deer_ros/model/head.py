"""The action head shared by every exit (DeeR's `extra_exit`), and the per-exit auxiliary heads for training.

Layout (reference 1.9), kept module-for-module so released weights load by name:
  rnn      with LayerNorm: rnn.layers = [LSTM, LN, Dropout, LSTM, LN, Dropout, ..., LSTM, LN] (single-layer LSTMs)
           without:        one multi-layer nn.LSTM (rnn.weight_ih_l0, ...)
  actions  pose MLP, 'layerwise' dropout: mlp = [Dropout, Linear, (LN), ReLU, Dropout, Linear, (LN), ReLU, ...,
           Dropout, Linear] -> tanh
  gripper  the same MLP with one output -> sigmoid (the logit is kept for BCE-with-logits training)
Other released index layouts ('last', legacy) are remapped by checkpoint.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deer_ros.model.config import DeerConfig

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (num_layers, B, hidden)


class LSTMStack(nn.Module):
    """Single-layer LSTMs, each followed by LayerNorm, with dropout between layers (not after the last)."""

    def __init__(self, in_features: int, hidden: int, num_layers: int, dropout: float):
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(num_layers):
            mods += [nn.LSTM(in_features if i == 0 else hidden, hidden, batch_first=True), nn.LayerNorm(hidden)]
            if i < num_layers - 1:
                mods.append(nn.Dropout(dropout))
        self.layers = nn.ModuleList(mods)
        self.num_layers = num_layers

    def forward(self, x: torch.Tensor, state: LSTMState | None) -> tuple[torch.Tensor, LSTMState]:
        hs, cs = [], []
        k = 0
        for mod in self.layers:
            if isinstance(mod, nn.LSTM):
                init = None if state is None else (state[0][k:k + 1], state[1][k:k + 1])
                x, (h, c) = mod(x, init)  # (B, T, hidden)
                hs.append(h)
                cs.append(c)
                k += 1
            else:
                x = mod(x)
        return x, (torch.cat(hs), torch.cat(cs))


def mlp_layers(in_features: int, hidden: tuple[int, ...], out_features: int, layernorm: bool,
               dropout: float) -> nn.Sequential:
    """The 'layerwise' MLP: Dropout before the first Linear and after every hidden ReLU."""
    mods: list[nn.Module] = []
    width = in_features
    for h in hidden:
        mods += [nn.Dropout(dropout), nn.Linear(width, h)]
        mods += [nn.LayerNorm(h), nn.ReLU()] if layernorm else [nn.ReLU()]
        width = h
    mods += [nn.Dropout(dropout), nn.Linear(width, out_features)]
    return nn.Sequential(*mods)


class MLPHead(nn.Module):
    def __init__(self, in_features: int, hidden: tuple[int, ...], out_features: int, layernorm: bool,
                 dropout: float):
        super().__init__()
        self.mlp = mlp_layers(in_features, hidden, out_features, layernorm, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


@dataclass
class HeadOutput:
    pose: torch.Tensor  # (B, T, pose_dim) in [-1, 1] (tanh)
    gripper_logit: torch.Tensor  # (B, T, 1); the gripper opens when sigmoid(logit) > 0.5
    state: LSTMState

    @property
    def gripper_prob(self) -> torch.Tensor:
        return torch.sigmoid(self.gripper_logit)


class ActionHead(nn.Module):
    """Pooled LLM features, one per time step -> pose and gripper, carrying the LSTM state."""

    def __init__(self, config: DeerConfig):
        super().__init__()
        c = config
        if c.head_lstm_layernorm:
            self.rnn: nn.Module = LSTMStack(c.d_model, c.head_hidden, c.head_lstm_layers, c.head_lstm_dropout)
        else:
            self.rnn = nn.LSTM(c.d_model, c.head_hidden, c.head_lstm_layers, batch_first=True,
                               dropout=c.head_lstm_dropout if c.head_lstm_layers > 1 else 0.0)
        self.actions = MLPHead(c.head_hidden, c.head_mlp_hidden, c.pose_dim, c.head_mlp_layernorm, c.head_mlp_dropout)
        self.gripper = MLPHead(c.head_hidden, c.head_mlp_hidden, 1, c.head_mlp_layernorm, c.head_mlp_dropout)

    def forward(self, features: torch.Tensor, state: LSTMState | None = None) -> HeadOutput:
        """features (B, T, d) -> HeadOutput over all T steps, starting from `state` (None = zeros)."""
        # On the CPU torch's oneDNN LSTM is far slower for the small batches of control (docs/benchmarks.md
        # section 6: 9x for the of3b head's one-step calls, actions equal to 4e-7); the native kernel is used.
        with torch.backends.mkldnn.flags(enabled=features.device.type != "cpu"):
            out, new_state = self.rnn(features, state)  # (B, T, hidden)
        return HeadOutput(torch.tanh(self.actions(out)), self.gripper(out), new_state)

    def step(self, feature: torch.Tensor, state: LSTMState | None) -> HeadOutput:
        """One control step: feature (B, d) -> HeadOutput with T = 1. `state` itself is not modified."""
        return self.forward(feature[:, None], state)
