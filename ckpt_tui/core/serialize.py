"""JSON forms of the core objects: the documented, versioned contract of every `--json` output.

Schema ``ckpt-tui.checkpoint/2`` (``ckpt-tui inspect PATH --json``)::

    {
      "schema": "ckpt-tui.checkpoint/2",
      "kind": "hf-safetensors" | "hf-bin" | "deepspeed-zero" | "deepspeed-universal" | ...,  # an adapter's id
      "path": str,                     # absolute path of the checkpoint root
      "tag": str | null, "step": int | null,
      "layout": {"dp": int | null, "tp": int, "pp": int, "ep": int, "zero_stage": int | null},
      "zero_stage": int | null, "dp_world_size": int | null, "mp_world_size": int | null,  # as in /1
      "ds_version": str | null,
      "compute_dtype": str | null,     # dtype the run trained in / the weights' main dtype
      "optimizer_states": [str],       # states stored per parameter (universal: exp_avg, exp_avg_sq, step)
      "shared_params": {alias: owner}, # tied weights
      "config": {...}, "metadata": {...}, "warnings": [str],
      "totals": {"tensors": int, "numel": int, "bytes": int, "files_bytes": int,
                 "by_dtype": {dtype: {"tensors": int, "bytes": int}}},   # tied aliases counted once
      "files": [{"path": str, "size": int, "role": str, "rank": int | null}],
      "tensors": [{"name": str, "shape": [int], "dtype": str, "numel": int, "bytes": int | null,
                   "file": str, "states": [str], "tied_to": str | null, "frozen": bool, "buffer": bool,
                   "split": str | null, "split_rule": str | null,   # TP: "dim 0", "replicated", ...
                   "pieces": [{"file": str, "rank": int | null, "offsets": [int], "sizes": [int],
                               "flat": [start, count] | null, "at": int, "group": int,
                               "tp": int | null, "pp": int | null}]}]
    }

Version 2 (from version 1): ``layout`` and ``tensors[].pieces`` are new; ``shape`` is the global shape
whatever the pieces; ``file`` is the file of a tensor's first piece (version 1 put a glob,
``zero_pp_rank_*_...``, there for ZeRO-3: its pieces now name each rank's file). A tensor stored whole
has one piece with empty offsets/sizes and no ``flat``. Added in version 2 later: ``split`` /
``split_rule`` (how TP ranks split a tensor, and the ``universal_checkpoint_info`` pattern that says so)
and each piece's ``tp`` / ``pp`` rank.

Schema ``ckpt-tui.run/1`` (``inspect`` of a TensorBoard folder)::

    {"schema": "ckpt-tui.run/1", "kind": "tensorboard", "path": str, "last_step": int | null,
     "files_bytes": int, "event_files": [{"path", "size", "role", "rank"}],
     "tags": [{"tag": str, "points": int, "first_step": int | null, "last_step": int | null}],
     "warnings": [str]}

Schema ``ckpt-tui.scan/1`` (``ckpt-tui scan DIR --json``)::

    {"schema": "ckpt-tui.scan/1", "root": str, "skipped": [str], "folders": int,
     "entries": [{"kind": str, "path": str, "relpath": str, "size": int, "step": int | null,
                  "tag": str | null, "stage": int | null, "detail": str, "notes": [str]}]}

Additions keep the version; a change of meaning bumps it. Non-finite floats are written as the
strings "nan", "inf", "-inf" (core/jsonsafe.py), never as NaN/Infinity.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ckpt_tui.core.model import Checkpoint, FileEntry, ParallelLayout, Piece, RunLog, TensorEntry


def _file(f: FileEntry) -> dict[str, Any]:
    return {"path": f.path, "size": f.size, "role": f.role, "rank": f.rank}


def _piece(p: Piece) -> dict[str, Any]:
    return {
        "file": p.file,
        "rank": p.rank,
        "offsets": list(p.offsets),
        "sizes": list(p.sizes),
        "flat": list(p.flat) if p.flat is not None else None,
        "at": p.at,
        "group": p.group,
        "tp": p.tp,
        "pp": p.pp,
    }


def layout_to_json(layout: ParallelLayout) -> dict[str, Any]:
    return {"dp": layout.dp, "tp": layout.tp, "pp": layout.pp, "ep": layout.ep, "zero_stage": layout.zero_stage}


def _tensor(t: TensorEntry, pieces: Callable[[str], tuple[Piece, ...]] | None = None) -> dict[str, Any]:
    return {
        "name": t.name,
        "shape": list(t.shape),
        "dtype": t.dtype,
        "numel": t.numel,
        "bytes": t.nbytes,
        "file": t.file,
        "states": list(t.states),
        "tied_to": t.tied_to,
        "frozen": t.frozen,
        "buffer": t.buffer,
        "split": t.split,
        "split_rule": t.split_rule,
        "pieces": [_piece(p) for p in (pieces(t.name) if pieces else t.layout_pieces)],
    }


def checkpoint_to_json(ckpt: Checkpoint, pieces: Callable[[str], tuple[Piece, ...]] | None = None) -> dict[str, Any]:
    """The checkpoint/2 document; `pieces` (a value source's) gives exact pieces where the listing has none."""
    return {
        "schema": "ckpt-tui.checkpoint/2",
        "kind": ckpt.kind.value,
        "path": str(ckpt.path.resolve()),
        "tag": ckpt.tag,
        "step": ckpt.step,
        "layout": layout_to_json(ckpt.layout),
        "zero_stage": ckpt.zero_stage,
        "dp_world_size": ckpt.dp_world_size,
        "mp_world_size": ckpt.mp_world_size,
        "ds_version": ckpt.ds_version,
        "compute_dtype": ckpt.compute_dtype,
        "optimizer_states": list(ckpt.optimizer_states),
        "shared_params": dict(ckpt.shared_params),
        "config": ckpt.config,
        "metadata": ckpt.metadata,
        "warnings": list(ckpt.warnings),
        "totals": {
            "tensors": sum(1 for t in ckpt.tensors if t.tied_to is None),
            "numel": ckpt.total_numel,
            "bytes": ckpt.total_bytes,
            "files_bytes": ckpt.files_bytes,
            "by_dtype": {d: {"tensors": n, "bytes": b} for d, (n, b) in ckpt.dtypes.items()},
        },
        "files": [_file(f) for f in ckpt.files],
        "tensors": [_tensor(t, pieces) for t in ckpt.tensors],
    }


def run_to_json(run: RunLog) -> dict[str, Any]:
    return {
        "schema": "ckpt-tui.run/1",
        "kind": run.kind.value,
        "path": str(run.path.resolve()),
        "last_step": run.last_step,
        "files_bytes": run.files_bytes,
        "event_files": [_file(f) for f in run.event_files],
        "tags": [asdict(t) for t in run.tags],
        "warnings": list(run.warnings),
    }


def scan_to_json(report: Any) -> dict[str, Any]:
    root = report.root.resolve()
    return {
        "schema": "ckpt-tui.scan/1",
        "root": str(root),
        "skipped": list(report.skipped),
        "folders": report.folders,
        "entries": [
            {
                "kind": e.kind.value,
                "path": str(e.path.resolve()),
                "relpath": os.path.relpath(e.path.resolve(), root),
                "size": e.size,
                "step": e.step,
                "tag": e.tag,
                "stage": e.stage,
                "detail": e.detail,
                "notes": list(e.notes),
            }
            for e in report.entries
        ],
    }
