#!/usr/bin/env bash
# Build the messages in msg/ with rosidl into a virtual environment (default: .venv at the repo root).
# Used by scripts/dev; a colcon workspace builds them from CMakeLists.txt directly.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/.venv}"
python="$venv/bin/python"
build="$root/build/msgs"
site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

export AMENT_PREFIX_PATH="$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export PATH="$venv/bin:$PATH"

rm -rf "$build"
mkdir -p "$build"
# Every step must succeed: set -e stops at the first failing configure, build or install.
cmake -S "$root" -B "$build" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$venv" \
  -DCMAKE_PREFIX_PATH="$venv" \
  -DPython3_EXECUTABLE="$python" \
  -DPYTHON_INSTALL_DIR="$(realpath --relative-to="$venv" "$site")" \
  -DDEER_ROS_INSTALL_PYTHON=OFF \
  -DBUILD_TESTING=OFF > "$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" > "$build/build.log" 2>&1 || { tail -50 "$build/build.log"; exit 1; }
cmake --install "$build" > "$build/install.log" 2>&1 || { tail -50 "$build/install.log"; exit 1; }

# rosidl writes an empty deer_ros/__init__.py next to the generated msg/ package. In the venv the real
# deer_ros package is the editable source tree; removing the generated file makes the installed directory a
# namespace portion that deer_ros/__init__.py adds to its __path__ (so `deer_ros.msg` resolves).
generated_init="$site/deer_ros/__init__.py"
if [ -f "$generated_init" ] && [ ! -s "$generated_init" ]; then rm -f "$generated_init"; fi
"$python" -c 'from deer_ros.msg import EndEffectorAction; EndEffectorAction()' \
  || { echo "build_msgs: messages built but 'from deer_ros.msg import EndEffectorAction' fails" >&2; exit 1; }
echo "build_msgs: deer_ros messages installed into $venv"
