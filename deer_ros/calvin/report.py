"""The closed-loop evaluation report: what a CALVIN user reads after a run, as JSON, a text summary and a plot.

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
from pathlib import Path
from typing import Any, Sequence

from deer_ros.calvin.protocol import CHAIN_LENGTH, ChainResult, SubtaskResult, compute_means, lh_mtlc_metrics


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
    def fmt(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    ok = m["successful"]
    return (f"GFLOPs/step {fmt(m['mean_gflops'])} all, {fmt(ok['mean_gflops'])} successful; "
            f"mean exit {fmt(m['mean_exit'])} all, {fmt(ok['mean_exit'])} successful")


def write_report(report: dict, path: str | os.PathLike) -> list[Path]:
    """Write the JSON to `path` and, where matplotlib is installed, the plot next to it (<path>.png). The JSON
    goes to a temporary file first and is then renamed, so a reader never sees half a report."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)
    written = [path]
    plot = plot_report(report, path.with_suffix(".png"))
    if plot is not None:
        written.append(plot)
    return written


def plot_report(report: dict, path: Path) -> Path | None:
    """Success rates (or per-episode success) and the exit histograms, all steps vs successful subtasks."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    title = "partial: " + str(report["reason"]) if report.get("partial") else "complete"
    if report["kind"] == "episodes":
        summary = report["episodes"]
        runs = report["runs"]
        left.bar(range(len(runs)), [1 if r["success"] else 0 for r in runs], color="tab:green")
        left.set_xticks(range(len(runs)), [r["task"] for r in runs], rotation=60, ha="right", fontsize=7)
        left.set_ylabel("solved")
        left.set_title(f"{summary['successes']}/{summary['episodes']} episodes solved ({title})", fontsize=9)
    else:
        summary = report["lh_mtlc"]
        rates = [summary["success_rates"][str(i)] * 100 for i in range(1, CHAIN_LENGTH + 1)]
        left.bar(range(1, CHAIN_LENGTH + 1), rates, color="tab:blue")
        for i, rate in enumerate(rates, start=1):
            left.text(i, rate + 1, f"{rate:.0f}%", ha="center", fontsize=8)
        left.set_ylim(0, 110)
        left.set_xlabel("tasks completed in a row")
        left.set_ylabel("chains (%)")
        left.set_title(f"{summary['chains']} chains, average length {summary['avg_len']:.2f} ({title})", fontsize=9)
    _plot_exits(right, summary)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_exits(ax: Any, summary: dict) -> None:
    exits = sorted({int(k) for k in summary["exit_histogram"]} | {int(k) for k in summary["successful"]["exit_histogram"]})
    if not exits:
        ax.text(0.5, 0.5, "no exit information in the actions", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    width = 0.4
    for offset, (label, hist) in zip((-width / 2, width / 2), (("all steps", summary["exit_histogram"]),
                                                              ("successful subtasks",
                                                               summary["successful"]["exit_histogram"]))):
        total = sum(hist.values()) or 1
        ax.bar([e + offset for e in exits], [hist.get(str(e), 0) / total * 100 for e in exits], width, label=label)
    ax.set_xticks(exits)
    ax.set_xlabel("exit")
    ax.set_ylabel("steps (%)")
    ax.set_title("exits taken", fontsize=9)
    ax.legend(fontsize=8)
