#!/usr/bin/env bash
# Create (once) and reuse the virtual environment at .venv in the repo root, install simdistill_ros with
# pinned dependencies (ROS 2 Kilted wheels included), and build the interface packages the wheels lack
# (vision_msgs, tf2_msgs) into it. Re-running is cheap: pip is skipped while setup.py is unchanged and
# the interface build while its inputs are unchanged (scripts/build_interfaces.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.simdistill-setup
want=$(sha1sum setup.py scripts/setup.sh | sha1sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # One resolver run for everything keeps the pins consistent (numpy<2 for the devkit, ml_dtypes<0.6 for onnx).
  .venv/bin/python -m pip install -q -e '.[all]'
  echo "$want" > "$stamp"
fi
.venv/bin/python scripts/build_interfaces.py --venv .venv
