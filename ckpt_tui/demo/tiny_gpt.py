"""A tiny GPT and a learnable synthetic dataset for real DeepSpeed runs on a CPU.

Only the training process and the tests import this module. transformers (seconds to import) is
imported inside the functions that need it, so a plain-GPT run never pays for it.

The data is a pure function of (seed, global sample index): the batch of a global step is the same
whatever the data-parallel size or gradient accumulation, which is what makes a run resumed at another
DP size comparable with its baseline step by step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 256
SEQ_LEN = 32
D_MODEL = 64
N_HEAD = 4
N_LAYER = 2
VAL_SAMPLES = 16
_MASK64 = (1 << 64) - 1
_VAL_SEED_OFFSET = 0x5EED_0000


# --------------------------------------------------------------------------------------------- data
def _mix(seed: int, index: int) -> int:
    """splitmix64 of (seed, index): a platform-independent hash, no RNG state to keep in sync."""
    z = (seed * 0x9E3779B97F4A7C15 + index + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def sample_tokens(seed: int, index: int) -> list[int]:
    """SEQ_LEN + 1 tokens of an arithmetic sequence mod VOCAB: start and stride (1..4) from the hash.

    A model learns the bigram part (token + stride) within a few steps and the stride from context
    later, so the loss falls visibly over 20-40 steps.
    """
    h = _mix(seed, index)
    start = h % VOCAB
    stride = 1 + (h >> 16) % 4
    return [(start + stride * t) % VOCAB for t in range(SEQ_LEN + 1)]


def batch_for_indices(seed: int, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels), both int64 of shape (len(indices), SEQ_LEN); labels are inputs shifted by one."""
    rows = torch.tensor([sample_tokens(seed, i) for i in indices], dtype=torch.long)
    return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


def micro_batch_indices(
    step: int, micro: int, *, rank: int, dp: int, micro_batch: int, global_batch: int
) -> list[int]:
    """Global sample indices of one rank's micro-batch `micro` at global step `step` (1-based).

    The global batch of step k is samples [(k-1)*B, k*B); micro-batch j of rank r takes the slice
    starting at j*dp*m + r*m. Every (dp, m, accumulation) split covers the same B samples.
    """
    base = (step - 1) * global_batch + micro * dp * micro_batch + rank * micro_batch
    return list(range(base, base + micro_batch))


def validation_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch of VAL_SAMPLES samples drawn from a hash stream of its own (another seed)."""
    return batch_for_indices(seed + _VAL_SEED_OFFSET, list(range(VAL_SAMPLES)))


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy in fp32, whatever dtype the model computes in."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1))


# -------------------------------------------------------------------------------------------- model
class Attention(nn.Module):
    """Causal multi-head self-attention with a fused qkv projection."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(D_MODEL, 3 * D_MODEL)
        self.proj = nn.Linear(D_MODEL, D_MODEL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split(D_MODEL, dim=2)
        q, k, v = (y.view(b, t, N_HEAD, D_MODEL // N_HEAD).transpose(1, 2) for y in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, D_MODEL))


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(D_MODEL)
        self.attn = Attention()
        self.ln2 = nn.LayerNorm(D_MODEL)
        self.fc = nn.Linear(D_MODEL, 4 * D_MODEL)
        self.out = nn.Linear(4 * D_MODEL, D_MODEL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    """Token + position embeddings, N_LAYER blocks, final LN, and an lm_head NOT tied to tok_emb."""

    def __init__(self) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, D_MODEL)
        self.pos_emb = nn.Embedding(SEQ_LEN, D_MODEL)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(D_MODEL)
        self.lm_head = nn.Linear(D_MODEL, VOCAB, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def build_tiny_gpt(seed: int = 1234) -> TinyGPT:
    """The plain GPT (~135k parameters), initialised identically on every rank from `seed`."""
    torch.manual_seed(seed)
    return TinyGPT()


def gpt2_config() -> Any:
    """The tiny GPT2Config: 2 layers, d 64, 4 heads, vocab 256, 32 positions, no dropout."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=VOCAB,
        n_positions=SEQ_LEN,
        n_embd=D_MODEL,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,  # GPT-2's 50256 lies outside our 256-token vocabulary
        eos_token_id=None,
        tie_word_embeddings=True,
    )


def build_hf_gpt2(seed: int = 1234) -> nn.Module:
    """A transformers GPT2LMHeadModel with lm_head.weight tied to transformer.wte.weight."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(gpt2_config())
    assert model.lm_head.weight is model.transformer.wte.weight, "GPT-2 embeddings are expected tied"
    return model


N_KV_HEAD = 2  # the tiny Llama's grouped-query attention: 4 query heads share 2 KV heads


def llama_config(tied: bool = False) -> Any:
    """The tiny LlamaConfig for AutoTP runs: 2 layers, d 64, 4 heads / 2 KV heads, vocab 256."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        intermediate_size=2 * D_MODEL,
        num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD,
        num_key_value_heads=N_KV_HEAD,
        max_position_embeddings=SEQ_LEN,
        tie_word_embeddings=tied,
        attention_dropout=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )


def build_hf_llama(seed: int = 1234, tied: bool = False) -> nn.Module:
    """A transformers LlamaForCausalLM (untied, or lm_head tied to embed_tokens): what AutoTP shards."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(tied))
    model.config.use_cache = False
    return model


# ----------------------------------------------------------------------- pipeline-parallel TinyGPT
class PipeEmbedding(nn.Module):
    """Token embeddings as a pipeline layer; the last stage reuses it as the tied lm_head.

    Only the token table is in the tied module: DeepSpeed keeps every parameter of a tied module on
    both stages but synchronises only the tied attribute, so anything else in it would drift apart.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, D_MODEL)
        nn.init.normal_(self.tok.weight, std=0.02)  # GPT-2's init: N(0, 1) rows make tied logits ~8x too large

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.tok(idx)


class PipePositions(nn.Module):
    """Adds learned position embeddings (a layer of its own: the tied module holds the token table only)."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Embedding(SEQ_LEN, D_MODEL)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pos(torch.arange(x.shape[1], device=x.device))


def pipe_head(embedding: PipeEmbedding, x: torch.Tensor) -> torch.Tensor:
    """The tied lm_head: logits from the token embedding matrix."""
    return F.linear(x, embedding.tok.weight)


def pipe_spacer(x: torch.Tensor) -> torch.Tensor:
    """A layer that is a plain function: DeepSpeed writes no layer file for it (no state_dict)."""
    return x


class PipeFinalNorm(nn.LayerNorm):
    def __init__(self) -> None:
        super().__init__(D_MODEL)


def build_pipeline_gpt(num_stages: int, seed: int = 1234, *, spacer: bool = False) -> nn.Module:
    """TinyGPT as a deepspeed.pipe.PipelineModule: [embed (tied), positions, blocks, final LN, head (tied)].

    Each layer is seeded from its global index (``seed_layers``), so the weights are the same whatever
    the number of stages: a PP=2 run and a PP=1 run start from the same model. ``spacer`` puts a layer
    without parameters at index 1: its checkpoint has no ``layer_01*`` file.
    """
    from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec

    layers = [
        TiedLayerSpec("embed", PipeEmbedding, tied_weight_attr=["tok.weight"]),
        *([pipe_spacer] if spacer else []),
        LayerSpec(PipePositions),
        *(LayerSpec(Block) for _ in range(N_LAYER)),
        LayerSpec(PipeFinalNorm),
        TiedLayerSpec("embed", PipeEmbedding, forward_fn=pipe_head, tied_weight_attr=["tok.weight"]),
    ]
    return PipelineModule(
        layers=layers, num_stages=num_stages, loss_fn=lm_loss, seed_layers=True, base_seed=seed,
        partition_method="uniform",
    )


MODELS = ("gpt", "hf-gpt2", "hf-llama", "hf-llama-tied")


def build_model(name: str, seed: int = 1234) -> nn.Module:
    """`gpt`, `hf-gpt2`, `hf-llama` or `hf-llama-tied` (pipeline GPT: :func:`build_pipeline_gpt`)."""
    if name == "gpt":
        return build_tiny_gpt(seed)
    if name == "hf-gpt2":
        return build_hf_gpt2(seed)
    if name in ("hf-llama", "hf-llama-tied"):
        return build_hf_llama(seed, tied=name.endswith("-tied"))
    raise ValueError(f"unknown model {name!r}")


def logits_of(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Logits for either model (a transformers model returns an output object)."""
    out = model(inputs)
    return out if not hasattr(out, "logits") else out.logits
