"""A conversion (and the verification after it) as the app runs it: in a worker thread, one at a time.

No Textual here: a job runs core.convert / core.verify with a JobControl whose listener keeps the latest
progress snapshot and calls ``changed`` at most every UI_INTERVAL seconds (and at every change of phase
or state), from the worker thread. The app turns that call into a message, so the UI redraws at a
bounded rate however small the tensors are, and the worker never waits for the UI.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ckpt_tui.core.convert.api import ConvertOptions, convert
from ckpt_tui.core.convert.job import Cancelled, JobControl, Progress, leftovers
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.model import Checkpoint

if TYPE_CHECKING:
    from ckpt_tui.core.verify import VerifyReport

UI_INTERVAL = 0.1  # seconds between two redraws caused by progress events

TARGET_LABELS = {"hf": "HF safetensors", "universal": "DeepSpeed universal"}


@dataclass
class ConvertRequest:
    """What the Convert dialog hands over once everything in it checked out."""

    source: Checkpoint
    output: Path
    target: str
    options: ConvertOptions
    force: bool = False

    @property
    def compare_dtype(self) -> str | None:
        """The dtype a verification compares in: the cast asked for, else none (exact)."""
        return self.options.dtype if self.target == "hf" else None


@dataclass
class Stage:
    """One run in a worker (the conversion, or the verification after it)."""

    state: str = "idle"  # idle | running | done | failed | cancelled
    progress: Progress = field(default_factory=Progress)
    error: str | None = None
    control: JobControl | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")


class ConvertJob:
    """One conversion of request.source into request.output, then (on demand) its verification."""

    def __init__(self, request: ConvertRequest, changed: Callable[[ConvertJob], None] | None = None) -> None:
        self.request = request
        self._changed = changed
        self._lock = threading.Lock()
        self._last_emit = 0.0
        self._last_phase = ""
        self.existed_before = request.output.exists()
        self.convert = Stage()
        self.verify = Stage()
        self.report: VerifyReport | None = None
        self.left_behind: list[str] = []  # what a failed or cancelled job left (should stay empty)

    # ------------------------------------------------------------------------------ state for the UI

    @property
    def output(self) -> Path:
        return self.request.output

    @property
    def running(self) -> bool:
        return self.convert.running or self.verify.running

    @property
    def succeeded(self) -> bool:
        return self.convert.state == "done"

    def cancel(self) -> None:
        """Ask the running stage to stop at its next check (between two tensors)."""
        for stage in (self.convert, self.verify):
            if stage.running and stage.control is not None:
                stage.control.cancel()
        self._emit(force=True)

    @property
    def cancelling(self) -> bool:
        stage = self.verify if self.verify.running else self.convert
        return stage.running and stage.control is not None and stage.control.cancelled

    # -------------------------------------------------------------------------------- worker side

    def start_convert(self) -> None:
        """Mark the conversion as started (on the UI thread, before the worker runs run_convert)."""
        self.convert = self._new_stage()

    def _new_stage(self) -> Stage:
        stage = Stage(state="running")
        stage.control = JobControl(self._listener(stage))
        return stage

    def run_convert(self) -> None:
        """The conversion, in a worker thread. Never raises: the outcome is in self.convert."""
        req, stage = self.request, self.convert
        assert stage.control is not None
        try:
            convert(req.source, req.output, req.target, req.options, control=stage.control, force=req.force)
        except Cancelled:
            self._finish(stage, "cancelled")
        except CkptError as exc:
            self._finish(stage, "failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug in ckpt-tui: shown, not a crash of the app
            self._finish(stage, "failed", f"internal error: {type(exc).__name__}: {exc}")
        else:
            self._finish(stage, "done")

    def start_verify(self) -> None:
        self.report = None
        self.verify = self._new_stage()

    def run_verify(self) -> None:
        """core.verify(source, output) in a worker thread, in the dtype the output was cast to."""
        from ckpt_tui.core.verify import verify  # torch: only now, in the worker

        stage = self.verify
        assert stage.control is not None
        try:
            report = verify(
                self.request.source, self.output, compare_dtype=self.request.compare_dtype, control=stage.control
            )
        except Cancelled:
            self._finish(stage, "cancelled")
        except CkptError as exc:
            self._finish(stage, "failed", str(exc))
        except Exception as exc:  # noqa: BLE001
            self._finish(stage, "failed", f"internal error: {type(exc).__name__}: {exc}")
        else:
            self.report = report
            self._finish(stage, "done")

    def _listener(self, stage: Stage) -> Callable[[Progress], None]:
        def listen(progress: Progress) -> None:
            with self._lock:
                stage.progress = progress
            self._emit(phase=progress.phase)

        return listen

    def _finish(self, stage: Stage, state: str, error: str | None = None) -> None:
        if stage is self.convert and state != "done":
            self.left_behind = self._left_behind()
        with self._lock:
            stage.state, stage.error = state, error
        self._emit(force=True)

    def _left_behind(self) -> list[str]:
        """What a failed or cancelled conversion left on disk: nothing, unless something is wrong."""
        found = [str(p) for p in leftovers(self.output)]
        if self.output.exists() and not self.existed_before:
            found.insert(0, str(self.output))
        return found

    def _emit(self, *, phase: str | None = None, force: bool = False) -> None:
        """Tell the UI, at most every UI_INTERVAL (always on a new phase or a final state)."""
        now = time.monotonic()
        with self._lock:
            new_phase = phase is not None and phase != self._last_phase
            if phase is not None:
                self._last_phase = phase
            if not (force or new_phase or now - self._last_emit >= UI_INTERVAL):
                return
            self._last_emit = now
        if self._changed is not None:
            self._changed(self)
