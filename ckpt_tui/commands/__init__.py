"""Headless subcommands. Each module defines NAME, HELP, add_arguments(parser) and run(args) -> int."""

from __future__ import annotations

from types import ModuleType

from ckpt_tui.commands import inspect_cmd, scan_cmd

COMMANDS: list[ModuleType] = [inspect_cmd, scan_cmd]
