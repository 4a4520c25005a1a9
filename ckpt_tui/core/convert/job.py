"""The one job runner behind every conversion: progress events, cancellation, atomic output.

A conversion is a function ``produce(tmp_dir, control)`` that writes its output into ``tmp_dir``, calls
``control.begin(...)`` once it knows the work, ``control.advance(...)`` after each tensor, and
``control.check()`` often. :func:`run_job` gives it a temp folder beside the destination, and only when
it returns renames the folder into place and then updates pointer files. A failure, a cancel or a
Ctrl-C removes the temp folder; a kill -9 leaves it, marked with the dead pid, and the next job for the
same destination removes it. The source is only ever read.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ckpt_tui.core.errors import CkptError

TMP_TAG = ".ckpt-tui-tmp-"
OLD_TAG = ".ckpt-tui-old-"
MARKER = ".ckpt-tui-job"


class Cancelled(CkptError):
    """The user cancelled the job; nothing was written."""

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__(path, "cancelled: nothing was written")


class OutputExists(CkptError):
    """The destination exists and replacing it was not asked for (a UI can offer to, the CLI says --force)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, "already exists (use --force to replace it)")


@dataclass
class Progress:
    """A snapshot of a job, sent to listeners after every step of work."""

    phase: str = "starting"  # starting | convert | finalize | verify | done | failed | cancelled
    tensors_done: int = 0
    tensors_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    current: str | None = None
    elapsed_s: float = 0.0
    log: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        if self.bytes_total:
            return min(1.0, self.bytes_done / self.bytes_total)
        return self.tensors_done / self.tensors_total if self.tensors_total else 0.0

    @property
    def rate_bps(self) -> float:
        return self.bytes_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if not self.bytes_done or self.bytes_done >= self.bytes_total:
            return None
        return (self.bytes_total - self.bytes_done) / max(self.rate_bps, 1e-9)


Listener = Callable[[Progress], None]


class JobControl:
    """What a running conversion sees: progress reporting and the cancel flag. Thread-safe."""

    def __init__(self, listener: Listener | None = None, cancel: threading.Event | None = None) -> None:
        self.listener = listener
        self.cancel_event = cancel or threading.Event()
        self.progress = Progress()
        self._lock = threading.Lock()
        self._start = time.monotonic()

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled()

    def begin(self, tensors_total: int, bytes_total: int, phase: str = "convert") -> None:
        with self._lock:
            p = self.progress
            p.phase, p.tensors_total, p.bytes_total = phase, tensors_total, bytes_total
            p.tensors_done = p.bytes_done = 0
        self._emit()

    def working_on(self, name: str) -> None:
        with self._lock:
            self.progress.current = name
        self._emit()
        self.check()

    def advance(self, name: str, nbytes: int) -> None:
        with self._lock:
            p = self.progress
            p.tensors_done += 1
            p.bytes_done += nbytes
            p.current = name
        self._emit()
        self.check()

    def phase(self, phase: str) -> None:
        with self._lock:
            self.progress.phase = phase
        self._emit()

    def log(self, message: str) -> None:
        with self._lock:
            self.progress.log.append(message)
        self._emit()

    def _emit(self) -> None:
        if self.listener is None:
            return
        with self._lock:
            self.progress.elapsed_s = time.monotonic() - self._start
            snapshot = Progress(**{**self.progress.__dict__, "log": list(self.progress.log)})
        self.listener(snapshot)


def check_destination(src: Path, dst: Path, *, force: bool) -> None:
    """Refuse destinations that would overwrite work or write into the source."""
    src, dst = src.resolve(), dst.resolve()
    if dst == src or _inside(dst, src) and src.is_file():
        raise CkptError(dst, "is the source itself; choose another output folder")
    if _inside(src, dst):
        raise CkptError(dst, "contains the source; choose another output folder")
    if dst.exists() and not force:
        raise OutputExists(dst)
    if dst.exists() and not dst.is_dir():
        raise CkptError(dst, "exists and is not a folder")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return path != folder
    except ValueError:
        return False


def check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    margin = 16 * 1024 * 1024
    if needed + margin > free:
        raise CkptError(folder, f"not enough free space: the output needs about {needed / 1e9:.2f} GB, {free / 1e9:.2f} GB free")


def clean_stale(dst: Path) -> list[Path]:
    """Remove temp folders left beside dst by jobs whose process is gone (kill -9, power loss)."""
    removed = []
    parent = dst.parent
    if not parent.is_dir():
        return removed
    for prefix in (f".{dst.name}{TMP_TAG}", f".{dst.name}{OLD_TAG}"):
        for p in parent.glob(prefix + "*"):
            pid = p.name[len(prefix) :]
            if pid.isdigit() and _alive(int(pid)):
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_job(
    src: Path,
    dst: Path,
    produce: Callable[[Path, JobControl], None],
    *,
    control: JobControl | None = None,
    force: bool = False,
    needed_bytes: int = 0,
    after: Callable[[Path], None] | None = None,
) -> Path:
    """Run `produce` into a temp folder beside dst, then move it into place. Returns dst."""
    control = control or JobControl()
    dst = Path(dst)
    check_destination(Path(src), dst, force=force)
    created = [p for p in (dst.parent, *dst.parent.parents) if not p.exists()]  # deepest first
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}{TMP_TAG}{os.getpid()}"
    try:
        for stale in clean_stale(dst):
            control.log(f"removed a temp folder left by an interrupted job: {stale.name}")
        check_free_space(dst.parent, needed_bytes)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        (tmp / MARKER).write_text(f"pid {os.getpid()}\nsource {Path(src).resolve()}\n")
        produce(tmp, control)
        control.check()
        control.phase("finalize")
        (tmp / MARKER).unlink()
        _move_into_place(tmp, dst)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)  # folders made for the output: a failed job leaves no trace
        control.phase("cancelled" if isinstance(exc, (Cancelled, KeyboardInterrupt)) else "failed")
        raise
    if after is not None:
        after(dst)
    control.phase("done")
    return dst


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; stops at the first one something else has written into
        try:
            folder.rmdir()
        except OSError:
            return


def leftovers(dst: Path) -> list[Path]:
    """Temp folders of jobs for dst that are still beside it (none once a job has ended, whatever its end)."""
    parent = Path(dst).parent
    if not parent.is_dir():
        return []
    return sorted(p for tag in (TMP_TAG, OLD_TAG) for p in parent.glob(f".{Path(dst).name}{tag}*"))


def _move_into_place(tmp: Path, dst: Path) -> None:
    if not dst.exists():
        os.rename(tmp, dst)
        return
    old = dst.parent / f".{dst.name}{OLD_TAG}{os.getpid()}"
    os.rename(dst, old)  # --force: keep the old output until the new one is in place
    try:
        os.rename(tmp, dst)
    except BaseException:
        os.rename(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_pointer(folder: Path, name: str, tag: str) -> None:
    """Atomically write a `latest`/`latest_universal` file."""
    tmp = folder / f".{name}{TMP_TAG}{os.getpid()}"
    tmp.write_text(tag)
    os.replace(tmp, folder / name)
