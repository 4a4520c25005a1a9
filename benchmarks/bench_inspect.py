"""Listing a Llama-2-70B-shaped sharded safetensors folder: ckpt-tui against reading the raw headers alone.

    .venv/bin/python benchmarks/bench_inspect.py [--shards 30] [--repeat 15] [--cli-repeat 7]

Builds (once, cached in ``.cache/bench/llama2-70b-s<shards>/``) the folder a Llama-2-70B save has: real
tensor names and shapes (80 layers, hidden 8192, intermediate 28672, GQA with 8 KV heads of 128 so k/v
projections are 1024 x 8192, vocab 32000, untied lm_head; 723 tensors, 69.0 B parameters, 138 GB of bf16),
split over ``--shards`` files with ``model.safetensors.index.json`` and ``config.json``. Each shard holds a
real safetensors header and is then extended to its full size with ``truncate``: a sparse file, so the
138 GB cost no disk, and every size check the reader makes against the file still sees the real numbers.

Then times, side by side in the same run and alternating, ``--repeat`` times each:

- in-process: the raw-header floor (open each shard, read the 8-byte length and the header, ``json.loads``),
  ``safetensors.safe_open`` listing every key's shape and dtype (the library's own reader, for reference),
  ``open_checkpoint(DIR)``, and ``open_checkpoint`` + ``checkpoint_to_json`` + ``json.dumps`` (the CLI's work);
- as processes: ``python -c pass``, ``python -m ckpt_tui --version`` (interpreter + our imports),
  the raw-header floor as a script, and ``python -m ckpt_tui inspect DIR --json``.

Prints medians and ratios. The page cache is warm (the first, untimed run reads the headers in): this
measures the tool, not the disk. Reports numbers only; there are no asserts (the tests check correctness).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CACHE = REPO / ".cache" / "bench"
BUILD_VERSION = "1"  # bump when the layout below changes, to rebuild the cached folder

# Llama-2-70B (meta-llama/Llama-2-70b-hf config.json; torch_dtype set to bf16 for this benchmark)
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 8192,
    "initializer_range": 0.02,
    "intermediate_size": 28672,
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "num_attention_heads": 64,
    "num_hidden_layers": 80,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.31.0",
    "use_cache": True,
    "vocab_size": 32000,
}


def llama_tensors(cfg: dict) -> list[tuple[str, list[int]]]:
    """(name, shape) in the order transformers' LlamaForCausalLM state_dict lists them."""
    h, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * (h // cfg["num_attention_heads"])
    out = [("model.embed_tokens.weight", [vocab, h])]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", [h, h]),
            (p + "self_attn.k_proj.weight", [kv, h]),
            (p + "self_attn.v_proj.weight", [kv, h]),
            (p + "self_attn.o_proj.weight", [h, h]),
            (p + "mlp.gate_proj.weight", [inter, h]),
            (p + "mlp.up_proj.weight", [inter, h]),
            (p + "mlp.down_proj.weight", [h, inter]),
            (p + "input_layernorm.weight", [h]),
            (p + "post_attention_layernorm.weight", [h]),
        ]
    out += [("model.norm.weight", [h]), ("lm_head.weight", [vocab, h])]
    return out


def numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def write_sparse_safetensors(path: Path, tensors: list[tuple[str, list[int]]], dtype: str, itemsize: int) -> int:
    """A safetensors file with a real header whose data section is a hole; returns its size."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in sorted(tensors):
        size = numel(shape) * itemsize
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        fh.truncate(8 + len(raw) + offset)
    return 8 + len(raw) + offset


def build(shards: int) -> Path:
    out = CACHE / f"llama2-70b-s{shards}"
    done = out / "DONE"
    if done.is_file() and done.read_text().strip() == BUILD_VERSION:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    tensors = llama_tensors(CONFIG)
    sizes = [numel(s) * 2 for _, s in tensors]
    total = sum(sizes)
    groups: list[list[tuple[str, list[int]]]] = [[] for _ in range(shards)]
    start = 0
    for t, size in zip(tensors, sizes):
        groups[min(shards - 1, start * shards // total)].append(t)  # cut by cumulative bytes, in order
        start += size
    weight_map = {}
    for i, group in enumerate(groups):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        write_sparse_safetensors(out / name, group, "BF16", 2)
        weight_map.update({n: name for n, _ in group})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    (out / "generation_config.json").write_text('{"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}\n')
    done.write_text(BUILD_VERSION + "\n")
    disk = sum(p.stat().st_blocks * 512 for p in out.iterdir())
    print(f"built {out}: {len(tensors)} tensors, {numel_total(tensors) / 1e9:.1f} B params, "
          f"{total / 1e9:.1f} GB apparent, {disk / 1e6:.1f} MB on disk")
    return out


def numel_total(tensors: list[tuple[str, list[int]]]) -> int:
    return sum(numel(s) for _, s in tensors)


# The floor: what any header-only lister must do. Also run as a script (RAW_SCRIPT) for the process row.
def raw_headers(folder: Path) -> int:
    count = 0
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            with open(os.path.join(folder, name), "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                count += len(json.loads(fh.read(n))) - 1
    return count


RAW_SCRIPT = (  # the same floor as a process: just the function above, no imports of ours
    "import json, os, struct, sys\nfrom pathlib import Path\n" + inspect.getsource(raw_headers) + "print(raw_headers(sys.argv[1]))\n"
)


def safetensors_lib(folder: Path) -> int:
    from safetensors import safe_open

    count = 0
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(folder, name), "numpy") as f:
                for key in f.keys():
                    s = f.get_slice(key)
                    s.get_shape(), s.get_dtype()
                    count += 1
    return count


def ours(folder: Path) -> int:
    from ckpt_tui.core.inspect import open_checkpoint

    return len(open_checkpoint(folder).tensors)


def ours_json(folder: Path) -> int:
    from ckpt_tui.core.inspect import open_checkpoint
    from ckpt_tui.core.serialize import checkpoint_to_json

    ckpt = open_checkpoint(folder)
    json.dumps(checkpoint_to_json(ckpt), indent=2)
    return len(ckpt.tensors)


def alternate(fns: list[tuple[str, Callable[[], object]]], repeat: int) -> dict[str, float]:
    """Median seconds of each fn, run in turn `repeat` rounds so noise hits them alike."""
    times: dict[str, list[float]] = {name: [] for name, _ in fns}
    for _ in range(repeat):
        for name, fn in fns:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def run_quiet(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.decode(errors='replace')[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=15, help="rounds in-process; medians are reported")
    ap.add_argument("--cli-repeat", type=int, default=7, help="rounds of the process measurements")
    args = ap.parse_args()
    folder = build(args.shards)
    py = sys.executable

    # warm-up: imports, page cache
    n_raw, n_ours = raw_headers(folder), ours(folder)
    ours_json(folder)
    fns: list[tuple[str, Callable[[], object]]] = [
        ("raw headers (floor)", lambda: raw_headers(folder)),
        ("open_checkpoint", lambda: ours(folder)),
        ("open_checkpoint + JSON", lambda: ours_json(folder)),
    ]
    try:
        safetensors_lib(folder)
        fns.insert(1, ("safetensors safe_open", lambda: safetensors_lib(folder)))
    except ImportError:
        print("safetensors not installed: its row is skipped")
    med = alternate(fns, args.repeat)
    floor = med["raw headers (floor)"]

    procs = {
        "python -c pass": [py, "-c", "pass"],
        "raw headers script": [py, "-c", RAW_SCRIPT, str(folder)],
        "ckpt-tui --version": [py, "-m", "ckpt_tui", "--version"],
        "ckpt-tui inspect --json": [py, "-m", "ckpt_tui", "inspect", str(folder), "--json"],
    }
    for cmd in procs.values():
        run_quiet(cmd)
    pmed = alternate([(name, (lambda c=cmd: run_quiet(c))) for name, cmd in procs.items()], args.cli_repeat)

    print(f"\n{folder.name}: {n_ours} tensors listed ({n_raw} in the shard headers + aliases), {args.shards} shards, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"\nin-process, median of {args.repeat}")
    print(f"{'':28s} {'median ms':>10s} {'x floor':>8s}")
    for name, m in med.items():
        print(f"{name:28s} {m * 1e3:10.1f} {m / floor:8.2f}")
    start = pmed["python -c pass"]
    ours_start = pmed["ckpt-tui --version"]
    cli = pmed["ckpt-tui inspect --json"]
    raw_p = pmed["raw headers script"]
    print(f"\nas processes (wall, start-up included), median of {args.cli_repeat}")
    print(f"{'':28s} {'median ms':>10s} {'- python':>9s} {'- --version':>12s}")
    for name, m in pmed.items():
        extra = f"{(m - ours_start) * 1e3:12.1f}" if name.startswith("ckpt-tui inspect") else f"{'':12s}"
        print(f"{name:28s} {m * 1e3:10.1f} {(m - start) * 1e3:9.1f} {extra}")
    ratio = med["open_checkpoint"] / floor
    print("\nsummary (targets: listed in < 300 ms wall, within 2x of reading the raw headers)")
    print(f"  in-process   open_checkpoint {med['open_checkpoint'] * 1e3:6.1f} ms, x{ratio:.2f} the raw headers "
          f"({floor * 1e3:.1f} ms)")
    print(f"  CLI          inspect --json  {cli * 1e3:6.1f} ms wall, of which start-up (--version) "
          f"{ours_start * 1e3:.1f} ms = bare python {start * 1e3:.1f} + our imports {(ours_start - start) * 1e3:.1f}; "
          f"listing + JSON after start-up {(cli - ours_start) * 1e3:.1f} ms")
    print(f"  CLI floor    raw-header script {raw_p * 1e3:6.1f} ms wall: the CLI is x{cli / raw_p:.1f} of it, "
          f"x{(cli - ours_start) / max(raw_p - start, 1e-9):.1f} once both start-ups are taken off")

if __name__ == "__main__":
    main()
