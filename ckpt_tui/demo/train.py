"""Real DeepSpeed training of the tiny models, one process per rank (CPU/gloo or GPU).

Run under torchrun (see :func:`ckpt_tui.demo.launch.run_training`)::

    python -m torch.distributed.run --nproc_per_node 2 -m ckpt_tui.demo.train \\
        --model gpt --stage 2 --dtype bf16 --steps 4 --save-steps 4 --save-dir out/ckpt

The loss of global step k depends only on the weights and on samples derived from k (see
:mod:`ckpt_tui.demo.tiny_gpt`), so a run resumed at another DP size can be compared with its baseline
step by step. Rank 0 records what it trained in ``<save-dir>/truth.json`` for the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ckpt_tui.demo.tiny_gpt import (
    MODELS,
    batch_for_indices,
    build_model,
    build_pipeline_gpt,
    lm_loss,
    logits_of,
    micro_batch_indices,
    validation_batch,
)
from ckpt_tui.demo.megatron_gpt import UCP_VERSIONS, build_megatron_gpt

LR = 1e-2
MEGATRON_TRAIN_TAG = "lm-loss-training/lm loss"
MEGATRON_VAL_TAG = "lm-loss-validation/lm loss validation"


SUPPORTS_CUDA = True  # the demo pipeline passes --device cuda when torch sees GPUs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ckpt_tui.demo.train", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=(*MODELS, "megatron"), default="gpt",
                   help="megatron: the Megatron-style TP x PP GPT (a PipelineModule; see megatron_gpt)")
    p.add_argument("--stage", type=int, choices=(0, 1, 2, 3), default=1, help="ZeRO stage")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--tp", type=int, default=1,
                   help="tensor-parallel size (DeepSpeed AutoTP for the hf-llama models; Megatron-style for megatron)")
    p.add_argument("--pp", type=int, default=0,
                   help="pipeline stages: train TinyGPT as a deepspeed.pipe.PipelineModule (0: a plain module)")
    p.add_argument("--ucp", type=float, choices=UCP_VERSIONS, default=0.4,
                   help="megatron: the universal_checkpoint_info version its checkpoints carry")
    p.add_argument("--pipe-spacer", action="store_true", help="with --pp: a layer without parameters at index 1")
    p.add_argument("--steps", type=int, required=True, help="train until this global step")
    p.add_argument("--save-steps", type=int, nargs="*", default=[], help="save a checkpoint at these steps")
    p.add_argument("--save-dir", type=Path, default=None)
    p.add_argument("--tb-dir", type=Path, default=None, help="TensorBoard folder (rank 0 writes)")
    p.add_argument("--eval-every", type=int, default=2, help="validation loss every N steps")
    p.add_argument("--load", type=Path, default=None, help="resume from this checkpoint folder")
    p.add_argument("--load-universal", action="store_true", help="the --load folder is a universal one")
    p.add_argument("--no-load-optimizer", action="store_true", help="load weights only")
    p.add_argument("--train-batch-size", type=int, default=8, help="global batch (samples per step)")
    p.add_argument("--micro-batch-size", type=int, default=None, help="default: global batch / DP")
    p.add_argument("--seed", type=int, default=1234, help="model init and data")
    p.add_argument("--freeze", action="append", default=[], metavar="NAME", help="requires_grad=False")
    p.add_argument("--losses-json", type=Path, default=None, help="rank 0 writes {step: loss}")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu: gloo; cuda: one GPU per rank, NCCL")
    args = p.parse_args(argv)
    if args.save_steps and args.save_dir is None:
        p.error("--save-steps needs --save-dir")
    if args.model == "megatron":
        args.pp = max(args.pp, 1)  # always a PipelineModule (one stage at PP 1)
        if args.stage > 1:
            p.error("--model megatron is a PipelineModule: ZeRO stage 0 or 1 (DeepSpeed allows no more)")
        return args
    if args.tp > 1 and not args.model.startswith("hf-llama"):
        p.error("--tp is for the hf-llama models (AutoTP) and for --model megatron")
    if args.pp and (args.model != "gpt" or args.tp > 1 or args.stage > 1):
        p.error("--pp is for --model gpt or megatron with ZeRO stage 0 or 1 (DeepSpeed's PipelineModule allows no more)")
    return args


# ------------------------------------------------------------------------------------------- set-up
def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def batch_split(args: argparse.Namespace, dp: int) -> tuple[int, int]:
    """(micro batch per rank, gradient accumulation steps) for the global batch at this DP size."""
    micro = args.micro_batch_size or args.train_batch_size // dp
    if micro <= 0 or args.train_batch_size % (micro * dp):
        raise SystemExit(f"train batch {args.train_batch_size} does not split into micro {micro} x dp {dp}")
    return micro, args.train_batch_size // (micro * dp)


def ds_config(args: argparse.Namespace, micro: int, accum: int) -> dict[str, Any]:
    """A DeepSpeed config with a fixed learning rate (no scheduler) and torch's AdamW (no compiled op)."""
    zero: dict[str, Any] = {"stage": args.stage}
    if args.stage == 3:
        # Partition every parameter (the default threshold keeps small ones whole on each rank),
        # so the checkpoint has the layout of a real large model.
        zero["stage3_param_persistence_threshold"] = 0
    config: dict[str, Any] = {
        "train_batch_size": args.train_batch_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": LR, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.01, "torch_adam": True},
        },
        "zero_optimization": zero,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if args.dtype == "bf16":
        config["bf16"] = {"enabled": True}
    if args.load_universal:
        config["checkpoint"] = {"load_universal": True}
    if args.tp > 1 and args.model != "megatron":
        # AutoTP checks train_batch_size against every rank, TP ranks included, and fails: give the
        # micro batch and accumulation only (DeepSpeed derives the global batch over DP ranks).
        config["tensor_parallel"] = {"autotp_size": args.tp}
        del config["train_batch_size"]
    return config


def freeze(model: Any, names: list[str]) -> None:
    """requires_grad=False on the named parameters: DeepSpeed then saves them as frozen params."""
    params = dict(model.named_parameters())
    for name in names:
        if name not in params:
            raise SystemExit(f"--freeze {name}: no such parameter (have {', '.join(params)})")
        params[name].requires_grad_(False)


def tied_pairs(model: Any) -> dict[str, str]:
    """{alias: owner} for parameters registered under several names (owner = first registered)."""
    owners: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owner = owners.setdefault(id(param), name)
        if owner != name:
            tied[name] = owner
    return tied


def describe_model(model: Any) -> dict[str, Any]:
    """Names, shapes, dtypes and flags of the model as built, before DeepSpeed touches it."""
    params = {  # a Megatron-style shard knows the full shape it was cut from
        name: {"shape": list(getattr(p, "logical_shape", p.shape)), "dtype": str(p.dtype).removeprefix("torch."), "frozen": not p.requires_grad}
        for name, p in model.named_parameters()
    }
    persistent = set(model.state_dict().keys())
    buffers = {
        name: {"shape": list(b.shape), "dtype": str(b.dtype).removeprefix("torch.")}
        for name, b in model.named_buffers()
        if name in persistent
    }
    return {
        "params": params,
        "buffers": buffers,
        "tied": tied_pairs(model),
        "state_dict_keys": list(model.state_dict().keys()),
        "numel": sum(p.numel() for p in model.parameters()),
    }


# ------------------------------------------------------------------------------------------ training
class Trainer:
    """One rank's training loop: global steps, validation, TensorBoard, checkpoints."""

    def __init__(self, args: argparse.Namespace, engine: Any, rank: int, dp: int, micro: int, accum: int,
                 dp_group: Any = None):
        # rank: this process's data-parallel rank (the samples it trains on); TP/PP ranks of one DP
        # replica share it and train on the same samples.
        self.args, self.engine, self.rank, self.dp = args, engine, rank, dp
        self.micro, self.accum, self.dp_group = micro, accum, dp_group
        self.losses: dict[int, float] = {}
        self.writer = self._tb_writer() if dist.get_rank() == 0 else None

    def _tb_writer(self) -> Any:
        if self.args.tb_dir is None:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.args.tb_dir))

    def micro_batch(self, step: int, micro: int) -> tuple[Any, Any]:
        indices = micro_batch_indices(
            step, micro, rank=self.rank, dp=self.dp, micro_batch=self.micro, global_batch=self.args.train_batch_size,
        )
        return self._on_device(batch_for_indices(self.args.seed, indices))

    def train_step(self, step: int) -> float:
        """One global step (all micro-batches); returns the mean loss over the global batch."""
        total = torch.zeros((), dtype=torch.float64, device=self.engine.device)  # NCCL reduces GPU tensors
        for micro in range(self.accum):
            inputs, labels = self.micro_batch(step, micro)
            loss = self.loss(inputs, labels)
            self.engine.backward(loss)
            self.engine.step()
            total += loss.detach().double()
        dist.all_reduce(total, group=self.dp_group)
        self.check_step(step)
        return float(total) / (self.dp * self.accum)

    def loss(self, inputs: Any, labels: Any) -> Any:
        """Mean token cross-entropy of the engine's model on one batch.

        AutoTP makes a tied lm_head vocabulary-parallel (DeepSpeed 0.19.8 does so by default for a tied
        Llama): its logits are this rank's slice of the vocabulary, and the model computes the loss across
        the TP group through the HF ``loss_function`` hook DeepSpeed installs. Our labels are already the
        next tokens, hence ``shift_labels``.
        """
        if self.vocab_parallel_head:
            return self.engine(inputs, labels=labels, shift_labels=labels).loss.float()
        return lm_loss(logits_of(self.engine, inputs), labels)

    @property
    def vocab_parallel_head(self) -> bool:
        from deepspeed.sequence.cross_entropy import VocabParallelCausalLMLoss

        return isinstance(getattr(self.engine.module, "loss_function", None), VocabParallelCausalLMLoss)

    def check_step(self, step: int) -> None:
        if self.engine.global_steps != step:
            raise RuntimeError(f"engine is at global step {self.engine.global_steps}, expected {step}")

    def validate(self) -> float:
        """Loss on the fixed validation batch; every rank runs it (ZeRO-3 gathers weights collectively)."""
        inputs, labels = self._on_device(validation_batch(self.args.seed))
        self.engine.eval()
        with torch.no_grad():
            loss = float(self.loss(inputs, labels))
        self.engine.train()
        return loss

    def _on_device(self, batch: tuple[Any, Any]) -> tuple[Any, Any]:
        return batch[0].to(self.engine.device), batch[1].to(self.engine.device)

    def run(self) -> None:
        for step in range(self.engine.global_steps + 1, self.args.steps + 1):
            loss = self.train_step(step)
            self.record(step, MEGATRON_TRAIN_TAG, loss)
            self.losses[step] = loss
            if self.args.eval_every > 0 and step % self.args.eval_every == 0:
                self.record(step, MEGATRON_VAL_TAG, self.validate())
            if step in self.args.save_steps:
                self.engine.save_checkpoint(str(self.args.save_dir), tag=f"global_step{step}")
            self.write_losses()

    def record(self, step: int, tag: str, value: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def write_losses(self) -> None:
        if dist.get_rank() == 0 and self.args.losses_json is not None:
            write_json(self.args.losses_json, {str(k): v for k, v in sorted(self.losses.items())})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


class PipeTrainer(Trainer):
    """A PipelineModule's loop: engine.train_batch runs the micro-batches through the stages.

    Its loss is the mean over the micro-batches and the DP ranks, as the last stage computes it and
    every stage receives it. No validation pass: the pipeline's activation shapes are fixed by the
    training micro-batch.
    """

    def train_step(self, step: int) -> float:
        batches = iter([self.micro_batch(step, micro) for micro in range(self.accum)])
        loss = self.engine.train_batch(data_iter=batches)
        self.check_step(step)
        return float(loss)

    def validate(self) -> float:  # pragma: no cover - run() skips it (eval_every 0 for pipelines)
        raise NotImplementedError


def write_json(path: Path, data: Any) -> None:
    """Write atomically so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def load(args: argparse.Namespace, engine: Any) -> str:
    """Resume from --load; the engine then holds the loaded global step."""
    path, _ = engine.load_checkpoint(
        str(args.load),
        load_optimizer_states=not args.no_load_optimizer,
        load_lr_scheduler_states=not args.no_load_optimizer,
    )
    if path is None:
        raise SystemExit(f"no checkpoint found in {args.load}")
    return str(path)


def pipeline_truth(model: Any) -> dict[str, Any]:
    """describe_model of the whole PipelineModule: each stage builds only its layers, so union them.

    The tied embedding is built on the first and the last stage under the same name.
    """
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, describe_model(model))
    truth = {"params": {}, "buffers": {}, "tied": {}, "state_dict_keys": [], "numel": 0}
    for part in parts:
        for key in ("params", "buffers", "tied"):
            truth[key].update(part[key])
        truth["state_dict_keys"] += [k for k in part["state_dict_keys"] if k not in truth["state_dict_keys"]]
    order = {name: i for i, name in enumerate(truth["state_dict_keys"])}
    truth["state_dict_keys"].sort(key=lambda k: (_layer_order(k), order[k]))
    truth["numel"] = sum(math.prod(p["shape"]) for p in truth["params"].values())
    return truth


def _layer_order(name: str) -> int:
    head = name.split(".", 1)[0]
    return int(head) if head.isdigit() else -1


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # CPU training even on a machine with GPUs
    else:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    import deepspeed  # here, not at the top: importing it logs the accelerator it picked

    deepspeed.init_distributed(dist_backend="gloo" if args.device == "cpu" else "nccl")
    world = dist.get_world_size()
    model_parallel = args.tp * max(args.pp, 1)
    if world % model_parallel:
        raise SystemExit(f"{world} ranks do not split into TP {args.tp} x PP {max(args.pp, 1)} x DP")
    dp = world // model_parallel
    micro, accum = batch_split(args, dp)
    seed_everything(args.seed)
    if args.model == "megatron":
        model = build_megatron_gpt(args.pp, args.tp, args.seed, ucp=args.ucp)
    elif args.pp:
        model = build_pipeline_gpt(args.pp, args.seed, spacer=args.pipe_spacer)
    else:
        model = build_model(args.model, args.seed)
    freeze(model, args.freeze)
    truth = pipeline_truth(model) if args.pp else describe_model(model)
    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config(args, micro, accum),
    )
    loaded = load(args, engine) if args.load else None
    start = engine.global_steps
    if args.pp:
        args.eval_every = 0
        trainer: Trainer = PipeTrainer(args, engine, engine.grid.get_data_parallel_rank(), dp, micro, accum)
    elif args.tp > 1:
        from deepspeed.utils import groups

        trainer = Trainer(args, engine, groups.get_data_parallel_rank(), dp, micro, accum,
                          dp_group=groups.get_data_parallel_group())
    else:
        trainer = Trainer(args, engine, dist.get_rank(), dp, micro, accum)
    trainer.run()
    trainer.close()
    if dist.get_rank() == 0 and args.save_dir is not None:
        truth.update(
            model=args.model, stage=args.stage, dtype=args.dtype, dp=dp, tp=args.tp, pp=max(args.pp, 1),
            pipeline=bool(args.pp), seed=args.seed, ucp=args.ucp if args.model == "megatron" else None,
            train_batch_size=args.train_batch_size, micro_batch_size=micro, grad_accum=accum,
            steps=args.steps, start_step=start, save_steps=sorted(args.save_steps),
            loaded_from=loaded, load_universal=args.load_universal,
            engine_dtypes={n: str(p.dtype).removeprefix("torch.") for n, p in engine.module.named_parameters()},
            versions={"torch": torch.__version__, "deepspeed": deepspeed.__version__},
        )
        write_json(args.save_dir / "truth.json", truth)
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    # A normal interpreter exit sometimes aborts inside gloo after the work is done
    # ("terminate called without an active exception"); the results are on disk, so leave now.
    os._exit(0)


if __name__ == "__main__":
    main()
