"""Values of a DeepSpeed ZeRO 1/2/3 checkpoint: fp32 master weights and Adam moments, assembled from pieces.

Every trainable parameter is a list of :class:`~ckpt_tui.core.model.Piece` s, one per DP rank that holds
part of it: a run of its flattened values (``flat``) at an offset (``at``) of that rank's flat partition.

- ZeRO-1/2 keep one flat buffer per param group: params packed back to back (plus alignment padding),
  the buffer split evenly across ranks, so a param spans the ranks its values fall on.
- ZeRO-3 partitions every param on its own, ceil(numel/dp) values per rank (see
  ``deepspeed_zero.zero3_pieces``); a rank's partition is cut into sub-group buffers that a piece may cross.

A TP x PP checkpoint has such a set of partitions per model-parallel rank (``_Partitions``); a parameter's
full tensor is its TP ranks' slices merged by its rule (``deepspeed_mp`` / ``deepspeed_tp_rules``).

Reading maps each rank's optimizer file once and copies piece by piece, releasing the pages it read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core import safe_pickle
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import deepspeed_common as dc
from ckpt_tui.core.formats import deepspeed_mp as mp
from ckpt_tui.core.formats.deepspeed_tp_placement import Placement, placements
from ckpt_tui.core.formats.deepspeed_zero import tag_dir_of, zero3_pieces
from ckpt_tui.core.memory import release_mapped
from ckpt_tui.core.model import Checkpoint, Piece
from ckpt_tui.core.sources import ADAM_STATES, DeepSpeedState, SourceTensor, TensorSource

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class _Slot:
    """Where a trainable param starts in the flat buffers: group (ZeRO-1/2) and offset."""

    group: int
    offset: int
    numel: int


class _Partitions:
    """One model-parallel rank's fp32 weights and Adam moments, spread over its DP ranks' optimizer files."""

    def __init__(self, root: Path, tag_dir: Path, stage: int, mp_rank: int, state: dict, model_file: Path) -> None:
        self.root, self.tag_dir, self.stage, self.mp_rank = root, tag_dir, stage, mp_rank
        self.pieces: dict[str, tuple[Piece, ...]] = {}
        self.slots: dict[str, _Slot] = {}
        self._optim: list[tuple[dict, bool]] = []
        self._load_optim_files()
        shapes = dc.param_shapes(model_file, state)
        if stage == 3:
            self._layout_zero3(shapes)
        else:
            self._layout_zero12(state)

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def _load_optim_files(self) -> None:
        ranked = dc.optim_files(self.tag_dir, self.mp_rank)
        if not ranked:
            which = f" of mp rank {self.mp_rank}" if self.mp_rank else ""
            raise CkptError(self.tag_dir, f"no *_optim_states.pt files{which}: the fp32 weights live there")
        files = [path for _, path in ranked]
        for path in files:
            obj, mapped = safe_pickle.load_mapped(path)
            osd = obj.get("optimizer_state_dict") if isinstance(obj, dict) else None
            if not isinstance(osd, dict):
                raise CkptError(path, "not a DeepSpeed optimizer file (no 'optimizer_state_dict')")
            self._optim.append((osd, mapped))
        count = self._optim[0][0].get("partition_count")
        dp = max(count) if isinstance(count, list) else int(count or len(files))
        ranks = [rank for rank, _ in ranked]
        if dp != len(files) or ranks != list(range(dp)):
            missing = sorted(set(range(dp)) - set(ranks))
            which = f" of mp rank {self.mp_rank}" if self.mp_rank else ""
            raise CkptError(
                self.tag_dir,
                f"needs {dp} optimizer files{which} (one per DP rank) but found {len(files)}"
                + (f": rank(s) {', '.join(map(str, missing))} missing" if missing else ""),
            )
        self.dp = dp
        self.files = files

    def optimizer(self) -> dict[str, Any]:
        """DP rank 0's optimizer file dict (its scalars and param groups)."""
        return self._optim[0][0]

    def flat_groups(self, rank: int, state: str) -> list[torch.Tensor]:
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

    def _layout_zero12(self, state: dict) -> None:
        groups = state.get("param_shapes")
        groups = [groups] if isinstance(groups, dict) else list(groups)
        sizes = [t.numel() for t in self.flat_groups(0, "fp32")]
        for rank in range(1, self.dp):
            if [t.numel() for t in self.flat_groups(rank, "fp32")] != sizes:
                raise CkptError(self.files[rank], "its fp32 partitions differ in size from rank 0's")
        if len(groups) != len(sizes):
            raise CkptError(self.files[0], f"holds {len(sizes)} param groups, model_states lists {len(groups)}")
        paddings = self._optim[0][0].get("param_alignment_paddings")
        align = 2 * self.dp
        files = [self._rel(p) for p in self.files]
        for g, group in enumerate(groups):
            offset = 0
            pads = paddings[g] if paddings is not None else None
            size = sizes[g]
            for i, (name, shape) in enumerate(group.items()):
                n = math.prod(int(d) for d in shape)
                self.slots[str(name)] = _Slot(g, offset, n)
                pieces, pos = [], 0
                while pos < n and size:
                    rank, start = divmod(offset + pos, size)
                    take = min(n - pos, size - start)
                    if rank >= self.dp:
                        break  # caught below: the params need more values than the partitions hold
                    pieces.append(Piece(files[rank], rank=rank, flat=(pos, take), at=start, group=g))
                    pos += take
                self.pieces[str(name)] = tuple(pieces)
                offset += n + (int(pads[i]) if pads is not None else 0)
            have = size * self.dp
            if math.ceil(offset / align) * align != math.ceil(have / align) * align:
                raise CkptError(self.files[0], f"param group {g}: params need {offset:,} values, partitions hold {have:,}")

    def _layout_zero3(self, shapes: list[tuple[str, tuple[int, ...]]]) -> None:
        sizes = [t.numel() for t in self.flat_groups(0, "fp32")]
        self._sub_starts = [0]
        for s in sizes:
            self._sub_starts.append(self._sub_starts[-1] + s)
        files = [self._rel(p) for p in self.files]
        offset = 0
        for name, shape in shapes:
            n = math.prod(shape)
            self.slots[name] = _Slot(0, offset, n)
            self.pieces[name] = zero3_pieces(n, offset, files)
            offset += math.ceil(n / self.dp)
        if offset != self._sub_starts[-1]:
            raise CkptError(self.files[0], f"params need {offset:,} values per rank, partitions hold {self._sub_starts[-1]:,}")

    def assemble(self, name: str, state: str) -> torch.Tensor:
        """A trainable param's values of one state (fp32, exp_avg, ...) from its pieces, flat."""
        import torch

        out = torch.empty(self._slot(name).numel, dtype=torch.float32)
        for piece in self.pieces[name]:
            start, count = piece.flat  # type: ignore[misc]
            for at, values in self._chunks(piece, state, 0, count):
                out.narrow(0, start + at, values.numel()).copy_(values)
        return out

    def place(self, name: str, state: str, placed: tuple[Placement, ...], full: torch.Tensor) -> None:
        """Copy this rank's values of a param's state straight to their places in the flat full tensor."""
        self._slot(name)
        for piece in self.pieces[name]:
            start, count = piece.flat  # type: ignore[misc]
            for p in placed:
                lo, hi = max(start, p.start), min(start + count, p.start + p.count)
                if lo < hi:
                    for at, values in self._chunks(piece, state, lo - start, hi - lo):
                        p.put(full, lo + at - p.start, values)

    def _slot(self, name: str) -> _Slot:
        slot = self.slots.get(name)
        if slot is None:
            raise CkptError(self.tag_dir, f"mp rank {self.mp_rank}'s partitions hold no '{name}'")
        return slot

    def _chunks(self, piece: Piece, state: str, skip: int, count: int) -> Iterator[tuple[int, torch.Tensor]]:
        """(position from `skip`, values): `count` values of a piece's run from `skip` on, read from its rank's
        flat buffers (ZeRO-3: crossing sub-group buffers). Each chunk's pages are released once the caller
        has used it (when the generator resumes)."""
        rank = int(piece.rank or 0)
        flats = self.flat_groups(rank, state)
        if self.stage != 3:
            src = flats[piece.group].narrow(0, piece.at + skip, count)
            yield 0, src
            self._release(rank, src)
            return
        done = 0
        while done < count:
            at = piece.at + skip + done
            sub = self._sub_of(at)
            start = at - self._sub_starts[sub]
            take = min(count - done, flats[sub].numel() - start)
            if take <= 0:
                raise CkptError(self.files[rank], f"its flat partition ends {count - done:,} values short")
            src = flats[sub].narrow(0, start, take)
            yield done, src
            self._release(rank, src)
            done += take

    def _release(self, rank: int, tensor: torch.Tensor) -> None:
        if self._optim[rank][1]:
            release_mapped(tensor)

    def has_adam(self) -> bool:
        try:
            groups = self.flat_groups(0, "exp_avg")
        except (KeyError, TypeError):
            return False
        return bool(groups)

    def step(self, name: str) -> torch.Tensor:
        import torch

        slot = self.slots[name]
        osd = self._optim[0][0]
        per_sub = osd["optimizer_state_dict"]["state"] if self.stage == 3 else osd["base_optimizer_state"]["state"]
        group = slot.group if self.stage != 3 else self._sub_of(slot.offset)
        step = per_sub[sorted(per_sub)[group]].get("step")
        return torch.as_tensor(step).clone() if step is not None else torch.tensor(0)

    def _sub_of(self, offset: int) -> int:
        """ZeRO-3: the sub-group buffer that holds a rank-local offset (binary search)."""
        import bisect

        sub = bisect.bisect_right(self._sub_starts, offset) - 1
        return min(max(sub, 0), len(self._sub_starts) - 2)

    def close(self) -> None:
        self._optim = []


def _runs_of_block(block: Piece, runs: tuple[Piece, ...]) -> list[Piece]:
    """A rank's ZeRO runs as runs of its one block of the full tensor.

    The block may be a prefix of the rank's slice: a vocabulary-padded slice's padding rows (at its end)
    are not part of the full tensor, so the runs are cut where the block ends.
    """
    limit = math.prod(block.sizes or ())
    out = []
    for r in runs:
        start, count = r.flat  # type: ignore[misc]
        if start < limit:
            out.append(replace(block, file=r.file, rank=r.rank, flat=(start, min(count, limit - start)), at=r.at, group=r.group))
    return out


class ZeroSource(TensorSource):
    """fp32 master weights and Adam moments of a ZeRO 1/2/3 checkpoint, gathered across DP (and TP, PP) ranks."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__(checkpoint)
        self.tag_dir = tag_dir_of(checkpoint)
        self.stage = checkpoint.zero_stage
        if self.stage in (None, 0) and dc.bf16_optim_files(self.tag_dir, 0):
            self.stage = 1  # the BF16 optimizer (stage 0 + bf16): fp32 partitions in ZeRO-1's flat layout
        model_files = dc.model_states_files(self.tag_dir)
        self._models = [dc.load_model_states(p) for p in model_files]
        self._model_of = {self._rel(p): m for p, m in zip(model_files, self._models)}
        state0 = self._models[0]
        self._module = state0.get("module") or {}
        self.aliases = dict(checkpoint.shared_params)
        self._parts: dict[int, _Partitions] = {}
        self._placed: dict[str, tuple[tuple[Placement, ...], ...] | None] = {}
        if self.stage in (None, 0):
            self._init_module_only(state0)
            return
        by_file = dict(zip(model_files, self._models))
        mp_files = dc.mp_model_states(self.tag_dir)
        states = {m: by_file[path] for m, path in mp_files.items()}
        layout = checkpoint.layout
        self.grid = mp.build(states, mp_files, layout.tp, layout.pp)
        self.warnings.extend(self.grid.warnings)
        self._mp_files = {m: self._rel(path) for m, path in mp_files.items()}
        for m, state in states.items():
            self._parts[m] = _Partitions(checkpoint.path, self.tag_dir, int(self.stage), m, state, mp_files[m])
        for param in self.grid.params.values():
            if param.frozen:
                self.tensors.append(SourceTensor(param.name, param.shape, self._frozen_dtype(param), "frozen"))
            else:
                self.tensors.append(SourceTensor(param.name, param.shape, "float32"))
        for name in state0.get("buffer_names") or []:
            value = self._module.get(name)
            if value is not None and name not in self.grid.params:
                self.tensors.append(SourceTensor(str(name), tuple(value.shape), dt.canonical(value.dtype), "buffer"))

    def _rel(self, path) -> str:  # noqa: ANN001
        return str(path.relative_to(self.checkpoint.path))

    def _init_module_only(self, state0: dict) -> None:
        """Stage 0: the model_states 'module' holds the full weights."""
        if self.checkpoint.layout.tp * self.checkpoint.layout.pp > 1:
            raise CkptError(self.tag_dir, "ZeRO stage 0 with tensor or pipeline parallelism: no fp32 partitions to merge")
        buffers = set(state0.get("buffer_names") or [])
        for name, value in self._module.items():
            if hasattr(value, "shape") and name not in self.aliases:
                role = "buffer" if name in buffers else "param"
                self.tensors.append(SourceTensor(str(name), tuple(value.shape), dt.canonical(value.dtype), role))
        self.warnings.append("ZeRO stage 0: values are the model_states weights (no fp32 partitions)")

    # -- where values are ------------------------------------------------------------------------

    def pieces(self, name: str) -> tuple[Piece, ...]:
        owner = self.aliases.get(name, name)
        param = self.grid.params.get(owner) if self._parts else None
        if param is None or param.frozen:
            return super().pieces(owner)
        if not self.grid.sharded:
            return self._parts[0].pieces.get(owner) or super().pieces(owner)
        out: list[Piece] = []
        boxes = self.grid.pieces(owner, self._mp_files)
        for tp in range(self.grid.tp):
            mine = [b for b in boxes if b.tp == tp]
            part = self._parts[param.slices[tp][0]]
            if len(mine) == 1:  # the rank's slice is one block: its DP runs are runs of that block
                out += _runs_of_block(mine[0], part.pieces[owner])
            else:
                out += [replace(b, file=self._rel(part.files[0])) for b in mine]
        return tuple(out)

    def deepspeed_state(self) -> DeepSpeedState | None:
        if self.stage not in (1, 2, 3):
            return None  # stage 0: weights in model_states only, no optimizer partitions to carry
        return DeepSpeedState(int(self.stage), self.tag_dir, False, self._parts[0].optimizer, hints=self._hints)

    def _hints(self, name: str) -> dict[str, Any]:
        param = self.grid.params.get(name)
        return param.split.hints() if param is not None else {}

    # -- reading --------------------------------------------------------------------------------

    def _merged(self, param: mp.MpParam, state: str) -> torch.Tensor:
        """The full tensor of one state: each TP rank's runs copied straight to their places in it, or,
        for rules that need every slice at once, each TP rank's slice gathered over DP, then the rule."""
        import torch

        try:
            placed = self._placements(param)
            if placed is None:
                slices = [
                    self._parts[m].assemble(param.name, state).view(local) if math.prod(local) else torch.empty(local)
                    for m, local in param.slices
                ]
                return param.split.merge(slices, state).reshape(param.shape)
            full = torch.empty(param.numel, dtype=torch.float32)
            for (m, _), runs in zip(param.slices, placed):
                if runs:
                    self._parts[m].place(param.name, state, runs, full)
            return full.view(param.shape)
        except (ValueError, RuntimeError) as exc:
            raise CkptError(self.tag_dir, f"cannot merge the TP slices of '{param.name}' ({state}): {exc}") from None

    def _placements(self, param: mp.MpParam) -> tuple[tuple[Placement, ...], ...] | None:
        if param.name not in self._placed:
            self._placed[param.name] = placements(param.split, [local for _, local in param.slices])
        return self._placed[param.name]

    def _frozen_dtype(self, param: mp.MpParam) -> str:
        state = self._model_of.get(self._rel_mp(param.slices[0][0]), self._models[0])
        value = (state.get("frozen_param_fragments") or {}).get(param.name)
        if value is None:
            value = (state.get("module") or {}).get(param.name)
        return dt.canonical(value.dtype) if value is not None else "float32"

    def _rel_mp(self, mp_rank: int) -> str:
        return self._mp_files.get(mp_rank, "")

    def _read(self, name: str) -> torch.Tensor:
        name = self.aliases.get(name, name)
        entry = self.entry(name)
        param = self.grid.params.get(name) if self._parts else None
        if entry.role == "param" and param is not None:
            return self._merged(param, "fp32")
        if entry.role == "frozen" and param is not None:
            return self._read_frozen(param)
        value = self._module.get(name)
        if value is None:
            raise CkptError(self.tag_dir, f"'{name}' is not in the model_states module")
        return value.clone()

    def _read_frozen(self, param: mp.MpParam) -> torch.Tensor:
        """Frozen params: whole in model_states (ZeRO-1/2: per mp rank, merged by the TP rule), or a
        fragment per DP rank's model_states (ZeRO-3)."""
        import torch

        entry = self.entry(param.name)
        if self.stage == 3:
            if self.grid.sharded:
                raise CkptError(self.tag_dir, f"frozen '{param.name}' of a ZeRO-3 TP checkpoint: not supported yet")
            out = torch.empty(entry.numel, dtype=getattr(torch, entry.dtype))
            pieces = super().pieces(entry.name)
            if sum(p.numel or 0 for p in pieces) != entry.numel:
                raise CkptError(self.tag_dir, f"frozen '{entry.name}' is missing from some rank's model_states")
            for piece in pieces:
                start, count = piece.flat  # type: ignore[misc]
                fragment = (self._model_of.get(piece.file, {}).get("frozen_param_fragments") or {}).get(entry.name)
                if fragment is None or fragment.numel() < count:
                    raise CkptError(self.checkpoint.path / piece.file, f"frozen '{entry.name}' has no fragment of {count:,} values")
                out.narrow(0, start, count).copy_(fragment.reshape(-1).narrow(0, 0, count))
            return out.view(entry.shape)
        slices = []
        for m, local in param.slices:
            state = self._model_of.get(self._rel_mp(m), {})
            fragment = (state.get("frozen_param_fragments") or {}).get(param.name)
            value = fragment if fragment is not None else (state.get("module") or {}).get(param.name)
            if value is None:
                raise CkptError(self.tag_dir, f"frozen '{param.name}' has no stored values")
            slices.append(value.reshape(local).clone())
        try:
            return param.split.merge(slices, "fp32").reshape(param.shape)
        except (ValueError, RuntimeError) as exc:
            raise CkptError(self.tag_dir, f"cannot merge the TP slices of frozen '{param.name}': {exc}") from None

    def states(self, name: str) -> tuple[str, ...]:
        name = self.aliases.get(name, name)
        param = self.grid.params.get(name) if self._parts else None
        if param is None or param.frozen:
            return ()
        return (*ADAM_STATES, "step") if self._parts[param.slices[0][0]].has_adam() else ()

    def _read_state(self, name: str, state: str) -> torch.Tensor:
        name = self.aliases.get(name, name)
        param = self.grid.params[name]
        if state == "step":
            return self._parts[param.slices[0][0]].step(name)
        return self._merged(param, state)

    def close(self) -> None:
        for part in self._parts.values():
            part.close()
        self._parts = {}
        self._models = []
        self._model_of = {}
        self._module = {}
