"""Per-tensor cost of verify and convert as the tensor count grows: is the work linear in tensors?

    .venv/bin/python benchmarks/bench_scale_tensors.py [--counts 10000 100000] [--repeat 3]

Builds (once, cached in ``.cache/bench/scale-<n>/``) an HF safetensors folder of ``n`` tiny float32
tensors (8 values each, named like a deep model's: ``model.layers.<i>.block.<j>.weight``), written by
``safetensors.torch.save_file`` itself, then times in-process, median of ``--repeat``:

- ``verify(A, A)``: open both sides, compare every tensor;
- ``convert(A, --to hf)``: the whole job (read, write, rename into place), into a fresh folder;
- ``convert(A, --to universal)`` at a tenth of the count (one folder of 4 files per tensor).

Prints microseconds per tensor at each count and the ratio of the largest count's per-tensor cost to the
smallest's: about 1 means linear; a quadratic step (a name looked up by a scan per tensor) shows as a
ratio near the count ratio. Numbers only; no asserts (the tests check correctness).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CACHE = REPO / ".cache" / "bench"
PER_BLOCK = 10


def build(count: int) -> Path:
    folder = CACHE / f"scale-{count}"
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    values = torch.arange(8, dtype=torch.float32)
    tensors = {f"model.layers.{i // PER_BLOCK}.block.{i % PER_BLOCK}.weight": values + i for i in range(count)}
    save_file(tensors, tmp / "model.safetensors")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def convert_once(src: Path, target: str) -> None:
    from ckpt_tui.core.convert.api import convert

    with tempfile.TemporaryDirectory(dir=CACHE, prefix="scale-out-") as tmp:
        convert(src, Path(tmp) / "out", target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    from ckpt_tui.core.verify import verify

    counts = sorted(args.counts)
    rows: dict[str, dict[int, float]] = {"verify": {}, "convert --to hf": {}, "convert --to universal": {}}
    for count in counts:
        src = build(count)
        small = build(max(count // 10, 1))
        rows["verify"][count] = timed(lambda: verify(src, src), args.repeat) / count
        rows["convert --to hf"][count] = timed(lambda: convert_once(src, "hf"), args.repeat) / count
        rows["convert --to universal"][count] = timed(lambda: convert_once(small, "universal"), args.repeat) / max(
            count // 10, 1
        )
        print(f"  {count:,} tensors done", flush=True)
    header = " | ".join(f"{c:,} tensors (us/tensor)" for c in counts)
    print(f"\n| operation | {header} | per-tensor ratio, largest / smallest |")
    print("| --- | " + " | ".join("---:" for _ in counts) + " | ---: |")
    for name, by_count in rows.items():
        cells = " | ".join(f"{by_count[c] * 1e6:.1f}" for c in counts)
        note = " (at a tenth of the count)" if name.endswith("universal") else ""
        print(f"| {name}{note} | {cells} | {by_count[counts[-1]] / by_count[counts[0]]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
