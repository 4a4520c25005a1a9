"""The TP merge rules against DeepSpeed's own merge, and against hostile universal_checkpoint_info.

DeepSpeed's ``merge_tp_slices`` (the merge step of ds_to_universal) is run on the same slices as ours for
every rule of universal_checkpoint_info (row-parallel, replicated, averaged, 2 sub-params, sub-params with
even and uneven widths, vocabulary padding, affine maps): the merged tensors and the restore hints must be
identical. Malformed rules from a file end in one CkptError naming it, never in a crash.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats.deepspeed_tp_placement import placements
from ckpt_tui.core.formats.deepspeed_tp_rules import TpRules

torch = pytest.importorskip("torch")


def _deepspeed_merge(info: dict, name: str, slices: list, tmp: Path) -> dict:
    """ds_to_universal's merge of one parameter's TP slices (fp32 state), read back from its output."""
    from deepspeed.checkpoint.ds_to_universal import merge_tp_slices

    slice_dir, out = tmp / "slices", tmp / "out"
    for tp, piece in enumerate(slices):
        folder = slice_dir / name / str(tp)
        folder.mkdir(parents=True)
        for state in ("fp32", "exp_avg", "exp_avg_sq"):  # it merges all three; the fp32 result is compared
            torch.save(piece.reshape(-1).clone(), folder / f"{state}.00")
    (out / name).mkdir(parents=True)
    merge_tp_slices(info, str(out), str(slice_dir), len(slices), (name, [tuple(s.shape) for s in slices]))
    return torch.load(out / name / "fp32.pt", weights_only=False)


def _ours(info: dict, name: str, slices: list) -> tuple:
    """Our merge of the slices; where the rule has placements, the placed merge must equal it."""
    rules = TpRules(info, len(slices), "test")
    local = [tuple(s.shape) for s in slices]
    split = rules.split(name, local)
    merged = split.merge([s.clone() for s in slices], "fp32")
    assert tuple(merged.shape) == split.full_shape(local)
    placed = placements(split, local)
    if placed is not None:
        assert torch.equal(_placed(placed, slices, merged.numel()).view(merged.shape), merged)
    return merged, split


def _placed(placed: tuple, slices: list, numel: int):  # noqa: ANN202
    """The full tensor from placements, each rank's values fed in runs of 5 (ZeRO runs cut rows anywhere)."""
    full = torch.full((numel,), float("nan"))
    for rank, runs in enumerate(placed):
        flat = slices[rank].reshape(-1)
        for p in runs:
            for at in range(0, p.count, 5):
                p.put(full, at, flat[p.start + at: p.start + min(at + 5, p.count)])
    return full


def _subparam(patterns: list[str], shape: list, dim: int) -> dict:
    return {"patterns": patterns, "shape": shape, "partition_dim": dim}


CASES = {
    "row": ({"parameter_with_row_parallelism_patterns": [r"^o\.weight$"]}, "o.weight", [(6, 4), (6, 4)]),
    "column": ({}, "q.weight", [(4, 6), (4, 6)]),
    "replicated": ({"tp_replicated_parameter_patterns": [r"^norm\.weight$"]}, "norm.weight", "same"),
    "averaged": ({"parameter_to_average_patterns": [r"^b$"]}, "b", [(5,), (5,)]),
    "gate_up": ({"parameter_with_2_sub_params_cat_dim_0": [r"^mlp\.w13$"]}, "mlp.w13", [(8, 3), (8, 3)]),
    "qkv_count": ({"universal_checkpoint_version": 0.3,
                   "parameter_with_sub_params": [_subparam([r"^qkv$"], [3, -1], 0)]}, "qkv", [(6, 4), (6, 4)]),
    "qkv_gqa_uneven": ({"universal_checkpoint_version": 0.4,
                        "parameter_with_sub_params": [_subparam([r"^qkv$"], [(8, 4, 4), -1], 0)],
                        "sub_param_shard_widths": {r"^qkv$": [[4, 4], [3, 1], [1, 3]]}},
                       "qkv", [(8, 4), (8, 4)]),
    "vocab": ({"vocabulary_parameter_patterns": [r"^emb$"], "original_vocab_size": 7}, "emb", [(4, 3), (4, 3)]),
    "row_3d_uneven": ({"parameter_with_row_parallelism_patterns": [r"^c$"]}, "c", [(2, 3, 4), (2, 2, 4)]),
    "qkv_dim1": ({"universal_checkpoint_version": 0.3,
                  "parameter_with_sub_params": [_subparam([r"^qkv$"], [-1, 3], 1)]}, "qkv", [(4, 6), (4, 6)]),
}
NOT_PLACED = {"averaged", "qkv_dim1"}  # the merge needs every slice at once


@pytest.mark.parametrize("case", list(CASES))
def test_merge_equals_deepspeeds(case: str, tmp_path: Path) -> None:
    info, name, shapes = CASES[case]
    gen = torch.Generator().manual_seed(7)
    if shapes == "same":
        one = torch.randn(5, generator=gen)
        slices = [one.clone(), one.clone()]
    else:
        slices = [torch.randn(s, generator=gen) for s in shapes]
    merged, split = _ours(info, name, slices)
    ref = _deepspeed_merge(info, name, slices, tmp_path)
    assert torch.equal(merged, ref["param"]), case
    assert (placements(split, [tuple(s.shape) for s in slices]) is None) == (case in NOT_PLACED)
    ours_hints, ref_hints = split.hints(), {k: v for k, v in ref.items() if k != "param"}
    if case.startswith("qkv"):  # a SubparamShape dataclass there, our inert record of the same fields here
        ours_shape, ref_shape = ours_hints["sub_param_shape"], ref_hints["sub_param_shape"]
        assert set(ours_hints) == set(ref_hints) == {"sub_param_shape"}
        for key in ("patterns", "shape", "partition_dim"):
            assert getattr(ours_shape, key) == getattr(ref_shape, key), key
    else:
        assert ours_hints == ref_hints, case


def test_affine_map_rebuilds_and_checks_replicas(tmp_path: Path) -> None:
    """An AutoTP-style map (rows split, plus a replicated vector) merges like DeepSpeed's."""
    from deepspeed.checkpoint.affine import contiguous_split_map, replicated_map

    w_map = contiguous_split_map((6, 4), [3, 3], 0).to_dict()
    n_map = replicated_map((4,), 2).to_dict()
    info = {"affine_map": {"version": 1, "params": {r"^w$": w_map, r"^n$": n_map}}}
    full = torch.arange(24.0).view(6, 4)
    merged, split = _ours(info, "w", [full[:3].clone(), full[3:].clone()])
    assert split.how == "affine" and torch.equal(merged, full)
    assert torch.equal(_deepspeed_merge(info, "w", [full[:3], full[3:]], tmp_path)["param"], full)
    vec = torch.ones(4)
    _ours(info, "n", [vec, vec.clone()])
    with pytest.raises(ValueError, match="replicated"):
        _ours(info, "n", [vec, vec + 1])


@pytest.mark.parametrize("evil", [
    {"source": [10_000, [4, 1]]},  # reaches past the full tensor
    {"dest": [-1, [4, 1]]},  # before the shard
    {"source": [0, [4]]},  # strides of the wrong rank
    {"shape": [0, 4]},  # leaves half the tensor uncovered
])
def test_hostile_affine_blocks_are_refused(evil: dict) -> None:
    """Offsets, strides and shapes of an affine map come from the file: as_strided never sees a bad one."""
    entry = {"logical_shape": [6, 4], "ranks": {
        0: {"shard_shape": [3, 4], "pieces": [{"shape": [3, 4], "source": [0, [4, 1]], "dest": [0, [4, 1]], "locations": [0]}]},
        1: {"shard_shape": [3, 4], "pieces": [{"shape": [3, 4], "source": [12, [4, 1]], "dest": [0, [4, 1]], "locations": [1]}]},
    }}
    entry["ranks"][1]["pieces"][0].update(evil)
    info = {"affine_map": {"version": 1, "params": {r"^w$": entry}}}
    with pytest.raises(ValueError):
        _ours(info, "w", [torch.zeros(3, 4), torch.zeros(3, 4)])


def test_a_huge_logical_shape_is_refused_before_allocating() -> None:
    entry = {"logical_shape": [2**31, 2**20], "ranks": {
        r: {"shard_shape": [3, 4], "pieces": [{"shape": [3, 4], "source": [0, [4, 1]], "dest": [0, [4, 1]], "locations": [r]}]}
        for r in (0, 1)}}
    info = {"affine_map": {"version": 1, "params": {r"^w$": entry}}}
    with pytest.raises(ValueError, match="blocks hold 24"):
        _ours(info, "w", [torch.zeros(3, 4), torch.zeros(3, 4)])


@pytest.mark.parametrize(("info", "fragment"), [
    ({"affine_map": {"version": 99, "params": {}}}, "newer than this reader"),
    ({"affine_map": "nope"}, "not a mapping"),
    ({"parameter_with_sub_params": [_subparam([r"^qkv$"], [5, -1], 0)]}, "do not divide"),
    ({"tp_replicated_parameter_patterns": ["(unclosed"]}, "cannot tell how TP slices"),
])
def test_malformed_rules_are_one_error(info: dict, fragment: str) -> None:
    with pytest.raises(CkptError, match=fragment):
        TpRules(info, 2, "model_states.pt").split("qkv", [(6, 4), (6, 4)])


def test_fused_name_without_a_sub_param_rule_is_warned() -> None:
    rules = TpRules({}, 2, "x")
    split = rules.split("1.attn.qkv.weight", [(96, 64), (96, 64)])
    assert "looks fused" in (rules.fused_warning("1.attn.qkv.weight", split) or "")
    plain = rules.split("1.attn.proj.weight", [(32, 64), (32, 64)])
    assert rules.fused_warning("1.attn.proj.weight", plain) is None
    assert TpRules({}, 1, "x").fused_warning("1.attn.qkv.weight", split) is None
