#!/usr/bin/env bash
# Set up the environment and launch the app. Extra arguments go to `ckpt-tui` (as `scripts/run.sh DIR`,
# `scripts/run.sh inspect PATH`, ...).
#
# With no arguments: first build the demo workspace with `ckpt-tui demo --no-open` (the seed's 4-step
# universal checkpointing proof on a tiny GPT with real DeepSpeed; under a minute on a laptop CPU once
# set up, and finished steps are skipped on later runs), then open the app on it. The workspace is
# $CKPT_TUI_DEMO_DIR, else ~/.local/share/ckpt-tui/demo (see ckpt_tui/demo/workspace.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ "$#" -gt 0 ]; then
  exec .venv/bin/ckpt-tui "$@"
fi
status=0
.venv/bin/ckpt-tui demo --no-open || status=$?
# 1: the demo ran but a resumed curve differs from the baseline; still worth opening. Else: it could not run.
if [ "$status" -ne 0 ] && [ "$status" -ne 1 ]; then
  exit "$status"
fi
workdir=$(.venv/bin/python -c 'from ckpt_tui.demo.workspace import default_workspace; print(default_workspace())')
exec .venv/bin/ckpt-tui "$workdir"
