"""`ckpt-tui inspect` and `ckpt-tui scan` run as a user runs them: a subprocess, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import REPO, assert_one_line_error, ckpt_tui


@pytest.fixture()
def hf_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "hf"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    tensors = {f"model.layers.{i}.mlp.weight": torch.randn(16, 8, generator=g) for i in range(12)}
    tensors["model.embed.weight"] = torch.randn(32, 8, generator=g).to(torch.bfloat16)
    save_file(tensors, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "toy", "num_hidden_layers": 12}))
    return folder


def test_inspect_json_is_the_only_stdout_and_matches_files(hf_folder):
    result = ckpt_tui("inspect", hf_folder, "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["schema"] == "ckpt-tui.checkpoint/2"
    assert doc["kind"] == "hf-safetensors"
    assert doc["totals"]["tensors"] == 13
    assert doc["totals"]["numel"] == 12 * 16 * 8 + 32 * 8
    assert doc["totals"]["by_dtype"] == {
        "bfloat16": {"tensors": 1, "bytes": 32 * 8 * 2},
        "float32": {"tensors": 12, "bytes": 12 * 16 * 8 * 4},
    }
    assert doc["config"] == {"model_type": "toy", "num_hidden_layers": 12}
    by_name = {t["name"]: t for t in doc["tensors"]}
    assert by_name["model.layers.3.mlp.weight"]["shape"] == [16, 8]
    assert by_name["model.embed.weight"]["dtype"] == "bfloat16"


def test_inspect_text_shows_summary_tree_and_dtype_totals(hf_folder):
    result = ckpt_tui("inspect", hf_folder)
    assert result.code == 0, result.err
    out = result.out
    assert "HF safetensors" in out and "float32" in out and "bfloat16" in out
    assert "layers" in out  # grouped by dotted name
    # natural sort in the tree: layers.2 comes before layers.10
    flat = ckpt_tui("inspect", hf_folder, "--flat").out
    assert "model.layers.11.mlp.weight" in flat


def test_listing_safetensors_never_imports_torch(hf_folder):
    code = (
        "import sys; from ckpt_tui.cli import main; rc = main(['inspect', sys.argv[1], '--json']);"
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(hf_folder)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["inspect", "/nonexistent/ckpt"], ["/nonexistent/ckpt", "no such file or folder"]),
        (["scan", "/nonexistent/dir"], ["/nonexistent/dir", "no such folder"]),
    ],
)
def test_missing_paths_give_one_line_and_exit_2(args, fragments):
    assert_one_line_error(ckpt_tui(*args), *fragments)


def test_truncated_shard_via_cli(hf_folder):
    f = hf_folder / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    assert_one_line_error(ckpt_tui("inspect", hf_folder), str(f), "truncated")


def test_non_checkpoint_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(ckpt_tui("inspect", tmp_path), "not a checkpoint")


@pytest.mark.skipif(not hasattr(os, "fork") or os.geteuid() != 0, reason="needs root to drop to nobody")
def test_unreadable_file_as_an_unprivileged_user(hf_folder):
    """Root reads everything, so a forked child drops to 'nobody' and lists a file it may not read."""
    import ckpt_tui.commands.inspect_cmd  # noqa: F401 - imported before the fork (see below)
    from ckpt_tui.cli import main
    from ckpt_tui.core.formats.registry import adapters

    adapters()  # the child cannot read the interpreter's files as nobody: everything it runs is loaded here
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        folder = Path(d)
        folder.chmod(0o755)
        f = folder / "model.safetensors"
        f.write_bytes((hf_folder / "model.safetensors").read_bytes())
        f.chmod(0o600)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: no exec, so the interpreter's own files need not be readable by nobody
            os.close(read_end)
            sys.stderr = os.fdopen(write_end, "w")
            os.setuid(65534)
            code = main(["inspect", str(f)])
            sys.stderr.flush()
            os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end) as fh:
            err = fh.read()
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2, err
    assert err.strip() == f"ckpt-tui: error: {f}: cannot read: permission denied"


def _tree(root: Path, hf_folder: Path) -> Path:
    """root/a/b/model (HF), root/runs (TB), root/loop -> root (a symlink loop), root/deep/1/2/3/4/5/6/7/model."""
    import shutil

    from torch.utils.tensorboard import SummaryWriter

    (root / "a" / "b").mkdir(parents=True)
    shutil.copytree(hf_folder, root / "a" / "b" / "model")
    with SummaryWriter(str(root / "runs" / "baseline")) as w:
        for step in range(5):
            w.add_scalar("train/loss", 5.0 - step, step)
    (root / "loop").symlink_to(root)
    deep = root.joinpath("deep", *map(str, range(1, 8)))
    deep.mkdir(parents=True)
    shutil.copytree(hf_folder, deep / "model")
    return root


def test_scan_finds_checkpoints_and_runs_survives_symlink_loops(tmp_path, hf_folder):
    root = _tree(tmp_path / "ws", hf_folder)
    result = ckpt_tui("scan", root, "--json", timeout=120)
    assert result.code == 0, result.err
    doc = result.json()
    found = {(e["relpath"], e["kind"]) for e in doc["entries"]}
    assert ("a/b/model", "hf-safetensors") in found
    assert ("runs/baseline", "tensorboard") in found
    tb = next(e for e in doc["entries"] if e["kind"] == "tensorboard")
    assert tb["step"] == 4 and "train/loss" in tb["detail"]
    # the symlink loop is walked once: the model is not found again under loop/
    assert not any(rel.startswith("loop") for rel, _ in found)
    # depth is bounded (default 6): the model 9 levels down is not reached
    assert not any(rel.startswith("deep") for rel, _ in found)
    deeper = ckpt_tui("scan", root, "--json", "--max-depth", "9").json()
    assert any(e["relpath"].startswith("deep/1") for e in deeper["entries"])


def test_scan_text_lists_kind_step_size(tmp_path, hf_folder):
    root = _tree(tmp_path / "ws", hf_folder)
    result = ckpt_tui("scan", root)
    assert result.code == 0
    assert "HF safetensors" in result.out and "TensorBoard run" in result.out and "a/b/model" in result.out
