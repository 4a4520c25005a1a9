"""Entry point `ckpt-tui`: bare (or with a folder) opens the app; subcommands run headless.

Each subcommand lives in its own module under :mod:`ckpt_tui.commands`; this file only dispatches and
turns user-facing errors into one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ckpt_tui import __version__
from ckpt_tui.commands import MODULES, load
from ckpt_tui.core.errors import CkptError

EXIT_USAGE = 2


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser for every subcommand, or (`only`) for the one about to run: it alone is imported."""
    parser = argparse.ArgumentParser(
        prog="ckpt-tui",
        description="Browse, inspect, convert and verify DeepSpeed / Hugging Face checkpoints. "
        "Run without a subcommand (optionally with a folder) to open the terminal app.",
    )
    parser.add_argument("--version", action="version", version=f"ckpt-tui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [only] if only else MODULES:
        command = load(name)
        p = sub.add_parser(command.NAME, help=command.HELP, description=command.HELP)
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def build_app_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ckpt-tui", description="Open the terminal app on DIR.")
    parser.add_argument("dir", nargs="?", default=None, help="folder to browse (default: demo workspace)")
    parser.add_argument("--no-mouse", action="store_true", help="do not capture the mouse")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:  # no parser, no subcommand imports
        print(f"ckpt-tui {__version__}")
        return 0
    try:
        if argv and (argv[0] in MODULES or argv[0] in ("-h", "--help")):
            args = build_parser(argv[0] if argv[0] in MODULES else None).parse_args(argv)
            return int(args._run(args) or 0)
        return _run_app(build_app_parser().parse_args(argv))
    except CkptError as exc:
        print(f"ckpt-tui: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ckpt-tui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `ckpt-tui inspect x | head`: the reader went away; not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run_app(args: argparse.Namespace) -> int:
    from ckpt_tui.tui.launch import launch

    return launch(args.dir, mouse=not args.no_mouse)


if __name__ == "__main__":
    sys.exit(main())
