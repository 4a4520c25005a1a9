#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with the pinned dev/test stack.
# Idempotent: re-running only installs what changed. Needs only python3 (>=3.10), pip and gcc.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.ckpt-tui-setup
want=$(cat pyproject.toml requirements/dev.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: deepspeed's sdist build looks for an installed torch.
.venv/bin/python -m pip install -q -c requirements/dev.txt torch
DS_BUILD_OPS=0 .venv/bin/python -m pip install -q -c requirements/dev.txt -e '.[dev]'
echo "$want" > "$stamp"
