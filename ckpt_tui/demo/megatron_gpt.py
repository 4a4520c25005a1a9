"""A Megatron-style tensor x pipeline parallel GPT as a DeepSpeed PipelineModule (for TP x PP x DP runs).

What Megatron-DeepSpeed checkpoints hold, at toy size, so the tests and the demo see the real layouts:

- a vocabulary-parallel token embedding, padded to a multiple of ``vocab_divisible_by x TP`` rows (the
  padding changes with the TP degree), tied with the output layer across the first and the last stage;
- per block: a fused column-parallel QKV with grouped-query attention, laid out per rank as
  ``[q_r; k_r; v_r]`` (three sub-parameters of unequal size), a row-parallel output projection, a fused
  column-parallel SwiGLU ``[gate_r; up_r]``, a row-parallel down projection, and replicated norms/biases;
- ``universal_checkpoint_info`` on the module (DeepSpeed saves it into every model-states file): the
  pattern lists that tell a converter how each parameter was split, ``original_vocab_size``, and for UCP
  0.4 the sub-parameter shard widths.

Every rank cuts its shards out of one full tensor drawn from the layer's seed, so the initial weights are
the same at any TP and PP degree: a fresh TP 1 run and a TP 2 run agree to rounding, which is what makes
"resume at another layout == uninterrupted run" a sharp test.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ckpt_tui.demo.tiny_gpt import D_MODEL, N_HEAD, N_KV_HEAD, N_LAYER, SEQ_LEN, VOCAB, lm_loss

UCP_VERSIONS = (0.3, 0.4)  # 0.3: sub-parameter sizes only (even shards); 0.4: also their shard widths


@dataclass(frozen=True)
class MegatronShape:
    """The model's dimensions: the demo's tiny GPT by default; the benchmark builds a wide one."""

    d_model: int = D_MODEL
    n_head: int = N_HEAD
    n_kv_head: int = N_KV_HEAD  # grouped-query attention: q heads share KV heads
    n_layer: int = N_LAYER
    ffn: int = 2 * D_MODEL  # SwiGLU inner width
    vocab: int = VOCAB
    seq_len: int = SEQ_LEN
    vocab_divisible_by: int = 20  # Megatron's --make-vocab-size-divisible-by: 260 rows at TP 1, 280 at TP 2

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def qkv_sizes(self) -> tuple[int, int, int]:
        """Rows of q, k and v in the fused QKV weight."""
        return (self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim)

    def padded_vocab(self, tp: int) -> int:
        """Megatron's padded vocabulary size at this TP degree."""
        multiple = self.vocab_divisible_by * tp
        return math.ceil(self.vocab / multiple) * multiple

    def check_tp(self, tp: int) -> None:
        if tp < 1 or self.n_kv_head % tp:
            raise ValueError(f"TP {tp}: the Megatron-style GPT gives each TP rank whole KV heads, and has {self.n_kv_head}")


TINY = MegatronShape()


@dataclass
class TpGroup:
    """This rank's place on the tensor-parallel axis (``group`` is set once the pipeline grid exists), and
    the model's shape: what every layer is built from."""

    rank: int
    size: int
    shape: MegatronShape = field(default_factory=MegatronShape)
    group: Any = None


# ----------------------------------------------------------------------- tensor-parallel collectives
class _CopyToTp(torch.autograd.Function):
    """Identity forward; backward sums the gradient over the TP ranks (the input of a column-parallel op)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, tp: TpGroup) -> torch.Tensor:
        ctx.tp = tp
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.tp.group)
        return grad, None


class _ReduceFromTp(torch.autograd.Function):
    """Forward sums the partial results of the TP ranks (a row-parallel op); backward is the identity."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, tp: TpGroup) -> torch.Tensor:
        x = x.contiguous()
        dist.all_reduce(x, group=tp.group)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class _GatherFromTp(torch.autograd.Function):
    """Forward concatenates the ranks' last-dim slices; backward keeps this rank's slice of the gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, tp: TpGroup) -> torch.Tensor:
        ctx.tp, ctx.width = tp, x.shape[-1]
        parts = [torch.empty_like(x) for _ in range(tp.size)]
        dist.all_gather(parts, x.contiguous(), group=tp.group)
        return torch.cat(parts, dim=-1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        start = ctx.tp.rank * ctx.width
        return grad[..., start:start + ctx.width].contiguous(), None


def copy_to_tp(x: torch.Tensor, tp: TpGroup) -> torch.Tensor:
    return x if tp.size == 1 else _CopyToTp.apply(x, tp)


def reduce_from_tp(x: torch.Tensor, tp: TpGroup) -> torch.Tensor:
    return x if tp.size == 1 else _ReduceFromTp.apply(x, tp)


def gather_from_tp(x: torch.Tensor, tp: TpGroup) -> torch.Tensor:
    return x if tp.size == 1 else _GatherFromTp.apply(x, tp)


# ---------------------------------------------------------------------------------------- sharding
def _shard_param(full: torch.Tensor, local: torch.Tensor) -> nn.Parameter:
    """A parameter holding this rank's shard, remembering the full (logical) shape for the truth record.

    ``tensor_model_parallel`` is Megatron's mark: DeepSpeed's gradient norm (clipping is on by default,
    at 1.0) sums marked parameters over the TP ranks and takes unmarked ones from TP rank 0 only; without
    the mark the norm, and so the clipped update, would change with the TP degree.
    """
    param = nn.Parameter(local.contiguous().clone())
    param.logical_shape = tuple(full.shape)  # type: ignore[attr-defined]
    param.tensor_model_parallel = True  # type: ignore[attr-defined]
    return param


def _rows(full: torch.Tensor, tp: TpGroup, dim: int = 0) -> torch.Tensor:
    """This rank's even block of `full` on `dim`."""
    return full.chunk(tp.size, dim=dim)[tp.rank]


def _sub_rows(full: torch.Tensor, sizes: tuple[int, ...], tp: TpGroup) -> torch.Tensor:
    """[sub_0 block; sub_1 block; ...]: this rank's block of every sub-parameter, concatenated (dim 0)."""
    return torch.cat([_rows(sub, tp) for sub in full.split(list(sizes), dim=0)], dim=0)


def _normal(*shape: int) -> torch.Tensor:
    return torch.randn(*shape) * 0.02


# ------------------------------------------------------------------------------------------ layers
class VocabEmbedding(nn.Module):
    """Vocabulary-parallel token embedding (rows of the padded table); the last stage reuses it as the head.

    Padding rows start at zero and never get a gradient (no token reaches them; the head's logits for
    them are cut before the loss).
    """

    def __init__(self, tp: TpGroup) -> None:
        super().__init__()
        self.tp = tp
        m = tp.shape
        full = torch.cat([_normal(m.vocab, m.d_model), torch.zeros(m.padded_vocab(tp.size) - m.vocab, m.d_model)])
        self.weight = _shard_param(full[:m.vocab], _rows(full, tp))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        rows = self.weight.shape[0]
        low = self.tp.rank * rows
        outside = (idx < low) | (idx >= low + rows)
        local = F.embedding((idx - low).masked_fill(outside, 0), self.weight)
        return reduce_from_tp(local.masked_fill(outside.unsqueeze(-1), 0.0), self.tp)


def vocab_head(embedding: VocabEmbedding, x: torch.Tensor) -> torch.Tensor:
    """The tied output layer: each rank's vocabulary slice of the logits, gathered over TP."""
    local = F.linear(copy_to_tp(x, embedding.tp), embedding.weight)
    return gather_from_tp(local, embedding.tp)


class Positions(nn.Module):
    """Learned position embeddings, replicated on every TP rank."""

    def __init__(self, tp: TpGroup) -> None:
        super().__init__()
        self.pos = nn.Embedding(tp.shape.seq_len, tp.shape.d_model)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pos(torch.arange(x.shape[1], device=x.device))


class ParallelBlock(nn.Module):
    """Pre-LN block: fused column-parallel QKV (GQA), row-parallel proj, fused SwiGLU, row-parallel down."""

    def __init__(self, tp: TpGroup) -> None:
        super().__init__()
        m = tp.shape
        m.check_tp(tp.size)
        self.tp = tp
        self.ln1 = nn.LayerNorm(m.d_model)
        self.ln2 = nn.LayerNorm(m.d_model)
        qkv_w, qkv_b = _normal(sum(m.qkv_sizes), m.d_model), _normal(sum(m.qkv_sizes))
        self.qkv_weight = _shard_param(qkv_w, _sub_rows(qkv_w, m.qkv_sizes, tp))
        self.qkv_bias = _shard_param(qkv_b, _sub_rows(qkv_b, m.qkv_sizes, tp))
        proj_w = _normal(m.d_model, m.d_model)
        self.proj_weight = _shard_param(proj_w, _rows(proj_w, tp, dim=1))
        self.proj_bias = nn.Parameter(torch.zeros(m.d_model))  # added once, after the reduction
        gate_up = _normal(2 * m.ffn, m.d_model)
        self.gate_up_weight = _shard_param(gate_up, _sub_rows(gate_up, (m.ffn, m.ffn), tp))
        down = _normal(m.d_model, m.ffn)
        self.down_weight = _shard_param(down, _rows(down, tp, dim=1))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        m = self.tp.shape
        heads, kv_heads = m.n_head // self.tp.size, m.n_kv_head // self.tp.size
        qkv = F.linear(copy_to_tp(x, self.tp), self.qkv_weight, self.qkv_bias)
        q, k, v = qkv.split([s // self.tp.size for s in m.qkv_sizes], dim=-1)
        q = q.view(b, t, heads, m.head_dim).transpose(1, 2)
        k, v = (y.view(b, t, kv_heads, m.head_dim).transpose(1, 2).repeat_interleave(heads // kv_heads, dim=1)
                for y in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, -1)
        return reduce_from_tp(F.linear(y, self.proj_weight), self.tp) + self.proj_bias

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = F.linear(copy_to_tp(x, self.tp), self.gate_up_weight).chunk(2, dim=-1)
        return reduce_from_tp(F.linear(F.silu(gate) * up, self.down_weight), self.tp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class FinalNorm(nn.Module):
    def __init__(self, tp: TpGroup) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(tp.shape.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def megatron_loss(logits: torch.Tensor, labels: torch.Tensor, vocab: int = VOCAB) -> torch.Tensor:
    """The LM loss over the real vocabulary (padding columns cut)."""
    return lm_loss(logits[..., :vocab], labels)


# --------------------------------------------------------------------------------- checkpoint info
def universal_checkpoint_info(tp: int, ucp: float = 0.4, shape: MegatronShape = TINY) -> dict[str, Any]:
    """The merge rules of this model, as Megatron-DeepSpeed attaches them (patterns are ``re.match``).

    Sub-parameter shapes are tuples (DeepSpeed's restore tests ``isinstance(d, tuple)``). The final norm
    is declared averaged, as Megatron-DeepSpeed does for norms under sequence parallelism: its slices are
    equal, so the mean is exact.
    """
    if ucp not in UCP_VERSIONS:
        raise ValueError(f"UCP version {ucp} is not one of {UCP_VERSIONS}")
    qkv_w, qkv_b = r"\d+\.qkv_weight$", r"\d+\.qkv_bias$"
    info: dict[str, Any] = {
        "universal_checkpoint_version": ucp,
        "original_vocab_size": shape.vocab,
        "vocabulary_parameter_patterns": [r"tied_modules\.embed\.weight$"],
        "pipeline_replicated_parameter_patterns": [r"tied_modules\.embed\.weight$"],
        "tp_replicated_parameter_patterns": [r"\d+\.pos\.weight$", r"\d+\.ln[12]\.(weight|bias)$",
                                             r"\d+\.proj_bias$"],
        "parameter_to_average_patterns": [r"\d+\.norm\.(weight|bias)$"],
        "parameter_with_row_parallelism_patterns": [r"\d+\.(proj|down)_weight$"],
        "parameter_with_2_sub_params_cat_dim_0": [r"\d+\.gate_up_weight$"],
        "parameter_with_sub_params": [
            {"patterns": [qkv_w], "shape": (shape.qkv_sizes, shape.d_model), "partition_dim": 0},
            {"patterns": [qkv_b], "shape": (shape.qkv_sizes,), "partition_dim": 0},
        ],
    }
    if ucp >= 0.4:
        widths = [[size // tp] * tp for size in shape.qkv_sizes]
        info["sub_param_shard_widths"] = {qkv_w: widths, qkv_b: widths}
    return info


def build_megatron_gpt(num_stages: int, tp: int, seed: int = 1234, ucp: float = 0.4,
                       shape: MegatronShape = TINY) -> nn.Module:
    """The model as a PipelineModule over a (pipe, data, model) topology; its grid is DeepSpeed's mpu.

    Layers: [embed (tied), positions, N_LAYER blocks, final norm, head (tied)], each seeded from its
    global index (``seed_layers``), so the full weights do not depend on TP or PP.
    """
    from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec
    from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

    shape.check_tp(tp)
    world = dist.get_world_size()
    if world % (num_stages * tp):
        raise ValueError(f"{world} ranks do not split into PP {num_stages} x TP {tp} x DP")
    topology = PipeModelDataParallelTopology(num_pp=num_stages, num_mp=tp, num_dp=world // (num_stages * tp))
    group = TpGroup(rank=topology.get_coord(dist.get_rank()).model, size=tp, shape=shape)
    layers = [
        TiedLayerSpec("embed", VocabEmbedding, group, tied_weight_attr=["weight"]),
        LayerSpec(Positions, group),
        *(LayerSpec(ParallelBlock, group) for _ in range(shape.n_layer)),
        LayerSpec(FinalNorm, group),
        TiedLayerSpec("embed", VocabEmbedding, group, forward_fn=vocab_head, tied_weight_attr=["weight"]),
    ]
    module = PipelineModule(layers=layers, topology=topology, loss_fn=functools.partial(megatron_loss, vocab=shape.vocab), seed_layers=True,
                            base_seed=seed, partition_method="uniform")
    group.group = module.mpu().get_slice_parallel_group()
    module.universal_checkpoint_info = universal_checkpoint_info(tp, ucp, shape)
    return module
