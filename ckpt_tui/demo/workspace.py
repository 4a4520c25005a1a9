"""Where `ckpt-tui demo` builds the seed's 4-step proof, and what each path in it holds.

The default workspace is ``$CKPT_TUI_DEMO_DIR`` when set, else ``$XDG_DATA_HOME/ckpt-tui/demo``
(``~/.local/share/ckpt-tui/demo``). ``scripts/run.sh`` without arguments builds it and opens the app on it.

Layout (N = --steps; the baseline trains 2N steps and saves at step N)::

    WORKDIR/
      demo.json                              settings the workspace was built with (steps, dp, stage, ...)
      baseline/ckpt/global_stepN/            step 1: ZeRO checkpoint saved at step N by DeepSpeed (DP = A)
      baseline/ckpt/latest                   "global_stepN"
      baseline/tb/                           step 1: TensorBoard events, steps 1..2N (Megatron tags)
      baseline/losses.json                   {step: training loss}
      hf/                                    step 2: HF safetensors of the step-N checkpoint (ours)
      universal-from-hf/global_stepN_universal/   step 3: HF -> universal (ours; Adam restarts)
      universal-from-hf/latest_universal
      universal-from-zero/global_stepN_universal/ step 4a: ZeRO -> universal (ours; Adam moments kept)
      universal-from-zero/latest_universal
      resumed-from-hf/tb/, losses.json       step 4: trained from universal-from-hf at DP = B, steps N+1..2N
      resumed-from-zero/tb/, losses.json     step 4: trained from universal-from-zero at DP = B
      verify/<artifact>.json                 `ckpt-tui verify` of each artifact against its source
      comparison.json                        the final loss comparison (`ckpt-tui demo --json` prints it)
      logs/<step>.log                        output of every training launch

Every output appears complete or not at all (written beside its final path and renamed), so a step
whose output exists is done and is skipped on the next run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV = "CKPT_TUI_DEMO_DIR"
SETTINGS_FILE = "demo.json"
TMP_SUFFIX = ".ckpt-tui-demo-tmp"


def default_workspace() -> Path:
    """$CKPT_TUI_DEMO_DIR, else the per-user data folder ($XDG_DATA_HOME or ~/.local/share)/ckpt-tui/demo."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser() / "ckpt-tui" / "demo"


@dataclass(frozen=True)
class Workspace:
    """Every path of one demo workspace; `steps` is N, the step the checkpoint is saved and resumed at."""

    root: Path
    steps: int

    @property
    def tag(self) -> str:
        return f"global_step{self.steps}"

    @property
    def settings(self) -> Path:
        return self.root / SETTINGS_FILE

    # step 1: the baseline run
    @property
    def baseline(self) -> Path:
        return self.root / "baseline"

    @property
    def baseline_ckpt(self) -> Path:
        """The ZeRO save folder (holds `latest` and the tag folder)."""
        return self.baseline / "ckpt"

    @property
    def zero_checkpoint(self) -> Path:
        """The step-N tag folder: the source of every conversion."""
        return self.baseline_ckpt / self.tag

    @property
    def baseline_tb(self) -> Path:
        return self.baseline / "tb"

    # steps 2-3 and the ZeRO -> universal conversion
    @property
    def hf(self) -> Path:
        return self.root / "hf"

    @property
    def universal_from_hf_root(self) -> Path:
        """What training loads (`--load`): holds latest_universal and the tag folder."""
        return self.root / "universal-from-hf"

    @property
    def universal_from_hf(self) -> Path:
        return self.universal_from_hf_root / f"{self.tag}_universal"

    @property
    def universal_from_zero_root(self) -> Path:
        return self.root / "universal-from-zero"

    @property
    def universal_from_zero(self) -> Path:
        return self.universal_from_zero_root / f"{self.tag}_universal"

    # step 4: the resumed runs
    @property
    def resumed_from_hf(self) -> Path:
        return self.root / "resumed-from-hf"

    @property
    def resumed_from_zero(self) -> Path:
        return self.root / "resumed-from-zero"

    def verify_report(self, artifact: str) -> Path:
        return self.root / "verify" / f"{artifact}.json"

    @property
    def comparison(self) -> Path:
        return self.root / "comparison.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, step: str) -> Path:
        return self.logs / f"{step}.log"

    @property
    def owned(self) -> list[Path]:
        """Everything the demo writes directly under root: what --fresh removes (and nothing else)."""
        return [
            self.baseline, self.hf, self.universal_from_hf_root, self.universal_from_zero_root,
            self.resumed_from_hf, self.resumed_from_zero, self.root / "verify", self.comparison,
            self.logs, self.settings,
        ]


def comparison_runs(root: Path) -> tuple[Path, list[Path]] | None:
    """The loss comparison a built demo workspace shows: (baseline TensorBoard folder, resumed ones).

    The ZeRO -> universal run comes first (it must follow the baseline at every step); runs a failed step
    left unwritten are left out. None when root is not a demo workspace or has nothing to compare.
    """
    root = Path(root)
    if not (root / SETTINGS_FILE).is_file():
        return None
    ws = Workspace(root, steps=0)  # only folder names are used, not the step
    baseline = tb_dir(ws.baseline)
    resumed = [tb for tb in (tb_dir(ws.resumed_from_zero), tb_dir(ws.resumed_from_hf)) if tb.is_dir()]
    return (baseline, resumed) if baseline.is_dir() and resumed else None


def tb_dir(run: Path) -> Path:
    """The TensorBoard folder of a run folder (baseline/, resumed-from-*/)."""
    return run / "tb"


def losses_file(run: Path) -> Path:
    return run / "losses.json"
