"""Imports of packages that a plain `pip install deer_ros` does not bring, with the command that adds them.

open-flamingo cannot be a dependency (its metadata pins torch==2.0.1); matplotlib and scikit-optimize belong to
extras (bench/train, search). A missing one fails with what to install instead of a bare ModuleNotFoundError.
"""
from __future__ import annotations

import importlib
from types import ModuleType

INSTALL = {
    "open_flamingo": "pip install --no-deps open-flamingo==2.0.1  (--no-deps: it pins torch==2.0.1 but runs on "
                     "current torch; its real needs come with deer_ros)",
    "matplotlib": "pip install 'deer_ros[bench]'  (or pip install 'matplotlib>=3.7,<4')",
    "skopt": "pip install 'deer_ros[search]'  (or pip install 'scikit-optimize>=0.10,<1')",
    "rosbags": "pip install 'deer_ros[bag]'  (or pip install 'rosbags>=0.11,<0.12')",
    "rerun": "pip install 'deer_ros[viz]'  (or pip install 'rerun-sdk>=0.41,<0.42')",
}


class MissingDependency(ImportError):
    """A package deer_ros needs for this feature is not installed; the message says how to add it."""


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` (a dotted name); on failure raise MissingDependency naming `purpose` and the fix."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top:
            raise  # the package is there but one of its own imports failed: show that error as it is
        raise MissingDependency(f"{purpose} needs the Python package '{top}', which is not installed: "
                                f"{INSTALL.get(top, f'pip install {top}')}") from exc


def pyplot(purpose: str) -> ModuleType:
    """matplotlib.pyplot on the file-only Agg backend (plots are written to files; no display is assumed)."""
    matplotlib = require("matplotlib", purpose)
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")
