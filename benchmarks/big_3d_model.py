"""Train a wide model for one step under tensor or pipeline parallelism and save it: a >= 1 GB 3D input.

Launched by bench_convert_3d.py as `torchrun --nproc_per_node N benchmarks/big_3d_model.py OUT KIND SIZE`:
- KIND tp: a Llama (hidden SIZE, 5 layers) under DeepSpeed AutoTP, TP = N, ZeRO-1;
- KIND pp: a PipelineModule of 16 Linear(SIZE, SIZE) layers on N stages, ZeRO-1;
- KIND tppp: the demo's Megatron-style GPT (ckpt_tui.demo.megatron_gpt) at hidden SIZE, 2 layers, TP 2 x PP 2
  (N = 4), ZeRO-1: fused GQA QKV and SwiGLU sub-params, row-parallel, a padded vocabulary (8000 -> 8192).
Real DeepSpeed files, so ds_to_universal accepts them; the models are big, not clever.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    out, kind, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    import deepspeed
    import torch

    deepspeed.init_distributed(dist_backend="gloo")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.manual_seed(0)
    config = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}},
        "zero_optimization": {"stage": 1},
    }
    if kind == "tp":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=8192, hidden_size=size, intermediate_size=int(size * 2.6875), num_hidden_layers=5,
            num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=64,
        ))
        config["tensor_parallel"] = {"autotp_size": world}
        engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
        ids = torch.randint(0, 8192, (1, 16))
        loss = torch.nn.functional.cross_entropy(engine(ids).logits.float().view(-1, 8192), ids.view(-1))
        engine.backward(loss)
        engine.step()
    elif kind == "tppp":
        from ckpt_tui.demo.megatron_gpt import MegatronShape, build_megatron_gpt

        shape = MegatronShape(d_model=size, n_head=16, n_kv_head=8, n_layer=2, ffn=int(size * 2.6875), vocab=8000,
                              seq_len=16, vocab_divisible_by=128)
        model = build_megatron_gpt(num_stages=2, tp=2, shape=shape)
        config["train_batch_size"] = world // 4
        engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
        ids = torch.randint(0, shape.vocab, (1, shape.seq_len))
        engine.train_batch(iter([(ids, ids)]))
    else:
        from deepspeed.pipe import LayerSpec, PipelineModule

        layers = [LayerSpec(torch.nn.Linear, size, size) for _ in range(16)]
        model = PipelineModule(layers=layers, num_stages=world, loss_fn=lambda y, t: (y - t).pow(2).mean(),
                               partition_method="uniform")
        config["train_batch_size"] = 1
        engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
        x = torch.randn(1, size)
        engine.train_batch(iter([(x, x)]))
    engine.save_checkpoint(out, tag="global_step1")
    torch.distributed.barrier()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
