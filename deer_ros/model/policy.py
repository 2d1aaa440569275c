"""DeerPolicy: one call per control step, running LLM layers only until the exit decider says stop.

Contract (docs/architecture.md, "model -> everyone"): `step(static_rgb, gripper_rgb, instruction, decide)`.
Per step:
  1. both cameras are preprocessed and encoded in one batched pass (ViT + shared perceiver) -> media; with
     vision reuse on (off by default; vision_reuse.py), a camera whose image barely changed since it was last
     encoded keeps its cached tokens and only the other camera is encoded;
  2. the instruction is tokenised once and cached (ids, <image> positions, ALiBi bias, per-layer cost) until it
     changes;
  3. layers run one at a time; at every built exit the shared head decodes a pose from the committed LSTM state
     without committing, and `decide(candidate)` returns an `ExitDecision` (stop?, criterion value). The next
     exit continues from the
     same hidden states, so no layer ever runs twice and exit k+1 reuses all the work of exit k;
  4. the LSTM state of the chosen exit's head call is committed (the reference re-runs the head on the chosen
     feature to get it; the result is identical, so we keep it instead of recomputing).
For the first exit, `prev_pose`/`prev_feature` come from the layer just before it (layer 0 for DeeR's first
exit at layer 1; the embedding when the first exit is layer 0), as in the reference.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from deer_ros.model.decision import ExitDecider, ExitDecision
from deer_ros.model.deer import DeerModel
from deer_ros.model.flops import exit_costs, layer_macs
from deer_ros.model.head import HeadOutput, LSTMState
from deer_ros.model.memory import memory_report
from deer_ros.model.precision import prepare_model, resolve_device
from deer_ros.model.preprocess import ImagePreprocessor
from deer_ros.model.tokenizer import PromptEncoder
from deer_ros.model.vision_reuse import CameraPlan, VisionCache, VisionReuse

CAMERA_NAMES = ("static_rgb", "gripper_rgb")  # model camera order


@dataclass
class ExitInfo:
    """One per built exit, in order."""
    index: int  # 1-based exit index (EndEffectorAction.exit_index)
    layer: int  # 0-based LLM layer whose output feeds this exit
    layers: int  # LLM layers run when stopping here (= layer + 1)
    gflops: float  # cumulative LLM GFLOPs at this exit (paper convention: GMACs), typical prompt


@dataclass(frozen=True)
class ExitCandidate:
    """What an exit decider sees at each built exit, in order (satisfies decision.ExitView)."""
    index: int
    layer: int
    layers: int
    pose: torch.Tensor  # (pose_dim,) tanh-space pose of the shared head at this exit (state not committed)
    prev_pose: torch.Tensor  # (pose_dim,) previous exit's pose; for the first exit, a decode of the layer before
    feature: torch.Tensor  # (d,) max-pooled exit feature
    prev_feature: torch.Tensor  # (d,)
    is_last: bool  # last allowed exit: the policy stops here whatever the decider says


__all__ = ["DeerPolicy", "ExitCandidate", "ExitDecider", "ExitDecision", "ExitInfo", "StepResult"]


@dataclass
class StepResult:
    action: np.ndarray  # (7,) float32: 6 relative pose values in [-1, 1], gripper +1 open / -1 close
    exit_index: int  # 1-based
    layers: int  # LLM layers run
    gflops: float  # LLM GFLOPs spent on this step (actual prompt length)
    values: list[float] = field(default_factory=list)  # the decisions' criterion values, one per exit seen
    timings_ms: dict = field(default_factory=dict)  # 'preprocess', 'vision', 'llm', 'head', 'total'
    # per examined exit, for the online cost model (exits/costs.py): ms of the LLM layers run since the previous
    # exit (the first includes the embedding), and ms of examining the exit (head decodes + the decider)
    llm_ms: list[float] = field(default_factory=list)
    exit_ms: list[float] = field(default_factory=list)
    head_decodes: int = 0  # head calls this step: one per examined exit, plus the first exit's previous pose
    vision_reused: tuple[bool, ...] = ()  # per camera (static, gripper): cached tokens reused (vision_reuse.py)
    vision_change: tuple[float | None, ...] = ()  # per camera: change test score (grey levels), None = not tested


@dataclass
class _Prompt:
    """Everything that depends only on the instruction, computed once per instruction."""
    text: str
    input_ids: torch.Tensor  # (1, L)
    media_locations: torch.Tensor  # (1, L)
    attn_bias: torch.Tensor  # (1, H, L, L)
    cumulative_gflops: list[float]  # [i] = LLM GMACs of layers 0..i at this prompt length


class DeerPolicy:
    """A DeerModel wrapped for closed-loop control: preprocessing, prompt cache, dynamic exit, LSTM history."""

    def __init__(self, model: DeerModel, tokenizer, device: str = "cpu", dtype: str = "fp32",
                 vision_reuse: VisionReuse | None = None):
        self.device = resolve_device(device)
        self.dtype = dtype
        self.model = prepare_model(model, self.device, dtype)
        self.config = model.config
        self.prompts = PromptEncoder(tokenizer, self.config.max_text_tokens, self.config.vocab_size)
        self.preprocess = ImagePreprocessor(self.config.image_size)
        costs = exit_costs(self.config, max_exit=len(model.exit_layers))
        self.exits: list[ExitInfo] = [ExitInfo(e.index, e.layer, e.layers, e.gflops) for e in costs]
        self._prompt: _Prompt | None = None
        self._state: LSTMState | None = None
        self._vision_cache = VisionCache(vision_reuse)

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Clear the recurrent (LSTM) state and the cached vision tokens: call at the start of every new task."""
        self._state = None
        self._vision_cache.clear()

    @property
    def vision_reuse(self) -> VisionReuse:
        return self._vision_cache.settings

    def set_vision_reuse(self, settings: VisionReuse) -> None:
        """Per-camera vision-token reuse (vision_reuse.py); clears the cached tokens."""
        self._vision_cache.configure(settings)

    def memory_mb(self) -> dict[str, float]:
        """Measured weight memory (MiB) by part: llm, vision, perceiver, head, total."""
        return memory_report(self.model)

    @torch.inference_mode()
    def step(self, static_rgb: np.ndarray, gripper_rgb: np.ndarray, instruction: str,
             decide: ExitDecider) -> StepResult:
        """One control step. Images are uint8 (H, W, 3) RGB of any size; see the module docstring."""
        t0 = time.perf_counter()
        if self._prompt is not None and self._prompt.text != instruction:
            self._vision_cache.clear()  # a new task: no tokens of the previous one's frames
        media, t1, plans = self._media((static_rgb, gripper_rgb))  # (1, 1, C*n, dv)
        prompt = self._prompt_for(instruction)
        t2 = self._now()

        model, head_s = self.model, 0.0
        exit_layers = model.exit_layers
        x = model.embed(prompt.input_ids)  # (1, L, d)
        prev_feature = model.pool(x) if exit_layers[0] == 0 else None
        prev_pose: torch.Tensor | None = None
        values: list[float] = []
        llm_ms: list[float] = []
        exit_ms: list[float] = []
        decodes = 0
        since = t2  # end of the previous exit's examination
        k = 0  # next exit to examine
        for i in range(exit_layers[-1] + 1):
            x = model.layer(i, x, media, prompt.media_locations, prompt.attn_bias)
            if k == 0 and i == exit_layers[0] - 1:
                prev_feature = model.pool(x)  # the layer before the first exit
            if i != exit_layers[k]:
                continue
            feature = model.pool(x)  # (1, d)
            th = self._now()
            if prev_pose is None:
                prev_pose = self._decode(prev_feature).pose[0, 0]
                decodes += 1
            out = self._decode(feature)
            decodes += 1
            head_s += time.perf_counter() - th
            is_last = k == len(exit_layers) - 1
            cand = ExitCandidate(k + 1, i, i + 1, out.pose[0, 0], prev_pose, feature[0], prev_feature[0], is_last)
            decision = decide(cand)
            if not isinstance(decision, ExitDecision):
                raise TypeError(f"exit decider {decide!r} returned {type(decision).__name__}, not an ExitDecision "
                                "(deer_ros.model.decision): return ExitDecision(stop, value)")
            if decision.value is not None:
                values.append(float(decision.value))
            done = self._now()
            llm_ms.append((th - since) * 1e3)
            exit_ms.append((done - th) * 1e3)
            since = done
            if decision.stop or is_last:
                break
            prev_pose, prev_feature, k = cand.pose, feature, k + 1
        t3 = self._now()

        self._state = out.state  # commit the chosen exit's history only
        gripper = 1.0 if float(out.gripper_prob[0, 0, 0]) > 0.5 else -1.0
        action = np.append(cand.pose.float().cpu().numpy(), gripper).astype(np.float32)
        t4 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "vision": (t2 - t1) * 1e3, "llm": (t3 - t2 - head_s) * 1e3,
                   "head": head_s * 1e3, "total": (t4 - t0) * 1e3}
        return StepResult(action, cand.index, cand.layers, prompt.cumulative_gflops[cand.layer], values, timings,
                          llm_ms, exit_ms, decodes, vision_reused=tuple(p.reuse for p in plans),
                          vision_change=tuple(p.change for p in plans))

    # ------------------------------------------------------------------ internals
    def _media(self, cameras: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, float, list[CameraPlan]]:
        """Media tokens of the cameras (static first), reusing cached ones where vision_reuse allows; also the
        time preprocessing ended and the per-camera plans. With reuse off this is exactly the batched pass."""
        plans = self._vision_cache.plan(cameras, CAMERA_NAMES)
        fresh = [i for i, p in enumerate(plans) if not p.reuse]
        encoded = None
        if fresh:
            images = self.preprocess(*(cameras[i] for i in fresh), names=tuple(CAMERA_NAMES[i] for i in fresh))
            images = images.to(self.device, self.model.compute_dtype)
            t1 = self._now()
            encoded = self.model.encode_vision(images)  # (1, 1, len(fresh)*n, dv)
        else:
            t1 = self._now()
        if not self._vision_cache.settings.enabled:
            return encoded, t1, plans
        tokens = dict(zip(fresh, encoded.chunk(len(fresh), dim=2))) if fresh else {}
        for i, t in tokens.items():
            self._vision_cache.store(i, plans[i], t)
        if len(fresh) == len(cameras):
            return encoded, t1, plans
        parts = [tokens[i] if i in tokens else self._vision_cache.reused(i) for i in range(len(cameras))]
        return torch.cat(parts, dim=2), t1, plans

    def _decode(self, feature: torch.Tensor) -> HeadOutput:
        """The shared head on one exit feature from the committed state (which it does not change)."""
        return self.model.head.step(feature, self._state)

    def _prompt_for(self, instruction: str) -> _Prompt:
        if self._prompt is None or self._prompt.text != instruction:
            enc = self.prompts([instruction])
            ids = enc.input_ids.to(self.device)
            L = ids.shape[1]
            per_layer = [layer_macs(self.config, i, L) / 1e9 for i in range(self.model.n_layers)]
            self._prompt = _Prompt(instruction, ids, enc.media_locations.to(self.device), self.model.attn_bias(L),
                                   list(np.cumsum(per_layer)))
        return self._prompt

    def _now(self) -> float:
        """perf_counter after the queued GPU work is done, so the stage timings are real."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()
