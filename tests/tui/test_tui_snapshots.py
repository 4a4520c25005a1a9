"""Snapshots of every screen at 80x24 and 160x48 on the committed workspace of real checkpoints.

The scenes run on tests/data/scenes (real DeepSpeed / transformers / TensorBoard output made once and
committed), never on fixtures trained on the machine that runs the tests: training noise differs from one
machine to the next, and a snapshot must hold on all of them.

Update after an intended change with ``pytest tests/tui --snapshot-update`` and look at the SVGs.
The conversion scenes write beside the source, so each runs on a copy of the workspace of its own; they
show no real time (the job panel's clock is fixed, see scenes.fix_clock).
"""

from __future__ import annotations

import pytest

from ckpt_tui.tui.app import CkptApp
from tests.tui.scenes import CONVERT_SCENES, DEMO_BASELINE, DEMO_RESUMED, SIZES, VIEW_SCENES, demo_losses_shown
from tests.tui.scenes import scene as bound_scene

SIZE_IDS = [f"{w}x{h}" for w, h in SIZES]


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("scene", list(VIEW_SCENES))
def test_screen_snapshot(snap_compare, scene_workspace, scene, size):
    assert snap_compare(CkptApp(scene_workspace), terminal_size=size, run_before=bound_scene(scene))


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("scene", list(CONVERT_SCENES))
def test_convert_snapshot(snap_compare, fresh_scene_workspace, scene, size):
    assert snap_compare(CkptApp(fresh_scene_workspace), terminal_size=size, run_before=bound_scene(scene))


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_demo_losses_snapshot(snap_compare, scene_demo_runs, size):
    """How `ckpt-tui demo` opens the app: the baseline against both resumed runs."""
    app = CkptApp(scene_demo_runs, baseline=DEMO_BASELINE, resumed=DEMO_RESUMED)
    assert snap_compare(app, terminal_size=size, run_before=demo_losses_shown)
