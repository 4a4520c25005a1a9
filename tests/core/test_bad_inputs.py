"""Broken, hostile and odd inputs: each gives one clear CkptError naming the file, never a traceback."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ckpt_tui.core.errors import CkptError, UnsafePickleError
from ckpt_tui.core.inspect import open_checkpoint
from ckpt_tui.core import safe_pickle


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {f"layers.{i}.weight": torch.randn(8, 4, generator=g) for i in range(3)}


def _sharded(folder: Path) -> Path:
    folder.mkdir()
    weight_map = {}
    for i, (name, t) in enumerate(_tensors().items()):
        shard = f"model-0000{i + 1}-of-00003.safetensors"
        save_file({name: t}, folder / shard)
        weight_map[name] = shard
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def _error(path: Path) -> CkptError:
    with pytest.raises(CkptError) as info:
        open_checkpoint(path)
    err = info.value
    assert "\n" not in str(err), "errors must be one line"
    return err


def test_truncated_safetensors_names_file_and_problem(tmp_path):
    f = tmp_path / "model.safetensors"
    save_file(_tensors(), f)
    f.write_bytes(f.read_bytes()[:-10])
    err = _error(f)
    assert err.path == str(f) and "truncated" in err.problem and "layers.2.weight" in err.problem


def test_header_cut_short(tmp_path):
    f = tmp_path / "model.safetensors"
    save_file(_tensors(), f)
    f.write_bytes(f.read_bytes()[:50])
    assert "truncated: header needs" in _error(f).problem


def test_oversized_header_refused_without_reading_it(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    assert "exceeds the 100 MB limit" in _error(f).problem


def test_corrupted_header_json(tmp_path):
    f = tmp_path / "model.safetensors"
    save_file(_tensors(), f)
    data = bytearray(f.read_bytes())
    data[10:20] = b"\xff" * 10
    f.write_bytes(bytes(data))
    assert "not valid JSON" in _error(f).problem


def test_overlapping_tensors(tmp_path):
    f = tmp_path / "model.safetensors"
    header = {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
    }
    raw = json.dumps(header).encode()
    f.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 24)
    assert "overlap" in _error(f).problem


def test_size_mismatch_between_shape_and_offsets(tmp_path):
    f = tmp_path / "model.safetensors"
    raw = json.dumps({"a": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}).encode()
    f.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)
    assert "needs 20" in _error(f).problem


def test_empty_file(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"")
    assert "empty file" in _error(f).problem


def test_empty_folder_is_not_a_checkpoint(tmp_path):
    assert "not a checkpoint" in _error(tmp_path).problem


def test_missing_shard(tmp_path):
    folder = _sharded(tmp_path / "m")
    (folder / "model-00002-of-00003.safetensors").unlink()
    err = _error(folder)
    assert err.path.endswith("model.safetensors.index.json")
    assert "shard 'model-00002-of-00003.safetensors' named by the index is missing" == err.problem


def test_index_points_to_wrong_shard(tmp_path):
    folder = _sharded(tmp_path / "m")
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["layers.0.weight"] = "model-00002-of-00003.safetensors"
    index.write_text(json.dumps(data))
    err = _error(folder)
    assert "index puts 'layers.0.weight' in 'model-00002-of-00003.safetensors'" in err.problem
    assert "model-00001-of-00003.safetensors" in err.problem


def test_index_lists_tensor_no_shard_has(tmp_path):
    folder = _sharded(tmp_path / "m")
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["ghost.weight"] = "model-00001-of-00003.safetensors"
    index.write_text(json.dumps(data))
    assert "'ghost.weight'" in _error(folder).problem and "in no shard" in _error(folder).problem


def test_index_not_json(tmp_path):
    folder = _sharded(tmp_path / "m")
    (folder / "model.safetensors.index.json").write_text("{not json")
    err = _error(folder)
    assert err.path.endswith("index.json") and "not valid JSON" in err.problem


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path):
    f = tmp_path / "model.safetensors"
    save_file(_tensors(), f)
    f.chmod(0)
    assert "permission denied" in _error(f).problem


def test_truncated_bin(tmp_path):
    f = tmp_path / "pytorch_model.bin"
    torch.save(_tensors(), f)
    f.write_bytes(f.read_bytes()[:200])
    assert "truncated or corrupted" in _error(f).problem


def test_bin_that_is_not_a_torch_file(tmp_path):
    f = tmp_path / "pytorch_model.bin"
    f.write_bytes(b"this is not a pickle at all")
    assert "not a torch checkpoint file" in _error(f).problem


class _Payload:
    """Pickles as a call to os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    f = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(2), "x": _Payload(marker)}, f)
    # prove the payload is live: an unsafe load runs it
    torch.load(f, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafePickleError) as info:
        open_checkpoint(f)
    assert not marker.exists()
    assert "refused to unpickle 'posix.system'" in str(info.value) or "refused to unpickle 'os.system'" in str(info.value)


def test_stand_ins_keep_fields_but_run_nothing(tmp_path):
    """DeepSpeed's classes are replaced by inert records: fields readable, no DeepSpeed code runs."""
    import argparse

    f = tmp_path / "x.pt"
    torch.save({"args": argparse.Namespace(lr=0.1, layers=2)}, f)
    obj = safe_pickle.load(f)
    assert obj["args"].lr == 0.1 and obj["args"].layers == 2
    assert type(obj["args"]) is safe_pickle.stand_ins()["argparse.Namespace"]
