"""What a conversion to universal writes, per kind of source: the zero/ folders and how to read them,
zero/optimizer_state.pt, and the model_states file(s). See to_universal.py for the choices made.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckpt_tui.core import safe_pickle
from ckpt_tui.core.convert import universal_layout as ul
from ckpt_tui.core.errors import CkptError, OptionError
from ckpt_tui.core.formats import deepspeed_common as dc
from ckpt_tui.core.memory import release_mapped
from ckpt_tui.core.model import Checkpoint
from ckpt_tui.core.sources import DeepSpeedState, TensorSource

if TYPE_CHECKING:
    import torch

FLOATS = {"float32", "float16", "bfloat16", "float64"}


@dataclass(frozen=True)
class Item:
    """One folder under zero/: a trainable parameter (fp32 + Adam state) or an fp32-only entry."""

    name: str
    shape: tuple[int, ...]
    trainable: bool

    @property
    def nbytes(self) -> int:
        return ul.numel(self.shape) * 4 * (3 if self.trainable else 1)


def make_plan(ckpt: Checkpoint, source: TensorSource, stage: int, step: int) -> Plan:
    """The plan for what the source carries: DeepSpeed partitions, a universal folder, or weights only.

    Asked of the source (``deepspeed_state``), never of its kind: a new kind of source with no
    DeepSpeed state (HF, DCP) is converted as weights with a fresh optimizer.
    """
    ds = source.deepspeed_state()
    if ds is None:
        return WeightsPlan(ckpt, source, stage, step)  # HF, ZeRO-0, a weights-only universal folder
    if ds.universal:
        return _UniversalPlan(ckpt, source, stage, step, ds)
    return _ZeroPlan(ckpt, source, stage, step, ds)


# ------------------------------------------------------------------------------------------- plans
class Plan:
    """What one conversion writes: the zero/ folders in order, optimizer_state.pt, model_states."""

    def __init__(self, ckpt: Checkpoint, source: TensorSource, stage: int, step: int) -> None:
        self.ckpt, self.source, self.stage, self.step = ckpt, source, stage, step
        self.layout = ul.layout_of(stage)
        self.items: list[Item] = []
        self._by_name: dict[str, Item] | None = None

    def item(self, name: str) -> Item:
        if self._by_name is None:
            self._by_name = {i.name: i for i in self.items}
        return self._by_name[name]

    def states(self, name: str) -> tuple[str, ...]:
        """The files of one folder, in the order they are written: "fp32", then for a trainable
        parameter "exp_avg", "exp_avg_sq" and "step"."""
        return (ul.FP32, *ul.MOMENTS, "step") if self.item(name).trainable else (ul.FP32,)

    def read_state(self, name: str, state: str) -> torch.Tensor:
        """One file's tensor (called on read-ahead threads, one state at a time to bound memory)."""
        raise NotImplementedError

    def hints(self, name: str) -> dict[str, Any] | None:
        """What a trainable parameter's files store beside its tensor; None: the layout's default
        ({"cat_dim": 0} for ZeRO-1/2, a bare flat tensor for ZeRO-3)."""
        return None

    def optimizer_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def borrow_hints(self, reference: Checkpoint, ref_source: TensorSource) -> None:
        """--hints-from: only a weights-only source takes another checkpoint's restore hints."""
        raise OptionError("hints_from", "--hints-from is for a weights-only source (HF): this checkpoint has "
                                        "restore hints of its own")

    def write_optimizer_state(self, zero: Path) -> None:
        ul.save(self.optimizer_state(), zero / ul.OPTIMIZER_STATE)

    def write_model_states(self, tmp: Path) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Drop mapped files."""


class WeightsPlan(Plan):
    """HF weights (or a ZeRO-0 save): fp32 masters, zero Adam moments, step 0, a model_states of our own."""

    def __init__(self, ckpt: Checkpoint, source: TensorSource, stage: int, step: int) -> None:
        super().__init__(ckpt, source, stage, step)
        self.borrowed: Callable[[str], dict[str, Any]] | None = None  # see borrow_hints
        self.owner: dict[str, str] = {}
        self.buffers: list[str] = []
        for t in source.tensors:
            trainable = t.role == "param" and t.dtype in FLOATS
            if not trainable:
                self.buffers.append(t.name)
                if self.layout == "zero3":
                    continue  # ds_to_universal writes no buffer folders for ZeRO-3
            self.items.append(Item(t.name, t.shape, trainable))
        if self.layout == "zero12":  # ds_to_universal writes tied aliases an fp32-only folder
            for alias, owner in source.aliases.items():
                self.owner[alias] = owner
                self.items.append(Item(alias, source.entry(owner).shape, False))

    def read_state(self, name: str, state: str) -> torch.Tensor:
        import torch

        if state == ul.FP32:
            return self.source.read(self.owner.get(name, name)).to(torch.float32)
        if state == "step":
            return _fresh_step()
        return torch.zeros(self.item(name).shape, dtype=torch.float32)  # Adam moments start at zero

    def optimizer_state(self) -> dict[str, Any]:
        return ul.fresh_optimizer_state(self.stage, _fresh_step())

    def hints(self, name: str) -> dict[str, Any] | None:
        return self.borrowed(name) if self.borrowed is not None else None

    def borrow_hints(self, reference: Checkpoint, ref_source: TensorSource) -> None:
        """Take the restore hints of a DeepSpeed checkpoint of the same model (same names, full shapes).

        Weights alone do not say how a TP run splits them; without hints DeepSpeed's loader can only
        resume at the shapes it finds (a padded vocabulary or another TP degree fails to load).
        """
        ds = ref_source.deepspeed_state()
        if ds is None:
            raise OptionError("hints_from", f"{reference.path} is not a DeepSpeed checkpoint: it has no restore hints to lend")
        shapes = {t.name: t.shape for t in reference.tensors}
        for item in self.items:
            if not item.trainable:
                continue
            if item.name not in shapes:
                raise OptionError("hints_from", f"{reference.path} has no parameter '{item.name}': the hints must "
                                                "come from a checkpoint of the same model, with the same names")
            if tuple(shapes[item.name]) != tuple(item.shape):
                raise OptionError("hints_from", f"'{item.name}' is {list(item.shape)} here but {list(shapes[item.name])} "
                                                f"in {reference.path}: not the same model")
        self.borrowed = ds.hints

    def write_model_states(self, tmp: Path) -> None:
        state = ul.model_states(
            stage=self.stage,
            step=self.step,
            param_shapes=[(i.name, i.shape) for i in self.items if i.trainable],
            shared_params=dict(self.source.aliases),
            buffer_names=self.buffers,
        )
        ul.save(state, tmp / ul.model_states_name(self.stage))


def _fresh_step() -> torch.Tensor:
    """Adam's step before its first update, as torch.optim.AdamW keeps it (a float32 scalar tensor)."""
    import torch

    return torch.tensor(0.0)


class _DeepSpeedPlan(Plan):
    """Sources written by DeepSpeed (ZeRO or universal): model_states are copied, or rewritten if needed."""

    source_stage: int = 1

    def __init__(self, ckpt: Checkpoint, source: TensorSource, stage: int, step: int, folder: Path) -> None:
        super().__init__(ckpt, source, stage, step)
        self.folder = folder
        self.ds_hints = source.deepspeed_state().hints  # type: ignore[union-attr]
        self.model_files = dc.model_states_files(folder)
        if not self.model_files:
            raise CkptError(folder, "no model_states file to carry over")
        self.model0, self.model0_mapped = safe_pickle.load_mapped(self.model_files[0])
        self.module = self.model0.get("module") or {}

    def hints(self, name: str) -> dict[str, Any] | None:
        if self.layout == "zero3" and self.ckpt.layout.tp == 1:
            return None  # bare flat tensors, as for any DP-only ZeRO-3 source
        return self.ds_hints(name)

    @property
    def same_layout(self) -> bool:
        return (self.source_stage == 3) == (self.stage == 3)

    def write_model_states(self, tmp: Path) -> None:
        """Copied as they are (ds_to_universal does); rewritten when the step or the layout changes.

        A rewrite leaves 'module' empty: the universal loader takes weights from zero/, never from it,
        and re-saving it would page the whole model in.
        """
        source_step = self.model0.get("global_steps")
        if self.same_layout and source_step == self.step:
            for f in self.model_files:
                shutil.copy2(f, tmp / f.name)
            return
        # the other layout: one file per model-parallel rank (the engine checks their count against the
        # saved mp_world_size), named the way the target stage's engine globs them
        files = {m: f for m, f in enumerate(self.model_files)} if self.same_layout else dc.mp_model_states(self.folder)
        for mp_rank, f in files.items():
            state = dict(safe_pickle.load(f))
            if state.get("global_steps") != self.step:
                state["global_steps"] = self.step
                state.pop("global_samples", None)  # DeepSpeed recomputes it as steps x batch
            state["module"] = {}
            name = f.name if self.same_layout else ul.model_states_name(self.stage, mp_rank)
            ul.save(state, tmp / name)

    def cross_optimizer_state(self, osd: dict[str, Any], param_groups: list[dict], step: Any) -> dict[str, Any]:
        """optimizer_state.pt for the other layout, from the scalars the loaders read."""
        keys = ("loss_scaler", "dynamic_loss_scale", "overflow", "clip_grad", "ds_version")
        scalars = {k: osd[k] for k in keys if k in osd}
        if "ds_version" not in scalars and self.ckpt.ds_version:
            scalars["ds_version"] = self.ckpt.ds_version
        return ul.optimizer_state(self.stage, scalars=scalars, param_groups=param_groups, step=step)

    def module_value(self, name: str, shape: tuple[int, ...]) -> torch.Tensor | None:
        """A module entry as stored (ZeRO-1/2 model_states keep full 16/32-bit weights), or None."""
        value = self.module.get(name)
        if value is None or not hasattr(value, "numel") or value.numel() != ul.numel(shape):
            return None
        import torch

        out = value.reshape(shape).to(torch.float32, copy=True)
        if self.model0_mapped:
            release_mapped(value)
        return out

    def close(self) -> None:
        self.model0, self.module = {}, {}


class _ZeroPlan(_DeepSpeedPlan):
    """ZeRO 1/2/3: fp32 masters and Adam moments gathered across ranks (sources.ZeroSource)."""

    def __init__(self, ckpt: Checkpoint, source: TensorSource, stage: int, step: int, ds: DeepSpeedState) -> None:
        super().__init__(ckpt, source, stage, step, ds.folder)
        self.source_stage = ds.stage
        self.source_optimizer = ds.optimizer
        params = [t for t in source.tensors if t.role == "param"]
        self.items = [Item(t.name, t.shape, True) for t in params]
        known = {t.name for t in params}
        if self.layout == "zero12":
            # ds_to_universal: every module entry without optimizer state gets an fp32-only folder
            # (tied aliases, frozen params, buffers), in module order.
            names = [n for n in self.module if n not in known]
            names += [t.name for t in source.tensors if t.role != "param" and t.name not in self.module]
            names += [a for a in source.aliases if a not in self.module]
            names = list(dict.fromkeys(names))
        else:
            names = [t.name for t in source.tensors if t.role == "frozen"]
        for name in names:
            try:
                shape = source.entry(name).shape
            except CkptError:
                value = self.module.get(name)
                if value is None:
                    continue
                shape = tuple(value.shape)
            self.items.append(Item(name, shape, False))
        self.trainable = known

    def states(self, name: str) -> tuple[str, ...]:
        return (ul.FP32, *self.source.states(name)) if name in self.trainable else (ul.FP32,)

    def read_state(self, name: str, state: str) -> torch.Tensor:
        import torch

        if state != ul.FP32:
            return self.source.read_state(name, state)
        if name in self.trainable:
            return self.source.read(name)
        shape = self.item(name).shape
        value = self.module_value(name, shape)
        return value if value is not None else self.source.read(name).to(torch.float32).reshape(shape)

    def optimizer_state(self) -> dict[str, Any]:
        osd = self.source_optimizer()
        if self.source_stage == 3:
            inner = osd["optimizer_state_dict"]
            groups, steps = inner["param_groups"], inner["state"]
            if self.stage == 3:  # rank 0's file, less its flat partitions
                out = {k: v for k, v in osd.items() if k != "fp32_flat_groups"}
                out["optimizer_state_dict"] = {
                    "state": {i: {"step": s["step"]} for i, s in steps.items() if "step" in s},
                    "param_groups": groups,
                }
                out["param_groups"] = groups
                return out
        else:
            base = osd["base_optimizer_state"]
            groups, steps = base["param_groups"], base["state"]
            if self.stage != 3:  # exactly ds_to_universal's: rank 0's file less its partitions
                out = {k: v for k, v in osd.items() if k not in ul.SHARDED_KEYS}
                out["param_groups"] = groups
                return out
        step = steps[min(steps)].get("step") if steps else None
        return self.cross_optimizer_state(osd, groups, step if step is not None else _fresh_step())


class _UniversalPlan(_DeepSpeedPlan):
    """A universal folder rewritten for another layout or step."""

    def __init__(self, ckpt: Checkpoint, source: TensorSource, stage: int, step: int, ds: DeepSpeedState) -> None:
        super().__init__(ckpt, source, stage, step, ds.folder)
        self.source_stage = ds.stage
        self.global_state = ds.optimizer()
        trainable = {n for n, _ in dc.param_shapes(self.model_files[0], self.model0)}
        frozen = dc.frozen_shapes(self.model0)
        for t in source.tensors:
            is_param = t.name in trainable or "exp_avg" in source.states(t.name)
            if is_param or self.layout == "zero12" or t.name in frozen:
                self.items.append(Item(t.name, t.shape, is_param))
        if self.layout == "zero12":
            self.items += [Item(a, source.entry(o).shape, False) for a, o in source.aliases.items()]

    def read_state(self, name: str, state: str) -> torch.Tensor:
        import torch

        if state == ul.FP32:
            return self.source.read(name)  # UniversalSource resolves a tied alias to its owner
        if state in self.source.states(name):
            return self.source.read_state(name, state)
        return self._global_step() if state == "step" else torch.zeros(self.item(name).shape)

    def _global_step(self) -> Any:
        steps = (self.global_state.get("optimizer_state_dict") or {}).get("state") or {}
        step = steps[min(steps)].get("step") if steps else None
        return step if step is not None else _fresh_step()

    def write_optimizer_state(self, zero: Path) -> None:
        if self.same_layout:
            shutil.copy2(self.folder / ul.ZERO / ul.OPTIMIZER_STATE, zero / ul.OPTIMIZER_STATE)
        else:
            super().write_optimizer_state(zero)

    def optimizer_state(self) -> dict[str, Any]:
        groups = self.global_state.get("param_groups") or [{"params": []}]
        step = self._global_step()
        if self.source_stage != 3:
            trainable = [i.name for i in self.items if i.trainable]
            if trainable and "step" in self.source.states(trainable[0]):
                step = self.source.read_state(trainable[0], "step")
        return self.cross_optimizer_state(self.global_state, groups, step)
