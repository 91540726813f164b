"""Fine-tune the shipped MiniLM layer on the simulated hardware: a distillation task built from
traces/minilm_l6.npz alone (no download, no torch).

    python traces/finetune_minilm.py            # -> traces/finetune_minilm.{json,csv}
    python traces/finetune_minilm.py --noise 0.1 --out traces/finetune_minilm_noise01   # follow-up

The task.  The trace holds layer 0 of all-MiniLM-L6-v2 (its six weight matrices and biases)
and, for the 8 recorded sentences (13 tokens, padded), the layer's input and the float32
output of each of its GEMMs.  The student is that layer with every weight matrix perturbed
(W + 0.5 * std(W) * N(0, 1), a fixed seed per run; biases kept; --noise sets the 0.5); it is trained, full batch,
to reproduce the recorded output of ffn.down (the layer's last GEMM) on sentences 0-5 and
evaluated on the held-out sentences 6-7 (another topic pair of traces/sentences.txt).  Loss:
the normalised squared error over the real tokens, sum (y - t)^2 / sum t^2 (padding masked);
SQNR = -10 log10(loss).

The student's forward is the layer up to ffn.down, as traces/minilm.py computes it:
    q, k, v = linear(x)                  12 heads of 32, additive padding mask
    ctx = softmax(q k^T / sqrt(32)) v;   h1 = LayerNorm1(x + out(ctx))
    y = down(gelu(up(h1)))
The trace has no LayerNorm parameters, so LayerNorm1's gain and bias are fitted per feature
(least squares) to the recorded pair (x + attn.out output -> ffn.up input) and kept frozen;
the unperturbed layer with them reproduces the recorded output (meta "teacher_sqnr_db").
LayerNorm2 (after ffn.down) is outside the task: its output is not recorded.

The six linear layers' GEMMs (forward, dgrad, wgrad) run on the 32x32 ws array under the
configurations FP32 (float64 GEMMs), BF16 and FP8 of traces/train_recipes.py; the attention's
batched products, softmax, LayerNorm and GELU are float64 outside the array.  q, k and v get
no dgrad: the layer's input needs no gradient when only this layer is trained (a trainer
skips it, as for the first layer of train_digits.py).  AdamW (no weight decay: it would pull
the weights off the teacher's), lr 1e-3 with cosine decay.
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

import minilm  # noqa: E402
from qat_digits import write  # noqa: E402  (results as .json and .csv, written atomically)
from train_recipes import RECIPES  # noqa: E402
from train_transformer import backward_through, linear, nan_grads  # noqa: E402  (layers float64 or on the array)

import accel_sim as acs  # noqa: E402
from accel_sim.train import AdamW, StepCost, all_finite  # noqa: E402

TRACE = HERE / "minilm_l6.npz"
OUT = HERE / "finetune_minilm"
GEMMS = {"q": "attn.q", "k": "attn.k", "v": "attn.v", "o": "attn.out", "up": "ffn.up", "down": "ffn.down"}
CONFIGS = ("FP32", "BF16", "FP8")
H, DH, D = minilm.HEADS, minilm.HEAD_DIM, minilm.HIDDEN
TRAIN, HELD = tuple(range(6)), (6, 7)
NOISE = 0.5
STEPS = 100
LR = 1e-3
EVAL_EVERY = 10
SEEDS = 5


def fit_layer_norm(pre, post, eps=minilm.LN_EPS):
    """Per-feature gain and bias with post ~ normalize(pre) * gain + bias (least squares)."""
    n = _normalize(pre.reshape(-1, pre.shape[-1]), eps)[0]
    p = post.reshape(-1, post.shape[-1])
    nc, pc = n - n.mean(0), p - p.mean(0)
    gain = (nc * pc).sum(0) / (nc * nc).sum(0)
    return gain, p.mean(0) - gain * n.mean(0)


def _normalize(x, eps=minilm.LN_EPS):
    mu = x.mean(-1, keepdims=True)
    inv = 1.0 / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    return (x - mu) * inv, inv


def load_task(path=TRACE):
    """The recorded layer: weights (float64), input x (8, 13, 384), mask, target (ffn.down's
    recorded output), the fitted LayerNorm1 and how well the teacher reproduces the target."""
    trace = acs.trace.load(path)
    rec = {layer["name"]: {**trace.layer_inputs(layer), "output": trace.arrays[layer["output"]]}
           for layer in trace.layers}
    n, t = trace.task["recorded_sentences"], trace.task["recorded_tokens"]
    g = {k: rec[f"layer0.{v}"] for k, v in GEMMS.items()}
    weights = {}
    for k, r in g.items():
        weights[f"{k}.w"] = np.asarray(r["w"], np.float64)
        weights[f"{k}.b"] = np.asarray(r["bias"], np.float64)
    x = np.asarray(g["q"]["x"], np.float64)
    task = {"x": x, "mask": np.asarray(trace.arrays[trace.task["attention_mask"]][:n, :t], bool),
            "target": np.asarray(g["down"]["output"], np.float64), "sentences": trace.task["sentences"][:n],
            "weights": weights}
    task["ln"] = fit_layer_norm(x + g["o"]["output"], np.asarray(g["up"]["x"], np.float64))
    all_ = tuple(range(n))
    task["teacher_sqnr_db"] = sqnr_db(forward(weights, None, task, all_)[0], task, all_)
    return task


def perturb(weights, seed, noise=NOISE):
    """Every weight matrix plus noise * its std times standard normal noise; biases kept."""
    rng = np.random.default_rng([seed, 11])
    return {k: v + noise * v.std() * rng.standard_normal(v.shape) if k.endswith(".w") else v.copy()
            for k, v in weights.items()}


def _gelu(x):
    return 0.5 * x * (1.0 + minilm._erf(x / np.sqrt(2.0)))


def _gelu_grad(x):
    return 0.5 * (1.0 + minilm._erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)


def forward(params, layers, task, idx):
    """ffn.down's output for sentences idx, and the cache for the backward."""
    x, mask = task["x"][list(idx)], task["mask"][list(idx)]
    b, t, _ = x.shape

    def heads(a):
        return a.reshape(b, t, H, DH).transpose(0, 2, 1, 3)

    f = {n: linear(layers, params, n, x) for n in ("q", "k", "v")}
    q, k, v = (heads(f[n].output) for n in ("q", "k", "v"))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(DH) + np.where(mask, 0.0, np.finfo(np.float32).min)[:, None, None, :]
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    f["o"] = linear(layers, params, "o", (p @ v).transpose(0, 2, 1, 3).reshape(b, t, D))
    nrm, inv = _normalize(x + f["o"].output)
    gain, bias = task["ln"]
    f["up"] = linear(layers, params, "up", nrm * gain + bias)
    f["down"] = linear(layers, params, "down", _gelu(f["up"].output))
    return f["down"].output, {"f": f, "p": p, "q": q, "k": k, "v": v, "nrm": nrm, "inv": inv, "mask": mask}


def nmse(y, task, idx):
    """sum (y - t)^2 / sum t^2 over the real tokens of sentences idx."""
    m = task["mask"][list(idx)]
    t = task["target"][list(idx)]
    return float(np.sum((y - t)[m] ** 2) / np.sum(t[m] ** 2))


def sqnr_db(y, task, idx):
    return -10.0 * np.log10(nmse(y, task, idx))


def loss_and_grads(params, layers, task, idx, cost):
    """Loss (nmse) on sentences idx and the gradients of every parameter; the GEMMs' Results
    are added to cost by (layer, role)."""
    y, c = forward(params, layers, task, idx)
    if not np.all(np.isfinite(y)):
        return float("nan"), nan_grads(params)
    m = c["mask"][..., None]
    t = task["target"][list(idx)]
    denom = np.sum((t * m) ** 2)
    loss = float(np.sum(((y - t) * m) ** 2) / denom)
    f, grads = c["f"], {}
    back = backward_through(f, grads, cost)

    dup = back("down", 2.0 * (y - t) * m / denom) * _gelu_grad(f["up"].output)
    dnrm = back("up", dup) * task["ln"][0]
    nrm = c["nrm"]
    dpre = c["inv"] * (dnrm - dnrm.mean(-1, keepdims=True) - nrm * (dnrm * nrm).mean(-1, keepdims=True))
    b, t_, _ = dpre.shape
    dctx = back("o", dpre).reshape(b, t_, H, DH).transpose(0, 2, 1, 3)
    p, q, k, v = c["p"], c["q"], c["k"], c["v"]
    dp = dctx @ v.transpose(0, 1, 3, 2)
    dv = p.transpose(0, 1, 3, 2) @ dctx
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True)) / np.sqrt(DH)
    dq, dk = ds @ k, ds.transpose(0, 1, 3, 2) @ q
    for name, g in (("q", dq), ("k", dk), ("v", dv)):
        back(name, g.transpose(0, 2, 1, 3).reshape(b, t_, D), need_x=False)
    return loss, grads


def fine_tune(name, seed, task, steps=STEPS, train=TRAIN, held=HELD, noise=NOISE, log=None):
    """One run: (trained params, result row).  The row's teacher_held_sqnr_db is the
    unperturbed (recorded) layer on this configuration's forward, the reference for its hardware;
    init_held_sqnr_db the perturbed layer on this forward (the start of held_sqnr_db), and
    init_held_sqnr_db_float_fwd on the float64 forward (the start of held_sqnr_db_float_weights)."""
    cfg = RECIPES[name]
    layers = None if cfg.fwd is None else {n: cfg.layer(seed, i) for i, n in enumerate(GEMMS)}
    opt = AdamW(LR, master=cfg.master, rounding=cfg.update, seed=seed)
    params = opt.init(perturb(task["weights"], seed, noise))
    init_held_db = sqnr_db(forward(params, layers, task, held)[0], task, held)
    init_held_db_float = sqnr_db(forward(params, None, task, held)[0], task, held)
    t0, curve, costs, skipped = time.perf_counter(), [], [], 0
    for t in range(steps):
        cost = StepCost()
        loss, grads = loss_and_grads(params, layers, task, train, cost)
        costs.append(cost)
        if np.isfinite(loss) and all_finite(grads):
            params = opt.step(params, grads, lr_scale=0.5 * (1 + np.cos(np.pi * t / steps)))
        else:
            skipped += 1
        if (t + 1) % EVAL_EVERY == 0 or t + 1 == steps:
            curve.append({"step": t + 1, "train_loss": loss,
                          "held_sqnr_db": sqnr_db(forward(params, layers, task, held)[0], task, held)})
    seconds = time.perf_counter() - t0
    y_train = forward(params, layers, task, train)[0]
    y_held = forward(params, layers, task, held)[0]
    row = {"config": name, "seed": seed, "train_loss": nmse(y_train, task, train),
           "held_loss": nmse(y_held, task, held), "held_sqnr_db": sqnr_db(y_held, task, held),
           "held_sqnr_db_float_weights": sqnr_db(forward(params, None, task, held)[0], task, held),
           "init_held_sqnr_db": init_held_db, "init_held_sqnr_db_float_fwd": init_held_db_float,
           "teacher_held_sqnr_db": sqnr_db(forward(task["weights"], layers, task, held)[0], task, held),
           "curve": curve, "steps": steps, "skipped_steps": skipped, "seconds": seconds,
           "nonfinite_params": bool(not all_finite(params))}
    costs = [c for c in costs if c.cycles]
    if costs:
        roles = [c.by_role() for c in costs]
        row["energy_uj_per_step"] = float(np.mean([c.energy_pj for c in costs])) / 1e6
        row["cycles_per_step"] = float(np.mean([c.cycles for c in costs]))
        row["per_role"] = {r: {k: float(np.mean([d[r][k] for d in roles])) for k in ("cycles", "energy_pj", "macs")}
                           for r in ("fwd", "dgrad", "wgrad")}
    if log:
        log(f"  {name:5s} seed {seed}: held-out SQNR {row['held_sqnr_db']:.2f} dB "
            f"(from {init_held_db:.2f} on this fwd), "
            f"train loss {row['train_loss']:.4f} ({seconds:.1f} s)")
    return params, row


def summarize(rows):
    """Per configuration: mean/std (ddof=1) of the metrics, paired differences vs FP32."""
    fp32 = {r["seed"]: r for r in rows if r["config"] == "FP32"}
    out = []
    for name in dict.fromkeys(r["config"] for r in rows):
        sel = [r for r in rows if r["config"] == name]
        s = {"config": name, "n_seeds": len(sel)}
        for key in ("held_sqnr_db", "held_sqnr_db_float_weights", "train_loss", "held_loss"):
            a = np.array([r[key] for r in sel])
            d = np.array([r[key] - fp32[r["seed"]][key] for r in sel if r["seed"] in fp32])
            s[f"{key}_mean"], s[f"{key}_std"] = float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0
            s[f"{key}_diff_mean"] = float(d.mean()) if len(d) else None
            s[f"{key}_diff_std"] = float(d.std(ddof=1)) if len(d) > 1 else None
        for key in ("init_held_sqnr_db", "init_held_sqnr_db_float_fwd", "teacher_held_sqnr_db"):
            s[f"{key}_mean"] = float(np.mean([r[key] for r in sel]))
        s["skipped_steps_mean"] = float(np.mean([r["skipped_steps"] for r in sel]))
        e = [r for r in sel if "energy_uj_per_step" in r]
        s["energy_uj_per_step"] = float(np.mean([r["energy_uj_per_step"] for r in e])) if e else None
        for role in ("fwd", "dgrad", "wgrad"):
            s[f"{role}_uj"] = float(np.mean([r["per_role"][role]["energy_pj"] for r in e])) / 1e6 if e else None
        s["cycles_per_step"] = float(np.mean([r["cycles_per_step"] for r in e])) if e else None
        s["seconds_per_run"] = float(np.mean([r["seconds"] for r in sel]))
        out.append(s)
    return out


def table(summary):
    """The README's table (cycles per step, the same for every configuration, are in the JSON);
    each SQNR with its start (the perturbed layer) on the same forward."""
    def pm(s, key, start):
        d = "" if s["config"] == "FP32" or s[f"{key}_diff_mean"] is None else \
            f"{s[f'{key}_diff_mean']:+.2f} +- {s[f'{key}_diff_std'] or 0:.2f}"
        return f"{s[f'{key}_mean']:.2f} +- {s[f'{key}_std']:.2f} (from {s[f'{start}_mean']:.2f})", d
    lines = ["| configuration | held-out SQNR dB, on the array (start) | vs FP32, paired | same weights, float64 fwd "
             "(start) | vs FP32, paired | recorded layer on this fwd | train loss | µJ / step (fwd / dgrad / wgrad) | "
             "s / run |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        e = "" if s["energy_uj_per_step"] is None else \
            f"{s['energy_uj_per_step']:.0f} ({s['fwd_uj']:.0f} / {s['dgrad_uj']:.0f} / {s['wgrad_uj']:.0f})"
        cells = [s["config"], *pm(s, "held_sqnr_db", "init_held_sqnr_db"),
                 *pm(s, "held_sqnr_db_float_weights", "init_held_sqnr_db_float_fwd"),
                 f"{s['teacher_held_sqnr_db_mean']:.1f}", f"{s['train_loss_mean']:.1e}", e,
                 f"{s['seconds_per_run']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=SEEDS)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--noise", type=float, default=NOISE, help="weight perturbation, in units of each matrix's std")
    ap.add_argument("--out", type=Path, default=OUT, help="output path stem (.json and .csv are written)")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.steps < 1 or not args.noise > 0:
        raise SystemExit("--seeds and --steps must be >= 1 and --noise > 0")
    task = load_task()
    t0 = time.perf_counter()
    rows = []
    for s in range(args.seeds):
        for name in CONFIGS:
            rows.append(fine_tune(name, s, task, args.steps, noise=args.noise, log=lambda m: print(m, flush=True))[1])
    elapsed = time.perf_counter() - t0
    summary = summarize(rows)
    meta = {"model": "all-MiniLM-L6-v2 layer 0 (traces/minilm_l6.npz), distilled from perturbed weights",
            "array": "32x32 ws", "seeds": args.seeds, "steps": args.steps, "lr": LR, "noise": args.noise,
            "train_sentences": list(TRAIN), "held_sentences": list(HELD),
            "train_tokens": int(task["mask"][list(TRAIN)].sum()), "held_tokens": int(task["mask"][list(HELD)].sum()),
            "teacher_sqnr_db": task["teacher_sqnr_db"], "elapsed_s": elapsed, "threads": 1,
            "machine": f"{platform.machine()} {platform.processor()}".strip(), "numpy": np.__version__,
            "configs": {k: RECIPES[k].notes for k in CONFIGS}}
    write(args.out, meta, rows, summary)
    print(table(summary))
    print(f"\n{elapsed:.0f} s; wrote {args.out.with_suffix('.json')} and .csv")


if __name__ == "__main__":
    main()
