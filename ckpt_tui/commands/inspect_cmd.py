"""`ckpt-tui inspect PATH`: what a checkpoint (or TensorBoard run) holds, as text or JSON."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ckpt_tui.commands.output import console, human_bytes, human_count, print_json, format_shape
from ckpt_tui.core import dtypes as dt
from ckpt_tui.core.formats.registry import detect
from ckpt_tui.core.inspect import open_checkpoint
from ckpt_tui.core.model import Checkpoint, Piece, RunLog, TensorEntry
from ckpt_tui.core.serialize import checkpoint_to_json, run_to_json

NAME = "inspect"
HELP = "Show what a checkpoint holds: kind, step, world sizes, dtypes, and the parameter tree."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="checkpoint folder or file (HF, DeepSpeed ZeRO/universal) or TensorBoard run")
    p.add_argument("--json", action="store_true", help="emit JSON (schema ckpt-tui.checkpoint/2)")
    p.add_argument("--flat", action="store_true", help="one row per tensor instead of the grouped tree")
    p.add_argument("--no-tensors", action="store_true", help="summary only")
    p.add_argument(
        "--pieces", action="store_true",
        help="where each tensor's pieces live (rank, file, slice), as its values are assembled (opens the value source)",
    )


def run(args: argparse.Namespace) -> int:
    adapter = detect(args.path)
    if adapter is not None and adapter.is_run:  # a run (TensorBoard): its scalar tags, not tensors
        from ckpt_tui.core.formats.tensorboard import read_run_log

        run_log = read_run_log(args.path)
        if args.json:
            print_json(run_to_json(run_log))
        else:
            render_run(run_log)
        return 0
    ckpt = open_checkpoint(args.path)
    if not args.pieces:
        if args.json:
            print_json(checkpoint_to_json(ckpt))
        else:
            render_checkpoint(ckpt, flat=args.flat, tensors=not args.no_tensors)
        return 0
    from ckpt_tui.core.sources import open_source

    with open_source(ckpt) as source:
        if args.json:
            print_json(checkpoint_to_json(ckpt, pieces=source.pieces))
        else:
            render_checkpoint(ckpt, flat=args.flat, tensors=False)
            console().print(_pieces_table(ckpt, source.pieces))
    return 0


def _pieces_table(ckpt: Checkpoint, pieces: Callable[[str], tuple[Piece, ...]]) -> Table:
    """One row per piece: which tensor, which rank's file, which part of the tensor, where in the file."""
    table = Table(box=None, padding=(0, 2), title="pieces", title_justify="left")
    for col in ("tensor", "rank", "file", "part", "at"):
        table.add_column(col, justify="right" if col in ("rank", "at") else "left", no_wrap=col != "file")
    for t in ckpt.tensors:
        if t.tied_to:
            continue
        name = escape(t.name) + (f"  ({escape(t.split)})" if t.split else "")
        for p in pieces(t.name):
            table.add_row(name, _rank(p), escape(p.file), _part(t, p), f"{p.at:,}")
            name = ""
    return table


def _rank(p: Piece) -> str:
    """'1' (a DP rank), 'tp 1', 'pp 0 tp 1 dp 0': the ranks that hold a piece."""
    if p.tp is None and p.pp is None:
        return "" if p.rank is None else str(p.rank)
    parts = [f"{axis} {n}" for axis, n in (("pp", p.pp), ("tp", p.tp), ("dp", p.rank)) if n is not None]
    return " ".join(parts)


def _part(t: TensorEntry, p: Piece) -> str:
    """'0:32 × 0:64' (a block), 'values 0..2,047 of 4,096' (a run of the flattened tensor), or both."""
    box = " × ".join(f"{o}:{o + n}" for o, n in zip(p.offsets or (0,) * len(p.sizes), p.sizes))
    if p.flat is not None:
        start, count = p.flat
        of = p.numel_of_block if p.sizes else t.numel
        run = f"values {start:,}..{start + count - 1:,} of {of:,}"
        return f"{box}  {run}" if box else run
    return box or "whole"


def facts(ckpt: Checkpoint) -> list[tuple[str, str]]:
    """Header facts in display order, empty ones left out."""
    rows: list[tuple[str, str | None]] = [
        ("tag", ckpt.tag),
        ("step", None if ckpt.step is None else str(ckpt.step)),
        ("ZeRO stage", None if ckpt.zero_stage is None else str(ckpt.zero_stage)),
        ("parallelism", ckpt.layout.describe() or None),
        ("precision", dt.short(ckpt.compute_dtype) if ckpt.compute_dtype else None),
        ("DeepSpeed", ckpt.ds_version),
        ("optimizer states", ", ".join(ckpt.optimizer_states) or None),
        ("layout", ckpt.metadata.get("layout")),
        ("tags", ", ".join(ckpt.metadata["tags"]) if len(ckpt.metadata.get("tags") or []) > 1 else None),
    ]
    for key, value in ckpt.config.items():
        if key != "zero_stage":
            rows.append((key, str(value)))
    tied = ", ".join(f"{a} -> {o}" for a, o in ckpt.shared_params.items())
    rows.append(("tied", tied or None))
    frozen = [t.name for t in ckpt.tensors if t.frozen]
    rows.append(("frozen", f"{len(frozen)}: {', '.join(frozen[:3])}{' ...' if len(frozen) > 3 else ''}" if frozen else None))
    return [(k, v) for k, v in rows if v]


def render_checkpoint(ckpt: Checkpoint, *, flat: bool, tensors: bool) -> None:
    out = console()
    stored = [t for t in ckpt.tensors if t.tied_to is None]
    out.print(f"[bold]{ckpt.kind.label}[/]  {ckpt.path}")
    head = Table.grid(padding=(0, 2))
    head.add_column(style="dim")
    head.add_column()
    for key, value in facts(ckpt):
        head.add_row(key, value)
    head.add_row("parameters", f"{ckpt.total_numel:,} in {len(stored)} tensors ({human_bytes(ckpt.total_bytes)})")
    head.add_row("files", f"{len(ckpt.files)} ({human_bytes(ckpt.files_bytes)} on disk)")
    out.print(head)
    by_dtype = Table(box=None, title_justify="left", padding=(0, 2))
    for col in ("dtype", "tensors", "bytes"):
        by_dtype.add_column(col, justify="left" if col == "dtype" else "right")
    for dtype, (count, nbytes) in ckpt.dtypes.items():
        by_dtype.add_row(dtype, str(count), human_bytes(nbytes))
    out.print()
    out.print(by_dtype)
    for warning in ckpt.warnings:
        out.print(f"[yellow]warning:[/] {warning}")
    if not tensors:
        return
    out.print()
    if flat:
        out.print(_flat_table(ckpt))
    else:
        out.print(_tree_table(ckpt))


def _columns(table: Table) -> None:
    table.add_column("name", no_wrap=True, overflow="ellipsis", ratio=1)
    for col in ("shape", "dtype", "numel", "bytes", "share"):
        table.add_column(col, justify="left" if col == "dtype" else "right", no_wrap=True)


def _flat_table(ckpt: Checkpoint) -> Table:
    table = Table(box=None, padding=(0, 2))
    _columns(table)
    total = max(ckpt.total_bytes, 1)
    for t in ckpt.tensors:
        note = f" [dim]= {t.tied_to}[/]" if t.tied_to else (" [dim](frozen)[/]" if t.frozen else "")
        share = "" if t.tied_to else f"{100 * (t.nbytes or 0) / total:.1f}%"
        table.add_row(t.name + note, format_shape(t.shape), dt.short(t.dtype), f"{t.numel:,}", human_bytes(t.nbytes), share)
    return table


def _tree_table(ckpt: Checkpoint) -> Table:
    """Grouped by dotted name; a stack of identical numbered blocks (layers.0..N) is shown once."""
    from ckpt_tui.core.tree import ParamNode, build_tree

    table = Table(box=None, padding=(0, 2))
    _columns(table)

    def group_row(node: ParamNode, label: str) -> None:
        table.add_row(f"[bold]{label}[/]", "", "", human_count(node.numel), human_bytes(node.nbytes), f"{100 * node.share:.1f}%")

    def walk(node: ParamNode, depth: int) -> None:
        for child in node.children:
            indent = "  " * depth
            if child.tensor is not None and not child.children:
                t = child.tensor
                note = f" [dim]= {t.tied_to}[/]" if t.tied_to else (" [dim](frozen)[/]" if t.frozen else "")
                share = "" if t.tied_to else f"{100 * child.share:.1f}%"
                row = (format_shape(t.shape), dt.short(t.dtype), f"{t.numel:,}", human_bytes(t.nbytes), share)
                table.add_row(indent + child.name + note, *row)
            elif child.numbered and child.repeats:
                first, last = child.number_range or (0, 0)
                group_row(child, f"{indent}{child.name}.{first}..{last}  ({len(child.children)} identical blocks)")
                block = child.children[0]
                table.add_row(f"{indent}  [dim]each block:[/]", "", "", human_count(block.numel), human_bytes(block.nbytes), "")
                walk(block, depth + 2)
            else:
                group_row(child, indent + child.name)
                walk(child, depth + 1)

    walk(build_tree(ckpt.tensors), 0)
    return table


def render_run(run: RunLog) -> None:
    out = console()
    out.print(f"[bold]{run.kind.label}[/]  {run.path}")
    out.print(f"{len(run.event_files)} event file(s), {human_bytes(run.files_bytes)}, last step {run.last_step}")
    table = Table(box=None, padding=(0, 2))
    for col in ("tag", "points", "first step", "last step"):
        table.add_column(col, justify="left" if col == "tag" else "right")
    for t in run.tags:
        table.add_row(t.tag, f"{t.points:,}", str(t.first_step), str(t.last_step))
    out.print(table)
    for warning in run.warnings:
        out.print(f"[yellow]warning:[/] {warning}")
