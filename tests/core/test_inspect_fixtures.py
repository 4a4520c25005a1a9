"""inspect, checked against the truth: every fixture made by real DeepSpeed / transformers.

The truth is what the training process recorded about its own model (truth.json: named_parameters,
tied pairs, frozen params), independent of any reader.
"""

from __future__ import annotations

import math
import shutil

import pytest

from ckpt_tui.core.inspect import open_checkpoint
from ckpt_tui.core.model import Kind
from tests.fixtures.builder import ALL_HF, ALL_UNIVERSAL, ALL_ZERO, Fixture
from tests.helpers import ckpt_tui

CHECKPOINTS = ALL_ZERO + ALL_UNIVERSAL + ALL_HF


def _assert_tensors_match_truth(doc: dict, fx: Fixture) -> None:
    """Every parameter with its shape; aliases marked as tied to their owner; nothing invented."""
    by_name = {t["name"]: t for t in doc["tensors"]}
    truth = fx.truth
    upstream_drops_frozen = fx.kind is Kind.DS_UNIVERSAL and fx.stage == 3 and truth.frozen
    if upstream_drops_frozen:  # ds_to_universal writes no ZeRO-3 frozen folders: we must say so
        assert any("have no zero/ folder" in w for w in doc["warnings"]), doc["warnings"]
    for name, p in truth.params.items():
        if upstream_drops_frozen and p.frozen:
            continue
        assert name in by_name, f"{fx.id}: {name} missing"
        assert tuple(by_name[name]["shape"]) == p.shape, f"{fx.id}: {name}"
        assert by_name[name]["tied_to"] is None
    for alias, owner in truth.tied.items():
        if alias in by_name:
            assert by_name[alias]["tied_to"] == owner, f"{fx.id}: {alias}"
            assert tuple(by_name[alias]["shape"]) == truth.shape(owner)
    known = set(truth.params) | set(truth.tied) | set(truth.buffers)
    assert set(by_name) <= known, f"{fx.id}: unexpected {set(by_name) - known}"
    stored = [t for t in doc["tensors"] if not t["tied_to"] and not t["buffer"]]
    buffers = sum(t["numel"] for t in doc["tensors"] if t["buffer"] and not t["tied_to"])
    assert doc["totals"]["numel"] - buffers == sum(t["numel"] for t in stored)
    for t in stored:
        assert t["numel"] == math.prod(truth.shape(t["name"]))


@pytest.mark.parametrize("fid", CHECKPOINTS)
def test_inspect_json_matches_truth(fixtures, fid):
    fx = fixtures[fid]
    result = ckpt_tui("inspect", fx.path, "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["kind"] == fx.kind.value
    _assert_tensors_match_truth(doc, fx)
    if fx.kind is Kind.DS_ZERO:
        assert doc["zero_stage"] == fx.stage
        assert doc["dp_world_size"] == fx.dp
        assert doc["mp_world_size"] == 1
        assert doc["step"] == fx.step and doc["tag"] == fx.tag
        assert doc["compute_dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[fx.dtype]
        assert doc["ds_version"]
        assert doc["shared_params"] == fx.truth.tied
        frozen = {t["name"] for t in doc["tensors"] if t["frozen"]}
        assert frozen == fx.truth.frozen
        ranks = sorted(f["rank"] for f in doc["files"] if f["role"] == "optim_states")
        assert ranks == list(range(fx.dp))
        if len(fx.tags) > 1:
            assert doc["metadata"]["tags"] == list(fx.tags)
    if fx.kind is Kind.DS_UNIVERSAL:
        assert set(doc["optimizer_states"]) >= {"exp_avg", "exp_avg_sq"}
        assert doc["metadata"]["layout"] == ("zero3" if fx.stage == 3 else "zero12")
        for t in doc["tensors"]:
            assert "fp32" in t["states"]
            assert t["dtype"] == "float32"


@pytest.mark.parametrize("fid", CHECKPOINTS)
def test_inspect_text(fixtures, fid):
    fx = fixtures[fid]
    result = ckpt_tui("inspect", fx.path)
    assert result.code == 0, result.err
    assert fx.kind.label in result.out
    assert f"{fx.truth.numel:,}" in result.out or fx.kind is not Kind.DS_ZERO
    if fx.stage is not None and fx.kind is Kind.DS_ZERO:
        assert "ZeRO stage" in result.out and str(fx.dp) in result.out


@pytest.mark.parametrize("fid", [i for i in ALL_ZERO if "z2" in i or "z3" in i][:2] + ["gpt-z1-bf16"])
def test_listing_zero_never_reads_optimizer_files(fixtures, tmp_path, fid):
    """Replace every optimizer file with garbage of the same size: the listing must not change."""
    fx = fixtures[fid]
    copy = tmp_path / "ckpt"
    shutil.copytree(fx.path, copy)
    before = ckpt_tui("inspect", copy, "--json").json()
    for f in (copy / fx.tag).glob("*optim_states.pt"):
        f.write_bytes(b"\0" * f.stat().st_size)
    after = ckpt_tui("inspect", copy, "--json")
    assert after.code == 0, after.err
    assert after.json() == before


def test_tied_gpt2_lists_alias_everywhere(fixtures):
    """GPT-2 ties lm_head to wte: every kind shows the alias, pointing at the owner, counted once."""
    for fid in ["hf-gpt2-z1-fp32", "hf-gpt2-z1-fp32.universal", "hf-gpt2-safetensors", "hf-gpt2-bin"]:
        ckpt = open_checkpoint(fixtures[fid].path)
        assert ckpt.shared_params.get("lm_head.weight") == "transformer.wte.weight", fid
        alias = next(t for t in ckpt.tensors if t.name == "lm_head.weight")
        assert alias.tied_to == "transformer.wte.weight"
        assert ckpt.total_numel == fixtures[fid].truth.numel, fid


@pytest.mark.parametrize("fid", ["gpt-z2-bf16", "gpt-z3-fp32"])
def test_inspect_pieces_names_the_rank_files_of_every_value(fixtures, fid):
    """`inspect --pieces`: each trainable tensor's fp32 values, piece by piece, in the ranks' optimizer files."""
    fx = fixtures[fid]
    result = ckpt_tui("inspect", fx.path, "--json", "--pieces")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["schema"] == "ckpt-tui.checkpoint/2"
    assert doc["layout"] == {"dp": fx.dp, "tp": 1, "pp": 1, "ep": 1, "zero_stage": fx.stage}
    ranks_used = set()
    for t in doc["tensors"]:
        if t["tied_to"] or t["buffer"] or t["frozen"]:
            continue
        pieces = sorted(t["pieces"], key=lambda p: p["flat"][0])
        assert [p["flat"][0] for p in pieces] == [sum(q["flat"][1] for q in pieces[:i]) for i in range(len(pieces))]
        assert sum(p["flat"][1] for p in pieces) == t["numel"], t["name"]
        assert all("optim_states" in p["file"] and f"zero_pp_rank_{p['rank']}_" in p["file"] for p in pieces)
        ranks_used |= {p["rank"] for p in pieces}
    assert ranks_used == set(range(fx.dp))
    text = ckpt_tui("inspect", fx.path, "--pieces")
    assert text.code == 0 and "pieces" in text.out and "values 0.." in text.out
