"""TP / PP checkpoints -> universal: ckpt-tui against DeepSpeed's ds_to_universal, side by side, same run.

Builds (once, cached under .cache/bench/) real DeepSpeed checkpoints of >= 1 GB: an AutoTP Llama at TP 2, a
PipelineModule at PP 2, and the demo's Megatron-style GPT at TP 2 x PP 2 (AutoTP and PipelineModule do not
combine; the Megatron-style model is what TP x PP runs train), then times `convert --to universal` against `ds_to_universal` (its default
workers), REPEAT times alternating, and prints median wall time, median peak RSS and the ratios. Both
outputs are compared tensor by tensor once (`ckpt-tui verify`).

    .venv/bin/python benchmarks/bench_convert_3d.py [--kinds tp pp tppp] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import CACHE, REPO, measure, run_pair  # noqa: E402

# hidden size of the Llama / width of the Linear layers / hidden size of the Megatron-style GPT
SIZES = {"tp": 2048, "pp": 4096, "tppp": 2048}  # ~1.06 GB, ~1.06 GB, ~1.3 GB of optimizer files
RANKS = {"tp": 2, "pp": 2, "tppp": 4}
NAMES = {"tp": "TP 2", "pp": "PP 2", "tppp": "TP 2 x PP 2"}


def build_input(kind: str) -> Path:
    out = CACHE / f"{kind}2-{SIZES[kind]}"
    if (out / "latest").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    print(f"building the {NAMES[kind]} input with DeepSpeed ...", flush=True)
    env = {"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29650"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(RANKS[kind]),
           str(REPO / "benchmarks/big_3d_model.py"), str(out), kind, str(SIZES[kind])]
    measure(cmd, env)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", nargs="*", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    (CACHE / "out").mkdir(parents=True, exist_ok=True)
    py = sys.executable
    for kind in args.kinds:
        src = build_input(kind)
        size = sum(p.stat().st_size for p in (src / "global_step1").glob("*optim_states.pt"))
        print(f"{NAMES[kind]} input: {src} ({size / 1e9:.2f} GB of optimizer files), median of {args.repeat}")
        ours, ref = CACHE / "out" / "uni3d-ours" / "global_step1_universal", CACHE / "out" / "uni3d-ref" / "global_step1_universal"
        ref_cmd = [py, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(src / "global_step1"),
                   "--output_folder", str(ref)]
        if kind == "pp":
            ref_cmd.append("--inject_missing_state")  # a PipelineModule writes no universal_checkpoint_info
        run_pair(
            f"{NAMES[kind]} ZeRO-1 -> universal",
            [py, "-m", "ckpt_tui", "convert", str(src), "--to", "universal", "-o", str(ours), "--workers", str(args.workers)],
            ref_cmd,
            [ours.parent, ref.parent],
            args.repeat,
        )
        ours_cmd = [py, "-m", "ckpt_tui", "convert", str(src), "--to", "universal", "-o", str(ours), "--workers", str(args.workers)]
        subprocess.run(ours_cmd, capture_output=True, check=True)  # run_pair left only the reference's output
        check = subprocess.run([py, "-m", "ckpt_tui", "verify", str(ref), str(ours), "--states"], capture_output=True, text=True)
        print(f"{'':<34} verify ours vs ds_to_universal: {check.stdout.strip().splitlines()[-1] if check.stdout else check.stderr.strip()}")


if __name__ == "__main__":
    main()
