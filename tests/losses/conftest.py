"""Fixtures for the loss-curve tests: real event files written by SummaryWriter into tmp folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.losses.events import loss_run


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A 40-step baseline and a run resumed at step 21 that reproduces it exactly, in separate folders."""
    base, resumed = tmp_path / "baseline", tmp_path / "resumed"
    loss_run(base, range(1, 41), val_every=5)
    loss_run(resumed, range(21, 41), val_every=5)
    return base, resumed


@pytest.fixture()
def diverged(tmp_path: Path) -> tuple[Path, Path]:
    """Baseline 1..40 and a resumed run (21..40) that drifts by 1e-3 from step 31 on."""
    base, resumed = tmp_path / "baseline", tmp_path / "resumed"
    loss_run(base, range(1, 41))
    loss_run(resumed, range(21, 41), shift={s: 1e-3 for s in range(31, 41)})
    return base, resumed


@pytest.fixture()
def shared(tmp_path: Path) -> Path:
    """Baseline (1..40) and its resumed run (21..40, identical) writing into one folder."""
    folder = tmp_path / "shared"
    loss_run(folder, range(1, 41))
    loss_run(folder, range(21, 41))
    return folder
