"""Training the digits CNN (traces/digits_cnn.py) from scratch on the simulated hardware: every
GEMM of every training step -- forward, input gradient (dgrad) and weight gradient (wgrad) of
conv1, conv2 and fc -- on a bit-accurate 32x32 weight-stationary array, under the
configurations of traces/train_recipes.py, over several seeds.

    python traces/train_digits.py                  # the experiment -> traces/train_digits.{json,csv}
    python traces/train_digits.py --quick          # 1 seed, 1 epoch, 3 configurations (smoke run)

Per seed and configuration: He-normal initialisation (digits_cnn.init_params(seed)), AdamW
(lr 1e-2, cosine decay, weight decay 1e-2 on weights) over N_TRAIN training images in batches
of BATCH (seeded order, 1-pixel shifts), EPOCHS epochs; softmax cross-entropy in float64
outside the array.  After each epoch: mean training loss and test accuracy (500 images, the
forward on the array).  Energy and cycles per training step from the array's Results, per
layer and GEMM role.  Needs scikit-learn (load_digits); results are written atomically.
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
from qat_digits import write  # noqa: E402  (results as .json and .csv, written atomically)
from train_recipes import EXTRA, RECIPES  # noqa: E402

from accel_sim import qat  # noqa: E402
from accel_sim.scaling import LossScaler  # noqa: E402
from accel_sim.train import AdamW, StepCost, all_finite  # noqa: E402

OUT = HERE / "train_digits"
EPOCHS = 12
BATCH = 32
N_TRAIN = 1297           # all training images
LR = 1e-2
SEEDS = 5
LAYERS = ("conv1", "conv2", "fc")
DEFAULT = tuple(k for k in RECIPES if k not in EXTRA)


def forward(params, layers, x):
    """Logits and each layer's qat.Forward (layers: name -> (array, x_quant, w_quant, Backward))."""
    fw = {}
    h = np.asarray(x, np.float64)
    for name in ("conv1", "conv2"):
        arr, xq, wq, bw = layers[name]
        stride, pad = dc.CONV[name]
        fw[name] = qat.conv2d(arr, h, params[f"{name}.w"], params[f"{name}.b"], stride=stride, padding=pad,
                              x_quant=xq, w_quant=wq, backward=bw)
        h = np.maximum(fw[name].output, 0)
        if not np.all(np.isfinite(h)):      # an accumulator overflowed: the step is lost
            return np.full((len(x), 10), np.nan), fw
    arr, xq, wq, bw = layers["fc"]
    fw["fc"] = qat.linear(arr, h.reshape(len(h), -1), params["fc.w"], params["fc.b"], x_quant=xq, w_quant=wq,
                          backward=bw)
    return fw["fc"].output, fw


def softmax_xent(logits, y):
    """(loss, d loss / d logits) of the mean softmax cross-entropy, float64."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.mean(np.log(np.maximum(p[np.arange(n), y], 1e-300)))
    d = p
    d[np.arange(n), y] -= 1.0
    return loss, d / n


def loss_and_grads(params, layers, x, y, loss_scale, cost):
    """Loss and weight gradients with every GEMM on the array (loss_scale multiplies the loss
    gradient; the weight gradients are divided by it); the step's GEMMs are added to cost."""
    logits, fw = forward(params, layers, x)
    if not np.all(np.isfinite(logits)):
        for name in fw:
            cost.add(name, "fwd", fw[name].result)
        return float("nan"), {k: np.full(np.shape(v), np.nan) for k, v in params.items()}
    loss, g = softmax_xent(logits, y)
    g = g * loss_scale
    grads = {}
    for name in ("fc", "conv2", "conv1"):
        gl = fw[name].backward(g, need_x=name != "conv1")
        cost.add(name, "fwd", fw[name].result)
        for role, results in gl["results"].items():
            cost.add(name, role, results)
        grads[f"{name}.w"], grads[f"{name}.b"] = gl["w"] / loss_scale, gl["bias"] / loss_scale
        if name != "conv1":
            prev = "conv2" if name == "fc" else "conv1"
            g = gl["x"].reshape(fw[prev].output.shape) * (fw[prev].output > 0)
    return loss, grads


def evaluate(params, layers, x, y):
    if layers is None:
        return dc.accuracy(params, x, y)
    logits, _ = forward(params, layers, x)
    return float(np.mean(np.argmax(logits, 1) == y))


def train_one(name, seed, data, epochs, log):
    """One training run: per-epoch curves, final accuracy, step costs, skipped steps, seconds."""
    cfg = RECIPES[name]
    x_train, y_train, x_test, y_test = data
    layers = None if cfg.fwd is None else {n: cfg.layer(seed, i) for i, n in enumerate(LAYERS)}
    opt = AdamW(LR, weight_decay=dc.WD, master=cfg.master, rounding=cfg.update, seed=seed)
    params = opt.init(dc.init_params(seed))
    scaler = None if cfg.loss_scale is None else LossScaler(**cfg.loss_scale)
    rng = np.random.default_rng([seed, 2])
    steps = -(-len(x_train) // BATCH) * epochs
    t, t0, skipped = 0, time.perf_counter(), 0
    curve, step_costs = [], []
    for epoch in range(epochs):
        perm = rng.permutation(len(x_train))
        losses = []
        for i in range(0, len(x_train), BATCH):
            idx = perm[i:i + BATCH]
            xb = dc._shift(x_train[idx].astype(np.float64), rng, dc.SHIFT)
            cost = StepCost()
            if layers is None:
                loss, grads = dc.loss_and_grads(params, xb, y_train[idx])
            else:
                loss, grads = loss_and_grads(params, layers, xb, y_train[idx], 1.0 if scaler is None else scaler.scale,
                                             cost)
                if len(cost.by_role()) == 3:      # a completed step (an overflowing forward stops early)
                    step_costs.append(cost)
            ok = np.isfinite(loss) and all_finite(grads)
            if scaler is not None:
                ok = scaler.update(ok)
            if ok:
                params = opt.step(params, grads, lr_scale=0.5 * (1 + np.cos(np.pi * t / steps)))
                losses.append(loss)
            else:       # skipped with or without a loss scaler
                skipped += 1
            t += 1
        acc = evaluate(params, layers, x_test, y_test)
        curve.append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                      "accuracy": acc, "skipped": skipped})
    seconds = time.perf_counter() - t0
    row = {"config": name, "seed": seed, "accuracy": curve[-1]["accuracy"], "final_loss": curve[-1]["loss"],
           "curve": curve, "seconds": seconds, "steps": t,
           "skipped_steps": skipped, "nonfinite_params": bool(not all_finite(params))}
    if step_costs:
        add_costs(row, step_costs)
        row["per_layer_role"] = step_costs[0].rows()
    log(f"  {name:26s} seed {seed}: acc {row['accuracy']:.4f} loss {row['final_loss']:.4f} "
        f"skipped {row['skipped_steps']} ({seconds:.1f} s)")
    return row


def add_costs(row, step_costs):
    """Mean energy and cycles per completed step (a short last batch included), each role's
    means, and the cycles of a full step and of its forward (step 0 is a full batch)."""
    roles = [c.by_role() for c in step_costs]
    row["energy_nj_per_step"] = float(np.mean([c.energy_pj for c in step_costs])) / 1e3
    row["cycles_per_step"] = float(np.mean([c.cycles for c in step_costs]))
    row["per_role"] = {r: {k: float(np.mean([d[r][k] for d in roles])) for k in ("cycles", "energy_pj", "macs")}
                       for r in ("fwd", "dgrad", "wgrad")}
    row["cycles_per_full_step"] = step_costs[0].cycles
    row["fwd_cycles_per_full_step"] = roles[0]["fwd"]["cycles"]


def summarize(rows):
    """Per configuration: accuracy mean/std (ddof=1), paired difference vs FP32 (same seeds)."""
    fp32 = {r["seed"]: r["accuracy"] for r in rows if r["config"] == "FP32"}
    out = []
    for name in dict.fromkeys(r["config"] for r in rows):
        sel = [r for r in rows if r["config"] == name]
        acc = np.array([r["accuracy"] for r in sel])
        diff = np.array([r["accuracy"] - fp32[r["seed"]] for r in sel if r["seed"] in fp32])
        e = [r["energy_nj_per_step"] for r in sel if "energy_nj_per_step" in r]
        roles = {k: float(np.mean([r["per_role"][k]["energy_pj"] for r in sel])) / 1e3
                 for k in ("fwd", "dgrad", "wgrad")} if e else {}
        out.append({"config": name, "label": RECIPES[name].label, "n_seeds": len(sel), "steps": sel[0]["steps"],
                    "accuracy_mean": float(acc.mean()),
                    "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                    "diff_vs_fp32_mean": float(diff.mean()) if len(diff) else None,
                    "diff_vs_fp32_std": float(diff.std(ddof=1)) if len(diff) > 1 else None,
                    "final_loss_mean": float(np.mean([r["final_loss"] for r in sel])),
                    "skipped_steps_mean": float(np.mean([r["skipped_steps"] for r in sel])),
                    "energy_nj_per_step": float(np.mean(e)) if e else None,
                    "fwd_nj": roles.get("fwd"), "dgrad_nj": roles.get("dgrad"), "wgrad_nj": roles.get("wgrad"),
                    "cycles_per_step": float(np.mean([r["cycles_per_step"] for r in sel])) if e else None,
                    "cycles_per_full_step": sel[0]["cycles_per_full_step"] if e else None,
                    "fwd_cycles_per_full_step": sel[0]["fwd_cycles_per_full_step"] if e else None,
                    "seconds_per_run": float(np.mean([r["seconds"] for r in sel]))})
    return out


def table(summary, baseline=True):
    """The README's table (baseline=False leaves out the FP32 row, for the follow-ups)."""
    lines = ["| configuration (fwd / bwd MAC) | accuracy % | vs FP32, paired (pp) | final loss | skipped steps | "
             "µJ / step (fwd / dgrad / wgrad) | s / run |", "|---|---|---|---|---|---|---|"]
    for r in summary:
        if r["config"] == "FP32" and not baseline:
            continue
        d = "" if r["diff_vs_fp32_mean"] is None or r["config"] == "FP32" else \
            f"{100 * r['diff_vs_fp32_mean']:+.1f} +- {100 * (r['diff_vs_fp32_std'] or 0):.1f}"
        sk = r["skipped_steps_mean"]
        sk = "0" if sk == 0 else f"{sk:.4g} of {r['steps']}"
        e = "" if r["energy_nj_per_step"] is None else \
            f"{r['energy_nj_per_step'] / 1e3:.1f} ({r['fwd_nj'] / 1e3:.1f} / {r['dgrad_nj'] / 1e3:.1f} / " \
            f"{r['wgrad_nj'] / 1e3:.1f})"
        # float(): the JSON stores NaN as "nan"
        lines.append(f"| {r['label']} | {100 * r['accuracy_mean']:.1f} +- {100 * r['accuracy_std']:.1f} | {d} | "
                     f"{float(r['final_loss_mean']):.3f} | {sk} | {e} | {r['seconds_per_run']:.0f} |")
    return "\n".join(lines)


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 3 configurations")
    ap.add_argument("--seeds", type=positive_int, default=None)
    ap.add_argument("--epochs", type=positive_int, default=None)
    ap.add_argument("--configs", default=None, help="';'-separated configuration names (default: all but the "
                    "extra ones)")
    ap.add_argument("--out", type=Path, default=OUT, help="output path stem (.json and .csv are written)")
    args = ap.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else SEEDS)
    epochs = args.epochs or (1 if args.quick else EPOCHS)
    configs = args.configs.split(";") if args.configs else (("FP32", "FP8", "INT8") if args.quick else DEFAULT)
    unknown = [c for c in configs if c not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}; known: {list(RECIPES)}")
    if "FP32" not in configs:
        configs = ("FP32",) + tuple(configs)    # the paired baseline
    x_train, y_train, x_test, y_test = dc.load_split("the experiment")
    data = (x_train[:N_TRAIN], y_train[:N_TRAIN], x_test, y_test)
    t0 = time.perf_counter()
    rows = []
    for s in range(seeds):
        seed = dc.SEED + s
        print(f"seed {seed}", flush=True)
        for name in configs:
            rows.append(train_one(name, seed, data, epochs, lambda m: print(m, flush=True)))
    elapsed = time.perf_counter() - t0
    summary = summarize(rows)
    meta = {"array": "32x32 ws", "seeds": seeds, "epochs": epochs, "batch": BATCH, "n_train": N_TRAIN, "lr": LR,
            "weight_decay": dc.WD, "n_test": len(y_test), "elapsed_s": elapsed, "threads": 1,
            "machine": f"{platform.machine()} {platform.processor()}".strip(), "python": platform.python_version(),
            "numpy": np.__version__, "configs": {k: RECIPES[k].notes for k in configs}}
    write(args.out, meta, rows, summary)
    print(table(summary))
    print(f"\n{elapsed:.0f} s; wrote {args.out.with_suffix('.json')} and .csv")


if __name__ == "__main__":
    main()
