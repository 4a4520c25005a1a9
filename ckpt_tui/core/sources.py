"""Read tensor values from any checkpoint kind, one tensor at a time, in bounded memory.

This is the one way the converters, `verify` and the app's value panel get at tensor data:
``open_source(checkpoint)`` gives a :class:`TensorSource` whose ``read(name)`` returns a fresh tensor.

- HF safetensors: ``safe_open`` per shard; HF .bin: the shard memory-mapped.
- Universal: ``zero/<name>/fp32.pt`` (and exp_avg / exp_avg_sq / step).
- ZeRO: the fp32 master weights (and Adam moments) gathered from every rank's optimizer file, mapped,
  slice by slice. ZeRO-1/2 keep one flat buffer per param group, params packed back to back and the
  buffer split evenly across ranks; ZeRO-3 splits every param on its own, ceil(numel/dp) per rank.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core import safe_pickle
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import deepspeed_common as dc
from ckpt_tui.core.memory import release_mapped
from ckpt_tui.core.model import Checkpoint, Kind

if TYPE_CHECKING:
    import torch

ADAM_STATES = ("exp_avg", "exp_avg_sq")


@dataclass(frozen=True)
class SourceTensor:
    """A tensor as read() returns it (ZeRO: fp32 master weights, not the 16-bit copy)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: str = "param"  # param | frozen | buffer

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return dt.nbytes(self.dtype, self.numel) or 0


class TensorSource:
    """Stored tensors of a checkpoint, readable one at a time. Tied aliases are in `aliases`, not `tensors`."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.tensors: list[SourceTensor] = []
        self.aliases: dict[str, str] = {}  # alias -> owner

    def read(self, name: str) -> torch.Tensor:
        """A fresh tensor with name's values (aliases resolve to their owner); no autograd history."""
        import torch

        with torch.no_grad():
            return self._read(name).detach()

    def states(self, name: str) -> tuple[str, ...]:
        """Optimizer states read_state() can give for name (exp_avg, exp_avg_sq, step)."""
        return ()

    def read_state(self, name: str, state: str) -> torch.Tensor:
        import torch

        if state not in self.states(name):
            kind = self.checkpoint.kind.label
            raise CkptError(self.checkpoint.path, f"no optimizer state '{state}' for '{name}' in this {kind} checkpoint")
        with torch.no_grad():
            return self._read_state(name, state).detach()

    def _read(self, name: str) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def _read_state(self, name: str, state: str) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def entry(self, name: str) -> SourceTensor:
        for t in self.tensors:
            if t.name == name:
                return t
        owner = self.aliases.get(name)
        if owner:
            return self.entry(owner)
        raise CkptError(self.checkpoint.path, f"no tensor named '{name}'")

    def close(self) -> None:
        """Drop mapped files (the GC would too; this makes it prompt)."""

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(checkpoint: Checkpoint | str | Path) -> TensorSource:
    if not isinstance(checkpoint, Checkpoint):
        from ckpt_tui.core.inspect import open_checkpoint

        checkpoint = open_checkpoint(checkpoint)
    factory = {
        Kind.HF_SAFETENSORS: SafetensorsSource,
        Kind.HF_BIN: BinSource,
        Kind.DS_UNIVERSAL: UniversalSource,
        Kind.DS_ZERO: ZeroSource,
    }.get(checkpoint.kind)
    if factory is None:
        raise CkptError(checkpoint.path, f"{checkpoint.kind.label} holds no tensors")
    return factory(checkpoint)


def _hf_listing(source: TensorSource, ckpt: Checkpoint) -> None:
    for t in ckpt.tensors:
        if t.tied_to:
            source.aliases[t.name] = t.tied_to
        else:
            source.tensors.append(SourceTensor(t.name, t.shape, t.dtype))


class SafetensorsSource(TensorSource):
    """Reads each tensor's bytes at its header offsets into a fresh buffer (readinto, no mmap).

    Memory-mapping a shard would keep every page read so far in our RSS until the file is closed;
    positioned reads keep memory at one tensor, however many shards a conversion walks through.
    """

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__(checkpoint)
        _hf_listing(self, checkpoint)
        self._file = {t.name: t.file for t in checkpoint.tensors}
        self._headers: dict[str, tuple[dict, int]] = {}
        self._lock = threading.Lock()

    def _root(self) -> Path:
        p = self.checkpoint.path
        return p.parent if p.is_file() else p

    def _read(self, name: str) -> torch.Tensor:
        import torch

        from ckpt_tui.core.formats.hf_safetensors import read_header

        name = self.aliases.get(name, name)
        rel = self._file.get(name)
        if rel is None:
            raise CkptError(self.checkpoint.path, f"no tensor named '{name}'")
        path = self._root() / rel
        with self._lock:
            if rel not in self._headers:
                header, _meta, start = read_header(path)
                self._headers[rel] = (header, start)
            header, start = self._headers[rel]
        info = header.get(name)
        if info is None:
            raise CkptError(path, f"tensor '{name}' is not in this file")
        dtype = getattr(torch, dt.SAFETENSORS_DTYPES[info["dtype"]][0], None)
        begin, end = info["data_offsets"]
        if dtype is None:  # a dtype this torch lacks (sub-byte floats): let safetensors decide
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                return handle.get_tensor(name)
        buf = torch.empty(end - begin, dtype=torch.uint8)
        try:
            with open(path, "rb") as fh:
                fh.seek(start + begin)
                got = fh.readinto(memoryview(buf.numpy()))
        except OSError as exc:
            raise CkptError(path, f"cannot read: {exc.strerror}") from None
        if got != end - begin:
            raise CkptError(path, f"truncated: tensor '{name}' needs {end - begin:,} bytes, read {got:,}")
        return buf.view(dtype).reshape(info["shape"])

    def close(self) -> None:
        self._headers.clear()


class BinSource(TensorSource):
    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__(checkpoint)
        _hf_listing(self, checkpoint)
        self._file = {t.name: t.file for t in checkpoint.tensors}
        self._open: tuple[str, dict, bool] | None = None  # one shard mapped at a time
        self._lock = threading.Lock()

    def _read(self, name: str) -> torch.Tensor:
        with self._lock:  # readers on several threads share the one mapped shard
            return self._read_locked(name)

    def _read_locked(self, name: str) -> torch.Tensor:
        name = self.aliases.get(name, name)
        rel = self._file.get(name)
        if rel is None:
            raise CkptError(self.checkpoint.path, f"no tensor named '{name}'")
        if self._open is None or self._open[0] != rel:
            p = self.checkpoint.path
            path = p if p.is_file() else p / rel
            obj, mapped = safe_pickle.load_mapped(path)
            if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
                obj = obj["state_dict"]
            self._open = (rel, obj, mapped)
        _, state, mapped = self._open
        value = state[name]
        out = value.clone()
        if mapped:
            release_mapped(value)
        return out

    def close(self) -> None:
        self._open = None


class UniversalSource(TensorSource):
    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__(checkpoint)
        self._states = {}
        for t in checkpoint.tensors:
            # ds_to_universal writes tied aliases their own folder: keep them readable, but as aliases
            if t.tied_to and any(o.name == t.tied_to for o in checkpoint.tensors):
                self.aliases[t.name] = t.tied_to
            else:
                self.tensors.append(SourceTensor(t.name, t.shape, "float32"))
            self._states[t.name] = t.states

    def states(self, name: str) -> tuple[str, ...]:
        name = self.aliases.get(name, name)
        return tuple(s for s in self._states.get(name, ()) if s != "fp32")

    def _load(self, name: str, state: str) -> torch.Tensor:
        name = self.aliases.get(name, name)  # an alias holds its owner's values (or has no folder at all)
        path = self.checkpoint.path / "zero" / name / f"{state}.pt"
        obj, mapped = safe_pickle.load_mapped(path)
        value = obj.get("param") if isinstance(obj, dict) else obj
        import torch

        if not isinstance(value, torch.Tensor):
            if state == "step" and isinstance(value, (int, float)):
                return torch.tensor(value)
            raise CkptError(path, f"expected a tensor or a dict with 'param', found {type(obj).__name__}")
        out = value.clone()
        if mapped:
            release_mapped(value)
        if state == "step":
            return out
        shape = self.entry(name).shape
        if tuple(out.shape) != shape:
            if out.numel() != math.prod(shape):
                raise CkptError(path, f"holds {out.numel():,} values but '{name}' has shape {list(shape)}")
            out = out.view(shape)
        return out

    def _read(self, name: str) -> torch.Tensor:
        return self._load(name, "fp32")

    def _read_state(self, name: str, state: str) -> torch.Tensor:
        return self._load(name, state)


@dataclass(frozen=True)
class _Slot:
    """Where a trainable param lives in the flat buffers: group (ZeRO-1/2) and offset."""

    group: int
    offset: int
    numel: int


class ZeroSource(TensorSource):
    """fp32 master weights and Adam moments of a ZeRO 1/2/3 checkpoint, gathered across DP ranks."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__(checkpoint)
        from ckpt_tui.core.formats.deepspeed_zero import tag_dir_of

        self.tag_dir = tag_dir_of(checkpoint)
        self.stage = checkpoint.zero_stage
        self._models = [dc.load_model_states(p) for p in dc.model_states_files(self.tag_dir)]
        state0 = self._models[0]
        self._module = state0.get("module") or {}
        self.aliases = dict(checkpoint.shared_params)
        if self.stage in (None, 0):
            self._init_module_only(state0)
            return
        self._load_optim_files()
        shapes = dc.param_shapes(self.tag_dir, state0)
        self._slots = self._layout_zero3(shapes) if self.stage == 3 else self._layout_zero12(state0, shapes)
        for name, shape in shapes:
            self.tensors.append(SourceTensor(name, shape, "float32"))
        for name, shape in dc.frozen_shapes(state0).items():
            self.tensors.append(SourceTensor(name, shape, self._frozen_dtype(name), "frozen"))
        for name in state0.get("buffer_names") or []:
            value = self._module.get(name)
            if value is not None:
                self.tensors.append(SourceTensor(str(name), tuple(value.shape), dt.canonical(value.dtype), "buffer"))

    # -- layout ---------------------------------------------------------------------------------

    def _init_module_only(self, state0: dict) -> None:
        """Stage 0: the model_states 'module' holds the full weights."""
        for name, value in self._module.items():
            if hasattr(value, "shape") and name not in self.aliases:
                role = "buffer" if name in (state0.get("buffer_names") or []) else "param"
                self.tensors.append(SourceTensor(str(name), tuple(value.shape), dt.canonical(value.dtype), role))
        self._slots = {}
        self._optim = []
        self.checkpoint.warnings.append("ZeRO stage 0: values are the model_states weights (no fp32 partitions)")

    def _load_optim_files(self) -> None:
        files = sorted(
            (p for p in self.tag_dir.iterdir() if dc.OPTIM_STATES.match(p.name)),
            key=lambda p: int(dc.OPTIM_STATES.match(p.name).group(2)),
        )
        files = [p for p in files if int(dc.OPTIM_STATES.match(p.name).group(3)) == 0]  # mp rank 0
        if not files:
            raise CkptError(self.tag_dir, "no *_optim_states.pt files: the fp32 weights live there")
        self._optim: list[tuple[dict, bool]] = []
        for path in files:
            obj, mapped = safe_pickle.load_mapped(path)
            osd = obj.get("optimizer_state_dict") if isinstance(obj, dict) else None
            if not isinstance(osd, dict):
                raise CkptError(path, "not a DeepSpeed optimizer file (no 'optimizer_state_dict')")
            self._optim.append((osd, mapped))
        count = self._optim[0][0].get("partition_count")
        dp = max(count) if isinstance(count, list) else int(count or len(files))
        if dp != len(files):
            have = sorted(int(dc.OPTIM_STATES.match(p.name).group(2)) for p in files)
            missing = sorted(set(range(dp)) - set(have))
            raise CkptError(
                self.tag_dir,
                f"needs {dp} optimizer files (one per DP rank) but found {len(files)}"
                + (f": rank(s) {', '.join(map(str, missing))} missing" if missing else ""),
            )
        self.dp = dp
        self._files = files

    def _flat_groups(self, rank: int, state: str) -> list[torch.Tensor]:
        osd = self._optim[rank][0]
        if self.stage == 3:
            if state == "fp32":
                return list(osd["fp32_flat_groups"])
            per_sub = osd["optimizer_state_dict"]["state"]
        else:
            if state == "fp32":
                return list(osd["single_partition_of_fp32_groups"])
            per_sub = osd["base_optimizer_state"]["state"]
        return [per_sub[i][state] for i in sorted(per_sub)]

    def _layout_zero12(self, state0: dict, shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, _Slot]:
        groups = state0.get("param_shapes")
        groups = [groups] if isinstance(groups, dict) else list(groups)
        sizes = [t.numel() for t in self._flat_groups(0, "fp32")]
        for rank in range(1, self.dp):
            if [t.numel() for t in self._flat_groups(rank, "fp32")] != sizes:
                raise CkptError(self._files[rank], "its fp32 partitions differ in size from rank 0's")
        paddings = self._optim[0][0].get("param_alignment_paddings")
        slots = {}
        align = 2 * self.dp
        for g, group in enumerate(groups):
            offset = 0
            pads = paddings[g] if paddings is not None else None
            for i, (name, shape) in enumerate(group.items()):
                n = math.prod(int(d) for d in shape)
                slots[str(name)] = _Slot(g, offset, n)
                offset += n + (int(pads[i]) if pads is not None else 0)
            have = sizes[g] * self.dp
            if math.ceil(offset / align) * align != math.ceil(have / align) * align:
                raise CkptError(self._files[0], f"param group {g}: params need {offset:,} values, partitions hold {have:,}")
        return slots

    def _layout_zero3(self, shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, _Slot]:
        sizes = [t.numel() for t in self._flat_groups(0, "fp32")]
        self._sub_starts = [0]
        for s in sizes:
            self._sub_starts.append(self._sub_starts[-1] + s)
        slots = {}
        offset = 0
        for name, shape in shapes:
            n = math.prod(shape)
            slots[name] = _Slot(0, offset, n)
            offset += math.ceil(n / self.dp)
        if offset != self._sub_starts[-1]:
            raise CkptError(self._files[0], f"params need {offset:,} values per rank, partitions hold {self._sub_starts[-1]:,}")
        return slots

    # -- reading --------------------------------------------------------------------------------

    def _gather(self, slot: _Slot, state: str) -> torch.Tensor:
        import torch

        out = torch.empty(slot.numel, dtype=torch.float32)
        if self.stage == 3:
            part = math.ceil(slot.numel / self.dp)
            pos = 0
            for rank in range(self.dp):
                take = min(part, slot.numel - pos)
                if take <= 0:
                    break
                self._copy_span(rank, state, slot.offset, take, out.narrow(0, pos, take))
                pos += take
            return out
        size = self._flat_groups(0, state)[slot.group].numel()
        pos = 0
        while pos < slot.numel:
            where = slot.offset + pos
            rank, start = divmod(where, size)
            take = min(slot.numel - pos, size - start)
            src = self._flat_groups(rank, state)[slot.group].narrow(0, start, take)
            out.narrow(0, pos, take).copy_(src)
            self._release(rank, src)
            pos += take
        return out

    def _copy_span(self, rank: int, state: str, offset: int, count: int, dest: torch.Tensor) -> None:
        """ZeRO-3: copy `count` values at rank-local `offset`, which may cross sub-group buffers."""
        flats = self._flat_groups(rank, state)
        done = 0
        while done < count:
            at = offset + done
            sub = next(i for i in range(len(flats)) if self._sub_starts[i] <= at < self._sub_starts[i + 1])
            start = at - self._sub_starts[sub]
            take = min(count - done, flats[sub].numel() - start)
            src = flats[sub].narrow(0, start, take)
            dest.narrow(0, done, take).copy_(src)
            self._release(rank, src)
            done += take

    def _release(self, rank: int, tensor: torch.Tensor) -> None:
        if self._optim[rank][1]:
            release_mapped(tensor)

    def _frozen_dtype(self, name: str) -> str:
        value = (self._models[0].get("frozen_param_fragments") or {}).get(name)
        if value is None:
            value = self._module.get(name)
        return dt.canonical(value.dtype) if value is not None else "float32"

    def _read(self, name: str) -> torch.Tensor:
        name = self.aliases.get(name, name)
        entry = self.entry(name)
        if entry.role == "param" and name in self._slots:
            return self._gather(self._slots[name], "fp32").view(entry.shape)
        if entry.role == "frozen":
            return self._read_frozen(entry)
        value = self._module.get(name)
        if value is None:
            raise CkptError(self.tag_dir, f"'{name}' is not in the model_states module")
        return value.clone()

    def _read_frozen(self, entry: SourceTensor) -> torch.Tensor:
        import torch

        fragments = [(m.get("frozen_param_fragments") or {}).get(entry.name) for m in self._models]
        if self.stage == 3:
            if any(f is None for f in fragments):
                raise CkptError(self.tag_dir, f"frozen '{entry.name}' is missing from some rank's model_states")
            return torch.cat([f.reshape(-1) for f in fragments])[: entry.numel].view(entry.shape).clone()
        value = fragments[0] if fragments[0] is not None else self._module.get(entry.name)
        if value is None:
            raise CkptError(self.tag_dir, f"frozen '{entry.name}' has no stored values")
        return value.reshape(entry.shape).clone()

    def states(self, name: str) -> tuple[str, ...]:
        name = self.aliases.get(name, name)
        if name not in self._slots:
            return ()
        return (*ADAM_STATES, "step") if self._has_adam() else ()

    def _has_adam(self) -> bool:
        try:
            groups = self._flat_groups(0, "exp_avg")
        except (KeyError, TypeError):
            return False
        return bool(groups)

    def _read_state(self, name: str, state: str) -> torch.Tensor:
        import torch

        name = self.aliases.get(name, name)
        slot = self._slots[name]
        if state == "step":
            osd = self._optim[0][0]
            per_sub = osd["optimizer_state_dict"]["state"] if self.stage == 3 else osd["base_optimizer_state"]["state"]
            group = slot.group if self.stage != 3 else self._sub_of(slot.offset)
            step = per_sub[sorted(per_sub)[group]].get("step")
            return torch.as_tensor(step).clone() if step is not None else torch.tensor(0)
        return self._gather(slot, state).view(self.entry(name).shape)

    def _sub_of(self, offset: int) -> int:
        return next(i for i in range(len(self._sub_starts) - 1) if self._sub_starts[i] <= offset < self._sub_starts[i + 1])

    def optimizer_state(self, rank: int = 0) -> dict[str, Any]:
        """The rank's optimizer_state_dict (tensors still mapped), for converters that copy its metadata."""
        return self._optim[rank][0]

    def close(self) -> None:
        self._optim = []
        self._models = []
        self._module = {}
