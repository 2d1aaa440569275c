"""deer_ros.exits promises to be importable without torch (all but calibration_reference): a fresh interpreter
imports every other module of it and must not have loaded torch."""
from __future__ import annotations

import pkgutil
import subprocess
import sys

import deer_ros.exits

TORCH_USERS = {"calibration_reference"}  # drives the model's layers itself, as the reference's protocol does


def test_the_exits_modules_import_without_torch():
    modules = sorted(m.name for m in pkgutil.iter_modules(deer_ros.exits.__path__) if m.name not in TORCH_USERS)
    assert {"bayes", "calibration", "controller", "criteria", "solver", "tracking"} <= set(modules)
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module('deer_ros.exits.' + name)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", f"importing deer_ros.exits loaded torch: {out.stdout[:300]}"
