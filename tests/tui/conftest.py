"""Fixtures for the app tests, each entered by a relative path from its parent folder (what the screen shows).

- ``scene_workspace`` / ``fresh_scene_workspace`` / ``scene_demo_runs``: the committed scene data
  (tests/data/scenes): what snapshots show, the same on every machine.
- ``workspace`` / ``fresh_workspace`` / ``demo_runs``: copies of the fixtures built on this machine, for the
  flow tests that compare what the app shows with what training recorded here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.tui.scenes import (
    DEMO,
    WORKSPACE,
    make_demo_runs,
    make_scene_demo_runs,
    make_scene_workspace,
    make_workspace,
)


def _enter(parent: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(parent)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return Path(name)


@pytest.fixture(scope="session")
def workspace_parent(fixtures, tmp_path_factory) -> Path:
    """A folder holding `workspace/` (copies of the cached fixtures, shared by the app tests)."""
    parent = tmp_path_factory.mktemp("tui")
    make_workspace(fixtures, parent)
    return parent


@pytest.fixture
def workspace(workspace_parent: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`workspace` as a relative path, the current folder being its parent (what the screen shows)."""
    return _enter(workspace_parent, WORKSPACE, monkeypatch)


@pytest.fixture
def fresh_workspace(fixtures, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`workspace` as above, but a copy of its own: for tests that convert (they write beside the source)."""
    make_workspace(fixtures, tmp_path)
    return _enter(tmp_path, WORKSPACE, monkeypatch)


@pytest.fixture(scope="session")
def scene_workspace_parent(tmp_path_factory) -> Path:
    """A folder holding `workspace/` copied from the committed scene data (shared by the snapshots)."""
    parent = tmp_path_factory.mktemp("scenes")
    make_scene_workspace(parent)
    return parent


@pytest.fixture
def scene_workspace(scene_workspace_parent: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return _enter(scene_workspace_parent, WORKSPACE, monkeypatch)


@pytest.fixture
def fresh_scene_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The committed scene workspace in a copy of its own (the conversion scenes write beside the source)."""
    make_scene_workspace(tmp_path)
    return _enter(tmp_path, WORKSPACE, monkeypatch)


def _session_copy(make: Callable[[Path], Path], tmp_path_factory, name: str) -> Path:
    parent = tmp_path_factory.mktemp(name)
    make(parent)
    return parent


@pytest.fixture(scope="session")
def demo_runs_parent(tmp_path_factory) -> Path:
    """A folder holding `demo/`: a baseline and two resumed TensorBoard runs laid out like the demo's."""
    return _session_copy(make_demo_runs, tmp_path_factory, "tui-demo")


@pytest.fixture
def demo_runs(demo_runs_parent: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`demo` as a relative path, the current folder being its parent."""
    return _enter(demo_runs_parent, DEMO, monkeypatch)


@pytest.fixture(scope="session")
def scene_demo_runs_parent(tmp_path_factory) -> Path:
    return _session_copy(make_scene_demo_runs, tmp_path_factory, "scene-demo")


@pytest.fixture
def scene_demo_runs(scene_demo_runs_parent: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`demo` from the committed scene data (what the demo snapshot shows)."""
    return _enter(scene_demo_runs_parent, DEMO, monkeypatch)
