"""`ckpt-tui convert SRC --to {hf,universal} -o DST`: atomic, streamed, with progress; --verify after.

JSON (``--json``, schema ``ckpt-tui.convert/1``)::

    {"schema": "ckpt-tui.convert/1", "source": {"path", "kind"}, "target": "hf" | "universal",
     "output": str, "tensors": int, "bytes": int, "seconds": float,
     "verify": null | <ckpt-tui.verify/1 document>}
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ckpt_tui.commands.output import console, human_bytes, print_json
from ckpt_tui.commands.progress import progress_control
from ckpt_tui.commands.verify_cmd import add_tolerance_arguments, render, report_to_json
from ckpt_tui.core.convert.api import DEFAULT_WORKERS, DTYPES, STAGES, TARGETS, ConvertOptions, convert
from ckpt_tui.core.convert.safetensors_out import parse_size
from ckpt_tui.core.inspect import open_checkpoint

NAME = "convert"
HELP = "Convert a checkpoint (ZeRO, universal, HF) to HF safetensors or a DeepSpeed universal checkpoint."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", type=Path, help="checkpoint to read (never modified)")
    p.add_argument("--to", required=True, choices=TARGETS, help="output format")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder (created; must not exist)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--dtype", choices=DTYPES, help="hf: store floating tensors in this dtype")
    p.add_argument("--max-shard-size", help="hf: split into shards of at most this size (e.g. 5GB)")
    p.add_argument("--step", type=int, help="universal: the last completed step; training resumes at STEP+1 (default: the source's)")
    p.add_argument("--stage", type=int, choices=STAGES, help="universal: ZeRO stage layout to write")
    p.add_argument("--hints-from", type=Path, metavar="CKPT",
                   help="universal from HF weights: take the TP restore hints (split dims, sub-params, vocabulary "
                        "padding) from this DeepSpeed checkpoint of the same model, to resume it at any TP degree")
    p.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help=f"tensors read ahead in parallel (default {DEFAULT_WORKERS})"
    )
    p.add_argument("--verify", action="store_true", help="compare the output with the source afterwards")
    add_tolerance_arguments(p)
    p.add_argument("--json", action="store_true", help="emit JSON (schema ckpt-tui.convert/1)")


def run(args: argparse.Namespace) -> int:
    options = ConvertOptions(
        dtype=args.dtype,
        max_shard_size=parse_size(args.max_shard_size) if args.max_shard_size else None,
        step=args.step,
        stage=args.stage,
        hints_from=args.hints_from,
        workers=args.workers,
    )
    options.check()  # before opening the source: a typo fails fast
    src = open_checkpoint(args.src)
    start = time.monotonic()
    with progress_control(f"convert to {args.to}", quiet=args.json) as control:
        out = convert(src, args.output, args.to, options, control=control, force=args.force)
    seconds = time.monotonic() - start
    progress = control.progress
    report = None
    if args.verify:
        from ckpt_tui.core.verify import verify

        with progress_control("verify", quiet=args.json) as vcontrol:
            report = verify(src, out, atol=args.atol, states=args.states, compare_dtype=args.dtype, control=vcontrol)
    if args.json:
        print_json(
            {
                "schema": "ckpt-tui.convert/1",
                "source": {"path": str(src.path.resolve()), "kind": src.kind.value},
                "target": args.to,
                "output": str(out.resolve()),
                "tensors": progress.tensors_done,
                "bytes": progress.bytes_done,
                "seconds": round(seconds, 3),
                "verify": report_to_json(report) if report else None,
            }
        )
    else:
        console().print(
            f"Wrote {out} ({args.to}): {progress.tensors_done} tensors, {human_bytes(progress.bytes_done)} "
            f"in {seconds:.1f}s"
        )
        if report:
            render(report)
    return 0 if report is None or report.ok else 1
