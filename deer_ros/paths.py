"""Where the bundled data lives, in a source checkout (pip editable) and in a colcon install."""
from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
# The files of a model folder that tools without torch also look for (launch files, fingerprints, calibration).
MODEL_CONFIG_FILE = "config.json"
MODEL_CALIBRATION_FILE = "calibration.npz"


def data_dir() -> Path:
    """The repo's data/ folder (source checkout) or share/deer_ros/data (colcon install)."""
    return _package_folder("data")


def config_dir() -> Path:
    """The repo's config/ folder (the params files) or share/deer_ros/config (colcon install)."""
    return _package_folder("config")


def _package_folder(name: str) -> Path:
    candidates = [_PACKAGE_DIR.parent / name]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("deer_ros")) / name)
    except Exception:  # noqa: BLE001 - not installed with colcon: only the source checkout counts
        pass
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(f"deer_ros {name} folder not found (looked in {', '.join(map(str, candidates))})")


def calvin_sample() -> Path:
    """The bundled real CALVIN sample (a dataset root with training/ and validation/)."""
    return data_dir() / "calvin_sample"


def demo_checkpoint() -> Path:
    """The bundled tiny demo model folder (made by scripts/make_demo_model.sh, see README)."""
    return data_dir() / "demo" / "tiny_demo"


def demo_calibration() -> Path:
    """The calibration file of the demo model (inside its folder)."""
    return demo_checkpoint() / MODEL_CALIBRATION_FILE


def split_folder(dataset: str | Path, split: str) -> Path:
    """A CALVIN split folder: `dataset` may be a root with training/ and validation/, or a split folder itself;
    '' means the bundled sample."""
    root = Path(dataset).expanduser() if str(dataset) else calvin_sample()
    if (root / split).is_dir():
        return root / split
    other = {"training": "validation", "validation": "training"}.get(split)
    if root.name == other:
        raise ValueError(f"split '{split}' contradicts the dataset folder {root}, which is the {other} split: "
                         f"give the dataset root (with training/ and validation/) or ask for split '{other}'")
    return root
