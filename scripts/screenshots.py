#!/usr/bin/env python
"""Regenerate screenshots/*.svg from the real app on the demo workspace of real checkpoints.

    .venv/bin/python scripts/screenshots.py [--out screenshots]

The workspace is the one the snapshot tests use (tests/tui/scenes.py): real DeepSpeed ZeRO, universal,
Hugging Face and TensorBoard fixtures, built once by real training runs and cached (the first run
builds them, a couple of minutes on CPU). Each screen is shot at 80x24 and 160x48 after the same
keyboard steps the tests take, so the README shows exactly what the tests check.
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
from tests.tui.scenes import SCENES, SIZES, WORKSPACE, make_workspace  # noqa: E402


async def shoot(scene: str, size: tuple[int, int]) -> str:
    """One screen as SVG: start the app on the workspace, drive it to the scene, export."""
    app = CkptApp(WORKSPACE)
    async with app.run_test(size=size) as pilot:
        await SCENES[scene](pilot)
        await pilot.pause()
        return app.export_screenshot(title="ckpt-tui")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "screenshots", help="folder for the SVGs")
    parser.add_argument("--scene", action="append", choices=list(SCENES), help="only these screens")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print("fixtures: building or reusing the cache …", flush=True)
    fixtures = ensure_built(log=lambda msg: print(msg, flush=True))
    with tempfile.TemporaryDirectory(prefix="ckpt-tui-shots-") as tmp:
        make_workspace(fixtures, Path(tmp))
        previous = Path.cwd()
        os.chdir(tmp)  # the app is started on the relative name `workspace`, as a user would
        try:
            for scene in args.scene or list(SCENES):
                for width, height in SIZES:
                    svg = asyncio.run(shoot(scene, (width, height)))
                    target = out / f"{scene}-{width}x{height}.svg"
                    target.write_text(svg, encoding="utf-8")
                    print(f"wrote {target.relative_to(REPO) if target.is_relative_to(REPO) else target}")
        finally:
            os.chdir(previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
