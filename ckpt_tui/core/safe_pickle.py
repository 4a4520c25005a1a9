"""The one place that unpickles. Every ``.pt`` / ``.bin`` goes through :func:`load`.

DeepSpeed checkpoints pickle a few non-tensor classes (loss scalers, the ZeRO stage enum, fragment
addresses, ...). ``torch.load(weights_only=True)`` refuses them and ``weights_only=False`` would run any
code a file asks for. We keep torch's weights-only unpickler and allowlist those names, but map each to an
*inert stand-in* defined here: the real DeepSpeed class is never imported or called, so a checkpoint can
name it and get back a plain record of its fields. Anything else a pickle asks for is refused with
:class:`UnsafePickleError` naming the class.
"""

from __future__ import annotations

import re
import threading
import zipfile
from pathlib import Path
from typing import Any

from ckpt_tui.core.errors import CkptError, UnsafePickleError


class PickledRecord:
    """Inert stand-in for an allowlisted class: keeps the fields the pickle gave it, runs nothing."""

    _full_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["state"] = state

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if k != "args")
        return f"<{self._full_name} {fields}>"


class PickledIntEnum(int):
    """Inert stand-in for an int Enum (ZeRO stage): pickled as ``Cls(value)``, behaves as the int."""

    _full_name = "?"


def _stand_in(full_name: str, base: type) -> type:
    module, _, name = full_name.rpartition(".")
    cls = type(name, (base,), {"__module__": module, "__qualname__": name, "_full_name": full_name})
    return cls


_STAND_INS: dict[str, type] | None = None


def stand_ins() -> dict[str, type]:
    """Class name -> inert stand-in, for every non-tensor class a registered kind's pickles need.

    Each format adapter declares its own (``Adapter.pickle_records`` / ``pickle_int_enums``: DeepSpeed's
    loss scalers, ZeRO stage enum, fragment addresses, Megatron's argparse.Namespace); the allowlist is
    their union, built once.
    """
    global _STAND_INS
    if _STAND_INS is None:
        from ckpt_tui.core.formats.registry import adapters

        found: dict[str, type] = {}
        for adapter in adapters():
            found.update({n: _stand_in(n, PickledRecord) for n in adapter.pickle_records if n not in found})
            found.update({n: _stand_in(n, PickledIntEnum) for n in adapter.pickle_int_enums if n not in found})
        _STAND_INS = found
    return _STAND_INS


# torch keeps the allowlist in a process-wide set; loads take this lock so threads don't race on it.
_LOCK = threading.RLock()
_REFUSED = re.compile(
    r"GLOBAL (\S+) was not an allowed global|unsupported GLOBAL (\S+) whose module"
    r"|unrecognized function (\S+)|but got (<[^>]+>)"
)


def load(path: str | Path, *, mmap: bool = True) -> Any:
    """Load a torch-serialised file safely; tensors stay memory-mapped where the format allows.

    Raises CkptError (one line, naming the file) for every problem: missing, empty, truncated, corrupt,
    or asking for a class outside the allowlist.
    """
    return load_mapped(path, mmap=mmap)[0]


def load_mapped(path: str | Path, *, mmap: bool = True) -> tuple[Any, bool]:
    """Like :func:`load`, also saying whether the tensors are a private file mapping (see memory.py)."""
    import torch  # heavy: only when a pickle is actually read

    path = Path(path)
    _check_readable(path)
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and not _starts_like_torch_file(path):
        raise CkptError(path, "not a torch checkpoint file (neither a zip archive nor a pickle)")
    use_mmap = mmap and is_zip  # legacy (pre-1.6) files cannot be mapped
    try:
        with _LOCK, torch.serialization.safe_globals(list(stand_ins().values())):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap), use_mmap
    except Exception as exc:  # torch raises many types here; all mean "this file is bad"
        raise _explain(path, exc) from None


def _starts_like_torch_file(path: Path) -> bool:
    """Torch files are a zip (maybe truncated: still 'PK' first) or, before 1.6, a pickle (PROTO 0x80)."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def _check_readable(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CkptError(path, "file not found") from None
    except OSError as exc:
        raise CkptError(path, f"cannot read: {exc.strerror}") from None
    if path.is_dir():
        raise CkptError(path, "is a folder, expected a file")
    if size == 0:
        raise CkptError(path, "empty file (0 bytes)")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise CkptError(path, f"cannot read: {exc.strerror}") from None


def _explain(path: Path, exc: BaseException) -> CkptError:
    text = str(exc)
    match = _REFUSED.search(text)
    if match:
        name = next(g for g in match.groups() if g)
        return UnsafePickleError(
            path,
            f"refused to unpickle '{name}': not on ckpt-tui's allowlist of safe classes "
            "(loading it could run code from the file)",
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    lowered = text.lower()
    if isinstance(exc, KeyError):
        # pickle's "invalid load key" surfaces from torch as KeyError(<first byte>)
        return CkptError(path, "not a torch checkpoint file (neither a zip archive nor a pickle)")
    if any(k in lowered for k in ("central directory", "unexpected end", "truncated", "eof", "ran out of input")):
        return CkptError(path, f"truncated or corrupted torch file ({first})")
    if "invalid load key" in lowered or "not a zip file" in lowered or "magic number" in lowered:
        return CkptError(path, f"not a torch checkpoint file ({first})")
    return CkptError(path, f"cannot load torch file: {first}")
