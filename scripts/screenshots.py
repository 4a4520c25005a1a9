#!/usr/bin/env python
"""Regenerate screenshots/*.svg from the real app on a workspace of real checkpoints.

    .venv/bin/python scripts/screenshots.py [--out screenshots] [--workspace DEMO_DIR]

Default workspace: the one the snapshot tests use, committed under tests/data/scenes (real DeepSpeed
ZeRO, universal, Hugging Face and TensorBoard output; see tests/data/make_scenes.py), so the pictures are
the same on every machine. ``--workspace`` takes a folder built by ``ckpt-tui demo`` instead. Each
screen is shot at 80x24 and 160x48 after the same keyboard steps the tests take. The conversion scenes
write beside the source, so each of their shots runs on a fresh copy of the workspace (a demo
workspace given with ``--workspace`` is never written to).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ckpt_tui.tui.app import CkptApp  # noqa: E402
from tests.tui.scenes import (  # noqa: E402
    CONVERT_SCENES,
    FIXTURE_TARGETS,
    SCENES,
    SIZES,
    Targets,
    demo_targets,
    make_scene_workspace,
    scene,
)


async def shoot(name: str, root: str, targets: Targets, size: tuple[int, int]) -> str:
    """One screen as SVG: start the app on root, drive it to the scene with the keyboard, export."""
    app = CkptApp(root)
    async with app.run_test(size=size) as pilot:
        await scene(name, targets)(pilot)
        await pilot.pause()
        return app.export_screenshot(title="ckpt-tui")


@contextmanager
def copy_of(workspace: Path) -> Iterator[Path]:
    """A throwaway copy of workspace under the same folder name (the name is what the screen shows)."""
    with tempfile.TemporaryDirectory(prefix="ckpt-tui-shot-") as tmp:
        copy = Path(tmp) / workspace.name
        shutil.copytree(workspace, copy, symlinks=True)
        yield copy


def shoot_all(names: list[str], workspace: Path, targets: Targets, out: Path) -> None:
    """Shoot each scene at each size; the app starts on workspace's name from its parent folder."""
    for name in names:
        for width, height in SIZES:
            if name in CONVERT_SCENES:
                with copy_of(workspace) as copy:
                    svg = shoot_in(name, copy, targets, (width, height))
            else:
                svg = shoot_in(name, workspace, targets, (width, height))
            target = out / f"{name}-{width}x{height}.svg"
            target.write_text(svg, encoding="utf-8")
            print(f"wrote {target.relative_to(REPO) if target.is_relative_to(REPO) else target}")


def shoot_in(name: str, workspace: Path, targets: Targets, size: tuple[int, int]) -> str:
    previous = Path.cwd()
    os.chdir(workspace.parent)  # paths on screen start at the workspace's own name
    try:
        return asyncio.run(shoot(name, workspace.name, targets, size))
    finally:
        os.chdir(previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "screenshots", help="folder for the SVGs")
    parser.add_argument("--scene", action="append", choices=list(SCENES), help="only these screens")
    parser.add_argument("--workspace", type=Path, help="a `ckpt-tui demo` workspace (default: the committed scenes)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    names = args.scene or list(SCENES)
    if args.workspace is not None:
        workspace = args.workspace.resolve()
        previous = Path.cwd()
        os.chdir(workspace.parent)  # the targets are paths under the workspace's own name
        try:
            targets = demo_targets(workspace.name)
        finally:
            os.chdir(previous)
        shoot_all(names, workspace, targets, out)
        return 0
    with tempfile.TemporaryDirectory(prefix="ckpt-tui-shots-") as tmp:
        shoot_all(names, make_scene_workspace(Path(tmp)), FIXTURE_TARGETS, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
