"""The cost model of the systolic array: cycles, action counts, memory traffic and energy of
GEMMs (Plan), without numerics.

Cycles with ideal memory follow SCALE-Sim's per-fold model (DESIGN.md "Cycles"): for
dataflow os/ws/is the array folds Sr x Sc over R x C and streams T, per fold T + R + C - 2
(os) or 2R + C + T - 2 (ws, is) cycles.  Finite SRAM and DRAM bandwidth add stall cycles
(docs/array.md).  The functions take the Array whose size, dataflow, MAC, memories and energy
table they cost."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from accel_sim.energy import ENERGY_PARTS, evaluate

__all__ = ["Plan", "gemm_cycles", "plan", "sum_plans", "with_energy", "MEASURED", "MEASURED_COUNTS", "ESTIMATED"]


def gemm_cycles(dataflow, rows, cols, m, n, k, terms=1):
    """(folds, cycles) of one GEMM with ideal memory, per DESIGN.md's table."""
    kp = -(-k // terms)
    sr, sc, t = {"os": (m, n, kp), "ws": (kp, n, m), "is": (kp, m, n)}[dataflow]
    folds = -(-sr // rows) * -(-sc // cols)
    per_fold = t + rows + cols - 2 if dataflow == "os" else 2 * rows + cols + t - 2
    return folds, folds * per_fold


MEASURED = ("measured: zero operands gated (inputs held), switching from the operands' register toggles "
            "and the active multiplies' input toggles")
# the engine's data-dependent counts (acs_gemm_counts), merged into a measured run's plan
MEASURED_COUNTS = ("zero_macs", "toggles_a", "toggles_b", "mult_toggles_a", "mult_toggles_b")
ESTIMATED = "data-independent estimate: 50% switching activity, no gating"


@dataclass
class Plan:
    """Cycles, action counts, memory traffic and energy of one or more GEMMs (no numerics)."""

    cycles: int
    folds: int
    stall_cycles: int
    macs: int
    utilization: float
    time_us: float
    counts: dict = field(default_factory=dict)
    energy_pj: float = 0.0
    energy_breakdown: dict = field(default_factory=dict)
    energy_basis: str = ESTIMATED

    @property
    def pj_per_mac(self) -> float:
        return self.energy_pj / self.macs if self.macs else 0.0

    @property
    def tops_per_w(self) -> float:
        """Operations (2 per MAC) per joule / 1e12; power_w over the run's time at the clock."""
        return 2 * self.macs / self.energy_pj if self.energy_pj else 0.0

    @property
    def power_w(self) -> float:
        return self.energy_pj * 1e-12 / (self.time_us * 1e-6) if self.time_us else 0.0

    def to_dict(self) -> dict:
        return {"cycles": self.cycles, "folds": self.folds, "stall_cycles": self.stall_cycles,
                "macs": self.macs, "utilization": self.utilization, "time_us": self.time_us,
                "counts": dict(self.counts), "energy_pj": self.energy_pj,
                "energy_breakdown": dict(self.energy_breakdown), "energy_basis": self.energy_basis,
                "pj_per_mac": self.pj_per_mac, "tops_per_w": self.tops_per_w, "power_w": self.power_w}


def sum_plans(plans, rows, cols, terms, clock_ghz, cls=Plan, **extra):
    """One Plan (or cls) for several GEMMs run one after another: cycles, counts and energy add up."""
    cycles = sum(p.cycles for p in plans)
    counts = {}
    for p in plans:
        for key, v in p.counts.items():
            counts[key] = counts.get(key, 0) + v
    macs = sum(p.macs for p in plans)
    breakdown = {part: sum(p.energy_breakdown.get(part, 0.0) for p in plans) for part in ENERGY_PARTS}
    return cls(cycles=cycles, folds=sum(p.folds for p in plans), stall_cycles=sum(p.stall_cycles for p in plans),
               macs=macs, utilization=macs / (rows * cols * terms * cycles) if cycles else 0.0,
               time_us=cycles / (clock_ghz * 1e3), counts=counts, energy_pj=sum(breakdown.values()),
               energy_breakdown=breakdown, energy_basis=plans[0].energy_basis if plans else ESTIMATED, **extra)


def fold_groups(size, tile):
    """The folds of `size` in tiles of `tile` as groups (is_first, first index, tile size, count):
    the first fold, the full ones after it, and a partial last one."""
    n = -(-size // tile)
    if n == 0:
        return []
    groups = [(True, 0, min(tile, size), 1)]
    last = size - (n - 1) * tile
    if n > 2 or (n == 2 and last == tile):
        full = n - 1 if last == tile else n - 2
        groups.append((False, 1, tile, full))
    if n > 1 and last != tile:
        groups.append((False, n - 1, last, 1))
    return groups


def plan(array, m, n, k, out_bits=32) -> Plan:
    """Cycles, action counts, memory traffic and estimated energy of an M x K by K x N GEMM on array."""
    R, C, nt, df = array.rows, array.cols, array.terms, array.dataflow
    folds, ideal = gemm_cycles(df, R, C, m, n, k, nt)
    kp = -(-k // nt)
    a_bytes, b_bytes = array.mac.a.bits / 8, array.mac.b.bits / 8
    acc_bytes = (array.mac.acc if df == "os" else array.buffer_acc).bits / 8
    sr, sc, t = {"os": (m, n, kp), "ws": (kp, n, m), "is": (kp, m, n)}[df]
    per_fold = t + R + C - 2 if df == "os" else 2 * R + C + t - 2
    # Folds come in at most three sizes per axis (the first, the full middle ones, the last),
    # so sums over the fold grid are sums over at most 3 x 3 weighted groups.
    rows_ = [(first, r, min(k, (i + 1) * R * nt) - i * R * nt if df != "os" else k, cnt)
             for first, i, r, cnt in fold_groups(sr, R)]
    cols_ = [(first, c, cnt) for first, _, c, cnt in fold_groups(sc, C)]
    a_key, b_key = {"os": ("row", "col"), "ws": ("row", "fold"), "is": ("fold", "row")}[df]
    stream = {"os": 0, "ws": m, "is": n}[df]
    groups = []   # (weight, a elements, b elements, out writes, out reads, row first, col first)
    for rf, r, kf, rc in rows_:
        for cf, c, cc in cols_:
            if df == "os":
                av, bv, ow, orr = r * k, c * k, r * c, 0
            else:
                stat, flow = kf * c, kf * stream
                av, bv = (flow, stat) if df == "ws" else (stat, flow)
                ow = c * stream
                orr = 0 if rf else ow
            groups.append((rc * cc, av, bv, ow, orr, rf, cf))
    total = lambda i: sum(g[0] * g[i] for g in groups)  # noqa: E731
    counts = {
        "macs": m * n * k,
        "pe_adds": m * n * kp,
        "buffer_adds": 0 if df == "os" else m * n * -(-sr // R),
        "sram_read_bytes_a": math.ceil(total(1) * a_bytes),
        "sram_read_bytes_b": math.ceil(total(2) * b_bytes),
        "sram_write_bytes_out": math.ceil(total(3) * acc_bytes),
        "sram_read_bytes_out": math.ceil(total(4) * acc_bytes),
    }
    counts.update(_register_loads(array, m, n, kp))
    dram, stall = _dram(array, m, n, k, groups, a_bytes, b_bytes, a_key, b_key, acc_bytes, out_bits, per_fold,
                             df, folds)
    counts["dram_bytes"] = dram
    counts["stall_cycles"] = stall
    cycles = ideal + stall
    counts["cycles"] = cycles
    counts["pe_cycles"] = R * C * cycles
    macs = m * n * k
    plan = Plan(cycles=cycles, folds=folds, stall_cycles=stall, macs=macs,
                utilization=macs / (R * C * nt * cycles) if cycles else 0.0,
                time_us=cycles / (array.clock_ghz * 1e3), counts=counts)
    return with_energy(array, plan, measured=False)

def _dram(array, m, n, k, groups, a_bytes, b_bytes, a_key, b_key, acc_bytes, out_bits, per_fold, df, folds):
    """DRAM bytes and stall cycles: an operand that fits its SRAM share is fetched once, at
    its first use; one that does not is fetched by every fold that uses it.  A fold's fetch
    must arrive while the previous fold computes (double buffering); outputs drain the same
    way, the last fold's after it."""
    out_bytes = m * n * out_bits / 8
    total_a, total_b = m * k * array.mac.a.bits / 8, k * n * array.mac.b.bits / 8
    if array.sram_kb is None or array.dram_bytes_per_cycle is None or not groups:
        return math.ceil(total_a + total_b + out_bytes), 0

    def fetched(nbytes, total, kb, key, row_first, col_first):
        if total > kb * 1024 or key == "fold":
            return nbytes                                   # every fold brings its own slice
        if key == "row":
            return nbytes if col_first else 0               # a slice per row fold, first used at column 0
        return nbytes if row_first else 0                   # a slice per column fold, first used at row 0

    bw = float(array.dram_bytes_per_cycle)
    fetch_total = stall = 0.0
    out_tile = max(g[3] for g in groups) * acc_bytes
    spill = 2 * sum(g[0] * g[4] for g in groups) * acc_bytes if df != "os" and out_tile > array.sram_kb[2] * 1024 else 0.0
    for weight, av, bv, _, _, rf, cf in groups:
        f = (fetched(av * a_bytes, total_a, array.sram_kb[0], a_key, rf, cf)
             + fetched(bv * b_bytes, total_b, array.sram_kb[1], b_key, rf, cf))
        fetch_total += weight * f
        need = math.ceil(f / bw)
        if rf and cf:                                       # the first fold: its fetch is exposed
            stall += need + (weight - 1) * max(0, need - per_fold)
        else:
            stall += weight * max(0, need - per_fold)
    stall += math.ceil(spill / bw) + math.ceil(out_bytes / max(1, folds) / bw)
    return math.ceil(fetch_total + spill + out_bytes), int(stall)

def _register_loads(array, m, n, kp):
    """Codes loaded into the PEs' operand registers (each lane of an n-term PE counts):
    a streaming operand once per PE per step, a stationary one once per PE per fold."""
    nt = array.terms
    streamed = m * n * kp * nt
    if array.dataflow == "os":
        return {"reg_loads_a": streamed, "reg_loads_b": streamed}
    if array.dataflow == "ws":
        return {"reg_loads_a": streamed, "reg_loads_b": kp * nt * n}
    return {"reg_loads_a": kp * nt * m, "reg_loads_b": streamed}

def with_energy(array, plan, measured):
    """plan with its energy from array's table (measured: from the data's counts)."""
    plan.energy_pj, plan.energy_breakdown = evaluate(array.energy, array, plan.counts, measured)
    plan.energy_basis = MEASURED if measured else ESTIMATED
    return plan
