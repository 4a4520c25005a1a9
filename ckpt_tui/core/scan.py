"""Find every checkpoint and TensorBoard run under a folder, cheaply and safely.

Bounded depth, symlinked folders followed at most once (loops are harmless), unreadable folders skipped
with a note. Entries are yielded as they are found so a UI can show them while the walk goes on.
Only names and sizes are read; no pickle, no tensor.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ckpt_tui.core.formats import deepspeed_common as dc
from ckpt_tui.core.formats.deepspeed_zero import tag_dirs
from ckpt_tui.core.inspect import detect
from ckpt_tui.core.model import Kind

SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".mypy_cache", ".pytest_cache"}
HF_STEP = re.compile(r"checkpoint-(\d+)$")


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
        kind = detect(folder)
    except Exception as exc:  # noqa: BLE001 - a scan reports and goes on
        report.skipped.append(f"{folder}: {exc}")
        kind = None
    inside: set[str] = set()  # children that belong to the entry found here
    if kind is not None:
        entry = _entry(folder, kind, report)
        if entry is not None:
            yield entry
        if kind is not Kind.DS_ZERO:
            return  # a checkpoint's own subfolders are part of it; ZeRO save dirs may hold universal folders
        inside = {t.name for t in tag_dirs(folder)}
        if not inside:
            return  # a tag folder
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


def _entry(folder: Path, kind: Kind, report: ScanReport) -> ScanEntry | None:
    if kind is Kind.DS_ZERO:
        return _zero_entry(folder)
    if kind is Kind.TENSORBOARD:
        return _tensorboard_entry(folder, report)
    size = _tree_size(folder)
    if kind is Kind.DS_UNIVERSAL:
        folder_real, tag = _universal_target(folder)
        return ScanEntry(kind, folder_real, _tree_size(folder_real), dc.step_from_tag(tag), tag)
    step = _hf_step(folder)
    shards = sum(1 for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    return ScanEntry(kind, folder, size, step, detail=f"{shards} weight file(s)")


def _zero_entry(folder: Path) -> ScanEntry:
    tags = tag_dirs(folder)
    if not tags:  # the folder is itself a tag folder
        name = folder.name
        return ScanEntry(
            Kind.DS_ZERO, folder, _tree_size(folder), dc.step_from_tag(name), name, stage=_zero_stage(folder)
        )
    try:
        newest = dc.read_pointer(folder, dc.LATEST) or tags[-1].name
    except Exception:  # noqa: BLE001 - a broken pointer is reported by inspect, not by scan
        newest = tags[-1].name
    size = sum(_tree_size(t) for t in tags)
    names = ", ".join(t.name for t in tags)
    newest_dir = folder / newest if (folder / newest).is_dir() else tags[-1]
    return ScanEntry(
        Kind.DS_ZERO,
        folder,
        size,
        dc.step_from_tag(newest),
        newest,
        detail=f"{len(tags)} tag(s): {names}",
        stage=_zero_stage(newest_dir),
    )


def _zero_stage(tag_dir: Path) -> int | None:
    """3 when the tag folder has per-rank model_states (zero_pp_rank_*_model_states.pt), a ZeRO-3 layout.

    Stages 0-2 share their file names; telling them apart needs a pickle, which a scan never reads.
    """
    try:
        names = os.listdir(tag_dir)
    except OSError:
        return None
    return 3 if any(dc.ZERO3_MODEL_STATES.match(n) for n in names) else None


def _universal_target(folder: Path) -> tuple[Path, str]:
    from ckpt_tui.core.formats.deepspeed_universal import resolve

    try:
        return resolve(folder)
    except Exception:  # noqa: BLE001
        return folder, folder.name


def _tensorboard_entry(folder: Path, report: ScanReport) -> ScanEntry | None:
    from ckpt_tui.core.formats import tensorboard

    try:
        run = tensorboard.read_run_log(folder)
    except Exception as exc:  # noqa: BLE001
        report.skipped.append(f"{folder}: {exc}")
        files = tensorboard.find_event_files(folder)
        return ScanEntry(Kind.TENSORBOARD, folder, sum(f.stat().st_size for f in files), notes=[str(exc)])
    tags = ", ".join(t.tag for t in run.tags[:4]) + (" ..." if len(run.tags) > 4 else "")
    return ScanEntry(Kind.TENSORBOARD, folder, run.files_bytes, run.last_step, detail=f"{len(run.tags)} tag(s): {tags}")


def _hf_step(folder: Path) -> int | None:
    state = folder / "trainer_state.json"
    if state.is_file():
        try:
            return int(json.loads(state.read_text())["global_step"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    match = HF_STEP.search(folder.name)
    return int(match.group(1)) if match else None


def _tree_size(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
