"""The cached fixtures are real and right: layouts DeepSpeed writes, truths that match the models,
losses that fall, reference conversions that agree, and a universal resume at another DP size that
continues the baseline's loss curve.

These tests read our own fixture files, so `torch.load(weights_only=False)` is fine here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.model import Kind
from ckpt_tui.demo.launch import last_meaningful_line, run_ds_to_universal, run_training
from ckpt_tui.demo.tiny_gpt import build_model, micro_batch_indices, sample_tokens
from tests.fixtures import (
    ALL,
    ALL_HF,
    ALL_HF_BIN,
    ALL_SAVE_PRETRAINED,
    ALL_TB,
    ALL_UNIVERSAL,
    ALL_ZERO,
    ALL_ZERO_TO_FP32,
    Fixture,
)
from tests.fixtures.builder import BASELINE, FROZEN, RESUME_FROM, RUN_BY_ID

FP32_TOL = 1e-5
BF16_TOL = 1e-3


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _hf_state(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF folder (single or sharded, safetensors or .bin)."""
    state: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(f))
    for f in sorted(folder.glob("*.bin")):
        state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


def _rank_files(fx: Fixture, tag: str) -> set[str]:
    """The file names DeepSpeed writes into one tag folder, per stage, DP size and dtype."""
    prefix = "bf16_" if fx.dtype == "bf16" else ""
    optim = {f"{prefix}zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(fx.dp)}
    if fx.stage == 3:
        return optim | {f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in range(fx.dp)}
    return optim | {"mp_rank_00_model_states.pt"}


def _model_states(fx: Fixture, tag: str | None = None) -> dict:
    name = "zero_pp_rank_0_mp_rank_00_model_states.pt" if fx.stage == 3 else "mp_rank_00_model_states.pt"
    return _load(fx.path / (tag or fx.tag) / name)


# ------------------------------------------------------------------------------------------ registry
def test_every_registered_fixture_is_built(fixtures: dict[str, Fixture]) -> None:
    assert set(fixtures) == set(ALL)
    for fx in fixtures.values():
        assert fx.path.is_dir(), fx.id
        assert fx.truth.params, fx.id


# ---------------------------------------------------------------------------------------- ZeRO layout
@pytest.mark.parametrize("fid", ALL_ZERO)
def test_zero_folder_layout(fixtures: dict[str, Fixture], fid: str) -> None:
    fx = fixtures[fid]
    assert fx.kind is Kind.DS_ZERO
    assert (fx.path / "latest").read_text().strip() == fx.tag == "global_step4"
    assert (fx.path / "zero_to_fp32.py").is_file()
    assert fx.tags == ("global_step2", "global_step4")
    for tag in fx.tags:
        assert {p.name for p in (fx.path / tag).iterdir()} == _rank_files(fx, tag)


@pytest.mark.parametrize("fid", ALL_ZERO)
def test_zero_model_states_record_the_run(fixtures: dict[str, Fixture], fid: str) -> None:
    fx = fixtures[fid]
    sd = _model_states(fx)
    truth = fx.truth
    trainable = [n for n, p in truth.params.items() if not p.frozen]
    assert sd["global_steps"] == 4 and sd["dp_world_size"] == fx.dp and sd["mp_world_size"] == 1
    assert sd["ds_config"]["zero_optimization"]["stage"] == fx.stage
    assert [n for group in sd["param_shapes"] for n in group] == trainable
    assert list(sd["frozen_param_shapes"] or {}) == sorted(truth.frozen, key=list(truth.params).index)
    assert dict(sd["shared_params"]) == truth.tied
    want_dtype = torch.bfloat16 if fx.dtype == "bf16" else torch.float32
    for name, tensor in sd["module"].items():
        assert tensor.dtype == want_dtype, name
        assert tuple(tensor.shape) == ((0,) if fx.stage == 3 else truth.shape(name)), name


@pytest.mark.parametrize("fid", ALL_ZERO)
def test_zero_optim_states_per_rank(fixtures: dict[str, Fixture], fid: str) -> None:
    fx = fixtures[fid]
    prefix = "bf16_" if fx.dtype == "bf16" else ""
    for rank in range(fx.dp):
        osd = _load(fx.step_dir / f"{prefix}zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")["optimizer_state_dict"]
        assert int(osd["zero_stage"]) == fx.stage
        assert osd["partition_count"] in (fx.dp, [fx.dp])
        assert ("fp32_flat_groups" if fx.stage == 3 else "single_partition_of_fp32_groups") in osd


# ------------------------------------------------------------------------------------------- truth
@pytest.mark.parametrize("fid", ALL_ZERO)
def test_truth_matches_the_model(fixtures: dict[str, Fixture], fid: str) -> None:
    fx = fixtures[fid]
    raw = fx.truth.raw
    assert (raw["model"], raw["stage"], raw["dtype"], raw["dp"]) == (fx.model, fx.stage, fx.dtype, fx.dp)
    model = build_model(fx.model)
    params = dict(model.named_parameters())
    assert list(fx.truth.params) == list(params)
    for name, p in params.items():
        assert fx.truth.params[name].shape == tuple(p.shape) and fx.truth.params[name].dtype == "float32"
    assert list(fx.truth.state_dict_keys) == list(model.state_dict())
    assert fx.truth.numel == sum(p.numel() for p in model.parameters())
    want_tied = {"lm_head.weight": "transformer.wte.weight"} if fx.model == "hf-gpt2" else {}
    assert fx.truth.tied == want_tied
    assert fx.truth.frozen == (set(FROZEN) if fid.endswith("-frozen") else set())
    engine_dtype = "bfloat16" if fx.dtype == "bf16" else "float32"
    assert set(fx.truth.engine_dtypes.values()) == {engine_dtype}


def test_tiny_gpt_size() -> None:
    model = build_model("gpt")
    assert 130_000 < sum(p.numel() for p in model.parameters()) < 140_000
    assert model.lm_head.weight is not model.tok_emb.weight


# ------------------------------------------------------------------------------------------ losses
@pytest.mark.parametrize("fid", ALL_ZERO)
def test_losses_fall(fixtures: dict[str, Fixture], fid: str) -> None:
    losses = fixtures[fid].losses
    steps = sorted(losses)
    assert steps == list(range(1, RUN_BY_ID[fid].steps + 1))
    assert losses[steps[-1]] < losses[steps[0]] - 0.1, losses


def test_baseline_loss_falls_visibly(fixtures: dict[str, Fixture]) -> None:
    losses = fixtures[BASELINE].losses
    assert losses[20] < losses[1] - 1.5, losses


def test_zero_stages_train_the_same_model(fixtures: dict[str, Fixture]) -> None:
    """Same init, same data: ZeRO 1/2/3 differ only by fp rounding (bf16: by bf16 rounding)."""
    for dtype, tol in (("fp32", FP32_TOL), ("bf16", 2e-2)):
        runs = [fixtures[f"gpt-z{s}-{dtype}"].losses for s in (1, 2, 3)]
        for step in range(1, 5):
            values = [r[step] for r in runs]
            assert max(values) - min(values) < tol, (dtype, step, values)


def test_global_batch_does_not_depend_on_dp_split() -> None:
    def global_batch(dp: int, micro: int) -> list[int]:
        accum = 8 // (dp * micro)
        return sorted(
            i for r in range(dp) for m in range(accum)
            for i in micro_batch_indices(3, m, rank=r, dp=dp, micro_batch=micro, global_batch=8)
        )

    assert global_batch(2, 4) == global_batch(1, 8) == global_batch(1, 4) == list(range(16, 24))
    assert sample_tokens(1234, 5) == sample_tokens(1234, 5) != sample_tokens(1234, 6)


# ------------------------------------------------------------------------ DeepSpeed's own converters
@pytest.mark.parametrize("fid", ALL_ZERO_TO_FP32)
def test_zero_to_fp32_output(fixtures: dict[str, Fixture], fid: str) -> None:
    fx = fixtures[fid]
    files = {p.name for p in fx.path.iterdir()}
    if fx.kind is Kind.HF_BIN:
        assert files == {"pytorch_model.bin"}
    elif fid.endswith("-sharded"):
        assert "model.safetensors.index.json" in files and len([f for f in files if f.endswith(".safetensors")]) >= 2
    else:
        assert files == {"model.safetensors"}
    state = _hf_state(fx.path)
    want = set(fx.truth.params) | set(fx.truth.tied)  # zero_to_fp32 writes aliases too (.bin keeps them)
    assert set(state) == want
    for name, tensor in state.items():
        assert tensor.dtype == torch.float32 and tuple(tensor.shape) == fx.truth.shape(name), name


def test_zero_to_fp32_stage1_equals_stage2(fixtures: dict[str, Fixture]) -> None:
    a = _hf_state(fixtures["gpt-z1-fp32.fp32"].path)
    b = _hf_state(fixtures["gpt-z2-fp32.fp32"].path)
    c = _hf_state(fixtures["gpt-z2-fp32.fp32-sharded"].path)
    for name in a:
        assert torch.equal(b[name], c[name]), name
        assert torch.allclose(a[name], b[name], atol=1e-6), name


@pytest.mark.parametrize("fid", ["gpt-z2-fp32-frozen", "gpt-z3-fp32-frozen"])
def test_frozen_params_keep_their_init(fixtures: dict[str, Fixture], fid: str) -> None:
    state = _hf_state(fixtures[f"{fid}.fp32"].path)
    init = dict(build_model("gpt").named_parameters())
    for name in FROZEN:
        assert torch.equal(state[name], init[name].detach()), name
    assert not torch.equal(state["tok_emb.weight"], init["tok_emb.weight"].detach())


@pytest.mark.parametrize("fid", ALL_UNIVERSAL)
def test_universal_output(fixtures: dict[str, Fixture], fid: str) -> None:
    fx = fixtures[fid]
    assert fx.kind is Kind.DS_UNIVERSAL
    assert (fx.path / "latest_universal").read_text().strip() == fx.tag
    zero = fx.step_dir / "zero"
    assert (zero / "optimizer_state.pt").is_file()
    source = fixtures[fx.source]
    reference = _hf_state(fixtures[source.derived["fp32"]].path) if fx.step == source.step else None
    for name, p in fx.truth.params.items():
        if p.frozen and fx.stage == 3:
            assert not (zero / name).exists(), "ds_to_universal 0.19.8 drops ZeRO-3 frozen params"
            continue
        files = {f.name for f in (zero / name).iterdir()}
        want = {"fp32.pt"} if p.frozen else {"fp32.pt", "exp_avg.pt", "exp_avg_sq.pt"}
        want |= {"step.pt"} if fx.stage < 3 and not p.frozen else set()
        assert files == want, name
        fp32 = _load(zero / name / "fp32.pt")
        value = fp32["param"] if isinstance(fp32, dict) else fp32
        assert value.numel() == torch.Size(p.shape).numel(), name
        if reference is not None:  # the two reference tools agree on the master weights
            assert torch.equal(value.reshape(p.shape), reference[name]), name
    for alias in fx.truth.tied:  # ZeRO-1/2 give a tied alias its own folder, ZeRO-3 does not
        assert (zero / alias / "fp32.pt").exists() == (fx.stage < 3), alias


# --------------------------------------------------------------------------------------- HF folders
@pytest.mark.parametrize("fid", ALL_SAVE_PRETRAINED)
def test_save_pretrained_folders_load_in_transformers(fixtures: dict[str, Fixture], fid: str) -> None:
    from transformers import GPT2LMHeadModel

    fx = fixtures[fid]
    names = {p.name for p in fx.path.iterdir()}
    assert "config.json" in names
    if fid.endswith("-sharded"):
        index = next(n for n in names if n.endswith(".index.json"))
        weight_map = json.loads((fx.path / index).read_text())["weight_map"]
        assert len(set(weight_map.values())) >= 3
        assert set(weight_map.values()) <= names
    reference = _hf_state(fixtures[fx.source].path)
    model = GPT2LMHeadModel.from_pretrained(fx.path)
    assert model.lm_head.weight is model.transformer.wte.weight
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name


@pytest.mark.parametrize("fid", ALL_HF)
def test_hf_kinds(fixtures: dict[str, Fixture], fid: str) -> None:
    fx = fixtures[fid]
    has_bin = any(fx.path.glob("*.bin"))
    assert fx.kind is (Kind.HF_BIN if fid in ALL_HF_BIN else Kind.HF_SAFETENSORS)
    assert has_bin == (fx.kind is Kind.HF_BIN)


# ------------------------------------------------------------------------------------- TensorBoard
def _scalars(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for event_file in sorted(folder.glob("events.out.tfevents.*")):  # one by one: see field notes
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return out


@pytest.mark.parametrize("fid", ALL_TB)
def test_tensorboard_megatron_tags(fixtures: dict[str, Fixture], fid: str) -> None:
    fx = fixtures[fid]
    assert fx.kind is Kind.TENSORBOARD
    scalars = _scalars(fx.path)
    first = 1 if fid != "tb-resumed" else RESUME_FROM + 1
    assert sorted(scalars["lm-loss-training/lm loss"]) == list(range(first, 21))
    assert sorted(scalars["lm-loss-validation/lm loss validation"]) == [s for s in range(first, 21) if s % 2 == 0]
    for step, loss in fx.losses.items():
        assert scalars["lm-loss-training/lm loss"][step] == pytest.approx(loss, abs=1e-6)


# ---------------------------------------------------------------------------------------- resuming
def test_universal_resume_at_dp1_continues_the_dp2_baseline(fixtures: dict[str, Fixture]) -> None:
    """Built once: DP=2 ZeRO-1 fp32 saves at step 2 -> ds_to_universal -> DP=1 resumes to step 20."""
    base, resumed = fixtures["tb-baseline"].losses, fixtures["tb-resumed"].losses
    assert sorted(resumed) == list(range(RESUME_FROM + 1, 21))
    assert fixtures["tb-resumed"].truth.raw["start_step"] == RESUME_FROM
    assert fixtures["tb-resumed"].truth.raw["dp"] == 1
    worst = max(abs(resumed[s] - base[s]) for s in resumed)
    assert worst < FP32_TOL, (worst, base, resumed)


def _resume_live(fx: Fixture, tmp_path: Path, *extra: str) -> dict[int, float]:
    """ds_to_universal of the fixture's step-2 tag, then a DP=1 resume to step 4."""
    uni = tmp_path / "uni" / f"global_step{RESUME_FROM}_universal"
    run_ds_to_universal(fx.path / f"global_step{RESUME_FROM}", uni, inject_missing_state=fx.stage < 3,
                        log_path=tmp_path / "uni.log")
    losses = tmp_path / "losses.json"
    run_training(1, [
        "--model", fx.model, "--stage", str(fx.stage), "--dtype", fx.dtype, "--steps", "4",
        "--load", str(uni.parent), "--load-universal", "--losses-json", str(losses), *extra,
    ], log_path=tmp_path / "train.log")
    return {int(k): v for k, v in json.loads(losses.read_text()).items()}


def test_live_resume_with_grad_accumulation(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """DP=1 with micro batch 4 x accumulation 2 sees the same global batches as DP=2 x 4."""
    fx = fixtures[BASELINE]
    resumed = _resume_live(fx, tmp_path, "--micro-batch-size", "4")
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        assert abs(resumed[step] - fx.losses[step]) < FP32_TOL, (step, resumed, fx.losses)


@pytest.mark.slow
@pytest.mark.parametrize("fid", ["gpt-z2-bf16", "gpt-z3-fp32", "hf-gpt2-z3-fp32"])
def test_live_resume_other_stages(fixtures: dict[str, Fixture], tmp_path: Path, fid: str) -> None:
    fx = fixtures[fid]
    resumed = _resume_live(fx, tmp_path)
    tol = BF16_TOL if fx.dtype == "bf16" else FP32_TOL
    for step in (3, 4):
        assert abs(resumed[step] - fx.losses[step]) < tol, (step, resumed, fx.losses)


# ---------------------------------------------------------------------------------- launch errors
def test_training_failure_names_the_log_and_the_reason(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    with pytest.raises(CkptError) as err:
        run_training(1, ["--steps", "1", "--freeze", "no.such.param"], log_path=log)
    assert err.value.path == str(log)
    assert "training (1 ranks) failed" in err.value.problem
    assert "--freeze no.such.param: no such parameter" in err.value.problem


def test_last_meaningful_line_skips_launcher_noise() -> None:
    log = "\n".join([
        "[2026-01-01 00:00:00,000] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "RuntimeError: ",
        "    Some tensors share memory",
        "E1125 12:42:05.272000 5439 api.py:1002] failed (exitcode: 1)",
        "Traceback (most recent call last):",
        '  File "run.py", line 1032, in <module>',
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "============================================================",
    ])
    assert last_meaningful_line(log) == "RuntimeError: Some tensors share memory"
