"""Every --json document is strict JSON: a NaN in the data never becomes `NaN`/`Infinity` on stdout."""

from __future__ import annotations

import json
import math

import pytest

from ckpt_tui.core import jsonsafe
from tests.helpers import ckpt_tui


def _strict(text: str):  # noqa: ANN202
    def refuse(token: str):  # noqa: ANN202
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_verify_of_nan_against_a_number_is_strict_json_that_says_inf(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    save_file({"w": torch.tensor([1.0, math.nan, 3.0])}, a / "model.safetensors")
    save_file({"w": torch.tensor([1.0, 2.0, 3.0])}, b / "model.safetensors")
    result = ckpt_tui("verify", a, b, "--json")
    assert result.code == 1, result.err
    doc = _strict(result.out)
    assert doc["max_abs_diff"] == "inf" and doc["ok"] is False
    assert doc["problems"][0]["max_abs_diff"] == "inf"
    assert float(doc["max_abs_diff"]) == math.inf  # the string reads back as the value


def test_writer_maps_every_non_finite_float():
    doc = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": {"d": (0.0, None)}}
    assert _strict(jsonsafe.dumps(doc)) == {"a": "nan", "b": ["inf", "-inf", 1.5], "c": {"d": [0.0, None]}}
