"""convert(): one entry point for every direction. Targets are modules with the same three functions.

A target module defines::

    estimate_bytes(ckpt, options) -> int                # output size, for the free-space check
    produce(ckpt, tmp, options, control) -> None        # write the output into tmp
    after(ckpt, dst, options) -> None                   # pointer files etc., once dst is in place
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ckpt_tui.core.convert.job import JobControl, check_destination, check_free_space, run_job
from ckpt_tui.core.errors import OptionError
from ckpt_tui.core.model import Checkpoint

TARGETS = ("hf", "universal")
DTYPES = ("fp32", "bf16", "fp16")  # hf: what floating tensors may be stored as
STAGES = (1, 2, 3)  # universal: the ZeRO layouts a universal checkpoint can be written for
DEFAULT_WORKERS = 2  # what the CLI and the app start with


@dataclass
class ConvertOptions:
    dtype: str | None = None  # hf: cast floating tensors to this dtype
    max_shard_size: int | None = None  # hf: bytes per shard
    step: int | None = None  # universal: the iteration training resumes at
    stage: int | None = None  # universal: target ZeRO stage layout (1, 2 or 3)
    # universal, weights-only source (HF): a DeepSpeed checkpoint of the same model whose TP restore
    # hints (cat_dim, sub-params, vocabulary padding) the output takes, so it resumes at any TP degree
    hints_from: Path | None = None
    workers: int = 1  # tensors read ahead in parallel

    def check(self) -> None:
        """Rules that hold whatever the target (the target module checks the rest)."""
        if self.workers < 1:
            raise OptionError("workers", "--workers must be at least 1")


def default_stage(ckpt: Checkpoint) -> int:
    """The ZeRO layout a universal output gets unless --stage says otherwise: the source's own."""
    from ckpt_tui.core.formats.registry import adapter_for

    return adapter_for(ckpt.kind).defaults.native_stage(ckpt)


def target_module(target: str) -> ModuleType:
    if target not in TARGETS:
        raise OptionError("target", f"unknown target '{target}' (choose from {', '.join(TARGETS)})")
    return importlib.import_module(f"ckpt_tui.core.convert.to_{target}")


def convert(
    src: Path | Checkpoint,
    dst: Path,
    target: str,
    options: ConvertOptions | None = None,
    *,
    control: JobControl | None = None,
    force: bool = False,
) -> Path:
    """Convert src into a new folder dst. Atomic: dst appears complete or not at all."""
    from ckpt_tui.core.inspect import open_checkpoint

    options = options or ConvertOptions()
    options.check()
    ckpt = src if isinstance(src, Checkpoint) else open_checkpoint(src)
    module = target_module(target)
    return run_job(
        ckpt.path,
        Path(dst),
        lambda tmp, ctl: module.produce(ckpt, tmp, options, ctl),
        control=control,
        force=force,
        needed_bytes=module.estimate_bytes(ckpt, options),
        after=lambda final: module.after(ckpt, final, options),
    )


def check_request(
    src: Checkpoint, dst: Path, target: str, options: ConvertOptions, *, force: bool = False
) -> int:
    """Everything convert() would refuse before writing, checked without writing anything.

    The target, its options, the destination (the source itself, a folder holding the source, an existing
    folder without force) and the free space. Returns the estimated output size in bytes.
    """
    options.check()
    needed = target_module(target).estimate_bytes(src, options)  # validates the target's options
    dst = Path(dst)
    check_destination(src.path, dst, force=force)
    existing = next((p for p in (dst.parent, *dst.parent.parents) if p.exists()), None)
    if existing is not None and existing.is_dir():
        check_free_space(existing, needed)
    return needed


def default_output(src: Checkpoint, target: str, options: ConvertOptions | None = None) -> Path:
    """Where a conversion of src goes unless told otherwise: beside the source, never inside it.

    hf: ``<name>-hf``. universal: DeepSpeed's ``<tag>_universal`` tag folder, in a new save dir
    ``<name>-universal`` beside the source (it gets the ``latest_universal`` pointer, so the source's own
    folder is left as it was). A tag folder given as the source keeps its tag in the name.
    """
    target_module(target)
    tagged = src.tag is not None and src.path.name == src.tag  # a tag folder (ZeRO or universal)
    unit = src.path.parent if tagged else src.path  # the save dir, HF folder or weights file
    name = unit.stem if unit.is_file() else unit.name
    tag = (src.tag or "").removesuffix("_universal")
    if target == "hf":
        return unit.parent / (f"{name}-{tag}-hf" if tagged else f"{name}-hf")
    step = options.step if options is not None and options.step is not None else None
    if step is not None or not tag:
        tag = f"global_step{step if step is not None else (src.step or 0)}"
    return unit.parent / f"{name}-universal" / f"{tag}_universal"
