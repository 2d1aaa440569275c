"""Vision-token reuse on recorded data: how far the actions move from reuse off, and how much time it saves.

    python -m deer_ros.bench.vision_reuse [--thresholds 0.5,1,2,4,8] [--max-age 3] [--split validation]
        [--checkpoint DIR] [--of3b-steps 3] [--cpu-threads 1] [--json]

The bundled demo model (trained on the bundled CALVIN sample) replays the recorded frames of a split closed over its
own history (reset at every annotated segment), once with reuse off and once per (cameras, threshold) setting; all
settings step on the same frame before the next frame, so machine load falls on all of them alike. Every step runs
to the last exit, so the difference comes from reuse alone. Reported per setting:
  reused      share of steps whose cached tokens were used, per camera
  d trans / d rot   RMSE of the action's translation / rotation part against reuse off (action units, [-1, 1])
  grip agree  share of steps whose gripper command equals reuse off's
  fast / slow d trans   the same RMSE on the third of steps with the fastest / slowest recorded arm motion
  vs recorded       translation RMSE against the recorded actions (reuse off's is in the header)
  vision ms, saved  mean preprocess + vision time per step (what reuse can save) and its saving against reuse off
  step ms, saved    the same for the whole step (tiny: vision is a small share, so this is mostly machine noise)
  light lag   for each recorded light toggle (LED or lightbulb state change), steps before the static camera was
              encoded again (0 = the toggle frame itself was encoded)
With --of3b-steps N > 0 the of3b architecture (random weights: time only, nothing is downloaded) is timed with 0, 1
and 2 cameras reused, N steps each.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CAMERA_SETS = {"static": (True, False), "gripper": (False, True), "both": (True, True)}
LIGHTS = {4: "lightbulb", 5: "LED"}  # scene_obs indices of CALVIN's light states


@dataclass(frozen=True)
class Setting:
    cameras: str  # key of CAMERA_SETS, or "off"
    threshold: float
    max_age: int

    @property
    def label(self) -> str:
        return "off" if self.cameras == "off" else f"{self.cameras} <= {self.threshold:g} x{self.max_age}"

    def reuse(self):
        from deer_ros.model.vision_reuse import CameraReuse, VisionReuse

        if self.cameras == "off":
            return VisionReuse()
        return VisionReuse(tuple(CameraReuse(self.threshold, self.max_age) if on else CameraReuse()
                                 for on in CAMERA_SETS[self.cameras]))


@dataclass
class Trace:
    """What one setting did on every replayed step."""
    actions: list
    reused: list
    total_ms: list
    vision_ms: list  # preprocess + vision: the part reuse can save


def load_split(split_dir: Path) -> list[tuple[str, list]]:
    """(instruction, frames with scene_obs) of every annotated segment, in memory: all settings replay them."""
    from deer_ros.calvin.dataset import CalvinSplit

    split = CalvinSplit(split_dir)
    return [(s.instruction, list(split.frames(s, keys=("scene_obs",)))) for s in split.segments()]


def replay(policies: dict[str, Any], segments: list[tuple[str, list]]) -> dict[str, Trace]:
    """Step every policy on each recorded frame in turn (order rotated per frame), history reset per segment."""
    from deer_ros.exits.controller import FixedExit

    last = FixedExit(len(next(iter(policies.values())).exits))
    traces = {label: Trace([], [], [], []) for label in policies}
    labels = list(policies)
    step = 0
    for instruction, frames in segments:
        for policy in policies.values():
            policy.reset()
        for f in frames:
            for j in range(len(labels)):
                label = labels[(j + step) % len(labels)]
                r = policies[label].step(f.rgb_static, f.rgb_gripper, instruction, last)
                traces[label].actions.append(r.action)
                traces[label].reused.append(r.vision_reused or (False, False))
                traces[label].total_ms.append(r.timings_ms["total"])
                traces[label].vision_ms.append(r.timings_ms["preprocess"] + r.timings_ms["vision"])
            step += 1
    return traces


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else float("nan")


def light_toggles(segments: list[tuple[str, list]]) -> list[tuple[int, str]]:
    """(global step, which light) where a light's recorded state differs from the previous frame's."""
    out, step = [], 0
    for _, frames in segments:
        for k, f in enumerate(frames):
            if k and f.scene_obs is not None and frames[k - 1].scene_obs is not None:
                for i, name in LIGHTS.items():
                    if round(f.scene_obs[i]) != round(frames[k - 1].scene_obs[i]):
                        out.append((step, name))
            step += 1
    return out


def summarise(settings: list[Setting], traces: dict[str, Trace], segments: list[tuple[str, list]]) -> dict:
    recorded = np.array([f.rel_actions for _, frames in segments for f in frames], dtype=np.float64)
    speed = np.linalg.norm(recorded[:, :3], axis=1)
    fast, slow = speed >= np.quantile(speed, 2 / 3), speed <= np.quantile(speed, 1 / 3)
    toggles = light_toggles(segments)
    off = np.array(traces["off"].actions, dtype=np.float64)
    off_ms = float(np.mean(traces["off"].total_ms))
    off_vision_ms = float(np.mean(traces["off"].vision_ms))
    rows = []
    for s in settings:
        t = traces[s.label]
        a, reused = np.array(t.actions, dtype=np.float64), np.array(t.reused, dtype=bool)
        lags = []
        for step, name in toggles:
            later = np.flatnonzero(~reused[step:, 0])
            lags.append(f"{name} {int(later[0]) if later.size else 'never'}")
        rows.append({"setting": s.label, "cameras": s.cameras, "threshold": s.threshold, "max_age": s.max_age,
                     "reused_static": float(reused[:, 0].mean()), "reused_gripper": float(reused[:, 1].mean()),
                     "d_trans": rmse(a[:, :3], off[:, :3]), "d_rot": rmse(a[:, 3:6], off[:, 3:6]),
                     "grip_agree": float(np.mean(np.sign(a[:, 6]) == np.sign(off[:, 6]))),
                     "d_trans_fast": rmse(a[fast, :3], off[fast, :3]), "d_trans_slow": rmse(a[slow, :3], off[slow, :3]),
                     "trans_vs_recorded": rmse(a[:, :3], recorded[:, :3]),
                     "step_ms": float(np.mean(t.total_ms)), "saved_ms": off_ms - float(np.mean(t.total_ms)),
                     "vision_ms": float(np.mean(t.vision_ms)),
                     "vision_saved_ms": off_vision_ms - float(np.mean(t.vision_ms)),
                     "light_lags": lags})
    return {"steps": len(off), "off_step_ms": off_ms, "off_vision_ms": off_vision_ms,
            "off_trans_vs_recorded": rmse(off[:, :3], recorded[:, :3]),
            "off_rot_vs_recorded": rmse(off[:, 3:6], recorded[:, 3:6]), "light_toggles": len(toggles),
            "rows": rows}


def change_scores(segments: list[tuple[str, list]]) -> dict[str, dict[str, float]]:
    """Per camera: the change test between consecutive recorded frames (p10/p50/p90), and what a global 10%
    dimming of the static image scores (a lighting change over the whole view)."""
    from deer_ros.model.vision_reuse import change, signature

    out: dict[str, dict[str, float]] = {}
    for camera in ("rgb_static", "rgb_gripper"):
        scores = [change(signature(getattr(a, camera)), signature(getattr(b, camera)))
                  for _, frames in segments for a, b in zip(frames, frames[1:])]
        out[camera] = {f"p{q}": float(np.percentile(scores, q)) for q in (10, 50, 90)}
    dimmed = [change(signature(f.rgb_static), signature((f.rgb_static * 0.9).astype(np.uint8)))
              for _, frames in segments for f in frames[::10]]
    out["static_dimmed_10pct"] = {"p50": float(np.median(dimmed))}
    return out


def time_of3b(steps: int, seed: int) -> list[dict]:
    """Mean step time of the of3b architecture (random weights) with 0, 1 and 2 cameras' tokens reused."""
    from deer_ros.bench.cli import Target, random_policy
    from deer_ros.calvin.dataset import CalvinSplit
    from deer_ros.exits.controller import FixedExit
    from deer_ros.model.vision_reuse import CameraReuse, VisionReuse
    from deer_ros.paths import calvin_sample

    policy = random_policy("of3b", Target("cpu", "fp32"), seed)
    split = CalvinSplit(calvin_sample() / "validation")
    frame = split.frame(split.segments()[0].start, keys=())
    always = CameraReuse(255.0, 10_000)  # reuse whenever a cached encoding exists: times the saving itself
    rows = []
    for label, reuse in (("none reused", VisionReuse()), ("static reused", VisionReuse((always,))),
                         ("both reused", VisionReuse((always, always)))):
        policy.set_vision_reuse(reuse)
        policy.reset()
        policy.step(frame.rgb_static, frame.rgb_gripper, "push the sliding door to the right", FixedExit(1))
        ms, fixed = [], []
        for _ in range(steps):
            r = policy.step(frame.rgb_static, frame.rgb_gripper, "push the sliding door to the right", FixedExit(1))
            ms.append(r.timings_ms["total"])
            fixed.append(r.timings_ms["preprocess"] + r.timings_ms["vision"])
        rows.append({"setting": label, "steps": steps, "step_ms": float(np.mean(ms)),
                     "vision_ms": float(np.mean(fixed))})
    return rows


def table(summary: dict) -> str:
    lines = ["| setting | reused static | reused gripper | d trans | d rot | grip agree | d trans fast | "
             "d trans slow | trans vs recorded | vision ms | saved | step ms | saved | light lag (steps) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        lines.append(f"| {r['setting']} | {100 * r['reused_static']:.0f}% | {100 * r['reused_gripper']:.0f}% | "
                     f"{r['d_trans']:.4f} | {r['d_rot']:.4f} | {100 * r['grip_agree']:.1f}% | "
                     f"{r['d_trans_fast']:.4f} | {r['d_trans_slow']:.4f} | {r['trans_vs_recorded']:.4f} | "
                     f"{r['vision_ms']:.2f} | {r['vision_saved_ms']:+.2f} | "
                     f"{r['step_ms']:.2f} | {r['saved_ms']:+.2f} | {', '.join(r['light_lags']) or '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from deer_ros.paths import calvin_sample

    p = argparse.ArgumentParser(prog="python -m deer_ros.bench.vision_reuse", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="", help="model folder ('' = the bundled demo model)")
    p.add_argument("--dataset", default=str(calvin_sample()), help="CALVIN dataset root (default: bundled sample)")
    p.add_argument("--split", default="validation")
    p.add_argument("--thresholds", default="0.5,1,2,4,8", help="comma-separated change thresholds (grey levels)")
    p.add_argument("--max-age", type=int, default=3, help="most consecutive reuses of one encoding")
    p.add_argument("--cameras", default="static,gripper,both", help=f"camera sets, from {', '.join(CAMERA_SETS)}")
    p.add_argument("--of3b-steps", type=int, default=0, help="also time of3b (random weights), N steps per case")
    p.add_argument("--cpu-threads", type=int, default=1, help="torch threads (default 1: steady timings on a "
                   "shared machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    args = p.parse_args(argv)
    try:
        thresholds = [float(x) for x in args.thresholds.split(",") if x.strip()]
        cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
        bad = [c for c in cameras if c not in CAMERA_SETS]
        if bad or not thresholds:
            raise ValueError(f"unknown camera set(s) {bad}" if bad else "no thresholds given")
        settings = [Setting(c, th, args.max_age) for c in cameras for th in thresholds]
        for s in settings:
            s.reuse()  # refuses a threshold outside [0, 255] or a negative max age before anything runs
    except ValueError as exc:
        p.error(str(exc))

    import torch

    from deer_ros.model.factory import load_policy
    from deer_ros.model.policy import DeerPolicy

    torch.set_num_threads(args.cpu_threads) if args.cpu_threads else None
    segments = load_split(Path(args.dataset).expanduser() / args.split)
    base = load_policy(args.checkpoint or None)
    policies = {"off": base}
    for s in settings:  # the same weights, each setting with its own history and cache
        policies[s.label] = DeerPolicy(base.model, base.prompts.tokenizer, vision_reuse=s.reuse())
    t0 = time.perf_counter()
    summary = summarise(settings, replay(policies, segments), segments)
    summary.update({"replay_s": time.perf_counter() - t0, "checkpoint": args.checkpoint or "bundled demo model",
                    "split": args.split, "change_scores": change_scores(segments), "threads": torch.get_num_threads(),
                    "of3b": time_of3b(args.of3b_steps, args.seed) if args.of3b_steps > 0 else []})
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    cs = summary["change_scores"]
    print(f"{summary['checkpoint']}, {args.split} split: {summary['steps']} steps, every step to the last exit, "
          f"{summary['threads']} torch thread(s); {summary['light_toggles']} recorded light toggle(s)")
    print(f"reuse off: {summary['off_step_ms']:.2f} ms per step ({summary['off_vision_ms']:.2f} preprocess + "
          f"vision); vs recorded actions: translation RMSE "
          f"{summary['off_trans_vs_recorded']:.4f}, rotation RMSE {summary['off_rot_vs_recorded']:.4f}")
    print("change between consecutive frames (grey levels), p10/p50/p90: "
          + "; ".join(f"{k} {v['p10']:.2f}/{v['p50']:.2f}/{v['p90']:.2f}" for k, v in cs.items() if "p10" in v)
          + f"; static view dimmed 10%: {cs['static_dimmed_10pct']['p50']:.1f}\n")
    print(table(summary))
    if summary["of3b"]:
        print("\nof3b (random weights, CPU fp32), step to exit 1, same frame each step:\n"
              "| cameras | steps | step ms | preprocess + vision ms |\n|---|---|---|---|")
        for r in summary["of3b"]:
            print(f"| {r['setting']} | {r['steps']} | {r['step_ms']:.0f} | {r['vision_ms']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
