#!/usr/bin/env python3
"""Compare the distributions installed in this interpreter's environment with the locks.

    python scripts/check_venv.py [--versions] [--extras]

Exit status 0 when every locked distribution is installed at its locked version and nothing else is
installed (this package itself excepted); 1 otherwise, with one line per difference. --versions prints the
versions that matter for a bug report first; --extras lists the unlocked distributions that would be removed.
Standard library only, so it runs before anything is installed.
"""
from __future__ import annotations

import argparse
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = (ROOT / "requirements" / "venv.lock", ROOT / "requirements" / "nodeps.lock")
OWN = "deer-ros"
REPORTED = ("torch", "torchvision", "numpy", "transformers", "open-clip-torch", "open-flamingo", "ros-rclpy",
            "pytest", "hypothesis", "scikit-optimize", "ruff")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for lock in LOCKS:
        for line in lock.read_text().splitlines():
            match = _PIN.match(line)
            if match:
                pins[canonical(match[1])] = match[2]
    return pins


def installed(want: dict[str, str]) -> dict[str, str]:
    """Installed distributions, less those that a locked wheel carries inside itself.

    The ROS 2 wheels (ros-rclpy, ros-std-msgs, ...) each ship the egg-info of the package they wrap (rclpy,
    std_msgs, ...); those are files of a locked distribution, not packages of their own.
    """
    dists = [d for d in metadata.distributions() if d.metadata["Name"]]
    carried = set()
    for d in dists:
        if canonical(d.metadata["Name"]) in want:
            for file in d.files or ():
                top = file.parts[0]
                if top.endswith((".egg-info", ".dist-info")):
                    carried.add(canonical(top.split("-")[0]))
    have = {canonical(d.metadata["Name"]): d.version for d in dists}
    return {name: version for name, version in have.items() if name in want or name not in carried}


def differences(want: dict[str, str], have: dict[str, str]) -> list[str]:
    lines = [f"missing: {name}=={version}" for name, version in sorted(want.items()) if name not in have]
    lines += [f"wrong version: {name} {have[name]} installed, lock says {version}"
              for name, version in sorted(want.items()) if name in have and have[name] != version]
    lines += [f"not in the lock: {name}=={version}" for name, version in sorted(have.items())
              if name not in want and name != OWN]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", action="store_true", help="print the key versions first")
    parser.add_argument("--extras", action="store_true", help="print only the unlocked distributions' names")
    args = parser.parse_args(argv)
    want = locked()
    have = installed(want)
    if args.extras:
        print("\n".join(name for name in sorted(have) if name not in want and name != OWN))
        return 0
    if args.versions:
        print(f"python {platform.python_version()} ({sys.executable}), {platform.machine()}")
        print(", ".join(f"{name} {have.get(name, 'MISSING')}" for name in REPORTED))
    problems = differences(want, have)
    for line in problems:
        print(f"check_venv: {line}", file=sys.stderr)
    if problems:
        print(f"check_venv: {len(problems)} difference(s) from requirements/*.lock", file=sys.stderr)
        return 1
    print(f"check_venv: {len(want)} distributions, all as locked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
