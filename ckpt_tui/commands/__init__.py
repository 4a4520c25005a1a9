"""Headless subcommands. Each module defines NAME, HELP, add_arguments(parser) and run(args) -> int."""

from __future__ import annotations

from types import ModuleType

from ckpt_tui.commands import compare_loss_cmd, convert_cmd, demo_cmd, inspect_cmd, runs_cmd, scan_cmd, verify_cmd

COMMANDS: list[ModuleType] = [inspect_cmd, scan_cmd, convert_cmd, verify_cmd, runs_cmd, compare_loss_cmd, demo_cmd]
