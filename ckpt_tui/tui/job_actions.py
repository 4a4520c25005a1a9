"""The conversion keys, shared by the screens that show the job panel (browser and checkpoint).

A screen lists JOB_BINDINGS in its own BINDINGS (so help and the palette show them), mixes in
JobActions, says what it would convert (convert_source) and asks job_check from its check_action.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual.binding import Binding

from ckpt_tui.core.model import Checkpoint

if TYPE_CHECKING:
    from ckpt_tui.tui.app import CkptApp

JOB_ACTIONS = ("convert", "cancel_job", "verify_job", "open_result")

JOB_BINDINGS = [
    Binding("x", "convert", "Convert"),
    # ctrl+c stops the running job from anywhere on the screen (priority: even from a text field), and
    # copies selected text as usual when no job runs.
    Binding("ctrl+c", "cancel_job", "Cancel job", priority=True),
    Binding("ctrl+c", "screen.copy_text", show=False),
    Binding("v", "verify_job", "Verify"),
    Binding("o", "open_result", "Open output"),
]


class JobActions:
    """Actions behind JOB_BINDINGS; the app owns the job itself (it outlives the screen)."""

    app: CkptApp

    def convert_source(self) -> Checkpoint | Path | None:
        """What `x` converts here: a checkpoint read already, or the path of one. None: nothing."""
        raise NotImplementedError

    def job_check(self, action: str) -> bool | None:
        """check_action for the job actions (None for any other action)."""
        job = self.app.job
        if action == "convert":  # hidden while a job runs: one at a time, and the footer needs the room
            return self.convert_source() is not None and not (job is not None and job.running)
        if action == "cancel_job":
            return job is not None and job.running
        if action == "verify_job":
            return job is not None and job.succeeded and not job.running
        if action == "open_result":
            return job is not None and job.succeeded and not self.app.showing_output(job)
        if action == "close_job":
            return job is not None and not job.running
        return None

    def action_convert(self) -> None:
        source = self.convert_source()
        if source is not None:
            self.app.open_convert_dialog(source)

    def action_cancel_job(self) -> None:
        self.app.cancel_job()

    def action_verify_job(self) -> None:
        self.app.verify_job()

    def action_open_result(self) -> None:
        self.app.open_job_output()

    def action_close_job(self) -> None:
        self.app.close_job()
