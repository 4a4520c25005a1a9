"""Tensor- and pipeline-parallel DeepSpeed checkpoints end to end, on real runs (torchrun + gloo, CPU).

Fixtures (tests/fixtures/builder.py RUNS_3D): a TinyGPT PipelineModule at PP 2 (fp32, and bf16 x DP 2)
and a tiny Llama under DeepSpeed AutoTP at TP 2 (fp32 ZeRO-1, and bf16 ZeRO-2 x DP 2), each trained 8
steps and saved at steps 2 and 4, plus ds_to_universal's conversion of step 4. Checked here: the listing
has every parameter with its FULL shape (truth.json of the training processes), the values we assemble
equal DeepSpeed's merge, our universal output equals ds_to_universal's file for file (tensors bitwise,
restore hints equal), and DeepSpeed resumes from our output at another TP / PP layout on the loss curve
of the uninterrupted run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ckpt_tui.core.convert.api import ConvertOptions, convert
from ckpt_tui.core.inspect import open_checkpoint
from ckpt_tui.demo.launch import run_training
from tests.fixtures import ALL_3D, ALL_3D_REFERENCED, Fixture
from tests.fixtures.builder import RUN_BY_ID
from tests.helpers import assert_one_line_error, ckpt_tui

FP32_TOL = 1e-5
# bf16 layout noise: fresh PP=1 and PP=2 bf16 runs of one model already differ by ~2e-4 per step
# (FIELD_NOTES_3D.md); 8 bf16 steps after a resume stay well inside this.
BF16_TOL = 3e-3
RESUME_TAG = "global_step4"


def _torch_load(path: Path):  # noqa: ANN202 - reference reads of DeepSpeed's own output
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


# ------------------------------------------------------------------------------------------- listing
@pytest.mark.parametrize("fid", ALL_3D)
def test_listing_has_full_shapes_and_the_layout(fixtures: dict[str, Fixture], fid: str) -> None:
    fx = fixtures[fid]
    ckpt = open_checkpoint(fx.path)
    assert (ckpt.layout.dp, ckpt.layout.tp, ckpt.layout.pp, ckpt.zero_stage) == (fx.dp, fx.tp, fx.pp, fx.stage)
    assert ckpt.layout.describe() == " × ".join(
        [f"DP {fx.dp}"] + [f"{a} {n}" for a, n in (("TP", fx.tp), ("PP", fx.pp)) if n > 1])
    listed = {t.name: t.shape for t in ckpt.tensors if not t.buffer}
    assert listed == {name: p.shape for name, p in fx.truth.params.items()}
    assert ckpt.total_numel == fx.truth.numel
    assert not [w for w in ckpt.warnings if "mp rank 0" in w]  # no TP-local caveat: the shapes are full


@pytest.mark.parametrize("fid", [f for f in ALL_3D if f.startswith("llama-tp2")])
def test_tp_pieces_cover_each_tensor_and_name_the_rule(fixtures: dict[str, Fixture], fid: str) -> None:
    """Every TP-split tensor: its pieces (one block per TP rank) tile the full shape; replicas repeat it."""
    result = ckpt_tui("inspect", fixtures[fid].path, "--json", "--pieces")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["layout"]["tp"] == 2
    for t in doc["tensors"]:
        blocks = {(p["tp"], tuple(p["offsets"]), tuple(p["sizes"])) for p in t["pieces"]}
        assert {tp for tp, _, _ in blocks} == {0, 1}, t["name"]
        assert t["split"] == "affine map" or t["split"].startswith("affine map,"), t  # AutoTP writes maps
        assert t["split_rule"] and t["split_rule"].startswith("^"), t
        volume = sum(math.prod(sizes) for _, _, sizes in blocks)
        replicated = all(sizes == tuple(t["shape"]) for _, _, sizes in blocks)
        assert volume == (2 * t["numel"] if replicated else t["numel"]), t["name"]
        runs = [p for p in t["pieces"] if p["flat"] is not None]
        assert runs and all("optim_states" in p["file"] for p in runs)
    q = next(t for t in doc["tensors"] if t["name"] == "model.layers.0.self_attn.q_proj.weight")
    assert sorted((p["tp"], p["offsets"], p["sizes"]) for p in q["pieces"]) == [(0, [0, 0], [32, 64]), (1, [32, 0], [32, 64])]
    text = ckpt_tui("inspect", fixtures[fid].path, "--pieces")
    assert text.code == 0 and "tp 1" in text.out and "(affine map)" in text.out


MEGATRON_SPLITS = {  # name -> how inspect describes its split (universal_checkpoint_info of megatron_gpt)
    "tied_modules.embed.weight": "dim 0, vocab rows ≤ 256",
    "1.pos.weight": "replicated",
    "2.qkv_weight": "3 sub-params, dim 0",
    "2.qkv_bias": "3 sub-params, dim 0",
    "2.proj_weight": "dim 1",
    "2.proj_bias": "replicated",
    "2.gate_up_weight": "2 sub-params, dim 0",
    "2.down_weight": "dim 1",
    "3.ln1.weight": "replicated",
    "4.norm.weight": "averaged",
}


@pytest.mark.parametrize("fid", [f for f in ALL_3D if f.startswith("megatron-")])
def test_megatron_rules_split_each_parameter(fixtures: dict[str, Fixture], fid: str) -> None:
    """Megatron-style TP (UCP 0.4 with shard widths, 0.3 without): every rule of universal_checkpoint_info
    is named, the fused QKV's pieces are its three sub-parameters' blocks on each rank, and the padded
    vocabulary is listed at its real size."""
    doc = ckpt_tui("inspect", fixtures[fid].path, "--json", "--pieces").json()
    by_name = {t["name"]: t for t in doc["tensors"]}
    assert {n: by_name[n]["split"] for n in MEGATRON_SPLITS} == MEGATRON_SPLITS
    assert not [w for w in doc["warnings"] if "looks fused" in w]  # qkv and gate_up have sub-param rules
    blocks = sorted((p["tp"], p["offsets"], p["sizes"]) for p in by_name["2.qkv_weight"]["pieces"] if p["flat"] is None)
    assert blocks == [(0, [0, 0], [32, 64]), (0, [64, 0], [16, 64]), (0, [96, 0], [16, 64]),
                      (1, [32, 0], [32, 64]), (1, [80, 0], [16, 64]), (1, [112, 0], [16, 64])]
    gate_up = sorted((p["tp"], p["offsets"][0]) for p in by_name["2.gate_up_weight"]["pieces"] if p["flat"] is None)
    assert gate_up == [(0, 0), (0, 128), (1, 64), (1, 192)]
    assert by_name["tied_modules.embed.weight"]["shape"] == [256, 64]  # 280 rows at TP 2, padding dropped


# -------------------------------------------------------------------------------------------- values
@pytest.mark.parametrize("fid", ALL_3D_REFERENCED)
def test_values_equal_deepspeeds_merge(fixtures: dict[str, Fixture], fid: str) -> None:
    """fp32 weights merged from every TP/PP/DP rank equal ds_to_universal's, tensor by tensor, bitwise."""
    fx = fixtures[fid]
    result = ckpt_tui("verify", fx.path, fixtures[f"{fid}.universal"].path, "--json")
    assert result.code == 0, result.err + result.out
    report = result.json()
    aliases = len(fx.truth.tied)  # the alias of a tied weight is compared too (its owner's values)
    assert report["ok"] and report["tensors_compared"] == len(fx.truth.params) + aliases
    assert report["bitwise_equal"] == report["tensors_compared"] and report["max_abs_diff"] == 0


@pytest.mark.parametrize("fid", ALL_3D_REFERENCED)
def test_universal_equals_ds_to_universal(fixtures: dict[str, Fixture], fid: str, tmp_path: Path) -> None:
    """The same zero/ folders, tensors bitwise equal, the same restore hints, as DeepSpeed's converter."""
    import torch

    fx = fixtures[fid]
    ref = fixtures[f"{fid}.universal"]
    ours = convert(fx.path / RESUME_TAG, tmp_path / f"{RESUME_TAG}_universal", "universal")
    ref_dir = ref.path / ref.tag
    ref_files = sorted(str(p.relative_to(ref_dir)) for p in (ref_dir / "zero").rglob("*.pt"))
    our_files = sorted(str(p.relative_to(ours)) for p in (ours / "zero").rglob("*.pt"))
    assert our_files == ref_files
    # ds_to_universal 0.19.8 saves a tied alias of a TP run as mp rank 0's module entry: the TP-LOCAL slice
    # (lm_head [128, 64] of a [256, 64] vocabulary-parallel embedding). Ours holds the full tensor.
    tied = {f"zero/{alias}/fp32.pt": owner for alias, owner in fx.truth.tied.items()} if fx.tp > 1 else {}
    for rel in ref_files:
        if rel.endswith("optimizer_state.pt"):
            continue
        a, b = _torch_load(ref_dir / rel), _torch_load(ours / rel)
        if isinstance(a, dict):
            assert {k: v for k, v in a.items() if k != "param"} == {k: v for k, v in b.items() if k != "param"}, rel
            a, b = a["param"], b["param"]
        if rel in tied:
            owner = _torch_load(ours / "zero" / tied[rel] / "fp32.pt")["param"]
            assert torch.equal(b, owner) and tuple(a.shape) != tuple(owner.shape) and torch.equal(a, owner[: a.shape[0]])
            continue
        assert torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), rel
    a, b = _torch_load(ref_dir / "zero" / "optimizer_state.pt"), _torch_load(ours / "zero" / "optimizer_state.pt")
    assert a["param_groups"] == b["param_groups"]
    assert sorted(p.name for p in ours.glob("*_model_states.pt")) == sorted(p.name for p in ref_dir.glob("*_model_states.pt"))


def test_empty_tp_shards_are_listed_from_the_affine_map(fixtures: dict[str, Fixture]) -> None:
    """TP 4 with 2 KV heads: TP ranks 2 and 3 hold no rows of q/k/v/o; the full shapes still add up."""
    fx = fixtures["llama-tp4-z1-fp32"]
    print(f"{fx.id}: {'; '.join(fx.notes)}")
    ckpt = open_checkpoint(fx.path)
    assert ckpt.layout.tp == 4
    k = next(t for t in ckpt.tensors if t.name == "model.layers.0.self_attn.k_proj.weight")
    assert k.shape == (32, 64) and sorted({p.tp for p in k.pieces}) == [0, 1]
    gate = next(t for t in ckpt.tensors if t.name == "model.layers.0.mlp.gate_proj.weight")
    assert sorted({p.tp for p in gate.pieces}) == [0, 1, 2, 3]


def test_bf16_optimizer_pipeline_is_listed_from_its_optimizer_files(fixtures: dict[str, Fixture]) -> None:
    """ZeRO stage 0 + bf16 (the BF16 optimizer) saves no param_shapes: the names and sizes come from its
    param_slice_mappings, the shapes from the layer files, and the fp32 masters we merge round to exactly
    the bf16 weights DeepSpeed wrote into those layer files."""
    import torch

    from ckpt_tui.core.sources import open_source

    fx = fixtures["gpt-pp2-dp2-z0-bf16"]
    print(f"{fx.id}: {'; '.join(fx.notes)}")
    ckpt = open_checkpoint(fx.path)
    assert ckpt.zero_stage == 0 and ckpt.compute_dtype == "bfloat16"
    tag = fx.path / fx.tag
    with open_source(ckpt) as source:
        for name in ("2.attn.qkv.weight", "tied_modules.embed.tok.weight", "4.weight"):
            index, key = (0, "tok.weight") if name.startswith("tied") else (int(name.split(".")[0]), name.split(".", 1)[1])
            written = _torch_load(tag / f"layer_{index:02d}-model_states.pt")[key]
            merged = source.read(name)
            assert merged.dtype == torch.float32 and torch.equal(merged.to(torch.bfloat16), written), name


@pytest.mark.parametrize("fid", ["llama-tp2-z1-fp32", "llama-tp2-tied-z1-fp32"])
def test_autotp_exports_hf_names_and_full_tensors(fixtures: dict[str, Fixture], fid: str, tmp_path: Path) -> None:
    """AutoTP names are the transformers model's: the export loads into LlamaForCausalLM as it is. A tied
    lm_head is left out, as save_pretrained does (the model ties it to the embedding on load)."""
    from safetensors.torch import load_file

    from ckpt_tui.demo.tiny_gpt import build_hf_llama

    fx = fixtures[fid]
    tied = fx.model == "hf-llama-tied"
    out = convert(fx.path, tmp_path / "hf", "hf")
    weights = {}
    for shard in out.glob("*.safetensors"):
        weights.update(load_file(shard))
    model = build_hf_llama(tied=tied)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and missing == (["lm_head.weight"] if tied else [])
    ref = fixtures[f"{fid}.universal"]
    head = "model.embed_tokens.weight" if tied else "lm_head.weight"
    full = _torch_load(ref.path / ref.tag / "zero" / head / "fp32.pt")["param"]
    assert full.shape == (256, 64) and bool((model.lm_head.weight == full).all())


# -------------------------------------------------------------------------------------------- resume
def _resume(fx: Fixture, work: Path, *, tp: int, pp: int, dp: int, stage: int | None = None) -> dict[int, float]:
    """Our universal conversion of step 4 (in the layout of ZeRO `stage`), resumed by real DeepSpeed at
    TP tp x PP pp x DP dp with that stage, to step 8.

    A stage-0 save resumes under ZeRO-1: DeepSpeed 0.19.8 reads the universal zero/ folder only when ZeRO
    is on (a stage-0 BF16 engine takes the model_states' 'optimizer' as per-rank dicts and fails).
    """
    stage = stage or fx.stage or 1
    uni = convert(fx.path / RESUME_TAG, work / "u" / f"{RESUME_TAG}_universal", "universal", ConvertOptions(stage=stage))
    losses = work / "losses.json"
    args = ["--model", fx.model, "--stage", str(stage), "--dtype", fx.dtype, "--steps", str(len(fx.losses)),
            "--load", str(uni.parent), "--load-universal", "--losses-json", str(losses), "--eval-every", "0"]
    if tp > 1:
        args += ["--tp", str(tp)]
    if fx.pp > 1 or pp > 1:
        args += ["--pp", str(pp)]  # the same PipelineModule (names are layer indices) on fewer stages
    if RUN_BY_ID[fx.id].spacer:
        args.append("--pipe-spacer")
    run_training(tp * pp * dp, args, log_path=work / "train.log")
    return {int(k): v for k, v in json.loads(losses.read_text()).items()}


@pytest.mark.parametrize(("fid", "tp", "pp", "dp", "tol"), [
    ("gpt-pp2-z1-fp32", 1, 1, 1, FP32_TOL),  # PP 2 -> 1
    ("llama-tp2-z1-fp32", 1, 1, 1, FP32_TOL),  # TP 2 -> 1
    ("gpt-pp2-dp2-z1-bf16", 1, 1, 2, BF16_TOL),  # PP 2 x DP 2 -> PP 1 x DP 2, bf16
    # the BF16 optimizer's save resumes under bf16 ZeRO-1 (see _resume: DeepSpeed 0.19.8 loads no universal
    # checkpoint into a stage-0 engine)
    ("gpt-pp2-dp2-z0-bf16", 1, 1, 2, BF16_TOL),
    ("llama-tp2-dp2-z2-bf16", 1, 1, 2, BF16_TOL),  # TP 2 x DP 2 -> TP 1 x DP 2, bf16 ZeRO-2
    ("llama-tp2-z3-fp32", 1, 1, 1, FP32_TOL),  # ZeRO-3 + AutoTP: TP 2 -> 1
    ("llama-tp2-tied-z1-fp32", 1, 1, 1, FP32_TOL),  # tied vocabulary-parallel embedding/lm_head: TP 2 -> 1
    ("llama-tp2-tied-z3-fp32", 1, 1, 1, FP32_TOL),  # the same under ZeRO-3 (no lm_head folder: a tied alias)
    ("llama-z1-fp32", 2, 1, 1, FP32_TOL),  # TP 1 -> 2: DeepSpeed re-slices the full tensors we wrote
    ("llama-tp2-z1-fp32", 4, 1, 1, FP32_TOL),  # TP 2 -> 4 (over 2 KV heads: TP ranks 2, 3 get empty shards)
    ("gpt-pp1-z1-fp32", 1, 2, 1, FP32_TOL),  # PP 1 -> 2
    # what ds_to_universal 0.19.8 cannot convert (the fixture build notes its error):
    ("llama-tp4-z1-fp32", 1, 1, 1, FP32_TOL),  # TP 4 over 2 KV heads: ranks 2 and 3 hold empty shards
    ("gpt-pp2-spacer-z1-fp32", 1, 1, 1, FP32_TOL),  # no layer_01 file (a layer without parameters)
    # Megatron-style TP x PP 2 x 2 -> 1 x 1 and -> 1 x 2, with DP 2 (the vocabulary re-padded to 260 rows)
    ("megatron-tp2-pp2-z1-fp32", 1, 1, 2, FP32_TOL),
    ("megatron-tp2-pp2-z1-fp32", 1, 2, 2, FP32_TOL),
    ("megatron-tp2-z1-bf16", 1, 1, 1, BF16_TOL),  # UCP 0.3 (sub-param sizes, no widths), bf16: TP 2 -> 1
])
def test_resume_at_another_layout_continues_the_curve(fixtures: dict[str, Fixture], fid: str, tp: int, pp: int,
                                                      dp: int, tol: float, tmp_path: Path) -> None:
    fx = fixtures[fid]
    losses = _resume(fx, tmp_path, tp=tp, pp=pp, dp=dp)
    assert sorted(losses) == list(range(5, len(fx.losses) + 1))
    diff = max(abs(loss - fx.losses[step]) for step, loss in losses.items())
    print(f"{fid} -> universal (ours) -> TP {tp} x PP {pp} x DP {dp}, steps 5..{len(fx.losses)}: max |diff| {diff:.2e}")
    assert diff <= tol


@pytest.mark.parametrize(("fid", "stage"), [("llama-tp2-z1-fp32", 3), ("llama-tp2-z3-fp32", 1)])
def test_resume_at_another_zero_stage_with_tp(fixtures: dict[str, Fixture], fid: str, stage: int, tmp_path: Path) -> None:
    """--stage writes the other stage's universal layout (one model_states per TP rank, named as that
    engine globs them): an AutoTP run saved under ZeRO-1 resumes under ZeRO-3 and the reverse, at TP 2."""
    fx = fixtures[fid]
    losses = _resume(fx, tmp_path, tp=2, pp=1, dp=1, stage=stage)
    diff = max(abs(loss - fx.losses[step]) for step, loss in losses.items())
    print(f"{fid} -> universal ZeRO-{stage} layout (ours) -> TP 2 ZeRO-{stage}: max |diff| {diff:.2e}")
    assert sorted(losses) == list(range(5, len(fx.losses) + 1)) and diff <= FP32_TOL


def test_hf_weights_take_megatron_hints_and_resume_at_another_tp(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """HF weights of a Megatron-style model say nothing of its vocabulary padding or fused sub-params:
    --hints-from takes them from the DeepSpeed checkpoint, and the output carries the same hints as
    ds_to_universal's, so DeepSpeed loads it at TP 1 (260 padded rows) where a hint-less one cannot."""
    fx = fixtures["megatron-tp2-pp2-z1-fp32"]
    ref = fixtures[f"{fx.id}.universal"]
    hf = convert(fx.path / RESUME_TAG, tmp_path / "hf", "hf")
    uni = tmp_path / "u" / f"{RESUME_TAG}_universal"
    result = ckpt_tui("convert", hf, "--to", "universal", "-o", uni, "--step", "4", "--hints-from", fx.path / RESUME_TAG)
    assert result.code == 0, result.err
    for folder in sorted((ref.path / ref.tag / "zero").iterdir()):
        if folder.is_dir():
            theirs = {k: v for k, v in _torch_load(folder / "fp32.pt").items() if k != "param"}
            ours = {k: v for k, v in _torch_load(uni / "zero" / folder.name / "fp32.pt").items() if k != "param"}
            assert ours == theirs, folder.name
    losses = tmp_path / "losses.json"
    run_training(2, ["--model", "megatron", "--stage", "1", "--steps", "5", "--load", str(uni.parent), "--load-universal",
                     "--losses-json", str(losses), "--eval-every", "0"], log_path=tmp_path / "train.log")
    first = json.loads(losses.read_text())["5"]
    assert abs(first - fx.losses[5]) <= FP32_TOL  # same weights: step 5 has the baseline's loss (Adam restarts after)

    wrong = ckpt_tui("convert", hf, "--to", "universal", "-o", tmp_path / "x", "--hints-from", fixtures["llama-tp2-z1-fp32"].path)
    assert_one_line_error(wrong, "has no parameter")
    not_ds = ckpt_tui("convert", hf, "--to", "universal", "-o", tmp_path / "y", "--hints-from", hf)
    assert_one_line_error(not_ds, "not a DeepSpeed checkpoint")
    own = ckpt_tui("convert", fx.path, "--to", "universal", "-o", tmp_path / "z", "--hints-from", fx.path)
    assert_one_line_error(own, "restore hints of its own")
    assert not any((tmp_path / n).exists() for n in ("x", "y", "z"))


# ------------------------------------------------------------------------------------- broken inputs
def _broken_copy(fixtures: dict[str, Fixture], tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "ckpt"
    shutil.copytree(fixtures["llama-tp2-z1-fp32"].path, dst)
    return dst / RESUME_TAG


def test_a_missing_tp_rank_is_one_line(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    tag = _broken_copy(fixtures, tmp_path)
    (tag / "mp_rank_01_model_states.pt").unlink()
    result = ckpt_tui("inspect", tag)
    assert_one_line_error(result, "TP 2 x PP 1 needs 2 model-parallel ranks' files; found 1")
    (tag / "zero_pp_rank_0_mp_rank_01_optim_states.pt").unlink()
    result = ckpt_tui("inspect", tag)  # both files of TP rank 1 gone: still not a TP 1 checkpoint
    assert_one_line_error(result, "found 1")


def test_hostile_parallel_degrees_are_one_line(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """checkpoint_parallel_dimensions is read from the file: a billion TP ranks is refused, not enumerated."""
    import torch

    tag = _broken_copy(fixtures, tmp_path)
    path = tag / "mp_rank_00_model_states.pt"
    state = torch.load(path, weights_only=False)
    state["checkpoint_parallel_dimensions"] = {"tp_degree": 10**9, "pp_degree": 10**9}
    torch.save(state, path)
    for command in (("inspect", tag), ("convert", tag, "--to", "hf", "-o", tmp_path / "out")):
        result = ckpt_tui(*command, timeout=60)
        assert_one_line_error(result, "model-parallel ranks' files; found 2")
    assert not (tmp_path / "out").exists()


def test_a_bf16_optimizer_file_naming_an_unknown_tensor_is_one_line(fixtures: dict[str, Fixture], tmp_path: Path) -> None:
    """param_slice_mappings come from the file: a name with no tensor of its size in the layer files, or a
    mapping that is not one, is refused in one line."""
    import shutil

    import torch

    shutil.copytree(fixtures["gpt-pp2-dp2-z0-bf16"].path, tmp_path / "ckpt")
    tag = tmp_path / "ckpt" / RESUME_TAG
    path = tag / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
    original = torch.load(path, weights_only=False)
    state = torch.load(path, weights_only=False)
    group = state["optimizer_state_dict"]["param_slice_mappings"][0]
    name = next(iter(group))
    group["2.not_there.weight"] = group.pop(name)
    torch.save(state, path)
    assert_one_line_error(ckpt_tui("inspect", tag), "'2.not_there.weight'", "no tensor of that size in the layer files")
    original["optimizer_state_dict"]["param_slice_mappings"] = "rm -rf /"
    torch.save(original, path)
    assert_one_line_error(ckpt_tui("inspect", tag), "without 'param_slice_mappings'")
