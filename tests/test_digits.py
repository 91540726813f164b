"""The shipped digits-CNN trace (traces/digits_cnn.npz) and its forward module
(traces/digits_cnn.py): the file loads and is what the recorder says it is, its recorded
float32 outputs are a fresh float32 forward of its own weights on its own images, the float32
accuracy is >= 95%, evaluate() with no array gives that accuracy and with an array runs every
GEMM there, and training is deterministic.  Needs no scikit-learn (except the slow full
re-training check)."""
from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import accel_sim as acs
from accel_sim import ops

TRACES = Path(__file__).resolve().parents[1] / "traces"
TRACE_FILE = TRACES / "digits_cnn.npz"
LAYERS = [("conv1", "conv2d", {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}),
          ("conv2", "conv2d", {"stride": [2, 2], "padding": [1, 1], "dilation": [1, 1], "groups": 1}),
          ("fc", "linear", {})]
# A fresh float32 forward on another machine's BLAS may sum in another order: recorded and
# fresh outputs must agree to this fraction of the layer's largest magnitude (float32 eps is
# 6e-8; K <= 256 terms).  On the machine that recorded the file they are bit-identical.
F32_TOL = 2e-5


def load_module(name):
    spec = importlib.util.spec_from_file_location(f"_test_{name}", TRACES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dc():
    return load_module("digits_cnn")


@pytest.fixture(scope="module")
def trace():
    return acs.trace.load(TRACE_FILE)


def test_trace_loads_and_is_small(trace, dc):
    assert TRACE_FILE.stat().st_size < 2_000_000
    assert trace.model == "digits-cnn"
    assert "load_digits" in trace.source and str(dc.SEED) in trace.source
    assert [(l["name"], l["op"], l["attrs"]) for l in trace.layers] == LAYERS
    task = trace.task
    assert task["forward"] == "digits_cnn.py" and task["metric"] == "accuracy"
    assert (TRACES / task["forward"]).is_file()
    x, y = trace.arrays[task["images"]], trace.arrays[task["labels"]]
    assert x.shape == (500, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (500,) and y.dtype.kind == "i" and set(np.unique(y)) == set(range(10))
    # inputs are load_digits' 0..16 pixel values / 16, exactly
    assert np.array_equal(x * 16, np.round(x * 16)) and x.min() == 0 and x.max() == 1
    # the images are conv1's recorded input; every weight is held once, in its layer
    assert task["images"] == trace.layers[0]["inputs"]["x"]
    params = dc.params_from_trace(trace)
    for k, shape in dc.SHAPES.items():
        assert params[k].shape == shape and params[k].dtype == np.float32
    assert dc.weights_sha256(params) == task["weights_sha256"]
    assert task["n"] == 500


def test_recorded_outputs_are_a_fresh_float32_forward(trace, dc):
    params = dc.params_from_trace(trace)
    x = trace.arrays[trace.task["images"]]
    with acs.trace.record("fresh", "test") as rec:
        logits = dc.forward(params, x)
    fresh = rec.trace
    assert [l["name"] for l in fresh.layers] == [l["name"] for l in trace.layers]
    for old, new in zip(trace.layers, fresh.layers):
        for role, key in old["inputs"].items():
            want, got = trace.arrays[key], fresh.arrays[new["inputs"][role]]
            assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
            if role != "x" or old["name"] == "conv1":  # weights, biases, images: stored as they are
                assert np.array_equal(got, want), (old["name"], role)
            else:  # activations: the previous layer's output through ReLU
                np.testing.assert_allclose(got, want, rtol=0, atol=F32_TOL * np.abs(want).max())
        want, got = trace.arrays[old["output"]], fresh.arrays[new["output"]]
        assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=F32_TOL * np.abs(want).max(), err_msg=old["name"])
    assert np.array_equal(np.argmax(logits, 1), np.argmax(trace.arrays[trace.layers[-1]["output"]], 1))


def test_float32_accuracy(trace, dc):
    params = dc.params_from_trace(trace)
    x, y = trace.arrays[trace.task["images"]], trace.arrays[trace.task["labels"]]
    acc = dc.accuracy(params, x, y)
    assert acc >= 0.95
    assert acc == trace.task["accuracy_fp32"]


def test_evaluate_without_an_array_is_float32(trace, dc):
    result = dc.evaluate(trace, contextlib.nullcontext)
    assert result == {"accuracy": trace.task["accuracy_fp32"], "accuracy_fp32": trace.task["accuracy_fp32"], "n": 500}


def test_evaluate_runs_every_gemm_inside_run(trace, dc):
    calls = []

    def spy(op, name, inputs, attrs, compute):
        calls.append((name, op))
        return compute()

    result = dc.evaluate(trace, lambda: ops.handler(spy))
    assert calls == [("conv1", "conv2d"), ("conv2", "conv2d"), ("fc", "linear")]
    assert result["accuracy"] == result["accuracy_fp32"] >= 0.95


def test_replay_with_task_metric(trace):
    """acs.trace.replay finds traces/digits_cnn.py and runs the whole test set on the array."""
    arr = acs.Array(16, 16, "ws", mac=acs.MAC("int8", "int8", "int32"))
    report = acs.trace.replay(TRACE_FILE, arr)
    assert [l["name"] for l in report.layers] == ["conv1", "conv2", "fc"]
    assert all(l["metrics"]["sqnr_db"] > 25 for l in report.layers)
    assert report.task["n"] == 500 and report.task["accuracy_fp32"] == trace.task["accuracy_fp32"]
    assert 0.9 <= report.task["accuracy"] <= 1.0
    # a 4-bit array loses accuracy the metric can see
    arr4 = acs.Array(16, 16, "ws", mac=acs.MAC("int4", "int4", "int32"))
    assert acs.trace.replay(trace, arr4, trace_dir=TRACES).task["accuracy"] < report.task["accuracy"]


def test_gradients_match_finite_differences(dc, trace):
    rng = np.random.default_rng(3)
    params = dc.init_params(5)
    for k in params:
        if k.endswith(".b"):  # off the ReLU kinks that zero inputs put exactly at 0
            params[k] = params[k] + rng.uniform(0.05, 0.1, params[k].shape)
    x = trace.arrays[trace.task["images"]][:6].astype(np.float64)
    y = trace.arrays[trace.task["labels"]][:6]
    _, grads = dc.loss_and_grads(params, x, y)
    for k in dc.PARAM_NAMES:
        for _ in range(4):
            i = tuple(int(rng.integers(0, s)) for s in params[k].shape)
            h = 1e-6
            plus = {n: v.copy() for n, v in params.items()}
            minus = {n: v.copy() for n, v in params.items()}
            plus[k][i] += h
            minus[k][i] -= h
            fd = (dc.loss_and_grads(plus, x, y)[0] - dc.loss_and_grads(minus, x, y)[0]) / (2 * h)
            assert grads[k][i] == pytest.approx(fd, rel=1e-4, abs=1e-7), (k, i)


def test_short_training_is_deterministic(dc, trace):
    x = trace.arrays[trace.task["images"]][:160]
    y = trace.arrays[trace.task["labels"]][:160]
    a = dc.train(x, y, epochs=2)
    b = dc.train(x, y, epochs=2)
    c = dc.train(x, y, epochs=2, seed=dc.SEED + 1)
    assert all(a[k].dtype == np.float32 and np.array_equal(a[k], b[k]) for k in dc.PARAM_NAMES)
    assert dc.weights_sha256(a) == dc.weights_sha256(b) != dc.weights_sha256(c)


@pytest.mark.slow
def test_full_retraining_reproduces_the_shipped_weights(trace):
    """Re-run the recorder's training (needs scikit-learn; a few seconds).  Bit-identical on the
    recording machine's numpy/BLAS; another BLAS may differ in the last bits."""
    pytest.importorskip("sklearn")
    rd = load_module("record_digits")
    x_train, y_train, x_test, y_test = rd.load_data()
    assert np.array_equal(x_test, trace.arrays[trace.task["images"]])
    assert np.array_equal(y_test, trace.arrays[trace.task["labels"]])
    params = rd.digits_cnn.train(x_train, y_train)
    assert rd.digits_cnn.weights_sha256(params) == trace.task["weights_sha256"]
