"""The committed scene data (tests/data/scenes) is what the snapshots claim to show: real, readable, consistent.

Snapshots only prove the screen is unchanged; these checks prove the files under it are still the real
DeepSpeed / transformers / TensorBoard output that tests/data/make_scenes.py copied in, so a snapshot can
never silently rest on a hand-edited or broken file.
"""

from __future__ import annotations

import json

import pytest

from ckpt_tui.core.formats.tensorboard import read_run_log
from ckpt_tui.core.inspect import detect, open_checkpoint
from ckpt_tui.core.model import Kind
from tests.fixtures.builder import Truth
from tests.tui.scenes import DEMO, DEMO_BASELINE, DEMO_RESUMED, LAYOUT, SCENE_DATA, WORKSPACE

PROVENANCE = json.loads((SCENE_DATA / "PROVENANCE.json").read_text())
EXPECTED_KIND = {
    "gpt2-hf": Kind.HF_SAFETENSORS,
    "gpt2-zero3": Kind.DS_ZERO,
    "tiny-zero2-bf16": Kind.DS_ZERO,
    "tiny-zero1/universal": Kind.DS_UNIVERSAL,
    "runs/baseline": Kind.TENSORBOARD,
    "runs/resumed": Kind.TENSORBOARD,
}


def test_provenance_names_the_layout_the_scenes_use():
    assert PROVENANCE["workspace"] == LAYOUT
    assert set(EXPECTED_KIND) == set(LAYOUT)
    assert PROVENANCE["versions"]["deepspeed"]


@pytest.mark.parametrize("rel", list(LAYOUT))
def test_each_entry_is_the_kind_it_was_built_as(rel):
    assert detect(SCENE_DATA / WORKSPACE / rel) is EXPECTED_KIND[rel]


@pytest.mark.parametrize("rel", ["gpt2-zero3", "tiny-zero2-bf16"])
def test_zero_listings_agree_with_the_training_record(rel):
    """Every trained parameter listed with the shape the training process recorded in truth.json."""
    folder = SCENE_DATA / WORKSPACE / rel
    truth = Truth.load(folder / "truth.json")
    ckpt = open_checkpoint(folder)
    listed = {t.name: t.shape for t in ckpt.tensors if not t.buffer}
    assert {n: truth.shape(n) for n in listed} == listed
    assert set(truth.params) <= set(listed)
    assert ckpt.zero_stage == truth.raw["stage"] and ckpt.dp_world_size == truth.raw["dp"]


def test_hf_and_universal_open_with_their_tensors():
    hf = open_checkpoint(SCENE_DATA / WORKSPACE / "gpt2-hf")
    uni = open_checkpoint(SCENE_DATA / WORKSPACE / "tiny-zero1" / "universal")
    assert hf.total_numel > 100_000 and uni.total_numel > 100_000
    assert not [w for w in uni.warnings if "no model_states" in w]


def test_runs_hold_the_losses_the_scenes_compare():
    for rel in ("runs/baseline", "runs/resumed"):
        run = read_run_log(SCENE_DATA / WORKSPACE / rel)
        assert any(t.tag.startswith("lm-loss-training") and t.points >= 10 for t in run.tags), rel
    for rel in (DEMO_BASELINE, *DEMO_RESUMED):
        run = read_run_log(SCENE_DATA / rel)
        assert run.last_step is not None and str(rel).startswith(DEMO)
