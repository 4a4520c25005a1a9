"""Shared test helpers: run the real CLI as a user would, in a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def ckpt_tui(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 300, **kw: Any) -> Result:
    """Run `python -m ckpt_tui ARGS` and capture everything."""
    full_env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "ckpt_tui", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        **kw,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """Exit 2, one line on stderr naming the problem, no traceback, nothing on stdout."""
    assert result.code == 2, result
    assert "Traceback" not in result.err, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("ckpt-tui: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def tree_hash(root: Path) -> dict[str, str]:
    """Every file under root -> sha256 of its bytes (a source must come out of a conversion unchanged)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
