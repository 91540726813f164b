"""A one-line description of the machine a benchmark ran on."""
import os
import platform

import numpy as np


def describe() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
            f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")


def blas_kernel() -> str:
    """The BLAS library, kernel (architecture) and threads numpy runs, from threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (pip install threadpoolctl to see it)"
    libs = [f"{i.get('internal_api')} {i.get('version')}, kernel {i.get('architecture')}, {i.get('num_threads')} "
            f"thread(s)" for i in threadpool_info() if i.get("user_api") == "blas"]
    core = {v: os.environ[v] for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ}
    return "; ".join(libs) + (f" (pinned by {core})" if core else "")


def against_numpy(fn, a, b, reps=3, np_reps=3):
    """fn's best time, and numpy's float32 matmul a @ b timed before and right after it (the
    better of the two: the machine's state then)."""
    t_np = best_of(lambda: a @ b, np_reps)
    t = best_of(fn, reps)
    return t, min(t_np, best_of(lambda: a @ b, np_reps))


def best_of(fn, reps=3):
    """The best of reps timed calls of fn, after one untimed warm-up call."""
    import time
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
