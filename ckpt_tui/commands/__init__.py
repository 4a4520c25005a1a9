"""Headless subcommands. Each module defines NAME, HELP, add_arguments(parser) and run(args) -> int.

Only the subcommand being run is imported (`ckpt-tui inspect` does not load the demo or the plotting
code); `ckpt-tui --help` imports them all to list them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# subcommand name -> its module under ckpt_tui.commands, in the order --help lists them
MODULES: dict[str, str] = {
    "inspect": "inspect_cmd",
    "scan": "scan_cmd",
    "convert": "convert_cmd",
    "verify": "verify_cmd",
    "runs": "runs_cmd",
    "compare-loss": "compare_loss_cmd",
    "demo": "demo_cmd",
}


def load(name: str) -> ModuleType:
    module = importlib.import_module(f"ckpt_tui.commands.{MODULES[name]}")
    assert module.NAME == name, (module.NAME, name)
    return module
