"""compare-loss on real tiny-GPT DeepSpeed runs (the shared fixtures): baseline ZeRO-1 fp32 at DP 2,
resumed at DP 1 from a universal checkpoint of step 2, and both runs' event files in one folder."""

from __future__ import annotations

import numpy as np

from ckpt_tui.core import losses
from tests.helpers import ckpt_tui
from tests.losses.events import TRAIN_TAG, f32


def test_reader_and_compare_loss_on_real_training_runs(fixtures):
    base, resumed, shared = fixtures["tb-baseline"], fixtures["tb-resumed"], fixtures["tb-shared"]
    for fx in (base, resumed):
        truth = {int(k): v for k, v in fx.losses.items()}
        series = losses.load_run(fx.path).series(TRAIN_TAG)
        assert series.steps.tolist() == sorted(truth)
        assert np.array_equal(series.values, f32(truth[s] for s in sorted(truth)))  # what the trainer logged

    first_resumed = min(int(k) for k in resumed.losses)
    for args in ((base.path, resumed.path), (shared.path, shared.path)):
        result = ckpt_tui("compare-loss", *args, "--json")
        assert result.code == 0, result.out + result.err
        (c,) = result.json()["comparisons"]
        assert c["verdict"] == "match" and c["resume_step"] == first_resumed
        assert c["overlap"] == [first_resumed, base.step] and c["max_abs_diff"] <= 1e-5  # fp32: ~5e-7
