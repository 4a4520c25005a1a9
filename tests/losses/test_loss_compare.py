"""Alignment, statistics, verdict, tag choice and exports of ckpt_tui.core.losses (and the plot text)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from ckpt_tui.core import losses
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.losses import Series, compare
from tests.losses.events import TRAIN_TAG, VAL_TAG, f32, loss_curve, loss_run, write_run


def _series(steps, values, tag=TRAIN_TAG) -> Series:
    steps = np.asarray(list(steps), dtype=np.int64)
    return Series(tag, steps, np.asarray(values, dtype=np.float64), steps.astype(np.float64))


@pytest.mark.parametrize(
    ("tag", "kind"),
    [
        ("lm-loss-training/lm loss", "train"),
        ("lm-loss-validation/lm loss validation", "validation"),
        ("lm-loss-training/lm loss vs samples", None),
        ("lm-loss-training/lm loss vs tokens", None),
        ("loss-scale/loss-scale", None),
        ("train/loss", "train"),
        ("loss", "train"),
        ("Loss/train", "train"),
        ("eval/loss", "validation"),
        ("val_loss", "validation"),
        ("train_loss_epoch", None),
        ("learning-rate/learning-rate", None),
    ],
)
def test_loss_kind(tag, kind):
    assert losses.loss_kind(tag) == kind


def test_default_loss_tag_prefers_the_megatron_training_loss():
    tags = ["loss-scale/loss-scale", "lm-loss-training/lm loss vs samples", VAL_TAG, "train/loss", TRAIN_TAG]
    assert losses.default_loss_tag(tags) == TRAIN_TAG
    assert losses.default_loss_tag(["eval/loss", "train/loss", "lr"]) == "train/loss"
    assert losses.default_loss_tag(["my_model/total_loss", "my_model/aux_loss_component"]) == "my_model/total_loss"
    assert losses.default_loss_tag([VAL_TAG, "lr"]) is None


def test_identical_resume_matches():
    steps = range(1, 41)
    base = _series(steps, f32(loss_curve(steps)))
    res = _series(range(21, 41), f32(loss_curve(range(21, 41))))
    cmp = compare(base, res)
    assert (cmp.verdict, cmp.passed, cmp.resume_step, cmp.overlap, cmp.compared) == ("match", True, 21, (21, 40), 20)
    assert cmp.max_abs_diff == 0.0 and cmp.mean_abs_diff == 0.0 and cmp.max_rel_diff == 0.0
    assert cmp.first_divergence_step is None and cmp.mismatches == 0


def test_drift_beyond_atol_reports_the_first_step():
    steps = np.arange(1, 41)
    values = np.asarray(loss_curve(steps))
    drift = np.where(steps >= 31, 1e-3 * (steps - 30), 0.0)
    cmp = compare(_series(steps, values), _series(steps[20:], (values + drift)[20:]), atol=1.5e-3)
    assert cmp.verdict == "diverged" and not cmp.passed
    assert cmp.first_divergence_step == 32  # 2e-3 > 1.5e-3; step 31's 1e-3 is within
    assert cmp.mismatches == 9 and cmp.max_abs_diff_step == 40
    assert cmp.max_abs_diff == pytest.approx(1e-2)
    assert cmp.mean_abs_diff == pytest.approx(np.mean(drift[20:]))
    d = cmp.to_dict()
    assert d["first_divergence"]["step"] == 32 and d["first_divergence"]["diff"] == pytest.approx(2e-3)
    assert compare(_series(steps, values), _series(steps, values + drift), atol=1e-2 + 1e-12).passed


def test_rtol_scales_with_the_baseline():
    base = _series([1, 2], [100.0, 1.0])
    res = _series([1, 2], [100.05, 1.0005])
    assert compare(base, res, atol=0.0, rtol=1e-3).passed
    assert not compare(base, res, atol=0.0, rtol=1e-4).passed
    with pytest.raises(CkptError, match="tolerances"):
        compare(base, res, atol=-1.0)


def test_nan_and_inf_rules():
    base = _series(range(6), [1.0, math.nan, math.inf, 2.0, math.nan, -math.inf])
    same = _series(range(6), [1.0, math.nan, math.inf, 2.0, math.nan, -math.inf])
    cmp = compare(base, same)
    assert cmp.passed and cmp.max_abs_diff == 0.0  # a reproduced NaN/inf is a match
    other = _series(range(6), [1.0, 1.0, math.inf, math.nan, math.nan, math.inf])
    cmp = compare(base, other)
    assert cmp.mismatches == 3 and cmp.nonfinite_mismatches == 3
    assert cmp.first_divergence_step == 1
    assert cmp.max_abs_diff == 0.0  # statistics only over steps finite in both (step 0)
    d = cmp.to_dict()
    assert d["first_divergence"] == {"step": 1, "baseline": None, "resumed": 1.0, "diff": None}


def test_no_common_step_is_a_failure():
    cmp = compare(_series(range(10), [1.0] * 10), _series(range(20, 30), [1.0] * 10))
    assert cmp.verdict == "no-overlap" and not cmp.passed and cmp.overlap is None
    assert cmp.max_abs_diff is None and "no step in common" in cmp.summary()


def test_different_logging_intervals_compare_the_common_steps():
    base = _series(range(0, 100), np.arange(100.0))
    res = _series(range(50, 100, 5), np.arange(50.0, 100.0, 5))
    cmp = compare(base, res)
    assert cmp.passed and cmp.compared == 10 and cmp.only_baseline == 36 and cmp.only_resumed == 0
    assert cmp.overlap == (50, 95)


def test_csv_has_every_step_and_round_trips(tmp_path):
    base = _series([1, 2, 3, 4], [1.5, 0.1, 0.2, math.nan])
    res = _series([3, 4, 5], [0.2 + 1e-9, math.nan, 7.0])
    path = losses.write_csv(compare(base, res), tmp_path / "out" / "loss.csv")
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["step", "baseline", "resumed", "diff"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    assert rows[1] == ["1", "1.5", "", ""] and rows[5] == ["5", "", "7.0", ""]
    assert float(rows[3][2]) == 0.2 + 1e-9 and float(rows[3][3]) == (0.2 + 1e-9) - 0.2
    assert rows[4][1:] == ["nan", "nan", "nan"]


def test_png_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    steps = range(1, 200)
    cmp = compare(_series(steps, loss_curve(steps)), _series(range(100, 200), loss_curve(range(100, 200))))
    path = losses.write_png(cmp, tmp_path / "png" / "loss.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_export_names_are_safe_and_distinct():
    names = losses.export_names([TRAIN_TAG, "lm-loss-training:lm loss", "../../etc/passwd", "///"])
    assert names[TRAIN_TAG] == "lm-loss-training_lm_loss"
    assert names["lm-loss-training:lm loss"] == "lm-loss-training_lm_loss-2"
    assert "/" not in names["../../etc/passwd"] and names["///"] == "tag"


def test_open_pair_splits_a_shared_folder(shared):
    base, res = losses.open_pair(shared, shared)
    assert len(base.files) == 1 and len(res.files) == 1 and res.path == res.files[0].path
    assert "one folder for both runs" in base.notes[0]
    cmp = compare(base.series(TRAIN_TAG), res.series(TRAIN_TAG))
    assert cmp.passed and cmp.resume_step == 21 and cmp.compared == 20


def test_pick_tags_and_missing_tags(pair, tmp_path):
    base, res = losses.open_pair(*pair)
    assert losses.pick_tags(base, res, None) == [TRAIN_TAG]
    assert losses.pick_tags(base, res, [VAL_TAG, VAL_TAG]) == [VAL_TAG]
    with pytest.raises(CkptError, match="no tag 'nope'; tags here: "):
        res.series("nope")
    other = tmp_path / "other"
    write_run(other, {"accuracy": [(1, 0.5)]})
    with pytest.raises(CkptError, match="no loss tag found; pass --tag"):
        losses.pick_tags(base, losses.load_run(other), None)


def test_decimate_keeps_extremes_and_bounds_size():
    x = np.arange(1_000_000)
    y = np.sin(x / 1000.0)
    y[123_456] = 50.0
    y[654_321] = math.nan
    dx, dy = losses.decimate(x, y, 1000)
    assert len(dx) <= 1000 and 50.0 in dy and 123_456 in dx
    assert all(math.isfinite(v) for v in dy) and dx == sorted(dx)


def test_terminal_plot_text(pair):
    from ckpt_tui.plots import render_comparison

    base, res = losses.open_pair(*pair)
    cmp = compare(base.series(TRAIN_TAG), res.series(TRAIN_TAG))
    text = render_comparison(cmp, 100, 30, color=False)
    assert "\x1b[" not in text
    assert "resumed at step 21" in text and "difference: match" in text
    assert any(0x2800 <= ord(ch) <= 0x28FF for ch in text)  # braille curves
    lines = text.splitlines()
    assert len(lines) == 30 and max(len(line) for line in lines) <= 100
    assert "\x1b[" in render_comparison(cmp, 100, 30, color=True)


def test_plot_draws_into_a_textual_plotext_figure(pair):
    """The TUI's widget figure (textual-plotext's Plot) takes the same draw calls."""
    pytest.importorskip("textual_plotext")
    from textual_plotext.plot import Plot

    from ckpt_tui.plots import draw_comparison

    base, res = losses.open_pair(*pair)
    fig = Plot()
    fig.plot_size(80, 24)
    draw_comparison(fig, compare(base.series(TRAIN_TAG), res.series(TRAIN_TAG)))
    assert "resumed at step 21" in fig.build()


def test_run_without_scalars_is_a_clear_error(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "events.out.tfevents.1700000000.host.1.0").write_bytes(b"")
    run = losses.load_run(folder)
    with pytest.raises(CkptError, match="no scalar data to compare .*empty") as info:
        run.series(TRAIN_TAG)
    assert info.value.path == str(folder)


def test_resumed_run_files_in_separate_folders_are_not_truncated(tmp_path):
    """A resumed run restarting at an earlier step than the baseline's last point keeps all its points."""
    base = tmp_path / "base"
    loss_run(base, range(1, 41))
    res = tmp_path / "res"
    loss_run(res, range(11, 41), shift={s: 1e-7 for s in range(11, 41)})
    b, r = losses.open_pair(base, res)
    cmp = compare(b.series(TRAIN_TAG), r.series(TRAIN_TAG))
    assert len(cmp.resumed) == 30 and cmp.compared == 30 and cmp.passed


def test_step_axis_ticks_are_round_and_short():
    from ckpt_tui.plots import step_label, step_ticks

    assert step_ticks(0, 999_999) == [0, 250_000, 500_000, 750_000]
    assert step_ticks(1, 40) == [10, 20, 30, 40] and step_ticks(0, 7) == [0, 2, 4, 6] and step_ticks(5, 5) == [5]
    assert [step_label(t) for t in (7, 9_999, 250_000, 1_500_000)] == ["7", "9999", "250k", "1.5M"]
