"""A small transformer trained from scratch on the simulated hardware: the 8x8 digits read as a
sequence of 8 row tokens (8 pixels each), one encoder block, mean pooling, a linear head.

    python traces/train_transformer.py            # -> traces/train_transformer.{json,csv}

Model (d = 32, one attention head, FFN 64, no LayerNorm):
    e  = embed(x) + pos                  embed: linear 8 -> 32; pos: (8, 32) learnt
    h1 = e + o(softmax(q(e) k(e)^T / sqrt(d)) v(e))        q, k, v, o: linear 32 -> 32
    h2 = h1 + down(relu(up(h1)))                            up: 32 -> 64, down: 64 -> 32
    logits = head(mean over tokens of h2)                   head: 32 -> 10
The eight linear layers (forward, dgrad and wgrad GEMMs) run on the 32x32 ws array under the
configurations FP32 (float64 GEMMs), BF16 and FP8 of traces/train_recipes.py; the attention's
two batched products, the softmax and the residual adds are float64 outside the array (the
issue asks for the layers' GEMMs; acs.qat has no batched-matmul layer).  Same optimizer and
schedule as traces/train_digits.py.  Needs scikit-learn (load_digits).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import digits_cnn as dc  # noqa: E402
from train_digits import add_costs, positive_int, summarize, table, write  # noqa: E402
from train_recipes import RECIPES  # noqa: E402

from accel_sim import qat  # noqa: E402
from accel_sim.train import AdamW, StepCost, all_finite  # noqa: E402

OUT = HERE / "train_transformer"
D, FFN, T = 32, 64, 8
LINEARS = {"embed": (D, 8), "q": (D, D), "k": (D, D), "v": (D, D), "o": (D, D), "up": (FFN, D), "down": (D, FFN),
           "head": (10, D)}
CONFIGS = ("FP32", "BF16", "FP8")
EPOCHS = 10
BATCH = 32
LR = 1e-2
SEEDS = 5


def init_params(seed):
    rng = np.random.default_rng([seed, 7])
    p = {}
    for name, (o, i) in LINEARS.items():
        p[f"{name}.w"] = rng.standard_normal((o, i)) * np.sqrt(1.0 / i)
        p[f"{name}.b"] = np.zeros(o)
    p["pos"] = rng.standard_normal((T, D)) * 0.1
    return p


class _Float:
    """The FP32 baseline's linear layer: float64 GEMMs, qat.Forward's interface."""

    def __init__(self, x, w, b):
        self.x, self.w = x, w
        self.output = x @ w.T + b
        self.result = None

    def backward(self, g, need_x=True):
        g2 = g.reshape(-1, self.w.shape[0])
        return {"x": g @ self.w if need_x else None, "w": g2.T @ self.x.reshape(-1, self.w.shape[1]),
                "bias": g2.sum(axis=0), "results": {}}


def linear(layers, params, name, x):
    w, b = params[f"{name}.w"], params[f"{name}.b"]
    if layers is None:
        return _Float(x, w, b)
    arr, xq, wq, bw = layers[name]
    return qat.linear(arr, x, w, b, x_quant=xq, w_quant=wq, backward=bw)


class _Overflow(Exception):
    """An accumulator overflowed in the forward: the step is lost."""


def forward(params, layers, x):
    """Logits and the cache for the backward; NaN logits (and no cache) when a layer's output
    overflowed (the next layer could not quantize it)."""
    tok = x.reshape(len(x), T, 8)
    f = {}

    def lin(name, h):
        f[name] = linear(layers, params, name, h)
        if not np.all(np.isfinite(f[name].output)):
            raise _Overflow
        return f[name].output

    try:
        e = lin("embed", tok) + params["pos"]
        q, k, v = (lin(n, e) for n in ("q", "k", "v"))
        s = q @ k.transpose(0, 2, 1) / np.sqrt(D)
        s = s - s.max(axis=-1, keepdims=True)
        p = np.exp(s) / np.exp(s).sum(axis=-1, keepdims=True)
        h1 = e + lin("o", p @ v)
        u = lin("up", h1)
        h2 = h1 + lin("down", np.maximum(u, 0))
        logits = lin("head", h2.mean(axis=1))
    except _Overflow:
        return np.full((len(x), 10), np.nan), None
    return logits, {"f": f, "p": p, "q": q, "k": k, "v": v, "u": u}


def nan_grads(params):
    """The gradients of a step whose forward overflowed: NaN, so that the step is dropped."""
    return {k: np.full(np.shape(v), np.nan) for k, v in params.items()}


def backward_through(f, grads, cost):
    """back(name, g, need_x=True) for the layers f of a forward pass: layer `name`'s backward
    (its dgrad/wgrad GEMMs on the array where it runs there) given dY = g; its gradients go into
    grads, its forward and backward GEMMs' costs into cost by (layer, role); returns dX."""
    def back(name, g, need_x=True):
        gl = f[name].backward(g, need_x=need_x)
        if f[name].result is not None:
            cost.add(name, "fwd", f[name].result)
            for role, res in gl["results"].items():
                cost.add(name, role, res)
        grads[f"{name}.w"], grads[f"{name}.b"] = gl["w"], gl["bias"]
        return gl["x"]
    return back


def loss_and_grads(params, layers, x, y, cost):
    logits, c = forward(params, layers, x)
    if not np.all(np.isfinite(logits)):
        return float("nan"), nan_grads(params)
    z = logits - logits.max(axis=1, keepdims=True)
    pr = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.mean(np.log(np.maximum(pr[np.arange(n), y], 1e-300)))
    pr[np.arange(n), y] -= 1.0
    grads = {}
    back = backward_through(c["f"], grads, cost)

    dpool = back("head", pr / n)
    dh2 = np.repeat(dpool[:, None, :] / T, T, axis=1)
    du = back("down", dh2)
    dh1 = dh2 + back("up", np.where(c["u"] > 0, du, 0.0))
    dctx = back("o", dh1)
    p, q, k, v = c["p"], c["q"], c["k"], c["v"]
    dp = dctx @ v.transpose(0, 2, 1)
    dv = p.transpose(0, 2, 1) @ dctx
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True)) / np.sqrt(D)
    dq, dk = ds @ k, ds.transpose(0, 2, 1) @ q
    de = dh1 + back("q", dq) + back("k", dk) + back("v", dv)
    grads["pos"] = de.sum(axis=0)
    back("embed", de, need_x=False)
    return loss, grads


def accuracy(params, layers, x, y):
    logits, _ = forward(params, layers, x)
    return float(np.mean(np.argmax(logits, 1) == y))


def train_one(name, seed, data, epochs, log):
    cfg = RECIPES[name]
    x_train, y_train, x_test, y_test = data
    layers = None if cfg.fwd is None else {n: cfg.layer(seed, i) for i, n in enumerate(LINEARS)}
    opt = AdamW(LR, weight_decay=dc.WD, master=cfg.master, rounding=cfg.update, seed=seed)
    params = opt.init(init_params(seed))
    rng = np.random.default_rng([seed, 2])
    steps = -(-len(x_train) // BATCH) * epochs
    t, t0, curve, costs, skipped = 0, time.perf_counter(), [], [], 0
    for epoch in range(epochs):
        perm = rng.permutation(len(x_train))
        losses = []
        for i in range(0, len(x_train), BATCH):
            idx = perm[i:i + BATCH]
            cost = StepCost()
            loss, grads = loss_and_grads(params, layers, x_train[idx].astype(np.float64), y_train[idx], cost)
            if cost.cycles:
                costs.append(cost)
            if np.isfinite(loss) and all_finite(grads):
                params = opt.step(params, grads, lr_scale=0.5 * (1 + np.cos(np.pi * t / steps)))
                losses.append(loss)
            else:       # an overflow: the step is dropped
                skipped += 1
            t += 1
        curve.append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                      "accuracy": accuracy(params, layers, x_test.astype(np.float64), y_test), "skipped": skipped})
    seconds = time.perf_counter() - t0
    row = {"config": name, "seed": seed, "accuracy": curve[-1]["accuracy"], "final_loss": curve[-1]["loss"],
           "curve": curve, "seconds": seconds, "steps": t, "skipped_steps": skipped,
           "nonfinite_params": bool(not all_finite(params))}
    if costs:
        add_costs(row, costs)
    log(f"  {name:6s} seed {seed}: acc {row['accuracy']:.4f} loss {row['final_loss']:.4f} "
        f"skipped {skipped} ({seconds:.1f} s)")
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=positive_int, default=SEEDS)
    ap.add_argument("--epochs", type=positive_int, default=EPOCHS)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    data = dc.load_split("the experiment")
    t0 = time.perf_counter()
    rows = []
    for s in range(args.seeds):
        seed = dc.SEED + s
        for name in CONFIGS:
            rows.append(train_one(name, seed, data, args.epochs, lambda m: print(m, flush=True)))
    elapsed = time.perf_counter() - t0
    summary = summarize(rows)
    meta = {"model": "1-block transformer on digits rows (d 32, FFN 64, 1 head)", "array": "32x32 ws",
            "seeds": args.seeds, "epochs": args.epochs, "batch": BATCH, "lr": LR, "n_train": len(data[0]),
            "n_test": len(data[3]), "elapsed_s": elapsed, "threads": 1,
            "machine": f"{platform.machine()} {platform.processor()}".strip(), "numpy": np.__version__,
            "configs": {k: RECIPES[k].notes for k in CONFIGS}}
    write(args.out, meta, rows, summary)
    print(table(summary))
    print(f"\n{elapsed:.0f} s; wrote {args.out.with_suffix('.json')} and .csv")


if __name__ == "__main__":
    main()
