"""Converting from the app (Pilot, real checkpoints, real conversions; no mocks of the core).

Each test converts in a copy of the workspace of its own (fresh_workspace). The one place a test steps in
is timing: scenes.conversions_held_after pauses a job after a given tensor, so "cancel midway" happens
midway on any machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Checkbox, Input, Select, Static

from ckpt_tui.core.convert.api import DTYPES, STAGES
from ckpt_tui.core.convert.job import MARKER, leftovers
from ckpt_tui.core.model import Kind
from ckpt_tui.core.verify import verify
from ckpt_tui.tui.app import CkptApp
from ckpt_tui.tui.jobs import TARGET_LABELS
from ckpt_tui.tui.screens.browser import BrowserScreen
from ckpt_tui.tui.screens.checkpoint import CheckpointScreen
from ckpt_tui.tui.screens.convert import KEEP, ConvertDialog
from ckpt_tui.tui.widgets.job_panel import JobPanel
from ckpt_tui.tui.widgets.scan_tree import ScanTree
from tests.tui import scenes
from tests.tui.scenes import ZERO2, ZERO3, wait_until


def drive(app: CkptApp, scenario: Callable[[Pilot], Awaitable[None]], size: tuple[int, int] = (120, 40)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(pilot)

    asyncio.run(main())


def screen_text(app: CkptApp) -> str:
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip) for strip in strips)


def panel_text(app: CkptApp) -> str:
    panel = app.screen.query_one(JobPanel)
    return "\n".join(line.text for line in panel.render_lines(panel.region.reset_offset))


async def panel_shows(pilot: Pilot, app: CkptApp, *needles: str, timeout: float = 30.0) -> str:
    """The job panel's text once it shows every needle: it redraws from the job's events on the UI
    thread, so a test waits for what the user will see instead of racing the redraw."""
    try:
        await wait_until(pilot, lambda: all(n in panel_text(app) for n in needles), timeout=timeout)
    except AssertionError:
        raise AssertionError(f"the job panel never showed {needles!r}; it shows:\n{panel_text(app)}") from None
    return panel_text(app)


def dialog_message(app: CkptApp) -> str:
    """The dialog's check result line(s) as one string (however the dialog's width wraps it)."""
    return str(app.screen.query_one("#convert-message", Static).content)


def traces(folder: Path) -> list[Path]:
    """Anything a job leaves behind under folder: temp or old folders, job markers."""
    return [p for p in folder.rglob("*") if ".ckpt-tui-" in p.name or p.name == MARKER]


# The dialog's Select options, in order (as the dialog builds them).
OPTIONS = {
    "target": list(TARGET_LABELS),
    "dtype": [KEEP, *DTYPES],
    "stage": [KEEP, *map(str, STAGES)],
}


async def type_into(pilot: Pilot, field: str, text: str) -> None:
    """Empty a dialog field, then type text into it key by key."""
    widget = pilot.app.screen.query_one(f"#{field}", Input)
    widget.focus()
    await pilot.pause()
    widget.value = ""
    for key in text:
        await pilot.press(key)
    await pilot.pause()


async def choose(pilot: Pilot, field: str, value: str) -> None:
    """Pick a Select option with the keyboard: Enter opens it, arrows move, Enter picks."""
    select = pilot.app.screen.query_one(f"#{field}", Select)
    select.focus()
    steps = OPTIONS[field].index(value) - OPTIONS[field].index(select.value)
    await pilot.press("enter")
    await pilot.pause()
    for _ in range(abs(steps)):
        await pilot.press("down" if steps > 0 else "up")
    await pilot.press("enter")
    await pilot.pause()
    assert select.value == value, select.value


# ------------------------------------------------------------------------------------- to the end


def test_zero_to_hf_from_the_checkpoint_screen_runs_opens_and_verifies(fresh_workspace, fixtures):
    out = Path("workspace/tiny-zero2-bf16-hf")
    app = CkptApp(fresh_workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_convert_dialog(pilot, ZERO2)
        dialog = app.screen
        assert isinstance(dialog, ConvertDialog)
        assert dialog.query_one("#output", Input).value == str(out), "default: a sibling named <name>-hf"
        assert "writes about 527.0 KiB to workspace/tiny-zero2-bf16-hf" in dialog_message(app)
        dialog.query_one("#output", Input).focus()
        await pilot.press("enter")  # Enter in a field starts
        await wait_until(pilot, lambda: app.job is not None and app.job.convert.finished, timeout=120)
        assert app.job.succeeded, app.job.convert.error
        # success opens the result
        await wait_until(pilot, lambda: isinstance(app.screen, CheckpointScreen) and app.screen.ckpt is not None)
        assert app.screen.path == out and app.screen.ckpt.kind is Kind.HF_SAFETENSORS
        await panel_shows(pilot, app, "✓ Converted to HF safetensors", "29/29 tensors", "100%", "v: verify")
        # verify from the same screen
        await pilot.press("v")
        await wait_until(pilot, lambda: app.job.verify.finished, timeout=120)
        await panel_shows(pilot, app, "MATCH", "29 tensors compared: 29 bitwise equal, max |diff| 0")
        report = app.job.report
        assert report is not None and report.ok and report.bitwise_equal_count == len(report.compared) == 29
        # Esc closes the finished panel, then goes back to the source, whose panel is gone too
        await pilot.press("escape")
        assert app.job is None and not app.screen.query_one(JobPanel).display
        await pilot.press("escape")
        assert isinstance(app.screen, CheckpointScreen) and app.screen.path == ZERO2

    drive(app, scenario)
    assert (out / "model.safetensors").is_file()
    independent = verify(ZERO2, out)  # not the app's report: the core again, on the files left on disk
    assert independent.ok and independent.bitwise_equal_count == len(independent.compared)
    assert traces(Path("workspace")) == []


def test_zero3_to_universal_from_the_browser_with_options(fresh_workspace, fixtures):
    """x on a browser row; target, step and stage set with the keyboard; the new folder shows in the tree."""
    out = Path("workspace/gpt2-zero3-universal/global_step7_universal")
    app = CkptApp(fresh_workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.scan_done(pilot)
        app.screen.query_one(ScanTree).select_path(ZERO3)
        await pilot.pause()
        assert "ZeRO-3" in screen_text(app), "the browser badge tells the stage from the file names"
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ConvertDialog) and app.screen.source is not None)
        await choose(pilot, "target", "universal")
        assert not app.screen.query_one("#dtype").parent.display, "hf options hide for universal"
        await type_into(pilot, "step", "7")
        assert app.screen.query_one("#output", Input).value == str(out), "the default name follows the step"
        await choose(pilot, "stage", "3")
        await type_into(pilot, "workers", "1")
        await pilot.press("f2")
        await wait_until(pilot, lambda: app.job is not None and app.job.convert.finished, timeout=120)
        assert app.job.succeeded, app.job.convert.error
        await wait_until(pilot, lambda: isinstance(app.screen, CheckpointScreen) and app.screen.ckpt is not None)
        assert app.screen.ckpt.kind is Kind.DS_UNIVERSAL and app.screen.ckpt.step == 7
        await pilot.press("v")
        await wait_until(pilot, lambda: app.job.verify.finished, timeout=120)
        assert app.job.report is not None and app.job.report.ok
        await panel_shows(pilot, app, "MATCH")
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, BrowserScreen)
        await wait_until(pilot, lambda: not app.screen.scanning)
        assert out in {e.path for e in app.screen.entries}, "the browser rescanned after the conversion"

    drive(app, scenario)
    assert (out.parent / "latest_universal").read_text() == out.name
    assert verify(ZERO3, out).ok
    assert traces(Path("workspace")) == []


# ------------------------------------------------------------------------------- cancel and fail


def test_cancel_midway_with_ctrl_c_leaves_nothing(fresh_workspace):
    """Cancel after the first tensor is written: no output, no temp folder, not even the new save dir."""
    out = Path("workspace/tiny-zero2-bf16-universal/global_step4_universal")
    app = CkptApp(fresh_workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_convert_dialog(pilot, ZERO2)
        await choose(pilot, "target", "universal")
        await type_into(pilot, "workers", "1")
        with scenes.conversions_held_after(1) as release:
            await pilot.press("f2")
            await wait_until(pilot, lambda: app.job is not None and app.job.convert.progress.tensors_done == 1)
            tmp = leftovers(out)
            assert len(tmp) == 1 and any(tmp[0].iterdir()), "midway: the temp folder holds the first tensor"
            await panel_shows(pilot, app, "Converting to DeepSpeed universal", "1/29 tensors")
            assert "^c Cancel job" in screen_text(app), "the footer shows the cancel key"
            await pilot.press("ctrl+c")
            await wait_until(pilot, lambda: app.job.convert.finished, timeout=60)
            release.set()
        assert app.job.convert.state == "cancelled"
        await panel_shows(
            pilot, app, "Cancelled, nothing written",
            "no workspace/tiny-zero2-bf16-universal/global_step4_universal, no temp folder left",
        )
        assert isinstance(app.screen, CheckpointScreen) and app.screen.path == ZERO2, "nothing to open"

    drive(app, scenario)
    assert not out.exists() and not out.parent.exists(), "the save dir made for the output is gone too"
    assert traces(Path("workspace")) == []


def test_quitting_during_a_job_cancels_it(fresh_workspace):
    app = CkptApp(fresh_workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_convert_dialog(pilot, ZERO2)
        with scenes.conversions_held_after(3):
            await scenes.start_conversion(pilot)
            await wait_until(pilot, lambda: app.job.convert.progress.tensors_done == 3)
        await pilot.press("q")

    start = time.monotonic()
    drive(app, scenario)
    assert time.monotonic() - start < 30, "the job thread stopped with the app"
    assert app.job is not None and app.job.convert.state == "cancelled"
    assert not Path("workspace/tiny-zero2-bf16-hf").exists() and traces(Path("workspace")) == []


def test_failure_midway_shows_the_reason_and_leaves_nothing(fresh_workspace):
    """A rank's optimizer file is cut short: the job fails on it, says why in one line, writes nothing."""
    optim = ZERO2 / "global_step4" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    data = optim.read_bytes()
    optim.write_bytes(data[: len(data) // 2])
    app = CkptApp(fresh_workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_convert_dialog(pilot, ZERO2)
        await scenes.start_conversion(pilot)
        await wait_until(pilot, lambda: app.job.convert.finished, timeout=120)
        assert app.job.convert.state == "failed"
        assert str(optim) in app.job.convert.error and "truncated or corrupted" in app.job.convert.error
        await panel_shows(
            pilot, app, "✗ Conversion failed", "truncated or corrupted",
            "nothing written: no workspace/tiny-zero2-bf16-hf, no temp folder left",
        )
        assert isinstance(app.screen, CheckpointScreen) and app.screen.path == ZERO2
        await pilot.press("escape")  # closes the failed job's panel
        assert app.job is None

    drive(app, scenario)
    assert not Path("workspace/tiny-zero2-bf16-hf").exists() and traces(Path("workspace")) == []


# -------------------------------------------------------------------------------------- the dialog


def test_dialog_checks_before_start_and_offers_to_replace(fresh_workspace):
    out = Path("workspace/tiny-zero2-bf16-hf")
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    app = CkptApp(fresh_workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_convert_dialog(pilot, ZERO2)
        dialog = app.screen
        assert isinstance(dialog, ConvertDialog)
        assert "workspace/tiny-zero2-bf16-hf already exists" in dialog_message(app)
        assert dialog.query_one("#output").has_class("-problem")
        await pilot.press("f2")
        assert app.screen is dialog and app.job is None, "not started"
        assert app.focused is dialog.query_one("#force", Checkbox), "Start goes to the box that would allow it"
        await pilot.press("space")
        await pilot.pause()
        assert "replaces the existing folder once complete" in dialog_message(app)
        # every rule of the CLI, shown where it applies
        for field, text, message in [
            ("shard", "5XB", "cannot read size '5XB'"),
            ("workers", "0", "--workers must be at least 1"),
            ("output", "workspace/tiny-zero2-bf16", "is the source itself"),
            ("output", "workspace", "contains the source"),
            ("output", "", "output: the folder to write"),
        ]:
            await type_into(pilot, field, text)
            assert message in dialog_message(app), (field, text)
            assert dialog.query_one(f"#{field}").has_class("-problem"), field
            await pilot.press("f2")
            assert app.screen is dialog and app.job is None
            assert app.focused is dialog.query_one(f"#{field}"), "Start goes to the field to fix"
            await type_into(pilot, field, {"shard": "", "workers": "2"}.get(field, str(out)))
        await pilot.press("f2")
        await wait_until(pilot, lambda: app.job is not None and app.job.convert.finished, timeout=120)
        assert app.job.succeeded

    drive(app, scenario)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert traces(Path("workspace")) == []


def test_dialog_escape_closes_without_a_job_and_palette_opens_it(fresh_workspace):
    app = CkptApp(fresh_workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_checkpoint(pilot, ZERO2)
        await pilot.press("ctrl+p")
        await pilot.press(*"convert")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConvertDialog) and app.screen.source is not None)
        await pilot.press("escape")
        assert isinstance(app.screen, CheckpointScreen) and app.job is None
        await pilot.press("ctrl+c")  # no job: ctrl+c is what it always was (copy, or the quit hint)
        assert isinstance(app.screen, CheckpointScreen) and app.job is None

    drive(app, scenario)


def test_dtype_cast_is_verified_in_that_dtype(fresh_workspace):
    """A bf16 export of fp32 masters: verify compares in bf16 (as `convert --verify --dtype bf16`)."""
    out = Path("workspace/tiny-zero2-bf16-hf")
    app = CkptApp(fresh_workspace)

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_convert_dialog(pilot, ZERO2)
        await choose(pilot, "dtype", "bf16")
        await type_into(pilot, "shard", "200KB")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.job is not None and app.job.convert.finished, timeout=120)
        assert app.job.succeeded, app.job.convert.error
        await wait_until(pilot, lambda: isinstance(app.screen, CheckpointScreen) and app.screen.ckpt is not None)
        await pilot.press("v")
        await wait_until(pilot, lambda: app.job.verify.finished, timeout=120)
        assert app.job.report.compare_dtype == "bfloat16" and app.job.report.ok
        await panel_shows(pilot, app, "compared as bf16")

    drive(app, scenario)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1, "sharded at 200KB"


def test_scan_report_counts_folders_and_browser_shows_zero3(workspace):
    from ckpt_tui.core.scan import scan_all

    report = scan_all(workspace)
    stages = {e.path: e.stage for e in report.entries}
    assert stages[ZERO3] == 3 and stages[ZERO2] is None, "stage 3 from file names; 1/2 would need a pickle"
    assert report.folders >= len(report.entries)


@pytest.mark.parametrize("target", ["hf", "universal"])
def test_default_output_is_beside_the_source(fresh_workspace, target):
    from ckpt_tui.core.convert.api import ConvertOptions, default_output
    from ckpt_tui.core.inspect import open_checkpoint

    save_dir = open_checkpoint(ZERO2)
    tag_dir = open_checkpoint(ZERO2 / "global_step2")
    universal = open_checkpoint(Path("workspace/tiny-zero1/universal"))
    if target == "hf":
        assert default_output(save_dir, "hf") == Path("workspace/tiny-zero2-bf16-hf")
        assert default_output(tag_dir, "hf") == Path("workspace/tiny-zero2-bf16-global_step2-hf")
        assert default_output(universal, "hf") == Path("workspace/tiny-zero1/universal-global_step4-hf")
    else:
        assert default_output(save_dir, "universal") == Path(
            "workspace/tiny-zero2-bf16-universal/global_step4_universal"
        )
        assert default_output(save_dir, "universal", ConvertOptions(step=9)) == Path(
            "workspace/tiny-zero2-bf16-universal/global_step9_universal"
        )
        assert default_output(tag_dir, "universal") == Path(
            "workspace/tiny-zero2-bf16-universal/global_step2_universal"
        )


def widget_text(widget) -> str:  # noqa: ANN001
    return "\n".join(line.text for line in widget.render_lines(widget.region.reset_offset)) if widget.region else ""


def rendered(widget, width: int = 120) -> str:  # noqa: ANN001
    """What a widget's render() draws now, as plain text (its strips may still be the last frame's)."""
    from rich.console import Console

    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(widget.render())
    return console.export_text()


def test_a_tensor_parallel_checkpoint_shows_full_shapes_and_converts(fixtures, tmp_path, monkeypatch):
    """An AutoTP TP 2 save: the facts name the layout, the tree the FULL shapes, the tensor line its split;
    the Convert dialog says the universal output resumes at any layout, and the conversion matches."""
    import shutil

    from ckpt_tui.tui.widgets.facts import FactsPanel
    from ckpt_tui.tui.widgets.tensor_detail import TensorDetail

    fx = fixtures["llama-tp2-z1-fp32"]
    shutil.copytree(fx.path, tmp_path / "ws" / "llama-tp2")
    monkeypatch.chdir(tmp_path)
    source = Path("ws/llama-tp2")
    app = CkptApp(Path("ws"))

    async def scenario(pilot: Pilot) -> None:
        await scenes.open_checkpoint(pilot, source)
        screen = app.screen
        assert isinstance(screen, CheckpointScreen) and screen.ckpt is not None
        assert "DP 1 × TP 2" in widget_text(screen.query_one(FactsPanel))
        leaves = {n.path: n.tensor.shape for n in screen.tree_root.walk() if n.tensor is not None}
        assert leaves == {name: p.shape for name, p in fx.truth.params.items()}
        await scenes.cursor_to(pilot, "lm_head.weight")
        detail = rendered(screen.query_one(TensorDetail))
        assert "[256, 64]" in detail and "split affine map" in detail and "TP ranks 0..1" in detail
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ConvertDialog) and app.screen.source is not None)
        dialog = app.screen
        await choose(pilot, "target", "universal")
        assert "TP 2" in str(dialog.query_one("#convert-source", Static).render())
        assert "any TP × PP × DP" in str(dialog.query_one("#stage-note").render())
        await pilot.press("f2")
        await wait_until(pilot, lambda: app.job is not None and app.job.convert.finished, timeout=120)
        assert app.job.succeeded, app.job.convert.error

    drive(app, scenario)
    out = next(Path("ws").glob("*universal*/*_universal"))
    assert verify(source, out).ok
