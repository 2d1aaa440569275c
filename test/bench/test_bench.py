"""`deer-ros bench --quick --skip-ros`: the report, the plots and the JSON, on the tiny preset (issue 8)."""
from __future__ import annotations

import json
import re

import pytest

from deer_ros.bench.cli import bench_main
from deer_ros.bench.report import evaluate_targets

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # One torch thread: on a shared 2-core machine spinning OpenMP threads make tiny ops 100x slower.
    code = bench_main(["--quick", "--skip-ros", "--out", str(out), "--threads", "1"])
    assert code == 0
    return out, json.loads((out / "bench.json").read_text())


def test_json_has_the_per_exit_keys_with_sane_values(quick_run):
    _, results = quick_run
    (run,) = results["runs"]
    assert (run["preset"], run["device"], run["dtype"]) == ("tiny", "cpu", "fp32")
    exits = run["exits"]
    assert [e["index"] for e in exits] == [1, 2, 3]  # tiny: exits after layers 2, 4, 6
    assert [e["layers"] for e in exits] == [2, 4, 6]
    gflops = [e["gflops"] for e in exits]
    assert all(g > 0 for g in gflops) and gflops == sorted(gflops) and len(set(gflops)) == 3
    for e in exits:
        assert {"index", "layers", "gflops", "llm_ms_p50", "total_ms_p50"} <= set(e)
        assert 0 < e["llm_ms_p50"] < e["total_ms_p50"] < 10_000
        assert e["total_ms_p50"] <= e["total_ms_p95"]
    # tiny's layers are all alike, so the compute of a step to exit k is proportional to the layers it runs
    assert [e["flops_ratio"] for e in exits] == pytest.approx([e["layers"] / 6 for e in exits], rel=0.02)


def test_breakdown_covers_every_layer_and_adds_up(quick_run):
    _, results = quick_run
    b = results["runs"][0]["breakdown"]
    assert [layer["layer"] for layer in b["layers_ms"]] == list(range(6))
    assert all(layer["xattn_ms"] > 0 and layer["block_ms"] > 0 for layer in b["layers_ms"])
    st = b["stages_ms"]
    named = sum(st[k]["p50"] for k in ("preprocess", "vision", "perceiver", "llm_layers", "head", "criterion"))
    assert 0 < named <= st["total"]["p50"] * 1.2  # p50s of parts need not add up exactly, but nearly
    assert b["head_calls_per_step"] == 4  # the layer before exit 1, then exits 1, 2, 3
    assert b["criterion_calls_per_step"] == 3


def test_memory_is_proportional_to_the_layers_built_and_int8_is_smaller(quick_run):
    _, results = quick_run
    rows = results["memory"]["tiny"]
    assert {r["dtype"] for r in rows} == {"fp32", "fp16", "bf16", "int8"}
    for r in rows:
        assert abs(r["ratio_error"]) < 0.01
        assert r["llm_mb"] == pytest.approx(r["analytic_mb"], rel=0.01)
    fp32 = {r["max_exit"]: r["llm_mb"] for r in rows if r["dtype"] == "fp32"}
    fp16 = {r["max_exit"]: r["llm_mb"] for r in rows if r["dtype"] == "fp16"}
    int8 = {r["max_exit"]: r["llm_mb"] for r in rows if r["dtype"] == "int8"}
    assert fp32[1] < fp32[2] < fp32[3]
    assert fp16[3] == pytest.approx(fp32[3] / 2, rel=0.01)
    assert int8[3] < fp16[3]


def test_gains_are_measured_before_and_after(quick_run):
    _, results = quick_run
    gains = {g["name"]: g for g in results["runs"][0]["gains"]}
    # every gain compares two different code paths; the head's oneDNN switch is applied in the model, so no
    # row compares it with itself
    assert set(gains) == {"cameras_batched", "prompt_reused", "head_state_kept", "early_exit", "int8_llm"}
    for g in gains.values():
        assert g["before_ms_p50"] > 0 and g["after_ms_p50"] >= 0


def test_markdown_links_existing_pngs_and_states_the_targets(quick_run):
    out, _ = quick_run
    text = (out / "benchmarks.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 3  # breakdown, exits, memory
    for link in links:
        assert (out / link).read_bytes()[:8] == PNG_MAGIC
    assert "## Headline" in text and "Design targets" in text
    assert "not measured: no GPU" in text or "cuda" in text


def test_render_rewrites_the_same_report_from_the_json(quick_run, tmp_path):
    out, _ = quick_run
    assert bench_main(["--render", str(out / "bench.json"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "benchmarks.md").read_text() == (out / "benchmarks.md").read_text()
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(p.name for p in out.glob("*.png"))


def test_targets_say_not_met_when_a_lockstep_frame_is_lost():
    ros = {"node_overhead": {"overhead_ms_p50": 1.0, "overhead_ms_p99": 4.0},
           "bridge_replay": {"pairs_per_s": 350.0, "pairs_lost": 0, "frames_sent": 100},
           "lockstep": {"rate_hz": 45.0, "frames_lost": 1, "frames_sent": 100, "resends": 0}}
    verdicts = {t["what"]: t["met"] for t in evaluate_targets({"runs": [], "memory": {}, "ros": ros})}
    assert verdicts["node overhead (obs in -> action out minus model time), loopback"] is True
    assert verdicts["bridge replay, free-running"] is True
    assert verdicts["bridge <-> policy lockstep"] is False


@pytest.mark.parametrize("argv, message", [
    (["--preset", "huge"], "unknown preset"),
    (["--targets", "gpu:fp32"], "not device:dtype"),
    (["--targets", "cuda:int8"], "CPU only"),
    (["--steps", "0"], "at least 1"),
])
def test_bad_options_are_refused_with_a_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
