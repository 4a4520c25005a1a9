"""Fixtures for the app tests: the fixed workspace of real checkpoints, entered by a relative path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tui.scenes import WORKSPACE, make_demo_runs, make_workspace


@pytest.fixture(scope="session")
def workspace_parent(fixtures, tmp_path_factory) -> Path:
    """A folder holding `workspace/` (copies of the cached fixtures, shared by the app tests)."""
    parent = tmp_path_factory.mktemp("tui")
    make_workspace(fixtures, parent)
    return parent


@pytest.fixture
def workspace(workspace_parent: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`workspace` as a relative path, the current folder being its parent (what the screen shows)."""
    monkeypatch.chdir(workspace_parent)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return Path(WORKSPACE)


@pytest.fixture
def fresh_workspace(fixtures, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`workspace` as above, but a copy of its own: for tests that convert (they write beside the source)."""
    make_workspace(fixtures, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return Path(WORKSPACE)


@pytest.fixture(scope="session")
def demo_runs_parent(tmp_path_factory) -> Path:
    """A folder holding `demo/`: a baseline and two resumed TensorBoard runs laid out like the demo's."""
    parent = tmp_path_factory.mktemp("tui-demo")
    make_demo_runs(parent)
    return parent


@pytest.fixture
def demo_runs(demo_runs_parent: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`demo` as a relative path, the current folder being its parent."""
    monkeypatch.chdir(demo_runs_parent)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return Path("demo")
