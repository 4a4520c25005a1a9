#!/usr/bin/env bash
# Set up the environment and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Two workers (CKPT_TUI_TEST_WORKERS to change; 0 runs in this process): most tests launch real DeepSpeed,
# whose processes keep a 2-core machine only ~60% busy one at a time. A file's tests stay on one worker,
# in the order tests/conftest.py sets.
workers=${CKPT_TUI_TEST_WORKERS:-2}
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
