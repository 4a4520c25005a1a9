"""`ckpt-tui runs DIR`: the TensorBoard runs under DIR, their event files, and each tag's steps and range.

A run is a folder that directly holds event files. Each event file is listed with its own step range,
because a resumed run that wrote into its baseline's folder shows up as a second file starting at the
resume step. Tags are listed per run after merging its files (a step logged twice counts once, latest
wall time wins). Loss tags are marked, and the one compare-loss picks by default is starred.

Exit code 0, or 2 when a run could not be read (each such run: one line on stderr; the others are
still listed).

JSON (``--json``, schema ``ckpt-tui.runs/1``; only JSON on stdout; NaN/inf values become null)::

    {
      "schema": "ckpt-tui.runs/1",
      "root": str,
      "runs": [{
        "path": str, "relpath": str,
        "error": str | null,                 # set when the run could not be read (then no files/tags)
        "default_loss_tag": str | null,
        "notes": [str],                      # truncated tails, empty files
        "event_files": [{"name": str, "size": int, "records": int, "points": int,
                         "first_step": int | null, "last_step": int | null,
                         "first_wall_time": float | null, "last_wall_time": float | null,
                         "truncated_bytes": int}],
        "tags": [{"tag": str, "points": int, "first_step": int, "last_step": int,
                  "first_value": float | null, "last_value": float | null,
                  "min_value": float | null, "max_value": float | null,
                  "loss": "train" | "validation" | null}]
      }]
    }
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from ckpt_tui.commands.output import console, human_bytes, human_count, print_json
from ckpt_tui.core.errors import CkptError

NAME = "runs"
HELP = "List TensorBoard runs under DIR: event files, scalar tags, their steps and value ranges."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="folder to search (or one event file)")
    p.add_argument("--json", action="store_true", help="emit JSON (schema ckpt-tui.runs/1)")


def run(args: argparse.Namespace) -> int:
    from ckpt_tui.core.formats.tensorboard import find_runs, is_event_file

    root: Path = args.dir
    if not root.exists():
        raise CkptError(root, "no such file or folder")
    if root.is_file() and not is_event_file(root):
        raise CkptError(root, "not a TensorBoard event file or folder")
    if root.is_file():
        runs = [_describe(root.parent, root)]
    else:
        runs = [_describe(root, folder) for folder in find_runs(root)]
    if not runs:
        raise CkptError(root, "no TensorBoard event files (events.out.tfevents.*) under this folder")
    if args.json:
        doc = {"schema": "ckpt-tui.runs/1", "root": str(root), "runs": runs}
        print_json(doc)
    else:
        _print_text(root, runs)
    errors = [r for r in runs if r["error"]]
    for r in errors:
        print(f"ckpt-tui: error: {r['error']}", file=sys.stderr)
    return 2 if errors else 0


def _describe(root: Path, path: Path) -> dict[str, Any]:
    """One run (a folder, or a single event file) as the JSON-safe dict of the schema."""
    import numpy as np

    from ckpt_tui.core.formats.tensorboard import merge_files, read_scalars
    from ckpt_tui.core.losses import default_loss_tag, loss_kind

    entry: dict[str, Any] = {
        "path": str(path),
        "relpath": os.path.relpath(path, root) if path != root else ".",
        "error": None,
        "default_loss_tag": None,
        "notes": [],
        "event_files": [],
        "tags": [],
    }
    try:
        files = read_scalars(path)
    except CkptError as exc:
        entry["error"] = str(exc)
        return entry
    for f in files:
        span = f.step_range
        entry["event_files"].append({
            "name": f.path.name,
            "size": f.size,
            "records": f.records,
            "points": f.points,
            "first_step": span[0] if span else None,
            "last_step": span[1] if span else None,
            "first_wall_time": f.first_wall_time,
            "last_wall_time": f.last_wall_time,
            "truncated_bytes": f.truncated_bytes,
        })
        entry["notes"].extend(f.notes)
    entry["notes"].extend(_overlap_notes(files))
    for tag, pts in sorted(merge_files(files).items()):
        finite = pts.values[np.isfinite(pts.values)]
        entry["tags"].append({
            "tag": tag,
            "points": len(pts),
            "first_step": int(pts.steps[0]),
            "last_step": int(pts.steps[-1]),
            "first_value": _num(pts.values[0]),
            "last_value": _num(pts.values[-1]),
            "min_value": _num(finite.min()) if finite.size else None,
            "max_value": _num(finite.max()) if finite.size else None,
            "loss": loss_kind(tag),
        })
    entry["default_loss_tag"] = default_loss_tag(t["tag"] for t in entry["tags"])
    return entry


def _overlap_notes(files: list[Any]) -> list[str]:
    """A later event file that starts at or before an earlier one's last step: a restart, or a resumed
    run sharing the folder. Say so, since the merged tags hide it."""
    notes, last = [], None
    for f in files:
        span = f.step_range
        if span is None:
            continue
        if last is not None and span[0] <= last:
            notes.append(
                f"{f.path.name} restarts at step {span[0]} (earlier files reach {last}): a restart or a resumed "
                "run in the same folder; tags merge with the latest point per step"
            )
        last = span[1] if last is None else max(last, span[1])
    return notes


def _print_text(root: Path, runs: list[dict[str, Any]]) -> None:
    from rich.markup import escape

    out = console()
    out.print(f"{len(runs)} TensorBoard run(s) under {escape(str(root))}")
    for r in runs:
        out.print()
        if r["error"]:
            out.print(f"[bold]{escape(r['relpath'])}[/]  [red]unreadable:[/] {escape(r['error'])}")
            continue
        n_files = len(r["event_files"])
        out.print(f"[bold]{escape(r['relpath'])}[/]  {n_files} event file{'s' if n_files != 1 else ''}, "
                  f"{len(r['tags'])} tag{'s' if len(r['tags']) != 1 else ''}")
        files = Table(box=None, show_header=True, padding=(0, 2, 0, 0))
        for col, justify in (("event file", "left"), ("size", "right"), ("points", "right"), ("steps", "right")):
            files.add_column(col, justify=justify, style="dim")  # type: ignore[arg-type]
        for f in r["event_files"]:
            steps = "-" if f["first_step"] is None else f"{f['first_step']}..{f['last_step']}"
            files.add_row(escape(f["name"]), human_bytes(f["size"]), human_count(f["points"]), steps)
        out.print(files)
        if r["tags"]:
            tags = Table(box=None, show_header=True, padding=(0, 2, 0, 0))
            for col, justify in (("tag", "left"), ("points", "right"), ("steps", "right"),
                                 ("first", "right"), ("last", "right"), ("min", "right"), ("loss", "left")):
                tags.add_column(col, justify=justify)  # type: ignore[arg-type]
            for t in r["tags"]:
                star = " *" if t["tag"] == r["default_loss_tag"] else ""
                tags.add_row(
                    escape(t["tag"]), human_count(t["points"]), f"{t['first_step']}..{t['last_step']}",
                    _g(t["first_value"]), _g(t["last_value"]), _g(t["min_value"]), (t["loss"] or "") + star,
                )
            out.print(tags)
        for note in r["notes"]:
            out.print(f"[yellow]note:[/] {escape(note)}")
    if any(r["default_loss_tag"] for r in runs):
        out.print("\n* the tag compare-loss uses by default")


def _num(x: Any) -> float | None:
    x = float(x)
    return x if x == x and x not in (float("inf"), float("-inf")) else None


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.5g}"
