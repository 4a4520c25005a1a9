"""The contract every format adapter keeps, checked the same way over every registered adapter.

Each check runs over the real fixtures of the adapter's kind (made by DeepSpeed, transformers and torch's
SummaryWriter): detection, the listing against what training recorded (truth.json), the values against an
independent reader of the reference output (zero_to_fp32's files read with safetensors / torch.load), the
pieces of every tensor, the scan entry and the labels. A kind registered without fixtures here fails
`test_every_adapter_has_fixtures`: adding a kind means adding its fixtures to this contract.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ckpt_tui.core.formats.registry import Adapter, adapter_for, adapters, detect
from ckpt_tui.core.model import Checkpoint, Kind, TensorEntry
from ckpt_tui.core.scan import ScanReport
from ckpt_tui.core.sources import open_source
from tests.fixtures.builder import ALL, Fixture

# A few fixtures of each kind (every ZeRO stage, dtypes, frozen, tied, sharded HF) keep the suite fast.
CONTRACT_FIXTURES = {
    Kind.DS_ZERO: ["gpt-z1-fp32", "gpt-z2-bf16", "gpt-z3-fp32", "gpt-z3-fp32-frozen", "hf-gpt2-z3-fp32",
                   "hf-gpt2-z2-bf16-dp1", "gpt-pp2-z1-fp32", "llama-tp2-dp2-z2-bf16",
                   "megatron-tp2-pp2-z1-fp32"],
    Kind.DS_UNIVERSAL: ["gpt-z1-bf16.universal", "gpt-z3-bf16.universal", "hf-gpt2-z1-fp32.universal",
                        "llama-tp2-z1-fp32.universal", "megatron-tp2-pp2-z1-fp32.universal"],
    Kind.HF_SAFETENSORS: ["hf-gpt2-safetensors-sharded", "gpt-z2-fp32-frozen.fp32"],
    Kind.HF_BIN: ["hf-gpt2-bin-sharded", "hf-gpt2-z3-fp32.fp32"],
    Kind.TENSORBOARD: ["tb-baseline", "tb-shared"],
}
CASES = [(kind, fid) for kind, ids in CONTRACT_FIXTURES.items() for fid in ids]
CHECKPOINT_CASES = [(k, f) for k, f in CASES if k is not Kind.TENSORBOARD]


def _ids(cases: list[tuple[Kind, str]]) -> list[str]:
    return [fid for _kind, fid in cases]


def test_every_adapter_has_fixtures():
    assert {a.kind for a in adapters()} == set(CONTRACT_FIXTURES)
    assert all(fid in ALL for ids in CONTRACT_FIXTURES.values() for fid in ids)


def test_adapters_are_distinct_and_complete():
    found = adapters()
    assert [a.priority for a in found] == sorted(a.priority for a in found)
    for field in ("kind", "label", "short", "color"):
        values = [getattr(a, field) for a in found]
        assert len(set(values)) == len(values), f"two adapters share a {field}"
    for adapter in found:
        assert adapter_for(adapter.kind) is adapter and adapter.kind.label == adapter.label
        if not adapter.is_run:
            assert adapter.open_source is not None, f"{adapter.kind}: a checkpoint kind must give values"


@pytest.mark.parametrize(("kind", "fid"), CASES, ids=_ids(CASES))
def test_detect_finds_the_kind(fixtures, kind, fid):
    assert detect(fixtures[fid].path).kind is kind


@pytest.mark.parametrize(("kind", "fid"), CASES, ids=_ids(CASES))
def test_scan_entry(fixtures, kind, fid):
    fx = fixtures[fid]
    adapter = adapter_for(kind)
    report = ScanReport(fx.path)
    entry = adapter.scan_entry(fx.path, report)
    assert entry is not None and entry.kind is kind and entry.size > 0 and not report.skipped
    assert entry.is_run is adapter.is_run
    if kind in (Kind.DS_ZERO, Kind.DS_UNIVERSAL, Kind.TENSORBOARD):
        assert entry.step == fx.step
    assert adapter.badge(entry.stage)


def _listed(fx: Fixture) -> Checkpoint:
    adapter = adapter_for(fx.kind)
    assert adapter.read is not None
    return adapter.read(fx.path)


@pytest.mark.parametrize(("kind", "fid"), CHECKPOINT_CASES, ids=_ids(CHECKPOINT_CASES))
def test_listing_matches_the_training_record(fixtures, kind, fid):
    fx = fixtures[fid]
    ckpt = _listed(fx)
    assert ckpt.kind is kind
    by_name = {t.name: t for t in ckpt.tensors}
    for name, param in fx.truth.params.items():
        if name in by_name:
            assert by_name[name].shape == param.shape, name
    missing = set(fx.truth.params) - set(by_name)
    assert not missing or any("no zero/ folder" in w for w in ckpt.warnings), missing
    if kind is Kind.DS_ZERO:
        assert ckpt.layout.dp == fx.dp and ckpt.layout.zero_stage == fx.stage
        assert ckpt.layout.tp == fx.tp and ckpt.layout.pp == fx.pp


def _assert_runs_cover(name: str, runs: list, numel: int) -> None:
    assert all(r is not None for r in runs), name
    pos = 0
    for start, count in sorted(runs):
        assert start == pos and count > 0, (name, runs)
        pos += count
    assert pos == numel, (name, pos, numel)


def _assert_pieces_cover(t: TensorEntry, pieces) -> None:  # noqa: ANN001
    """Flat pieces are disjoint runs that cover the flattened tensor exactly; a whole piece covers it alone.

    TP pieces are blocks of the full tensor (one per TP rank, or replicas of all of it), each perhaps cut
    again into runs by ZeRO: the distinct blocks tile the tensor, each block's runs cover it.
    """
    if len(pieces) == 1 and pieces[0].flat is None and not pieces[0].sizes:
        return
    if not any(p.sizes for p in pieces):
        _assert_runs_cover(t.name, [p.flat for p in pieces], t.numel)
        return
    blocks: dict = {}
    for p in pieces:
        assert p.sizes and p.tp is not None, t.name
        blocks.setdefault((p.tp, p.offsets, p.sizes), []).append(p.flat)
    for (_, _, sizes), runs in blocks.items():
        if runs != [None]:
            _assert_runs_cover(t.name, runs, math.prod(sizes))
    distinct = {(o, s) for _, o, s in blocks}
    replicated = all(s == t.shape for _, s in distinct)
    assert replicated or sum(math.prod(s) for _, s in distinct) == t.numel, (t.name, distinct)


@pytest.mark.parametrize(("kind", "fid"), CHECKPOINT_CASES, ids=_ids(CHECKPOINT_CASES))
def test_pieces_cover_every_tensor(fixtures, kind, fid):
    fx = fixtures[fid]
    ckpt = _listed(fx)
    root = ckpt.path if ckpt.path.is_dir() else ckpt.path.parent
    with open_source(ckpt) as source:
        for t in ckpt.tensors:
            listed, exact = t.layout_pieces, source.pieces(t.name)
            for pieces in (listed, exact):
                _assert_pieces_cover(t, pieces)
                assert all((root / p.file).is_file() for p in pieces), t.name
    if kind is Kind.DS_ZERO and fx.stage == 3 and fx.dp > 1:
        trainable = [t for t in ckpt.tensors if not (t.tied_to or t.buffer)]
        assert all(len(t.pieces) == min(fx.dp, t.numel) for t in trainable), "ZeRO-3: one piece per rank"


def _reference_values(fixtures: dict[str, Fixture], fx: Fixture) -> dict:
    """What zero_to_fp32 (or transformers) wrote for the same weights, read without ckpt-tui."""
    import torch
    from safetensors.torch import load_file

    if fx.kind in (Kind.HF_SAFETENSORS, Kind.HF_BIN):
        ref = fx
    elif "fp32" not in (fixtures[fx.source] if fx.kind is Kind.DS_UNIVERSAL else fx).derived:
        # TP/PP runs: zero_to_fp32 does not merge TP slices; ds_to_universal's fp32.pt files do
        uni = fx if fx.kind is Kind.DS_UNIVERSAL else fixtures[fx.derived["universal"]]
        folders = [f for f in (uni.path / uni.tag / "zero").iterdir() if f.is_dir()]
        return {f.name: torch.load(f / "fp32.pt", map_location="cpu", weights_only=False)["param"] for f in folders}
    else:
        run = fixtures[fx.source] if fx.kind is Kind.DS_UNIVERSAL else fx
        ref = fixtures[run.derived["fp32"]]
    files = sorted(Path(ref.path).glob("*.safetensors")) or sorted(Path(ref.path).glob("*.bin"))
    values: dict = {}
    for f in files:
        values.update(load_file(f) if f.suffix == ".safetensors" else torch.load(f, map_location="cpu", weights_only=True))
    return values


@pytest.mark.parametrize(("kind", "fid"), CHECKPOINT_CASES, ids=_ids(CHECKPOINT_CASES))
def test_values_match_an_independent_reader(fixtures, kind, fid):
    import torch

    fx = fixtures[fid]
    ref = _reference_values(fixtures, fx)
    compared = 0
    with open_source(_listed(fx)) as source:
        for t in source.tensors:
            if t.name not in ref:
                continue
            got, want = source.read(t.name), ref[t.name]
            assert tuple(got.shape) == tuple(want.shape), t.name
            assert torch.equal(got.to(want.dtype), want), f"{fid}: {t.name} differs from the reference"
            compared += 1
        for alias, owner in source.aliases.items():
            assert torch.equal(source.read(alias), source.read(owner))
    assert compared >= math.ceil(0.9 * len([n for n in fx.truth.params if not fx.truth.params[n].frozen]))


@pytest.mark.parametrize("kind", [k for k in CONTRACT_FIXTURES if k is not Kind.TENSORBOARD])
def test_sources_never_change_the_checkpoint(fixtures, kind):
    fx = fixtures[CONTRACT_FIXTURES[kind][0]]
    ckpt = _listed(fx)
    before = (list(ckpt.warnings), list(ckpt.tensors), dict(ckpt.metadata))
    for _ in range(2):
        with open_source(ckpt) as source:
            source.read(source.tensors[0].name)
    assert (list(ckpt.warnings), list(ckpt.tensors), dict(ckpt.metadata)) == before


def test_a_run_is_not_a_checkpoint(fixtures):
    from ckpt_tui.core.errors import CkptError
    from ckpt_tui.core.inspect import open_checkpoint

    adapter: Adapter = adapter_for(Kind.TENSORBOARD)
    assert adapter.is_run and adapter.read is None
    with pytest.raises(CkptError, match="TensorBoard run, not a checkpoint"):
        open_checkpoint(fixtures["tb-baseline"].path)
