"""The app driven with the keyboard on real checkpoints and TensorBoard runs (Pilot, no mocks)."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file, save_file
from textual.pilot import Pilot
from textual.widgets import Input, Select

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.model import Kind
from ckpt_tui.tui.app import CkptApp
from ckpt_tui.tui.screens.browser import BrowserScreen
from ckpt_tui.tui.screens.checkpoint import CheckpointScreen
from ckpt_tui.tui.screens.help import HelpScreen
from ckpt_tui.tui.screens.losses import LossScreen
from ckpt_tui.tui.widgets.facts import FactsPanel
from ckpt_tui.tui.widgets.loss_panel import CurvesPlot, DiffPlot, VerdictPanel
from ckpt_tui.tui.widgets.param_tree import ParamTree
from ckpt_tui.tui.widgets.scan_tree import ScanTree
from ckpt_tui.tui.widgets.tensor_detail import TensorDetail
from tests.tui import scenes
from tests.tui.scenes import BASELINE, DEMO_BASELINE, DEMO_RESUMED, HF, RESUMED, ZERO2, ZERO3, wait_until

REPO = Path(__file__).resolve().parents[2]


def drive(app: CkptApp, scenario: Callable[[Pilot], Awaitable[None]], size: tuple[int, int] = (120, 40)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(pilot)

    asyncio.run(main())


def text_of(widget) -> str:
    """What a widget shows, as plain text."""
    return "\n".join(line.text for line in widget.render_lines(widget.region.reset_offset)) if widget.region else ""


def screen_text(app: CkptApp) -> str:
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip) for strip in strips)


# -------------------------------------------------------------------------------------- browser


def test_browser_finds_and_badges_everything(workspace, fixtures):
    app = CkptApp(workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.scan_done(pilot)
        screen = app.screen
        assert isinstance(screen, BrowserScreen)
        found = {e.path: e for e in screen.entries}
        assert found[ZERO2].kind is Kind.DS_ZERO and found[ZERO2].step == fixtures["gpt-z2-bf16"].step
        assert found[ZERO3].kind is Kind.DS_ZERO
        assert found[HF].kind is Kind.HF_SAFETENSORS
        assert found[BASELINE].kind is Kind.TENSORBOARD and found[RESUMED].kind is Kind.TENSORBOARD
        assert any(e.kind is Kind.DS_UNIVERSAL for e in found.values())
        text = screen_text(app)
        for word in ("tiny-zero2-bf16", "ZeRO", "ZeRO-3", "safetensors", "universal", "tensorboard", "runs/"):
            assert word in text, word
        assert found[ZERO3].stage == 3 and found[ZERO2].stage is None  # 3 shows in file names; 1/2 do not
        assert "4 checkpoint(s) · 2 TensorBoard run(s) under workspace" in text
        assert {r.path for r in app.runs} == {BASELINE, RESUMED}

    drive(app, scenario)


def test_browser_filter_narrows_and_escape_restores(workspace):
    app = CkptApp(workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.scan_done(pilot)
        tree = app.screen.query_one(ScanTree)
        total = len(tree._by_path)
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"gpt2")
        await pilot.pause()
        shown = {p for p, n in tree._by_path.items() if hasattr(n.data, "kind")}
        assert shown == {HF, ZERO3}
        await pilot.press("enter")
        assert app.focused is tree
        await pilot.press("escape")
        await pilot.pause()
        assert not app.screen.query_one("#filter").display
        assert len(tree._by_path) == total
        folder = tree._by_path[Path("workspace/runs")]
        tree.move_cursor(folder)
        await pilot.press("enter")
        assert not folder.is_expanded and isinstance(app.screen, BrowserScreen)
        await pilot.press("enter")
        assert folder.is_expanded

    drive(app, scenario)


def test_scan_shows_entries_as_found_and_never_blocks_the_ui(workspace, monkeypatch):
    """The walk hangs after its first find (a stuck NFS mount): the entry shows, keys still work."""
    from ckpt_tui.tui.screens import browser

    gate = threading.Event()
    real_scan = browser.scan

    def hanging_scan(root, max_depth, report):
        for i, entry in enumerate(real_scan(root, max_depth, report)):
            yield entry
            if i == 0:
                gate.wait(30)

    monkeypatch.setattr(browser, "scan", hanging_scan)
    app = CkptApp(workspace)

    async def scenario(pilot: Pilot) -> None:
        screen = app.screen
        assert isinstance(screen, BrowserScreen)
        await wait_until(pilot, lambda: len(screen.entries) == 1)
        assert screen.scanning and "scanning workspace … 1 found so far" in screen_text(app)
        assert "folder(s) visited" in screen_text(app)
        await pilot.press("slash")
        assert isinstance(app.focused, Input), "the UI answered while the scan hangs"
        await pilot.press("escape")
        gate.set()
        await wait_until(pilot, lambda: not screen.scanning)
        assert len(screen.entries) == 6

    try:
        drive(app, scenario)
    finally:
        gate.set()


def test_scan_of_a_big_tree_finishes(tmp_path, monkeypatch):
    """20,000 folders and one checkpoint deep inside: found, and the app stays usable meanwhile.

    While nothing is found yet, the status line counts the folders visited (the walk is held at its
    5,000th folder to look at it, however fast the disk is).
    """
    from ckpt_tui.core import scan as scan_module

    big = tmp_path / "big"
    for i in range(200):
        for j in range(100):
            (big / f"d{i:03d}" / f"e{j:03d}").mkdir(parents=True)
    deep = big / "d150" / "e050" / "model"
    deep.mkdir()
    save_file({"w": torch.zeros(2)}, deep / "model.safetensors")
    monkeypatch.chdir(tmp_path)
    gate, held = threading.Event(), threading.Event()
    real_detect, calls = scan_module.detect, [0]

    def detect(path):
        calls[0] += 1
        if calls[0] == 5000:
            held.set()
            gate.wait(30)
        return real_detect(path)

    monkeypatch.setattr(scan_module, "detect", detect)
    app = CkptApp("big")

    async def scenario(pilot: Pilot) -> None:
        screen = app.screen
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await wait_until(pilot, held.is_set)
        await wait_until(pilot, lambda: screen._folders_shown == 5000)
        assert "scanning big … 0 found so far · 5,000 folder(s) visited" in screen_text(app)
        gate.set()
        await wait_until(pilot, lambda: not screen.scanning, timeout=120)
        assert screen._report.folders == 1 + 200 + 200 * 100 + 1  # root, d*, d*/e*, the model
        assert [e.path for e in screen.entries] == [Path("big/d150/e050/model")]
        assert "1 checkpoint(s) · 0 TensorBoard run(s) under big" in screen_text(app)

    try:
        drive(app, scenario)
    finally:
        gate.set()


# ------------------------------------------------------------------------------------ checkpoint


def test_open_zero_checkpoint_and_read_its_tree(workspace, fixtures):
    fx = fixtures["gpt-z2-bf16"]
    app = CkptApp(workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_checkpoint(pilot, ZERO2)
        screen = app.screen
        assert isinstance(screen, CheckpointScreen) and screen.ckpt is not None
        facts = text_of(screen.query_one(FactsPanel))
        for fragment in ("ZeRO-2", "bf16", f"DP {fx.dp}", fx.tag, f"step {fx.step}", "(2/2)"):
            assert fragment in facts, fragment
        tree = screen.query_one(ParamTree)
        assert tree.has_focus
        top = [n.data.name for n in tree.root.children]
        assert top == sorted(top) and "blocks" in top
        blocks = next(n for n in tree.root.children if n.data.name == "blocks")
        assert blocks.data.numbered and not blocks.is_expanded  # layers folded
        leaves = {n.path for n in screen.tree_root.walk() if n.tensor is not None}
        assert leaves == set(fx.truth.params) | set(fx.truth.tied)
        await scenes.cursor_to(pilot, scenes.STATS_TENSOR)
        detail = text_of(screen.query_one(TensorDetail))
        shape = list(fx.truth.shape(scenes.STATS_TENSOR))
        assert scenes.STATS_TENSOR in detail and str(shape) in detail and "bf16" in detail

    drive(app, scenario)


def test_statistics_are_those_of_the_stored_values(workspace, fixtures):
    """Stats in the panel equal stats computed by torch from zero_to_fp32's output (the fp32 master)."""
    ref = load_file(next(fixtures["gpt-z2-bf16.fp32"].path.glob("*.safetensors")))[scenes.STATS_TENSOR]
    values = ref.double()
    app = CkptApp(workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_checkpoint(pilot, ZERO2)
        await scenes.compute_stats(pilot, scenes.STATS_TENSOR)
        state = app.screen._stats[scenes.STATS_TENSOR]
        assert state.error is None and state.stats is not None
        s = state.stats
        assert s.min == values.min().item() and s.max == values.max().item()
        assert s.mean == pytest.approx(values.mean().item()) and s.std == pytest.approx(values.std().item())
        text = text_of(app.screen.query_one(TensorDetail))
        assert "min" in text and "NaN" in text and "█" in text

    drive(app, scenario)


def test_zero3_statistics_come_from_the_fp32_partitions(workspace, fixtures):
    """ZeRO-3 keeps no weights in model_states: the panel gathers the fp32 partitions of every rank."""
    ref_file = next(fixtures["hf-gpt2-z3-fp32.fp32"].path.glob("*.bin"))  # tied: zero_to_fp32 wrote .bin
    ref = torch.load(ref_file, map_location="cpu", weights_only=True)["transformer.wte.weight"]
    app = CkptApp(workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_checkpoint(pilot, ZERO3)
        screen = app.screen
        assert "ZeRO-3" in text_of(screen.query_one(FactsPanel))
        assert "tied" in text_of(screen.query_one(FactsPanel))
        await scenes.compute_stats(pilot, "transformer.wte.weight")
        state = screen._stats["transformer.wte.weight"]
        assert state.error is None and state.stats is not None
        assert state.stats.min == ref.double().min().item() and state.stats.max == ref.double().max().item()

    drive(app, scenario)


def test_next_tag_filter_copy_and_back(workspace, fixtures):
    app = CkptApp(workspace)
    copied: list[str] = []
    app.copy_to_clipboard = copied.append  # type: ignore[method-assign]  # no terminal clipboard in tests

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_checkpoint(pilot, ZERO2)
        screen = app.screen
        assert isinstance(screen, CheckpointScreen)
        await pilot.press("t")
        await wait_until(pilot, lambda: screen.ckpt is not None and screen.ckpt.tag == "global_step2")
        assert screen.ckpt.step == 2 and "global_step2 (1/2)" in text_of(screen.query_one(FactsPanel))
        await pilot.press("slash", *"qkv")
        await pilot.pause()
        shown = [n.path for n in screen.query_one(ParamTree).root.data.walk() if n.tensor is not None]
        assert shown == [
            "blocks.0.attn.qkv.bias",
            "blocks.0.attn.qkv.weight",
            "blocks.1.attn.qkv.bias",
            "blocks.1.attn.qkv.weight",
        ]
        await pilot.press("enter")
        await scenes.cursor_to(pilot, "blocks.1.attn.qkv.weight")
        await pilot.press("c", "y")
        shape = fixtures["gpt-z2-bf16"].truth.shape("blocks.1.attn.qkv.weight")
        assert copied == ["blocks.1.attn.qkv.weight", "[" + ", ".join(map(str, shape)) + "]"]
        await pilot.press("escape")  # closes the filter
        assert isinstance(app.screen, CheckpointScreen)
        assert not screen.query_one("#param-filter").display
        await pilot.press("escape")  # back to the browser
        assert isinstance(app.screen, BrowserScreen)

    drive(app, scenario)


def test_broken_checkpoint_shows_the_one_line_error(tmp_path, monkeypatch):
    bad = tmp_path / "ws" / "broken"
    bad.mkdir(parents=True)
    (bad / "model.safetensors").write_bytes(b"\x0a\x00\x00\x00\x00\x00\x00\x00{not json}")
    monkeypatch.chdir(tmp_path)
    app = CkptApp("ws")

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_checkpoint(pilot, Path("ws/broken"))
        screen = app.screen
        assert isinstance(screen, CheckpointScreen) and screen.ckpt is None
        error = screen_text(app)
        assert "ws/broken/model.safetensors" in error and "not valid JSON" in error
        await pilot.press("escape")
        assert isinstance(app.screen, BrowserScreen)

    drive(app, scenario)


# ---------------------------------------------------------------------------------------- losses


def test_loss_comparison_of_a_resumed_run(workspace, fixtures):
    base, resumed = fixtures["tb-baseline"].losses, fixtures["tb-resumed"].losses
    common = sorted(set(base) & set(resumed))
    expected_max = max(abs(resumed[s] - base[s]) for s in common)
    app = CkptApp(workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_losses(pilot)
        screen = app.screen
        assert isinstance(screen, LossScreen)
        assert (screen.baseline, screen.resumed) == (BASELINE, RESUMED)
        cmp = screen.comparison
        assert cmp is not None and cmp.resume_step == min(resumed)
        assert cmp.compared == len(common)
        assert cmp.max_abs_diff == pytest.approx(expected_max, abs=1e-6)  # event files hold float32
        verdict = text_of(screen.query_one(VerdictPanel))
        assert ("MATCH" if expected_max <= cmp.atol else "DIVERGED") in verdict
        assert f"step {min(resumed)}" in verdict
        train_tag = screen.tag
        await pilot.press("v")
        assert screen.tag != train_tag and "validation" in screen.tag
        assert screen.query_one("#tag", Select).value == screen.tag
        await pilot.press("v")
        assert screen.tag == train_tag
        atol = screen.atol
        await pilot.press("plus")
        assert screen.atol == pytest.approx(atol * 10)
        await pilot.press("s")  # swap: the resumed run becomes the baseline
        await wait_until(pilot, lambda: screen.comparison is not None and screen.baseline == RESUMED)
        await pilot.press("escape")
        assert isinstance(app.screen, BrowserScreen)

    drive(app, scenario)


def test_app_opens_on_a_baseline_against_several_resumed_runs(demo_runs):
    """What `ckpt-tui demo` opens: the baseline vs both resumed runs, each plotted and judged; f moves the
    detail from one resumed run to the other; Esc goes to the browser on the folder."""
    app = CkptApp(demo_runs, baseline=DEMO_BASELINE, resumed=DEMO_RESUMED)

    async def scenario(pilot: Pilot) -> None:
        await scenes.demo_losses_shown(pilot)
        screen = app.screen
        assert isinstance(screen, LossScreen)
        assert screen.baseline == DEMO_BASELINE and screen.resumed_runs == DEMO_RESUMED
        assert [c.verdict for c in screen.comparisons] == ["match", "diverged"]
        assert all(c.resume_step == scenes.DEMO_RESUME for c in screen.comparisons)
        assert screen.comparison is screen.comparisons[0] and screen.resumed == DEMO_RESUMED[0]
        curves = screen.query_one(CurvesPlot)
        plotted = text_of(curves)
        for name in ("baseline", "resumed-from-zero", "resumed-from-hf"):
            assert name in plotted, name
        assert "2 resumed runs" in plotted
        verdict = text_of(screen.query_one(VerdictPanel))
        assert "resumed-from-zero" in verdict and "resumed-from-hf" in verdict
        assert "MATCH" in verdict and "DIVERGED" in verdict
        assert "resumed-from-zero - baseline" in text_of(screen.query_one(DiffPlot))

        await pilot.press("f")  # detail the other resumed run
        assert screen.focus == 1 and screen.resumed == DEMO_RESUMED[1]
        assert screen.comparison is screen.comparisons[1] and screen.comparison.verdict == "diverged"
        assert screen.query_one("#resumed", Select).value == DEMO_RESUMED[1]
        await pilot.pause()
        assert "resumed-from-hf - baseline" in text_of(screen.query_one(DiffPlot))
        assert "first beyond" in text_of(screen.query_one(VerdictPanel))
        await pilot.press("f")
        assert screen.focus == 0

        await pilot.press("escape")
        assert isinstance(app.screen, BrowserScreen) and app.screen.root == demo_runs

    drive(app, scenario)


def test_losses_key_in_a_demo_workspace_opens_the_demo_comparison(demo_runs, tmp_path, monkeypatch):
    """In a built demo workspace, `l` with nothing marked shows what the demo proves: the baseline vs the
    ZeRO -> universal run first (it must match), then the HF -> universal run."""
    import shutil

    from ckpt_tui.demo.workspace import SETTINGS_FILE

    shutil.copytree(demo_runs, tmp_path / "demo")
    (tmp_path / "demo" / SETTINGS_FILE).write_text("{}")  # what marks a folder as a demo workspace
    monkeypatch.chdir(tmp_path)
    app = CkptApp(Path("demo"))

    async def scenario(pilot: Pilot) -> None:
        await scenes.scan_done(pilot)
        await pilot.press("l")
        await scenes.wait_until(pilot, lambda: isinstance(app.screen, LossScreen) and len(app.screen.comparisons) == 2)
        screen = app.screen
        assert screen.baseline == DEMO_BASELINE and screen.resumed_runs == DEMO_RESUMED
        assert [c.verdict for c in screen.comparisons] == ["match", "diverged"]

    drive(app, scenario)


def test_enter_on_a_run_opens_the_comparison(workspace):
    app = CkptApp(workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.scan_done(pilot)
        app.screen.query_one(ScanTree).select_path(BASELINE)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, LossScreen) and app.screen.comparison is not None)
        assert app.screen.baseline == BASELINE and app.screen.resumed == RESUMED

    drive(app, scenario)


# ------------------------------------------------------------------------ help, palette, launch


def test_help_lists_keys_of_every_screen(workspace):
    app = CkptApp(workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.scan_done(pilot)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        console = Console(width=100, record=True, file=io.StringIO())
        console.print(app.screen._table())
        text = console.export_text()
        assert text.index("Browser (this screen)") < text.index("Checkpoint")
        for fragment in (
            "Browser (this screen)", "Checkpoint", "Losses", "Statistics", "Baseline run", "Everywhere",
            "Convert dialog", "Cancel job", "Verify",
        ):
            assert fragment in text, fragment
        await pilot.press("escape")
        assert isinstance(app.screen, BrowserScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, BrowserScreen)

    drive(app, scenario)


def test_command_palette_runs_screen_actions(workspace):
    app = CkptApp(workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_checkpoint(pilot, ZERO2)
        screen = app.screen
        await pilot.press("ctrl+p")
        await pilot.press(*"expand all")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.screen is screen
        assert all(n.is_expanded for n in screen.query_one(ParamTree).root.children if n.allow_expand)

    drive(app, scenario)


def test_no_color_is_respected(workspace, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = CkptApp(workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.scan_done(pilot)
        assert app.no_color

    drive(app, scenario)


def test_app_start_imports_neither_torch_nor_deepspeed(workspace):
    """First paint and the whole scan of real checkpoints without importing torch or deepspeed."""
    code = (
        "import asyncio, sys\n"
        "from ckpt_tui.tui.app import CkptApp\n"
        "from tests.tui import scenes\n"
        "app = CkptApp('workspace')\n"
        "async def main():\n"
        "    async with app.run_test(size=(100, 30)) as pilot:\n"
        "        await scenes.scan_done(pilot)\n"
        "        assert len(app.screen.entries) == 6, app.screen.entries\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in ('torch', 'deepspeed', 'transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_launch_needs_a_terminal_and_an_existing_folder(tmp_path):
    from ckpt_tui.tui.launch import launch

    with pytest.raises(CkptError, match="no such file"):
        launch(str(tmp_path / "missing"))
    with pytest.raises(CkptError, match="needs a terminal"):  # pytest captures stdout: not a tty
        launch(str(tmp_path))
    with pytest.raises(CkptError, match="no such TensorBoard run"):
        launch(str(tmp_path), baseline=tmp_path / "baseline", resumed=[tmp_path / "resumed"])


def test_no_mouse_reaches_the_app(tmp_path, monkeypatch):
    """`ckpt-tui DIR --no-mouse` runs the app with mouse capture off."""
    from ckpt_tui import cli
    from ckpt_tui.tui import launch as launch_module

    seen: dict[str, object] = {}

    def fake_run(self, *args, **kwargs):
        seen.update(kwargs)
        return None

    monkeypatch.setattr(CkptApp, "run", fake_run)
    monkeypatch.setattr(launch_module.sys.stdout, "isatty", lambda: True, raising=False)
    assert cli.main([str(tmp_path), "--no-mouse"]) == 0
    assert seen == {"mouse": False}
    assert cli.main([str(tmp_path)]) == 0
    assert seen == {"mouse": True}


def test_single_file_argument_opens_it(tmp_path, monkeypatch, fixtures):
    src = next(fixtures["hf-gpt2-safetensors"].path.glob("*.safetensors"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(src.read_bytes())
    monkeypatch.chdir(tmp_path)
    app = CkptApp("m/model.safetensors")

    async def scenario(pilot: Pilot) -> None:
        await wait_until(pilot, lambda: isinstance(app.screen, CheckpointScreen) and app.screen.ckpt is not None)
        assert "m/model.safetensors" in text_of(app.screen.query_one(FactsPanel))
        await pilot.press("escape")
        assert isinstance(app.screen, BrowserScreen)

    drive(app, scenario)

