"""Building large metadata (100k+ tensors) fast, and from a worker thread without stalling the UI thread.

Two things make a big listing slow and, in the app, freeze the screen while a worker builds it:

- the cyclic garbage collector: every few hundred new containers it runs, and its full (oldest
  generation) passes walk every live object, so building 100k entries triggers passes over a heap that
  keeps growing (most of the time of a plain ``json.loads`` of a 100k-tensor header); the objects built
  here hold no reference cycles, so pausing it while building loses nothing;
- ``json.loads`` of a multi-megabyte header is one C call that holds the GIL from start to end: the UI
  thread cannot run until it returns. An ``object_hook`` written in Python lets the interpreter hand the
  GIL over between objects, as it does in any Python loop.
"""

from __future__ import annotations

import gc
import json
import threading
from typing import Any

YIELDING_JSON_BYTES = 1 << 20  # headers below this parse in a few ms: no need to hand the GIL over
PROMOTE_AFTER = 10_000  # new container objects; below this the next young collection is cheap anyway


class _PausedGC:
    """Pause the cyclic GC while a block builds many acyclic objects. Nests, and is safe across threads:
    the collector is re-enabled (if it was on) when the last block exits.

    On exit the objects made meanwhile are moved to the oldest generation untraversed (``gc.freeze()``
    then ``gc.unfreeze()``: two list splices). Otherwise the first collections after re-enabling would
    each walk all of them at once (measured: 250-650 ms pauses of every thread, the UI's included, just
    after a 100k-tensor listing). They stay collectable: a later full collection sees them as usual.
    Skipped for small batches, and when the application has frozen objects itself (its frozen set is
    left as it is).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._was_enabled:
                if gc.get_count()[0] > PROMOTE_AFTER and gc.get_freeze_count() == 0:
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()


_PAUSED = _PausedGC()


def paused_gc() -> _PausedGC:
    """``with paused_gc():`` runs the block with the cyclic GC off (see :class:`_PausedGC`)."""
    return _PAUSED


def _same(obj: dict) -> dict:
    return obj


def loads(raw: bytes | str) -> Any:
    """json.loads; a large document is parsed so that other threads get the GIL while it runs."""
    if len(raw) < YIELDING_JSON_BYTES:
        return json.loads(raw)
    return json.loads(raw, object_hook=_same)
