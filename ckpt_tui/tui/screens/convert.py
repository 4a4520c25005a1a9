"""Convert dialog: target format, output folder and options, checked by the core's rules before starting.

The dialog runs nothing itself: once every check of ``core.convert.api.check_request`` passes (the rules
``ckpt-tui convert`` applies), it hands a ConvertRequest back and the app runs the job.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static
from textual.worker import get_current_worker

from ckpt_tui.core.convert.api import (
    DEFAULT_WORKERS,
    DTYPES,
    STAGES,
    ConvertOptions,
    check_request,
    default_output,
    default_stage,
)
from ckpt_tui.core.convert.job import OutputExists
from ckpt_tui.core.convert.safetensors_out import parse_size
from ckpt_tui.core.errors import CkptError, OptionError
from ckpt_tui.core.formats.registry import adapter_for
from ckpt_tui.core.model import Checkpoint
from ckpt_tui.tui.screens.worker_failures import ShowsWorkerFailures
from ckpt_tui.tui.format import display_path, human_bytes, kind_label, plural, short_dtype
from ckpt_tui.tui.jobs import TARGET_LABELS, ConvertRequest

KEEP = "keep"  # Select value: no dtype cast / the source's stage
FIELD_OF_OPTION = {  # the field an OptionError's option belongs to
    "target": "target",
    "dtype": "dtype",
    "max_shard_size": "shard",
    "step": "step",
    "stage": "stage",
    "workers": "workers",
}


class Problem(Exception):
    """Why the dialog cannot start yet, and which field to fix."""

    def __init__(self, field: str, message: str, *, exists: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.exists = exists


class ConvertDialog(ShowsWorkerFailures, ModalScreen[ConvertRequest | None]):
    """Pick a target, an output folder and options; Enter starts once they check out."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("f2", "start", "Start"),
    ]

    def __init__(self, source: Checkpoint | Path, root: Path) -> None:
        super().__init__()
        self.root = Path(root)
        self.source: Checkpoint | None = source if isinstance(source, Checkpoint) else None
        self.source_path = source.path if isinstance(source, Checkpoint) else Path(source)
        self._auto_output: str | None = None  # the default shown; None once the user typed their own
        self._ready = False
        self.problem: Problem | None = None  # what stops a start now

    # ------------------------------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        with Vertical(id="convert-dialog"):
            title = Text.assemble(("Convert  ", "bold"), display_path(self.source_path, self.root))
            yield Static(title, id="convert-title")
            yield Static(Text("reading the checkpoint…", style="dim"), id="convert-source")
            with Horizontal(classes="field"):
                yield Label("target", classes="field-label")
                yield Select(
                    [(label, key) for key, label in TARGET_LABELS.items()],
                    value="hf", allow_blank=False, compact=True, id="target",
                )
            with Horizontal(classes="field"):
                yield Label("output", classes="field-label")
                yield Input(id="output", compact=True, select_on_focus=False)
            with Horizontal(classes="field"):
                yield Label("", classes="field-label")
                yield Checkbox("replace an existing output", id="force", compact=True)
            with Horizontal(classes="field hf-only"):
                yield Label("dtype", classes="field-label")
                yield Select(
                    [("keep", KEEP), *[(d, d) for d in DTYPES]], value=KEEP, allow_blank=False, compact=True,
                    id="dtype",
                )
                yield Label("floating tensors", classes="field-note", id="dtype-note")
            with Horizontal(classes="field hf-only"):
                yield Label("shard size", classes="field-label")
                yield Input(placeholder="one file", id="shard", compact=True, classes="short")
                yield Label("at most this per file: 5GB, 500MiB", classes="field-note")
            with Horizontal(classes="field universal-only"):
                yield Label("step", classes="field-label")
                yield Input(id="step", compact=True, restrict=r"\d*", classes="short")
                yield Label("last completed step; training resumes after it", classes="field-note")
            with Horizontal(classes="field universal-only"):
                yield Label("stage", classes="field-label")
                yield Select(
                    [("as source", KEEP), *[(f"ZeRO-{s}", str(s)) for s in STAGES]], value=KEEP,
                    allow_blank=False, compact=True, id="stage",
                )
                yield Label("ZeRO layout the output is written for", classes="field-note", id="stage-note")
            with Horizontal(classes="field"):
                yield Label("workers", classes="field-label")
                yield Input(str(DEFAULT_WORKERS), id="workers", compact=True, restrict=r"\d*", classes="short")
                yield Label("tensors read ahead in parallel", classes="field-note")
            yield Static(id="convert-message")
            with Horizontal(id="convert-buttons"):
                yield Button("Start", id="start", variant="primary", compact=True, disabled=True)
                yield Button("Cancel", id="cancel", compact=True)
                yield Label("Enter/F2 start · Esc close", id="convert-hint")

    def on_mount(self) -> None:
        self.query_one("#target", Select).focus()
        if self.source is not None:
            self._loaded(self.source)
        else:
            self._show_fields("hf")
            self._open(self.source_path)

    @work(thread=True, exclusive=True, group="open", exit_on_error=False)
    def _open(self, path: Path) -> None:
        from ckpt_tui.core.inspect import open_checkpoint

        worker = get_current_worker()
        try:
            ckpt = open_checkpoint(path)
        except CkptError as exc:
            if not worker.is_cancelled:
                self.app.call_from_thread(self._show, Text(f"Cannot open: {exc}", style="red"))
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._loaded, ckpt)

    def _loaded(self, ckpt: Checkpoint) -> None:
        self.source = ckpt
        facts = kind_label(ckpt.kind, ckpt.zero_stage)
        if ckpt.compute_dtype:
            facts.append(f" · {short_dtype(ckpt.compute_dtype)}")
        if ckpt.step is not None:
            facts.append(f" · step {ckpt.step:,}")
        facts.append(f" · {plural(len(ckpt.tensors), 'tensor')} · {human_bytes(ckpt.total_bytes)}")
        sharded = ckpt.layout.tp * ckpt.layout.pp > 1
        if sharded:
            facts.append(f" · {ckpt.layout.describe()}")
        self.query_one("#convert-source", Static).update(facts)
        if sharded:  # a universal folder holds full tensors: the resuming run picks its own layout
            self.query_one("#stage-note", Label).update("ZeRO layout; it resumes at any TP × PP × DP")
        defaults = adapter_for(ckpt.kind).defaults
        target = defaults.target
        stage = self.query_one("#stage", Select)
        stage.set_options([(f"as source ({self._source_stage(ckpt)})", KEEP), *[(f"ZeRO-{s}", str(s)) for s in STAGES]])
        stage.value = KEEP
        self.query_one("#step", Input).placeholder = f"{ckpt.step or 0} (the source's)"
        if defaults.weights_note:
            self.query_one("#dtype-note", Label).update(defaults.weights_note)
        self._ready = True
        self.query_one("#start", Button).disabled = False
        self.query_one("#target", Select).value = target
        self._show_fields(target)
        self._set_default_output()
        self._check()

    @staticmethod
    def _source_stage(ckpt: Checkpoint) -> str:
        return f"ZeRO-{default_stage(ckpt)}"

    # ------------------------------------------------------------------------------------- fields

    @property
    def target(self) -> str:
        return str(self.query_one("#target", Select).value)

    def _show_fields(self, target: str) -> None:
        for row in self.query(".hf-only"):
            row.display = target == "hf"
        for row in self.query(".universal-only"):
            row.display = target == "universal"

    def _set_default_output(self) -> None:
        if self.source is None or self._auto_output is None and self.query_one("#output", Input).value:
            return  # the user chose their own folder: keep it
        try:
            options = self._options()
        except Problem:
            options = None
        path = str(default_output(self.source, self.target, options))
        self._auto_output = path
        self.query_one("#output", Input).value = path

    @on(Select.Changed, "#target")
    def _target_changed(self) -> None:
        self._show_fields(self.target)
        self._set_default_output()
        self._check()

    @on(Input.Changed, "#output")
    def _output_changed(self, event: Input.Changed) -> None:
        # the field's value now, not the event's: a default set since this event was sent is still a default
        if self._auto_output is not None and event.input.value != self._auto_output:
            self._auto_output = None
        self._check()

    @on(Input.Changed, "#step")
    def _step_changed(self) -> None:
        self._set_default_output()  # global_step<N>_universal follows the step while the name is the default
        self._check()

    @on(Input.Changed, "#shard, #workers")
    @on(Select.Changed, "#dtype, #stage")
    @on(Checkbox.Changed, "#force")
    def _option_changed(self) -> None:
        self._check()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#start")
    def _start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_close()

    # ------------------------------------------------------------------------------------ checking

    def _options(self) -> ConvertOptions:
        """The options as typed, parsed with the CLI's own rules (sizes as transformers reads them)."""
        hf = self.target == "hf"
        dtype = str(self.query_one("#dtype", Select).value)
        shard = self.query_one("#shard", Input).value.strip()
        step = self.query_one("#step", Input).value.strip()
        stage = str(self.query_one("#stage", Select).value)
        workers = self.query_one("#workers", Input).value.strip()
        try:
            max_shard_size = parse_size(shard) if hf and shard else None
        except CkptError as exc:
            raise Problem("shard", str(exc)) from None
        if not workers:
            raise Problem("workers", "workers: how many tensors to read ahead (at least 1)")
        return ConvertOptions(
            dtype=dtype if hf and dtype != KEEP else None,
            max_shard_size=max_shard_size,
            step=int(step) if not hf and step else None,
            stage=int(stage) if not hf and stage != KEEP else None,
            workers=int(workers),
        )

    def _request(self) -> tuple[ConvertRequest, int]:
        """The request and its estimated size, or the Problem that stops it."""
        if self.source is None:
            raise Problem("target", "the checkpoint is not read yet")
        options = self._options()
        text = self.query_one("#output", Input).value.strip()
        if not text:
            raise Problem("output", "output: the folder to write (it must not exist yet)")
        output = Path(text).expanduser()
        force = self.query_one("#force", Checkbox).value
        try:
            needed = check_request(self.source, output, self.target, options, force=force)
        except OutputExists:
            raise Problem("output", f"{display_path(output, self.root)} already exists", exists=True) from None
        except CkptError as exc:
            field = FIELD_OF_OPTION.get(exc.option, "output") if isinstance(exc, OptionError) else "output"
            where = exc.path
            if where is not None and Path(where) == output.resolve():  # the core names resolved paths
                where = display_path(output, self.root)
            raise Problem(field, f"{where}: {exc.problem}" if where else exc.problem) from None
        return ConvertRequest(self.source, output, self.target, options, force=force), needed

    def _check(self) -> ConvertRequest | None:
        """Check what is in the fields now and say so under them; the request when it can start."""
        for field in self.query(".-problem"):
            field.remove_class("-problem")
        self.problem = None
        if not self._ready:
            return None
        try:
            request, needed = self._request()
        except Problem as problem:
            self.problem = problem
            self.query_one(f"#{problem.field}").add_class("-problem")
            if problem.exists:
                self._show(
                    Text.assemble(
                        ("✗ ", "bold red"), problem.message, ": tick ", ("replace an existing output", "bold"),
                        " (the old folder stays until the new one is complete) or choose another folder.",
                    )
                )
            else:
                self._show(Text.assemble(("✗ ", "bold red"), problem.message))
            return None
        out = display_path(request.output, self.root)
        message = Text.assemble(("✓ ", "bold green"), f"writes about {human_bytes(needed)} to {out}")
        if request.force and request.output.exists():
            message.append(" · replaces the existing folder once complete", style="yellow")
        self._show(message)
        return request

    def show_failure(self, message: str) -> None:
        self._show(Text(f"Cannot open: {message}", style="red"))

    def _show(self, message: Text) -> None:
        self.query_one("#convert-message", Static).update(message)

    # ------------------------------------------------------------------------------------- actions

    def action_start(self) -> None:
        request = self._check()
        if request is None:
            if self.problem is not None:  # to the field to fix: the replace box when the output exists
                self.query_one("#force" if self.problem.exists else f"#{self.problem.field}").focus()
            return
        self.dismiss(request)

    def action_close(self) -> None:
        self.dismiss(None)
