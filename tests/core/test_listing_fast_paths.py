"""The fast paths of listing (issue 7) give the same answers as the plain ones they stand in for."""

from __future__ import annotations

import gc
import json
import struct
import threading
from pathlib import Path

import pytest

from ckpt_tui.core import bulk
from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.formats import hf_safetensors as hs
from ckpt_tui.core.inspect import open_checkpoint
from ckpt_tui.core.model import TensorEntry
from ckpt_tui.core.tree import build_tree, filter_tree


def _write(path: Path, header: dict, data_bytes: int) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * data_bytes)
    return path


def test_paused_gc_nests_and_restores_across_threads():
    assert gc.isenabled()
    with bulk.paused_gc():
        assert not gc.isenabled()
        seen = []
        t = threading.Thread(target=lambda: seen.append(_nested()))
        t.start()
        t.join()
        assert seen == [False] and not gc.isenabled()  # the inner exit did not turn it back on
    assert gc.isenabled()
    gc.disable()
    try:
        with bulk.paused_gc():
            pass
        assert not gc.isenabled()  # off before: stays off
    finally:
        gc.enable()


def _nested() -> bool:
    with bulk.paused_gc():
        return gc.isenabled()


def test_yielding_loads_gives_the_same_document():
    doc = {f"t.{i}": {"dtype": "F32", "shape": [i, 2], "data_offsets": [0, 8 * i]} for i in range(30_000)}
    raw = json.dumps(doc).encode()
    assert len(raw) > bulk.YIELDING_JSON_BYTES
    assert bulk.loads(raw) == json.loads(raw)


def test_fast_entries_equal_the_plain_constructor(tmp_path):
    header = {
        "__metadata__": {"format": "pt"},
        "b.weight": {"dtype": "BF16", "shape": [3, 4], "data_offsets": [0, 24]},
        "a.bias": {"dtype": "F32", "shape": [4], "data_offsets": [24, 40]},
        "scalar": {"dtype": "I64", "shape": [], "data_offsets": [40, 48]},
        "empty": {"dtype": "F16", "shape": [0, 5], "data_offsets": [48, 48]},
    }
    f = _write(tmp_path / "m.safetensors", header, 48)
    got = open_checkpoint(f).tensors
    want = [
        TensorEntry(name=n, shape=tuple(i["shape"]), dtype=hs.dt.SAFETENSORS_DTYPES[i["dtype"]][0], file=f.name,
                    nbytes=i["data_offsets"][1] - i["data_offsets"][0])
        for n, i in header.items() if n != "__metadata__"
    ]
    assert got == want
    assert [vars(t) for t in got] == [vars(t) for t in want]
    assert len({hash(t) for t in got}) == len(got)


def test_odd_but_valid_header_takes_the_careful_path(tmp_path):
    # JSON true is an int to the plain checks (isinstance(True, int)); the fast loop hands it over
    header = {"flag": {"dtype": "U8", "shape": [True, 2], "data_offsets": [0, 2]}}
    f = _write(tmp_path / "m.safetensors", header, 2)
    (entry,) = open_checkpoint(f).tensors
    assert entry.name == "flag" and entry.nbytes == 2


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}, "unknown dtype"),
        ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "bad shape"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}, "bad data_offsets"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "needs 8"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [0, 400]}, "truncated"),
        ([1, 2], "not an object"),
    ],
)
def test_each_bad_entry_gets_its_own_message(tmp_path, entry, message):
    header = {"ok": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "bad": entry}
    f = _write(tmp_path / "m.safetensors", header, 8)
    with pytest.raises(CkptError) as info:
        open_checkpoint(f)
    assert message in info.value.problem


def test_filter_keeps_fully_matching_groups_as_they_are():
    tensors = [TensorEntry(f"layers.{i}.{p}.weight", (2, 2), "float32", "f", 16) for i in range(3) for p in "qk"]
    root = build_tree(tensors)
    assert filter_tree(root, "weight") is root
    shown = filter_tree(root, "q.")
    assert shown is not root
    assert [n.path for n in shown.walk() if n.tensor] == [f"layers.{i}.q.weight" for i in range(3)]
    assert shown.find("layers.1.q") is root.find("layers.1.q")  # an untouched subtree is shared
