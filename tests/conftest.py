from __future__ import annotations

import pytest

pytest_plugins = ["tests.fixtures.plugin"]

# The longest test files first, so two xdist workers (scripts/test.sh: -n 2 --dist loadfile
# --no-loadscope-reorder) overlap them: the demo runs need no fixtures and go on while the other worker
# builds the training fixtures (about 5 minutes on a fresh machine) for the resume tests after it.
LONGEST_FIRST = (
    "tests/demo/test_demo_e2e.py",
    "tests/convert/test_resume.py",
    "tests/test_training_fixtures.py",
    "tests/tui/test_tui_convert.py",
    "tests/convert/test_to_universal.py",
    "tests/convert/test_to_hf.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
