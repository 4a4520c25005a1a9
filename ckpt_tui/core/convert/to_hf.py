"""Any checkpoint -> Hugging Face safetensors (ZeRO -> HF is DeepSpeed's zero_to_fp32, streamed).

Same tensors as zero_to_fp32 (fp32 master weights; frozen params and buffers as stored), bitwise in fp32.
Tied weights are stored once, under the owner's name, as transformers does; the alias is recorded in the
file metadata. config.json (and generation_config.json) are copied when the source has them.
"""

from __future__ import annotations

import json
import math
import shutil
from functools import partial
from pathlib import Path

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core.convert.job import JobControl
from ckpt_tui.core.convert.prefetch import read_ahead
from ckpt_tui.core.convert.safetensors_out import Planned, ShardedWriter
from ckpt_tui.core.errors import OptionError
from ckpt_tui.core.formats.registry import adapter_for
from ckpt_tui.core.model import Checkpoint
from ckpt_tui.core.sources import SourceTensor, open_source

FLOATS = {"float32", "float16", "bfloat16", "float64"}
CONFIG_FILES = ("config.json", "generation_config.json")


def _out_dtype(t: SourceTensor, requested: str | None) -> str:
    return dt.canonical(requested) if requested and t.dtype in FLOATS else t.dtype


def _validate(options) -> None:  # noqa: ANN001
    if options.dtype and dt.canonical(options.dtype) not in FLOATS:
        raise OptionError("dtype", f"--dtype must be one of fp32, bf16, fp16 (got {options.dtype!r})")
    if options.hints_from is not None:
        raise OptionError("hints_from", "--hints-from applies to --to universal only")


def estimate_bytes(ckpt: Checkpoint, options) -> int:  # noqa: ANN001
    _validate(options)
    read_dtype = adapter_for(ckpt.kind).defaults.read_dtype
    total = 0
    for t in ckpt.tensors:
        if t.tied_to:
            continue
        dtype = read_dtype(ckpt, t.dtype)
        dtype = dt.canonical(options.dtype) if options.dtype and dtype in FLOATS else dtype
        total += dt.nbytes(dtype, t.numel) or 0
    return total


def produce(ckpt: Checkpoint, tmp: Path, options, control: JobControl) -> None:  # noqa: ANN001
    _validate(options)
    with open_source(ckpt) as source:
        plan = [Planned(t.name, t.shape, _out_dtype(t, options.dtype)) for t in source.tensors]
        metadata = {"ckpt_tui_source_kind": ckpt.kind.value}
        if ckpt.step is not None:
            metadata["step"] = str(ckpt.step)
        if source.aliases:
            metadata["tied_weights"] = json.dumps(source.aliases, sort_keys=True)
        writer = ShardedWriter(tmp, plan, options.max_shard_size, metadata)
        for warning in source.warnings:
            control.log(warning)
        control.begin(len(plan), writer.total_bytes)
        try:
            reads = [(t.name, partial(source.read, t.name), dt.nbytes(t.dtype, math.prod(t.shape)) or 0) for t in source.tensors]
            stream = read_ahead(reads, options.workers, control)
            for planned, (name, tensor) in zip(plan, stream):
                if dt.canonical(tensor.dtype) != planned.dtype:
                    tensor = tensor.to(_torch_dtype(planned.dtype))
                control.advance(name, writer.write(name, tensor))
            writer.close()
        finally:
            writer.abort()
    _copy_configs(ckpt, tmp)


def _torch_dtype(name: str):  # noqa: ANN202
    import torch

    return getattr(torch, name)


def _copy_configs(ckpt: Checkpoint, tmp: Path) -> None:
    """config.json next to the weights, or (HF Trainer + DeepSpeed) next to the save dir's tags."""
    folders = adapter_for(ckpt.kind).defaults.config_dirs(ckpt)
    for name in CONFIG_FILES:
        for folder in folders:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, tmp / name)
                break


def after(ckpt: Checkpoint, dst: Path, options) -> None:  # noqa: ANN001
    """Nothing to point at: an HF folder is complete by itself."""
