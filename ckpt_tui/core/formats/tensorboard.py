"""TensorBoard event files: find them, read every scalar point quickly, summarise a run.

Why not ``EventAccumulator``: by default it keeps a random 10,000-point sample per tag. It also purges
points logged after a restart step, which loses the resumed run when it shares a folder with its
baseline. And it checks checksums in pure Python, about 12 us a point. Here each event file is read on
its own and every point is kept. Framing, checksums and the common scalar layout are decoded with numpy
over the whole file at once; only unusual records go through tensorboard's protobuf classes.

File format: TFRecord framing around serialized ``Event`` protos. Each record is a uint64 length, the
masked CRC32C of that length, the payload, then the masked CRC32C of the payload.

Integrity policy (the CLI and the TUI report ``EventFile.notes``):

- The header checksum of every record is verified. A corrupt length would misframe everything after it.
- The payload checksum is verified for every record up to ``_VECTOR_CRC_MAX`` bytes (every scalar event
  is far smaller) and for any larger record that holds scalars. Large records without scalars (images,
  graphs) are not checked: bit rot in an image should not stop you reading the loss.
- A truncated tail, where the file ends inside its last record, is tolerated in every event file and
  gets a note. A live writer leaves one, and so does a writer killed in the middle of a flush (the usual
  reason for a restart). Every complete record before the tail has passed its checksums. TensorBoard
  does the same.
- An empty file, or one cut short before its first complete record, reads as zero records with a note.
  SummaryWriter flushes every 120 s, so a just-started run looks like this. Callers that need values
  (compare-loss) turn "no data" into a clear :class:`CkptError`.
- Anything else raises :class:`CkptError` naming the file: a checksum mismatch, a record that is not an
  ``Event``, an unreadable file.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats.tensorboard_runs import (  # noqa: F401 - discovery lives with the adapter
    EVENT_MARK,
    _start_key,
    find_event_files,
    find_runs,
    is_event_file,
)
from ckpt_tui.core.model import FileEntry, RunLog, ScalarTag

_VECTOR_CRC_MAX = 1024  # payloads up to this size get the vectorised checksum
_CHUNK = 65536  # rows per vectorised step: keeps the working set in cache
_HEADER = struct.Struct("<Q")
_U32 = struct.Struct("<I")


# --------------------------------------------------------------------------------------------- data


@dataclass
class ScalarPoints:
    """One tag's points from one event file, in file order (steps may repeat or go back)."""

    steps: np.ndarray  # int64
    values: np.ndarray  # float64 (float32 for simple_value, widened exactly)
    wall_times: np.ndarray  # float64, seconds since the epoch

    def __len__(self) -> int:
        return int(self.steps.size)


@dataclass
class EventFile:
    """Everything scalar in one event file, plus what we noticed while reading it."""

    path: Path
    size: int
    records: int  # complete records (events), including non-scalar ones
    scalars: dict[str, ScalarPoints] = field(default_factory=dict)
    file_version: str | None = None
    first_wall_time: float | None = None
    last_wall_time: float | None = None
    truncated_bytes: int = 0  # bytes of an incomplete last record that were ignored
    notes: list[str] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(len(p) for p in self.scalars.values())

    @property
    def step_range(self) -> tuple[int, int] | None:
        firsts = [int(p.steps.min()) for p in self.scalars.values() if len(p)]
        lasts = [int(p.steps.max()) for p in self.scalars.values() if len(p)]
        return (min(firsts), max(lasts)) if firsts else None


# ----------------------------------------------------------------------------------------- reading


def read_scalars(path: Path, *, verify: bool = True) -> list[EventFile]:
    """Every scalar point of an event file, or of each event file directly in a folder (oldest first).

    Files are kept apart: a resumed run writing into its baseline's folder stays distinguishable, and
    :func:`merge_points` decides how they combine.
    """
    path = Path(path)
    if path.is_dir():
        files = find_event_files(path)
        if not files:
            raise CkptError(path, "no TensorBoard event files (events.out.tfevents.*) in this folder")
        read = [read_event_file(f, verify=verify) for f in files]
        # The first event's wall time is finer than the name's whole seconds; empty files keep the name's.
        keys = [f.first_wall_time if f.first_wall_time is not None else _start_key(f.path)[0] for f in read]
        return [read[i] for i in sorted(range(len(read)), key=lambda i: (keys[i], i))]
    if not path.exists():
        raise CkptError(path, "no such file or folder")
    if not is_event_file(path):
        raise CkptError(path, "not a TensorBoard event file (the name has no 'tfevents')")
    return [read_event_file(path, verify=verify)]


def read_event_file(path: Path, *, verify: bool = True) -> EventFile:
    """Read one event file. ``verify=False`` skips checksums (benchmarks only)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return EventFile(path, 0, 0, notes=[f"{path.name}: empty (0 bytes): nothing flushed yet"])
        with open(path, "rb") as fh:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:  # ValueError: emptied between stat and mmap
        raise CkptError(path, getattr(exc, "strerror", None) or str(exc)) from None
    try:
        return _Parser(path, buf, verify).parse()
    finally:
        try:
            buf.close()
        except BufferError:  # a numpy view survived (only on an exception path): the GC closes it
            pass


def read_run_log(dir: Path) -> RunLog:
    """Summary of a run folder (or one event file): its event files and, per tag, point count and steps.

    Points are counted after merging the files, so a step logged twice (a restart) counts once.
    Truncated tails and empty files are tolerated (see the module docstring); their notes go to
    ``RunLog.warnings`` when the model has that field.
    """
    dir = Path(dir)
    files = read_scalars(dir)
    log = RunLog(
        path=dir,
        event_files=[FileEntry(path=f.path.name, size=f.size, role="events") for f in files],
    )
    for tag, pts in sorted(merge_files(files).items()):
        first = int(pts.steps[0]) if len(pts) else None
        last = int(pts.steps[-1]) if len(pts) else None
        log.tags.append(ScalarTag(tag=tag, points=len(pts), first_step=first, last_step=last))
    notes = [n for f in files for n in f.notes]
    if notes:
        log.warnings.extend(notes)
    return log


# ----------------------------------------------------------------------------------------- merging


def merge_points(parts: Iterable[ScalarPoints]) -> ScalarPoints:
    """One point per step, sorted by step; a step seen twice keeps the latest wall time.

    Ties in wall time go to the later point (later file, then later record), as a restarted writer's
    point is both. ``parts`` must come oldest file first.
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        empty = np.empty(0)
        return ScalarPoints(empty.astype(np.int64), empty, empty)
    steps = np.concatenate([p.steps for p in parts])
    values = np.concatenate([p.values for p in parts])
    walls = np.concatenate([p.wall_times for p in parts])
    order = np.lexsort((np.arange(steps.size), walls, steps))
    s = steps[order]
    keep = np.ones(s.size, dtype=bool)
    keep[:-1] = s[1:] != s[:-1]  # last of each equal-step group = latest wall time
    idx = order[keep]
    return ScalarPoints(steps[idx], values[idx], walls[idx])


def merge_files(files: Iterable[EventFile]) -> dict[str, ScalarPoints]:
    """Per tag, the merged series of several event files of one run (see :func:`merge_points`)."""
    by_tag: dict[str, list[ScalarPoints]] = {}
    for f in files:
        for tag, pts in f.scalars.items():
            by_tag.setdefault(tag, []).append(pts)
    return {tag: merge_points(parts) for tag, parts in by_tag.items()}


# ------------------------------------------------------------------------------------------ parser


class _Parser:
    """Decodes one mapped event file; vectorised over records wherever the layout allows."""

    def __init__(self, path: Path, buf: mmap.mmap, verify: bool) -> None:
        self.path, self.buf, self.verify = path, buf, verify
        self.n = len(buf)
        self.notes: list[str] = []

    def fail(self, problem: str) -> CkptError:
        return CkptError(self.path, problem)

    def parse(self) -> EventFile:
        offsets, end = _frame(self.buf, self.n)
        tail = self.n - end
        if tail and tail >= 12 and self.verify:
            self._check_tail_header(end)
        out = EventFile(self.path, self.n, len(offsets), truncated_bytes=tail, notes=self.notes)
        if not offsets:
            self.notes.append(f"{self.path.name}: truncated: {self.n} bytes and no complete record")
            return out
        if tail:
            self.notes.append(
                f"{self.path.name}: last record incomplete, {tail} bytes at the end ignored "
                "(still being written, or the writer stopped mid-flush)"
            )
        arr = np.frombuffer(self.buf, dtype=np.uint8)
        try:
            self._parse_records(arr, np.asarray(offsets, dtype=np.int64), out)
        finally:
            del arr
        return out

    def _check_tail_header(self, end: int) -> None:
        """A partial last record must still start with a valid header, else it is damage, not a cut."""
        header = bytes(self.buf[end : end + 8])
        if _masked_crc_py(header) != _U32.unpack_from(self.buf, end + 8)[0]:
            raise self.fail(f"corrupt event file: record header at byte {end} fails its checksum")

    def _parse_records(self, arr: np.ndarray, offsets: np.ndarray, out: EventFile) -> None:
        lengths = _gather(arr, offsets, 8, "<u8").astype(np.int64)
        starts = offsets + 12
        if self.verify:
            self._verify_headers(arr, offsets)
            small = np.flatnonzero(lengths <= _VECTOR_CRC_MAX)
            self._verify_payloads(arr, starts[small], lengths[small], small, offsets)
        fast, slow = _fast_scalar_layout(arr, starts, lengths)
        series: dict[str, list[tuple[np.ndarray, ...]]] = {}
        walls: list[float] = []
        if fast is not None:
            for tag, cols in fast.items():
                series.setdefault(tag, []).append(cols)
            all_walls = np.concatenate([c[3] for c in fast.values()])
            walls += [float(all_walls.min()), float(all_walls.max())]
        self._parse_slow(slow, starts, lengths, offsets, series, walls, out)
        for tag, chunks in series.items():
            rec, steps, values, wall = (np.concatenate(c) for c in zip(*chunks))
            if len(chunks) > 1:
                order = np.argsort(rec, kind="stable")
                steps, values, wall = steps[order], values[order], wall[order]
            out.scalars[tag] = ScalarPoints(steps.astype(np.int64), values.astype(np.float64), wall)
        if walls:
            out.first_wall_time, out.last_wall_time = min(walls), max(walls)

    def _verify_headers(self, arr: np.ndarray, offsets: np.ndarray) -> None:
        crc = _masked(_crc32c_rows(arr, offsets, np.full(offsets.size, 8, dtype=np.int64)))
        bad = np.flatnonzero(crc != _gather(arr, offsets + 8, 4, "<u4"))
        if bad.size:
            i = int(bad[0])
            raise self.fail(f"corrupt event file: record #{i} at byte {int(offsets[i])} fails its header checksum")

    def _verify_payloads(
        self, arr: np.ndarray, starts: np.ndarray, lengths: np.ndarray, index: np.ndarray, offsets: np.ndarray
    ) -> None:
        if not starts.size:
            return
        crc = _masked(_crc32c_rows(arr, starts, lengths))
        bad = np.flatnonzero(crc != _gather(arr, starts + lengths, 4, "<u4"))
        if bad.size:
            i = int(index[bad[0]])
            raise self.fail(f"corrupt event file: record #{i} at byte {int(offsets[i])} fails its data checksum")

    def _parse_slow(
        self,
        rows: np.ndarray,
        starts: np.ndarray,
        lengths: np.ndarray,
        offsets: np.ndarray,
        series: dict[str, list[tuple[np.ndarray, ...]]],
        walls: list[float],
        out: EventFile,
    ) -> None:
        """Records the fast path did not take: protobuf-decode them one by one."""
        if not rows.size:
            return
        from google.protobuf.message import DecodeError
        from tensorboard.compat.proto.event_pb2 import Event

        plugins: dict[str, str] = {}  # TF2 writes a tag's metadata only with its first value
        cols: dict[str, tuple[list[int], list[int], list[float], list[float]]] = {}
        for i in rows.tolist():
            s, length = int(starts[i]), int(lengths[i])
            payload = self.buf[s : s + length]
            try:
                event = Event.FromString(payload)
            except DecodeError:
                raise self.fail(f"record #{i} at byte {int(offsets[i])} is not a TensorBoard event") from None
            walls.append(event.wall_time)
            what = event.WhichOneof("what")
            if what == "file_version":
                out.file_version = event.file_version
            if what != "summary":
                continue
            found = False
            for v in event.summary.value:
                value = _summary_value(v, plugins)
                if value is None:
                    continue
                found = True
                c = cols.setdefault(v.tag, ([], [], [], []))
                c[0].append(i)
                c[1].append(event.step)
                c[2].append(value)
                c[3].append(event.wall_time)
            if found and self.verify and length > _VECTOR_CRC_MAX:
                if _masked_crc_py(payload) != _U32.unpack_from(self.buf, s + length)[0]:
                    raise self.fail(
                        f"corrupt event file: record #{i} at byte {int(offsets[i])} fails its data checksum"
                    )
        for tag, (rec, steps, values, wall) in cols.items():
            series.setdefault(tag, []).append(
                (
                    np.asarray(rec, dtype=np.int64),
                    np.asarray(steps, dtype=np.int64),
                    np.asarray(values, dtype=np.float64),
                    np.asarray(wall, dtype=np.float64),
                )
            )


def _summary_value(v: Any, plugins: dict[str, str]) -> float | None:
    """The scalar in a ``Summary.Value``, old style (simple_value) or new (rank-0 tensor), else None."""
    if v.HasField("metadata"):
        name = v.metadata.plugin_data.plugin_name
        if name:
            plugins[v.tag] = name
        elif v.metadata.data_class == 1:  # DATA_CLASS_SCALAR
            plugins[v.tag] = "scalars"
    kind = v.WhichOneof("value")
    if kind == "simple_value":
        return float(v.simple_value)
    if kind == "tensor" and plugins.get(v.tag) == "scalars":
        from tensorboard.util.tensor_util import make_ndarray

        try:
            arr = make_ndarray(v.tensor)
        except (TypeError, ValueError):
            return None
        if arr.size == 1 and arr.dtype.kind in "fiub":
            return float(arr.reshape(-1)[0])
    return None


# ----------------------------------------------------------------------------- framing and layout


def _frame(buf: mmap.mmap | bytes, n: int) -> tuple[list[int], int]:
    """Offsets of complete records, and where the complete part ends (the rest is a partial record)."""
    unpack = _HEADER.unpack_from
    offsets: list[int] = []
    append = offsets.append
    pos = 0
    while pos + 12 <= n:
        (length,) = unpack(buf, pos)
        end = pos + length + 16
        if end > n:
            break
        append(pos)
        pos = end
    return offsets, pos


def _gather(arr: np.ndarray, pos: np.ndarray, nbytes: int, dtype: str) -> np.ndarray:
    """Little-endian values of ``nbytes`` bytes at arbitrary (unaligned) byte positions."""
    m = np.empty((pos.size, nbytes), dtype=np.uint8)
    for j in range(nbytes):
        m[:, j] = arr[pos + j]
    return m.view(dtype).reshape(-1)


def _fast_scalar_layout(
    arr: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[dict[str, tuple[np.ndarray, ...]] | None, np.ndarray]:
    """Decode, all at once, the records laid out exactly as one old-style scalar.

    That is the layout torch's SummaryWriter.add_scalar (and Megatron, HF Trainer) writes:
    ``09 <f64 wall_time> [10 <varint step>] 2a <len> 0a <len> 0a <taglen> <tag> 15 <f32 value>``. Returns
    ``{tag: (record index, steps, values, wall_times)}`` and the indices of all other records.
    """
    everything = np.arange(starts.size)
    rows = np.flatnonzero((lengths >= 20) & (lengths <= 160))
    rows = rows[arr[starts[rows]] == 0x09]
    if not rows.size:
        return None, everything
    p, end = starts[rows], starts[rows] + lengths[rows]
    has_step = arr[p + 9] == 0x10
    step, vlen, ok = _varints(arr, p + 10, has_step)
    q = p + 9 + np.where(has_step, vlen + 1, 0)
    ok &= q + 6 <= end
    q = np.where(ok, q, p)  # keep indices in bounds for rows already rejected
    sl, vl, tl = arr[q + 1].astype(np.int64), arr[q + 3].astype(np.int64), arr[q + 5].astype(np.int64)
    ok &= (arr[q] == 0x2A) & (arr[q + 2] == 0x0A) & (arr[q + 4] == 0x0A)
    ok &= (sl < 128) & (vl == sl - 2) & (vl == tl + 7) & (q + 11 + tl == end)
    ok &= arr[np.where(ok, q + 6 + tl, p)] == 0x15
    take = np.flatnonzero(ok)
    if not take.size:
        return None, everything
    rows, p, q, tl, step = rows[take], p[take], q[take], tl[take], step[take]
    walls = _gather(arr, p + 1, 8, "<f8")
    values = _gather(arr, q + 7 + tl, 4, "<f4").astype(np.float64)
    slow = np.ones(starts.size, dtype=bool)
    slow[rows] = False
    out = {}
    for tag, members in _group_tags(arr, q + 6, tl):
        out[tag] = (rows[members], step[members], values[members], walls[members])
    return out, np.flatnonzero(slow)


def _varints(arr: np.ndarray, pos: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode a protobuf varint at each position where ``present``: (int64 value, byte length, valid)."""
    value = np.zeros(pos.size, dtype=np.uint64)
    nbytes = np.zeros(pos.size, dtype=np.int64)
    going = present.copy()
    for j in range(10):  # callers guarantee 10 readable bytes inside each record
        if not going.any():
            break
        b = arr[pos + j]
        value |= np.where(going, (b & 0x7F).astype(np.uint64) << np.uint64(7 * j), np.uint64(0))
        nbytes += going
        going &= b >= 0x80
    return value.view(np.int64), nbytes, ~going


def _group_tags(arr: np.ndarray, tag_pos: np.ndarray, tag_len: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Group rows by their tag bytes: hash with CRC32C + length, then confirm each group byte by byte."""
    key = (tag_len.astype(np.uint64) << np.uint64(32)) | _crc32c_rows(arr, tag_pos, tag_len).astype(np.uint64)
    uniq, inverse = np.unique(key, return_inverse=True)
    groups = []
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(uniq.size + 1))
    for g in range(uniq.size):
        members = order[bounds[g] : bounds[g + 1]]
        first = int(members[0])
        tl, tp = int(tag_len[first]), int(tag_pos[first])
        raw = arr[tp : tp + tl]
        same = np.ones(members.size, dtype=bool)
        pos = tag_pos[members]
        for j in range(tl):
            same &= arr[pos + j] == raw[j]
        if not same.all():  # a CRC collision between two tags: split off the rest recursively
            rest = members[~same]
            for tag, sub in _group_tags(arr, tag_pos[rest], tag_len[rest]):
                groups.append((tag, rest[sub]))
            members = members[same]
        groups.append((bytes(raw).decode("utf-8", "replace"), members))
    return groups


# ------------------------------------------------------------------------------------------- CRC32C

_TABLE: np.ndarray | None = None


def _table() -> np.ndarray:
    global _TABLE
    if _TABLE is None:
        t = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
            t.append(c)
        _TABLE = np.array(t, dtype=np.uint32)
    return _TABLE


def _crc32c_rows(arr: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CRC32C of ``arr[starts[i]:starts[i]+lengths[i]]`` for every i, one byte column at a time.

    Rows are sorted longest first so that the rows still running at column j are a prefix, and done
    in cache-sized chunks (twice as fast as whole arrays on 1M rows).
    """
    table = _table()
    order = np.argsort(-lengths, kind="stable")
    st, ln = starts[order], lengths[order]
    crc = np.full(st.size, 0xFFFFFFFF, dtype=np.uint32)
    for a in range(0, st.size, _CHUNK):
        s, cc = st[a : a + _CHUNK], crc[a : a + _CHUNK]
        active = np.searchsorted(-ln[a : a + _CHUNK], -np.arange(int(ln[a])), side="left")
        for j, k in enumerate(active.tolist()):
            c = cc[:k]
            b = arr[s[:k] + j]
            np.bitwise_xor(b, c.astype(np.uint8), out=b)  # low byte of crc ^ data byte
            c >>= 8
            c ^= table[b]
    out = np.empty_like(crc)
    out[order] = crc ^ np.uint32(0xFFFFFFFF)
    return out


def _masked(crc: np.ndarray) -> np.ndarray:
    return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)


def _masked_crc_py(data: bytes) -> int:
    """Masked CRC32C of one byte string (tails and the rare large scalar record)."""
    table = _table().tolist()
    c = 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    c ^= 0xFFFFFFFF
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
