"""The design rules of the adapter registry, checked on the package's own sources."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ckpt_tui"
KIND_CONSTANT = re.compile(r"\bKind\.[A-Z][A-Z_]+\b")


def test_no_kind_branches_outside_the_format_adapters():
    """Only core/formats/ (and the model that defines the constants) may name a particular kind."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("core/formats/") or rel == "core/model.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if KIND_CONSTANT.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_discovering_every_adapter_imports_neither_torch_nor_numpy():
    code = (
        "import sys; from ckpt_tui.core.formats.registry import adapters; "
        "kinds = [a.kind for a in adapters()]; "
        "print(len(kinds), 'torch' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout.split()
    assert out == ["5", "False", "False"], out
