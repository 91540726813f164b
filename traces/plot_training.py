"""The training experiment's figure: test accuracy and training loss per epoch (mean over seeds)
for the digits CNN and the small transformer, and final accuracy against energy per training
step on the array.

    python traces/plot_training.py     # traces/train_{digits,transformer}.json -> docs/training.png
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from accel_sim._io import atomic_write  # noqa: E402


def curves(doc):
    """{config: (epochs, mean loss, mean accuracy)} over the seeds."""
    out = {}
    for name in dict.fromkeys(r["config"] for r in doc["runs"]):
        runs = [r["curve"] for r in doc["runs"] if r["config"] == name]
        ep = [c["epoch"] for c in runs[0]]
        # a lost step's loss is NaN (null in the JSON); a run that never completed a step has no curve
        losses = np.array([[np.nan if c["loss"] is None else c["loss"] for c in r] for r in runs], dtype=float)
        loss = np.array([np.nanmean(col) if np.any(~np.isnan(col)) else np.nan for col in losses.T])
        acc = np.mean([[c["accuracy"] for c in r] for r in runs], axis=0)
        out[name] = (ep, loss, acc)
    return out


def main():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    docs = {k: json.loads((HERE / f"train_{k}.json").read_text()) for k in ("digits", "transformer")}
    fig, ax = plt.subplots(2, 3, figsize=(16, 9))
    for row, (task, doc) in enumerate(docs.items()):
        cv = curves(doc)
        color = {name: f"C{i}" for i, name in enumerate(cv)}   # one colour per configuration in all panels
        for name, (ep, loss, acc) in cv.items():
            style = "--" if name.startswith("FP32") else "-"
            ax[row, 0].plot(ep, 100 * acc, style, label=name, color=color[name])
            ax[row, 1].plot(ep, loss, style, label=name, color=color[name])
        ax[row, 0].set(title=f"{task}: test accuracy (mean of {doc['meta']['seeds']} seeds)", xlabel="epoch",
                       ylabel="%", ylim=(0, 100))
        ax[row, 1].set(title=f"{task}: training loss", xlabel="epoch", yscale="log")
        ax[row, 0].legend(fontsize=7)
        for r in doc["summary"]:
            if r["energy_nj_per_step"] is None:
                continue
            ax[row, 2].errorbar(r["energy_nj_per_step"] / 1e3, 100 * r["accuracy_mean"], yerr=100 * r["accuracy_std"],
                                fmt="o", capsize=3, color=color[r["config"]])
            ax[row, 2].annotate(r["config"], (r["energy_nj_per_step"] / 1e3, 100 * r["accuracy_mean"]), fontsize=7,
                                xytext=(4, 4), textcoords="offset points")
        fp32 = [r for r in doc["summary"] if r["config"] == "FP32"]
        if fp32:
            ax[row, 2].axhline(100 * fp32[0]["accuracy_mean"], ls="--", c="gray", lw=1, label="FP32 (not on the array)")
            ax[row, 2].legend(fontsize=7)
        ax[row, 2].set(title=f"{task}: final accuracy vs energy per training step", xlabel="uJ per step (3 GEMMs x layers)",
                       ylabel="%")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    out = HERE.parent / "docs" / "training.png"
    atomic_write(out, buf.getvalue())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
