"""HF / ZeRO / universal -> DeepSpeed universal with ours, checked against DeepSpeed's own files.

ZeRO sources are compared with the fixture's ``ds_to_universal`` output folder by folder and tensor by
tensor (bitwise). Loading in DeepSpeed's engine is in test_resume.py. These tests read our own fixture
files and our own outputs, so ``torch.load(weights_only=False)`` is fine here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from ckpt_tui.core.convert.api import ConvertOptions, convert
from ckpt_tui.core.convert.job import TMP_TAG, Cancelled, JobControl, Progress, leftovers
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.inspect import open_checkpoint
from ckpt_tui.core.sources import open_source
from ckpt_tui.demo.launch import run_ds_to_universal
from tests.fixtures import ALL_ZERO, Fixture
from tests.helpers import REPO, tree_hash

STATES = ("fp32", "exp_avg", "exp_avg_sq")


def _load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=False)


def param_folders(universal: Path) -> set[str]:
    return {p.name for p in (universal / "zero").iterdir() if p.is_dir()}


def assert_same_file(ours: Path, ref: Path) -> None:
    a, b = _load(ours), _load(ref)
    if isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys(), (ours, a.keys() if isinstance(a, dict) else type(a))
        a, b = a["param"], b["param"]
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (ours, a.dtype, a.shape, b.dtype, b.shape)
    assert torch.equal(a, b), ours


def ref_universal(fixtures: dict[str, Fixture], fid: str) -> Fixture:
    return fixtures[fixtures[fid].derived["universal"]]


# ------------------------------------------------------------------------- ZeRO -> universal
@pytest.mark.parametrize("fid", ALL_ZERO)
def test_zero_matches_ds_to_universal(fixtures: dict[str, Fixture], fid: str, tmp_path: Path) -> None:
    f = fixtures[fid]
    ref_fx = ref_universal(fixtures, fid)
    ref = ref_fx.path / ref_fx.tag
    before = tree_hash(f.path)
    out = convert(f.path, tmp_path / ref_fx.tag, "universal")
    assert tree_hash(f.path) == before, "the source changed"
    assert (tmp_path / "latest_universal").read_text() == ref_fx.tag

    # Same folders; for ZeRO-3 ours also keeps the frozen params that upstream drops.
    extra = f.truth.frozen if f.stage == 3 else set()
    assert param_folders(out) == param_folders(ref) | extra
    for name in sorted(param_folders(ref)):
        files = sorted(os.listdir(ref / "zero" / name))
        assert sorted(os.listdir(out / "zero" / name)) == files, name
        if f.stage < 3 and name not in f.truth.frozen and name not in f.truth.tied:
            assert files == ["exp_avg.pt", "exp_avg_sq.pt", "fp32.pt", "step.pt"], name
        for file in files:
            assert_same_file(out / "zero" / name / file, ref / "zero" / name / file)
    if extra:  # the frozen values are the ones zero_to_fp32 writes
        hf = open_source(fixtures[f.derived["fp32"]].path)
        for name in extra:
            flat = _load(out / "zero" / name / "fp32.pt")
            assert torch.equal(flat, hf.read(name).reshape(-1)), name

    # model_states files copied as they are
    ref_states = sorted(p.name for p in ref.glob("*model_states.pt"))
    assert sorted(p.name for p in out.glob("*model_states.pt")) == ref_states
    for name in ref_states:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    _assert_same_optimizer_state(out, ref, f.stage)

    ckpt = open_checkpoint(tmp_path)  # our reader finds it through latest_universal
    assert ckpt.step == f.step and ckpt.metadata["layout"] == ("zero3" if f.stage == 3 else "zero12")


def _assert_same_optimizer_state(out: Path, ref: Path, stage: int) -> None:
    ours, theirs = _load(out / "zero" / "optimizer_state.pt"), _load(ref / "zero" / "optimizer_state.pt")
    if stage == 3:  # ours leaves out rank 0's flat partitions: no loader reads them
        assert set(ours) == set(theirs) - {"fp32_flat_groups"}
        inner, ref_inner = ours["optimizer_state_dict"], theirs["optimizer_state_dict"]
        assert inner["param_groups"] == ref_inner["param_groups"]
        assert set(inner["state"]) == set(ref_inner["state"])
        for i, s in inner["state"].items():
            assert set(s) == {"step"} and torch.equal(s["step"], ref_inner["state"][i]["step"])
    else:
        assert set(ours) == set(theirs)
    for key in set(ours) - {"optimizer_state_dict"}:
        a, b = ours[key], theirs[key]
        if hasattr(b, "__dict__") and not isinstance(b, type):
            assert type(a) is type(b) and vars(a) == vars(b), key  # the real LossScaler class, same fields
        else:
            assert a == b, key


def test_plain_zero12_needs_no_inject_missing_state(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """Upstream refuses a plain DeepSpeed ZeRO-1 save without --inject_missing_state; ours converts it."""
    f = fixtures["gpt-z1-fp32"]
    with pytest.raises(CkptError, match="universal_checkpoint_info state is missing"):
        run_ds_to_universal(f.path / "global_step2", tmp_path / "upstream" / "u", inject_missing_state=False,
                            log_path=tmp_path / "upstream.log")
    out = convert(f.path / "global_step2", tmp_path / "ours" / "global_step2_universal", "universal")
    assert open_checkpoint(out).step == 2


def test_step_override_rewrites_model_states_only(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    f = fixtures["gpt-z2-fp32"]
    out = convert(f.path, tmp_path / "u", "universal", ConvertOptions(step=100))
    state = _load(out / "mp_rank_00_model_states.pt")
    assert state["global_steps"] == 100 and "global_samples" not in state and state["module"] == {}
    assert state["param_shapes"] == _load(f.step_dir / "mp_rank_00_model_states.pt")["param_shapes"]
    for name in param_folders(out):
        assert float(_load(out / "zero" / name / "step.pt")) == f.step, "Adam's step stays the source's"
    assert open_checkpoint(out).step == 100


def test_workers_give_the_same_files(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    f = fixtures["gpt-z3-fp32"]
    one = convert(f.path, tmp_path / "one" / "u", "universal", ConvertOptions(workers=1))
    three = convert(f.path, tmp_path / "three" / "u", "universal", ConvertOptions(workers=3))
    for name in param_folders(one):
        for state in STATES:
            assert_same_file(three / "zero" / name / f"{state}.pt", one / "zero" / name / f"{state}.pt")


# --------------------------------------------------------------------------- HF -> universal
HF_IDS = ["hf-gpt2-safetensors", "hf-gpt2-safetensors-sharded", "hf-gpt2-bin", "hf-gpt2-bin-sharded"]


@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("fid", HF_IDS)
def test_hf_layout(fixtures: dict[str, Fixture], fid: str, stage: int, tmp_path: Path) -> None:
    f = fixtures[fid]
    before = tree_hash(f.path)
    out = convert(f.path, tmp_path / "global_step7_universal", "universal", ConvertOptions(step=7, stage=stage))
    assert tree_hash(f.path) == before
    assert (tmp_path / "latest_universal").read_text() == "global_step7_universal"
    source = open_source(f.path)
    trainable = [t.name for t in source.tensors]
    tied = f.truth.tied  # lm_head.weight -> transformer.wte.weight, stored once by save_pretrained
    assert source.aliases == tied

    states_name = "zero_pp_rank_0_mp_rank_00_model_states.pt" if stage == 3 else "mp_rank_00_model_states.pt"
    assert sorted(p.name for p in out.glob("*.pt")) == [states_name]
    model_states = _load(out / states_name)
    assert model_states["global_steps"] == 7 and model_states["shared_params"] == tied
    assert list(model_states["param_shapes"][0]) == trainable, "param_shapes follow the checkpoint's order"
    assert all(tuple(s) == f.truth.shape(n) for n, s in model_states["param_shapes"][0].items())
    assert model_states["ds_version"] and model_states["dp_world_size"] == 1

    optim = _load(out / "zero" / "optimizer_state.pt")
    if stage == 3:
        assert param_folders(out) == set(trainable)  # no alias folder, as ds_to_universal for ZeRO-3
        assert float(optim["optimizer_state_dict"]["state"][0]["step"]) == 0.0
    else:
        assert param_folders(out) == set(trainable) | set(tied)
        assert optim["ds_version"] and all(g == {"params": []} for g in optim["param_groups"])
    for name in trainable:
        folder = out / "zero" / name
        expected = ["exp_avg.pt", "exp_avg_sq.pt", "fp32.pt"] + ([] if stage == 3 else ["step.pt"])
        assert sorted(os.listdir(folder)) == expected, name
        value = source.read(name).float()
        for state in STATES:
            obj = _load(folder / f"{state}.pt")
            if stage == 3:
                assert obj.shape == (value.numel(),)
            else:
                assert obj.keys() == {"cat_dim", "param"} and obj["param"].shape == value.shape
                obj = obj["param"]
            want = value.reshape(obj.shape) if state == "fp32" else torch.zeros(obj.shape)
            assert obj.dtype == torch.float32 and torch.equal(obj, want), (name, state)
        if stage != 3:
            step = _load(folder / "step.pt")
            assert torch.is_tensor(step) and step.dtype == torch.float32 and float(step) == 0.0
    for alias, owner in tied.items() if stage != 3 else ():
        obj = _load(out / "zero" / alias / "fp32.pt")
        assert obj.keys() == {"param"} and torch.equal(obj["param"], source.read(owner))

    ckpt = open_checkpoint(out)
    assert ckpt.step == 7 and ckpt.zero_stage == stage and ckpt.shared_params == tied


@pytest.mark.parametrize("stage", [1, 3])
@pytest.mark.parametrize("fid", ["hf-gpt2-bin-sharded", "gpt-z2-fp32.fp32-sharded"])
def test_hf_round_trip(fixtures: dict[str, Fixture], fid: str, stage: int, tmp_path: Path) -> None:
    """HF -> universal -> HF gives back every tensor bitwise; -> universal of the other layout too."""
    src = fixtures[fid].path
    uni = convert(src, tmp_path / "u", "universal", ConvertOptions(stage=stage))
    other = convert(uni, tmp_path / "other" / "u", "universal", ConvertOptions(stage=1 if stage == 3 else 3))
    assert open_checkpoint(other).metadata["layout"] == ("zero12" if stage == 3 else "zero3")
    for folder in (uni, other):
        back = convert(folder, tmp_path / f"hf-{folder.parent.name}", "hf")
        a, b = open_source(src), open_source(back)
        assert {t.name for t in b.tensors} == {t.name for t in a.tensors}
        for t in a.tensors:
            assert torch.equal(b.read(t.name), a.read(t.name).float()), t.name


# ---------------------------------------------------------------------------- universal -> HF
@pytest.mark.parametrize("fid", ["gpt-z1-bf16", "gpt-z3-fp32", "hf-gpt2-z3-fp32", "gpt-z3-fp32-frozen"])
def test_universal_to_hf_both_layouts(fixtures: dict[str, Fixture], fid: str, tmp_path: Path) -> None:
    """Upstream's and our universal folders -> HF give zero_to_fp32's tensors (ours keeps ZeRO-3 frozen)."""
    f = fixtures[fid]
    reference = open_source(fixtures[f.derived["fp32"]].path)
    ours = convert(f.path, tmp_path / "ours" / "u", "universal")
    for label, uni in (("upstream", ref_universal(fixtures, fid).path), ("ours", ours)):
        hf = open_source(convert(uni, tmp_path / f"hf-{label}", "hf"))
        names = {t.name for t in hf.tensors}
        expected = {t.name for t in reference.tensors}
        if label == "upstream" and f.stage == 3:
            expected -= f.truth.frozen  # ds_to_universal writes no folder for ZeRO-3 frozen params
        assert names == expected, label
        for name in names:
            assert torch.equal(hf.read(name), reference.read(name)), (label, name)


# --------------------------------------------------------------------------------- refusals
def test_refuses_names_that_escape_the_folder(tmp_path: Path) -> None:
    src = tmp_path / "evil"
    src.mkdir()
    save_file({"../../escape": torch.zeros(2), "ok.weight": torch.ones(2)}, src / "model.safetensors")
    with pytest.raises(CkptError, match="cannot be a folder name"):
        convert(src, tmp_path / "out" / "u", "universal")
    assert not (tmp_path / "out" / "u").exists() and not (tmp_path / "escape").exists()
    assert not list((tmp_path / "out").glob(f"*{TMP_TAG}*"))


def test_refuses_hf_only_options(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    with pytest.raises(CkptError, match="--dtype applies to --to hf"):
        convert(fixtures["hf-gpt2-bin"].path, tmp_path / "u", "universal", ConvertOptions(dtype="bf16"))
    with pytest.raises(CkptError, match="--stage must be 1, 2 or 3"):
        convert(fixtures["hf-gpt2-bin"].path, tmp_path / "u", "universal", ConvertOptions(stage=4))
    assert not (tmp_path / "u").exists()


# ------------------------------------------------------------------------- cancel and kill -9
def assert_nothing_left(dst: Path) -> None:
    assert not dst.exists()
    assert not (dst.parent / "latest_universal").exists()
    assert not leftovers(dst)


@pytest.mark.parametrize("workers", [1, 3])
def test_cancel_midway(fixtures: dict[str, Fixture], workers: int, tmp_path: Path) -> None:
    f = fixtures["gpt-z2-fp32"]
    before = tree_hash(f.path)
    seen: list[Progress] = []
    control: JobControl

    def listener(p: Progress) -> None:
        seen.append(p)
        if p.tensors_done == 5:
            control.cancel()

    control = JobControl(listener)
    dst = tmp_path / "out" / "u"
    with pytest.raises(Cancelled):
        convert(f.path, dst, "universal", ConvertOptions(workers=workers), control=control)
    assert max(p.tensors_done for p in seen) == 5 and seen[-1].phase == "cancelled"
    assert_nothing_left(dst)
    assert tree_hash(f.path) == before


@pytest.fixture()
def big_hf(tmp_path: Path) -> Path:
    """An HF folder big enough (300 tensors, 40 MB) that a conversion can be caught midway."""
    folder = tmp_path / "big-hf"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for shard in range(3):
        tensors = {f"layers.{shard}.{i}.weight": torch.randn(128, 256, generator=g) for i in range(100)}
        save_file(tensors, folder / f"model-0000{shard + 1}-of-00003.safetensors")
    return folder


def _start_cli(src: Path, dst: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "ckpt_tui", "convert", str(src), "--to", "universal", "-o", str(dst), "--workers", "1"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def test_kill_9_midway_then_rerun(big_hf: Path, tmp_path: Path) -> None:
    before = tree_hash(big_hf)
    dst = tmp_path / "out" / "global_step0_universal"
    proc = _start_cli(big_hf, dst)
    assert proc.stderr is not None
    for line in proc.stderr:  # progress lines on a non-tty: "...: convert 30/300 tensors, ..."
        if " tensors" in line and not line.split(" convert ")[-1].startswith("0/"):
            break
    proc.send_signal(signal.SIGSTOP)  # freeze it where it is, look, then kill -9
    temps = [p for p in dst.parent.iterdir() if TMP_TAG in p.name]
    assert len(temps) == 1 and not dst.exists(), "not caught midway"
    written = len([p for p in (temps[0] / "zero").iterdir() if p.is_dir()])
    assert 0 < written < 300
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not dst.exists() and not (dst.parent / "latest_universal").exists()
    assert tree_hash(big_hf) == before

    start = time.monotonic()
    rerun = subprocess.run(
        [sys.executable, "-m", "ckpt_tui", "convert", str(big_hf), "--to", "universal", "-o", str(dst), "--json"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert time.monotonic() - start < 300
    assert not [p.name for p in dst.parent.iterdir() if TMP_TAG in p.name], "the dead job's temp folder stays"
    assert (dst.parent / "latest_universal").read_text() == dst.name
    assert len(param_folders(dst)) == 300
    assert tree_hash(big_hf) == before


def test_universal_restep_keeps_everything_else(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """universal -> universal with another --step: same tensors and optimizer_state.pt, new global_steps."""
    ref_fx = ref_universal(fixtures, "gpt-z3-fp32")
    src = ref_fx.path / ref_fx.tag
    out = convert(ref_fx.path, tmp_path / "u", "universal", ConvertOptions(step=9))
    assert (out / "zero" / "optimizer_state.pt").read_bytes() == (src / "zero" / "optimizer_state.pt").read_bytes()
    for name in sorted(p.name for p in src.glob("*model_states.pt")):
        state = _load(out / name)
        assert state["global_steps"] == 9 and "global_samples" not in state
    assert param_folders(out) == param_folders(src)
    for name in param_folders(src):
        for state in STATES:
            assert_same_file(out / "zero" / name / f"{state}.pt", src / "zero" / name / f"{state}.pt")
