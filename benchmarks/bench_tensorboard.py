"""How fast ckpt-tui reads a 1M-point TensorBoard event file, against EventAccumulator and tbparse.

    .venv/bin/python benchmarks/bench_tensorboard.py [--points 1000000] [--repeat 3] [--out DIR]

Builds the event file once with torch's SummaryWriter (about 30 s for 1M points), cached in
``.cache/bench/tb-<points>/``, then times each reader several times and prints the median times and the
ratios to ckpt-tui. The readers:

- ckpt-tui ``read_event_file``: checksums verified (the default), and unverified;
- ``EventAccumulator(size_guidance={'scalars': 0})``: every point, as the performance issue specifies;
- ``tbparse.SummaryReader(...).scalars`` when tbparse is installed (it loads through EventAccumulator).

Reports numbers only; there are no asserts (the test suite checks correctness).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TAG = "lm-loss-training/lm loss"


def build(points: int, out: Path) -> Path:
    """One event file with ``points`` values of the Megatron training-loss tag, reused when present."""
    done = out / "DONE"
    if done.exists():
        return next(p for p in out.iterdir() if "tfevents" in p.name)
    from torch.utils.tensorboard import SummaryWriter

    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    start = time.perf_counter()
    with SummaryWriter(str(out)) as writer:
        for step in range(points):
            writer.add_scalar(TAG, 5.0 / (1.0 + step * 1e-3), step)
    done.write_text(f"{points}\n")
    path = next(p for p in out.iterdir() if "tfevents" in p.name)
    print(f"built {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return path


def ours(verify: bool) -> Callable[[Path], int]:
    def read(path: Path) -> int:
        from ckpt_tui.core.formats.tensorboard import read_event_file

        return len(read_event_file(path, verify=verify).scalars[TAG])

    return read


def event_accumulator(path: Path) -> int:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    return len(acc.Scalars(TAG))


def tbparse_reader(path: Path) -> int:
    from tbparse import SummaryReader

    frame = SummaryReader(str(path), event_types={"scalars"}).scalars
    return int((frame["tag"] == TAG).sum())


def time_it(fn: Callable[[Path], int], path: Path, repeat: int) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = fn(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times), count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3, help="runs per reader; the median is reported")
    p.add_argument("--out", type=Path, default=None, help="where to build the event file")
    args = p.parse_args()
    path = build(args.points, args.out or REPO / ".cache" / "bench" / f"tb-{args.points}")

    readers: list[tuple[str, Callable[[Path], int]]] = [
        ("ckpt-tui (checksums verified)", ours(True)),
        ("ckpt-tui (no checksums)", ours(False)),
        ("EventAccumulator(scalars=0)", event_accumulator),
    ]
    try:
        import tbparse  # noqa: F401

        readers.append(("tbparse SummaryReader", tbparse_reader))
    except ImportError:
        print("tbparse not installed: skipped (pip install tbparse)")

    ours(True)(path)  # warm imports and the page cache, so the first timed reader is not penalised
    results = []
    for name, fn in readers:
        median, count = time_it(fn, path, args.repeat)
        results.append((name, median, count))
        print(f"  {name:32s} {median:8.3f} s  ({count} points)", flush=True)

    base = results[0][1]
    print(f"\n{args.points} points, median of {args.repeat} runs, python {sys.version.split()[0]}")
    print(f"{'reader':32s} {'median s':>9s} {'points':>9s} {'x slower than ckpt-tui':>24s}")
    for name, median, count in results:
        print(f"{name:32s} {median:9.3f} {count:9d} {median / base:24.1f}")


if __name__ == "__main__":
    main()
