"""`ckpt-tui compare-loss` and `ckpt-tui runs` run as a user runs them: subprocesses on real event files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from tests.helpers import REPO, assert_one_line_error, ckpt_tui
from tests.losses.events import TRAIN_TAG, VAL_TAG, flip_byte, loss_run, record_offsets, write_run


def test_identical_resume_passes_with_plot_and_table(pair):
    result = ckpt_tui("compare-loss", *pair)
    assert result.code == 0, result.err
    assert "resumed at step 21" in result.out  # the plot's title
    assert any(0x2800 <= ord(ch) <= 0x28FF for ch in result.out)  # braille curves
    assert "max |diff|" in result.out and "PASS" in result.out
    assert "\x1b[" not in result.out  # not a terminal, NO_COLOR: plain text


def test_json_schema_and_exit_codes(diverged):
    result = ckpt_tui("compare-loss", *diverged, "--json", "--atol", "1e-4")
    assert result.code == 1, result.err
    doc = json.loads(result.out)  # only JSON on stdout
    assert doc["schema"] == "ckpt-tui.compare-loss/1" and doc["passed"] is False
    assert doc["atol"] == 1e-4 and doc["rtol"] == 0.0
    (c,) = doc["comparisons"]
    assert c["tag"] == TRAIN_TAG and c["verdict"] == "diverged"
    assert c["resume_step"] == 21 and c["overlap"] == [21, 40] and c["compared"] == 20
    assert c["mismatches"] == 10 and c["first_divergence"]["step"] == 31
    assert c["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert c["baseline_steps"] == [1, 40] and c["resumed_steps"] == [21, 40]
    assert c["csv"] is None and c["png"] is None
    assert doc["baseline"]["path"] == str(diverged[0]) and len(doc["baseline"]["event_files"]) == 1

    loose = ckpt_tui("compare-loss", *diverged, "--json", "--atol", "2e-3")
    assert loose.code == 0 and json.loads(loose.out)["passed"] is True
    relative = ckpt_tui("compare-loss", *diverged, "--json", "--atol", "0", "--rtol", "1e-2")
    assert relative.code == 0


def test_several_tags_csv_and_png(pair, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    result = ckpt_tui("compare-loss", *pair, "--tag", TRAIN_TAG, "--tag", VAL_TAG,
                      "--csv", out, "--png", out, "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert [c["tag"] for c in doc["comparisons"]] == [TRAIN_TAG, VAL_TAG]
    assert doc["comparisons"][1]["compared"] == 4  # validation every 5 steps: 25, 30, 35, 40
    for c in doc["comparisons"]:
        assert c["csv"].endswith(".csv") and c["png"].endswith(".png")
    rows = list(csv.reader(open(out / "lm-loss-training_lm_loss.csv")))
    assert rows[0] == ["step", "baseline", "resumed", "diff"] and len(rows) == 41
    assert rows[1][2] == "" and rows[21][3] == "0.0"
    assert (out / "lm-loss-validation_lm_loss_validation.png").read_bytes()[:4] == b"\x89PNG"


def test_shared_folder_given_twice(shared):
    result = ckpt_tui("compare-loss", shared, shared, "--no-plot")
    assert result.code == 0, result.err
    assert "one folder for both runs" in result.out
    doc = ckpt_tui("compare-loss", shared, shared, "--json").json()
    assert doc["comparisons"][0]["resume_step"] == 21 and "one folder" in doc["baseline"]["notes"][0]


def test_event_files_can_be_passed_directly(shared):
    first, second = sorted(shared.iterdir())
    assert ckpt_tui("compare-loss", first, second, "--no-plot").code == 0


def test_no_common_step_fails(tmp_path):
    loss_run(tmp_path / "a", range(1, 11))
    loss_run(tmp_path / "b", range(20, 30))
    result = ckpt_tui("compare-loss", tmp_path / "a", tmp_path / "b", "--json")
    assert result.code == 1 and result.json()["comparisons"][0]["verdict"] == "no-overlap"


def test_nan_in_resumed_run_fails_and_json_stays_valid(tmp_path):
    write_run(tmp_path / "a", {TRAIN_TAG: [(s, 1.0 / s) for s in range(1, 11)]})
    write_run(tmp_path / "b", {TRAIN_TAG: [(s, float("nan") if s == 7 else 1.0 / s) for s in range(5, 11)]})
    result = ckpt_tui("compare-loss", tmp_path / "a", tmp_path / "b", "--json")
    assert result.code == 1
    assert "NaN" not in result.out  # strict JSON: NaN becomes null
    c = result.json()["comparisons"][0]
    assert c["first_divergence"] == {"step": 7, "baseline": pytest.approx(1 / 7), "resumed": None, "diff": None}
    assert c["nonfinite_mismatches"] == 1 and c["max_abs_diff"] == 0.0


# ------------------------------------------------------------------------------- bad input: exit 2


def test_missing_tag_names_the_run_and_lists_tags(pair):
    result = ckpt_tui("compare-loss", *pair, "--tag", "nope")
    assert_one_line_error(result, str(pair[0]), "no tag 'nope'", TRAIN_TAG)


def test_missing_path(pair, tmp_path):
    assert_one_line_error(ckpt_tui("compare-loss", pair[0], tmp_path / "missing"), "missing", "no such")
    assert_one_line_error(ckpt_tui("compare-loss", tmp_path, pair[1]), "no TensorBoard event files")


def test_empty_event_file(pair, tmp_path):
    folder = tmp_path / "live"
    folder.mkdir()
    (folder / "events.out.tfevents.1700000000.host.1.0").write_bytes(b"")
    result = ckpt_tui("compare-loss", pair[0], folder, "--json")
    assert_one_line_error(result, str(folder), "no scalar data", "empty")


def test_truncated_event_file(pair, tmp_path):
    path = loss_run(tmp_path / "cut", range(1, 30))
    path.write_bytes(path.read_bytes()[:11])
    assert_one_line_error(ckpt_tui("compare-loss", pair[0], path), path.name, "no complete record")


def test_truncated_tail_still_compares(pair):
    (path,) = pair[1].iterdir()
    path.write_bytes(path.read_bytes()[:-5])
    result = ckpt_tui("compare-loss", *pair, "--json", "--tag", TRAIN_TAG, "--tag", VAL_TAG)
    assert result.code == 0, result.err
    doc = result.json()
    assert "incomplete" in doc["resumed"]["notes"][0]
    # the lost last record was step 40's validation point
    assert [c["resumed_points"] for c in doc["comparisons"]] == [20, 3]


def test_corrupt_event_file(pair):
    (path,) = pair[1].iterdir()
    offset, length = record_offsets(path)[5]
    flip_byte(path, offset + 12 + length - 1)
    assert_one_line_error(ckpt_tui("compare-loss", *pair), str(path), "checksum")


def test_png_without_matplotlib_is_a_one_line_error(pair, tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "matplotlib.py").write_text("raise ImportError('blocked for the test')\n")
    result = ckpt_tui("compare-loss", *pair, "--png", tmp_path / "png",
                      env={"PYTHONPATH": f"{blocker}:{REPO}"})
    assert_one_line_error(result, "matplotlib", "ckpt-tui[png]")
    assert not (tmp_path / "png").exists()


# ------------------------------------------------------------------------------------------ runs


def test_runs_lists_runs_files_and_tags(pair, shared):
    root = pair[0].parent
    result = ckpt_tui("runs", root, "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["schema"] == "ckpt-tui.runs/1"
    runs = {r["relpath"]: r for r in doc["runs"]}
    assert set(runs) == {"baseline", "resumed", "shared"}
    base = runs["baseline"]
    assert base["default_loss_tag"] == TRAIN_TAG and base["error"] is None
    tags = {t["tag"]: t for t in base["tags"]}
    assert tags[TRAIN_TAG]["points"] == 40 and tags[TRAIN_TAG]["loss"] == "train"
    assert (tags[VAL_TAG]["first_step"], tags[VAL_TAG]["last_step"], tags[VAL_TAG]["loss"]) == (5, 40, "validation")
    files = runs["shared"]["event_files"]
    assert [(f["first_step"], f["last_step"], f["points"]) for f in files] == [(1, 40, 40), (21, 40, 20)]
    assert "restarts at step 21" in runs["shared"]["notes"][0]

    text = ckpt_tui("runs", root)
    assert text.code == 0 and TRAIN_TAG in text.out and "restarts at step 21" in text.out


def test_runs_reports_unreadable_runs_and_exits_2(pair):
    (path,) = pair[1].iterdir()
    flip_byte(path, record_offsets(path)[3][0] + 12)
    result = ckpt_tui("runs", pair[0].parent, "--json")
    assert result.code == 2
    runs = {r["relpath"]: r for r in result.json()["runs"]}
    assert runs["baseline"]["error"] is None and "checksum" in runs["resumed"]["error"]
    assert result.err.startswith("ckpt-tui: error: ") and str(path) in result.err


def test_runs_bad_input(tmp_path):
    assert_one_line_error(ckpt_tui("runs", tmp_path / "missing"), "no such")
    assert_one_line_error(ckpt_tui("runs", tmp_path), "no TensorBoard event files")


def test_cli_start_imports_nothing_heavy():
    code = (
        "import sys, ckpt_tui.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'tensorboard', 'matplotlib', 'plotext'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"
