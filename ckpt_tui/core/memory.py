"""Keep memory bounded while streaming through memory-mapped checkpoint files.

torch.load(mmap=True) maps a whole file privately; every page we touch stays in our RSS until the file is
unmapped. After copying what we need out of a mapped tensor we tell the kernel to drop those clean pages
(MADV_DONTNEED: they are re-read from the file if touched again), so peak RSS follows the tensor being
converted, not the size of the files read so far.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys
from typing import Any

_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4
_libc: Any = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    except OSError:  # pragma: no cover - no libc: keep working, just with more RSS
        _libc = None


def release_mapped(tensor: Any) -> None:
    """Drop the pages behind a tensor that lives in a private file mapping (torch.load(mmap=True)).

    Only call it for tensors from a mapped load (see safe_pickle.load_mapped): on anonymous memory
    MADV_DONTNEED would zero the data.
    """
    if _libc is None or tensor is None or not tensor.numel():
        return
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    lo = start - start % _PAGE
    hi = end + (-end) % _PAGE
    _libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), _MADV_DONTNEED)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
