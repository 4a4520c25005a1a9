"""A bug in a worker is shown, never a screen that loads forever (ShowsWorkerFailures)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch
from safetensors.torch import save_file
from textual.pilot import Pilot

from ckpt_tui.tui.app import CkptApp
from ckpt_tui.tui.screens import checkpoint as checkpoint_screen
from ckpt_tui.tui.screens.checkpoint import CheckpointScreen
from tests.tui import scenes


def _folder(tmp_path: Path) -> None:
    (tmp_path / "ws" / "model").mkdir(parents=True)
    save_file({"w": torch.ones(4)}, tmp_path / "ws" / "model" / "model.safetensors")


def _screen_text(app: CkptApp) -> str:
    return "\n".join("".join(seg.text for seg in strip) for strip in app.screen._compositor.render_strips())


def test_a_reader_bug_shows_an_internal_error_not_a_spinner(tmp_path, monkeypatch):
    _folder(tmp_path)
    monkeypatch.chdir(tmp_path)

    def buggy(_path):  # noqa: ANN001, ANN202 - what a reader with a bug raises: not a CkptError
        raise RuntimeError("boom in the reader")

    monkeypatch.setattr(checkpoint_screen, "open_checkpoint", buggy)
    app = CkptApp("ws")

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_checkpoint(pilot, Path("ws/model"))
        screen = app.screen
        assert isinstance(screen, CheckpointScreen) and screen.ckpt is None
        assert not screen.query_one("#body").loading
        text = _screen_text(app)
        assert "internal error (RuntimeError: boom in the reader)" in text and "please report it" in text

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await scenario(pilot)

    asyncio.run(main())
