"""Write safetensors files tensor by tensor, sharded by size, as Hugging Face lays them out.

The plan (names, shapes, dtypes) is known before any data is read, so every shard's header is written
first and each tensor's bytes are appended as they arrive: memory holds one tensor, never a shard.
Single shard: ``model.safetensors``; more: ``model-0000i-of-0000N.safetensors`` +
``model.safetensors.index.json`` (``metadata.total_size`` + ``weight_map``), as transformers writes.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ckpt_tui.core import dtypes as dt
from ckpt_tui.core.errors import CkptError, OptionError

if TYPE_CHECKING:
    import torch

INDEX_NAME = "model.safetensors.index.json"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(I)?)?B?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """'5GB' -> 5*10**9, '500MiB' -> 500*2**20, '1000' -> 1000, as transformers reads max_shard_size."""
    match = _SIZE.match(str(text))
    if not match:
        raise OptionError("max_shard_size", f"cannot read size {text!r} (examples: 5GB, 500MB, 2GiB)")
    number, prefix, binary = match.groups()
    power = "KMGT".index(prefix.upper()) + 1 if prefix else 0
    factor = 2 ** (10 * power) if binary else 10 ** (3 * power)
    return int(float(number) * factor)


@dataclass(frozen=True)
class Planned:
    name: str
    shape: tuple[int, ...]
    dtype: str  # canonical

    @property
    def nbytes(self) -> int:
        n = dt.nbytes(self.dtype, math.prod(self.shape))
        if n is None:
            raise CkptError(None, f"cannot write '{self.name}': dtype {self.dtype} has no safetensors code")
        return n


def plan_shards(tensors: list[Planned], max_shard_bytes: int | None) -> list[list[Planned]]:
    """Greedy in order, like transformers: start a new shard when the next tensor would overflow."""
    shards: list[list[Planned]] = [[]]
    size = 0
    for t in tensors:
        if max_shard_bytes and shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def shard_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def _header(shard: list[Planned], metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for t in shard:
        code = dt.TO_SAFETENSORS.get(t.dtype)
        if code is None:
            raise CkptError(None, f"cannot write '{t.name}': dtype {t.dtype} has no safetensors code")
        header[t.name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as the safetensors library does
    return struct.pack("<Q", len(raw)) + raw


class ShardedWriter:
    """Append tensors in plan order; call close() to finish files and write the index."""

    def __init__(self, folder: Path, tensors: list[Planned], max_shard_bytes: int | None, metadata: dict[str, str]):
        self.folder = folder
        self.shards = plan_shards(tensors, max_shard_bytes)
        self.names = shard_names(len(self.shards))
        self.metadata = {"format": "pt", **metadata}
        self._order = [(i, t) for i, shard in enumerate(self.shards) for t in shard]
        self._next = 0
        self._fh: IO[bytes] | None = None
        self._open_shard = -1

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for _, t in self._order)

    def write(self, name: str, tensor: torch.Tensor) -> int:
        """Write the next planned tensor; returns bytes written."""
        if self._next >= len(self._order):
            raise CkptError(self.folder, f"unexpected extra tensor '{name}'")
        shard, planned = self._order[self._next]
        if planned.name != name or tuple(tensor.shape) != planned.shape or dt.canonical(tensor.dtype) != planned.dtype:
            raise CkptError(
                self.folder,
                f"tensor '{name}' {list(tensor.shape)} {dt.canonical(tensor.dtype)} does not match the plan "
                f"('{planned.name}' {list(planned.shape)} {planned.dtype})",
            )
        if shard != self._open_shard:
            self._finish_file()
            self._fh = open(self.folder / self.names[shard], "wb")
            self._fh.write(_header(self.shards[shard], self.metadata))
            self._open_shard = shard
        assert self._fh is not None
        data = tensor.contiguous().reshape(-1)
        if data.numel():
            self._fh.write(memoryview(data.view(torch_uint8()).numpy()))
        self._next += 1
        return planned.nbytes

    def _finish_file(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def close(self) -> None:
        if self._next != len(self._order):
            missing = self._order[self._next][1].name
            raise CkptError(self.folder, f"conversion stopped before '{missing}' was written")
        if not self._order:  # an empty model still gets a valid file
            (self.folder / self.names[0]).write_bytes(_header([], self.metadata))
        self._finish_file()
        if len(self.shards) > 1:
            index = {
                "metadata": {"total_size": self.total_bytes},
                "weight_map": {t.name: self.names[i] for i, t in self._order},
            }
            (self.folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")

    def abort(self) -> None:
        self._finish_file()


def torch_uint8():  # noqa: ANN201 - torch is imported lazily
    import torch

    return torch.uint8
