"""Universal checkpoints written by ckpt-tui load in DeepSpeed's own engine and carry training on.

Real DeepSpeed under torchrun (CPU, gloo), resumed with ``{"checkpoint": {"load_universal": true}}`` at
another data-parallel size than the run that saved the source. The demo's loss at global step k depends
only on the weights and on k, so a resumed run is compared with its baseline step by step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ckpt_tui.core.convert.api import ConvertOptions, convert
from ckpt_tui.demo.launch import run_training
from tests.fixtures import Fixture
from tests.fixtures.builder import BASELINE, BASELINE_STEPS, RESUME_FROM

FP32_TOL = 1e-5
BF16_TOL = 1e-3
HF_STEP = 4  # the HF fixtures hold the weights their runs saved at global step 4


def resume(universal: Path, work: Path, *, model: str, stage: int, steps: int, dp: int = 1,
           dtype: str = "fp32") -> dict[int, float]:
    """Train from `universal` (its parent holds latest_universal) up to `steps`; the loss per step."""
    losses = work / "losses.json"
    run_training(dp, [
        "--model", model, "--stage", str(stage), "--dtype", dtype, "--steps", str(steps),
        "--load", str(universal.parent), "--load-universal", "--losses-json", str(losses), "--eval-every", "0",
    ], log_path=work / "train.log")
    return {int(k): v for k, v in json.loads(losses.read_text()).items()}


def max_diff(resumed: dict[int, float], baseline: dict[int, float]) -> float:
    return max(abs(loss - baseline[step]) for step, loss in resumed.items())


# --------------------------------------------------------------------------- ZeRO -> universal
def test_zero_to_universal_resumes_like_the_continuous_run(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """The baseline trained 20 steps at DP 2 (ZeRO-1, fp32); ours converts its step-2 save, DP 1 resumes."""
    base = fixtures[BASELINE]
    uni = convert(base.path / f"global_step{RESUME_FROM}", tmp_path / "u" / f"global_step{RESUME_FROM}_universal",
                  "universal")
    losses = resume(uni, tmp_path, model="gpt", stage=base.stage, steps=BASELINE_STEPS)
    assert sorted(losses) == list(range(RESUME_FROM + 1, BASELINE_STEPS + 1))
    diff = max_diff(losses, base.losses)
    print(f"ZeRO-1 DP2 -> universal (ours) -> DP1, steps {RESUME_FROM + 1}..{BASELINE_STEPS}: max |diff| {diff:.2e}")
    assert diff <= FP32_TOL
    upstream = fixtures["tb-resumed"].losses  # the same resume from ds_to_universal's folder
    assert max_diff(losses, upstream) <= FP32_TOL


@pytest.mark.slow
@pytest.mark.parametrize(("fid", "source_stage", "stage", "steps"), [
    ("gpt-z3-fp32", 3, 1, 4),  # ZeRO-3 save -> ZeRO-1/2 layout -> resumed by a ZeRO-1 engine
    (BASELINE, 1, 3, 8),  # ZeRO-1 save -> ZeRO-3 layout -> resumed by a ZeRO-3 engine
])
def test_zero_to_other_stage_resumes(fixtures: dict[str, Fixture], fid: str, source_stage: int, stage: int,
                                     steps: int, tmp_path: Path) -> None:
    f = fixtures[fid]
    assert f.stage == source_stage and f.dp == 2
    uni = convert(f.path / "global_step2", tmp_path / "u" / "global_step2_universal", "universal",
                  ConvertOptions(stage=stage))
    losses = resume(uni, tmp_path, model="gpt", stage=stage, steps=steps)
    diff = max_diff(losses, f.losses)
    print(f"ZeRO-{source_stage} DP2 -> universal ZeRO-{stage} layout -> DP1, steps 3..{steps}: max |diff| {diff:.2e}")
    assert diff <= FP32_TOL


@pytest.mark.slow
def test_bf16_dp1_to_dp2_resumes(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """bf16 GPT-2 (tied wte/lm_head) saved at DP 1 under ZeRO-2 resumes at DP 2."""
    f = fixtures["hf-gpt2-z2-bf16-dp1"]
    uni = convert(f.path / "global_step2", tmp_path / "u" / "global_step2_universal", "universal")
    losses = resume(uni, tmp_path, model="hf-gpt2", stage=2, steps=4, dp=2, dtype="bf16")
    diff = max_diff(losses, f.losses)
    print(f"ZeRO-2 bf16 DP1 -> universal -> DP2, steps 3..4: max |diff| {diff:.2e}")
    assert diff <= BF16_TOL


# ----------------------------------------------------------------------------- HF -> universal
@pytest.mark.parametrize("stage", [1, pytest.param(2, marks=pytest.mark.slow), 3])
def test_hf_to_universal_resumes(fixtures: dict[str, Fixture], stage: int, tmp_path: Path) -> None:
    """zero_to_fp32's HF folder of the baseline (DP 2, step 4) -> universal -> DP 1: step 5 has the baseline's
    loss (same weights). Adam restarts from zero moments, so step 6 may drift."""
    base = fixtures[BASELINE]
    hf = fixtures[f"{BASELINE}.fp32"]
    assert hf.step == HF_STEP and hf.dp == 2
    uni = convert(hf.path, tmp_path / "u" / f"global_step{HF_STEP}_universal", "universal",
                  ConvertOptions(step=HF_STEP, stage=stage))
    losses = resume(uni, tmp_path, model="gpt", stage=stage, steps=HF_STEP + 2)
    assert sorted(losses) == [HF_STEP + 1, HF_STEP + 2]
    diff = abs(losses[HF_STEP + 1] - base.losses[HF_STEP + 1])
    drift = abs(losses[HF_STEP + 2] - base.losses[HF_STEP + 2])
    print(f"HF -> universal ZeRO-{stage} -> DP1: step {HF_STEP + 1} |diff| {diff:.2e}, "
          f"step {HF_STEP + 2} (Adam restarted) |diff| {drift:.2e}")
    assert diff <= FP32_TOL


@pytest.fixture(scope="module")
def gpt2_step5(fixtures: dict[str, Fixture], tmp_path_factory: pytest.TempPathFactory) -> float:
    """Step 5's loss of the tied GPT-2 run, continued natively (same DP size) from its step-4 save."""
    run = fixtures["hf-gpt2-z1-fp32"]
    work = tmp_path_factory.mktemp("gpt2-baseline")
    run_training(run.dp, [
        "--model", "hf-gpt2", "--stage", str(run.stage), "--dtype", run.dtype, "--steps", "5",
        "--load", str(run.path), "--losses-json", str(work / "losses.json"), "--eval-every", "0",
    ], log_path=work / "train.log")
    return json.loads((work / "losses.json").read_text())["5"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 3])
def test_hf_tied_to_universal_resumes(fixtures: dict[str, Fixture], gpt2_step5: float, stage: int,
                                      tmp_path: Path) -> None:
    """save_pretrained's sharded safetensors store wte once (lm_head tied): the resumed model is right."""
    hf = fixtures["hf-gpt2-safetensors-sharded"]
    uni = convert(hf.path, tmp_path / "u" / f"global_step{HF_STEP}_universal", "universal",
                  ConvertOptions(step=HF_STEP, stage=stage))
    losses = resume(uni, tmp_path, model="hf-gpt2", stage=stage, steps=HF_STEP + 1)
    diff = abs(losses[HF_STEP + 1] - gpt2_step5)
    print(f"tied GPT-2 HF -> universal ZeRO-{stage} -> DP1: step {HF_STEP + 1} |diff| {diff:.2e}")
    assert diff <= FP32_TOL
