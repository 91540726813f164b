"""How much the demo's energy conclusions depend on the energy table (issue 19).

Runs the demo's sweep (accel-sim demo: the shipped MiniLM layer, 32x32 ws array) under every
EnergyTable preset, writes docs/energy_presets.csv (the rows of all presets) and
docs/energy_presets.png (energy vs error, one panel per preset), and prints, per preset, the
energy spread of the 8-bit configurations, the Pareto front, and every pair of configurations
whose energy order differs between presets.

    python scripts/energy_presets.py [--out docs] [--cache FILE]
"""
from __future__ import annotations

import argparse
import io
import itertools
from pathlib import Path

from accel_sim._io import atomic_write
from accel_sim.cli import DEMO_GRIDS
from accel_sim.energy import EnergyTable
from accel_sim.sweep import Table, pareto, sweep
from accel_sim.trace import _shipped_traces

EIGHT_BIT = ("int8", "e4m3fn", "e5m2", "e3m4", "posit8")


def label(r):
    """Unique per configuration of the demo's grids (headroom included: the grids hold fp16 rows
    with and without it)."""
    h = r.get("headroom") or 0
    return f"{r['a']}/{r['scale']}/{r['acc']}" + (f"/h{h}" if h else "")


def run(cache=None) -> Table:
    trace = _shipped_traces() / "minilm_l6.npz"
    table = Table()
    for grid in DEMO_GRIDS:
        table.extend(sweep(trace, {**grid, "array": ["32x32"], "dataflow": ["ws"],
                                   "energy_table": list(EnergyTable.presets())}, cache=cache, progress=False))
    return table


def by_preset(table):
    out = {}
    for r in table:
        out.setdefault(r["energy_table"], []).append(r)
    return out


def order_flips(groups):
    """Pairs (x, y) cheaper x < y under one preset and the other way round under another."""
    names = list(groups)
    energy = {p: {label(r): r["energy_pj"] for r in rows} for p, rows in groups.items()}
    flips = []
    for p, q in itertools.combinations(names, 2):
        for x, y in itertools.combinations(sorted(energy[p]), 2):
            if (energy[p][x] - energy[p][y]) * (energy[q][x] - energy[q][y]) < 0:
                flips.append((p, q, x, y))
    return flips


def flip_spread(groups, flips) -> float:
    """The largest energy gap between the two configurations of a flipped pair, as max/min - 1
    under either preset: flipped pairs are this close in energy."""
    energy = {p: {label(r): r["energy_pj"] for r in rows} for p, rows in groups.items()}
    return max((max(energy[g][x], energy[g][y]) / min(energy[g][x], energy[g][y]) - 1
                for p, q, x, y in flips for g in (p, q)), default=0.0)


def summary(table) -> str:
    groups = by_preset(table)
    lines = []
    for p, rows in groups.items():
        eight = [r["energy_pj"] for r in rows if r["a"] in EIGHT_BIT]
        mac = {label(r): r["energy_mult"] + r["energy_pe_add"] + r["energy_buffer_add"] + r["energy_reg"]
               for r in rows}
        int8 = mac["int8/tensor/int32"]
        lines.append(f"{p}: 8-bit total energy spread {max(eight) / min(eight) - 1:.0%} "
                     f"(max/min - 1); MAC-level (mult+adds+regs) relative to int8/tensor/int32: "
                     + ", ".join(f"{k} {v / int8:.2f}" for k, v in sorted(mac.items(), key=lambda kv: kv[1])))
        lines.append(f"{p}: Pareto front (energy, error): " + "; ".join(label(r) for r in pareto(rows, x="energy_pj", y="error")))
    flips = order_flips(groups)
    n = len(next(iter(groups.values())))
    lines.append(f"energy-order flips between presets: {len(flips)} of {n * (n - 1) // 2} pairs, all within "
                 f"{flip_spread(groups, flips):.1%} of each other (max/min - 1)")
    lines += [f"  {p} vs {q}: {x} <-> {y}" for p, q, x, y in flips]
    return "\n".join(lines)


def plot(table, path):
    from matplotlib.figure import Figure
    groups = by_preset(table)
    fig = Figure(figsize=(6.5 * len(groups), 5.5))
    axes = fig.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    for ax, (p, rows) in zip(axes, groups.items()):
        finite = [r for r in rows if r["error"] == r["error"] and r["error"] < 1e9]
        ax.scatter([r["pj_per_mac"] for r in finite], [r["error"] for r in finite], s=18)
        for r in finite:
            ax.annotate(label(r), (r["pj_per_mac"], r["error"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
        front = pareto(finite, x="pj_per_mac", y="error")
        ax.step([r["pj_per_mac"] for r in front], [r["error"] for r in front], where="post", color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pJ per MAC (total, DRAM included)")
        ax.set_title(f"energy table: {p}")
    axes[0].set_ylabel("mean relative error of the layer outputs")
    fig.suptitle("MiniLM-L6 layer 0, 32x32 ws array: the demo under each energy table preset")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write(path, buf.getvalue())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs"))
    ap.add_argument("--cache", default=None, help="sweep cache file (an interrupted run resumes)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    table = run(args.cache)
    table.to_csv(out / "energy_presets.csv")
    plot(table, out / "energy_presets.png")
    print(summary(table))
    print(f"wrote {out / 'energy_presets.csv'} and {out / 'energy_presets.png'}")


if __name__ == "__main__":
    main()
