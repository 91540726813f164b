"""PTQ vs QAT on the simulated hardware: the digits CNN (traces/digits_cnn.py) in FP32, after
post-training quantization, and after quantization-aware fine-tuning, with every GEMM of
every forward (training included) on a bit-accurate 32x32 weight-stationary array.

    python traces/qat_digits.py                 # the full experiment -> traces/qat_results.{json,csv}
    python traces/qat_digits.py --quick         # 2 seeds, 1 epoch, a few configurations (a smoke run)

Per seed: train the FP32 model from scratch with that seed (digits_cnn.train, 80 epochs);
then for each hardware configuration:
  PTQ  static scales calibrated (MSE clip search, acs.quant) on 256 training images run
       through the quantized model layer by layer; weights per tensor or per channel,
       activations per tensor (VSQ: per-vector scales computed on the fly for both).
       "ptq_absmax": the same with absmax calibration, for reference.
  QAT  from the PTQ model: EPOCHS epochs of AdamW over the 1297 training images (1-pixel
       shifts, batch 32, cosine-decayed learning rate), forward on the array (acs.qat), backward
       the STE; the static steps are learnt (LSQ gradient, Adam on log step).
Accuracy on the 500 test images; energy per inference = the simulator's energy of the
test-set forward / 500.  Needs scikit-learn (load_digits); results are written atomically.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import accel_sim as acs  # noqa: E402
import digits_cnn as dc  # noqa: E402
from accel_sim import qat  # noqa: E402
from accel_sim._io import atomic_write, jsonable  # noqa: E402

OUT = HERE / "qat_results"
ARRAY = (32, 32, "ws")
N_CALIB = 256
EPOCHS = 10
BATCH = 32
LR = 1e-3          # QAT fine-tuning: a tenth of the FP32 run's peak rate
LR_STEP = 1e-2     # Adam on log(step)
SEEDS = 10

VSQ = {"scale": "vector", "block": 16, "scale_format": "uint4"}
# name -> (operand format, accumulator, activation quantizer kwargs, weight quantizer kwargs)
CONFIGS = {
    "INT8 (per tensor)": ("int8", "int32", {}, {"scale": "tensor"}),
    "E4M3 (per tensor)": ("e4m3fn", "fp32", {}, {"scale": "tensor"}),
    "INT4 (per tensor)": ("int4", "int32", {}, {"scale": "tensor"}),
    "INT4 (per channel)": ("int4", "int32", {}, {"scale": "channel"}),
    "E2M1 (per channel)": ("e2m1", "fp32", {}, {"scale": "channel"}),
    "VSQ-INT4 (uint4 per 16)": ("int4", "int32", VSQ, VSQ),
}
QUICK = ("INT8 (per tensor)", "INT4 (per tensor)", "VSQ-INT4 (uint4 per 16)")
LAYERS = ("conv1", "conv2", "fc")


def quantizers(fmt, xkw, wkw, calibration="mse"):
    """Per layer: (activation, weight) quantizers; static ones calibrate with `calibration`."""
    def make(kw):
        kw = dict(kw)
        if kw.get("scale", "tensor") in ("tensor", "channel"):
            kw.setdefault("calibration", calibration)
        return qat.Quantizer(fmt, kw.pop("scale", "tensor"), **kw)
    return {name: (make(xkw), make(wkw)) for name in LAYERS}


def forward(params, qz, arr, x):
    """Logits (float64) and each layer's qat.Forward, every GEMM on the array."""
    fw = {}
    h = np.asarray(x, np.float64)
    for name in ("conv1", "conv2"):
        stride, pad = dc.CONV[name]
        fw[name] = qat.conv2d(arr, h, params[f"{name}.w"], params[f"{name}.b"], stride=stride, padding=pad,
                              x_quant=qz[name][0], w_quant=qz[name][1])
        h = np.maximum(fw[name].output, 0)
    fw["fc"] = qat.linear(arr, h.reshape(len(h), -1), params["fc.w"], params["fc.b"],
                          x_quant=qz["fc"][0], w_quant=qz["fc"][1])
    return fw["fc"].output, fw


def loss_and_grads(params, qz, arr, x, y):
    """Softmax cross-entropy through the simulated forward; STE gradients of the weights,
    biases and the static steps (keys "<layer>.sx" / "<layer>.sw")."""
    logits, fw = forward(params, qz, arr, x)
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.mean(np.log(p[np.arange(n), y]))
    d = p
    d[np.arange(n), y] -= 1.0
    d /= n
    grads = {}
    g = d
    for name in ("fc", "conv2", "conv1"):
        gl = fw[name].backward(g)
        grads[f"{name}.w"], grads[f"{name}.b"] = gl["w"], gl["bias"]
        for key, step in (("sx", gl["x_step"]), ("sw", gl["w_step"])):
            if step is not None:
                grads[f"{name}.{key}"] = step
        if name != "conv1":
            prev = "conv2" if name == "fc" else "conv1"
            g = gl["x"].reshape(fw[prev].output.shape) * (fw[prev].output > 0)
    return loss, grads


def evaluate(params, qz, arr, x, y):
    """(accuracy, energy per inference in pJ, MACs per inference) on the array."""
    logits, fw = forward(params, qz, arr, x)
    energy = sum(f.result.energy_pj for f in fw.values())
    macs = sum(f.result.macs for f in fw.values())
    return float(np.mean(np.argmax(logits, 1) == y)), energy / len(y), macs / len(y)


def qat_finetune(params, qz, arr, x, y, seed, epochs=EPOCHS):
    """AdamW (weights, biases; decay on weights) and Adam on log steps, cosine-decayed."""
    params = {k: np.asarray(v, np.float64).copy() for k, v in params.items()}
    rng = np.random.default_rng([seed, 2])
    m, v, t = {}, {}, 0
    b1, b2, eps = 0.9, 0.999, 1e-8
    steps = len(range(0, len(x), BATCH)) * epochs
    for epoch in range(epochs):
        perm = rng.permutation(len(x))
        for i in range(0, len(x), BATCH):
            idx = perm[i:i + BATCH]
            xb = dc._shift(x[idx].astype(np.float64), rng, dc.SHIFT)
            _, grads = loss_and_grads(params, qz, arr, xb, y[idx])
            scale = 0.5 * (1 + np.cos(np.pi * t / steps))
            t += 1
            for k, gk in grads.items():
                is_step = k.endswith((".sx", ".sw"))
                if is_step:
                    layer, which = k.split(".")
                    q = qz[layer][0 if which == "sx" else 1]
                    gk = gk * q.step          # d loss / d log(step)
                m[k] = b1 * m.get(k, 0.0) + (1 - b1) * gk
                v[k] = b2 * v.get(k, 0.0) + (1 - b2) * gk * gk
                upd = (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)
                if is_step:
                    q.step = q.step * np.exp(-LR_STEP * scale * upd)
                else:
                    decay = LR * scale * dc.WD * params[k] if k.endswith(".w") else 0.0
                    params[k] = params[k] - LR * scale * upd - decay
    return params


def run(seeds, configs, epochs, log=print):
    x_train, y_train, x_test, y_test = dc.load_split("the experiment")
    rows = []
    for s in range(seeds):
        seed = dc.SEED + s
        t0 = time.perf_counter()
        params = dc.train(x_train, y_train, seed=seed)
        fp32 = dc.accuracy(params, x_test, y_test)
        rows.append({"seed": seed, "config": "FP32", "method": "fp32", "accuracy": fp32, "energy_pj": None,
                     "seconds": time.perf_counter() - t0})
        log(f"seed {seed}: FP32 {fp32:.4f} ({rows[-1]['seconds']:.1f} s)")
        calib = np.random.default_rng([seed, 3]).choice(len(x_train), N_CALIB, replace=False)
        for name in configs:
            fmt, acc, xkw, wkw = CONFIGS[name]
            arr = acs.Array(*ARRAY[:2], ARRAY[2], mac=acs.MAC(fmt, fmt, acc), threads=1)
            qz = quantizers(fmt, xkw, wkw)
            t0 = time.perf_counter()
            forward(params, qz, arr, x_train[calib])          # PTQ: calibrates the static steps
            ptq, energy, macs = evaluate(params, qz, arr, x_test, y_test)
            rows.append({"seed": seed, "config": name, "method": "ptq", "accuracy": ptq, "energy_pj": energy,
                         "macs": macs, "seconds": time.perf_counter() - t0})
            if xkw.get("scale", "tensor") in ("tensor", "channel"):   # the plain absmax PTQ, for reference
                qa = quantizers(fmt, xkw, wkw, "absmax")
                forward(params, qa, arr, x_train[calib])
                acc_a, energy_a, _ = evaluate(params, qa, arr, x_test, y_test)
                rows.append({"seed": seed, "config": name, "method": "ptq_absmax", "accuracy": acc_a,
                             "energy_pj": energy_a, "macs": macs, "seconds": None})
            t0 = time.perf_counter()
            tuned = qat_finetune(params, qz, arr, x_train, y_train, seed, epochs)
            acc_q, energy_q, _ = evaluate(tuned, qz, arr, x_test, y_test)
            rows.append({"seed": seed, "config": name, "method": "qat", "accuracy": acc_q, "energy_pj": energy_q,
                         "macs": macs, "seconds": time.perf_counter() - t0})
            log(f"  {name:22s} PTQ {ptq:.4f}  QAT {acc_q:.4f}  {energy / 1e3:.1f} nJ/inference "
                f"(QAT {rows[-1]['seconds']:.1f} s)")
    return rows


def summarize(rows):
    """Per (config, method): accuracy mean and std (ddof=1) over seeds, energy mean."""
    out = []
    keys = list(dict.fromkeys((r["config"], r["method"]) for r in rows))
    for config, method in keys:
        sel = [r for r in rows if r["config"] == config and r["method"] == method]
        acc = np.array([r["accuracy"] for r in sel])
        energies = [r["energy_pj"] for r in sel if r["energy_pj"] is not None]
        out.append({"config": config, "method": method, "n_seeds": len(sel),
                    "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                    "accuracy_min": float(acc.min()), "accuracy_max": float(acc.max()),
                    "energy_nj_per_inference": float(np.mean(energies)) / 1e3 if energies else None})
    return out


def table(summary, seeds):
    """The summary as a Markdown table: one row per configuration, accuracy mean +- std in %."""
    by = {(r["config"], r["method"]): r for r in summary}

    def cell(config, method):
        r = by.get((config, method))
        return "" if r is None else f"{100 * r['accuracy_mean']:.1f} +- {100 * r['accuracy_std']:.1f}"

    lines = [f"FP32 (float32 numpy): {cell('FP32', 'fp32')} %", "",
             "| configuration (32x32 ws) | PTQ absmax | PTQ MSE | QAT | nJ / inference |", "|---|---|---|---|---|"]
    for config in dict.fromkeys(r["config"] for r in summary if r["config"] != "FP32"):
        e = by[(config, "ptq")]["energy_nj_per_inference"]
        # block-scaled rows calibrate by absmax (their only rule): their PTQ goes in that column
        absmax, mse = ((cell(config, "ptq_absmax"), cell(config, "ptq")) if (config, "ptq_absmax") in by
                       else (cell(config, "ptq"), ""))
        lines.append(f"| {config} | {absmax} | {mse} | {cell(config, 'qat')} | {e:.0f} |")
    return "\n".join(lines) + f"\n\naccuracy % on 500 test images, mean +- std over {seeds} seeds"


def write(out_stem, meta, rows, summary):
    doc = jsonable({"meta": meta, "summary": summary, "runs": rows})
    atomic_write(out_stem.with_suffix(".json"), (json.dumps(doc, indent=1) + "\n").encode())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(summary[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(summary)
    atomic_write(out_stem.with_suffix(".csv"), buf.getvalue().encode())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 1 epoch, 3 configurations")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--configs", default=None, help="comma-separated configuration names (default: all)")
    ap.add_argument("--out", type=Path, default=OUT, help="output path stem (.json and .csv are written)")
    args = ap.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else SEEDS)
    epochs = args.epochs or (1 if args.quick else EPOCHS)
    configs = args.configs.split(",") if args.configs else (QUICK if args.quick else tuple(CONFIGS))
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}; known: {list(CONFIGS)}")
    if seeds < 1 or epochs < 0:
        raise SystemExit("--seeds must be >= 1 and --epochs >= 0")
    t0 = time.perf_counter()
    rows = run(seeds, configs, epochs)
    elapsed = time.perf_counter() - t0
    summary = summarize(rows)
    meta = {"array": f"{ARRAY[0]}x{ARRAY[1]} {ARRAY[2]}", "seeds": seeds, "qat_epochs": epochs, "batch": BATCH,
            "lr": LR, "lr_log_step": LR_STEP, "n_calibration": N_CALIB, "calibration": "mse (static scales)",
            "n_test": 500, "elapsed_s": elapsed, "machine": f"{platform.machine()} {platform.processor()}".strip(),
            "python": platform.python_version(), "numpy": np.__version__, "threads": 1,
            "configs": {k: {"format": v[0], "acc": v[1], "x": v[2], "w": v[3]} for k, v in CONFIGS.items()
                        if k in configs}}
    write(args.out, meta, rows, summary)
    print(table(summary, seeds))
    print(f"\n{elapsed:.0f} s; wrote {args.out.with_suffix('.json')} and .csv")


if __name__ == "__main__":
    main()
