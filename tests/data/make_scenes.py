"""Regenerate tests/data/scenes/: the committed workspace that snapshot tests and README screenshots show.

    .venv/bin/python -m tests.data.make_scenes

Why committed: a snapshot renders values (statistics of trained weights, loss differences) whose last
digits depend on the machine that trained them (CPU kernels, thread scheduling). Trained once and
committed, the scenes show the same digits everywhere; the correctness tests keep training their own
fixtures (tests/fixtures) and compare within one machine.

What it writes (all real output: DeepSpeed's engine.save_checkpoint and ds_to_universal under torchrun,
transformers' save_pretrained, torch's SummaryWriter):

- ``scenes/workspace/``: the fixtures named in tests.tui.scenes.LAYOUT, copied from a fixture build;
- ``scenes/demo/``: the demo-shaped TensorBoard runs of tests.tui.scenes.make_demo_runs;
- ``scenes/PROVENANCE.json``: which fixtures, the tool versions and the date.

After regenerating, update the snapshots (``pytest tests/tui/test_tui_snapshots.py --snapshot-update``)
and the screenshots (``scripts/screenshots.py``), and look at both before committing.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from tests.fixtures.builder import cache_key, ensure_built
from tests.tui.scenes import DEMO, LAYOUT, SCENE_DATA, WORKSPACE, make_demo_runs, make_workspace

VERSIONS = ("torch", "deepspeed", "transformers", "safetensors", "tensorboard")


def main() -> int:
    fixtures = ensure_built(log=lambda msg: print(msg, flush=True))
    SCENE_DATA.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SCENE_DATA.parent, prefix=".scenes-") as tmp:
        staged = Path(tmp)
        make_workspace(fixtures, staged)
        make_demo_runs(staged)
        for name in (WORKSPACE, DEMO):
            shutil.rmtree(SCENE_DATA / name, ignore_errors=True)
            shutil.move(str(staged / name), SCENE_DATA / name)
    provenance = {
        "made_by": "python -m tests.data.make_scenes",
        "date": time.strftime("%Y-%m-%d"),
        "fixture_key": cache_key(),
        "workspace": dict(LAYOUT),
        "versions": {d: metadata.version(d) for d in VERSIONS},
    }
    (SCENE_DATA / "PROVENANCE.json").write_text(json.dumps(provenance, indent=1) + "\n")
    size = sum(p.stat().st_size for p in SCENE_DATA.rglob("*") if p.is_file())
    print(f"wrote {SCENE_DATA} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
