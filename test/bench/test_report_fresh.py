"""docs/benchmarks.md is what `deer-ros bench` makes of docs/bench/bench.json with the current code."""
from __future__ import annotations

import json
from pathlib import Path

from deer_ros.bench.report import (PROSE_BEGIN, PROSE_END, REGENERATE, image_paths, inputs_digest, kept_prose,
                                  markdown)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_report_was_measured_with_the_current_code():
    results = json.loads((DOCS / "bench" / "bench.json").read_text())
    assert results.get("inputs_digest") == inputs_digest(), (
        "docs/benchmarks.md was measured with other benchmark or model code than this tree has; "
        f"regenerate it with `{REGENERATE}`")


def test_the_report_is_the_rendering_of_its_json():
    report = DOCS / "benchmarks.md"
    results = json.loads((DOCS / "bench" / "bench.json").read_text())
    expected = markdown(results, image_paths(results, DOCS / "bench"), report, kept_prose(report))
    assert report.read_text() == expected, (
        "docs/benchmarks.md differs from what deer_ros/bench/report.py renders from docs/bench/bench.json; "
        "re-render it with `deer-ros bench --render docs/bench/bench.json --out docs/bench "
        "--report docs/benchmarks.md`")


def test_the_prose_of_a_report_survives_a_rewrite(tmp_path):
    results = json.loads((DOCS / "bench" / "bench.json").read_text())
    report = tmp_path / "benchmarks.md"
    first = markdown(results, image_paths(results, tmp_path), report, "")
    assert f"{PROSE_BEGIN}\n\n{PROSE_END}" in first
    edited = first.replace(f"{PROSE_BEGIN}\n\n{PROSE_END}", f"{PROSE_BEGIN}\nA reading of these numbers.\n{PROSE_END}")
    report.write_text(edited)
    assert kept_prose(report) == "A reading of these numbers."
    assert markdown(results, image_paths(results, tmp_path), report, kept_prose(report)) == edited
