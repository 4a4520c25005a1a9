"""The conversion panel: a live bar while a job runs, then its outcome and the verification's verdict.

It docks under the body of the browser and of checkpoint screens. Every screen shows the app's one job,
so a conversion started on one screen is followed (and cancelled) from any other.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from ckpt_tui.core.convert.job import Progress
from ckpt_tui.tui.format import display_path, human_bytes, number, plural
from ckpt_tui.tui.jobs import TARGET_LABELS, ConvertJob, Stage

TALL = 36  # rows: from this screen height on, the panel also shows the job's log
LOG_LINES = 3
STATE_STYLE = {"running": "bold", "done": "bold green", "failed": "bold red", "cancelled": "bold yellow"}


class JobPanel(Static):
    """What the app's conversion job is doing or did. Hidden while there is none."""

    DEFAULT_CSS = """
    JobPanel {
        height: auto;
        padding: 0 1;
        border-top: hkey $panel-lighten-2;
    }
    """

    def __init__(self, root: Path, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.root = Path(root)
        self.job: ConvertJob | None = None

    def on_mount(self) -> None:
        self.show(getattr(self.app, "job", None))

    def show(self, job: ConvertJob | None) -> None:
        self.job = job
        self.display = job is not None
        self.screen.set_class(job is not None, "-job")  # the screen may give the panel room
        self.refresh(layout=True)

    # ------------------------------------------------------------------------------------ drawing

    def render(self) -> RenderableType:
        job = self.job
        if job is None:
            return Text("")
        width = self.content_region.width or self.size.width or 80
        tall = self.app.size.height >= TALL
        stage = job.convert
        rows: list[RenderableType] = [self._title(job)]
        if stage.state == "failed":
            rows.append(self._reason(stage.error or "", width))
        rows += [self._bar(stage.progress, stage.state, width), self._detail(job)]
        if job.succeeded:
            rows.append(self._verify(job, width))
        if tall:  # room for how it was asked, and what the converter said on the way
            options = Text.assemble(("options  ", "dim"), (options_text(job), "dim"), no_wrap=True, overflow="ellipsis")
            rows.append(options)
            for line in stage.progress.log[-LOG_LINES:]:
                rows.append(Text.assemble(("log      ", "dim"), (line, "dim"), no_wrap=True, overflow="ellipsis"))
        return Group(*rows)

    def _path(self, path: Path) -> str:
        return display_path(path, self.root)

    def _title(self, job: ConvertJob) -> Text:
        req, stage = job.request, job.convert
        target = TARGET_LABELS.get(req.target, req.target)
        style = STATE_STYLE.get(stage.state, "bold")
        if stage.running:
            head = "Cancelling…" if job.cancelling else f"Converting to {target}"
            text = Text.assemble((head, style), "  ", self._path(req.source.path), " → ", self._path(req.output))
        elif stage.state == "done":
            text = Text.assemble((f"✓ Converted to {target}", style), "  ", self._path(req.output))
        elif stage.state == "cancelled":
            text = Text.assemble(("■ Cancelled, nothing written", style), "  ", self._path(req.output))
        else:
            text = Text.assemble(("✗ Conversion failed", style), "  ", self._path(req.output))
        text.no_wrap, text.overflow = True, "ellipsis"
        return text

    @staticmethod
    def _reason(error: str, width: int, lines: int = 2) -> Text:
        """The error in full when it fits in `lines` rows (a torch message can be a paragraph)."""
        room = max(20, width * lines)
        if len(error) > room:
            error = error[: room - 1] + "…"
        return Text(error, style="red")

    @staticmethod
    def _bar(p: Progress, state: str, width: int, label: str = "") -> Table:
        done = state == "done"
        fraction = 1.0 if done else p.fraction
        color = {"failed": "red", "cancelled": "yellow"}.get(state, "magenta")
        counts = f"{p.tensors_done}/{p.tensors_total} tensors" if p.tensors_total else "reading the source…"
        if p.bytes_total:
            counts += f" · {human_bytes(p.bytes_done)} / {human_bytes(p.bytes_total)}"
        bar_width = max(10, min(48, width // 3))
        grid = Table.grid(padding=(0, 1))
        if label:
            grid.add_column(no_wrap=True, style="dim")
        grid.add_column(width=bar_width, no_wrap=True)
        grid.add_column(width=4, justify="right", no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        bar = ProgressBar(
            total=1000, completed=int(1000 * fraction), width=bar_width, complete_style=color,
            finished_style="green" if done else color,
        )
        cells: list[RenderableType] = [label] if label else []
        grid.add_row(*cells, bar, f"{int(100 * fraction)}%", counts)
        return grid

    def _detail(self, job: ConvertJob) -> Text:
        stage, p = job.convert, job.convert.progress
        if stage.running:
            if p.phase == "finalize":
                return Text("moving the output into place…", style="dim")
            parts = []
            if p.bytes_done:
                parts.append(f"{human_bytes(p.rate_bps)}/s")
            if p.eta_s is not None:
                parts.append(f"ETA {duration(p.eta_s)}")
            parts.append(p.current or "starting…")
            return Text(" · ".join(parts), no_wrap=True, overflow="ellipsis")
        if stage.state == "done":
            rate = f" ({human_bytes(p.rate_bps)}/s)" if p.elapsed_s > 0 and p.bytes_done else ""
            source = self._path(job.request.source.path)
            text = f"{human_bytes(p.bytes_done)} in {duration(p.elapsed_s)}{rate} · from {source}"
            return Text(text, no_wrap=True, overflow="ellipsis")
        # cancelled or failed: say what is (not) on disk, as checked after the job ended
        if job.left_behind:
            left = "left behind: " + ", ".join(job.left_behind)
            return Text(left, style="bold red", no_wrap=True, overflow="ellipsis")
        where = (
            f"{self._path(job.output)} is as it was"
            if job.existed_before
            else f"nothing written: no {self._path(job.output)}"
        )
        stopped = f" · stopped after {plural(p.tensors_done, 'tensor')}" if p.tensors_done else ""
        return Text(f"{where}, no temp folder left{stopped}", no_wrap=True, overflow="ellipsis")

    def _verify(self, job: ConvertJob, width: int) -> RenderableType:
        stage: Stage = job.verify
        cast = f", compared as {job.request.compare_dtype}" if job.request.compare_dtype else ""
        if stage.state == "idle":
            return Text("v: verify the output against the source, tensor by tensor" + cast, style="dim")
        if stage.running:
            return self._bar(stage.progress, "running", width, label="verify")
        if stage.state == "cancelled":
            return Text.assemble(("verify ", "dim"), ("cancelled", "yellow"))
        if stage.state == "failed" or job.report is None:
            return Text.assemble(("verify ", "dim"), ("failed: ", "bold red"), stage.error or "", no_wrap=True)
        r = job.report
        verdict = Text(" MATCH ", style="reverse bold green") if r.ok else Text(" DIFFER ", style="reverse bold red")
        worst = r.worst
        where = f" ({worst.name})" if worst is not None and worst.max_abs_diff else ""
        facts = (
            f"{plural(len(r.compared), 'tensor')} compared{cast}: {r.bitwise_equal_count} bitwise equal, "
            f"max |diff| {number(r.max_abs_diff)}{where}"
        )
        if r.problems:
            facts += f" · {len(r.problems)} beyond atol {r.atol:g}"
        return Text.assemble(("verify ", "dim"), verdict, " ", facts, no_wrap=True, overflow="ellipsis")


def options_text(job: ConvertJob) -> str:
    """The options the job runs with, defaults spelled out: 'dtype kept · one file · 2 workers'."""
    req, o = job.request, job.request.options
    parts: list[str] = []
    if req.target == "hf":
        parts.append(f"dtype {o.dtype}" if o.dtype else "dtype kept")
        parts.append(f"shards of at most {human_bytes(o.max_shard_size)}" if o.max_shard_size else "one file")
    else:
        parts.append(f"step {o.step}" if o.step is not None else "the source's step")
        parts.append(f"ZeRO-{o.stage} layout" if o.stage else "the source's ZeRO layout")
    parts.append(plural(o.workers, "worker"))
    if req.force:
        parts.append("replacing an existing output")
    return " · ".join(parts)


def duration(seconds: float) -> str:
    """0.4 s, 12 s, 3m 05s, 2h 07m."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
