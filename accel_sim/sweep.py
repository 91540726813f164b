"""Design-space sweeps: every combination of formats, scaling, accumulators, rounding, array
sizes and dataflows run on one target (a trace, a GEMM's operands or a conv layer), in
parallel through any concurrent.futures executor, resumable from an atomic cache file; and
Pareto fronts of the resulting table."""
from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import io
import itertools
import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from accel_sim._io import atomic_write, jsonable as _jsonable
from accel_sim.energy import EnergyTable
from accel_sim.overflow import AccumulatorOverflowWarning

__all__ = ["sweep", "pareto", "Table", "GRID_KEYS", "expand_grid"]

GRID_KEYS = ("a", "b", "scale_a", "scale", "scale_format", "acc", "rounding", "array", "dataflow", "calibration",
             "energy_table")
# keys a configuration (and its row) holds only when the grid names them
OPTIONAL_KEYS = ("headroom",)
DEFAULTS = {"a": "int8", "b": None, "scale_a": "tensor", "scale": "tensor", "scale_format": None, "acc": None, "rounding": None, "array": "32x32",
            "dataflow": "ws", "calibration": "absmax", "energy_table": "horowitz45"}
INT_FORMATS = ("int8", "uint8", "int4")


class Table(list):
    """Rows (dicts) of a sweep; .skipped lists configurations that cannot be built."""

    skipped: list

    def __init__(self, rows=(), skipped=()):
        super().__init__(rows)
        self.skipped = list(skipped)

    def columns(self):
        cols = []
        for row in self:
            cols += [k for k in row if k not in cols]
        return cols

    def to_csv(self, path=None) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns(), lineterminator="\n")
        writer.writeheader()
        for row in self:
            writer.writerow(row)
        text = buf.getvalue()
        if path is not None:
            atomic_write(path, text.encode())
        return text

    def to_json(self, path=None) -> str:
        text = json.dumps([_jsonable(r) for r in self], indent=1)
        if path is not None:
            atomic_write(path, text.encode())
        return text

    def to_pandas(self):
        import pandas as pd
        return pd.DataFrame(list(self))


# -- configurations ----------------------------------------------------------------------------
def expand_grid(grid: dict):
    """(configs, skipped): every combination of the grid's lists, defaults filled in; combinations
    no MAC can be built for (an integer accumulator with float operands, ...) are skipped."""
    if not isinstance(grid, dict):
        raise TypeError(f"grid must be a dict of lists, got {type(grid).__name__}")
    unknown = set(grid) - set(GRID_KEYS) - set(OPTIONAL_KEYS)
    if unknown:
        raise ValueError(f"grid has unknown keys {sorted(unknown)}; known: {', '.join(GRID_KEYS + OPTIONAL_KEYS)}")
    axes = {}
    for key in GRID_KEYS + tuple(k for k in OPTIONAL_KEYS if k in grid):
        values = grid.get(key, [DEFAULTS.get(key)])
        if isinstance(values, (str, tuple)) or not hasattr(values, "__iter__"):
            values = [values]
        values = list(values)
        if not values:
            raise ValueError(f"grid[{key!r}] is empty")
        axes[key] = values
    for name in axes["energy_table"]:          # a misspelt preset is an error, not a skipped row
        EnergyTable.preset(name)
    configs, skipped = [], []
    for combo in itertools.product(*axes.values()):
        cfg = dict(zip(axes, combo))
        if cfg["b"] is None:
            cfg["b"] = cfg["a"]
        if cfg["scale"] in ("block", "vector") and "scale_a" not in grid:
            cfg["scale_a"] = cfg["scale"]     # block scaling applies to both operands along K
        if cfg["acc"] is None:
            cfg["acc"] = "int32" if cfg["a"] in INT_FORMATS and cfg["b"] in INT_FORMATS else "fp32"
        if isinstance(cfg["array"], (tuple, list)):
            cfg["array"] = f"{cfg['array'][0]}x{cfg['array'][1]}"
        try:
            build(cfg)
        except (ValueError, TypeError) as e:
            skipped.append({**cfg, "reason": str(e)})
            continue
        if cfg not in configs:
            configs.append(cfg)
    return configs, skipped


def build(cfg):
    """The Array a configuration describes."""
    from accel_sim.array import Array
    from accel_sim.mac import mac_from_names
    try:
        rows, cols = (int(v) for v in str(cfg["array"]).lower().split("x"))
    except ValueError:
        raise ValueError(f"array must look like '32x32', got {cfg['array']!r}") from None
    mac = mac_from_names(cfg["a"], cfg["b"], cfg["acc"], cfg["rounding"])
    return Array(rows, cols, cfg["dataflow"], mac,
                 quant={"a": cfg["scale_a"], "b": cfg["scale"], "calibration": cfg["calibration"],
                        "scale_format": cfg["scale_format"], "headroom": cfg.get("headroom", 0)},
                 energy=EnergyTable.preset(cfg.get("energy_table", DEFAULTS["energy_table"])))


# -- targets ------------------------------------------------------------------------------------
def _fingerprint(target) -> str:
    """A hash of everything a target holds: array shapes, dtypes and bytes, and parameters."""
    h = hashlib.sha256()

    def add_array(key, arr):
        arr = np.ascontiguousarray(arr)
        h.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())

    from accel_sim.trace import Trace
    if isinstance(target, Trace):
        h.update(json.dumps(target.manifest(), sort_keys=True).encode())
        for k in sorted(target.arrays):
            add_array(k, target.arrays[k])
    elif isinstance(target, dict):
        for k in sorted(target):
            v = target[k]
            if isinstance(v, np.ndarray):
                add_array(k, v)
            else:
                h.update(f"{k}={json.dumps(v)}".encode())
    else:
        for i, arr in enumerate(target):
            add_array(str(i), arr)
    return h.hexdigest()


def _normalise_target(target):
    from accel_sim import trace as trace_mod
    if isinstance(target, (str, os.PathLike)):
        return trace_mod.load(target), Path(target).parent
    if isinstance(target, trace_mod.Trace):
        return target, None
    if isinstance(target, dict):
        if "x" not in target or "w" not in target:
            raise ValueError("a conv target is a dict with 'x' (NCHW) and 'w' (OIHW), and optional "
                             "stride, padding, dilation, groups, bias")
        return dict(target), None
    if isinstance(target, (tuple, list)) and len(target) == 2:
        return (np.asarray(target[0]), np.asarray(target[1])), None
    raise TypeError("target must be a trace (or its path), a pair (A, B), or a conv dict {'x', 'w', ...}")


def run_config(target, cfg, trace_dir=None, task=False):
    """One row: the configuration, its error, its cost and its overflow columns (sweep warns
    once for the whole table, so the runs' own warnings are silenced here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccumulatorOverflowWarning)
        return _run_config(target, cfg, trace_dir, task)


def _run_config(target, cfg, trace_dir, task):
    from accel_sim import trace as trace_mod
    from accel_sim.array import Result
    arr = build(cfg)
    row = dict(cfg)
    row["mac"] = arr.mac.name
    if isinstance(target, trace_mod.Trace):
        rep = trace_mod.replay(target, arr, task=task, trace_dir=trace_dir)
        errs = [l["metrics"]["rel_err"] for l in rep.layers]
        row.update(error=float(np.mean(errs)) if errs else 0.0,
                   sqnr_db=float(np.min([l["metrics"]["sqnr_db"] for l in rep.layers])) if errs else math.inf,
                   cosine=float(np.mean([l["metrics"]["cosine"] for l in rep.layers])) if errs else 1.0,
                   energy_pj=rep.totals["energy_pj"], cycles=rep.totals["cycles"], macs=rep.totals["macs"],
                   time_us=rep.totals["time_us"],
                   **{f"energy_{k}": v for k, v in rep.totals["energy_breakdown"].items()},
                   **_overflow_columns(rep.totals["overflow"]),
                   **{f"task_{k}": v for k, v in rep.task.items()})
    else:
        if isinstance(target, dict):
            kw = {k: v for k, v in target.items() if k not in ("x", "w")}
            res: Result = arr.conv2d(target["x"], target["w"], **kw)
        else:
            res = arr.gemm(*target)
        m = res.metrics["vs_float64"]
        row.update(error=m["rel_fro"], sqnr_db=m["sqnr_db"], cosine=m["cosine"], energy_pj=res.energy_pj,
                   cycles=res.cycles, macs=res.macs, time_us=res.time_us,
                   **{f"energy_{k}": v for k, v in res.energy_breakdown.items()},
                   **_overflow_columns(res.overflow))
    row["pj_per_mac"] = row["energy_pj"] / row["macs"] if row["macs"] else 0.0
    return row


def _overflow_columns(rep):
    """A row's overflow columns: outputs that overflowed (inf/NaN) or saturated in the
    accumulator, and the report's one-line cause and remedy ("" when none)."""
    if rep is None:
        return {"overflowed": 0, "saturated": 0, "overflow": ""}
    return {"overflowed": max(rep["acc_nonfinite"], rep["out_nonfinite"], rep.get("format_nonfinite", 0)),
            "saturated": max(rep["acc_saturated"], rep.get("pe_saturated", 0)),
            "overflow": rep["message"]}


# -- the sweep ----------------------------------------------------------------------------------
def _config_key(fingerprint, cfg, task):
    return hashlib.sha256(json.dumps([fingerprint, cfg, bool(task)], sort_keys=True).encode()).hexdigest()


def _load_cache(path):
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cache {path} is not a sweep cache ({e}); move it away or pick another path") from None
    if not isinstance(data, dict) or data.get("format") != "accel_sim.sweep-cache" or not isinstance(data.get("rows"), dict):
        raise ValueError(f"cache {path} is not a sweep cache; move it away or pick another path")
    return data["rows"]


def _save_cache(path, rows):
    # Python's JSON keeps inf and NaN (as Infinity/NaN), so cached rows read back unchanged.
    atomic_write(path, json.dumps({"format": "accel_sim.sweep-cache", "version": 1, "rows": rows}).encode())


class _Progress:
    def __init__(self, total, enabled):
        self.total, self.done, self.bar = total, 0, None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc="sweep", unit="config")
            except ImportError:
                pass

    def update(self, n=1):
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and sys.stderr.isatty():
            print(f"\rsweep: {self.done}/{self.total} configurations", end="", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.total and sys.stderr.isatty():
            print(file=sys.stderr)


def sweep(target, grid, executor=None, cache=None, progress=None, task=False) -> Table:
    """Run every configuration of `grid` on `target`; returns a Table of rows (configuration,
    error, sqnr_db, cosine, energy_pj and its parts, cycles, time_us, pj_per_mac).

    target: a Trace or trace path (replayed; error = mean relative error over layers), a pair
    (A, B) (Array.gemm), or a conv dict {"x", "w", stride, padding, ...} (Array.conv2d).
    grid: lists per key of a (activation format), b (weight format, default a), scale_a
    (activation scales: tensor/none), scale (weight scales: tensor/channel/none; "block" (OCP
    MX) or "vector" (VS-Quant): per block of K, for both operands; scale_a follows unless
    given), scale_format (the block scales' format, default per quant.quantize), acc (fp32
    fp16 bf16 int32 quire[:READOUT] ... or tensor_core:GPU; default int32 for integer
    operands, else fp32), rounding (float accumulators), array ("RxC"), dataflow, calibration,
    headroom (bits, or "auto": Array's quant['headroom']; default 0, and no headroom column).
    executor: any concurrent.futures.Executor (a Dask client's get_executor() works); default
    a process pool over all cores; False runs in this process.
    cache: a JSON file; finished rows are written to it atomically as they arrive, and rows it
    already holds are not recomputed, so an interrupted sweep resumes where it stopped.
    progress: a bar (tqdm if installed, else a line on stderr); default on for > 4 configs.
    task: also compute the trace's end-to-end task metric (columns task_*)."""
    if executor is not None and executor is not False and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must be a concurrent.futures Executor, None or False, got {type(executor).__name__}")
    target, trace_dir = _normalise_target(target)
    configs, skipped = expand_grid(grid)
    fingerprint = _fingerprint(target)
    keys = [_config_key(fingerprint, c, task) for c in configs]
    done = _load_cache(cache) if cache is not None else {}
    todo = [(k, c) for k, c in zip(keys, configs) if k not in done]
    bar = _Progress(len(configs), progress if progress is not None else len(configs) > 4)
    bar.update(len(configs) - len(todo))
    try:
        if todo and executor is False:
            for k, c in todo:
                done[k] = run_config(target, c, trace_dir, task)
                if cache is not None:
                    _save_cache(cache, done)
                bar.update()
        elif todo:
            own = executor is None
            pool = cf.ProcessPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1)) if own else executor
            failure = None
            try:
                futures = {pool.submit(run_config, target, c, trace_dir, task): k for k, c in todo}
                for fut in cf.as_completed(futures):
                    try:
                        done[futures[fut]] = fut.result()
                    except Exception as e:  # keep collecting: every finished row reaches the cache
                        failure = failure or e
                        continue
                    if cache is not None:
                        _save_cache(cache, done)
                    bar.update()
            finally:
                if own:
                    pool.shutdown(cancel_futures=True)
            if failure is not None:
                raise failure
    finally:
        bar.close()
    table = Table([done[k] for k in keys], skipped)
    hit = [r for r in table if r.get("overflow")]
    if hit:   # one warning for the sweep; each row's own report is in its overflow column
        names = ", ".join(f"{r['mac']}/{r['scale']}" + (f"/headroom {r['headroom']}" if r.get("headroom") else "")
                          for r in hit)
        warnings.warn(f"{len(hit)} of {len(table)} configurations overflowed or saturated ({names}); see the "
                      f"table's overflowed, saturated and overflow columns. First: {hit[0]['overflow']}",
                      AccumulatorOverflowWarning, stacklevel=2)
    return table


def pareto(table, x="energy_pj", y="error"):
    """The rows no other row dominates (no worse on both x and y, better on one; lower is
    better), sorted by x; exact ties are all kept.  Rows with a non-finite x or y are left out."""
    if not all(isinstance(r, dict) for r in table):
        raise TypeError("table must be a sequence of rows (dicts), such as sweep() returns")
    rows = [r for r in table if _finite(r.get(x)) and _finite(r.get(y))]
    rows.sort(key=lambda r: (r[x], r[y]))
    front, best, last = [], math.inf, None
    for r in rows:
        if r[y] < best or (r[x], r[y]) == last:
            front.append(r)
            best, last = r[y], (r[x], r[y])
    return front


def _finite(v):
    return isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v))
