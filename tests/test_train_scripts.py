"""traces/train_digits.py and traces/train_transformer.py: steps dropped for an overflow are
counted with or without a loss scaler, the command lines take only positive counts, and the
README's training tables are the committed results."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

TRACES = Path(__file__).resolve().parents[1] / "traces"
sys.path.insert(0, str(TRACES))

import train_digits as td  # noqa: E402
import train_transformer as tt  # noqa: E402
from train_recipes import RECIPES  # noqa: E402

README = TRACES.parent / "README.md"


def _data(n_train=40, n_test=10):
    """Random digit-like images (N, 1, 8, 8) in [0, 1] and labels: no scikit-learn needed."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 17, size=(n_train + n_test, 1, 8, 8)) / 16.0
    y = rng.integers(0, 10, size=n_train + n_test)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@pytest.fixture
def no_scaler(monkeypatch):
    """FP8 with fp16 accumulators (its forward overflows on every step) without loss scaling."""
    recipes = dict(RECIPES)
    recipes["unscaled"] = dataclasses.replace(RECIPES["FP8, fp16 acc"], loss_scale=None)
    for mod in (td, tt):
        monkeypatch.setattr(mod, "RECIPES", recipes)
    return "unscaled"


@pytest.mark.parametrize("mod", [td, tt], ids=["digits", "transformer"])
def test_dropped_steps_are_counted_without_a_loss_scaler(no_scaler, mod):
    row = mod.train_one(no_scaler, 0, _data(), 1, lambda m: None)
    assert row["steps"] == 2                       # 40 images, batch 32
    assert row["skipped_steps"] == 2 and row["curve"][-1]["skipped"] == 2


def test_no_step_is_dropped_when_none_overflows():
    row = td.train_one("INT8", 0, _data(), 1, lambda m: None)
    assert row["skipped_steps"] == 0 and row["steps"] == 2
    # a full step's cycles come from a full batch; the mean includes the short last batch (8 images)
    assert row["cycles_per_full_step"] > row["cycles_per_step"]


@pytest.mark.parametrize("argv", [["--seeds", "0"], ["--seeds", "-1"], ["--epochs", "0"], ["--epochs", "x"]])
@pytest.mark.parametrize("mod", [td, tt], ids=["digits", "transformer"])
def test_counts_must_be_positive(mod, argv, capsys):
    with pytest.raises(SystemExit) as e:
        mod.main(argv)
    assert e.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("stem,baseline", [("train_digits", True), ("train_transformer", True),
                                           ("train_digits_followup", False), ("train_digits_posit16", False)])
def test_readme_shows_the_committed_results(stem, baseline):
    doc = json.loads((TRACES / f"{stem}.json").read_text())
    readme = README.read_text()
    for line in td.table(doc["summary"], baseline=baseline).splitlines():
        assert line in readme, line


def test_readme_cycles_are_per_full_step():
    doc = json.loads((TRACES / "train_digits.json").read_text())
    s = next(r for r in doc["summary"] if r["config"] == "FP8")
    step, fwd = s["cycles_per_full_step"], s["fwd_cycles_per_full_step"]
    readme = " ".join(README.read_text().split())      # the prose wraps lines
    assert f"{step:,} cycles per full step" in readme
    assert f"{step / fwd:.1f} times the forward in cycles ({step:,} vs {fwd:,} per full step)" in readme
