#!/usr/bin/env python
"""Regenerate screenshots/*.svg from the real app on a workspace of real checkpoints.

    .venv/bin/python scripts/screenshots.py [--out screenshots] [--workspace DEMO_DIR]

Default workspace: the one the snapshot tests use (tests/tui/scenes.py), copied from the cached test
fixtures (real DeepSpeed ZeRO, universal, Hugging Face and TensorBoard runs; the first run builds them,
a couple of minutes on CPU). ``--workspace`` takes a folder built by ``ckpt-tui demo`` instead. Each
screen is shot at 80x24 and 160x48 after the same keyboard steps the tests take.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ckpt_tui.tui.app import CkptApp  # noqa: E402
from tests.fixtures.builder import ensure_built  # noqa: E402
from tests.tui.scenes import (  # noqa: E402
    FIXTURE_TARGETS,
    SCENES,
    SIZES,
    WORKSPACE,
    Targets,
    demo_targets,
    make_workspace,
    scene,
)


async def shoot(name: str, root: str, targets: Targets, size: tuple[int, int]) -> str:
    """One screen as SVG: start the app on root, drive it to the scene with the keyboard, export."""
    app = CkptApp(root)
    async with app.run_test(size=size) as pilot:
        await scene(name, targets)(pilot)
        await pilot.pause()
        return app.export_screenshot(title="ckpt-tui")


def shoot_all(names: list[str], root: str, targets: Targets, out: Path) -> None:
    for name in names:
        for width, height in SIZES:
            svg = asyncio.run(shoot(name, root, targets, (width, height)))
            target = out / f"{name}-{width}x{height}.svg"
            target.write_text(svg, encoding="utf-8")
            print(f"wrote {target.relative_to(REPO) if target.is_relative_to(REPO) else target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "screenshots", help="folder for the SVGs")
    parser.add_argument("--scene", action="append", choices=list(SCENES), help="only these screens")
    parser.add_argument("--workspace", type=Path, help="a `ckpt-tui demo` workspace (default: test fixtures)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    names = args.scene or list(SCENES)
    previous = Path.cwd()
    try:
        if args.workspace is not None:
            workspace = args.workspace.resolve()
            os.chdir(workspace.parent)  # paths on screen start at the workspace's own name
            shoot_all(names, workspace.name, demo_targets(workspace.name), out)
            return 0
        print("fixtures: building or reusing the cache …", flush=True)
        fixtures = ensure_built(log=lambda msg: print(msg, flush=True))
        with tempfile.TemporaryDirectory(prefix="ckpt-tui-shots-") as tmp:
            make_workspace(fixtures, Path(tmp))
            os.chdir(tmp)
            shoot_all(names, WORKSPACE, FIXTURE_TARGETS, out)
    finally:
        os.chdir(previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
