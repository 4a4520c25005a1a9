"""Train a wide MLP for one step with DeepSpeed ZeRO and save it: a >= 1 GB benchmark input.

Launched by bench_convert.py as `torchrun --nproc_per_node DP benchmarks/big_zero_model.py OUT STAGE LAYERS WIDTH`.
Real DeepSpeed files, so the reference tools accept them; the model is just big, not clever.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    out, stage, layers, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    import deepspeed
    import torch

    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    config = {
        "train_batch_size": 2 * int(os.environ.get("WORLD_SIZE", "1")),
        "train_micro_batch_size_per_gpu": 2,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "torch_adam": True}},
        "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0},
        "checkpoint": {"use_node_local_storage": False},
    }
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    x = torch.randn(2, width)
    loss = engine(x).pow(2).mean()
    engine.backward(loss)
    engine.step()
    engine.save_checkpoint(out, tag="global_step1")
    torch.distributed.barrier()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
