"""`ckpt-tui verify A B`: are two checkpoints (any kinds) the same tensors? Exit 0 only if they match.

JSON (``--json``, schema ``ckpt-tui.verify/1``)::

    {"schema": "ckpt-tui.verify/1", "a": {"path", "kind"}, "b": {"path", "kind"}, "atol": float,
     "compare_dtype": str | null, "ok": bool, "tensors_compared": int, "bitwise_equal": int,
     "max_abs_diff": float, "worst": str | null,
     "problems": [{"name", "status", "shape_a", "shape_b", "dtype_a", "dtype_b", "max_abs_diff"}],
     "tensors": [... same fields for every tensor ...]}
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from ckpt_tui.commands.output import console, print_json, format_shape
from ckpt_tui.commands.progress import progress_control
from ckpt_tui.core.verify import TensorDiff, VerifyReport, verify

NAME = "verify"
HELP = "Compare two checkpoints of any kinds tensor by tensor; exit 0 only when they match within --atol."
EXIT_DIFFER = 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", type=Path, help="first checkpoint")
    p.add_argument("b", type=Path, help="second checkpoint")
    add_tolerance_arguments(p)
    p.add_argument("--json", action="store_true", help="emit JSON (schema ckpt-tui.verify/1)")


def add_tolerance_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--atol", type=float, default=0.0, help="largest allowed |a - b| (default 0: exact)")
    p.add_argument("--states", action="store_true", help="also compare Adam moments where both sides have them")


def run(args: argparse.Namespace) -> int:
    with progress_control("verify", quiet=args.json) as control:
        report = verify(args.a, args.b, atol=args.atol, states=args.states, control=control)
    if args.json:
        print_json(report_to_json(report))
    else:
        render(report)
    return 0 if report.ok else EXIT_DIFFER


def _diff_json(d: TensorDiff) -> dict[str, Any]:
    return {
        "name": d.name,
        "status": d.status,
        "shape_a": None if d.shape_a is None else list(d.shape_a),
        "shape_b": None if d.shape_b is None else list(d.shape_b),
        "dtype_a": d.dtype_a,
        "dtype_b": d.dtype_b,
        "max_abs_diff": d.max_abs_diff,
    }


def report_to_json(r: VerifyReport) -> dict[str, Any]:
    worst = r.worst
    return {
        "schema": "ckpt-tui.verify/1",
        "a": {"path": str(r.a.path.resolve()), "kind": r.a.kind.value},
        "b": {"path": str(r.b.path.resolve()), "kind": r.b.kind.value},
        "atol": r.atol,
        "compare_dtype": r.compare_dtype,
        "ok": r.ok,
        "tensors_compared": len(r.compared),
        "bitwise_equal": r.bitwise_equal_count,
        "max_abs_diff": r.max_abs_diff,
        "worst": worst.name if worst and worst.max_abs_diff else None,
        "problems": [_diff_json(d) for d in r.problems],
        "tensors": [_diff_json(d) for d in r.diffs],
    }


def render(r: VerifyReport, limit: int = 20) -> None:
    out = console()
    out.print(f"A  {r.a.kind.label}  {r.a.path}")
    out.print(f"B  {r.b.kind.label}  {r.b.path}")
    if r.problems:
        table = Table(box=None, padding=(0, 2), title=f"{len(r.problems)} tensor(s) differ", title_justify="left")
        for col in ("name", "status", "shape A", "shape B", "max |diff|"):
            table.add_column(col, justify="right" if col == "max |diff|" else "left", no_wrap=True)
        for d in r.problems[:limit]:
            shape_a = format_shape(d.shape_a) if d.shape_a is not None else "-"
            shape_b = format_shape(d.shape_b) if d.shape_b is not None else "-"
            diff = "" if d.max_abs_diff is None else f"{d.max_abs_diff:.3g}"
            table.add_row(d.name, d.status, shape_a, shape_b, diff)
        out.print(table)
        if len(r.problems) > limit:
            out.print(f"... and {len(r.problems) - limit} more (--json lists all)")
    worst = r.worst
    where = f" ({worst.name})" if worst and worst.max_abs_diff else ""
    cast = f", compared as {r.compare_dtype}" if r.compare_dtype else ""
    out.print(
        f"{len(r.compared)} tensors compared{cast}: {r.bitwise_equal_count} bitwise equal, "
        f"max |diff| {r.max_abs_diff:.3g}{where}, atol {r.atol:g}"
    )
    out.print("[bold green]MATCH[/]" if r.ok else "[bold red]DIFFER[/]")
