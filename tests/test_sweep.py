"""accel_sim.sweep: rows equal direct Array calls bit for bit; the grid's expansion; every kind of
executor gives the same table; the cache recomputes nothing and survives an interrupted or
crashed sweep; Pareto fronts; CSV/JSON output; bad input."""
import concurrent.futures as cf
import csv
import importlib
import io
import json
import math
import os
import signal
import threading

import numpy as np
import pytest

import accel_sim as acs
from accel_sim import ops, presets
from accel_sim.mac import MAC, FloatAcc
from accel_sim.sweep import GRID_KEYS, Table, expand_grid, pareto, run_config, sweep

# `accel_sim.sweep` the attribute is the function (accel_sim/__init__ re-exports it); the module:
sweep_mod = importlib.import_module("accel_sim.sweep")

METRICS = ("error", "sqnr_db", "cosine", "energy_pj", "cycles", "macs", "time_us", "pj_per_mac",
           "energy_mult", "energy_pe_add", "energy_buffer_add", "energy_reg", "energy_sram", "energy_dram",
           "energy_leakage")


# -- helpers ------------------------------------------------------------------------------------------
def canon(v):
    """Tables compared exactly: floats by their bit pattern (so NaN equals NaN, -0.0 != 0.0, and
    the string 'inf' does not equal the float inf), everything else as it is."""
    if isinstance(v, dict):
        return {k: canon(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [canon(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return ("float", np.float64(v).tobytes().hex())
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def same(x, y):
    return canon(x) == canon(y)


@pytest.fixture(scope="module")
def gemm_target():
    rng = np.random.default_rng(0)
    return rng.standard_normal((16, 48)), rng.standard_normal((48, 12))


@pytest.fixture(scope="module")
def conv_target():
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((2, 4, 7, 7)), "w": rng.standard_normal((6, 2, 3, 3)),
            "stride": 2, "padding": 1, "groups": 2, "bias": rng.standard_normal(6)}


@pytest.fixture(scope="module")
def trace_target():
    rng = np.random.default_rng(2)
    with acs.trace.record("toy", "tests") as rec:
        ops.linear(rng.standard_normal((4, 16)), rng.standard_normal((8, 16)), rng.standard_normal(8), name="fc")
        ops.conv2d(rng.standard_normal((2, 4, 7, 7)), rng.standard_normal((6, 2, 3, 3)), None,
                   stride=2, padding=1, groups=2, name="conv")
        ops.matmul(rng.standard_normal((3, 4, 5)), rng.standard_normal((5, 2)), name="attn")
    return rec.trace


# A grid with finite rows only, and one whose fp8 x fp16 rows overflow (error inf, cosine nan).
GRID = {"a": ["int8", "e4m3fn"], "acc": ["int32", "fp32", "tensor_core:h100"], "scale": ["tensor", "channel"]}
GRID_OVERFLOW = {"a": ["int8", "e4m3fn", "e5m2"], "acc": ["int32", "fp32", "fp16"]}


def independent_array(cfg):
    """The Array a configuration names, built without sweep.build / mac_from_names."""
    acc = cfg["acc"]
    if acc.startswith("tensor_core:"):
        mac = presets.tensor_core(acc.split(":")[1], {"e4m3fn": "e4m3"}.get(cfg["a"], cfg["a"]))
    elif cfg["rounding"] is not None:
        mac = MAC(cfg["a"], cfg["b"], FloatAcc(*{"fp32": (8, 23), "fp16": (5, 10), "bf16": (8, 7)}[acc],
                                               rounding=cfg["rounding"]))
    else:
        mac = MAC(cfg["a"], cfg["b"], acc)
    rows, cols = map(int, cfg["array"].split("x"))
    return acs.Array(rows, cols, cfg["dataflow"], mac,
                     quant={"a": cfg.get("scale_a", "tensor"), "b": cfg["scale"], "calibration": cfg["calibration"]})


# -- sweep rows equal direct calls ---------------------------------------------------------------------
DIRECT_GRID = {"a": ["int8", "e4m3fn"], "acc": ["int32", "fp32", "bf16", "tensor_core:h100"],
               "scale": ["tensor", "channel"], "array": ["8x8", (4, 16)], "dataflow": ["ws", "os"]}


def test_gemm_rows_equal_array_gemm(gemm_target):
    table = sweep(gemm_target, DIRECT_GRID, executor=False, progress=False)
    configs, _ = expand_grid(DIRECT_GRID)
    assert len(table) == len(configs) == 6 * 2 * 2 * 2    # 3 accumulators for each operand format
    for cfg, row in zip(configs, table):
        assert {k: row[k] for k in cfg} == cfg
        res = independent_array(cfg).gemm(*gemm_target)
        m = res.metrics["vs_float64"]
        direct = dict(error=m["rel_fro"], sqnr_db=m["sqnr_db"], cosine=m["cosine"], energy_pj=res.energy_pj,
                      cycles=res.cycles, macs=res.macs, time_us=res.time_us, pj_per_mac=res.energy_pj / res.macs,
                      **{f"energy_{k}": v for k, v in res.energy_breakdown.items()})
        assert same({k: row[k] for k in METRICS}, {k: direct[k] for k in METRICS}), cfg
        assert row["mac"] == independent_array(cfg).mac.name


def test_conv_rows_equal_array_conv2d(conv_target):
    grid = {"a": ["int8", "e5m2"], "acc": ["int32", "fp32", "fp16"], "scale": ["tensor", "channel"],
            "dataflow": ["is", "ws"]}
    table = sweep(conv_target, grid, executor=False, progress=False)
    configs, _ = expand_grid(grid)
    assert len(table) == len(configs) == 5 * 2 * 2
    kw = {k: v for k, v in conv_target.items() if k not in ("x", "w")}
    for cfg, row in zip(configs, table):
        res = independent_array(cfg).conv2d(conv_target["x"], conv_target["w"], **kw)
        m = res.metrics["vs_float64"]
        direct = dict(error=m["rel_fro"], sqnr_db=m["sqnr_db"], cosine=m["cosine"], energy_pj=res.energy_pj,
                      cycles=res.cycles, macs=res.macs, time_us=res.time_us, pj_per_mac=res.energy_pj / res.macs,
                      **{f"energy_{k}": v for k, v in res.energy_breakdown.items()})
        assert same({k: row[k] for k in METRICS}, {k: direct[k] for k in METRICS}), cfg


def test_trace_rows_equal_replay(trace_target, tmp_path):
    grid = {"a": ["int8", "e4m3fn"], "acc": ["int32", "fp32", "bf16"], "rounding": [None, "rtz"]}
    path = tmp_path / "toy.npz"
    trace_target.save(path)
    by_object = sweep(trace_target, grid, executor=False, progress=False)
    by_path = sweep(str(path), grid, executor=False, progress=False)
    assert same(by_object, by_path)
    configs, skipped = expand_grid(grid)
    assert len(by_object) == len(configs) == 9        # int32 x rtz and e4m3fn x int32 are skipped
    assert len(skipped) == 3
    for cfg, row in zip(configs, by_object):
        rep = acs.trace.replay(trace_target, independent_array(cfg), task=False)
        layers = rep.layers
        direct = dict(error=float(np.mean([l["metrics"]["rel_err"] for l in layers])),
                      sqnr_db=float(np.min([l["metrics"]["sqnr_db"] for l in layers])),
                      cosine=float(np.mean([l["metrics"]["cosine"] for l in layers])),
                      energy_pj=rep.totals["energy_pj"], cycles=rep.totals["cycles"], macs=rep.totals["macs"],
                      time_us=rep.totals["time_us"], pj_per_mac=rep.totals["pj_per_mac"],
                      **{f"energy_{k}": v for k, v in rep.totals["energy_breakdown"].items()})
        assert same({k: row[k] for k in METRICS}, {k: direct[k] for k in METRICS}), cfg
        # per layer, against the plain Array calls
        arr = independent_array(cfg)
        for layer, got in zip(trace_target.layers, layers):
            x = trace_target.layer_inputs(layer)
            res = {"linear": lambda: arr.linear(x["x"], x["w"], bias=x.get("bias")),
                   "conv2d": lambda: arr.conv2d(x["x"], x["w"], bias=x.get("bias"), **layer["attrs"]),
                   "matmul": lambda: arr.matmul(x["a"], x["b"])}[layer["op"]]()
            assert got["energy_pj"] == res.energy_pj and got["cycles"] == res.cycles


def test_run_config_is_the_row(gemm_target):
    configs, _ = expand_grid(GRID)
    table = sweep(gemm_target, GRID, executor=False, progress=False)
    assert same(list(table), [run_config(gemm_target, c) for c in configs])


# -- expand_grid ----------------------------------------------------------------------------------------
def test_expand_grid_block_scaling_applies_to_both_operands():
    configs, skipped = expand_grid({"a": ["e4m3fn"], "scale": ["block", "tensor"]})
    assert [(c["scale_a"], c["scale"]) for c in configs] == [("block", "block"), ("tensor", "tensor")]
    configs, skipped = expand_grid({"a": ["int4"], "scale_a": ["tensor"], "scale": ["vector"]})
    assert configs == [] and "must both be 'block' or both 'vector'" in skipped[0]["reason"]


def test_expand_grid_defaults():
    configs, skipped = expand_grid({})
    assert skipped == []
    want = {"a": "int8", "b": "int8", "scale": "tensor", "acc": "int32", "rounding": None, "array": "32x32",
            "dataflow": "ws", "calibration": "absmax"}
    if "scale_a" in GRID_KEYS:                            # activation scaling, when the sweep has it
        want["scale_a"] = "tensor"
    want["scale_format"] = None                           # block scales' format: quantize's default
    want["energy_table"] = "horowitz45"                   # EnergyTable.preset: the default table
    assert len(configs) == 1 and configs[0] == want
    assert list(configs[0]) == list(GRID_KEYS)
    configs, _ = expand_grid({"a": ["e4m3fn", "int8"], "b": [None, "e5m2"]})
    assert [(c["a"], c["b"], c["acc"]) for c in configs] == [
        ("e4m3fn", "e4m3fn", "fp32"), ("e4m3fn", "e5m2", "fp32"), ("int8", "int8", "int32"), ("int8", "e5m2", "fp32")]
    # a bare value is a one-element list; a tuple array is "RxC"; duplicates are dropped
    configs, _ = expand_grid({"a": "int8", "b": [None, "int8"], "array": [(16, 8), "16x8"]})
    assert len(configs) == 1 and configs[0]["array"] == "16x8" and configs[0]["b"] == "int8"


def test_expand_grid_skips_impossible_combinations_with_a_reason():
    configs, skipped = expand_grid({"a": ["int8", "e4m3fn"], "acc": ["int32", "fp32", "tensor_core:h100"]})
    assert [(c["a"], c["acc"]) for c in configs] == [("int8", "int32"), ("int8", "fp32"), ("e4m3fn", "fp32"),
                                                      ("e4m3fn", "tensor_core:h100")]
    reasons = {(s["a"], s["acc"]): s["reason"] for s in skipped}
    assert set(reasons) == {("int8", "tensor_core:h100"), ("e4m3fn", "int32")}
    assert "e4m3fn" in reasons[("e4m3fn", "int32")] and "integer" in reasons[("e4m3fn", "int32")]
    assert "tensor_core:h100" in reasons[("int8", "tensor_core:h100")]
    assert "int8" in reasons[("int8", "tensor_core:h100")]
    for s in skipped:                      # the whole configuration is kept beside the reason
        assert set(s) == set(GRID_KEYS) | {"reason"}
    # rounding on an integer accumulator, a malformed array
    _, skipped = expand_grid({"rounding": ["rtz"], "array": ["8x8", "big"]})
    assert len(skipped) == 2
    assert all("rounding" in s["reason"] or "array" in s["reason"] for s in skipped)
    assert any("'big'" in s["reason"] for s in skipped)


def test_sweep_reports_skipped(gemm_target):
    table = sweep(gemm_target, {"a": ["int8", "e4m3fn"], "acc": ["int32"]}, executor=False, progress=False)
    assert len(table) == 1 and table[0]["a"] == "int8"
    assert len(table.skipped) == 1 and table.skipped[0]["a"] == "e4m3fn"
    everything_skipped = sweep(gemm_target, {"a": ["e4m3fn"], "acc": ["int32"]}, progress=False)
    assert list(everything_skipped) == [] and len(everything_skipped.skipped) == 1


# -- executors --------------------------------------------------------------------------------------------
class Counting(cf.Executor):
    """Runs submissions on an inner executor (or inline) and counts them."""

    def __init__(self, inner=None):
        self.inner, self.submitted = inner, []

    def submit(self, fn, *args, **kwargs):
        self.submitted.append(args[1] if len(args) > 1 else None)
        if self.inner is not None:
            return self.inner.submit(fn, *args, **kwargs)
        f = cf.Future()
        f.set_result(fn(*args, **kwargs))
        return f


def test_executors_give_identical_tables(gemm_target):
    grid = GRID_OVERFLOW
    inline = sweep(gemm_target, grid, executor=False, progress=False)
    default_pool = sweep(gemm_target, grid, progress=False)             # a process pool over the cores
    with cf.ThreadPoolExecutor(3) as threads:
        threaded = sweep(gemm_target, grid, executor=threads, progress=False)
    with cf.ProcessPoolExecutor(2) as procs:
        processes = sweep(gemm_target, grid, executor=procs, progress=False)
    assert any(not math.isfinite(r["error"]) for r in inline)           # non-finite rows compared too
    for other in (default_pool, threaded, processes):
        assert same(other, inline)
        assert other.skipped == inline.skipped


def test_conv_and_trace_through_a_process_pool(conv_target, trace_target):
    grid = {"a": ["int8", "e4m3fn"], "acc": ["fp32", "bf16"]}
    with cf.ProcessPoolExecutor(2) as procs:
        for target in (conv_target, trace_target):
            assert same(sweep(target, grid, executor=procs, progress=False),
                        sweep(target, grid, executor=False, progress=False))


def test_dask_executor(gemm_target):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) \
            as cluster, distributed.Client(cluster) as client:
        table = sweep(gemm_target, GRID_OVERFLOW, executor=client.get_executor(), progress=False)
    assert same(table, sweep(gemm_target, GRID_OVERFLOW, executor=False, progress=False))


# -- the cache ------------------------------------------------------------------------------------------------
def read_cache(path):
    data = json.loads(path.read_text())
    assert data["format"] == "accel_sim.sweep-cache"
    return data["rows"]


def test_cache_second_call_recomputes_nothing(gemm_target, tmp_path, monkeypatch):
    cache = tmp_path / "cache.json"
    first = sweep(gemm_target, GRID, executor=False, cache=cache, progress=False)
    configs, _ = expand_grid(GRID)
    assert len(read_cache(cache)) == len(configs) == len(first)
    assert sorted(os.listdir(tmp_path)) == ["cache.json"]               # no temporary files

    def must_not_run(*a, **k):
        raise AssertionError("run_config called although the cache holds the row")

    monkeypatch.setattr(sweep_mod, "run_config", must_not_run)
    again = sweep(gemm_target, GRID, executor=False, cache=cache, progress=False)
    assert same(again, first)
    counting = Counting()
    assert same(sweep(gemm_target, GRID, executor=counting, cache=cache, progress=False), first)
    assert counting.submitted == []
    monkeypatch.undo()
    # a grid that adds configurations computes only those
    bigger = dict(GRID, dataflow=["ws", "os"])
    counting = Counting()
    table = sweep(gemm_target, bigger, executor=counting, cache=cache, progress=False)
    assert len(counting.submitted) == len(configs)
    assert all(c["dataflow"] == "os" for c in counting.submitted)
    assert same(table, sweep(gemm_target, bigger, executor=False, progress=False))
    # another target (or task flag) does not reuse the rows
    counting = Counting()
    sweep((gemm_target[0] * 2, gemm_target[1]), GRID, executor=counting, cache=cache, progress=False)
    assert len(counting.submitted) == len(configs)


def test_cached_rows_keep_non_finite_floats(gemm_target, tmp_path):
    """A row from the cache equals the computed one: error inf, sqnr -inf, cosine nan stay
    floats (the cache file writes them as strings; reading must turn them back)."""
    cache = tmp_path / "cache.json"
    first = sweep(gemm_target, GRID_OVERFLOW, executor=False, cache=cache, progress=False)
    assert any(r["error"] == math.inf for r in first)
    again = sweep(gemm_target, GRID_OVERFLOW, executor=False, cache=cache, progress=False)
    bad = [(r["a"], r["acc"], k, r[k]) for r in again for k in METRICS if not isinstance(r[k], (int, float))]
    assert bad == [], f"cached rows hold non-numbers: {bad}"
    assert same(again, first)


def test_cache_tells_reshaped_targets_apart(tmp_path):
    """Same bytes, other shapes: (8, 16) @ (16, 8) and (16, 8) @ (8, 16) are different GEMMs and
    must not share cached rows."""
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((8, 16)), rng.standard_normal((16, 8))
    cache = tmp_path / "cache.json"
    sweep((A, B), {"a": ["int8"]}, executor=False, cache=cache, progress=False)
    reshaped = (A.reshape(16, 8), B.reshape(8, 16))
    cached = sweep(reshaped, {"a": ["int8"]}, executor=False, cache=cache, progress=False)
    fresh = sweep(reshaped, {"a": ["int8"]}, executor=False, progress=False)
    assert fresh[0]["macs"] == 16 * 16 * 8
    assert cached[0]["macs"] == fresh[0]["macs"], "a cached row of another GEMM was returned"


class InterruptingFuture(cf.Future):
    """A future whose result() raises KeyboardInterrupt once its executor has handed out
    `after` results: Ctrl-C arriving while the sweep collects results."""

    def __init__(self, owner):
        super().__init__()
        self.owner = owner

    def result(self, timeout=None):
        with self.owner.lock:
            if self.owner.collected >= self.owner.after:
                raise KeyboardInterrupt
            self.owner.collected += 1
        return super().result(timeout)


class Interrupting(cf.Executor):
    def __init__(self, inner, after):
        self.inner, self.after, self.collected, self.lock = inner, after, 0, threading.Lock()

    def submit(self, fn, *args, **kwargs):
        outer = InterruptingFuture(self)
        inner = self.inner.submit(fn, *args, **kwargs)

        def copy(f):
            if f.exception() is not None:
                outer.set_exception(f.exception())
            else:
                outer.set_result(f.result())

        inner.add_done_callback(copy)
        return outer


def test_resume_after_keyboard_interrupt(gemm_target, tmp_path):
    cache = tmp_path / "cache.json"
    full = sweep(gemm_target, GRID, executor=False, progress=False)
    assert all(math.isfinite(r["error"]) for r in full)  # non-finite rows: test_cached_rows_keep_non_finite_floats
    with cf.ProcessPoolExecutor(2) as procs:
        with pytest.raises(KeyboardInterrupt):
            sweep(gemm_target, GRID, executor=Interrupting(procs, after=3), cache=cache, progress=False)
    rows = read_cache(cache)
    assert len(rows) == 3                                 # every row collected before Ctrl-C is kept
    full_by_cfg = {json.dumps({k: r[k] for k in GRID_KEYS}, sort_keys=True): r for r in full}
    for r in rows.values():
        assert same(r, full_by_cfg[json.dumps({k: r[k] for k in GRID_KEYS}, sort_keys=True)])
    counting = Counting()
    resumed = sweep(gemm_target, GRID, executor=counting, cache=cache, progress=False)
    assert len(counting.submitted) == len(full) - 3       # only the rest is computed
    assert len(read_cache(cache)) == len(full)
    assert same(resumed, full)


class KillAfterFirstResult(cf.Executor):
    """A one-worker process pool whose worker is SIGKILLed as soon as the first result arrives
    (a crashed or OOM-killed worker); remembers every future that finished with a row."""

    def __init__(self):
        self.pool = cf.ProcessPoolExecutor(1)
        self.pid = self.pool.submit(os.getpid).result()
        self.futures, self.killed = [], False

    def submit(self, fn, *args, **kwargs):
        f = self.pool.submit(fn, *args, **kwargs)
        self.futures.append(f)
        if len(self.futures) == 1:
            f.add_done_callback(self.kill)
        return f

    def kill(self, _):
        if not self.killed:
            self.killed = True
            os.kill(self.pid, signal.SIGKILL)

    def finished_rows(self):
        return [f.result() for f in self.futures if f.done() and not f.cancelled() and f.exception() is None]


def test_resume_after_a_worker_is_killed(tmp_path):
    rng = np.random.default_rng(4)
    target = rng.standard_normal((64, 192)), rng.standard_normal((192, 48))   # slow enough to kill mid-way
    grid = {"a": ["int8", "e4m3fn", "e5m2"], "acc": ["fp32", "bf16"], "scale": ["tensor", "channel"]}
    cache = tmp_path / "cache.json"
    full = sweep(target, grid, executor=False, progress=False)
    assert all(math.isfinite(r["error"]) for r in full)
    ex = KillAfterFirstResult()
    try:
        with pytest.raises(cf.process.BrokenProcessPool):
            sweep(target, grid, executor=ex, cache=cache, progress=False)
    finally:
        ex.pool.shutdown(wait=True, cancel_futures=True)
    finished = ex.finished_rows()
    configs, _ = expand_grid(grid)
    assert 1 <= len(finished) < len(configs)
    cached = read_cache(cache)
    cached_cfgs = [{k: r[k] for k in GRID_KEYS} for r in cached.values()]
    for row in finished:                                   # every finished row is in the cache
        assert {k: row[k] for k in GRID_KEYS} in cached_cfgs
    counting = Counting()
    resumed = sweep(target, grid, executor=counting, cache=cache, progress=False)
    assert len(counting.submitted) == len(configs) - len(cached)
    assert same(resumed, full)


class FailsOnce(cf.Executor):
    """Runs submissions inline; the `fail_at`-th one fails (its worker died).  Every future is
    finished before the sweep starts collecting."""

    def __init__(self, fail_at):
        self.fail_at, self.n, self.rows = fail_at, 0, []

    def submit(self, fn, *args, **kwargs):
        self.n += 1
        f = cf.Future()
        if self.n == self.fail_at:
            f.set_exception(RuntimeError("worker died"))
        else:
            self.rows.append(fn(*args, **kwargs))
            f.set_result(self.rows[-1])
        return f


def test_a_failed_configuration_keeps_the_finished_rows(gemm_target, tmp_path):
    """One configuration's failure must not throw away rows that had already finished: the
    sweep raises, but the cache holds every finished row.  (Repeated: which finished futures
    the sweep sees first is arbitrary.)"""
    grid = {"a": ["int8"], "acc": ["int32", "fp32", "fp16", "bf16"], "scale": ["tensor", "channel"]}
    for trial in range(4):
        cache = tmp_path / f"cache{trial}.json"
        ex = FailsOnce(fail_at=4)
        with pytest.raises(RuntimeError, match="worker died"):
            sweep(gemm_target, grid, executor=ex, cache=cache, progress=False)
        assert len(ex.rows) == 7
        assert cache.exists() and len(read_cache(cache)) == 7, \
            f"trial {trial}: {len(read_cache(cache)) if cache.exists() else 0} of 7 finished rows cached"


# -- pareto -----------------------------------------------------------------------------------------------------
def brute_front(rows, x="energy_pj", y="error"):
    """Rows no other row dominates (no worse on both, strictly better on one), by (x, y)."""
    ok = [r for r in rows if isinstance(r.get(x), (int, float)) and isinstance(r.get(y), (int, float))
          and math.isfinite(r[x]) and math.isfinite(r[y])]
    front = [r for r in ok if not any(o[x] <= r[x] and o[y] <= r[y] and (o[x] < r[x] or o[y] < r[y]) for o in ok)]
    return sorted(front, key=lambda r: (r[x], r[y]))


def pts(rows, x="energy_pj", y="error"):
    return [(r["id"], r[x], r[y]) for r in rows]


def test_pareto_hand_made():
    rows = [
        {"id": "a", "energy_pj": 1.0, "error": 0.5},
        {"id": "b", "energy_pj": 2.0, "error": 0.2},
        {"id": "c", "energy_pj": 2.0, "error": 0.3},      # same x as b, worse y: dominated
        {"id": "d", "energy_pj": 3.0, "error": 0.2},      # same y as b, worse x: dominated
        {"id": "e", "energy_pj": 4.0, "error": 0.1},
        {"id": "f", "energy_pj": 5.0, "error": 0.15},     # dominated by e
        {"id": "g", "energy_pj": 0.5, "error": math.inf},  # overflowed: not on the front
        {"id": "h", "energy_pj": 0.5, "error": math.nan},
        {"id": "i", "energy_pj": math.nan, "error": 0.0},
        {"id": "j", "energy_pj": 6.0, "error": 0.0},
        {"id": "k", "energy_pj": 0.9, "error": "inf"},     # a string (from JSON): not a number
        {"id": "l", "energy_pj": 0.1},                     # no error column
        {"id": "m", "energy_pj": np.float64(7.0), "error": np.float64(-1.0)},
    ]
    front = pareto(rows)
    assert pts(front) == [("a", 1.0, 0.5), ("b", 2.0, 0.2), ("e", 4.0, 0.1), ("j", 6.0, 0.0), ("m", 7.0, -1.0)]
    assert pts(front) == pts(brute_front(rows))
    # other columns; the table is not modified
    rows2 = [{"id": r["id"], "pj_per_mac": r["energy_pj"], "cycles": i} for i, r in enumerate(rows)]
    before = json.dumps(rows2, default=str)
    assert [r["id"] for r in pareto(rows2, x="pj_per_mac", y="cycles")] == ["l", "g", "a"]
    assert json.dumps(rows2, default=str) == before
    assert pareto([]) == [] and pareto(Table()) == []
    assert pareto([{"id": "z", "energy_pj": math.inf, "error": 0.1}]) == []


def test_pareto_keeps_exact_ties():
    """Two configurations with the same energy and the same error: neither beats the other, so
    both are on the front ("the rows no other row beats on both x and y")."""
    rows = [{"id": "p", "energy_pj": 1.0, "error": 0.5}, {"id": "q", "energy_pj": 1.0, "error": 0.5},
            {"id": "r", "energy_pj": 2.0, "error": 0.1}]
    assert pts(brute_front(rows)) == [("p", 1.0, 0.5), ("q", 1.0, 0.5), ("r", 2.0, 0.1)]
    assert pts(pareto(rows)) == pts(brute_front(rows))


def test_pareto_random_tables_match_brute_force():
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(0, 12))
        xs = rng.integers(0, 5, n).astype(float)          # small ranges: many ties
        ys = rng.integers(0, 5, n).astype(float)
        xs[rng.random(n) < 0.1] = math.inf
        ys[rng.random(n) < 0.1] = math.nan
        rows = [{"id": i, "energy_pj": float(a), "error": float(b)} for i, (a, b) in enumerate(zip(xs, ys))]
        dedup = {}
        for r in rows:                                   # distinct points only (ties on one axis stay)
            dedup.setdefault((r["energy_pj"], r["error"]), r)
        rows = list(dedup.values())
        assert pts(pareto(rows)) == pts(brute_front(rows))


# -- Table output -----------------------------------------------------------------------------------------
def test_csv_and_json_round_trip(gemm_target, tmp_path):
    table = sweep(gemm_target, GRID_OVERFLOW, executor=False, progress=False)
    table.append(dict(table[0], task_accuracy=0.75))        # a column only one row has
    cols = table.columns()
    assert cols[-1] == "task_accuracy"

    text = table.to_csv(tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == text
    back = list(csv.DictReader(io.StringIO(text)))
    assert len(back) == len(table)
    for r, b in zip(table, back):
        assert list(b) == cols
        for k in cols:
            v = r.get(k)
            if v is None:
                assert b[k] == ""
            elif isinstance(v, float):
                assert same(float(b[k]), v), (k, b[k], v)     # repr round-trips every float, inf and nan too
            else:
                assert b[k] == str(v)

    text = table.to_json(tmp_path / "t.json")
    assert (tmp_path / "t.json").read_text() == text
    back = json.loads(text)
    assert len(back) == len(table)
    for r, b in zip(table, back):
        assert list(b) == list(r)
        for k, v in r.items():
            if isinstance(v, float) and not math.isfinite(v):
                assert b[k] == str(v)                          # "inf", "-inf", "nan": JSON has no such numbers
                assert same(float(b[k]), v)
            else:
                assert same(b[k], v), k
    assert sorted(os.listdir(tmp_path)) == ["t.csv", "t.json"]   # no temporary files
    assert table.to_csv() == (tmp_path / "t.csv").read_text()    # no path: just the text


def test_table_writes_are_atomic(gemm_target, tmp_path, monkeypatch):
    table = sweep(gemm_target, GRID, executor=False, progress=False)
    for name, write in (("t.csv", table.to_csv), ("t.json", table.to_json)):
        path = tmp_path / name
        path.write_text("old")
        write(path)                                       # an existing file is replaced
        assert path.read_text() != "old"
        good = path.read_text()

        def boom(*a, **k):
            raise OSError("disk full")

        monkeypatch.setattr(os, "replace", boom)
        with pytest.raises(OSError, match="disk full"):
            write(path)
        monkeypatch.undo()
        assert path.read_text() == good                   # untouched by the failed write
    assert sorted(os.listdir(tmp_path)) == ["t.csv", "t.json"]


# -- bad input ----------------------------------------------------------------------------------------------
def test_bad_grids(gemm_target):
    with pytest.raises(ValueError, match=r"unknown keys \['size'\]"):
        sweep(gemm_target, {"size": [1]}, executor=False, progress=False)
    with pytest.raises(ValueError, match=r"grid\['acc'\] is empty"):
        sweep(gemm_target, {"acc": []}, executor=False, progress=False)
    with pytest.raises(TypeError, match="grid must be a dict"):
        sweep(gemm_target, [("a", "int8")], executor=False, progress=False)
    with pytest.raises(TypeError, match="grid must be a dict"):
        expand_grid("a=int8")


def test_bad_targets(tmp_path):
    grid = {"a": ["int8"]}
    for bad in (42, None, (np.ones((2, 2)),), (np.ones((2, 2)),) * 3, {1, 2}):
        with pytest.raises(TypeError, match="target must be"):
            sweep(bad, grid, executor=False, progress=False)
    with pytest.raises(ValueError, match="'x' .* 'w'"):
        sweep({"x": np.ones((1, 1, 3, 3))}, grid, executor=False, progress=False)
    with pytest.raises(ValueError, match="no such trace file"):
        sweep(tmp_path / "missing.npz", grid, executor=False, progress=False)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        sweep(tmp_path / "junk.npz", grid, executor=False, progress=False)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe garbage", b"[]", b'{"format": "other", "rows": {}}',
                                     b'{"format": "accel_sim.sweep-cache", "rows": []}', b""])
def test_corrupt_cache_is_refused_and_left_alone(gemm_target, tmp_path, content):
    cache = tmp_path / "cache.json"
    cache.write_bytes(content)
    with pytest.raises(ValueError, match=r"cache .*cache\.json is not a sweep cache"):
        sweep(gemm_target, {"a": ["int8"]}, executor=False, cache=cache, progress=False)
    assert cache.read_bytes() == content
    assert os.listdir(tmp_path) == ["cache.json"]
