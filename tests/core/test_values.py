"""Loading one tensor's values from each format, checked against an independent reader; statistics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ckpt_tui.core import values
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.inspect import open_checkpoint
from ckpt_tui.core.values import load_tensor, tensor_stats


def reference_weights(folder: Path) -> dict[str, torch.Tensor]:
    """What zero_to_fp32 / save_pretrained wrote, read with safetensors or plain torch.load."""
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    if not out:
        for f in sorted(folder.glob("*.bin")):
            out.update(torch.load(f, map_location="cpu", weights_only=True))
    assert out, f"no weights in {folder}"
    return out


def assert_all_values_match(ckpt, ref: dict[str, torch.Tensor], *, cast: bool = False) -> None:
    for entry in ckpt.tensors:
        got = load_tensor(ckpt, entry)
        want = ref[entry.tied_to] if entry.name not in ref and entry.tied_to else ref[entry.name]
        assert tuple(got.shape) == entry.shape, entry.name
        if cast:  # compute-dtype weights: the fp32 master rounded to the training dtype
            want = want.to(got.dtype)
        assert torch.equal(got, want), entry.name


@pytest.mark.parametrize(
    "fid", ["hf-gpt2-safetensors", "hf-gpt2-safetensors-sharded", "hf-gpt2-bin", "hf-gpt2-bin-sharded"]
)
def test_hf_folders_match_an_independent_read(fixtures, fid):
    fx = fixtures[fid]
    ckpt = open_checkpoint(fx.path)
    assert_all_values_match(ckpt, reference_weights(fx.path))


def test_tied_alias_reads_its_owner(fixtures):
    ckpt = open_checkpoint(fixtures["hf-gpt2-safetensors"].path)
    aliases = [t for t in ckpt.tensors if t.tied_to]
    assert aliases, "the GPT-2 fixture ties lm_head to wte"
    for alias in aliases:
        assert torch.equal(load_tensor(ckpt, alias), load_tensor(ckpt, alias.tied_to))


@pytest.mark.parametrize(
    "run", ["gpt-z1-fp32", "gpt-z2-fp32-frozen", "hf-gpt2-z1-fp32", "gpt-z1-bf16", "gpt-z3-bf16", "hf-gpt2-z3-fp32"]
)
def test_zero_values_are_the_master_weights_zero_to_fp32_consolidates(fixtures, run):
    """Every stage and precision: the fp32 master weights, gathered from the ranks' partitions."""
    ckpt = open_checkpoint(fixtures[run].path)
    assert_all_values_match(ckpt, reference_weights(fixtures[f"{run}.fp32"].path))


def test_frozen_parameters_have_values(fixtures):
    fx = fixtures["gpt-z2-fp32-frozen"]
    ckpt = open_checkpoint(fx.path)
    frozen = [t for t in ckpt.tensors if t.frozen]
    assert {t.name for t in frozen} == fx.truth.frozen
    for t in frozen:
        assert tuple(load_tensor(ckpt, t).shape) == t.shape


@pytest.mark.parametrize("run", ["gpt-z1-fp32", "gpt-z3-fp32", "hf-gpt2-z3-fp32", "gpt-z2-bf16"])
def test_universal_fp32_equals_zero_to_fp32(fixtures, run):
    """Both layouts: ZeRO-1/2 {'param': shaped} and ZeRO-3 bare flat tensors (reshaped to the entry)."""
    ckpt = open_checkpoint(fixtures[f"{run}.universal"].path)
    ref = reference_weights(fixtures[f"{run}.fp32"].path)
    assert_all_values_match(ckpt, ref)


def test_lookup_by_name_and_unknown_name(fixtures):
    ckpt = open_checkpoint(fixtures["hf-gpt2-safetensors"].path)
    name = ckpt.tensors[0].name
    assert torch.equal(load_tensor(ckpt, name), load_tensor(ckpt, ckpt.tensors[0]))
    with pytest.raises(CkptError, match="no tensor named 'nope'"):
        load_tensor(ckpt, "nope")


def test_single_file_and_missing_file(tmp_path):
    f = tmp_path / "one.safetensors"
    data = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    save_file(data, f)
    ckpt = open_checkpoint(f)
    assert torch.equal(load_tensor(ckpt, "a.weight"), data["a.weight"])
    f.unlink()
    with pytest.raises(CkptError) as info:
        load_tensor(ckpt, "a.weight")
    assert "one.safetensors" in str(info.value)


# ------------------------------------------------------------------------------------ statistics


def test_stats_match_torch_and_count_nonfinite():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g)
    x[3] = math.nan
    x[10] = math.inf
    x[11] = -math.inf
    x[12] = 0.0
    s = tensor_stats(x.reshape(10, 100), bins=16)
    finite = x[torch.isfinite(x)].double()
    assert (s.numel, s.finite, s.nan, s.posinf, s.neginf, s.inf) == (1000, 997, 1, 1, 1, 2)
    assert s.zeros >= 1 and s.dtype == "float32"
    assert s.min == pytest.approx(finite.min().item())
    assert s.max == pytest.approx(finite.max().item())
    assert s.mean == pytest.approx(finite.mean().item())
    assert s.std == pytest.approx(finite.std().item())
    assert s.abs_mean == pytest.approx(finite.abs().mean().item())
    assert len(s.histogram) == 16 and sum(s.histogram) == 997
    assert len(s.edges) == 17 and s.edges[0] == s.min and s.edges[-1] == s.max
    expected = torch.histc(finite, bins=16, min=s.min, max=s.max)
    assert list(s.histogram) == [int(c) for c in expected.tolist()]


def test_stats_in_chunks_equal_one_pass(monkeypatch):
    x = torch.randn(1003, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    whole = tensor_stats(x)
    monkeypatch.setattr(values, "CHUNK", 7)
    chunked = tensor_stats(x)
    assert chunked.histogram == whole.histogram
    for field in ("min", "max", "mean", "std", "abs_mean"):
        assert getattr(chunked, field) == pytest.approx(getattr(whole, field), rel=1e-12)
    assert chunked.dtype == "bfloat16"


def test_stats_edge_cases():
    const = tensor_stats(torch.full((5,), 2.0))
    assert (const.min, const.max, const.std) == (2.0, 2.0, 0.0) and sum(const.histogram) == 5
    empty = tensor_stats(torch.empty(0))
    assert empty.numel == 0 and empty.min is None and empty.histogram == ()
    all_nan = tensor_stats(torch.full((3,), math.nan))
    assert all_nan.nan == 3 and all_nan.mean is None
    ints = tensor_stats(torch.tensor([1, 2, 3, 0], dtype=torch.int64))
    assert (ints.min, ints.max, ints.zeros, ints.dtype) == (0.0, 3.0, 1, "int64")
    one = tensor_stats(torch.tensor([4.0]))
    assert one.std == 0.0
    with pytest.raises(CkptError, match="complex"):
        tensor_stats(torch.zeros(2, dtype=torch.complex64))


def test_stats_of_a_real_tensor(fixtures):
    fx = fixtures["gpt-z2-bf16"]
    ckpt = open_checkpoint(fx.path)
    entry = ckpt.tensors[0]
    tensor = load_tensor(ckpt, entry)
    s = tensor_stats(tensor)
    assert s.numel == entry.numel and s.nonfinite == 0
    assert s.mean == pytest.approx(tensor.double().mean().item())
