"""`--help` of the node executables: what the node does, its parameters, and how to pass them."""
from __future__ import annotations

import sys
from typing import Sequence

from deer_ros.ros.params import ParamSpec


def help_requested(args: Sequence[str] | None) -> bool:
    """-h or --help among the node's own arguments (those before --ros-args)."""
    argv = list(sys.argv[1:] if args is None else args)
    own = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    return any(a in ("-h", "--help") for a in own)


def node_help(executable: str, doc: str | None, parameters: Sequence[ParamSpec]) -> str:
    lines = [f"usage: {executable} [--help] [--ros-args [-p NAME:=VALUE]... [--params-file FILE] "
             "[-r FROM:=TO]...]", ""]
    if doc:
        lines += [doc.strip(), ""]
    lines.append("parameters (-p NAME:=VALUE; `ros2 param describe` shows the same):")
    for spec in parameters:
        kind = "double[]" if spec.kind is list else {float: "double", str: "string"}.get(spec.kind, spec.kind.__name__)
        limits = f" [{spec.low}, {spec.high}]" if spec.low is not None else ""
        limits += f" {{{', '.join(spec.choices)}}}" if spec.choices else ""
        default = repr(spec.default) if spec.kind is str else str(spec.default).lower() if spec.kind is bool \
            else str(spec.default)
        lines.append(f"  {spec.name} ({kind}{limits}, default {default}{', read-only' if spec.read_only else ''})")
        lines.append(f"      {spec.description}")
    lines += ["", f"example: {executable} --ros-args --params-file config/{executable.removesuffix('_node')}.yaml "
              "-r __ns:=/arm1"]
    return "\n".join(lines)
