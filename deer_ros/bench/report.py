"""The benchmark report: markdown (with the headline table and the design targets), PNG plots and JSON.

`write_report(results, out_dir, report_path)` takes the dict `deer_ros.bench.cli.run` returns. PNGs go to
out_dir; the markdown links them relative to where it is written, so it can live elsewhere (docs/benchmarks.md
with the plots in docs/bench/).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from deer_ros.dependencies import pyplot

TARGET_RATIO_ERROR = 0.10  # LLM time ratio within 10% of the FLOPs ratio (design.md section 4)
TARGET_OVERHEAD_P50_MS, TARGET_OVERHEAD_P99_MS = 3.0, 10.0
TARGET_MEMORY_ERROR = 0.10
TARGET_BRIDGE_PAIRS_S, CALVIN_HZ = 200.0, 30.0
MEASURING = ("cli.py", "timing.py", "gains.py", "memory.py", "ros_bench.py")  # what inputs_digest covers
REGENERATE = "deer-ros bench --cpu-threads 1 --out docs/bench --report docs/benchmarks.md"
PROSE_BEGIN = "<!-- prose: kept by `deer-ros bench` when it rewrites this file; edit freely -->"
PROSE_END = "<!-- end of prose -->"
STAGES = ("preprocess", "vision", "perceiver", "llm_layers", "head", "criterion", "other")
STAGE_LABELS = {"preprocess": "preprocess (resize, normalise)", "vision": "vision encoder, both cameras",
                "perceiver": "perceiver, both cameras", "llm_layers": "LLM layers (x-attn + block)",
                "head": "action head (all calls)", "criterion": "exit criterion", "other": "other (prompt, glue)"}


# ---------------------------------------------------------------------------------------------- helpers
def _f(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def _mb(x: float) -> str:
    """MiB with enough digits for tiny models and not too many for big ones."""
    return f"{x:,.1f}" if x >= 10 else f"{x:.3g}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:+.1f}%"


def _yes(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "NOT met")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _run(results: dict, preset: str, device: str = "cpu", dtype: str = "fp32") -> dict | None:
    for r in results["runs"]:
        if r["preset"] == preset and r["device"] == device and r["dtype"] == dtype:
            return r
    return None


def _run_label(run: dict) -> str:
    return f"{run['preset']}, {run['device']} {run['dtype']}"


def _slug(run: dict) -> str:
    return f"{run['preset']}_{run['device'].replace(':', '')}_{run['dtype']}"


def worst_ratio_error(run: dict, key: str = "ratio_error") -> float:
    """Largest |time ratio / FLOPs ratio - 1| over the exits before the last (the last is 0 by definition)."""
    errors = [abs(e[key]) for e in run["exits"][:-1] if key in e]
    return max(errors) if errors else 0.0


# ---------------------------------------------------------------------------------------------- targets
def evaluate_targets(results: dict) -> list[dict]:
    """The design targets of section 4 that this benchmark measures, each with its measured value and verdict."""
    rows = []
    of3b = _run(results, "of3b")
    ref = of3b or (results["runs"][0] if results["runs"] else None)
    if ref is not None:
        err = worst_ratio_error(ref)
        rows.append({"what": "LLM time ratio vs FLOPs ratio (3B arch, CPU fp32)",
                     "target": f"within {TARGET_RATIO_ERROR:.0%} at every exit",
                     "measured": f"worst {_pct(err)} between steps stopping at each exit (p50), "
                                 f"{_pct(worst_ratio_error(ref, 'in_step_ratio_error'))} within one step "
                                 f"({_run_label(ref)})",
                     "met": (err <= TARGET_RATIO_ERROR) if of3b else None})
    for preset, mem in results.get("memory", {}).items():
        err = max(abs(r["ratio_error"]) for r in mem)
        rows.append({"what": f"LLM weight memory proportional to layers built ({preset})",
                     "target": f"within {TARGET_MEMORY_ERROR:.0%}", "measured": f"worst {_pct(err)} (all dtypes)",
                     "met": err <= TARGET_MEMORY_ERROR})
    ros = results.get("ros")
    if ros:
        o = ros["node_overhead"]
        rows.append({"what": "node overhead (obs in -> action out minus model time), loopback",
                     "target": f"p50 < {TARGET_OVERHEAD_P50_MS:g} ms, p99 < {TARGET_OVERHEAD_P99_MS:g} ms",
                     "measured": f"p50 {_f(o['overhead_ms_p50'], 2)} ms, p99 {_f(o['overhead_ms_p99'], 2)} ms",
                     "met": o["overhead_ms_p50"] < TARGET_OVERHEAD_P50_MS
                     and o["overhead_ms_p99"] < TARGET_OVERHEAD_P99_MS})
        b = ros["bridge_replay"]
        rows.append({"what": "bridge replay, free-running", "target": f">= {TARGET_BRIDGE_PAIRS_S:g} pairs/s",
                     "measured": f"{_f(b['pairs_per_s'])} pairs/s ({b['pairs_lost']} of {b['frames_sent']} lost)",
                     "met": b["pairs_per_s"] >= TARGET_BRIDGE_PAIRS_S})
        ls = ros["lockstep"]
        rows.append({"what": "bridge <-> policy lockstep", "target": f"{CALVIN_HZ:g} Hz, no frame lost",
                     "measured": f"{_f(ls['rate_hz'])} Hz, {ls['frames_lost']} of {ls['frames_sent']} lost, "
                                 f"{ls['resends']} re-sent",
                     "met": ls["frames_lost"] == 0 and ls["resends"] == 0 and ls["rate_hz"] >= CALVIN_HZ})
    else:
        for what in ("node overhead", "bridge replay, free-running", "bridge <-> policy lockstep"):
            rows.append({"what": what, "target": "see design.md", "measured": "skipped (--skip-ros)", "met": None})
    if not any(r["device"].startswith("cuda") for r in results["runs"]):
        rows.append({"what": "GPU fp16/bf16 breakdown (and CUDA graphs)", "target": "measured when a GPU is lent",
                     "measured": "not measured: no GPU on this machine", "met": None})
    return rows


# ---------------------------------------------------------------------------------------------- headline
def headline_table(results: dict) -> list[str]:
    """The README table: one column per preset (CPU fp32), plus the ROS numbers."""
    runs = [r for r in results["runs"] if r["device"] == "cpu" and r["dtype"] == "fp32"]
    if not runs:
        runs = results["runs"]
    header = ["measured on this machine"] + [_run_label(r) for r in runs]
    rows = []

    def row(label: str, fn) -> None:
        rows.append([label] + [fn(r) for r in runs])

    row("LLM GFLOPs, exit 1 / last exit", lambda r: f"{r['exits'][0]['gflops']:.3g} / {r['exits'][-1]['gflops']:.3g}")
    row("whole step p50, exit 1 / last exit (ms)",
        lambda r: f"{_f(r['exits'][0]['total_ms_p50'])} / {_f(r['exits'][-1]['total_ms_p50'])}")
    row("LLM time p50, exit 1 / last exit (ms)",
        lambda r: f"{_f(r['exits'][0]['llm_ms_p50'])} / {_f(r['exits'][-1]['llm_ms_p50'])}")
    row("LLM time ratio vs FLOPs ratio, worst exit", lambda r: _pct(worst_ratio_error(r)))
    row("vision (both cameras) share of a last-exit step", lambda r: f"{_share(r, 'vision'):.0%}")
    mem = results.get("memory", {})
    row("LLM weights fp32, max_exit 1 / all (MiB)", lambda r: _mem_pair(mem.get(r["preset"]), "fp32"))
    row("LLM weights int8, max_exit 1 / all (MiB)", lambda r: _mem_pair(mem.get(r["preset"]), "int8"))
    lines = _table(header, rows)
    ros = results.get("ros")
    if ros:
        o, b, ls = ros["node_overhead"], ros["bridge_replay"], ros["lockstep"]
        lines += ["", *_table(["ROS 2 on loopback (tiny model)", "measured", "target"], [
            ["node overhead p50 / p99", f"{_f(o['overhead_ms_p50'], 2)} / {_f(o['overhead_ms_p99'], 2)} ms",
             "< 3 / < 10 ms"],
            ["bridge replay, free-running", f"{_f(b['pairs_per_s'])} pairs/s", ">= 200 pairs/s"],
            ["bridge <-> policy lockstep", f"{_f(ls['rate_hz'])} Hz, {ls['frames_lost']} frames lost",
             ">= 30 Hz, none lost"]])]
    return lines


def _share(run: dict, stage: str) -> float:
    st = run["breakdown"]["stages_ms"]
    return st[stage]["p50"] / st["total"]["p50"] if stage in st else 0.0


def _mem_pair(rows: list[dict] | None, dtype: str) -> str:
    if not rows:
        return "n/a"
    same = sorted((r for r in rows if r["dtype"] == dtype), key=lambda r: r["max_exit"])
    return f"{_mb(same[0]['llm_mb'])} / {_mb(same[-1]['llm_mb'])}" if same else "n/a"


# ---------------------------------------------------------------------------------------------- plots
def _plt():
    plt = pyplot("the benchmark plots")

    return plt


def _label(ax, xlabel: str, ylabel: str, title: str, legend_loc: str = "best") -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc=legend_loc)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def plot_breakdown(run: dict, path: Path) -> Path:
    plt = _plt()
    st, layers = run["breakdown"]["stages_ms"], run["breakdown"]["layers_ms"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 1.3]})
    names = [s for s in STAGES if s in st]
    values = [max(st[s]["p50"], 0.0) for s in names]
    ax1.barh([STAGE_LABELS[s] for s in names][::-1], values[::-1], color="tab:blue")
    ax1.set_xlabel("ms per step (p50)")
    ax1.set_title(f"{_run_label(run)}: one step to the last exit")
    idx = [layer["layer"] for layer in layers]
    ax2.bar(idx, [layer["xattn_ms"] for layer in layers], label="gated cross-attention", color="tab:orange")
    ax2.bar(idx, [layer["block_ms"] for layer in layers], bottom=[layer["xattn_ms"] for layer in layers],
            label="MPT block", color="tab:green")
    ax2.set_ylim(top=1.3 * max(layer["xattn_ms"] + layer["block_ms"] for layer in layers))  # room for the legend
    _label(ax2, "LLM layer", "ms (p50)", "per LLM layer", "upper center")
    return _save(fig, path)


def plot_exits(run: dict, path: Path) -> Path:
    plt = _plt()
    ex = run["exits"]
    idx = [e["index"] for e in ex]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for key, label, color in (("llm", "LLM", "tab:green"), ("total", "whole step", "tab:blue")):
        p50 = [e[f"{key}_ms_p50"] for e in ex]
        p95 = [e[f"{key}_ms_p95"] for e in ex]
        ax1.errorbar(idx, p50, yerr=[[0] * len(p50), [b - a for a, b in zip(p50, p95)]], marker="o", capsize=3,
                     label=f"{label} p50 (bar to p95)", color=color)
    _label(ax1, "exit", "ms", f"{_run_label(run)}: latency per exit")
    fr = [e["flops_ratio"] for e in ex]
    ax2.plot([0, 1], [0, 1], color="gray", lw=1, label="time ratio = FLOPs ratio")
    ax2.fill_between([0, 1], [0, 1 - TARGET_RATIO_ERROR], [0, 1 + TARGET_RATIO_ERROR], color="gray", alpha=0.2,
                     label=f"±{TARGET_RATIO_ERROR:.0%}")
    ax2.plot(fr, [e["time_ratio"] for e in ex], "o-", color="tab:green", label="LLM time ratio (p50)")
    for e in ex:
        ax2.annotate(str(e["index"]), (e["flops_ratio"], e["time_ratio"]), textcoords="offset points",
                     xytext=(4, -10))
    _label(ax2, "FLOPs at exit k / FLOPs at the last exit", "LLM time at exit k / at the last exit",
           "realised savings", "upper left")
    return _save(fig, path)


def plot_memory(preset: str, rows: list[dict], path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for dtype in ("fp32", "fp16", "bf16", "int8"):
        same = sorted((r for r in rows if r["dtype"] == dtype), key=lambda r: r["max_exit"])
        if same:
            ax.plot([r["max_exit"] for r in same], [r["llm_mb"] for r in same], "o-", label=dtype)
    _label(ax, "max_exit (LLM layers built up to this exit)", "LLM weight memory (MiB)",
           f"{preset}: LLM weights per max_exit")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------- markdown
def _link(png: Path, report_path: Path) -> str:
    return os.path.relpath(png, report_path.parent).replace(os.sep, "/")


def breakdown_section(run: dict, flops: dict | None) -> list[str]:
    st, b = run["breakdown"]["stages_ms"], run["breakdown"]
    total = st["total"]["p50"]
    macs = {}
    if flops:
        n = flops["cameras"]
        macs = {"vision": n * flops["vision_per_camera"]["gflops"],
                "perceiver": n * flops["perceiver_per_camera"]["gflops"],
                "llm_layers": flops["exits"][-1]["gflops"],
                "head": b["head_calls_per_step"] * flops["head_per_call"]["gflops"]}
    rows = []
    for s in STAGES:
        if s in st:
            rows.append([STAGE_LABELS[s], _f(st[s]["p50"], 2), _f(st[s]["p95"], 2), f"{st[s]['p50'] / total:.1%}",
                         f"{macs[s]:.3g}" if s in macs else ""])
    rows.append(["**whole step**", _f(total, 2), _f(st["total"]["p95"], 2), "100%", ""])
    lines = _table(["stage", "p50 ms", "p95 ms", "share", "GMACs (analytic, typical prompt)"], rows)
    per_layer = [f"{layer['layer']}: {_f(layer['xattn_ms'], 2)} + {_f(layer['block_ms'], 2)}"
                 for layer in b["layers_ms"]]
    lines += ["", f"Per LLM layer, x-attn + block ms (p50): {'; '.join(per_layer)}.",
              f"{b['head_calls_per_step']} head calls and {b['criterion_calls_per_step']} criterion evaluations "
              f"per step to the last exit; {b['steps']} timed steps."]
    return lines


def exits_section(run: dict) -> list[str]:
    rows = [[str(e["index"]), str(e["layers"]), f"{e['gflops']:.3g}", _f(e["llm_ms_p50"], 2), _f(e["llm_ms_p95"], 2),
             _f(e["total_ms_p50"], 2), _f(e["total_ms_p95"], 2), f"{e['flops_ratio']:.3f}", f"{e['time_ratio']:.3f}",
             _pct(e["ratio_error"]), f"{e.get('in_step_time_ratio', float('nan')):.3f}",
             _pct(e.get("in_step_ratio_error"))] for e in run["exits"]]
    return _table(["exit", "layers", "GFLOPs", "LLM p50", "LLM p95", "step p50", "step p95", "FLOPs ratio",
                   "LLM time ratio", "difference", "within-step ratio", "difference"], rows)


def budgets_section(run: dict) -> list[str]:
    rows = [[f"{b['flops_budget']:.3g}", f"{b['realised_gflops']:.3g}", f"{b['mean_layers']:.2f}",
             _f(b["llm_ms_p50"], 2), _f(b["llm_ms_p95"], 2), _f(b["total_ms_p50"], 2), _f(b["total_ms_p95"], 2)]
            for b in run["budgets"]]
    return _table(["flops_budget", "realised GFLOPs", "mean layers", "LLM p50", "LLM p95", "step p50", "step p95"],
                  rows)


def gains_section(run: dict) -> list[str]:
    rows = [[g["name"], g["what"], g["scope"], _f(g["before_ms_p50"], 2), _f(g["after_ms_p50"], 2),
             _f(g["saving_ms"], 2), f"{g['saving_share']:.1%}", f"{g['share_of_step']:.1%}"] for g in run["gains"]]
    return _table(["gain", "what", "measured on", "before p50 ms", "after p50 ms", "saving ms", "of the part",
                   "of a last-exit step"], rows)


def memory_section(rows: list[dict]) -> list[str]:
    by_exit: dict[int, dict[str, dict]] = {}
    for r in rows:
        by_exit.setdefault(r["max_exit"], {})[r["dtype"]] = r
    dtypes = [d for d in ("fp32", "fp16", "bf16", "int8") if any(d in v for v in by_exit.values())]
    table = []
    for k in sorted(by_exit):
        first = next(iter(by_exit[k].values()))
        cells = [str(k), str(first["layers"])]
        cells += [_mb(by_exit[k][d]["llm_mb"]) if d in by_exit[k] else "" for d in dtypes]
        cells.append(" / ".join(_pct(by_exit[k][d]["ratio_error"]) for d in dtypes if d in by_exit[k]))
        worst = max(abs(by_exit[k][d]["llm_mb"] / by_exit[k][d]["analytic_mb"] - 1) for d in by_exit[k])
        cells.append(_pct(worst))
        table.append(cells)
    emb = {d: next(r["embedding_mb"] for r in rows if r["dtype"] == d) for d in dtypes}
    lines = _table(["max_exit", "layers built"] + [f"{d} MiB" for d in dtypes]
                   + ["layers' bytes vs layer count (" + "/".join(dtypes) + ")", "measured vs analytic, worst"], table)
    lines += ["", "The token embedding (" + ", ".join(f"{d} {_mb(v)} MiB" for d, v in emb.items())
              + ") is one table whatever the depth; the proportionality check is on the layers' bytes (LLM minus "
                "embedding). int8 keeps the embedding and LayerNorms in fp32 (dynamic quantisation of the Linear "
                "layers only)."]
    return lines


def ros_section(ros: dict) -> list[str]:
    o, b, ls, rd = ros["node_overhead"], ros["bridge_replay"], ros["lockstep"], ros.get("dataset_read")
    d = o["diagnostics"]
    lines = [f"Model: {ros['model']}. Every node is a separate process talking over Fast DDS on loopback.", "",
             f"**Node overhead** ({o['pairs_sent']} image pairs at {o['rate_hz']:g} Hz into `deer_policy_node`, "
             f"{o['actions']} actions back):", ""]
    lines += _table(["part", "p50 ms", "p99 ms"], [
        ["in the node: pair complete -> action published, minus the model step (/diagnostics overhead_ms)",
         _f(o["in_node_overhead_ms_p50"], 2), _f(o["in_node_overhead_ms_p99"], 2)],
        ["outside the node's window: DDS both ways, image conversion, dispatch (e2e - latency_ms)",
         _f(o["outside_node_ms"]["p50"], 2), _f(o["outside_node_ms_p99"], 2)],
        ["**overhead, obs in -> action out minus model time** (sum of the parts' percentiles: exact for a sum of "
         "p50s only approximately, and an upper estimate at p99)",
         _f(o["overhead_ms_p50"], 2), _f(o["overhead_ms_p99"], 2)],
        ["for reference: e2e (second image published -> action received here)", _f(o["e2e_ms"]["p50"], 2),
         _f(o["e2e_ms_p99"], 2)],
        ["for reference: the action's latency_ms (includes the model step)", _f(o["latency_ms"]["p50"], 2),
         _f(o["latency_ms"]["p95"], 2) + " (p95)"]])
    if d:
        lines += ["", "Node diagnostics at the end: " + ", ".join(f"`{k}` {v}" for k, v in sorted(d.items())) + "."]
    lines += ["", f"**Bridge replay, free-running** (`lockstep: false`, `rate_hz: {b['rate_hz_requested']:g}`, looping "
                  f"over the sample): {b['pairs_received']} complete pairs of {b['frames_sent']} sent in "
                  f"{_f(b['seconds'], 2)} s = **{_f(b['pairs_per_s'])} pairs/s** ({b['pairs_lost']} lost)."]
    if rd:
        lines.append(f"Reading the frames from disk alone (`read_throughput`): {_f(rd['frames_per_s'])} frames/s.")
    lines += ["", f"**Lockstep** (`calvin_bridge_node` waits for each action of `deer_policy_node`): "
                  f"{ls['frames_sent']} frames sent, {ls['actions_scored']} actions scored by the bridge "
                  f"({ls['actions_heard']} heard here), {ls['unanswered']} unanswered, {ls['resends']} re-sent, "
                  f"{ls['frames_lost']} lost; **{_f(ls['rate_hz'])} frames/s** achieved (CALVIN runs at 30 Hz)."]
    return lines


def notes(results: dict) -> list[str]:
    """Facts that follow from the numbers of this run (the reading of them is prose in the report's kept part)."""
    out = []
    for run in results["runs"]:
        if len(run["exits"]) < 2:
            continue
        first, last = run["exits"][0], run["exits"][-1]
        out.append(f"- {_run_label(run)}: the vision encoder takes {_share(run, 'vision'):.0%} of a last-exit step; "
                   f"stopping at exit 1 cuts the LLM's GFLOPs by {1 - first['gflops'] / last['gflops']:.0%} and the "
                   f"whole step by {1 - first['total_ms_p50'] / last['total_ms_p50']:.0%}.")
    out.append(f"- Timed with {results['host']['threads']} torch thread(s).")
    return out


def inputs_digest(root: Path | None = None) -> str:
    """sha256 (16 hex digits) of the code whose behaviour the report measures: the bench's measuring modules, the
    replay loop and the model package (not its checkpoint loader). A report whose digest differs is stale."""
    root = root or Path(__file__).resolve().parents[1]
    files = sorted([*(root / "bench" / name for name in MEASURING), root / "calvin" / "replay.py",
                    *(root / "model").glob("*.py")])
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def kept_prose(report_path: Path) -> str:
    """The hand-written part of an existing report (between PROSE_BEGIN and PROSE_END), '' when there is none."""
    try:
        text = Path(report_path).read_text()
    except OSError:
        return ""
    start, end = text.find(PROSE_BEGIN), text.find(PROSE_END)
    return text[start + len(PROSE_BEGIN):end].strip("\n") if 0 <= start < end else ""


def markdown(results: dict, images: dict[str, Path], report_path: Path, prose: str = "") -> str:
    h = results["host"]
    load = lambda v: "n/a" if not v else ", ".join(f"{x:.2f}" for x in v)  # noqa: E731
    out = ["# deer_ros benchmarks", "",
           f"Generated by `{h.get('command') or 'deer-ros bench'}` on {h['date']} from code digest "
           f"`{results.get('inputs_digest', 'unknown')}` (`deer_ros.bench.report.inputs_digest`; a test fails when "
           f"the code differs: regenerate with `{REGENERATE}`). "
           f"Host: {h['cores']} CPU cores ({h['cpu']}), "
           f"torch {h['torch']} with {h['threads']} threads, Python {h['python']}, "
           f"GPU: {h['cuda'] or 'none'}. Load average at start / end: {load(h.get('load_average_start'))} / "
           f"{load(h.get('load_average_end'))} (other jobs shared this machine, so read p95s with care).", "",
           "Models have random weights (timing and memory do not depend on them; nothing is downloaded). Inputs "
           "are real CALVIN frames from the bundled sample (static 200x200, gripper 84x84) with their "
           "instructions, tokenised with the bundled CALVIN-vocabulary tokenizer (one token per word; the real "
           "MPT tokenizer gives prompts of a similar length). GFLOPs are the paper's convention (GMACs) at the "
           "actual prompt length. Timed steps are interleaved across exits and variants so load from other "
           "processes hits all alike; all figures are percentiles over the timed steps.", "",
           "## Headline", "", *headline_table(results), "",
           "## Design targets (design.md section 4)", ""]
    out += _table(["what", "target", "measured", "verdict"],
                  [[t["what"], t["target"], t["measured"], _yes(t["met"])] for t in evaluate_targets(results)])
    out += ["", "## 1. Where the time of an action goes", "",
            "One step run to the last exit, with the DeeR criterion evaluated at every exit (thresholds that never "
            "fire). Stage times from forward hooks on the model's own modules during `DeerPolicy.step`."]
    for run in results["runs"]:
        tokens = run.get("prompt_tokens")
        prompt = "" if not tokens else (f" Prompts of {tokens['min']}-{tokens['max']} tokens (mean "
                                        f"{tokens['mean']:.1f}; the preset's typical CALVIN prompt: "
                                        f"{tokens['typical_config']}).")
        out += ["", f"### {_run_label(run)}", "", f"{run['steps']} timed steps after {run['warmup']} warm-up "
                f"step(s) per measurement.{prompt}", "", *breakdown_section(run, results["flops"].get(run["preset"])),
                "", f"![breakdown]({_link(images['breakdown_' + _slug(run)], report_path)})"]
    out += ["", "## 2. Latency per exit and realised savings", "",
            "Each exit timed with `FixedExit(k)`, all exits on the same frame in each round (order rotated). "
            "LLM = the layers and their cross-attention (the policy's `timings_ms['llm']`, head excluded); step = "
            "the whole `step()`. LLM time ratio = LLM p50 at exit k / at the last exit; difference = time ratio / "
            "FLOPs ratio - 1 (target: within ±10% for the 3B architecture). The within-step ratio is the layers' "
            "time up to exit k over all layers' time inside each breakdown step (section 1), a view that machine "
            "load changing between steps cannot skew."]
    for run in results["runs"]:
        out += ["", f"### {_run_label(run)}", "", *exits_section(run), "",
                f"![exits]({_link(images['exits_' + _slug(run)], report_path)})"]
    out += ["", "## 3. Latency per budget", "",
            "Thresholds solved by the node's own `ExitBudget` (solver + online tracking) from a calibration on "
            "training-split frames, then the policy stepped on validation frames. With random weights the "
            "criterion values carry no meaning, but the exits they pick and the time they take are real."]
    for run in results["runs"]:
        out += ["", f"### {_run_label(run)}", "", *budgets_section(run)]
    out += ["", "## 4. ROS 2: node overhead and bridge throughput", ""]
    out += ros_section(results["ros"]) if results.get("ros") else ["Skipped (`--skip-ros`)."]
    out += ["", "## 5. LLM weight memory per max_exit and dtype", "",
            "Each max_exit built the way the node builds it (only the layers up to that exit exist) and converted "
            "with `prepare_model`; measured = parameter + buffer bytes of the embedding, blocks and "
            "cross-attention (int8 packed weights included); analytic = `deer_ros.model.memory`."]
    for preset, rows in results.get("memory", {}).items():
        out += ["", f"### {preset}", "", *memory_section(rows), "",
                f"![memory]({_link(images['memory_' + preset], report_path)})"]
    out += ["", "## 6. Beyond the reference: cutting the whole step", "",
            "Measured before/after on the same policy, variants interleaved (see `deer_ros/bench/gains.py`). "
            "`early_exit` is DeeR itself, for scale."]
    for run in results["runs"]:
        out += ["", f"### {_run_label(run)}", "", *gains_section(run)]
    if not any(r["device"].startswith("cuda") for r in results["runs"]):
        out += ["", "GPU rows (fp16/bf16 breakdown, CUDA graphs) are not measured: no GPU on this machine. "
                    "Run `deer-ros bench --targets cpu:fp32,cuda:fp16,cuda:bf16` where one is available."]
    out += ["", "## Notes", "", *notes(results), "", PROSE_BEGIN, prose, PROSE_END]
    out += ["", "## Run times", "", *_table(["section", "seconds"],
                                            [[k, _f(v)] for k, v in results["run_times_s"].items()])]
    return "\n".join(out) + "\n"


def image_paths(results: dict, out_dir: Path) -> dict[str, Path]:
    """Where the plots of `results` go in out_dir, by key."""
    images = {}
    for run in results["runs"]:
        images["breakdown_" + _slug(run)] = out_dir / f"breakdown_{_slug(run)}.png"
        images["exits_" + _slug(run)] = out_dir / f"exits_{_slug(run)}.png"
    for preset in results.get("memory", {}):
        images["memory_" + preset] = out_dir / f"memory_{preset}.png"
    return images


def write_report(results: dict, out_dir: Path, report_path: Path | None = None) -> list[Path]:
    """Write the PNGs and bench.json to out_dir and the markdown to report_path (default out_dir/benchmarks.md),
    keeping the prose of a report already there."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = Path(report_path) if report_path else out_dir / "benchmarks.md"
    images = image_paths(results, out_dir)
    for run in results["runs"]:
        plot_breakdown(run, images["breakdown_" + _slug(run)])
        plot_exits(run, images["exits_" + _slug(run)])
    for preset, rows in results.get("memory", {}).items():
        plot_memory(preset, rows, images["memory_" + preset])
    results["targets"] = evaluate_targets(results)
    json_path = out_dir / "bench.json"
    json_path.write_text(json.dumps(results, indent=2))
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(markdown(results, images, report_path, kept_prose(report_path)))
    return [report_path, json_path, *images.values()]
