"""ZeRO / universal / HF -> HF safetensors, checked against DeepSpeed's zero_to_fp32 run in the same test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ckpt_tui.core.convert.api import ConvertOptions, convert
from ckpt_tui.core.convert.job import JobControl, run_job
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.inspect import open_checkpoint
from ckpt_tui.core.sources import open_source
from ckpt_tui.core.verify import verify
from tests.fixtures.builder import ALL_UNIVERSAL, ALL_ZERO, SHARDED_FP32_SIZE, SHARDED_FP32_SOURCE
from tests.helpers import assert_one_line_error, ckpt_tui, tree_hash


def _stored_names(folder: Path) -> list[str]:
    names = []
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            names += list(h.keys())
    return names


@pytest.mark.parametrize("fid", ALL_ZERO)
def test_zero_to_hf_equals_zero_to_fp32_bitwise(fixtures, tmp_path, fid):
    fx = fixtures[fid]
    # zero_to_fp32's output of this very checkpoint, made by the fixture build (.bin for tied GPT-2:
    # zero_to_fp32 cannot write tied weights as safetensors, "Some tensors share memory")
    ref = fixtures[fx.derived["fp32"]].path
    before = tree_hash(fx.path)
    out = convert(fx.path, tmp_path / "ours", "hf", ConvertOptions(workers=2))
    assert tree_hash(fx.path) == before, "the source was modified"
    report = verify(out, ref)
    assert report.ok, [d for d in report.problems]
    assert report.bitwise_equal_count == len(report.compared) == len(fx.truth.params) + len(fx.truth.tied)
    stored = _stored_names(out)
    assert len(stored) == len(set(stored)) == len(fx.truth.params), "tied weights are stored once"
    for alias in fx.truth.tied:
        assert alias not in stored


def test_tied_gpt2_output_loads_in_transformers(fixtures, tmp_path):
    from transformers import GPT2LMHeadModel

    fx = fixtures["hf-gpt2-z1-fp32"]
    out = convert(fx.path, tmp_path / "hf", "hf")
    shutil.copyfile(fixtures["hf-gpt2-safetensors"].path / "config.json", out / "config.json")
    model = GPT2LMHeadModel.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    with open_source(fx.path) as src:
        assert torch.equal(model.transformer.wte.weight.detach(), src.read("transformer.wte.weight"))
        assert torch.equal(model.transformer.h[1].mlp.c_fc.weight.detach(), src.read("transformer.h.1.mlp.c_fc.weight"))


def test_sharded_output_with_index_matches_zero_to_fp32_sharded(fixtures, tmp_path):
    fx = fixtures[SHARDED_FP32_SOURCE]
    ref = fixtures[f"{SHARDED_FP32_SOURCE}.fp32-sharded"].path  # zero_to_fp32 --max_shard_size 200KB
    result = ckpt_tui("convert", fx.path, "--to", "hf", "-o", tmp_path / "ours", "--max-shard-size", SHARDED_FP32_SIZE, "--json")
    assert result.code == 0, result.err
    ours = tmp_path / "ours"
    index = json.loads((ours / "model.safetensors.index.json").read_text())
    ref_index = json.loads((ref / "model.safetensors.index.json").read_text())
    assert len(list(ours.glob("model-*-of-*.safetensors"))) == len(list(ref.glob("model-*-of-*.safetensors"))) > 1
    assert index["metadata"]["total_size"] == sum(
        (ours / f).stat().st_size - 8 - int.from_bytes((ours / f).read_bytes()[:8], "little") for f in set(index["weight_map"].values())
    )
    assert set(index["weight_map"]) == set(ref_index["weight_map"])
    assert verify(ours, ref).ok


def test_bf16_export_is_the_cast_of_the_master_weights(fixtures, tmp_path):
    fx = fixtures["gpt-z3-bf16"]
    result = ckpt_tui("convert", fx.path, "--to", "hf", "-o", tmp_path / "bf16", "--dtype", "bf16", "--verify", "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["verify"]["ok"] and doc["verify"]["compare_dtype"] == "bfloat16"
    assert doc["verify"]["bitwise_equal"] == doc["verify"]["tensors_compared"]
    ckpt = open_checkpoint(tmp_path / "bf16")
    assert set(ckpt.dtypes) == {"bfloat16"}
    # without the cast, fp32 master vs bf16 export differs: verify must say so with exit 1
    differ = ckpt_tui("verify", fx.path, tmp_path / "bf16")
    assert differ.code == 1 and "DIFFER" in differ.out


@pytest.mark.parametrize("fid", [u for u in ALL_UNIVERSAL if "frozen" not in u])
def test_universal_to_hf_gives_the_fp32_weights(fixtures, tmp_path, fid):
    fx = fixtures[fid]
    zero = fixtures[fx.source]
    out = convert(fx.path, tmp_path / "hf", "hf")
    # the ZeRO side gives the fp32 master weights of the tag the universal folder was made from
    report = verify(out, zero.path / f"global_step{fx.step}")
    assert report.ok and report.bitwise_equal_count == len(report.compared)


def test_hf_to_hf_reshards_and_converts_bin(fixtures, tmp_path):
    src = fixtures["hf-gpt2-bin-sharded"]
    result = ckpt_tui("convert", src.path, "--to", "hf", "-o", tmp_path / "one", "--verify")
    assert result.code == 0, result.err + result.out
    assert (tmp_path / "one" / "model.safetensors").is_file()
    assert (tmp_path / "one" / "config.json").is_file(), "config.json is copied"
    assert "MATCH" in result.out


def test_refuses_existing_output_unless_forced(fixtures, tmp_path):
    fx = fixtures["gpt-z1-fp32"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_one_line_error(ckpt_tui("convert", fx.path, "--to", "hf", "-o", out), str(out), "already exists", "--force")
    assert (out / "keep.txt").read_text() == "mine"
    forced = ckpt_tui("convert", fx.path, "--to", "hf", "-o", out, "--force")
    assert forced.code == 0, forced.err
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".out.ckpt-tui-*")), "no temp or old folder left"


def test_failure_midway_leaves_no_output_and_no_temp(fixtures, tmp_path):
    """A rank's optimizer file truncated: the job fails with one line; nothing half-written remains."""
    fx = fixtures["gpt-z3-fp32"]
    src = tmp_path / "src"
    shutil.copytree(fx.path, src)
    victim = next((src / fx.tag).glob("*zero_pp_rank_1_*optim_states.pt"))
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    before = tree_hash(src)
    result = ckpt_tui("convert", src, "--to", "hf", "-o", tmp_path / "out")
    assert_one_line_error(result, str(victim))
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.ckpt-tui-*"))
    assert tree_hash(src) == before


def test_cancel_midway_leaves_nothing(fixtures, tmp_path):
    fx = fixtures["gpt-z2-bf16"]
    seen = []

    def listener(p):
        seen.append(p.tensors_done)
        if p.tensors_done == 5:
            control.cancel()

    control = JobControl(listener)
    with pytest.raises(CkptError, match="cancelled"):
        convert(fx.path, tmp_path / "out", "hf", control=control)
    assert max(seen) == 5
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    assert control.progress.phase == "cancelled"


def test_not_enough_space_is_refused_before_any_work(fixtures, tmp_path):
    calls = []
    with pytest.raises(CkptError, match="not enough free space"):
        run_job(fixtures["gpt-z1-fp32"].path, tmp_path / "out", lambda tmp, ctl: calls.append(tmp), needed_bytes=1 << 62)
    assert not calls and not (tmp_path / "out").exists()


def test_stale_temp_of_a_killed_job_is_cleaned_by_the_next_run(fixtures, tmp_path):
    stale = tmp_path / ".out.ckpt-tui-tmp-999999999"  # no such pid: its job died (kill -9)
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    convert(fixtures["gpt-z1-fp32"].path, tmp_path / "out", "hf")
    assert not stale.exists() and (tmp_path / "out" / "model.safetensors").is_file()


def test_progress_events_cover_every_tensor_and_byte(fixtures, tmp_path):
    fx = fixtures["gpt-z1-fp32"]
    events = []
    convert(fx.path, tmp_path / "out", "hf", control=JobControl(events.append))
    convert_events = [e for e in events if e.phase == "convert"]
    last = convert_events[-1]
    assert last.tensors_done == last.tensors_total == len(fx.truth.params)
    assert last.bytes_done == last.bytes_total > 0
    assert any(e.current for e in convert_events)
    assert events[-1].phase == "done"
