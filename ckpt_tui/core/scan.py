"""Find every checkpoint and TensorBoard run under a folder, cheaply and safely.

Bounded depth, symlinked folders followed at most once (loops are harmless), unreadable folders skipped
with a note. Entries are yielded as they are found so a UI can show them while the walk goes on.
Only names and sizes are read; no pickle, no tensor. What an entry says (step, size, detail) and whether
the walk goes on below it is up to the kind's adapter (``core/formats/registry.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ckpt_tui.core.model import Kind

if TYPE_CHECKING:
    from ckpt_tui.core.formats.registry import Adapter

SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".mypy_cache", ".pytest_cache"}


@dataclass
class ScanEntry:
    """One thing found: what it is, where, which step, how many bytes on disk."""

    kind: Kind
    path: Path
    size: int
    step: int | None = None
    tag: str | None = None
    detail: str = ""
    notes: list[str] = field(default_factory=list)
    stage: int | None = None  # ZeRO stage when the file names tell it (3: per-rank model_states), else None

    @property
    def is_run(self) -> bool:
        """A training run (losses), not a checkpoint."""
        from ckpt_tui.core.formats.registry import adapter_for

        return adapter_for(self.kind).is_run


@dataclass
class ScanReport:
    root: Path
    entries: list[ScanEntry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # folders not read, with why
    folders: int = 0  # folders visited so far (grows while the walk runs: progress on a huge tree)


def scan(root: str | Path, max_depth: int = 6, report: ScanReport | None = None) -> Iterator[ScanEntry]:
    """Yield entries under root (root itself included). Problems go to report.skipped, never raise."""
    root = Path(root)
    report = report if report is not None else ScanReport(root)
    seen: set[tuple[int, int]] = set()
    yield from _walk(root, 0, max_depth, seen, report)


def scan_all(root: str | Path, max_depth: int = 6) -> ScanReport:
    report = ScanReport(Path(root))
    report.entries = list(scan(root, max_depth, report))
    return report


def detect(path: Path) -> Adapter | None:
    """The adapter of the kind at path: the registry's detect, looked up when the walk first needs it."""
    from ckpt_tui.core.formats.registry import detect as detect_kind

    return detect_kind(path)


def _walk(folder: Path, depth: int, max_depth: int, seen: set, report: ScanReport) -> Iterator[ScanEntry]:
    try:
        st = folder.stat()
    except OSError as exc:
        report.skipped.append(f"{folder}: {exc.strerror}")
        return
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return  # already walked: a symlink loop or a second link to the same folder
    seen.add(key)
    report.folders += 1
    try:
        adapter = detect(folder)
    except Exception as exc:  # noqa: BLE001 - a scan reports and goes on
        report.skipped.append(f"{folder}: {exc}")
        adapter = None
    inside: set[str] = set()  # children that belong to the entry found here
    if adapter is not None:
        entry = adapter.scan_entry(folder, report)
        if entry is not None:
            yield entry
        walk_on = adapter.scan_inside(folder)
        if walk_on is None:
            return  # a checkpoint's own subfolders are part of it
        inside = walk_on
    if depth >= max_depth:
        return
    try:
        children = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        report.skipped.append(f"{folder}: {exc.strerror}")
        return
    for child in children:
        if child.name in SKIP_DIRS or child.name.startswith(".") or child.name in inside:
            continue
        try:
            is_dir = child.is_dir()  # follows symlinks; loops are stopped by `seen`
        except OSError:
            continue
        if is_dir:
            yield from _walk(Path(child.path), depth + 1, max_depth, seen, report)


def tree_size(folder: Path) -> int:
    """Bytes of every file under folder (symlinks counted as links, not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
