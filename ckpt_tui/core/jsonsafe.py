"""The one JSON writer of every `--json` document and every JSON file ckpt-tui writes.

JSON has no NaN or infinity, and Python's json module writes them anyway (``NaN``, ``Infinity``), which
strict parsers (jq, JavaScript's JSON.parse, Go) refuse. A non-finite float is written as the string
``"nan"``, ``"inf"`` or ``"-inf"`` instead: valid JSON that still says what the value was (a verify of
NaN against a number has an infinite difference, and a reader should see that, not a null).
"""

from __future__ import annotations

import json
import math
from typing import IO, Any

def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps(obj: Any, *, indent: int | None = 2) -> str:
    """obj as strict JSON (never NaN/Infinity)."""
    return json.dumps(_finite(obj), indent=indent, allow_nan=False)


def dump(obj: Any, fh: IO[str], *, indent: int | None = 2) -> None:
    fh.write(dumps(obj, indent=indent))
    fh.write("\n")
