"""Snapshots of every screen at 80x24 and 160x48 on the fixed workspace of real checkpoints.

Update after an intended change with ``pytest tests/tui --snapshot-update`` and look at the SVGs.
"""

from __future__ import annotations

import pytest

from ckpt_tui.tui.app import CkptApp
from tests.tui.scenes import SCENES, SIZES
from tests.tui.scenes import scene as bound_scene


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("scene", list(SCENES))
def test_screen_snapshot(snap_compare, workspace, scene, size):
    assert snap_compare(CkptApp(workspace), terminal_size=size, run_before=bound_scene(scene))
