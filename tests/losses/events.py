"""Write real TensorBoard event files for the loss tests, with torch's SummaryWriter (no mocks).

One :func:`write_run` call is one writer session, so one event file: what one training launch leaves
behind. Calling it twice on a folder gives a restart (or a resumed run sharing the folder).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

TRAIN_TAG = "lm-loss-training/lm loss"
VAL_TAG = "lm-loss-validation/lm loss validation"


def loss_curve(steps: Iterable[int], seed: float = 0.0) -> list[float]:
    """A plausible noisy, decreasing loss; the same steps give the same values."""
    s = np.asarray(list(steps), dtype=np.float64)
    return (5.0 * np.exp(-s / 50.0) + 0.3 + 0.05 * np.sin(0.7 * s + seed)).tolist()


def f32(values: Iterable[float]) -> np.ndarray:
    """What a simple_value keeps of a Python float: float32, widened back exactly."""
    return np.asarray(list(values), dtype=np.float32).astype(np.float64)


def write_run(
    log_dir: Path,
    scalars: Mapping[str, Iterable[tuple[int, float]]],
    *,
    wall0: float | None = None,
    new_style: bool = False,
    double_precision: bool = False,
) -> Path:
    """Write ``{tag: [(step, value), ...]}`` in step order across tags, like a training loop.

    With ``wall0`` the wall time of a point is ``wall0 + its index``, so tests can order restarts.
    Returns the event file this session created.
    """
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    before = set(log_dir.iterdir())
    rows = sorted(((step, i, tag, value) for i, (tag, points) in enumerate(scalars.items())
                   for step, value in points), key=lambda r: (r[0], r[1]))
    with SummaryWriter(str(log_dir)) as writer:
        for n, (step, _i, tag, value) in enumerate(rows):
            writer.add_scalar(tag, value, step, walltime=None if wall0 is None else wall0 + n,
                              new_style=new_style, double_precision=double_precision)
    (created,) = [p for p in log_dir.iterdir() if p not in before and "tfevents" in p.name]
    return created


def loss_run(log_dir: Path, steps: Iterable[int], *, shift: Mapping[int, float] | None = None,
             val_every: int = 0, **kw) -> Path:
    """A Megatron-style run: the training loss at ``steps`` (plus ``shift[step]``), validation optional."""
    steps = list(steps)
    values = loss_curve(steps)
    shift = shift or {}
    scalars = {TRAIN_TAG: [(s, v + shift.get(s, 0.0)) for s, v in zip(steps, values)]}
    if val_every:
        scalars[VAL_TAG] = [(s, v + 0.1) for s, v in zip(steps, values) if s % val_every == 0]
    return write_run(log_dir, scalars, **kw)


def record_offsets(path: Path) -> list[tuple[int, int]]:
    """(offset, payload length) of every complete TFRecord in a file, walked independently of ckpt_tui."""
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        if pos + 16 + length > len(data):
            break
        out.append((pos, length))
        pos += 16 + length
    return out


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= 0x5A
    Path(path).write_bytes(bytes(data))
