"""The parameter tree: grouping by dotted name, natural order, numbered stacks, totals and shares."""

from __future__ import annotations

import pytest

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core.inspect import open_checkpoint
from ckpt_tui.core.model import TensorEntry
from ckpt_tui.core.tree import build_tree, filter_tree, format_shape, human_bytes, human_count, natural_key


def entry(name: str, shape: tuple[int, ...], dtype: str = "float32", **kw) -> TensorEntry:
    numel = 1
    for d in shape:
        numel *= d
    return TensorEntry(name, shape, dtype, "model.safetensors", dt.nbytes(dtype, numel), **kw)


def llama_like(layers: int = 12) -> list[TensorEntry]:
    out = [entry("model.embed_tokens.weight", (100, 8))]
    for i in range(layers):
        out += [
            entry(f"model.layers.{i}.self_attn.q_proj.weight", (8, 8)),
            entry(f"model.layers.{i}.mlp.up_proj.weight", (16, 8)),
            entry(f"model.layers.{i}.input_layernorm.weight", (8,)),
        ]
    out += [entry("model.norm.weight", (8,)), entry("lm_head.weight", (100, 8))]
    return out


def test_natural_key_orders_numbers_by_value():
    names = ["layers.10", "layers.2", "layers.1", "layer9", "layer10", "Layers.3"]
    assert sorted(names, key=natural_key) == ["layer9", "layer10", "layers.1", "layers.2", "Layers.3", "layers.10"]


def test_children_are_in_natural_order():
    root = build_tree(llama_like(12))
    layers = root.find("model.layers")
    assert layers is not None
    assert [c.name for c in layers.children] == [str(i) for i in range(12)]
    assert [c.name for c in root.children] == ["lm_head", "model"]


def test_totals_and_shares_add_up():
    tensors = llama_like(3)
    root = build_tree(tensors)
    assert root.numel == sum(t.numel for t in tensors)
    assert root.nbytes == sum(t.nbytes for t in tensors)
    assert root.tensors == len(tensors)
    assert root.share == pytest.approx(1.0)
    layer = root.find("model.layers.1")
    assert layer is not None and layer.numel == 8 * 8 + 16 * 8 + 8
    assert layer.share == pytest.approx(layer.nbytes / root.nbytes)
    assert sum(c.share for c in root.children) == pytest.approx(1.0)
    leaf = root.find("model.layers.1.mlp.up_proj.weight")
    assert leaf is not None and leaf.is_leaf and leaf.tensor is not None and leaf.tensor.shape == (16, 8)


def test_numbered_stack_is_marked_and_repeats_detected():
    root = build_tree(llama_like(4))
    layers = root.find("model.layers")
    assert layers is not None and layers.numbered and layers.repeats
    assert layers.number_range == (0, 3)
    assert not root.find("model").numbered  # type: ignore[union-attr]

    different = llama_like(4) + [entry("model.layers.3.extra.bias", (8,))]
    layers = build_tree(different).find("model.layers")
    assert layers is not None and layers.numbered and not layers.repeats


def test_tied_alias_is_listed_but_not_counted():
    tensors = [
        entry("transformer.wte.weight", (50, 4)),
        entry("lm_head.weight", (50, 4), tied_to="transformer.wte.weight"),
    ]
    root = build_tree(tensors)
    alias = root.find("lm_head.weight")
    assert alias is not None and alias.tensor is not None and alias.tensor.tied_to == "transformer.wte.weight"
    assert alias.numel == 0 and alias.nbytes == 0 and alias.share == 0
    assert root.numel == 200 and root.tensors == 2


def test_dtypes_per_node():
    tensors = [entry("a.w", (4, 4), "bfloat16"), entry("a.b", (4,), "float32"), entry("c", (2,), "bfloat16")]
    root = build_tree(tensors)
    assert root.dtypes == {"bfloat16": (2, 36), "float32": (1, 16)}
    assert root.find("a").dtypes == {"bfloat16": (1, 32), "float32": (1, 16)}  # type: ignore[union-attr]


def test_name_that_is_both_tensor_and_group():
    tensors = [entry("proj", (2,)), entry("proj.bias", (3,))]
    root = build_tree(tensors)
    proj = root.find("proj")
    assert proj is not None and proj.tensor is not None and [c.name for c in proj.children] == ["bias"]
    assert proj.numel == 5


def test_unknown_size_dtype_counts_elements_for_share():
    tensors = [TensorEntry("x", (10,), "mystery", "f", None), TensorEntry("y", (30,), "mystery", "f", None)]
    root = build_tree(tensors)
    assert root.nbytes == 0
    assert root.find("y").share == pytest.approx(0.75)  # type: ignore[union-attr]


def test_filter_keeps_matches_with_full_tree_totals():
    root = build_tree(llama_like(12))
    shown = filter_tree(root, "UP_PROJ")
    names = [n.path for n in shown.walk() if n.tensor is not None]
    assert names == [f"model.layers.{i}.mlp.up_proj.weight" for i in range(12)]
    model = shown.find("model")
    assert model is not None and model.nbytes == root.find("model").nbytes  # type: ignore[union-attr]
    assert filter_tree(root, "") is root
    assert filter_tree(root, "no such name").children == []


def test_empty_tree():
    root = build_tree([])
    assert root.children == [] and root.numel == 0 and root.share == 0


def test_formatting_helpers():
    assert format_shape((768, 2304)) == "[768, 2304]"
    assert format_shape(()) == "[]"
    assert human_count(3072) == "3,072"
    assert human_count(124_439_808) == "124.4M"
    assert human_count(7_000_000_000) == "7.0B"
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(None) == "?"


def test_real_gpt2_zero_checkpoint_tree(fixtures):
    """The tree of a real ZeRO-3 GPT-2 save: tied lm_head not double counted, layers folded."""
    fx = fixtures["hf-gpt2-z3-fp32"]
    ckpt = open_checkpoint(fx.path)
    root = build_tree(ckpt.tensors)
    assert root.numel == ckpt.total_numel == fx.truth.numel
    assert root.nbytes == ckpt.total_bytes
    h = root.find("transformer.h")
    assert h is not None and h.numbered and h.repeats
    assert [c.name for c in h.children] == [str(i) for i in range(len(h.children))]
    for alias, owner in fx.truth.tied.items():
        node = root.find(alias)
        assert node is not None and node.tensor is not None and node.tensor.tied_to == owner
    leaves = {n.path for n in root.walk() if n.tensor is not None}
    assert leaves == {t.name for t in ckpt.tensors}
