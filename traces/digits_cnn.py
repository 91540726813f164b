"""A small CNN on scikit-learn's 8x8 digits: the model, its numpy trainer, and the task's
`evaluate(trace, run)` (the forward module named by traces/digits_cnn.npz's task).

Architecture (PyTorch layouts, NCHW activations, OIHW weights):
    x (N, 1, 8, 8) in [0, 1]
    conv1: 3x3, 1 -> 6, stride 1, pad 1     -> (N, 6, 8, 8), ReLU
    conv2: 3x3, 6 -> 16, stride 2, pad 1    -> (N, 16, 4, 4), ReLU
    flatten (C, H, W order)                 -> (N, 256)
    fc:    256 -> 10                        -> logits
3,510 parameters. The forward's three GEMMs go through accel_sim.ops (names "conv1", "conv2",
"fc"), so the same code runs in float32, is recorded into a trace, or runs on a simulated
array. ReLU and flatten are float32 numpy outside the array.

Training (numpy only, float64, im2col backprop, AdamW with cosine decay, random 1-pixel
shifts, one fixed seed for initialisation, batch order and shifts) uses the images only as
plain arrays: scikit-learn is needed to *load* the data set (traces/record_digits.py), never
here, so replaying the shipped trace needs neither scikit-learn nor training.
"""
from __future__ import annotations

import numpy as np

from accel_sim import ops

__all__ = ["PARAM_NAMES", "SHAPES", "forward", "predict", "accuracy", "init_params", "train",
           "split", "evaluate", "params_from_trace", "weights_sha256", "N_TRAIN", "SEED"]

C1, C2 = 6, 16           # conv1 / conv2 output channels (6, not 8: keeps the trace < 2 MB)


def _shapes(c1, c2):
    return {"conv1.w": (c1, 1, 3, 3), "conv1.b": (c1,), "conv2.w": (c2, c1, 3, 3), "conv2.b": (c2,),
            "fc.w": (10, c2 * 4 * 4), "fc.b": (10,)}


SHAPES = _shapes(C1, C2)
PARAM_NAMES = tuple(SHAPES)
CONV = {"conv1": (1, 1), "conv2": (2, 1)}  # name -> (stride, padding)

N_TRAIN = 1297           # load_digits order: first 1297 train, last 500 test
SEED = 20240607          # the one seed: initialisation, batch order, shifts
EPOCHS = 80
BATCH = 32
LR = 1e-2
WD = 1e-2                # decoupled weight decay (AdamW) on weights
SHIFT = 1                # training augmentation: random shifts of up to 1 pixel


# ---------------------------------------------------------------------------------------
# forward (float32, through accel_sim.ops)
# ---------------------------------------------------------------------------------------

def forward(params, x):
    """Logits (N, 10) float32 of images x (N, 1, 8, 8); every GEMM is an acs.ops call."""
    p = {k: np.asarray(params[k], dtype=np.float32) for k in PARAM_NAMES}
    x = np.asarray(x, dtype=np.float32)
    h = ops.conv2d(x, p["conv1.w"], p["conv1.b"], stride=1, padding=1, name="conv1")
    h = np.maximum(h, np.float32(0))
    h = ops.conv2d(h, p["conv2.w"], p["conv2.b"], stride=2, padding=1, name="conv2")
    h = np.maximum(h, np.float32(0))
    return ops.linear(h.reshape(h.shape[0], -1), p["fc.w"], p["fc.b"], name="fc")


def predict(params, x):
    return np.argmax(forward(params, x), axis=1)


def accuracy(params, x, y):
    return float(np.mean(predict(params, x) == np.asarray(y)))


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------

def load_split(needed_for):
    """scikit-learn's digits, split as split() does; a clear exit when scikit-learn is absent."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SystemExit(f"{needed_for} needs scikit-learn (pip install scikit-learn: load_digits ships the "
                         "data)") from None
    d = load_digits()
    return split(d.images, d.target)


def split(images, labels, n_train=N_TRAIN):
    """(x_train, y_train, x_test, y_test) from load_digits' `images` (N, 8, 8; values 0..16)
    and `target`: inputs scaled to [0, 1] (exact in float32: k/16), shaped (N, 1, 8, 8)."""
    x = (np.asarray(images, dtype=np.float64) / 16.0).astype(np.float32)[:, None]
    y = np.asarray(labels, dtype=np.int64)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# ---------------------------------------------------------------------------------------
# training (float64 numpy; im2col / col2im backprop)
# ---------------------------------------------------------------------------------------

def _im2col(x, k, stride, pad):
    """(N, C, H, W) -> rows (N*OH*OW, C*k*k), columns ordered (c, kh, kw) like OIHW."""
    n, c, h, w = x.shape
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((n, c, k, k, oh, ow), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, c * k * k), (oh, ow)


def _col2im(dcols, xshape, k, stride, pad, oh, ow):
    """The adjoint of _im2col: scatter-add row gradients back onto (N, C, H, W)."""
    n, c, h, w = xshape
    d = dcols.reshape(n, oh, ow, c, k, k).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride] += d[:, :, i, j]
    return dxp[:, :, pad:pad + h, pad:pad + w]


def _conv_fwd(x, w, b, stride, pad):
    o, _, k, _ = w.shape
    cols, (oh, ow) = _im2col(x, k, stride, pad)
    y = cols @ w.reshape(o, -1).T + b
    return y.reshape(x.shape[0], oh, ow, o).transpose(0, 3, 1, 2), (cols, oh, ow)


def _conv_bwd(dy, x_shape, w, stride, pad, cache, need_dx=True):
    cols, oh, ow = cache
    o, _, k, _ = w.shape
    dyf = dy.transpose(0, 2, 3, 1).reshape(-1, o)
    dw = (dyf.T @ cols).reshape(w.shape)
    db = dyf.sum(axis=0)
    dx = _col2im(dyf @ w.reshape(o, -1), x_shape, k, stride, pad, oh, ow) if need_dx else None
    return dx, dw, db


def loss_and_grads(params, x, y):
    """Mean softmax cross-entropy of a batch and its gradients (float64)."""
    p = params
    s1, p1 = CONV["conv1"]
    s2, p2 = CONV["conv2"]
    z1, c1 = _conv_fwd(x, p["conv1.w"], p["conv1.b"], s1, p1)
    a1 = np.maximum(z1, 0)
    z2, c2 = _conv_fwd(a1, p["conv2.w"], p["conv2.b"], s2, p2)
    a2 = np.maximum(z2, 0)
    f = a2.reshape(len(x), -1)
    logits = f @ p["fc.w"].T + p["fc.b"]
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    prob = e / e.sum(axis=1, keepdims=True)
    n = len(x)
    loss = -np.mean(np.log(prob[np.arange(n), y]))
    dl = prob
    dl[np.arange(n), y] -= 1.0
    dl /= n
    g = {"fc.w": dl.T @ f, "fc.b": dl.sum(axis=0)}
    da2 = (dl @ p["fc.w"]).reshape(a2.shape) * (z2 > 0)
    da1, g["conv2.w"], g["conv2.b"] = _conv_bwd(da2, a1.shape, p["conv2.w"], s2, p2, c2)
    da1 = da1 * (z1 > 0)
    _, g["conv1.w"], g["conv1.b"] = _conv_bwd(da1, x.shape, p["conv1.w"], s1, p1, c1, need_dx=False)
    return loss, g


def init_params(seed=SEED):
    """He-normal weights, zero biases (float64), from one seeded generator."""
    rng = np.random.default_rng(seed)
    params = {}
    for name in PARAM_NAMES:
        shape = SHAPES[name]
        if name.endswith(".b"):
            params[name] = np.zeros(shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            params[name] = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    return params


def _shift(x, rng, max_shift):
    """Each image moved by a random (dy, dx) in [-max_shift, max_shift]^2, zero fill."""
    n, _, h, w = x.shape
    s = max_shift
    xp = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)))
    d = rng.integers(-s, s + 1, size=(n, 2))
    out = np.empty_like(x)
    for i in range(n):
        out[i] = xp[i, :, s - d[i, 0]:s - d[i, 0] + h, s - d[i, 1]:s - d[i, 1] + w]
    return out


def train(x, y, epochs=EPOCHS, seed=SEED, batch=BATCH, lr=LR, wd=WD, shift=SHIFT, log=None):
    """AdamW on mini-batches in a seeded order; returns float32 params (a dict of arrays).
    Deterministic: the same inputs and seed give the same bits (on one machine's BLAS)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    params = init_params(seed)
    order_rng = np.random.default_rng([seed, 1])
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    t = 0
    for epoch in range(epochs):
        # cosine-decayed step size over the run
        lr_e = lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))
        perm = order_rng.permutation(len(x))
        total = 0.0
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            xb = _shift(x[idx], order_rng, shift) if shift else x[idx]
            loss, g = loss_and_grads(params, xb, y[idx])
            total += loss * len(idx)
            t += 1
            for k in PARAM_NAMES:
                m[k] = b1 * m[k] + (1 - b1) * g[k]
                v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k]
                mh = m[k] / (1 - b1 ** t)
                vh = v[k] / (1 - b2 ** t)
                decay = lr_e * wd * params[k] if k.endswith(".w") else 0.0  # AdamW, weights only
                params[k] = params[k] - lr_e * mh / (np.sqrt(vh) + eps) - decay
        if log is not None:
            log(f"epoch {epoch + 1:3d}  loss {total / len(x):.4f}")
    return {k: params[k].astype(np.float32) for k in PARAM_NAMES}


# ---------------------------------------------------------------------------------------
# the task metric
# ---------------------------------------------------------------------------------------

def weights_sha256(params):
    """sha256 of the float32 weights (PARAM_NAMES order, C order bytes): the trace's
    task.weights_sha256, the check that a re-run of the recorder reproduced the same bits."""
    import hashlib
    h = hashlib.sha256()
    for k in PARAM_NAMES:
        h.update(np.ascontiguousarray(params[k], dtype=np.float32).tobytes())
    return h.hexdigest()


def params_from_trace(trace):
    """The weights as recorded in the trace's layers conv1, conv2 and fc (their w and bias
    inputs); the trace stores each weight once, there."""
    by_name = {layer["name"]: layer for layer in trace.layers}
    params = {}
    for name in PARAM_NAMES:
        layer, role = name.split(".")
        if layer not in by_name:
            raise ValueError(f"the trace has no recorded layer {layer!r} (a digits-cnn trace?)")
        key = by_name[layer]["inputs"].get("bias" if role == "b" else "w")
        params[name] = np.asarray(trace.arrays[key], dtype=np.float32).reshape(SHAPES[name])
    return params


def evaluate(trace, run):
    """Top-1 accuracy over the trace's test images: with every GEMM on the simulated array
    (inside `with run():`) and in float32 (outside)."""
    params = params_from_trace(trace)
    x = np.asarray(trace.arrays[trace.task["images"]], dtype=np.float32)
    y = np.asarray(trace.arrays[trace.task["labels"]])
    fp32 = accuracy(params, x, y)
    with run():
        sim = accuracy(params, x, y)
    return {"accuracy": sim, "accuracy_fp32": fp32, "n": int(len(y))}
