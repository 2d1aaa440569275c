"""The package's dependency split: what the nodes need at run time, and what a missing extra says."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from deer_ros.dependencies import MissingDependency, require

REPO = Path(__file__).resolve().parents[1]
# Modules that only extras bring (bench/train plots, threshold search, bags, Rerun, tests): a robot never installs
# them.
EXTRAS_ONLY = ("matplotlib", "skopt", "sklearn", "hypothesis", "pytest", "ruff", "rosbags", "rerun", "pyarrow")


def test_nodes_and_model_import_nothing_from_the_extras():
    """The node executables' modules and a built model, in a fresh interpreter, load no extras-only package."""
    code = (
        "import sys\n"
        "import deer_ros.ros.policy_node, deer_ros.ros.bridge_node\n"
        "from deer_ros.model.config import DeerConfig\n"
        "from deer_ros.model.deer import build_model\n"
        "build_model(DeerConfig.preset('tiny'))\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                timeout=300).stdout.split())
    assert "torch" in loaded and "open_flamingo" in loaded  # the check sees real imports
    assert not loaded & set(EXTRAS_ONLY), f"the runtime imports extras-only packages: {loaded & set(EXTRAS_ONLY)}"


def test_runtime_dependencies_leave_the_extras_out():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"]).lower()
    for name in ("matplotlib", "scikit-optimize", "hypothesis", "pytest", "ruff", "open-flamingo"):
        assert name not in runtime
    assert {"train", "bench", "search", "test", "lint", "dev"} <= project["optional-dependencies"].keys()


def test_a_missing_open_flamingo_says_how_to_install_it(monkeypatch):
    from deer_ros.model.config import DeerConfig
    from deer_ros.model.deer import build_model

    for name in [m for m in sys.modules if m == "open_flamingo" or m.startswith("open_flamingo.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "open_flamingo", None)  # import open_flamingo now fails as if absent
    with pytest.raises(MissingDependency, match=r"pip install --no-deps open-flamingo==2\.0\.1"):
        build_model(DeerConfig.preset("tiny"))


def test_a_missing_extra_names_the_extra_and_a_broken_package_keeps_its_own_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "skopt", None)
    with pytest.raises(MissingDependency, match=r"threshold search needs .*'skopt'.*deer_ros\[search\]"):
        require("skopt", "the threshold search")
    with pytest.raises(MissingDependency, match="pip install no_such_package_xyz"):
        require("no_such_package_xyz", "a test")
    # A package that is installed but misses one of its own dependencies is not reported as the missing one.
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz") as info:
        require("brokenpkg", "a test")
    assert not isinstance(info.value, MissingDependency)
