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

from ckpt_tui.core.convert.job import JobControl, run_job
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.model import Checkpoint


@dataclass
class ConvertOptions:
    dtype: str | None = None  # hf: cast floating tensors to this dtype
    max_shard_size: int | None = None  # hf: bytes per shard
    step: int | None = None  # universal: the iteration training resumes at
    stage: int | None = None  # universal: target ZeRO stage layout (1, 2 or 3)
    workers: int = 1  # tensors read ahead in parallel


TARGETS = ("hf", "universal")


def target_module(target: str) -> ModuleType:
    if target not in TARGETS:
        raise CkptError(None, f"unknown target '{target}' (choose from {', '.join(TARGETS)})")
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
