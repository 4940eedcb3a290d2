#!/usr/bin/env bash
# Create (once) and reuse the virtual environment at .venv in the repo root and install simdistill_ros
# with pinned dependencies. Re-running is cheap: pip is skipped while setup.py is unchanged.
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
