"""Hugging Face safetensors: single file, a folder, or a sharded folder with its index.

Only the JSON header of each file is read (8-byte little-endian length + JSON); no torch import. The
header is validated against the file so a truncated download or a corrupted shard is caught at listing time.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import hf_common
from ckpt_tui.core.model import Checkpoint, FileEntry, Kind, TensorEntry

MAX_HEADER_BYTES = 100 * 1024 * 1024
SUFFIX = ".safetensors"


def detect(path: Path) -> bool:
    if path.is_file():
        return path.name.endswith(SUFFIX)
    return path.is_dir() and any(p.name.endswith(SUFFIX) for p in path.iterdir() if p.is_file())


def read_header(path: Path) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensors, __metadata__, data start offset) of one .safetensors file, validated."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
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
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CkptError(path, "header is not valid JSON (not a safetensors file, or corrupted)") from None
    if not isinstance(header, dict):
        raise CkptError(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_size = size - 8 - hlen
    _validate(path, header, data_size)
    return header, metadata, 8 + hlen


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


def entries(path: Path, root: Path) -> list[TensorEntry]:
    header, _meta, _start = read_header(path)
    rel = str(path.relative_to(root)) if path != root else path.name
    out = []
    for name, info in header.items():
        canonical = dt.SAFETENSORS_DTYPES[info["dtype"]][0]
        begin, end = info["data_offsets"]
        out.append(TensorEntry(name=name, shape=tuple(info["shape"]), dtype=canonical, file=rel, nbytes=end - begin))
    return out


def read(path: Path) -> Checkpoint:
    if path.is_file():
        ckpt = Checkpoint(kind=Kind.HF_SAFETENSORS, path=path)
        ckpt.tensors = entries(path, path)
        ckpt.files = [FileEntry(path.name, path.stat().st_size, "weights")]
        ckpt.metadata["safetensors_metadata"] = read_header(path)[1]
        _tied_from_metadata(ckpt, path)
        return hf_common.finish(ckpt)
    ckpt = Checkpoint(kind=Kind.HF_SAFETENSORS, path=path)
    shards = sorted(p for p in path.glob(f"*{SUFFIX}") if p.is_file())
    found = hf_common.read_weight_files(ckpt, shards, SUFFIX, entries, cheap=True)
    _tied_from_metadata(ckpt, path / next(iter(found)))
    return hf_common.finish(ckpt)


def _tied_from_metadata(ckpt: Checkpoint, first_file: Path) -> None:
    """ckpt-tui records tied aliases (stored once, as transformers does) in the header metadata."""
    raw = read_header(first_file)[1].get("tied_weights")
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
