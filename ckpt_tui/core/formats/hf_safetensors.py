"""Hugging Face safetensors: single file, a folder, or a sharded folder with its index.

Only the JSON header of each file is read (8-byte little-endian length + JSON); no torch import. The
header is validated against the file so a truncated download or a corrupted shard is caught at listing time.

Listing is on the hot path (a 100k-tensor header is 12 MB of JSON, and the app lists from a worker thread
while it animates), so each header is read and parsed once, checked and turned into entries in one pass,
with the GC paused and the GIL handed over while it parses (see :mod:`ckpt_tui.core.bulk`).
"""

from __future__ import annotations

import json
import os
import struct
import threading
from dataclasses import MISSING, fields
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from ckpt_tui.core import bulk
from ckpt_tui.core import dtypes as dt
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import hf_common
from ckpt_tui.core.formats.registry import Adapter, ConversionDefaults
from ckpt_tui.core.model import Checkpoint, FileEntry, Kind, TensorEntry
from ckpt_tui.core.sources import TensorSource, hf_listing

if TYPE_CHECKING:
    import torch

MAX_HEADER_BYTES = 100 * 1024 * 1024
SUFFIX = ".safetensors"


def detect(path: Path) -> bool:
    if path.is_file():
        return path.name.endswith(SUFFIX)
    if not path.is_dir():
        return False
    with os.scandir(path) as it:
        return any(e.name.endswith(SUFFIX) and e.is_file() for e in it)


def _load(path: Path) -> tuple[dict[str, dict], dict[str, str], int, int]:
    """(tensors, __metadata__, data start offset, file size) of one .safetensors file, not yet validated."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise CkptError(path, "empty file (0 bytes)")
            if size < 8:
                raise CkptError(path, f"truncated: {size} bytes, shorter than the 8-byte header length")
            (hlen,) = struct.unpack("<Q", fh.read(8))
            if hlen > MAX_HEADER_BYTES:
                raise CkptError(path, f"header length {hlen:,} bytes exceeds the 100 MB limit (corrupted file?)")
            if 8 + hlen > size:
                raise CkptError(path, f"truncated: header needs {hlen:,} bytes but the file has {size - 8:,} after the length")
            raw = fh.read(hlen)
    except FileNotFoundError:
        raise CkptError(path, "file not found") from None
    except IsADirectoryError:
        raise CkptError(path, "is a folder, expected a .safetensors file") from None
    except PermissionError:
        raise CkptError(path, "cannot read: permission denied") from None
    try:
        header = bulk.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CkptError(path, "header is not valid JSON (not a safetensors file, or corrupted)") from None
    if not isinstance(header, dict):
        raise CkptError(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + hlen, size


def read_header(path: Path) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensors, __metadata__, data start offset) of one .safetensors file, validated."""
    with bulk.paused_gc():
        header, metadata, start, size = _load(path)
        _checked(path, header, size - start, None)
    return header, metadata, start


def read_file(path: Path, rel: str) -> tuple[list[TensorEntry], dict[str, str], int]:
    """(entries, __metadata__, file size) of one .safetensors file, validated; entries name their file rel."""
    with bulk.paused_gc():
        header, metadata, start, size = _load(path)
        return _checked(path, header, size - start, rel), metadata, size


def _validate(path: Path, header: dict, data_size: int) -> None:
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise CkptError(path, f"tensor '{name}': header entry is not an object")
        code, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if code not in dt.SAFETENSORS_DTYPES:
            raise CkptError(path, f"tensor '{name}': unknown dtype {code!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise CkptError(path, f"tensor '{name}': bad shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise CkptError(path, f"tensor '{name}': bad data_offsets {offsets!r}")
        begin, end = offsets
        if end > data_size:
            raise CkptError(
                path, f"truncated: tensor '{name}' ends at byte {end:,} of the data but the file holds {data_size:,}"
            )
        numel = 1
        for d in shape:
            numel *= d
        expected = dt.nbytes(dt.SAFETENSORS_DTYPES[code][0], numel)
        if expected is not None and end - begin != expected:
            raise CkptError(
                path, f"tensor '{name}': {end - begin:,} bytes stored but {code}{shape} needs {expected:,}"
            )
        spans.append((begin, end, name))
    spans.sort()
    for (_b1, e1, n1), (b2, _e2, n2) in zip(spans, spans[1:]):
        if b2 < e1:
            raise CkptError(path, f"tensors '{n1}' and '{n2}' overlap in the data section")


def _checked(path: Path, header: dict, data_size: int, rel: str | None) -> list[TensorEntry]:
    """Validate the header against the data size in one pass; with rel, also build its entries.

    The loop is the fast path for well-formed headers; at the first thing it does not expect, the full
    checks of :func:`_validate` run and raise the precise error (or accept an odd but valid header).
    """
    codes = dt.SAFETENSORS_DTYPES
    out: list[TensorEntry] = []
    add = out.append
    spans: list[tuple[int, int]] = []
    span = spans.append
    build = rel is not None
    fast, new, defaults = _entry is _entry_fast, object.__new__, _DEFAULTS
    ok = True
    for name, info in header.items():
        try:
            canonical, bits = codes[info["dtype"]]
            shape, offsets = info["shape"], info["data_offsets"]
        except (KeyError, TypeError):
            ok = False
            break
        if type(shape) is not list or type(offsets) is not list or len(offsets) != 2:
            ok = False
            break
        begin, end = offsets
        if type(begin) is not int or type(end) is not int or begin < 0 or end < begin or end > data_size:
            ok = False
            break
        numel = 1
        for d in shape:
            if type(d) is not int or d < 0:
                break
            numel *= d
        else:
            if (numel * bits + 7) >> 3 == end - begin:
                span((begin, end))
                if build:
                    if fast:  # _entry_fast, inlined: this loop runs once per tensor
                        e = new(TensorEntry)
                        attrs = e.__dict__
                        attrs.update(defaults)
                        attrs["name"], attrs["shape"], attrs["dtype"] = name, tuple(shape), canonical
                        attrs["file"], attrs["nbytes"] = rel, end - begin
                        add(e)
                    else:
                        add(_entry(name, tuple(shape), canonical, rel, end - begin))
                continue
        ok = False
        break
    if ok and len(spans) > 1:
        spans.sort()
        prev_end = spans[0][1]
        for begin, end in islice(spans, 1, None):
            if begin < prev_end:
                ok = False
                break
            prev_end = end
    if ok:
        return out
    _validate(path, header, data_size)  # raises the precise error for the first bad entry
    return _entries_plain(header, rel) if build else []


def _entries_plain(header: dict, rel: str) -> list[TensorEntry]:
    out = []
    for name, info in header.items():
        canonical = dt.SAFETENSORS_DTYPES[info["dtype"]][0]
        begin, end = info["data_offsets"]
        out.append(TensorEntry(name=name, shape=tuple(info["shape"]), dtype=canonical, file=rel, nbytes=end - begin))
    return out


# A frozen dataclass's __init__ sets each of its 9 fields through object.__setattr__ (about 0.9 us per
# entry); filling the instance dict directly builds the same object 3x faster. Checked once at import
# against the real constructor; any difference (a new field without default, __slots__) falls back to it.
_DEFAULTS = {f.name: f.default for f in fields(TensorEntry) if f.default is not MISSING}
_REQUIRED = tuple(f.name for f in fields(TensorEntry) if f.default is MISSING and f.default_factory is MISSING)


def _entry_fast(name: str, shape: tuple[int, ...], dtype: str, file: str, nbytes: int) -> TensorEntry:
    e = object.__new__(TensorEntry)
    attrs = e.__dict__
    attrs.update(_DEFAULTS)
    attrs["name"], attrs["shape"], attrs["dtype"], attrs["file"], attrs["nbytes"] = name, shape, dtype, file, nbytes
    return e


def _entry_init(name: str, shape: tuple[int, ...], dtype: str, file: str, nbytes: int) -> TensorEntry:
    return TensorEntry(name=name, shape=shape, dtype=dtype, file=file, nbytes=nbytes)


def _pick_entry():  # noqa: ANN202
    try:
        fast, slow = _entry_fast("a.b", (2, 3), "float32", "f", 24), _entry_init("a.b", (2, 3), "float32", "f", 24)
        same = _REQUIRED == ("name", "shape", "dtype", "file") and fast == slow and vars(fast) == vars(slow)
    except (AttributeError, TypeError):
        same = False
    return _entry_fast if same else _entry_init


_entry = _pick_entry()


def entries(path: Path, root: Path) -> list[TensorEntry]:
    rel = str(path.relative_to(root)) if path != root else path.name
    return read_file(path, rel)[0]


def read(path: Path) -> Checkpoint:
    if path.is_file():
        ckpt = Checkpoint(kind=Kind.HF_SAFETENSORS, path=path)
        ckpt.tensors, metadata, size = read_file(path, path.name)
        ckpt.files = [FileEntry(path.name, size, "weights")]
        ckpt.metadata["safetensors_metadata"] = metadata
        _tied_from_metadata(ckpt, path, metadata)
        return hf_common.finish(ckpt)
    ckpt = Checkpoint(kind=Kind.HF_SAFETENSORS, path=path)
    with os.scandir(path) as it:
        shards = [path / name for name in sorted(e.name for e in it if e.name.endswith(SUFFIX) and e.is_file())]
    metadata_of: dict[Path, dict[str, str]] = {}
    sizes: dict[Path, int] = {}
    prefix = os.path.join(path, "")

    def shard_entries(shard: Path, root: Path) -> list[TensorEntry]:
        text = os.fspath(shard)
        rel = text[len(prefix) :] if root == path and text.startswith(prefix) else str(shard.relative_to(root))
        tensors, metadata_of[shard], sizes[shard] = read_file(shard, rel)
        return tensors

    with bulk.paused_gc():
        found = hf_common.read_weight_files(ckpt, shards, SUFFIX, shard_entries, cheap=True, sizes=sizes)
    first = path / next(iter(found))
    _tied_from_metadata(ckpt, first, metadata_of[first] if first in metadata_of else read_header(first)[1])
    return hf_common.finish(ckpt)


def _tied_from_metadata(ckpt: Checkpoint, first_file: Path, metadata: dict[str, str]) -> None:
    """ckpt-tui records tied aliases (stored once, as transformers does) in the header metadata."""
    raw = metadata.get("tied_weights")
    if not raw:
        return
    try:
        tied = json.loads(raw)
    except json.JSONDecodeError:
        ckpt.warnings.append(f"{first_file.name}: unreadable 'tied_weights' metadata ignored")
        return
    by_name = {t.name: t for t in ckpt.tensors}
    for alias, owner in tied.items():
        o = by_name.get(owner)
        if o is not None and alias not in by_name:
            ckpt.shared_params[alias] = owner
            ckpt.tensors.append(TensorEntry(alias, o.shape, o.dtype, o.file, o.nbytes, tied_to=owner))


# ----------------------------------------------------------------------------------------- values
class SafetensorsSource(TensorSource):
    """Reads each tensor's bytes at its header offsets into a fresh buffer (readinto, no mmap).

    Memory-mapping a shard would keep every page read so far in our RSS until the file is closed;
    positioned reads keep memory at one tensor, however many shards a conversion walks through.
    """

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__(checkpoint)
        hf_listing(self, checkpoint)
        self._file = {t.name: t.file for t in checkpoint.tensors}
        self._headers: dict[str, tuple[dict, int]] = {}
        self._lock = threading.Lock()

    def _root(self) -> Path:
        p = self.checkpoint.path
        return p.parent if p.is_file() else p

    def _read(self, name: str) -> torch.Tensor:
        import torch

        name = self.aliases.get(name, name)
        rel = self._file.get(name)
        if rel is None:
            raise CkptError(self.checkpoint.path, f"no tensor named '{name}'")
        path = self._root() / rel
        with self._lock:
            if rel not in self._headers:
                header, _meta, start = read_header(path)
                self._headers[rel] = (header, start)
            header, start = self._headers[rel]
        info = header.get(name)
        if info is None:
            raise CkptError(path, f"tensor '{name}' is not in this file")
        dtype = getattr(torch, dt.SAFETENSORS_DTYPES[info["dtype"]][0], None)
        begin, end = info["data_offsets"]
        if dtype is None:  # a dtype this torch lacks (sub-byte floats): let safetensors decide
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                return handle.get_tensor(name)
        buf = torch.empty(end - begin, dtype=torch.uint8)
        try:
            with open(path, "rb") as fh:
                fh.seek(start + begin)
                got = fh.readinto(memoryview(buf.numpy()))
        except OSError as exc:
            raise CkptError(path, f"cannot read: {exc.strerror}") from None
        if got != end - begin:
            raise CkptError(path, f"truncated: tensor '{name}' needs {end - begin:,} bytes, read {got:,}")
        return buf.view(dtype).reshape(info["shape"])

    def close(self) -> None:
        self._headers.clear()


ADAPTER = Adapter(
    kind=Kind.HF_SAFETENSORS,
    label="HF safetensors",
    short="safetensors",
    color="green",
    detect=detect,
    priority=30,
    read=read,
    open_source=SafetensorsSource,
    scan_entry=hf_common.scan_entry_of(Kind.HF_SAFETENSORS),
    defaults=ConversionDefaults(target="universal", config_dirs=hf_common.config_dirs),
)
