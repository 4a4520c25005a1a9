"""The TensorBoard run kind: finding event files and the scan entry, without numpy or protobuf.

A run is not a checkpoint (its adapter has no `read`): the browser badges it, `compare-loss` and the
Losses screen read it through :mod:`ckpt_tui.core.formats.tensorboard`, imported only when needed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats.registry import Adapter
from ckpt_tui.core.model import Kind
from ckpt_tui.core.scan import ScanEntry, ScanReport

EVENT_MARK = "tfevents"
_NAME_TIME = re.compile(r"tfevents\.(\d+)")


def is_event_file(path: Path) -> bool:
    """A TensorBoard event file is named ``events.out.tfevents.<time>.<host>...``."""
    return EVENT_MARK in Path(path).name and Path(path).is_file()


def find_event_files(dir: Path) -> list[Path]:
    """Event files directly in ``dir``, oldest first (by the start time in the name, then name)."""
    dir = Path(dir)
    try:
        children = list(dir.iterdir())
    except OSError as exc:
        raise CkptError(dir, exc.strerror or str(exc)) from None
    return sorted((p for p in children if is_event_file(p)), key=_start_key)


def find_runs(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) that hold event files: TensorBoard's notion of a run.

    Symlinked folders are not followed (no loops) and unreadable folders are skipped.
    """
    root = Path(root)
    if is_event_file(root):
        return [root.parent]
    runs = []
    for folder, _dirs, names in os.walk(root):
        if any(EVENT_MARK in name and os.path.isfile(os.path.join(folder, name)) for name in names):
            runs.append(Path(folder))
    return sorted(runs)


def _start_key(path: Path) -> tuple[int, list[Any]]:
    """Start time from the name, then a natural sort of the name (writer counter ``.9`` before ``.10``)."""
    m = _NAME_TIME.search(path.name)
    natural = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]
    return (int(m.group(1)) if m else 0, natural)


def detect(path: Path) -> bool:
    if path.is_dir():
        return bool(find_event_files(path))
    return path.is_file() and is_event_file(path)


def scan_entry(folder: Path, report: ScanReport) -> ScanEntry:
    from ckpt_tui.core.formats.tensorboard import read_run_log

    try:
        run = read_run_log(folder)
    except Exception as exc:  # noqa: BLE001 - a scan reports and goes on
        report.skipped.append(f"{folder}: {exc}")
        files = find_event_files(folder)
        return ScanEntry(Kind.TENSORBOARD, folder, sum(f.stat().st_size for f in files), notes=[str(exc)])
    tags = ", ".join(t.tag for t in run.tags[:4]) + (" ..." if len(run.tags) > 4 else "")
    return ScanEntry(Kind.TENSORBOARD, folder, run.files_bytes, run.last_step, detail=f"{len(run.tags)} tag(s): {tags}")


ADAPTER = Adapter(
    kind=Kind.TENSORBOARD,
    label="TensorBoard run",
    short="tensorboard",
    color="blue",
    detect=detect,
    priority=90,  # last: a checkpoint folder with an event file in it is a checkpoint
    scan_entry=scan_entry,
)
