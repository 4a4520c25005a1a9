#!/usr/bin/env bash
# Set up the environment and launch the app. Extra arguments go to `ckpt-tui`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/ckpt-tui "$@"
