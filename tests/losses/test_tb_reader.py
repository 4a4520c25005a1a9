"""The event-file reader on real SummaryWriter files: every point, exact values, restarts, damage."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import tensorboard as tb
from tests.losses.events import TRAIN_TAG, VAL_TAG, f32, flip_byte, loss_curve, loss_run, record_offsets, write_run


def _only(path: Path) -> tb.EventFile:
    (ef,) = tb.read_scalars(path)
    return ef


def test_every_point_is_read_no_sampling(tmp_path):
    steps = list(range(25_000))  # EventAccumulator keeps a 10,000-point sample by default
    values = loss_curve(steps)
    path = write_run(tmp_path, {TRAIN_TAG: zip(steps, values)})
    ef = _only(path)
    pts = ef.scalars[TRAIN_TAG]
    assert np.array_equal(pts.steps, np.arange(25_000))
    assert np.array_equal(pts.values, f32(values))
    assert ef.records == 25_001 and ef.file_version == "brain.Event:2" and ef.notes == []
    assert np.all(np.diff(pts.wall_times) >= 0) and pts.wall_times[0] > 1e9


def test_megatron_and_plain_tags_interleaved(tmp_path):
    steps = range(1, 301)
    scalars = {
        TRAIN_TAG: [(s, v) for s, v in zip(steps, loss_curve(steps))],
        VAL_TAG: [(s, 1.0 / s) for s in steps if s % 10 == 0],
        "lm-loss-training/lm loss vs samples": [(s * 8, 2.0) for s in steps],
        "train/loss": [(s, float(s)) for s in steps],
        "learning-rate/learning-rate": [(s, 1e-4) for s in steps],
    }
    ef = _only(write_run(tmp_path, scalars))
    assert sorted(ef.scalars) == sorted(scalars)
    for tag, points in scalars.items():
        got = ef.scalars[tag]
        assert got.steps.tolist() == [s for s, _ in points], tag
        assert np.array_equal(got.values, f32(v for _, v in points)), tag
    assert ef.step_range == (1, 2400)


def _accumulator(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0}, purge_orphaned_data=False)
    ea.Reload()
    return ea


HUGE_TAG = "huge/" + "y" * 2000


def _mixed_file(folder: Path) -> Path:
    """Every kind of record a real run can hold, around scalars of every layout."""
    from torch.utils.tensorboard import SummaryWriter

    long_tag = "a/" + "x" * 200  # too long for the one-byte length the fast path decodes
    with SummaryWriter(str(folder)) as w:
        for step in range(50):
            w.add_scalar(TRAIN_TAG, 5.0 - step * 0.01, step)
            w.add_scalar("new/float", step * 0.5, step, new_style=True)
            w.add_scalar("new/double", 1.0 / 3.0 + step, step, new_style=True, double_precision=True)
            w.add_scalar(long_tag, float(step), step)
            w.add_scalar("ünïcødé/loss", 2.0 * step, step)
            if step % 25 == 0:
                w.add_scalar(HUGE_TAG, float(step), step)  # a >1 KiB scalar record: checksummed one by one
            if step % 10 == 0:
                w.add_histogram("weights", np.random.default_rng(step).normal(size=100), step)
                w.add_text("notes", f"step {step}", step)
        w.add_scalar("edge/big-step", 7.0, 2**40)
        w.add_scalar("edge/negative-step", 8.0, -5)
        w.add_scalar("edge/no-step", 9.0)
        w.add_scalars("multi", {"a": 1.0, "b": 2.0}, 3)  # writes into sub-folders: other runs
    return next(p for p in folder.iterdir() if tb.is_event_file(p))


def test_same_points_as_event_accumulator(tmp_path):
    path = _mixed_file(tmp_path)
    ef = tb.read_event_file(path)
    ea = _accumulator(path)
    simple = ea.Tags()["scalars"]
    assert sorted(simple) == sorted(t for t in ef.scalars if not t.startswith("new/"))
    for tag in simple:
        events = ea.Scalars(tag)
        got = ef.scalars[tag]
        assert got.steps.tolist() == [e.step for e in events], tag
        assert got.values.tolist() == [e.value for e in events], tag
        assert got.wall_times.tolist() == [e.wall_time for e in events], tag
    from tensorboard.util.tensor_util import make_ndarray

    for tag in ("new/float", "new/double"):
        events = ea.Tensors(tag)
        assert ef.scalars[tag].steps.tolist() == [e.step for e in events]
        assert ef.scalars[tag].values.tolist() == [float(make_ndarray(e.tensor_proto)) for e in events]
    assert ef.scalars["new/double"].values[0] == 1.0 / 3.0  # double_precision keeps all 64 bits
    assert "weights" not in ef.scalars and "notes" not in ef.scalars
    assert ef.scalars["edge/big-step"].steps.tolist() == [2**40]
    assert ef.scalars["edge/negative-step"].steps.tolist() == [-5]
    assert ef.scalars["edge/no-step"].steps.tolist() == [0]


def test_fast_and_protobuf_paths_agree(tmp_path, monkeypatch):
    path = _mixed_file(tmp_path)
    fast = tb.read_event_file(path)
    monkeypatch.setattr(tb, "_fast_scalar_layout", lambda arr, starts, lengths: (None, np.arange(starts.size)))
    slow = tb.read_event_file(path)
    assert sorted(fast.scalars) == sorted(slow.scalars)
    for tag in fast.scalars:
        for field in ("steps", "values", "wall_times"):
            assert np.array_equal(getattr(fast.scalars[tag], field), getattr(slow.scalars[tag], field)), (tag, field)


def test_nan_and_infinities_survive(tmp_path):
    values = [1.0, math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-40, 3.0e38]
    ef = _only(write_run(tmp_path, {TRAIN_TAG: enumerate(values)}))
    got = ef.scalars[TRAIN_TAG].values
    assert np.isnan(got[1]) and got[2] == math.inf and got[3] == -math.inf
    assert np.array_equal(got[[0, 4, 5, 7]], f32([1.0, 0.0, -0.0, 3.0e38]))
    assert got[6] == np.float32(1e-40)  # a float32 subnormal, kept


def test_duplicate_steps_keep_the_latest_wall_time(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as w:
        w.add_scalar(TRAIN_TAG, 1.0, 5, walltime=1000.0)
        w.add_scalar(TRAIN_TAG, 2.0, 5, walltime=3000.0)  # latest: wins
        w.add_scalar(TRAIN_TAG, 3.0, 5, walltime=2000.0)  # later in the file, older clock
        w.add_scalar(TRAIN_TAG, 4.0, 6, walltime=3000.0)
        w.add_scalar(TRAIN_TAG, 5.0, 6, walltime=3000.0)  # same wall time: the later record wins
    ef = _only(tmp_path)
    assert ef.scalars[TRAIN_TAG].steps.tolist() == [5, 5, 5, 6, 6]  # the per-file view keeps everything
    merged = tb.merge_files([ef])[TRAIN_TAG]
    assert merged.steps.tolist() == [5, 6]
    assert merged.values.tolist() == [2.0, 5.0]


def test_restart_in_one_folder_merges_with_latest_wall_time(tmp_path):
    first = loss_run(tmp_path, range(0, 31), wall0=1_000.0)  # crashed after step 30
    second = loss_run(tmp_path, range(20, 51), shift={s: 0.5 for s in range(20, 51)}, wall0=5_000.0)
    files = tb.read_scalars(tmp_path)
    assert [f.path for f in files] == [first, second]
    assert [f.step_range for f in files] == [(0, 30), (20, 50)]  # each file kept apart
    merged = tb.merge_files(files)[TRAIN_TAG]
    assert merged.steps.tolist() == list(range(51))
    expected = f32(loss_curve(range(20)) + [v + 0.5 for v in loss_curve(range(20, 51))])
    assert np.array_equal(merged.values, expected)

    log = tb.read_run_log(tmp_path)
    assert [(e.path, e.role) for e in log.event_files] == [(first.name, "events"), (second.name, "events")]
    (tag,) = log.tags
    assert (tag.tag, tag.points, tag.first_step, tag.last_step) == (TRAIN_TAG, 51, 0, 50)
    assert log.last_step == 50 and log.files_bytes == first.stat().st_size + second.stat().st_size


def test_find_event_files_direct_children_oldest_first(tmp_path):
    later = tmp_path / "events.out.tfevents.1700000010.host.1.10"
    earlier = tmp_path / "events.out.tfevents.1700000010.host.1.9"
    oldest = tmp_path / "events.out.tfevents.1600000000.host.1.0"
    for p in (later, earlier, oldest):
        p.write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "events.out.tfevents.1.host.1.0").write_bytes(b"")
    (tmp_path / "dir.tfevents.folder").mkdir()
    (tmp_path / "loop").symlink_to(tmp_path)  # not followed
    assert tb.find_event_files(tmp_path) == [oldest, earlier, later]
    assert not tb.is_event_file(tmp_path / "dir.tfevents.folder")
    assert tb.find_runs(tmp_path) == [tmp_path, tmp_path / "sub"]


# ------------------------------------------------------------------------------- damaged files


def test_truncated_tail_is_tolerated_with_a_note(tmp_path):
    path = loss_run(tmp_path, range(100))
    data = path.read_bytes()
    last_offset, last_length = record_offsets(path)[-1]
    for keep in (len(data) - 3, last_offset + 12 + 5, last_offset + 6):  # cut in crc, payload, header
        path.write_bytes(data[:keep])
        ef = tb.read_event_file(path)
        assert len(ef.scalars[TRAIN_TAG]) == 99
        assert ef.truncated_bytes == keep - last_offset
        assert "incomplete" in ef.notes[0] and path.name in ef.notes[0]


def test_cut_before_the_first_record_reads_as_empty_with_a_note(tmp_path):
    path = loss_run(tmp_path, range(10))
    path.write_bytes(path.read_bytes()[:10])
    ef = tb.read_event_file(path)
    assert ef.records == 0 and ef.scalars == {} and "no complete record" in ef.notes[0]
    log = tb.read_run_log(tmp_path)
    assert log.tags == [] and len(log.event_files) == 1


def test_empty_file_reads_as_empty_with_a_note(tmp_path):
    path = tmp_path / "events.out.tfevents.1700000000.host.1.0"
    path.write_bytes(b"")
    ef = _only(tmp_path)
    assert (ef.records, ef.size, ef.scalars) == (0, 0, {})
    assert "empty" in ef.notes[0]


def test_corrupt_value_fails_the_data_checksum(tmp_path):
    path = loss_run(tmp_path, range(50))
    offset, length = record_offsets(path)[20]
    flip_byte(path, offset + 12 + length - 2)  # inside the float value
    with pytest.raises(CkptError, match="record #20 .*data checksum") as info:
        tb.read_event_file(path)
    assert info.value.path == str(path)
    # unverified, the damaged value is read as it is (the benchmark's mode)
    assert len(tb.read_event_file(path, verify=False).scalars[TRAIN_TAG]) == 50


def test_corrupt_large_scalar_record_fails_its_checksum(tmp_path):
    path = _mixed_file(tmp_path)
    assert tb.read_event_file(path).scalars[HUGE_TAG].steps.tolist() == [0, 25]
    offset, length = next((o, n) for o, n in record_offsets(path) if n > 2000)
    flip_byte(path, offset + 12 + length - 1)
    with pytest.raises(CkptError, match="data checksum"):
        tb.read_event_file(path)


def test_corrupt_length_fails_the_header_checksum(tmp_path):
    path = loss_run(tmp_path, range(50))
    offset, _ = record_offsets(path)[10]
    flip_byte(path, offset)  # lowest byte of the length
    with pytest.raises(CkptError, match="header") as info:
        tb.read_event_file(path)
    assert str(path) in str(info.value)


def test_not_an_event_file_at_all(tmp_path):
    path = tmp_path / "events.out.tfevents.1700000000.host.1.0"
    path.write_text("this is a text file that someone named like an event file\n" * 5)
    with pytest.raises(CkptError, match="checksum"):
        tb.read_scalars(path)
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(CkptError, match="not a TensorBoard event file"):
        tb.read_scalars(other)


def test_folder_without_event_files(tmp_path):
    with pytest.raises(CkptError, match="no TensorBoard event files"):
        tb.read_scalars(tmp_path)
    with pytest.raises(CkptError, match="no such"):
        tb.read_scalars(tmp_path / "missing")


def test_many_points(tmp_path):
    """70k points from SummaryWriter (more than one of the reader's vectorised chunks): all read, in order.

    Speed is benchmarks/bench_tensorboard.py's business (1M points, against EventAccumulator), not a test's.
    """
    n = 70_000
    steps = np.arange(n)
    values = 5.0 / (1.0 + steps * 1e-3)
    path = write_run(tmp_path, {TRAIN_TAG: zip(steps.tolist(), values.tolist())})
    ef = tb.read_event_file(path)
    pts = ef.scalars[TRAIN_TAG]
    assert np.array_equal(pts.steps, steps) and np.array_equal(pts.values, f32(values))
