"""A sweep interrupted by `kill -9`, of a worker and of the parent, loses nothing.

A separate Python process (the parent) runs a sweep of 12 configurations on a small GEMM
with a cache file and a two-worker ProcessPoolExecutor.  The workers are held after a fixed
set of configurations (their rows are computed, then the worker waits), so the moment of the
kill is deterministic:

* "idle": three rows have reached the cache and the parent waits for results; a worker and
  the parent are SIGKILLed (the parent stopped first, so that the two kills are as one);
* "mid-write": three rows are cached and the parent is killed while it writes the fourth
  version of the cache, half of the new text in its temporary file (a worker is killed
  first).

Then: the cache file is valid JSON (atomic writes: never half-written), holds exactly the rows
it claims, each under the key of its own configuration and equal to the row an uninterrupted
sweep computes; the same sweep run again in this process with the same cache recomputes only
the missing configurations (counted through a monkeypatched accel_sim.sweep.run_config with
executor=False) and returns the uninterrupted sweep's table.
"""
from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from accel_sim.sweep import GRID_KEYS, expand_grid, sweep

sweep_mod = importlib.import_module("accel_sim.sweep")

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")

GRID = {"a": ["int8", "e4m3fn", "e5m2"], "acc": ["fp32", "bf16"], "scale": ["tensor", "channel"]}
TARGET_SEED = 11
WAIT = 45  # seconds for the child to reach the point of the kill


def target():
    rng = np.random.default_rng(TARGET_SEED)
    return rng.standard_normal((12, 40)), rng.standard_normal((40, 10))


CHILD = r"""
import concurrent.futures as cf, importlib, json, multiprocessing, os, sys, time
import numpy as np
io_mod = importlib.import_module("accel_sim._io")
sw = importlib.import_module("accel_sim.sweep")   # (the attribute accel_sim.sweep is the function)

cache, marks, allowed, stop_at_save = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(TARGET_SEED)
target = rng.standard_normal((12, 40)), rng.standard_normal((40, 10))
configs, _ = sw.expand_grid(GRID)
free = {json.dumps(c, sort_keys=True) for c in configs[:allowed]}
real_run_config = sw.run_config

def run_config(target, cfg, trace_dir=None, task=False):
    # computes the row; the configurations past the first `allowed` then hold their worker
    row = real_run_config(target, cfg, trace_dir, task)
    if json.dumps(cfg, sort_keys=True) not in free:
        open(os.path.join(marks, f"held-{os.getpid()}"), "w").close()
        while True:
            time.sleep(1)
    return row

run_config.__module__, run_config.__qualname__ = "accel_sim.sweep", "run_config"
sw.run_config = run_config   # forked workers inherit it; pickled by reference

class HalfWriter:
    # the parent's cache writes: the `stop_at_save`-th one stops half-way through its text
    saves = 0
    def __init__(self, f):
        self.f = f
    def write(self, data):
        HalfWriter.saves += 1
        if HalfWriter.saves == stop_at_save:
            self.f.write(data[: len(data) // 2]); self.f.flush(); os.fsync(self.f.fileno())
            open(os.path.join(marks, "parent-mid-write"), "w").close()
            while True:
                time.sleep(1)
        return self.f.write(data)
    def __getattr__(self, name):
        return getattr(self.f, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

class OsProxy:
    def __getattr__(self, name):
        return getattr(os, name)
    @staticmethod
    def fdopen(fd, mode="r", *args, **kwargs):
        return HalfWriter(os.fdopen(fd, mode, *args, **kwargs))

if stop_at_save:
    io_mod.os = OsProxy()
with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
    sw.sweep(target, GRID, executor=pool, cache=cache, progress=False)
print("the sweep finished, which it must not", flush=True)
"""


def children(pid):
    """Child pids of pid, from /proc/<pid>/task/*/children (psutil if /proc lacks it)."""
    kids = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids.update(int(v) for v in (task / "children").read_text().split())
        except OSError:
            pass
    if not kids:
        try:
            import psutil
            kids = {p.pid for p in psutil.Process(pid).children()}
        except Exception:
            pass
    return sorted(kids)


def wait_for(what, predicate, proc, deadline):
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the sweep process ended (status {proc.returncode}) before {what}:\n{out}\n{err[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def cache_rows(path):
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get("rows") if isinstance(data, dict) else None


def canon(v):
    """Rows compared exactly: floats by bit pattern."""
    if isinstance(v, dict):
        return {k: canon(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [canon(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return ("float", np.float64(v).tobytes().hex())
    if isinstance(v, np.integer):
        return int(v)
    return v


def config_of(row):
    return {k: row[k] for k in GRID_KEYS}


@pytest.fixture(scope="module")
def uninterrupted():
    table = sweep(target(), GRID, executor=False, progress=False)
    assert len(table) == 12 and not table.skipped
    return table


@pytest.mark.parametrize("moment,allowed,stop_at_save,cached", [
    ("idle", 3, 0, 3),
    ("mid-write", 4, 4, 3),
])
def test_kill_worker_and_parent_then_resume(tmp_path, monkeypatch, uninterrupted, moment, allowed, stop_at_save,
                                            cached):
    cache = tmp_path / "cache.json"
    marks = tmp_path / "marks"
    marks.mkdir()
    script = f"GRID = {GRID!r}\nTARGET_SEED = {TARGET_SEED}\n" + CHILD
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "ACCEL_SIM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(cache), str(marks), str(allowed), str(stop_at_save)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    started = set()
    try:
        deadline = time.monotonic() + WAIT
        wait_for("two cached rows", lambda: len(cache_rows(cache) or {}) >= 2, proc, deadline)
        wait_for("both workers held", lambda: len(list(marks.glob("held-*"))) == 2, proc, deadline)
        wait_for(f"{cached} cached rows", lambda: len(cache_rows(cache) or {}) == cached, proc, deadline)
        if moment == "mid-write":
            wait_for("the parent inside a cache write", lambda: (marks / "parent-mid-write").exists(), proc, deadline)
        workers = children(proc.pid)
        started.update(workers)
        assert len(workers) >= 2, f"expected the pool's two workers as children of {proc.pid}, found {workers}"
        held = sorted(int(p.name.split("-")[1]) for p in marks.glob("held-*"))
        assert set(held) <= set(workers)
        # kill -9 a worker and the parent; the parent is stopped first, so that it cannot react to
        # the lost worker (and finish on its own) between the two kills
        os.kill(proc.pid, signal.SIGSTOP)
        os.kill(held[0], signal.SIGKILL)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        for pid in started:                     # the orphaned worker (and any left): ours, by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    # the cache: valid JSON, exactly the rows it had finished, each under its own key
    data = json.loads(cache.read_text())
    assert data["format"] == "accel_sim.sweep-cache"
    rows = data["rows"]
    assert len(rows) == cached, f"{len(rows)} rows in the cache, expected {cached}"
    fingerprint = sweep_mod._fingerprint(sweep_mod._normalise_target(target())[0])
    by_config = {json.dumps(config_of(r), sort_keys=True): r for r in uninterrupted}
    configs, _ = expand_grid(GRID)
    done = {json.dumps(config_of(r), sort_keys=True) for r in rows.values()}
    assert len(done) == cached and done <= {json.dumps(c, sort_keys=True) for c in configs[:allowed]}
    for key, row in rows.items():
        assert key == sweep_mod._config_key(fingerprint, config_of(row), False), "a row under another key"
        assert canon(row) == canon(by_config[json.dumps(config_of(row), sort_keys=True)])
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
    if moment == "mid-write":
        assert len(leftovers) == 1, leftovers   # the half-written temporary file, never the cache itself
        with pytest.raises(ValueError):
            json.loads((tmp_path / leftovers[0]).read_text())

    # resume in this process: only the missing configurations are computed
    computed = []
    real = sweep_mod.run_config

    def counting(target_, cfg, trace_dir=None, task=False):
        computed.append(json.dumps(cfg, sort_keys=True))
        return real(target_, cfg, trace_dir, task)

    monkeypatch.setattr(sweep_mod, "run_config", counting)
    resumed = sweep(target(), GRID, executor=False, cache=cache, progress=False)
    missing = sorted(json.dumps(c, sort_keys=True) for c in configs if json.dumps(c, sort_keys=True) not in done)
    assert sorted(computed) == missing, \
        f"recomputed {len(computed)} configurations, expected the {len(missing)} missing"
    assert len(cache_rows(cache)) == 12
    assert [canon(r) for r in resumed] == [canon(r) for r in uninterrupted]

    # and a third run computes nothing
    computed.clear()
    again = sweep(target(), GRID, executor=False, cache=cache, progress=False)
    assert computed == [] and [canon(r) for r in again] == [canon(r) for r in uninterrupted]
