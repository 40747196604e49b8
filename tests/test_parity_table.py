"""The verification table (docs/verification.md) is the measurement, and the measurement has not drifted.

``python -m scratchcnn.parity --write`` wrote ``docs/verification.json`` and the tables in
docs/verification.md (every layer kind, every preset, the tutorial's longer runs). Here the tables must
be exactly what that JSON formats to, with a row for every registered layer and every preset, and a fresh
measurement (the same code, single-threaded) must not exceed twice any published error,
nor turn a published 0 (bit-identical) into anything else. Errors within 4 units of
rounding of their dtype count as rounding, whatever the published figure.
"""
import json
import os

import numpy as np
import pytest

from scratchcnn import parity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOOR = {"float32": 4 * np.finfo(np.float32).eps, "float64": 4 * np.finfo(np.float64).eps}


@pytest.fixture(scope="module")
def published():
    with open(os.path.join(ROOT, "docs", "verification.json")) as f:
        return json.load(f)


def test_the_readme_table_is_the_generated_one(published):
    readme = open(os.path.join(ROOT, "docs", "verification.md")).read()
    start = readme.index(parity.MARKERS[0]) + len(parity.MARKERS[0])
    end = readme.index(parity.MARKERS[1])
    assert readme[start:end].strip() == parity.format_table(published).strip()


def test_the_table_shows_every_published_figure(published):
    table = parity.format_table(published)
    for name, (value, _) in parity.published_figures(published).items():
        assert ("0" if value == 0 else f"{value:.1e}") in table, name


def test_the_tables_have_a_row_per_layer_kind_and_per_preset(published):
    from scratchcnn.architecture import PRESETS, load
    from scratchcnn.layer_base import REGISTRY
    rows = [line.split(" | ")[0].lstrip("| ") for line in parity.format_table(published).splitlines()
            if line.startswith("| ")]
    assert set(REGISTRY) <= set(rows) and set(PRESETS) <= set(rows)
    assert set(published["layer_kinds"]) == set(REGISTRY) and set(published["presets"]) == set(PRESETS)
    for name, runs in published["presets"].items():
        for dtype in parity.DTYPES:
            assert runs[dtype]["steps"]["steps"] == parity.PRESET_STEPS, name
            has_bn = any(s.kind == "BatchNorm2d" for s in load(name, 10).layers)
            assert (runs[dtype]["steps"]["buffers"] is not None) == has_bn, name


def _drifted(fresh, published):
    """[(figure, published, fresh)] for every figure past twice its published value."""
    bad = []
    old, new = parity.published_figures(published), parity.published_figures(fresh)
    for name, (was, dtype) in old.items():
        now = new[name][0]
        limit = 0.0 if was == 0 else max(2 * was, FLOOR[dtype])
        if now > limit:
            bad.append((name, was, now))
    return bad


def test_the_drift_check_catches_a_grown_error(published):
    grown = json.loads(json.dumps(published))
    grown["float32"]["step0"]["grads"] *= 3
    grown["float64"]["elementwise"] = 1e-12 if published["float64"]["elementwise"] == 0 else 0
    grown["presets"]["vgg"]["float64"]["steps"]["buffers"] *= 3
    grown["layer_kinds"]["ReLU"]["float32"] = 1e-7 if published["layer_kinds"]["ReLU"]["float32"] == 0 else 0
    names = [name for name, *_ in _drifted(grown, published)]
    assert "float32/step0/grads" in names and "presets/vgg/float64/steps/buffers" in names
    assert ("layer_kinds/ReLU/float32" in names) == (published["layer_kinds"]["ReLU"]["float32"] == 0)
    assert ("float64/elementwise" in names) == (published["float64"]["elementwise"] == 0)


@pytest.mark.slow
def test_a_fresh_measurement_is_within_twice_the_published_errors(published):
    assert _drifted(parity.measure_all(), published) == []
