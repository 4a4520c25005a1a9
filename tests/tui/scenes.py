"""A fixed workspace of real checkpoints and the app states shown in snapshots and screenshots.

Shared by the snapshot tests and ``scripts/screenshots.py`` so the README's pictures are exactly what the
tests check. Everything rendered must be the same on every machine, so the scenes run on files that are
committed, not trained here: ``tests/data/scenes/`` holds real DeepSpeed, transformers and TensorBoard output
(made once by ``python -m tests.data.make_scenes`` from the training fixtures), so no digit on screen comes
from this machine's training noise. The workspace is copied under one fixed folder name and the app is
started on that relative name from its parent, so no temporary path reaches the screen.

The flow tests drive the same scenes on a workspace copied from the freshly built fixtures instead
(:func:`make_workspace`): they compare what the app shows with what training recorded on this machine.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

WORKSPACE = "workspace"
SCENE_DATA = Path(__file__).resolve().parents[1] / "data" / "scenes"  # committed: workspace/ and demo/

# workspace sub-path -> fixture id (see tests/fixtures/builder.py)
LAYOUT = {
    "gpt2-hf": "hf-gpt2-safetensors",
    "gpt2-zero3": "hf-gpt2-z3-fp32",
    "tiny-zero2-bf16": "gpt-z2-bf16",
    "tiny-zero1/universal": "gpt-z1-fp32.universal",
    "runs/baseline": "tb-baseline",
    "runs/resumed": "tb-resumed",
}
ZERO2 = Path(WORKSPACE) / "tiny-zero2-bf16"
ZERO3 = Path(WORKSPACE) / "gpt2-zero3"
HF = Path(WORKSPACE) / "gpt2-hf"
BASELINE = Path(WORKSPACE) / "runs" / "baseline"
RESUMED = Path(WORKSPACE) / "runs" / "resumed"
STATS_TENSOR = "blocks.0.attn.qkv.weight"

# A `ckpt-tui demo`-like layout of TensorBoard runs: one baseline, two runs resumed from its midpoint,
# one that reproduces it and one that drifts away (see ckpt_tui.demo.workspace for the real layout).
DEMO = "demo"
DEMO_BASELINE = Path(DEMO) / "baseline" / "tb"
DEMO_RESUMED = [Path(DEMO) / "resumed-from-zero" / "tb", Path(DEMO) / "resumed-from-hf" / "tb"]
DEMO_STEPS, DEMO_RESUME = 40, 21

SIZES = [(80, 24), (160, 48)]
HELD_AFTER = 12  # the "converting" scene holds the job after this many tensors
FIXED_ELAPSED = 2.0  # seconds shown by the job panel in scenes (rates and ETA follow from it)


@dataclass(frozen=True)
class Targets:
    """What the scenes open, as paths relative to the folder the app is started from."""

    zero: Path  # a ZeRO checkpoint for the checkpoint view
    stats_tensor: str | None  # the tensor whose statistics are shown (None: the first one stored)
    baseline: Path  # TensorBoard runs for the loss comparison
    resumed: Path


FIXTURE_TARGETS = Targets(ZERO2, STATS_TENSOR, BASELINE, RESUMED)


def demo_targets(root: str) -> Targets:
    """The same scenes on a `ckpt-tui demo` workspace (see ckpt_tui.demo.workspace for its layout).

    A ZeRO-3 baseline keeps its values partitioned, so the checkpoint scene shows the universal
    conversion of it instead (whose values can be read).
    """
    base = Path(root)
    settings = json.loads((base / "demo.json").read_text()).get("settings", {})
    zero = base / "baseline" / "ckpt"
    if settings.get("stage") == 3:
        zero = base / "universal-from-zero" / f"global_step{settings['steps']}_universal"
    return Targets(zero, None, base / "baseline" / "tb", base / "resumed-from-zero" / "tb")


def make_scene_workspace(parent: Path) -> Path:
    """parent/workspace as committed in tests/data/scenes (the same layout as make_workspace's)."""
    return _copy_committed(WORKSPACE, parent)


def make_scene_demo_runs(parent: Path) -> Path:
    """parent/demo as committed in tests/data/scenes (written by make_demo_runs)."""
    return _copy_committed(DEMO, parent)


def _copy_committed(name: str, parent: Path) -> Path:
    root = parent / name
    if not root.exists():
        if not (SCENE_DATA / name).is_dir():
            raise FileNotFoundError(f"{SCENE_DATA / name} is missing: run `python -m tests.data.make_scenes`")
        shutil.copytree(SCENE_DATA / name, root, symlinks=False)
    return root


def make_workspace(fixtures: dict[str, Any], parent: Path) -> Path:
    """Copy the chosen fixtures into parent/workspace (copies: tests may not touch the cache)."""
    root = parent / WORKSPACE
    if root.exists():
        return root
    for rel, fid in LAYOUT.items():
        shutil.copytree(fixtures[fid].path, root / rel, symlinks=False)
    return root


def make_demo_runs(parent: Path) -> Path:
    """parent/demo with the runs above, written by torch's SummaryWriter (fixed values and wall times)."""
    from tests.losses.events import loss_run

    root = parent / DEMO
    if root.exists():
        return root
    loss_run(parent / DEMO_BASELINE, range(1, DEMO_STEPS + 1), val_every=10, wall0=1000.0)
    resumed = range(DEMO_RESUME, DEMO_STEPS + 1)
    loss_run(parent / DEMO_RESUMED[0], resumed, val_every=10, wall0=2000.0)
    drift = {s: 0.02 * (s - DEMO_RESUME + 1) for s in resumed}
    loss_run(parent / DEMO_RESUMED[1], resumed, shift=drift, val_every=10, wall0=3000.0)
    return root


async def wait_until(pilot: Pilot, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Let the app run until condition holds (workers finish on their own threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for the app")
        await pilot.pause(0.05)
    await pilot.pause()


async def scan_done(pilot: Pilot) -> None:
    from ckpt_tui.tui.screens.browser import BrowserScreen

    await wait_until(pilot, lambda: isinstance(pilot.app.screen, BrowserScreen) and not pilot.app.screen.scanning)


async def open_checkpoint(pilot: Pilot, path: Path) -> None:
    """From the browser: put the cursor on path and press Enter, then wait for the tree."""
    from ckpt_tui.tui.screens.checkpoint import CheckpointScreen
    from ckpt_tui.tui.widgets.scan_tree import ScanTree

    await scan_done(pilot)
    pilot.app.screen.query_one(ScanTree).select_path(path)
    await pilot.press("enter")
    await wait_until(
        pilot,
        lambda: (
            isinstance(pilot.app.screen, CheckpointScreen)
            and (pilot.app.screen.ckpt is not None or pilot.app.screen.query_one("#error").display)
        ),
    )


async def cursor_to(pilot: Pilot, name: str) -> None:
    """Move the parameter tree's cursor to a dotted name with the keyboard (expanding on the way)."""
    from ckpt_tui.tui.widgets.param_tree import ParamTree

    tree = pilot.app.screen.query_one(ParamTree)
    for _ in range(400):
        node = tree.cursor_node
        data = node.data if node is not None else None
        if data is not None and data.path == name:
            await pilot.pause()
            return
        if data is not None and name.startswith(data.path + ".") and node is not None and not node.is_expanded:
            await pilot.press("right")
        else:
            await pilot.press("down")
    raise AssertionError(f"{name} not reachable in the parameter tree")


async def compute_stats(pilot: Pilot, name: str) -> None:
    from ckpt_tui.tui.screens.checkpoint import CheckpointScreen

    await cursor_to(pilot, name)
    await pilot.press("s")
    screen = pilot.app.screen
    assert isinstance(screen, CheckpointScreen)
    await wait_until(pilot, lambda: name in screen._stats and not screen._stats[name].running)


async def open_losses(pilot: Pilot, targets: Targets = FIXTURE_TARGETS) -> None:
    """From the browser: mark baseline and resumed runs with b / r, then l."""
    from ckpt_tui.tui.screens.losses import LossScreen
    from ckpt_tui.tui.widgets.scan_tree import ScanTree

    await scan_done(pilot)
    tree = pilot.app.screen.query_one(ScanTree)
    tree.select_path(targets.baseline)
    await pilot.press("b")
    tree.select_path(targets.resumed)
    await pilot.press("r")
    await pilot.press("l")
    await wait_until(
        pilot, lambda: isinstance(pilot.app.screen, LossScreen) and pilot.app.screen.comparison is not None
    )
    await pilot.pause(0.1)  # plots draw after the layout settles


async def demo_losses_shown(pilot: Pilot) -> None:
    """The app started with the demo's baseline and both resumed runs: wait for every comparison."""
    from ckpt_tui.tui.screens.losses import LossScreen

    def shown() -> bool:
        screen = pilot.app.screen
        return isinstance(screen, LossScreen) and len(screen.comparisons) == len(DEMO_RESUMED)

    await wait_until(pilot, shown)
    await pilot.pause(0.1)  # plots draw after the layout settles


@contextmanager
def conversions_held_after(n: int, hold_s: float = 60.0) -> Iterator[threading.Event]:
    """Conversions pause after their n-th tensor until the event is set or the job is cancelled.

    A deterministic "midway": the panel shows n tensors done however fast the machine is, and ctrl+c
    then cancels a job that has written part of its output. The hold ends by itself after hold_s.
    """
    from ckpt_tui.core.convert.job import JobControl

    release = threading.Event()
    real_advance = JobControl.advance

    def advance(self: JobControl, name: str, nbytes: int) -> None:
        real_advance(self, name, nbytes)
        if self.progress.phase == "convert" and self.progress.tensors_done == n:
            deadline = time.monotonic() + hold_s
            while not (release.is_set() or self.cancelled) and time.monotonic() < deadline:
                time.sleep(0.01)
            self.check()

    JobControl.advance = advance  # type: ignore[method-assign]
    try:
        yield release
    finally:
        JobControl.advance = real_advance  # type: ignore[method-assign]


async def open_convert_dialog(pilot: Pilot, path: Path) -> None:
    """From the browser: open the checkpoint at path, press x, wait until the dialog has read it."""
    from ckpt_tui.tui.screens.convert import ConvertDialog

    await open_checkpoint(pilot, path)
    await pilot.press("x")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConvertDialog) and pilot.app.screen.source is not None)
    await pilot.pause()


async def start_conversion(pilot: Pilot) -> None:
    """F2 in the dialog; wait until the job runs (ticks "replace" first when an earlier shot wrote it)."""
    from textual.widgets import Checkbox

    dialog = pilot.app.screen
    if dialog.problem is not None and dialog.problem.exists:
        dialog.query_one("#force", Checkbox).value = True
        await pilot.pause()
    await pilot.press("f2")
    await wait_until(pilot, lambda: pilot.app.job is not None)


def fix_clock(app: Any, seconds: float = FIXED_ELAPSED) -> None:
    """Show the job as if it had taken `seconds` (the rate and ETA follow): snapshots hold no real time."""
    app.job.convert.progress.elapsed_s = seconds
    app.show_job()


async def convert_and_verify(pilot: Pilot, path: Path) -> None:
    """Convert path to HF with the dialog's defaults; the output opens; v verifies it."""
    from ckpt_tui.tui.screens.checkpoint import CheckpointScreen

    await open_convert_dialog(pilot, path)
    await start_conversion(pilot)
    app = pilot.app
    await wait_until(pilot, lambda: app.job.convert.finished, timeout=120)
    assert app.job.succeeded, app.job.convert.error

    def result_open() -> bool:
        screen = app.screen
        return isinstance(screen, CheckpointScreen) and screen.path == app.job.output and screen.ckpt is not None

    await wait_until(pilot, result_open)
    await pilot.press("v")
    await wait_until(pilot, lambda: app.job.verify.finished, timeout=120)


# ------------------------------------------------------------------------------- named app states


async def scene_browser(pilot: Pilot, targets: Targets = FIXTURE_TARGETS) -> None:
    from ckpt_tui.tui.widgets.scan_tree import ScanTree

    await scan_done(pilot)
    pilot.app.screen.query_one(ScanTree).select_path(targets.zero)
    await pilot.pause()


async def scene_checkpoint(pilot: Pilot, targets: Targets = FIXTURE_TARGETS) -> None:
    await open_checkpoint(pilot, targets.zero)
    name = targets.stats_tensor or pilot.app.screen.ckpt.tensors[0].name
    await compute_stats(pilot, name)


async def scene_losses(pilot: Pilot, targets: Targets = FIXTURE_TARGETS) -> None:
    await open_losses(pilot, targets)


async def scene_help(pilot: Pilot, targets: Targets = FIXTURE_TARGETS) -> None:
    await scene_browser(pilot, targets)
    await pilot.press("f1")
    await pilot.pause()


async def scene_convert(pilot: Pilot, targets: Targets = FIXTURE_TARGETS) -> None:
    """The Convert dialog on the ZeRO checkpoint, before starting: defaults and the size it will write."""
    await open_convert_dialog(pilot, targets.zero)


async def scene_converting(pilot: Pilot, targets: Targets = FIXTURE_TARGETS) -> None:
    """A conversion held midway (the app cancels it when it exits: nothing is written)."""
    await open_convert_dialog(pilot, targets.zero)
    with conversions_held_after(HELD_AFTER):
        await start_conversion(pilot)
        app = pilot.app
        await wait_until(pilot, lambda: app.job.convert.progress.tensors_done == HELD_AFTER)
    fix_clock(app, FIXED_ELAPSED / 2)
    await pilot.pause()


async def scene_converted(pilot: Pilot, targets: Targets = FIXTURE_TARGETS) -> None:
    """Converted to HF: the output opened, verified against the source from the same screen."""
    await convert_and_verify(pilot, targets.zero)
    fix_clock(pilot.app)
    await pilot.pause()


# Scenes that only look, and scenes that write into the workspace (their tests take a fresh copy).
VIEW_SCENES: dict[str, Callable[..., Awaitable[None]]] = {
    "browser": scene_browser,
    "checkpoint": scene_checkpoint,
    "losses": scene_losses,
    "help": scene_help,
}
CONVERT_SCENES: dict[str, Callable[..., Awaitable[None]]] = {
    "convert": scene_convert,
    "converting": scene_converting,
    "converted": scene_converted,
}
SCENES = {**VIEW_SCENES, **CONVERT_SCENES}


def scene(name: str, targets: Targets = FIXTURE_TARGETS) -> Callable[[Pilot], Awaitable[None]]:
    """The named scene bound to targets, ready for snap_compare(run_before=...) or a screenshot."""
    return partial(SCENES[name], targets=targets)
