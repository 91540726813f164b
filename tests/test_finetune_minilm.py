"""traces/finetune_minilm.py: one step of fine-tuning the shipped MiniLM layer runs every GEMM
on the array (forward, dgrad, wgrad), the same seed gives the same bits, and the float64
backward (attention, LayerNorm, GELU written by hand) matches central finite differences, and
the README's tables are the committed results."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

TRACES = Path(__file__).resolve().parents[1] / "traces"
sys.path.insert(0, str(TRACES))

import finetune_minilm as fm  # noqa: E402
from train_recipes import RECIPES  # noqa: E402

from accel_sim.train import AdamW, StepCost  # noqa: E402


@pytest.fixture(scope="module")
def task():
    return fm.load_task()


def test_teacher_reproduces_the_recorded_output(task):
    # the unperturbed layer with the fitted LayerNorm1 gives the recorded float32 output
    assert task["teacher_sqnr_db"] > 100


def test_step_runs_every_gemm_on_the_array(task):
    layers = {n: RECIPES["FP8"].layer(0, i) for i, n in enumerate(fm.GEMMS)}
    params = fm.perturb(task["weights"], 0)
    cost = StepCost()
    loss, grads = fm.loss_and_grads(params, layers, task, (0,), cost)
    assert np.isfinite(loss)
    # q, k and v take the layer's input, which needs no gradient: no dgrad for them
    want = {(n, r) for n in fm.GEMMS for r in ("fwd", "wgrad")} | {(n, "dgrad") for n in ("o", "up", "down")}
    assert set(cost.cycles_by) == want
    assert all(c > 0 for c in cost.cycles_by.values())
    assert set(grads) == set(params)
    for name, (_, _, _, bw) in layers.items():
        # the weight gradient (before the STE, which passes everything inside the range) is the array's output
        assert bw.last["wgrad"]["results"][0].output.shape == params[f"{name}.w"].shape


@pytest.mark.parametrize("config", ["FP8", "BF16"])
def test_same_seed_same_bits(task, config):
    p1, r1 = fm.fine_tune(config, 3, task, steps=2, train=(0,), held=(1,))
    p2, r2 = fm.fine_tune(config, 3, task, steps=2, train=(0,), held=(1,))
    p3, _ = fm.fine_tune(config, 4, task, steps=2, train=(0,), held=(1,))
    assert set(p1) == set(p2)
    for k in p1:
        assert np.array_equal(p1[k].view(np.uint64), p2[k].view(np.uint64)), k
    assert r1["held_loss"] == r2["held_loss"] and r1["train_loss"] == r2["train_loss"]
    assert not np.array_equal(p1["up.w"], p3["up.w"])
    assert r1["skipped_steps"] == 0 and set(r1["per_role"]) == {"fwd", "dgrad", "wgrad"}


def test_start_is_scored_on_the_same_forward_as_the_end(task):
    # held_sqnr_db starts from init_held_sqnr_db on the configuration's forward (rebuilt here
    # from the recipe), held_sqnr_db_float_weights from init_held_sqnr_db_float_fwd in float64
    _, row = fm.fine_tune("FP8", 2, task, steps=1, train=(0,), held=(1,))
    params = AdamW(fm.LR).init(fm.perturb(task["weights"], 2))
    layers = {n: RECIPES["FP8"].layer(2, i) for i, n in enumerate(fm.GEMMS)}
    assert row["init_held_sqnr_db"] == fm.sqnr_db(fm.forward(params, layers, task, (1,))[0], task, (1,))
    assert row["init_held_sqnr_db_float_fwd"] == fm.sqnr_db(fm.forward(params, None, task, (1,))[0], task, (1,))
    assert row["init_held_sqnr_db"] != row["init_held_sqnr_db_float_fwd"]


def test_float_backward_matches_finite_differences(task):
    params = fm.perturb(task["weights"], 1)
    loss, grads = fm.loss_and_grads(params, None, task, (0, 1), StepCost())
    rng = np.random.default_rng(5)
    for name in ("q.w", "k.w", "v.b", "o.w", "up.b", "down.w"):
        d = rng.standard_normal(params[name].shape)
        ls = []
        for sign in (1, -1):
            p = dict(params)
            p[name] = params[name] + sign * 1e-6 * d
            ls.append(fm.nmse(fm.forward(p, None, task, (0, 1))[0], task, (0, 1)))
        numeric = (ls[0] - ls[1]) / 2e-6
        assert np.sum(grads[name] * d) == pytest.approx(numeric, rel=1e-5, abs=1e-9), name


@pytest.mark.parametrize("stem", ["finetune_minilm", "finetune_minilm_noise01"])
def test_readme_shows_the_committed_results(stem):
    doc = json.loads((TRACES / f"{stem}.json").read_text())
    readme = (TRACES.parent / "README.md").read_text()
    for line in fm.table(doc["summary"]).splitlines():
        assert line in readme, line
