"""`ckpt-tui demo [WORKDIR]`: the seed's 4-step universal checkpointing proof, with real DeepSpeed.

1. train a tiny GPT with DeepSpeed ZeRO for 2N steps at DP=A, saving a ZeRO checkpoint at step N and
   logging training/validation loss to TensorBoard (Megatron-DeepSpeed tags): the baseline;
2. convert the step-N ZeRO checkpoint to HF safetensors; 3. convert HF to universal;
4. resume from that universal checkpoint at DP=B up to step 2N; and, as a second resumed run, resume
   from ZeRO -> universal (Adam moments kept).
Every artifact is verified against its source. Then the loss comparison is printed (numbers and a
terminal plot), and on a terminal the app opens on WORKDIR. Finished steps are skipped (--fresh redoes
them). Workspace layout: see :mod:`ckpt_tui.demo.workspace`.

Exit code: 0 when the proof holds (ZeRO -> universal resumed curve within atol of the baseline at every
step, the HF -> universal resumed run's first step within atol, every artifact equal to its source),
1 when it does not, 2 for a problem (missing torch/deepspeed, a failed step: one line naming its log).

JSON (``--json``, schema ``ckpt-tui.demo/1``; only JSON on stdout, progress still on stderr)::

    {"schema": "ckpt-tui.demo/1", "workspace": str, "passed": bool, "atol": float, "seconds": float,
     "settings": {"steps", "dp", "resume_dp", "tp", "resume_tp", "pp", "resume_pp", "stage", "dtype", "device"},
     "baseline": {"tensorboard": str},
     "steps": [{"name", "title", "output", "status": "ran" | "skipped", "seconds"}],
     "verify": {"hf" | "universal-from-hf" | "universal-from-zero":
                {"a", "b", "ok", "tensors_compared", "bitwise_equal", "max_abs_diff", "problems", ...}},
     "runs": [{"run": "resumed-from-zero" | "resumed-from-hf", "via", "expect": "curve" | "first-step",
               "passed", "first_step_abs_diff", "tensorboard",
               "train": <compare-loss comparison>, "validation": <comparison> | null,
               "per_step": [{"step", "baseline", "resumed", "diff"}]}]}
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ckpt_tui.commands.output import console, print_json

NAME = "demo"
HELP = "Run the 4-step universal checkpointing proof on a tiny GPT with real DeepSpeed and compare the losses."
EXIT_FAILED = 1
DEFAULT_COMPARE_ATOL = 1e-5  # compare-loss's default tolerance


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workdir", nargs="?", type=Path, default=None,
                   help="workspace folder (default: $CKPT_TUI_DEMO_DIR or ~/.local/share/ckpt-tui/demo)")
    p.add_argument("--steps", type=int, metavar="N", help="save and resume at step N; the baseline trains 2N (default 100)")
    p.add_argument("--dp", type=int, metavar="A", help="data-parallel size of the baseline (default 2)")
    p.add_argument("--resume-dp", type=int, metavar="B", help="data-parallel size of the resumed runs (default 1)")
    p.add_argument("--tp", type=int, metavar="T", help="tensor-parallel size of the baseline (AutoTP tiny Llama; with --pp the Megatron-style GPT; default 1)")
    p.add_argument("--resume-tp", type=int, metavar="T", help="tensor-parallel size of the resumed runs (default 1)")
    p.add_argument("--pp", type=int, metavar="P", help="pipeline stages of the baseline (PipelineModule; with --tp the Megatron-style GPT; needs --stage 1)")
    p.add_argument("--resume-pp", type=int, metavar="P", help="pipeline stages of the resumed runs (default 1)")
    p.add_argument("--stage", type=int, choices=[1, 2, 3], help="ZeRO stage (default 3)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], help="training dtype (default fp32)")
    p.add_argument("--fresh", action="store_true", help="redo every step (removes the demo's outputs in WORKDIR)")
    p.add_argument("--no-open", action="store_true", help="do not open the app afterwards")
    p.add_argument("--no-plot", action="store_true", help="numbers only, no terminal plot")
    p.add_argument("--json", action="store_true", help="emit the comparison as JSON (schema ckpt-tui.demo/1)")
    p.epilog = ("Settings not given are those WORKDIR was built with (other ones need --fresh), else the "
                "defaults. Finished steps are skipped. The app opens on WORKDIR afterwards when stdin and "
                "stdout are terminals.")


def run(args: argparse.Namespace) -> int:
    from ckpt_tui.demo.pipeline import (
        check_workdir,
        cuda_available,
        require_runtime,
        resolve_settings,
        run_pipeline,
        trainer_supports_cuda,
    )
    from ckpt_tui.demo.workspace import default_workspace

    workdir = (args.workdir or default_workspace()).expanduser().resolve()
    require_runtime()  # before anything else: the one message a user without torch/deepspeed needs
    check_workdir(workdir)
    reporter = Reporter()
    device = "cpu"
    if cuda_available():
        if trainer_supports_cuda():
            device = "cuda"
        else:
            reporter.note("a GPU is present but the demo trainer has no GPU path yet: training on the CPU (gloo)")
    requested = {"steps": args.steps, "dp": args.dp, "resume_dp": args.resume_dp, "stage": args.stage,
                 "dtype": args.dtype, "tp": args.tp, "resume_tp": args.resume_tp, "pp": args.pp,
                 "resume_pp": args.resume_pp}
    settings = resolve_settings(workdir, requested, fresh=args.fresh, device=device)
    reporter.note(f"demo workspace {workdir}: {settings.describe()}")
    with reporter:
        result = run_pipeline(workdir, settings, fresh=args.fresh, listener=reporter)
    if args.json:
        print_json(result.to_dict())
    else:
        print_result(result, plot=not args.no_plot)
    if interactive(args):
        open_app(result)
    return 0 if result.passed else EXIT_FAILED


def interactive(args: argparse.Namespace) -> bool:
    return not (args.no_open or args.json) and sys.stdin.isatty() and sys.stdout.isatty()


def open_app(result: Any) -> None:
    """The app on the workspace, on the loss screen: the baseline vs both resumed runs (Esc: the browser)."""
    from ckpt_tui.demo.workspace import comparison_runs
    from ckpt_tui.tui.launch import launch

    # Runs a failed step left unwritten are left out (with none, the app opens on the browser).
    baseline, resumed = comparison_runs(result.workspace) or (None, [])
    launch(str(result.workspace), mouse=True, baseline=baseline, resumed=resumed)


# ------------------------------------------------------------------------------------------ progress
class Reporter:
    """Pipeline events on stderr: a live bar per step on a terminal, plain lines in logs and CI."""

    def __init__(self) -> None:
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.live = self.err.is_terminal
        self.lock = threading.Lock()
        self.bar: Any = None
        self.task: Any = None
        self.last_detail = ""
        self.next_quarter = 0.25

    def __enter__(self) -> Reporter:
        if self.live:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
                TimeElapsedColumn(), TextColumn("[dim]{task.fields[detail]}"),
                console=self.err, transient=True,
            )
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def note(self, text: str) -> None:
        self.err.print(text, markup=False)

    def __call__(self, e: Any) -> None:
        with self.lock:
            where = f"[{e.index}/{e.total}]"
            if e.kind == "start":
                self.last_detail, self.next_quarter = "", 0.25
                if self.bar is not None:
                    self.task = self.bar.add_task(f"{where} {e.title}", total=1.0, detail="")
                else:
                    self.err.print(f"{where} {e.title} ...", markup=False)
            elif e.kind == "progress":
                self.last_detail = e.detail or self.last_detail
                if self.bar is not None and self.task is not None:
                    update: dict[str, Any] = {"detail": _clip(e.detail, 70)}
                    if e.fraction is not None:
                        update["completed"] = e.fraction
                    self.bar.update(self.task, **update)
                elif e.fraction is not None and self.next_quarter <= e.fraction < 1.0 and e.seconds > 1:
                    self.next_quarter = int(e.fraction * 4 + 1) / 4
                    self.err.print(f"      {e.detail}", markup=False)
            elif e.kind in ("done", "failed"):
                if self.bar is not None and self.task is not None:
                    self.bar.remove_task(self.task)
                    self.task = None
                detail = e.detail if e.kind == "failed" or e.detail else self.last_detail
                mark = "done" if e.kind == "done" else "FAILED"
                style = "green" if e.kind == "done" else "red"
                self.err.print(f"[{style}]{mark}[/] {_escape(where)} {_escape(e.title)} "
                               f"[dim]({e.seconds:.1f} s){': ' + _escape(detail) if detail else ''}[/]")
            elif e.kind == "skip":
                self.err.print(f"[dim]skip {_escape(where)} {_escape(e.title)}: {_escape(e.detail)}[/]")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# ------------------------------------------------------------------------------------------ the result
def print_result(result: Any, *, plot: bool = True) -> None:
    out = console()
    if plot and result.resumed:
        width = max(60, min(shutil.get_terminal_size((120, 40)).columns, 160))
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        sys.stdout.write(render_demo_plot(result, width, 30, color=color) + "\n\n")
        sys.stdout.flush()
    out.print(_runs_table(result))
    for artifact, v in result.verifications.items():
        ok = "[green]equal[/]" if v.get("ok") else "[red]DIFFERS[/]"
        out.print(f"verify {_escape(artifact)} against {_escape(_rel(v['a'], result.workspace))}: {ok}, "
                  f"{v['tensors_compared']} tensors, {v['bitwise_equal']} bitwise equal, "
                  f"max |diff| {v['max_abs_diff']:.3g}")
    for r in result.resumed:
        style = "green" if r.passed else "red"
        verdict = "PASS" if r.passed else "FAIL"
        out.print(f"[{style}]{verdict}[/] {r.name}: {_escape(_claim(r))}")
    ws = result.workspace
    out.print(f"workspace: {ws}  (ran in {result.seconds:.1f} s)")
    atol = result.settings.atol
    tolerance = "" if atol == DEFAULT_COMPARE_ATOL else f" --atol {atol:g}"
    out.print(f"browse it: ckpt-tui {ws}   compare: ckpt-tui compare-loss {ws / 'baseline' / 'tb'} "
              f"{ws / 'resumed-from-zero' / 'tb'}{tolerance}", soft_wrap=True)
    out.print("[green]PASS[/]: resuming from the converted universal checkpoints reproduces the baseline"
              if result.passed else "[red]FAIL[/]: the resumed runs do not reproduce the baseline")


def _claim(r: Any) -> str:
    atol = r.train.atol
    if r.expect == "curve":
        return (f"every step {r.train.overlap[0]}..{r.train.overlap[1]} within {atol:g} of the baseline "
                f"(max |diff| {_g(r.train.max_abs_diff)})" if r.train.overlap else "no step in common")
    return (f"first resumed step within {atol:g} of the baseline (|diff| {_g(r.first_step_diff)}); "
            "later steps drift because Adam restarts from zero moments")


def _runs_table(result: Any) -> Table:
    table = Table(box=None, title=f"loss vs baseline (atol {result.settings.atol:g})", title_justify="left")
    table.add_column("", style="bold")
    for r in result.resumed:
        table.add_column(r.name, justify="right")
    rows: list[tuple[str, Any]] = [
        ("via", lambda r: r.via),
        ("steps compared", lambda r: f"{r.train.overlap[0]}..{r.train.overlap[1]} ({r.train.compared})"
         if r.train.overlap else "none"),
        ("first step |diff|", lambda r: _g(r.first_step_diff)),
        ("train max |diff|", lambda r: _g(r.train.max_abs_diff) + _at(r.train.max_abs_diff_step)),
        ("train mean |diff|", lambda r: _g(r.train.mean_abs_diff)),
        ("val max |diff|", lambda r: _g(r.validation.max_abs_diff) if r.validation else "n/a"),
        ("last loss (base / run)", lambda r: f"{r.train.base_values[-1]:.4f} / {r.train.resumed_values[-1]:.4f}"
         if r.train.compared else "n/a"),
        ("expected", lambda r: "every step" if r.expect == "curve" else "first step"),
        ("verdict", lambda r: "[green]pass[/]" if r.passed else "[red]fail[/]"),
    ]
    for label, fn in rows:
        table.add_row(label, *(fn(r) for r in result.resumed))
    return table


def render_demo_plot(result: Any, width: int = 120, height: int = 30, *, color: bool = True) -> str:
    """Top: the baseline and both resumed runs; bottom: resumed-from-zero minus baseline with the ±atol band."""
    from plotext._figure import _figure_class

    from ckpt_tui import plots
    from ckpt_tui.core.losses import decimate

    runs = {r.name: r for r in result.resumed}
    first = result.resumed[0].train
    fig = _figure_class()
    fig._limit_size(False, False)
    fig.plot_size(width, height)
    fig.theme("pro" if color else "clear")
    fig.subplots(2, 1)
    top = fig.subplot(1, 1)
    points = max(4 * width, 200)
    top.plot(*decimate(first.baseline.steps, first.baseline.values, points), label="baseline",
             color=plots.BASELINE_COLOR, marker="braille")
    styles = {"resumed-from-hf": ("green+", "resumed (HF->universal)"),
              "resumed-from-zero": (plots.RESUMED_COLOR, "resumed (ZeRO->universal)")}
    for name in ("resumed-from-hf", "resumed-from-zero"):  # ZeRO last: it lies on the baseline
        if name in runs:
            s = runs[name].train.resumed
            top.plot(*decimate(s.steps, s.values, points), label=styles[name][1], color=styles[name][0],
                     marker="braille")
    if first.resume_step is not None:
        top.vertical_line(first.resume_step - 1, color=plots.MARK_COLOR)
    steps = first.baseline.steps
    if len(steps):
        ticks = plots.step_ticks(int(steps[0]), int(steps[-1]))
        top.xticks(ticks, [plots.step_label(t) for t in ticks])
    s = result.settings
    top.title(f"{first.tag}: baseline {s.layout(resumed=False)} vs resumed {s.layout(resumed=True)} from step "
              f"{s.steps} (ZeRO-{s.stage} {s.dtype})")
    bottom = fig.subplot(2, 1)
    zero = runs.get("resumed-from-zero")
    if zero is not None:
        plots.draw_diff(bottom, zero.train, max_points=points)
        bottom.title(f"resumed-from-zero - baseline: {zero.train.verdict}, max |diff| "
                     f"{_g(zero.train.max_abs_diff)}, atol {zero.train.atol:g}")
    for row in (1, 2):
        fig.subplot(row, 1).theme("pro" if color else "clear")
    text = fig.build()
    return text if color else plots._ANSI.sub("", text)


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _at(step: int | None) -> str:
    return "" if step is None else f" @ {step}"


def _rel(path: str | Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
