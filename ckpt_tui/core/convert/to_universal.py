"""Any checkpoint -> DeepSpeed universal checkpoint, loadable with ``{"checkpoint": {"load_universal": true}}``.

- ZeRO 1/2/3 -> universal: what ``ds_to_universal`` writes (same folders, same tensors bitwise, same Adam
  step), streamed one parameter at a time from the ranks' files, and without ``--inject_missing_state``
  for plain ZeRO-1/2 saves. Differences, on purpose: ZeRO-3 frozen parameters get an fp32 folder (upstream
  drops them, so a later universal -> HF would lose them); optimizer_state.pt for ZeRO-3 leaves out rank
  0's flat partitions (no loader reads them); fp32-only files hold their tensor, not the whole flat buffer.
- HF (safetensors / .bin) -> universal: the weights as fp32 masters, Adam moments zero and step 0 (the
  optimizer restarts: Adam's first update from zero moments is that of a fresh Adam), and a model_states
  file whose param_shapes list the trainable tensors in the checkpoint's tensor order (HF files do not
  record the model's parameter order; DeepSpeed's universal loader looks parameters up by name).
  Floating tensors are trainable parameters; other tensors are treated as buffers.
- universal -> universal: another target layout (--stage) or step (--step).

``options.stage`` picks the layout (1/2: dicts with 'param' + step.pt, model_states named
mp_rank_00_...; 3: bare flat tensors, zero_pp_rank_0_...): the source's stage for ZeRO, else 1.
``options.step`` sets global_steps, the iteration training resumes after (default: the source's, else 0).
The output folder is the tag folder; ``latest_universal`` is written beside it once it is complete.
"""

from __future__ import annotations

from contextlib import ExitStack
from functools import partial
from pathlib import Path

from ckpt_tui.core.convert import universal_layout as ul
from ckpt_tui.core.convert.api import default_stage
from ckpt_tui.core.convert.job import JobControl, write_pointer
from ckpt_tui.core.convert.prefetch import read_ahead
from ckpt_tui.core.convert.universal_plans import Plan, make_plan
from ckpt_tui.core.errors import OptionError
from ckpt_tui.core.model import Checkpoint
from ckpt_tui.core.sources import open_source


# --------------------------------------------------------------------------------- target module API
def estimate_bytes(ckpt: Checkpoint, options) -> int:  # noqa: ANN001
    stage, _ = _target(ckpt, options)
    total = 0
    for t in ckpt.tensors:
        if t.tied_to and stage == 3:
            continue
        trainable = not (t.tied_to or t.frozen or t.buffer)
        total += ul.numel(t.shape) * 4 * (3 if trainable else 1)
    return total + sum(f.size for f in ckpt.files if f.role == "model_states")


def produce(ckpt: Checkpoint, tmp: Path, options, control: JobControl) -> None:  # noqa: ANN001
    stage, step = _target(ckpt, options)
    with ExitStack() as stack:
        source = stack.enter_context(open_source(ckpt))
        plan = make_plan(ckpt, source, stage, step)
        stack.callback(plan.close)
        for warning in source.warnings:
            control.log(warning)
        if options.hints_from is not None:
            _borrow_hints(plan, Path(options.hints_from), stack, control)
        _write(plan, tmp, options.workers, control)


def _borrow_hints(plan: Plan, path: Path, stack: ExitStack, control: JobControl) -> None:
    """--hints-from: the restore hints of a DeepSpeed checkpoint of the same model (see Plan.borrow_hints)."""
    from ckpt_tui.core.inspect import open_checkpoint

    reference = open_checkpoint(path)
    plan.borrow_hints(reference, stack.enter_context(open_source(reference)))
    control.log(f"restore hints from {reference.path} ({reference.layout.describe()})")


def _write(plan: Plan, tmp: Path, workers: int, control: JobControl) -> None:
    for item in plan.items:
        ul.check_folder_name(item.name)
    zero = tmp / ul.ZERO
    zero.mkdir()
    control.log(f"universal layout for ZeRO-{'3' if plan.stage == 3 else '1/2'}, resuming after step {plan.step}")
    control.begin(len(plan.items), sum(i.nbytes for i in plan.items))
    states = {item.name: plan.states(item.name) for item in plan.items}
    reads = [(i.name, partial(plan.read_state, i.name, state), 4 * ul.numel(i.shape))
             for i in plan.items for state in states[i.name]]
    stream = read_ahead(reads, workers, control)  # one state at a time: memory follows one tensor
    for item in plan.items:
        folder = zero / item.name
        folder.mkdir()
        hints = plan.hints(item.name) if item.trainable else None
        written = 0
        for state in states[item.name]:
            _, value = next(stream)
            written += ul.write_param_state(folder, state, value, plan.layout, trainable=item.trainable, hints=hints)
            del value  # else it stays alive while the next state is read: two full tensors at once
        control.advance(item.name, written)
    control.check()
    plan.write_optimizer_state(zero)
    plan.write_model_states(tmp)


def after(ckpt: Checkpoint, dst: Path, options) -> None:  # noqa: ANN001
    """Point `latest_universal` beside the output at it, as ds_to_universal does (only once dst is complete)."""
    write_pointer(dst.parent, ul.LATEST_UNIVERSAL, dst.name)


def _target(ckpt: Checkpoint, options) -> tuple[int, int]:  # noqa: ANN001
    """(target stage, global step) from the options, defaulting to what the source says."""
    if options.dtype and options.dtype not in ("fp32", "float32"):
        raise OptionError("dtype", "universal checkpoints hold fp32 master weights: --dtype applies to --to hf only")
    if options.max_shard_size:
        raise OptionError("max_shard_size", "--max-shard-size applies to --to hf only")
    stage = options.stage if options.stage is not None else default_stage(ckpt)
    if stage not in (1, 2, 3):
        raise OptionError("stage", f"--stage must be 1, 2 or 3 (got {stage})")
    step = options.step if options.step is not None else (ckpt.step or 0)
    if step < 0:
        raise OptionError("step", f"--step must be 0 or more (got {step})")
    return stage, int(step)
