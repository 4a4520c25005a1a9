"""The demo's pieces that need no training: workspace, settings, step skipping, errors, app hand-off."""

from __future__ import annotations

import argparse
import importlib.util
import json
import threading
from pathlib import Path

import pytest

from ckpt_tui.cli import main
from ckpt_tui.commands import demo_cmd
from ckpt_tui.core.errors import CkptError
from ckpt_tui.demo import pipeline, workspace
from ckpt_tui.demo.pipeline import DemoSettings, Event, Step, resolve_settings
from ckpt_tui.demo.workspace import Workspace, default_workspace


# ------------------------------------------------------------------------------------------ workspace
def test_default_workspace_env_then_user_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CKPT_TUI_DEMO_DIR", str(tmp_path / "here"))
    assert default_workspace() == tmp_path / "here"
    monkeypatch.delenv("CKPT_TUI_DEMO_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_workspace() == tmp_path / "data" / "ckpt-tui" / "demo"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_workspace() == tmp_path / "home" / ".local" / "share" / "ckpt-tui" / "demo"


def test_workspace_layout_paths(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, 7)
    assert ws.zero_checkpoint == tmp_path / "baseline" / "ckpt" / "global_step7"
    assert ws.universal_from_hf == tmp_path / "universal-from-hf" / "global_step7_universal"
    assert ws.universal_from_zero.parent == ws.universal_from_zero_root
    assert workspace.tb_dir(ws.resumed_from_hf) == tmp_path / "resumed-from-hf" / "tb"
    assert all(p.parent == tmp_path for p in ws.owned)


# ------------------------------------------------------------------------------------------- settings
def test_settings_defaults_recorded_and_conflicts(tmp_path: Path) -> None:
    s = resolve_settings(tmp_path, {"steps": None, "dp": None})
    assert (s.steps, s.dp, s.resume_dp, s.stage, s.dtype) == (100, 2, 1, 3, "fp32")
    (tmp_path / "demo.json").write_text(json.dumps({"settings": {"steps": 4, "dp": 1, "resume_dp": 2,
                                                                 "stage": 2, "dtype": "fp32"}}))
    s = resolve_settings(tmp_path, {"steps": None, "stage": None})  # adopted from the workspace
    assert (s.steps, s.dp, s.resume_dp, s.stage) == (4, 1, 2, 2)
    assert resolve_settings(tmp_path, {"stage": 2}).stage == 2  # the same value is no conflict
    with pytest.raises(CkptError, match="--stage 2.*--fresh"):
        resolve_settings(tmp_path, {"stage": 3})
    assert resolve_settings(tmp_path, {"stage": 3}, fresh=True).steps == 100


@pytest.mark.parametrize(("field", "value", "message"), [
    ("steps", 0, "--steps"), ("dp", 3, "--dp must divide"), ("resume_dp", 16, "--resume-dp"),
    ("stage", 0, "--stage"), ("dtype", "fp16", "--dtype"), ("tp", 3, "--tp must be 1 or 2"),
    ("resume_pp", 4, "--resume-pp"), ("pp", 2, "--pp needs --stage 1"),
])
def test_bad_settings(field: str, value: object, message: str, tmp_path: Path) -> None:
    with pytest.raises(CkptError, match=message):
        resolve_settings(tmp_path, {field: value})


def test_tp_and_pp_settings_pick_the_model_and_the_layouts(tmp_path: Path) -> None:
    s = resolve_settings(tmp_path, {"tp": 2, "resume_tp": 1, "stage": 1})
    assert (s.model, s.pipeline, s.world(resumed=False), s.world(resumed=True)) == ("hf-llama", False, 4, 1)
    assert s.layout(resumed=False) == "DP 2 × TP 2" and "tiny Llama (AutoTP)" in s.describe()
    s = resolve_settings(tmp_path, {"pp": 2, "dp": 1, "stage": 1})
    assert (s.model, s.pipeline, s.layout(resumed=False), s.layout(resumed=True)) == ("gpt", True, "DP 1 × PP 2", "DP 1")
    s = resolve_settings(tmp_path, {"pp": 2, "tp": 2, "dp": 1, "resume_dp": 2, "stage": 1})
    assert (s.model, s.needs_hints, s.world(resumed=False), s.layout(resumed=False)) == ("megatron", True, 4, "DP 1 × TP 2 × PP 2")
    assert "Megatron-style" in s.describe()
    with pytest.raises(CkptError, match="needs --stage 1"):
        resolve_settings(tmp_path, {"pp": 2, "tp": 2, "stage": 3})
    (tmp_path / "demo.json").write_text(json.dumps({"settings": {"steps": 4, "dp": 1, "resume_dp": 2,
                                                                 "stage": 1, "dtype": "fp32"}}))
    with pytest.raises(CkptError, match="--tp 1.*--fresh"):  # recorded before --tp existed: built at TP 1
        resolve_settings(tmp_path, {"tp": 2})


def test_eval_every_divides_the_resume_step() -> None:
    for n in (1, 4, 7, 20, 100):
        assert n % DemoSettings(steps=n).eval_every == 0  # validation is logged at the resume step
    assert DemoSettings(steps=100).eval_every == 20  # 5 points per half of the baseline


def test_refuses_a_folder_that_is_not_a_demo_workspace(tmp_path: Path) -> None:
    (tmp_path / "precious.bin").write_bytes(b"x")
    with pytest.raises(CkptError, match="not a ckpt-tui demo workspace"):
        pipeline.check_workdir(tmp_path)
    pipeline.check_workdir(tmp_path / "new")  # missing or empty is fine


# ----------------------------------------------------------------------------------- runtime errors
def test_missing_deepspeed_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    assert main(["demo", str(tmp_path / "ws"), "--no-open"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ckpt-tui: error: ")
    assert "needs deepspeed" in err[0] and "pip install" in err[0]
    assert not (tmp_path / "ws").exists()


# ---------------------------------------------------------------------------------- step machinery
def test_pipeline_skips_done_steps_and_reports_events(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ran: list[str] = []

    def fake_steps(ws: Workspace, settings: DemoSettings) -> list[Step]:
        def make(name: str) -> Step:
            out = ws.root / name

            def run(ctx: pipeline.StepContext) -> None:
                ctx.report(0.5, f"half of {name}")
                out.mkdir(exist_ok=True)
                ran.append(name)

            return Step(name, f"make {name}", out, run)

        return [make("a"), make("b")]

    monkeypatch.setattr(pipeline, "build_steps", fake_steps)
    monkeypatch.setattr(pipeline, "measure", lambda ws, s: ([], {}))
    (tmp_path / "a").mkdir()
    (tmp_path / "demo.json").write_text(json.dumps({"settings": {}}))
    events: list[Event] = []
    result = pipeline.run_pipeline(tmp_path, DemoSettings(steps=2), listener=events.append)
    assert ran == ["b"]
    assert [(e.kind, e.name) for e in events] == [("skip", "a"), ("start", "b"), ("progress", "b"), ("done", "b")]
    assert events[2].fraction == 0.5 and events[2].detail == "half of b"
    assert [(o.name, o.status) for o in result.outcomes] == [("a", "skipped"), ("b", "ran")]
    assert json.loads((tmp_path / "demo.json").read_text())["settings"]["steps"] == 2

    # An earlier step that runs again makes every later one run too, done or not (its input changed).
    (tmp_path / "a").rmdir()
    ran.clear()
    result = pipeline.run_pipeline(tmp_path, DemoSettings(steps=2))
    assert ran == ["a", "b"] and [o.status for o in result.outcomes] == ["ran", "ran"]


def test_failed_step_emits_failed_and_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def boom(ctx: pipeline.StepContext) -> None:
        raise CkptError(tmp_path / "logs" / "x.log", "training failed (exit code 1): RuntimeError: bad")

    monkeypatch.setattr(pipeline, "build_steps", lambda ws, s: [Step("x", "do x", tmp_path / "x", boom)])
    events: list[Event] = []
    with pytest.raises(CkptError, match="x.log"):
        pipeline.run_pipeline(tmp_path, DemoSettings(steps=2), listener=events.append)
    assert [e.kind for e in events] == ["start", "failed"] and "RuntimeError: bad" in events[-1].detail


def test_cancel_stops_before_the_next_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cancel = threading.Event()
    ran: list[str] = []

    def step(name: str) -> Step:
        def run(ctx: pipeline.StepContext) -> None:
            ran.append(name)
            cancel.set()
        return Step(name, name, tmp_path / name, run)

    monkeypatch.setattr(pipeline, "build_steps", lambda ws, s: [step("a"), step("b")])
    with pytest.raises(CkptError, match="cancelled"):
        pipeline.run_pipeline(tmp_path, DemoSettings(steps=2), cancel=cancel)
    assert ran == ["a"]


def test_fresh_removes_only_demo_outputs(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, 4)
    for p in (ws.baseline_tb, ws.hf, ws.logs):
        p.mkdir(parents=True)
    ws.settings.write_text("{}")
    (tmp_path / "mine.txt").write_text("keep")
    pipeline.fresh_start(ws)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


# ------------------------------------------------------------------------------------- app hand-off
def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"no_open": False, "json": False, **kw})


def test_not_interactive_without_a_terminal_or_with_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert demo_cmd.interactive(_args())
    assert not demo_cmd.interactive(_args(no_open=True))
    assert not demo_cmd.interactive(_args(json=True))
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert not demo_cmd.interactive(_args())


def test_open_app_opens_the_losses_of_both_resumed_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ckpt_tui.tui import launch as launch_mod

    calls: list[tuple] = []
    result = pipeline.DemoResult(tmp_path, DemoSettings(), baseline_tb=tmp_path / "baseline" / "tb")
    result.resumed = [argparse.Namespace(name="resumed-from-zero"), argparse.Namespace(name="resumed-from-hf")]

    def fake(dir: str | None, *, mouse: bool = True, baseline: Path | None = None, resumed=()) -> int:
        calls.append((dir, mouse, baseline, list(resumed)))
        return 0

    monkeypatch.setattr(launch_mod, "launch", fake)
    from ckpt_tui.demo.workspace import SETTINGS_FILE

    (tmp_path / SETTINGS_FILE).write_text("{}")  # a demo workspace always has its settings file
    demo_cmd.open_app(result)  # nothing written yet: the browser only
    for name in ("baseline", "resumed-from-zero", "resumed-from-hf"):
        (tmp_path / name / "tb").mkdir(parents=True)
    demo_cmd.open_app(result)
    assert calls[0] == (str(tmp_path), True, None, [])
    assert calls[1] == (str(tmp_path), True, tmp_path / "baseline" / "tb",
                        [tmp_path / "resumed-from-zero" / "tb", tmp_path / "resumed-from-hf" / "tb"])


def test_one_demo_at_a_time_per_workspace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import fcntl

    monkeypatch.setattr(pipeline, "build_steps", lambda ws, s: [])
    with open(tmp_path / pipeline.LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(CkptError, match="another `ckpt-tui demo` is running"):
            pipeline.run_pipeline(tmp_path, DemoSettings(steps=2))
    assert pipeline.run_pipeline(tmp_path, DemoSettings(steps=2)).outcomes == []
