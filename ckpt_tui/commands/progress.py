"""Render job progress on stderr: a live bar on a terminal, a few plain lines in logs and CI."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from ckpt_tui.commands.output import human_bytes
from ckpt_tui.core.convert.job import JobControl
from ckpt_tui.core.convert.job import Progress as JobProgress


@contextmanager
def progress_control(label: str, *, quiet: bool = False) -> Iterator[JobControl]:
    """A JobControl whose events draw a progress bar (tty) or print a line every ~10% (not a tty)."""
    err = Console(stderr=True, highlight=False)
    if quiet:
        yield JobControl()
        return
    if not err.is_terminal:
        state = {"next": 0.1}

        def log_line(p: JobProgress) -> None:
            if p.phase in ("convert", "verify") and p.fraction >= state["next"]:
                state["next"] = p.fraction + 0.1
                print(
                    f"{label}: {p.phase} {p.tensors_done}/{p.tensors_total} tensors, "
                    f"{human_bytes(p.bytes_done)}/{human_bytes(p.bytes_total)}",
                    file=sys.stderr,
                )

        yield JobControl(log_line)
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}", style="dim"),
        console=err,
        transient=True,
    )
    with bar:
        task = bar.add_task(label, total=1, current="")
        last = [0.0]

        def update(p: JobProgress) -> None:
            now = time.monotonic()
            if now - last[0] < 0.05 and p.tensors_done < p.tensors_total:
                return  # a redraw per tensor would cost more than small tensors do
            last[0] = now
            bar.update(
                task,
                description=f"{label} ({p.phase})",
                total=max(p.bytes_total, 1),
                completed=p.bytes_done,
                current=(p.current or "")[-40:],
            )

        yield JobControl(update)
