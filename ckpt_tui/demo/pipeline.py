"""The seed's 4-step universal checkpointing proof as data: steps with an output, a done-check and a run.

1. ``baseline``: train the tiny GPT 2N steps at DP = A with DeepSpeed ZeRO, saving at step N, logging
   training and validation loss to TensorBoard with the Megatron-DeepSpeed tags.
2. ``hf``: the step-N ZeRO checkpoint -> HF safetensors (our converter).
3. ``universal-from-hf``: HF -> universal (our converter; Adam restarts from zero moments).
4. ``resumed-from-hf``: train from that universal checkpoint at DP = B up to step 2N.
   Also ``universal-from-zero`` (ZeRO -> universal, Adam moments kept) and ``resumed-from-zero``.
Each artifact is verified against its source (``verify-*``), then ``compare`` measures both resumed
curves against the baseline on steps N+1..2N and writes ``comparison.json``.

A step whose output exists is skipped, unless an earlier step ran in this pass (its inputs may have
changed); ``fresh=True`` removes the workspace's outputs first. Steps report :class:`Event` objects to a listener. torch and deepspeed are imported lazily: without them,
:func:`require_runtime` raises one :class:`CkptError` with the install command.

Training runs under torchrun, one process per rank, CPU + gloo (see :mod:`ckpt_tui.demo.launch`); the
GPU path (NCCL) is taken when the trainer announces it (``ckpt_tui.demo.train.SUPPORTS_CUDA``).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckpt_tui.core import jsonsafe
from ckpt_tui.core.errors import CkptError
from ckpt_tui.demo.workspace import SETTINGS_FILE, TMP_SUFFIX, Workspace, losses_file, tb_dir

if TYPE_CHECKING:
    from ckpt_tui.core.convert.job import JobControl
    from ckpt_tui.core.losses import Comparison

SCHEMA = "ckpt-tui.demo/1"
LOCK_FILE = ".ckpt-tui-demo.lock"
TRAIN_BATCH = 8  # train.py's default global batch: every DP size below splits it evenly
DP_SIZES = (1, 2, 4, 8)
# fp32 resumes agree to ~1e-6 at any DP size. bf16 ones agree exactly at the same DP size, but another DP
# size reorders bf16 gradient reductions and the curves part slowly: measured max |diff| 2e-3 over 20 steps
# and 1.2e-2 over 100 (DP 2 -> 1, ZeRO-3), against 0.1-0.7 for a run whose Adam restarts.
ATOL = {"fp32": 1e-5, "bf16": 5e-2}
TRAIN_TAG = "lm-loss-training/lm loss"
VAL_TAG = "lm-loss-validation/lm loss validation"
INSTALL_HINT = (
    "pip install 'torch>=2.4' && DS_BUILD_OPS=0 pip install deepspeed "
    "(a CPU-only torch: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
)


# ------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class DemoSettings:
    """What the demo trains. `steps` is N: the baseline trains 2N steps and saves at step N."""

    steps: int = 100
    dp: int = 2  # A: data-parallel size of the baseline
    resume_dp: int = 1  # B: data-parallel size of the resumed runs
    stage: int = 3
    dtype: str = "fp32"
    device: str = "cpu"  # cpu (gloo) | cuda (NCCL)
    tp: int = 1  # tensor-parallel size of the baseline (AutoTP on the tiny Llama; Megatron-style with PP)
    resume_tp: int = 1
    pp: int = 1  # pipeline stages of the baseline (a PipelineModule when either pp is > 1)
    resume_pp: int = 1

    @property
    def model(self) -> str:
        """TP with PP: the Megatron-style GPT; TP alone: AutoTP on the tiny Llama; else the demo's GPT."""
        tensor_parallel = max(self.tp, self.resume_tp) > 1
        if tensor_parallel and self.pipeline:
            return "megatron"
        return "hf-llama" if tensor_parallel else "gpt"

    @property
    def needs_hints(self) -> bool:
        """HF weights of the Megatron-style model resume only with its restore hints (a padded vocabulary,
        fused sub-params): the HF -> universal step takes them from the baseline's checkpoint."""
        return self.model == "megatron"

    @property
    def pipeline(self) -> bool:
        return max(self.pp, self.resume_pp) > 1

    def layout(self, *, resumed: bool) -> str:
        """'DP 2', 'DP 1 × TP 2', 'DP 2 × PP 2': one side's layout, as inspect describes it."""
        dp, tp, pp = (self.resume_dp, self.resume_tp, self.resume_pp) if resumed else (self.dp, self.tp, self.pp)
        return " × ".join([f"DP {dp}"] + [f"{a} {n}" for a, n in (("TP", tp), ("PP", pp)) if n > 1])

    def world(self, *, resumed: bool) -> int:
        if resumed:
            return self.resume_dp * self.resume_tp * self.resume_pp
        return self.dp * self.tp * self.pp

    @property
    def total_steps(self) -> int:
        return 2 * self.steps

    @property
    def eval_every(self) -> int:
        """About 10 validation points per run, always on the resume step N."""
        n = max(1, self.steps // 5)
        while self.steps % n:
            n -= 1
        return n

    @property
    def atol(self) -> float:
        return ATOL[self.dtype]

    def validate(self) -> None:
        if self.steps < 1:
            raise CkptError(None, f"--steps must be at least 1 (got {self.steps})")
        for flag, dp in (("--dp", self.dp), ("--resume-dp", self.resume_dp)):
            if dp not in DP_SIZES:
                raise CkptError(None, f"{flag} must divide the global batch of {TRAIN_BATCH}: one of "
                                      f"{', '.join(map(str, DP_SIZES))} (got {dp})")
        if self.stage not in (1, 2, 3):
            raise CkptError(None, f"--stage must be 1, 2 or 3 (got {self.stage})")
        for flag, n in (("--tp", self.tp), ("--resume-tp", self.resume_tp), ("--pp", self.pp),
                        ("--resume-pp", self.resume_pp)):
            if n not in (1, 2):
                raise CkptError(None, f"{flag} must be 1 or 2 for the demo's tiny models (got {n})")
        if self.pipeline and self.stage != 1:
            raise CkptError(None, f"--pp needs --stage 1: DeepSpeed's PipelineModule allows ZeRO-1 at most (got {self.stage})")
        if self.dtype not in ATOL:
            raise CkptError(None, f"--dtype must be fp32 or bf16 (got {self.dtype})")
        if self.device not in ("cpu", "cuda"):
            raise CkptError(None, f"unknown device {self.device!r}")

    def describe(self) -> str:
        model = {"hf-llama": "tiny Llama (AutoTP)", "megatron": "Megatron-style GPT (TP x PP PipelineModule)"}.get(
            self.model, "tiny GPT" + (" (PipelineModule)" if self.pipeline else ""))
        return (f"{model}, ZeRO-{self.stage} {self.dtype}, baseline {self.total_steps} steps at "
                f"{self.layout(resumed=False)} (save at {self.steps}), resume at {self.layout(resumed=True)} "
                f"on {self.device}")


# Settings recorded in demo.json; the device is left out (a workspace may be finished on another machine).
_RECORDED = ("steps", "dp", "resume_dp", "stage", "dtype", "tp", "resume_tp", "pp", "resume_pp")


def resolve_settings(root: Path, requested: dict[str, Any], *, fresh: bool = False,
                     device: str = "cpu") -> DemoSettings:
    """The settings to run with: the requested ones (None = not given) over what WORKDIR was built with
    (demo.json), over the defaults. Asking for other settings than a workspace has needs --fresh."""
    root = Path(root)
    recorded = {} if fresh else read_recorded(root)
    if recorded:  # a workspace recorded before a setting existed was built with its default
        defaults = DemoSettings()
        recorded = {k: recorded.get(k, getattr(defaults, k)) for k in _RECORDED}
    wanted = {k: v for k, v in requested.items() if v is not None}
    unknown = set(wanted) - set(_RECORDED)
    if unknown:
        raise CkptError(None, f"unknown demo settings: {', '.join(sorted(unknown))}")
    conflicts = [k for k, v in wanted.items() if k in recorded and recorded[k] != v]
    if conflicts:
        have = ", ".join(f"--{k.replace('_', '-')} {recorded[k]}" for k in conflicts)
        raise CkptError(root, f"this demo workspace was built with {have}; pass --fresh to rebuild it "
                              "with the new settings, or choose another WORKDIR")
    settings = replace(DemoSettings(), **{**recorded, **wanted}, device=device)
    settings.validate()
    return settings


def read_recorded(root: Path) -> dict[str, Any]:
    path = Path(root) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {k: data["settings"][k] for k in _RECORDED if k in data.get("settings", {})}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CkptError(path, f"unreadable demo settings ({exc}); pass --fresh to rebuild the workspace") from None


def check_workdir(root: Path) -> None:
    """Refuse to write into a folder that holds something else than a demo workspace."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise CkptError(root, "is not a folder")
    if root.is_dir() and any(p.name != LOCK_FILE for p in root.iterdir()) and not (root / SETTINGS_FILE).is_file():
        raise CkptError(root, "is not empty and is not a ckpt-tui demo workspace; choose an empty or new folder")


# -------------------------------------------------------------------------------------------- runtime
def require_runtime() -> None:
    """torch and deepspeed must be importable: one clear error with the install command otherwise."""
    missing = [name for name in ("torch", "deepspeed") if importlib.util.find_spec(name) is None]
    if missing:
        raise CkptError(None, f"the demo trains with real DeepSpeed and needs {' and '.join(missing)}, "
                              f"which {'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}")
    if importlib.util.find_spec("torch.distributed.run") is None:  # pragma: no cover - exotic torch builds
        raise CkptError(None, "this torch build has no torch.distributed (torchrun): reinstall torch")


def cuda_available() -> bool:
    """True when torch sees a GPU (torch imported here, not at module import)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def trainer_supports_cuda() -> bool:
    """Whether ckpt_tui.demo.train can train on GPUs (NCCL); it announces that with SUPPORTS_CUDA."""
    from ckpt_tui.demo import train

    return bool(getattr(train, "SUPPORTS_CUDA", False))


# -------------------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class Event:
    """Progress of the pipeline, for a listener (the CLI draws bars from these; a TUI could too).

    kind: ``start`` (a step begins), ``progress`` (fraction and detail), ``skip`` (its output exists),
    ``done`` and ``failed``.
    """

    kind: str
    index: int  # 1-based position of the step
    total: int
    name: str
    title: str
    fraction: float | None = None
    detail: str = ""
    seconds: float = 0.0


Listener = Callable[[Event], None]


@dataclass
class StepContext:
    """What a running step gets: the workspace, the settings, progress reporting and the cancel flag."""

    ws: Workspace
    settings: DemoSettings
    report: Callable[[float | None, str], None]
    cancel: threading.Event
    result: DemoResult

    def job_control(self, what: str) -> JobControl:
        """A JobControl whose progress turns into this step's progress events."""
        from ckpt_tui.core.convert.job import JobControl

        def listen(p: Any) -> None:
            detail = f"{what}: {p.tensors_done}/{p.tensors_total} tensors"
            if p.current:
                detail += f", {p.current}"
            self.report(p.fraction if p.phase in ("convert", "verify") else None, detail)

        return JobControl(listen, self.cancel)


@dataclass(frozen=True)
class Step:
    """One step of the demo: it is done when its output exists; `run` makes the output appear atomically."""

    name: str
    title: str
    output: Path
    run: Callable[[StepContext], None]
    done: Callable[[], bool] | None = None  # default: the output exists

    def is_done(self) -> bool:
        return self.done() if self.done is not None else self.output.exists()


@dataclass
class StepOutcome:
    name: str
    title: str
    output: Path
    status: str  # ran | skipped
    seconds: float


# ------------------------------------------------------------------------------------------- the steps
def build_steps(ws: Workspace, settings: DemoSettings) -> list[Step]:
    s = settings
    n, total = s.steps, s.total_steps
    return [
        Step("baseline", f"Train the baseline: {total} steps at {s.layout(resumed=False)}, ZeRO-{s.stage} "
                         f"{s.dtype}, save at step {n}",
             ws.baseline, lambda ctx: train_run(ctx, ws.baseline, resumed=False, save_at=n)),
        Step("hf", f"Convert the step-{n} ZeRO checkpoint to HF safetensors",
             ws.hf, lambda ctx: convert_step(ctx, ws.zero_checkpoint, ws.hf, "hf")),
        Step("verify-hf", "Verify hf/ against the ZeRO checkpoint", ws.verify_report("hf"),
             lambda ctx: verify_step(ctx, "hf", ws.zero_checkpoint, ws.hf, states=False),
             done=lambda: _verified(ws.verify_report("hf"))),
        Step("universal-from-hf", "Convert HF to universal (Adam restarts)", ws.universal_from_hf,
             lambda ctx: convert_step(ctx, ws.hf, ws.universal_from_hf, "universal", step=n, stage=s.stage,
                                      hints_from=ws.zero_checkpoint if s.needs_hints else None),
             done=lambda: _universal_done(ws.universal_from_hf)),
        Step("verify-universal-from-hf", "Verify universal-from-hf/ against hf/",
             ws.verify_report("universal-from-hf"),
             lambda ctx: verify_step(ctx, "universal-from-hf", ws.hf, ws.universal_from_hf, states=False),
             done=lambda: _verified(ws.verify_report("universal-from-hf"))),
        Step("universal-from-zero", "Convert ZeRO to universal (Adam moments kept)", ws.universal_from_zero,
             lambda ctx: convert_step(ctx, ws.zero_checkpoint, ws.universal_from_zero, "universal"),
             done=lambda: _universal_done(ws.universal_from_zero)),
        Step("verify-universal-from-zero", "Verify universal-from-zero/ against the ZeRO checkpoint (with Adam)",
             ws.verify_report("universal-from-zero"),
             lambda ctx: verify_step(ctx, "universal-from-zero", ws.zero_checkpoint, ws.universal_from_zero,
                                     states=True),
             done=lambda: _verified(ws.verify_report("universal-from-zero"))),
        Step("resumed-from-hf", f"Resume from universal-from-hf at {s.layout(resumed=True)}: steps {n + 1}..{total}",
             ws.resumed_from_hf,
             lambda ctx: train_run(ctx, ws.resumed_from_hf, resumed=True, load=ws.universal_from_hf_root)),
        Step("resumed-from-zero", f"Resume from universal-from-zero at {s.layout(resumed=True)}: steps "
                                  f"{n + 1}..{total}",
             ws.resumed_from_zero,
             lambda ctx: train_run(ctx, ws.resumed_from_zero, resumed=True, load=ws.universal_from_zero_root)),
        Step("compare", "Compare both resumed loss curves with the baseline", ws.comparison,
             compare_step, done=lambda: False),  # always re-measured: it is cheap and it is the answer
    ]


def _verified(report: Path) -> bool:
    try:
        return bool(json.loads(report.read_text()).get("ok"))
    except (OSError, ValueError):
        return False


def _universal_done(tag_folder: Path) -> bool:
    pointer = tag_folder.parent / "latest_universal"
    return tag_folder.is_dir() and pointer.is_file() and pointer.read_text().strip() == tag_folder.name


# ------------------------------------------------------------------------------------------ training
def train_run(ctx: StepContext, run_dir: Path, *, resumed: bool, save_at: int | None = None,
              load: Path | None = None) -> None:
    """Train into a temp folder beside run_dir (tb/, losses.json, ckpt/ when saving), then rename it."""
    from ckpt_tui.demo.launch import run_training

    s = ctx.settings
    tmp = run_dir.with_name(run_dir.name + TMP_SUFFIX)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    args = [
        "--model", s.model, "--stage", str(s.stage), "--dtype", s.dtype, "--steps", str(s.total_steps),
        "--train-batch-size", str(TRAIN_BATCH), "--eval-every", str(s.eval_every),
        "--tb-dir", str(tb_dir(tmp)), "--losses-json", str(losses_file(tmp)),
    ]
    tp, pp = (s.resume_tp, s.resume_pp) if resumed else (s.tp, s.pp)
    if tp > 1:
        args += ["--tp", str(tp)]
    if s.pipeline:
        args += ["--pp", str(pp)]  # the same PipelineModule on this side's number of stages
    world = s.world(resumed=resumed)
    if save_at is not None:
        args += ["--save-steps", str(save_at), "--save-dir", str(tmp / "ckpt")]
    if load is not None:
        args += ["--load", str(load), "--load-universal"]
    if s.device == "cuda":
        args += ["--device", "cuda"]
    first = (s.steps + 1) if load is not None else 1
    expected = list(range(first, s.total_steps + 1))
    log = ctx.ws.log(run_dir.name)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_losses, args=(ctx, losses_file(tmp), expected, stop), daemon=True)
    starting = f"starting {world} rank{'s' if world > 1 else ''}"
    if s.device == "cpu" and not _comm_op_built():
        starting += " (first run: compiling DeepSpeed's CPU comm op, about a minute)"
    ctx.report(0.0, starting)
    watcher.start()
    try:
        run_training(world, args, log_path=log, env=_training_env(s))
    finally:
        stop.set()
        watcher.join()
    losses = _read_losses(losses_file(tmp))
    if sorted(losses) != expected:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CkptError(log, f"training logged steps {_span(sorted(losses))}, expected {_span(expected)}")
    if save_at is not None and not (tmp / "ckpt" / f"global_step{save_at}").is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        raise CkptError(log, f"training did not save global_step{save_at}")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.rename(tmp, run_dir)
    ctx.report(1.0, f"steps {_span(expected)}, loss {losses[expected[0]]:.4f} -> {losses[expected[-1]]:.4f}")


def _comm_op_built() -> bool:
    """DeepSpeed compiles its CPU comm op (deepspeed_shm_comm) on the first multi-rank CPU run, once."""
    from ckpt_tui.demo.launch import torch_extensions_dir

    return any(torch_extensions_dir().glob("**/deepspeed_shm_comm*.so"))


def _training_env(s: DemoSettings) -> dict[str, str]:
    if s.device == "cuda":
        return {}
    # On a GPU machine whose trainer has no GPU path, keep DeepSpeed and torch on the CPU (gloo).
    return {"DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": ""}


def _watch_losses(ctx: StepContext, path: Path, expected: list[int], stop: threading.Event) -> None:
    """Turn the trainer's losses.json (rewritten after every step) into progress events."""
    seen = 0
    while not stop.wait(0.25):
        losses = _read_losses(path)
        if len(losses) != seen and losses:
            seen = len(losses)
            last = max(losses)
            ctx.report(min(1.0, seen / len(expected)),
                       f"step {last}/{expected[-1]}, loss {losses[last]:.4f}")


def _read_losses(path: Path) -> dict[int, float]:
    try:
        return {int(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        return {}


def _span(steps: list[int]) -> str:
    return f"{steps[0]}..{steps[-1]}" if steps else "none"


# ---------------------------------------------------------------------------- conversion and verify
def convert_step(ctx: StepContext, src: Path, dst: Path, target: str, *, step: int | None = None,
                 stage: int | None = None, hints_from: Path | None = None) -> None:
    from ckpt_tui.core.convert.api import ConvertOptions, convert

    control = ctx.job_control(f"to {target}")
    options = ConvertOptions(step=step, stage=stage, hints_from=hints_from)
    convert(src, dst, target, options, control=control, force=True)
    p = control.progress
    ctx.report(1.0, f"{p.tensors_done} tensors -> {dst.name}")


def verify_step(ctx: StepContext, artifact: str, source: Path, output: Path, *, states: bool) -> None:
    """`ckpt-tui verify SOURCE OUTPUT` (exact: atol 0), its report written as JSON whatever the verdict."""
    from ckpt_tui.core.verify import verify

    report = verify(source, output, atol=0.0, states=states, control=ctx.job_control("verify"))
    doc = {
        "artifact": artifact,
        "a": str(source),
        "b": str(output),
        "states": states,
        "atol": report.atol,
        "ok": report.ok,
        "tensors_compared": len(report.compared),
        "bitwise_equal": report.bitwise_equal_count,
        "max_abs_diff": report.max_abs_diff,
        "worst": report.worst.name if report.worst else None,
        "problems": [{"name": d.name, "status": d.status, "max_abs_diff": d.max_abs_diff} for d in report.problems],
    }
    _write_json(ctx.ws.verify_report(artifact), doc)
    summary = f"{doc['tensors_compared']} tensors, {doc['bitwise_equal']} bitwise equal, max |diff| {report.max_abs_diff:.3g}"
    if not report.ok:
        raise CkptError(output, f"does not match its source {source}: {len(report.problems)} tensor(s) differ "
                                f"({summary}); see {ctx.ws.verify_report(artifact)}")
    ctx.report(1.0, summary)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(jsonsafe.dumps(data) + "\n")  # a report with NaN must not crash the demo
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------- comparison
RESUMED_RUNS = (
    # name, how it was made, what must hold
    ("resumed-from-zero", "ZeRO -> universal (Adam moments kept)", "curve"),
    ("resumed-from-hf", "ZeRO -> HF -> universal (Adam restarts)", "first-step"),
)


@dataclass
class ResumedResult:
    """One resumed run against the baseline on steps N+1..2N."""

    name: str
    via: str
    expect: str  # curve: every step within atol | first-step: the first resumed step within atol
    tb: Path
    train: Comparison
    validation: Comparison | None

    @property
    def first_step_diff(self) -> float | None:
        c = self.train
        return float(abs(c.diff[0])) if c.compared else None

    @property
    def passed(self) -> bool:
        if self.expect == "curve":
            return self.train.passed and (self.validation is None or self.validation.passed)
        diff = self.first_step_diff
        return diff is not None and diff <= self.train.atol

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.name,
            "via": self.via,
            "expect": self.expect,
            "tensorboard": str(self.tb),
            "passed": self.passed,
            "first_step_abs_diff": self.first_step_diff,
            "train": self.train.to_dict(),
            "validation": self.validation.to_dict() if self.validation else None,
            "per_step": [
                {"step": int(st), "baseline": float(b), "resumed": float(r), "diff": float(d)}
                for st, b, r, d in zip(self.train.steps, self.train.base_values, self.train.resumed_values,
                                       self.train.diff)
            ],
        }


@dataclass
class DemoResult:
    workspace: Path
    settings: DemoSettings
    outcomes: list[StepOutcome] = field(default_factory=list)
    resumed: list[ResumedResult] = field(default_factory=list)
    verifications: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline_tb: Path | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return (bool(self.resumed) and all(r.passed for r in self.resumed)
                and all(v.get("ok") for v in self.verifications.values()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "workspace": str(self.workspace),
            "settings": asdict(self.settings),
            "passed": self.passed,
            "atol": self.settings.atol,
            "seconds": round(self.seconds, 2),
            "baseline": {"tensorboard": str(self.baseline_tb) if self.baseline_tb else None},
            "steps": [{"name": o.name, "title": o.title, "output": str(o.output), "status": o.status,
                       "seconds": round(o.seconds, 2)} for o in self.outcomes],
            "verify": self.verifications,
            "runs": [r.to_dict() for r in self.resumed],
        }


def compare_step(ctx: StepContext) -> None:
    """Measure both resumed runs and record the verdicts in ctx.result and comparison.json."""
    result = ctx.result
    result.resumed, result.verifications = measure(ctx.ws, ctx.settings)
    _write_json(ctx.ws.comparison, result.to_dict())
    ctx.report(1.0, "; ".join(f"{r.name}: {'PASS' if r.passed else 'FAIL'}" for r in result.resumed))


def measure(ws: Workspace, settings: DemoSettings) -> tuple[list[ResumedResult], dict[str, dict[str, Any]]]:
    """Both resumed runs against the baseline (TensorBoard, as `ckpt-tui compare-loss` reads them)."""
    from ckpt_tui.core import losses

    results = []
    for name, via, expect in RESUMED_RUNS:
        run_tb = tb_dir(ws.root / name)
        base, resumed = losses.open_pair(ws.baseline_tb, run_tb)
        train = losses.compare(base.series(TRAIN_TAG), resumed.series(TRAIN_TAG), settings.atol)
        validation = None
        if VAL_TAG in base.tags and VAL_TAG in resumed.tags:
            validation = losses.compare(base.series(VAL_TAG), resumed.series(VAL_TAG), settings.atol)
        results.append(ResumedResult(name, via, expect, run_tb, train, validation))
    verifications = {}
    for artifact in ("hf", "universal-from-hf", "universal-from-zero"):
        path = ws.verify_report(artifact)
        if path.is_file():
            verifications[artifact] = json.loads(path.read_text())
    return results, verifications


# ------------------------------------------------------------------------------------------- running
def fresh_start(ws: Workspace) -> None:
    """Remove what the demo wrote (its own paths only; anything else in WORKDIR stays)."""
    for path in ws.owned:
        for p in (path, path.with_name(path.name + TMP_SUFFIX)):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()


def run_pipeline(root: Path, settings: DemoSettings, *, fresh: bool = False, listener: Listener | None = None,
                 cancel: threading.Event | None = None) -> DemoResult:
    """Run every step not yet done, then measure. Raises CkptError for a failed step (named in the error)."""
    root = Path(root).expanduser().resolve()
    settings.validate()
    require_runtime()
    check_workdir(root)
    root.mkdir(parents=True, exist_ok=True)
    with _workspace_lock(root):
        return _run_steps(root, settings, fresh=fresh, listener=listener, cancel=cancel)


@contextmanager
def _workspace_lock(root: Path) -> Iterator[None]:
    """One demo at a time per workspace: a second one would train into the same folders."""
    with open(root / LOCK_FILE, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CkptError(root, "another `ckpt-tui demo` is running in this workspace") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_steps(root: Path, settings: DemoSettings, *, fresh: bool, listener: Listener | None,
               cancel: threading.Event | None) -> DemoResult:
    ws = Workspace(root, settings.steps)
    if fresh:
        fresh_start(ws)
    _write_json(ws.settings, {"schema": SCHEMA, "settings": {k: getattr(settings, k) for k in _RECORDED}})
    emit = listener or (lambda _e: None)
    cancel = cancel or threading.Event()
    steps = build_steps(ws, settings)
    result = DemoResult(root, settings, baseline_tb=ws.baseline_tb)
    start = time.monotonic()
    upstream_ran = False  # a step that ran may have changed what later steps read: they run too
    for index, step in enumerate(steps, 1):
        total = len(steps)
        if cancel.is_set():
            raise CkptError(None, "cancelled")
        if not upstream_ran and step.is_done():
            result.outcomes.append(StepOutcome(step.name, step.title, step.output, "skipped", 0.0))
            emit(Event("skip", index, total, step.name, step.title, 1.0, f"exists: {_rel(step.output, root)}"))
            continue
        began = time.monotonic()
        last = [""]  # the step's latest detail: the done event repeats it
        emit(Event("start", index, total, step.name, step.title, 0.0))

        def report(fraction: float | None, detail: str, _i: int = index, _s: Step = step, _t: float = began) -> None:
            last[0] = detail or last[0]
            emit(Event("progress", _i, total, _s.name, _s.title, fraction, detail, time.monotonic() - _t))

        try:
            step.run(StepContext(ws, settings, report, cancel, result))
        except BaseException as exc:
            emit(Event("failed", index, total, step.name, step.title, None, str(exc), time.monotonic() - began))
            raise
        seconds = time.monotonic() - began
        upstream_ran = True
        result.outcomes.append(StepOutcome(step.name, step.title, step.output, "ran", seconds))
        emit(Event("done", index, total, step.name, step.title, 1.0, last[0], seconds))
    result.seconds = time.monotonic() - start
    _write_json(ws.comparison, result.to_dict())
    return result


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
