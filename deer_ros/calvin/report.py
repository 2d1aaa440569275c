"""The closed-loop evaluation report: what a CALVIN user reads after a run, as JSON, a text summary and an SVG plot.

Chains (LH-MTLC): success rate at 1..5 and average length over the complete chains, per-task counts, every chain
with its tasks and outcome, compute (GFLOPs, layers, exit histogram) over all steps and over the successful
subtasks, faults (invalid actions) and clipped steps, and the settings of the run. Episodes (a recorded episode's
start state and task): success per episode. A run that stopped early (SIGINT, a fatal error, a lost policy,
max_frames) is marked `partial` with the reason, and holds everything finished before it stopped.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Sequence

from deer_ros.calvin.protocol import CHAIN_LENGTH, ChainResult, SubtaskResult, compute_means, lh_mtlc_metrics
from deer_ros.files import write_text_atomic


@dataclass
class EpisodeResult:
    """One recorded episode rerun in the simulator from its first frame's state."""

    segment: int  # index of the segment in the split
    start: int    # first global frame index
    result: SubtaskResult


def _subtask_json(s: SubtaskResult) -> dict:
    steps = s.steps or None
    return {"task": s.task, "instruction": s.instruction, "success": s.success, "steps": s.steps,
            "mean_gflops": s.gflops / steps if steps else None, "mean_layers": s.layers / steps if steps else None,
            "exit_histogram": {str(i): s.exits[i] for i in sorted(s.exits)}, "clipped_steps": s.clipped,
            "fault": s.fault or None}


def chains_report(results: Sequence[ChainResult], settings: dict, partial: bool = False,
                  reason: str | None = None) -> dict:
    """The JSON report of an LH-MTLC run (`results` may end with an unfinished chain)."""
    return {"kind": "lh_mtlc", "partial": partial, "reason": reason, "lh_mtlc": lh_mtlc_metrics(results),
            "chains": [{"index": i, "initial_state": r.sequence.initial_state, "tasks": list(r.sequence.tasks),
                        "complete": r.complete, "successes": r.successes,
                        "subtasks": [_subtask_json(s) for s in r.subtasks]} for i, r in enumerate(results)],
            "settings": settings}


def episodes_report(results: Sequence[EpisodeResult], settings: dict, partial: bool = False,
                    reason: str | None = None) -> dict:
    """The JSON report of recorded episodes rerun from their start states."""
    subtasks = [e.result for e in results]
    successes = sum(s.success for s in subtasks)
    summary = {"episodes": len(results), "successes": successes,
               "success_rate": successes / len(results) if results else 0.0, **compute_means(subtasks),
               "successful": compute_means([s for s in subtasks if s.success]),
               "faults": sum(bool(s.fault) for s in subtasks), "clipped_steps": sum(s.clipped for s in subtasks)}
    return {"kind": "episodes", "partial": partial, "reason": reason, "episodes": summary,
            "runs": [{"segment": e.segment, "start_frame": e.start, **_subtask_json(e.result)} for e in results],
            "settings": settings}


def summary_text(report: dict) -> str:
    """A few lines in the style of CALVIN's evaluate_policy printout."""
    head = f"PARTIAL ({report['reason']}): " if report.get("partial") else ""
    if report["kind"] == "episodes":
        e = report["episodes"]
        return f"{head}{e['successes']}/{e['episodes']} episodes solved ({_compute_line(e)})"
    m = report["lh_mtlc"]
    rates = " | ".join(f"{i}/{CHAIN_LENGTH}: {m['success_rates'][str(i)] * 100:.1f}%"
                       for i in range(1, CHAIN_LENGTH + 1))
    return (f"{head}{m['chains']} chains: {rates}; average length {m['avg_len']:.2f} "
            f"({m['faults']} faults, {m['clipped_steps']} clipped steps; {_compute_line(m)})")


def _compute_line(m: dict) -> str:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3g}"

    ok = m["successful"]
    return (f"GFLOPs/step {fmt(m['mean_gflops'])} all, {fmt(ok['mean_gflops'])} successful; "
            f"mean exit {fmt(m['mean_exit'])} all, {fmt(ok['mean_exit'])} successful")


def write_report(report: dict, path: str | os.PathLike) -> list[Path]:
    """Write the JSON to `path` and the plot next to it (<path>.svg). Each goes to a temporary file first and
    is then renamed, so a reader never sees half a report."""
    path = Path(path).expanduser()
    return [write_text_atomic(target, text)
            for target, text in ((path, json.dumps(report, indent=2)), (path.with_suffix(".svg"), plot_svg(report)))]


def _bars(x0: float, title: str, labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]],
          unit: str, subtitle: str = "") -> list[str]:
    """One bar panel (values in 0..100) at x offset `x0`, 380 x 280 px; series = (name, colour, values)."""
    left, top, width, height = x0 + 45, 52, 320, 170
    out = [f'<text x="{x0 + 200}" y="20" text-anchor="middle" font-size="13">{escape(title)}</text>',
           f'<text x="{x0 + 200}" y="36" text-anchor="middle" font-size="10">{escape(subtitle)}</text>',
           f'<line x1="{left}" y1="{top + height}" x2="{left + width}" y2="{top + height}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + height}" stroke="black"/>']
    for tick in (0, 50, 100):
        y = top + height - tick / 100 * height
        out.append(f'<text x="{left - 5}" y="{y + 4}" text-anchor="end" font-size="10">{tick}{unit}</text>')
    slot = width / max(len(labels), 1)
    bar = slot * 0.8 / max(len(series), 1)
    for i, label in enumerate(labels):
        out.append(f'<text x="{left + slot * (i + 0.5)}" y="{top + height + 14}" text-anchor="middle" '
                   f'font-size="10">{escape(label)}</text>')
        for j, (_, colour, values) in enumerate(series):
            h = max(0.0, min(100.0, values[i])) / 100 * height
            x = left + slot * i + slot * 0.1 + bar * j
            out.append(f'<rect x="{x:.1f}" y="{top + height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                       f'fill="{colour}"/><text x="{x + bar / 2:.1f}" y="{top + height - h - 3:.1f}" '
                       f'text-anchor="middle" font-size="9">{values[i]:.0f}</text>')
    for j, (name, colour, _) in enumerate(series):
        y = top + height + 30 + 14 * j
        out.append(f'<rect x="{left}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{left + 15}" y="{y}" font-size="10">{escape(name)}</text>')
    return out


def plot_svg(report: dict) -> str:
    """The report as a picture: success (rate at 1..5, or per episode) and the exits taken over all steps vs
    over successful subtasks. Plain SVG, so it needs no plotting library."""
    state = f"partial: {report['reason']}" if report.get("partial") else "complete"
    if report["kind"] == "episodes":
        summary = report["episodes"]
        runs = report["runs"]
        left = _bars(0, f"{summary['successes']}/{summary['episodes']} episodes solved",
                     [str(r["segment"]) for r in runs], [("solved", "#2a9d40", [100.0 * r["success"] for r in runs])],
                     "%", state)
    else:
        summary = report["lh_mtlc"]
        rates = [summary["success_rates"][str(i)] * 100 for i in range(1, CHAIN_LENGTH + 1)]
        left = _bars(0, f"{summary['chains']} chains, average length {summary['avg_len']:.2f}",
                     [f"{i}/{CHAIN_LENGTH}" for i in range(1, CHAIN_LENGTH + 1)],
                     [("chains with i tasks done in a row", "#1f6fb4", rates)], "%", state)
    exits = sorted({int(k) for hist in (summary["exit_histogram"], summary["successful"]["exit_histogram"])
                    for k in hist})

    def shares(hist: dict) -> list[float]:
        total = sum(hist.values()) or 1
        return [hist.get(str(e), 0) / total * 100 for e in exits]

    right = _bars(400, "exits taken", [f"exit {e}" for e in exits],
                  [("all steps", "#7f7f7f", shares(summary["exit_histogram"])),
                   ("successful subtasks", "#e07b00", shares(summary["successful"]["exit_histogram"]))], "%",
                  "share of the steps")
    body = "\n".join(left + right)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="800" height="300" font-family="sans-serif">\n'
            f'<rect width="800" height="300" fill="white"/>\n{body}\n</svg>\n')
