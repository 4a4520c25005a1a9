"""Any worker failure is shown: a screen never stays 'loading' because its worker raised.

Workers catch :class:`~ckpt_tui.core.errors.CkptError` (a problem with the user's files) and show it
their own way. Anything else is a bug in ckpt-tui; this mixin turns it into the same kind of message,
through the screen's own ``show_failure`` (which clears its loading state), plus a note to report it.
"""

from __future__ import annotations

from textual.worker import Worker, WorkerState


def internal_error_message(error: BaseException | None) -> str:
    what = f"{type(error).__name__}: {error}" if error is not None else "unknown error"
    return f"internal error ({what}); please report it"


class ShowsWorkerFailures:
    """Mixin for screens that run workers (put it before Screen in the bases)."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self.show_failure(internal_error_message(event.worker.error))

    def show_failure(self, message: str) -> None:
        """Show why the work failed. Screens with a loading state override this to clear it."""
        self.notify(message, title="Failed", severity="error")  # type: ignore[attr-defined]
