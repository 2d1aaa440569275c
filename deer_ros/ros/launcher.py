"""Start node executables as processes and stop them cleanly: what `ros2 launch` does, for a plain venv.

Used by `deer-ros demo` and by the test harness (test/conftest.py), where `launch` / `launch_pytest` cannot be
installed. Every process gets the same ROS_DOMAIN_ID and localhost-only discovery.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence


MAX_DOMAIN_ID = 232  # the highest ROS_DOMAIN_ID whose DDS ports (7400 + 250 * id + offsets) fit in 16 bits


def caller_domain(env: Mapping[str, str] | None = None) -> int | None:
    """The ROS_DOMAIN_ID the caller set (None when unset or empty); ValueError when it is not a domain."""
    text = (os.environ if env is None else env).get("ROS_DOMAIN_ID", "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) > MAX_DOMAIN_ID:
        raise ValueError(f"ROS_DOMAIN_ID={text!r} is not a ROS domain: use an integer 0..{MAX_DOMAIN_ID}, "
                         "or unset it")
    return int(text)


def ros_env(domain_id: int | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for nodes: an explicit domain (None = keep the caller's ROS_DOMAIN_ID) and discovery kept on
    this machine (no multicast off-host)."""
    env = dict(os.environ if base is None else base)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def executable(name: str, package: str = "deer_ros") -> str:
    """Path of a node executable, looked up where each install puts it:

    1. `<prefix>/lib/<package>/<name>` for each prefix on AMENT_PREFIX_PATH (a sourced colcon install; what
       `ros2 run` uses), so `colcon test` runs the executables of the workspace it built;
    2. next to this interpreter (the console scripts of a venv, `pip install`);
    3. PATH.
    """
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates = [Path(p) / "lib" / package / name for p in prefixes]
    candidates.append(Path(sys.executable).with_name(name))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found is None:
        looked = ", ".join(str(c.parent) for c in candidates)
        raise FileNotFoundError(f"executable '{name}' not found in {looked} or on PATH; install the package "
                                "(scripts/dev, pip install -e ., or colcon build and source install/setup.bash)")
    return found


def ros_args(params_files: Sequence[str | Path] = (), params: dict | None = None,
             remaps: dict[str, str] | None = None, name: str | None = None, namespace: str | None = None,
             log_level: str | None = None) -> list[str]:
    """Build standard `--ros-args` for a node executable."""
    args = ["--ros-args"]
    for path in params_files:
        args += ["--params-file", str(path)]
    for key, value in (params or {}).items():
        args += ["-p", f"{key}:={_param_text(value)}"]
    for src, dst in (remaps or {}).items():
        args += ["-r", f"{src}:={dst}"]
    if name:
        args += ["-r", f"__node:={name}"]
    if namespace:
        args += ["-r", f"__ns:={namespace}"]
    if log_level:
        args += ["--log-level", log_level]
    return args


def _param_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_param_text(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


class NodeProcess:
    """One node executable run as a child process, its output captured in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.expected_exit_code = 0  # what a clean run ends with; a test of a deliberate failure changes it
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        """Wait for the process to end by itself; returns its exit code."""
        code = self.proc.wait(timeout=timeout)
        self._log.close()
        return code

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        """Send `sig` (SIGINT like Ctrl-C, or SIGTERM) and wait; kill only if it does not exit in time."""
        if self.running:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
