"""`ckpt-tui compare-loss BASELINE RESUMED`: is the resumed run's loss curve the baseline's?

BASELINE and RESUMED are run folders (all their event files, merged: a step logged twice keeps the
latest wall time) or single event files. Pass the same folder twice when the resumed run wrote into
its baseline's folder: the newest event file is then the resumed run.

Prints a terminal plot per tag (both curves, the resume step, the difference), then the statistics.
Exit code: 0 when every tag is within tolerance, 1 when one is not (or has no step in common),
2 for bad input (one line on stderr naming the file).

JSON (``--json``, schema ``ckpt-tui.compare-loss/1``; only JSON on stdout; NaN/inf become null)::

    {
      "schema": "ckpt-tui.compare-loss/1",
      "passed": bool,                       # every tag within tolerance
      "atol": float, "rtol": float,         # pass iff |resumed - baseline| <= atol + rtol * |baseline|
      "baseline": {"path": str, "event_files": [str], "notes": [str]},
      "resumed":  {"path": str, "event_files": [str], "notes": [str]},
      "comparisons": [{
        "tag": str,
        "verdict": "match" | "diverged" | "no-overlap",
        "passed": bool, "atol": float, "rtol": float,
        "baseline_points": int, "resumed_points": int,
        "baseline_steps": [first, last] | null, "resumed_steps": [first, last] | null,
        "resume_step": int | null,          # first step the resumed run logged
        "overlap": [first, last] | null,    # first and last common step
        "compared": int,                    # common steps
        "mismatches": int,                  # common steps beyond tolerance
        "nonfinite_mismatches": int,        # of which one side is NaN/inf and the other differs
        "only_baseline": int, "only_resumed": int,   # steps in the overlap logged by one run only
        "max_abs_diff": float | null, "max_abs_diff_step": int | null,
        "mean_abs_diff": float | null, "max_rel_diff": float | null,   # over steps finite in both
        "first_divergence": {"step": int, "baseline": float | null, "resumed": float | null,
                             "diff": float | null} | null,
        "csv": str | null, "png": str | null # files written for this tag
      }]
    }
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from ckpt_tui.commands.output import console, print_json

NAME = "compare-loss"
HELP = "Compare a baseline and a resumed run's loss curves (TensorBoard): plot, statistics, verdict."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("baseline", type=Path, help="baseline run: TensorBoard folder or event file")
    p.add_argument("resumed", type=Path, help="resumed run: TensorBoard folder or event file")
    p.add_argument("--tag", action="append", metavar="TAG",
                   help="scalar tag to compare (repeatable; default: the training loss both runs have)")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default 1e-05)")
    p.add_argument("--rtol", type=float, default=None, help="relative tolerance, times |baseline| (default 0)")
    p.add_argument("--csv", type=Path, metavar="DIR", help="write DIR/<tag>.csv: step,baseline,resumed,diff")
    p.add_argument("--png", type=Path, metavar="DIR", help="write DIR/<tag>.png (needs matplotlib: ckpt-tui[png])")
    p.add_argument("--no-plot", action="store_true", help="statistics only, no terminal plot")
    p.add_argument("--plot-height", type=int, default=28, metavar="ROWS", help="terminal plot height (default 28)")
    p.add_argument("--json", action="store_true", help="emit JSON (schema ckpt-tui.compare-loss/1)")


def run(args: argparse.Namespace) -> int:
    from ckpt_tui.core import losses

    atol = losses.DEFAULT_ATOL if args.atol is None else args.atol
    rtol = losses.DEFAULT_RTOL if args.rtol is None else args.rtol
    if args.png is not None:
        losses.require_png()  # fail before reading anything
    base, resumed = losses.open_pair(args.baseline, args.resumed)
    tags = losses.pick_tags(base, resumed, args.tag)
    comparisons = [losses.compare(base.series(t), resumed.series(t), atol, rtol) for t in tags]
    names = losses.export_names(tags)
    files: dict[str, dict[str, str | None]] = {t: {"csv": None, "png": None} for t in tags}
    for cmp in comparisons:
        if args.csv is not None:
            files[cmp.tag]["csv"] = str(losses.write_csv(cmp, args.csv / f"{names[cmp.tag]}.csv"))
        if args.png is not None:
            files[cmp.tag]["png"] = str(losses.write_png(cmp, args.png / f"{names[cmp.tag]}.png"))
    passed = all(c.passed for c in comparisons)
    if args.json:
        doc = {
            "schema": "ckpt-tui.compare-loss/1",
            "passed": passed,
            "atol": atol,
            "rtol": rtol,
            "baseline": _side(base),
            "resumed": _side(resumed),
            "comparisons": [{**c.to_dict(), **files[c.tag]} for c in comparisons],
        }
        print_json(doc)
    else:
        _print_text(args, base, resumed, comparisons, files, passed)
    return 0 if passed else 1


def _side(run: Any) -> dict[str, Any]:
    return {"path": str(run.path), "event_files": [str(f.path) for f in run.files], "notes": run.all_notes()}


def _print_text(args: argparse.Namespace, base: Any, resumed: Any, comparisons: list[Any],
                files: dict[str, dict[str, str | None]], passed: bool) -> None:
    out = console()
    if not args.no_plot:
        from ckpt_tui.plots import render_comparison

        width = max(60, min(shutil.get_terminal_size((120, 40)).columns, 160))
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        for cmp in comparisons:
            sys.stdout.write(render_comparison(cmp, width, max(args.plot_height, 12), color=color) + "\n\n")
            sys.stdout.flush()
    out.print(f"baseline: {base.path}  ({_files_text(base)})")
    out.print(f"resumed:  {resumed.path}  ({_files_text(resumed)})")
    out.print(_stats_table(comparisons))
    for note in base.all_notes() + resumed.all_notes():
        out.print(f"[yellow]note:[/] {note}", markup=True)
    for cmp in comparisons:
        for kind in ("csv", "png"):
            if files[cmp.tag][kind]:
                out.print(f"wrote {files[cmp.tag][kind]}")
    for cmp in comparisons:
        style = "green" if cmp.passed else "red"
        out.print(f"[{style}]{cmp.verdict.upper()}[/] {_escape(cmp.summary())}")
    out.print("[green]PASS[/]: resumed run matches the baseline" if passed
              else "[red]FAIL[/]: resumed run does not match the baseline")


def _stats_table(comparisons: list[Any]) -> Table:
    table = Table(box=None, title="loss comparison", title_justify="left", show_header=True)
    table.add_column("", style="bold")
    for cmp in comparisons:
        table.add_column(_escape(cmp.tag), justify="right")
    rows: list[tuple[str, Any]] = [
        ("verdict", lambda c: f"[{'green' if c.passed else 'red'}]{c.verdict}[/]"),
        ("baseline steps", lambda c: _span(c.baseline) + f"  ({len(c.baseline)} pts)"),
        ("resumed steps", lambda c: _span(c.resumed) + f"  ({len(c.resumed)} pts)"),
        ("resume step", lambda c: _opt(c.resume_step)),
        ("overlap", lambda c: f"{c.overlap[0]}..{c.overlap[1]}" if c.overlap else "none"),
        ("steps compared", lambda c: str(c.compared)),
        ("beyond tolerance", lambda c: str(c.mismatches)),
        ("max |diff|", lambda c: _g(c.max_abs_diff) + _at(c.max_abs_diff_step)),
        ("mean |diff|", lambda c: _g(c.mean_abs_diff)),
        ("max rel diff", lambda c: _g(c.max_rel_diff)),
        ("first divergence", lambda c: _opt(c.first_divergence_step)),
        ("NaN/inf mismatches", lambda c: str(c.nonfinite_mismatches)),
        ("tolerance", lambda c: f"atol {c.atol:g}" + (f", rtol {c.rtol:g}" if c.rtol else "")),
    ]
    if any(c.only_baseline or c.only_resumed for c in comparisons):
        rows.append(("logged by one run only", lambda c: f"{c.only_baseline} / {c.only_resumed}"))
    for label, fn in rows:
        table.add_row(label, *(fn(c) for c in comparisons))
    return table


def _files_text(run: Any) -> str:
    n = len(run.files)
    return f"{n} event file" + ("s" if n != 1 else "")


def _span(s: Any) -> str:
    return f"{s.first_step}..{s.last_step}" if len(s) else "none"


def _at(step: int | None) -> str:
    return "" if step is None else f" @ {step}"


def _opt(x: int | None) -> str:
    return "-" if x is None else str(x)


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
