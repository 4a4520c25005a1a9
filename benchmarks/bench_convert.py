"""ZeRO -> HF and ZeRO -> universal: ckpt-tui against DeepSpeed's own tools, side by side, same run.

Builds (once, cached under .cache/bench/) a real DeepSpeed ZeRO checkpoint of a wide MLP (>= 1 GB of fp32
weights by default) per stage, then for each direction runs ours and the reference as separate processes,
REPEAT times alternating, and prints median wall time, median peak RSS (the process's high-water mark from
wait4) and the ratios. Also times a plain copy of as many bytes as the output (read + write bandwidth).

    .venv/bin/python benchmarks/bench_convert.py [--stages 1 3] [--layers 16 --width 4096] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "bench"


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of a command, its own process tree's high-water mark."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    return wall, usage.ru_maxrss * 1024


def build_input(stage: int, layers: int, width: int) -> Path:
    out = CACHE / f"zero{stage}-l{layers}-w{width}"
    if (out / "latest").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    print(f"building the stage-{stage} input with DeepSpeed ({layers} x Linear({width}, {width})) ...", flush=True)
    env = {"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29600 + stage)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(REPO / "benchmarks/big_zero_model.py"),
           str(out), str(stage), str(layers), str(width)]
    measure(cmd, env)
    return out


def plain_copy(src_bytes: int, scratch: Path) -> float:
    """Seconds to write then read back src_bytes through the page cache + disk, as a bandwidth floor."""
    f = scratch / "copy.bin"
    block = b"\1" * (64 << 20)
    start = time.perf_counter()
    with open(f, "wb") as fh:
        left = src_bytes
        while left > 0:
            fh.write(block[: min(left, len(block))])
            left -= len(block)
        fh.flush()
        os.fsync(fh.fileno())
    g = scratch / "copy2.bin"
    shutil.copyfile(f, g)
    wall = time.perf_counter() - start
    f.unlink()
    g.unlink()
    return wall


def run_pair(label: str, ours: list[str], ref: list[str], outs: list[Path], repeat: int) -> dict:
    times: dict[str, list[float]] = {"ours": [], "ref": []}
    rss: dict[str, list[int]] = {"ours": [], "ref": []}
    for _ in range(repeat):
        for who, cmd in (("ours", ours), ("ref", ref)):
            for o in outs:
                shutil.rmtree(o, ignore_errors=True)
            wall, peak = measure(cmd)
            times[who].append(wall)
            rss[who].append(peak)
    row = {k: (statistics.median(times[k]), statistics.median(rss[k])) for k in times}
    (t_o, r_o), (t_r, r_r) = row["ours"], row["ref"]
    print(
        f"{label:<34} ours {t_o:7.2f}s {r_o / 2**20:8.0f} MiB | reference {t_r:7.2f}s {r_r / 2**20:8.0f} MiB | "
        f"speed-up x{t_r / t_o:.2f}, RSS ratio {r_o / r_r:.2f}",
        flush=True,
    )
    return row


def hf_input(layers: int, width: int) -> Path:
    """A sharded HF safetensors folder of `layers` Linear(width, width) weights (no training needed)."""
    out = CACHE / f"hf-l{layers}-w{width}"
    if (out / "model.safetensors.index.json").is_file():
        return out
    import torch
    from safetensors.torch import save_file

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    weight_map = {}
    g = torch.Generator().manual_seed(0)
    for i in range(layers):
        name, shard = f"{i}.weight", f"model-{i + 1:05d}-of-{layers:05d}.safetensors"
        save_file({name: torch.randn(width, width, generator=g)}, out / shard)
        weight_map[name] = shard
    import json

    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return out


def hf_to_universal_memory(width: int, sizes: list[int], repeat: int, workers: int) -> None:
    """No reference tool exists (DeepSpeed ships no hf_to_universal): show peak RSS does not grow with the model."""
    largest = width * width * 4
    for layers in sizes:
        src, dst = hf_input(layers, width), CACHE / "out" / "hf-uni"
        runs = []
        for _ in range(repeat):
            shutil.rmtree(dst, ignore_errors=True)
            runs.append(measure([sys.executable, "-m", "ckpt_tui", "convert", str(src), "--to", "universal", "-o", str(dst),
                                 "--workers", str(workers)]))
        wall = statistics.median(r[0] for r in runs)
        rss = statistics.median(r[1] for r in runs)
        print(f"HF -> universal {layers * largest / 1e9:5.2f} GB model      ours {wall:7.2f}s {rss / 2**20:8.0f} MiB "
              f"| largest tensor {largest / 2**20:.0f} MiB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", type=int, nargs="*", default=[1, 3])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-universal", action="store_true")
    ap.add_argument("--hf-sizes", type=int, nargs="*", default=[4, 16], help="HF -> universal model sizes (layers)")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    scratch = CACHE / "out"
    scratch.mkdir(exist_ok=True)
    py = sys.executable
    fp32_bytes = args.layers * (args.width * args.width + args.width) * 4
    print(f"model: {args.layers} x Linear({args.width}) = {fp32_bytes / 1e9:.2f} GB fp32, DP=2, median of {args.repeat}")
    copy_s = statistics.median(plain_copy(fp32_bytes, scratch) for _ in range(args.repeat))
    print(f"{'plain write+copy of that many bytes':<34} {copy_s:7.2f}s ({2 * fp32_bytes / copy_s / 1e9:.2f} GB/s)")
    hf_to_universal_memory(args.width, args.hf_sizes, args.repeat, args.workers)
    for stage in args.stages:
        src = build_input(stage, args.layers, args.width)
        hf_ours, hf_ref = scratch / "hf-ours", scratch / "hf-ref"
        row = run_pair(
            f"ZeRO-{stage} -> HF safetensors",
            [py, "-m", "ckpt_tui", "convert", str(src), "--to", "hf", "-o", str(hf_ours), "--workers", str(args.workers)],
            [py, str(src / "zero_to_fp32.py"), str(src), str(hf_ref), "--safe_serialization"],
            [hf_ours, hf_ref],
            args.repeat,
        )
        print(f"{'':<34} ours vs plain copy: x{row['ours'][0] / copy_s:.2f} of the copy time")
        if args.skip_universal:
            continue
        uni_ours, uni_ref = scratch / "uni-ours", scratch / "uni-ref"
        ref = [py, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(src / "global_step1"),
               "--output_folder", str(uni_ref)]
        if stage < 3:
            ref.append("--inject_missing_state")
        run_pair(
            f"ZeRO-{stage} -> universal",
            [py, "-m", "ckpt_tui", "convert", str(src), "--to", "universal", "-o", str(uni_ours), "--workers", str(args.workers)],
            ref,
            [uni_ours, uni_ref],
            args.repeat,
        )


if __name__ == "__main__":
    main()
