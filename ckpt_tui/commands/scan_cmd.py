"""`ckpt-tui scan DIR`: every checkpoint and TensorBoard run under DIR, with kind, step and size."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.table import Table

from ckpt_tui.commands.output import console, human_bytes, print_json
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.scan import scan_all
from ckpt_tui.core.serialize import scan_to_json

NAME = "scan"
HELP = "List every checkpoint and TensorBoard run found under DIR."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="folder to search")
    p.add_argument("--max-depth", type=int, default=6, help="how many folder levels to descend (default 6)")
    p.add_argument("--json", action="store_true", help="emit JSON (schema ckpt-tui.scan/1)")


def run(args: argparse.Namespace) -> int:
    root: Path = args.dir
    if not root.is_dir():
        raise CkptError(root, "no such folder" if not root.exists() else "is a file, expected a folder")
    report = scan_all(root, max_depth=args.max_depth)
    if args.json:
        print_json(scan_to_json(report))
        return 0
    out = console()
    if not report.entries:
        out.print(f"No checkpoints or TensorBoard runs under {root}")
    else:
        table = Table(title=f"{len(report.entries)} found under {root}", title_justify="left", box=None)
        for col, justify in (("kind", "left"), ("path", "left"), ("step", "right"), ("size", "right"), ("detail", "left")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for e in report.entries:
            rel = os.path.relpath(e.path, root)
            table.add_row(e.kind.label, rel, "" if e.step is None else str(e.step), human_bytes(e.size), e.detail)
        out.print(table)
    for line in report.skipped:
        out.print(f"[yellow]skipped[/] {line}")
    return 0
