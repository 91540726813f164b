"""The `accel-sim` command."""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from accel_sim import formats, quant
from accel_sim.mac import mac_from_names

DEMO_FORMATS = ("int8", "e4m3fn", "e4m3", "e5m2", "e3m4", "e4m3fnuz", "e5m2fnuz", "bf16", "fp16")


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


def cmd_demo(args):
    """Quantize a heavy-tailed tensor to each format: the error each 8-bit choice costs."""
    rng = np.random.default_rng(args.seed)
    x = rng.standard_t(df=4, size=(256, 256))
    rows = []
    for name in DEMO_FORMATS:
        for scale in ("tensor", "channel"):
            q = quant.quantize(x, name, scale=scale)
            err = q.dequantize() - x
            sqnr = 10 * math.log10(np.sum(x * x) / max(np.sum(err * err), 1e-300))
            rows.append({"format": name, "scale": scale, "sqnr_db": round(sqnr, 2),
                         "max_abs_error": float(np.abs(err).max())})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("Quantizing a 256x256 Student-t(4) tensor (heavy tails, like activations):")
    print(f"{'format':<10}{'scale':<9}{'SQNR dB':>9}{'max |err|':>12}")
    for r in rows:
        print(f"{r['format']:<10}{r['scale']:<9}{r['sqnr_db']:>9.2f}{r['max_abs_error']:>12.4g}")


def parse_array_size(text):
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--array must look like 32x32, got {text!r}") from None
    return rows, cols


def cmd_replay(args):
    from accel_sim import trace as trace_mod
    from accel_sim.array import Array
    try:
        mac = mac_from_names(args.a, args.b, args.acc, args.rounding)
        arr = Array(*args.array, args.dataflow, mac, quant={"a": "tensor", "b": args.scale})
        report = trace_mod.replay(args.trace, arr, task=not args.no_task)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"accel-sim: error: {e}") from None
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
    if report.task:
        print("task:", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in report.task.items()))


def build_parser():
    parser = argparse.ArgumentParser(prog="accel-sim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("formats", help="table of every number format")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_formats)
    p = sub.add_parser("demo", help="quantization error of every 8-bit format on a sample tensor")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample tensor")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("replay", help="replay a recorded model trace on a simulated array")
    p.add_argument("trace", help="a trace file (.npz)")
    p.add_argument("--a", default="int8", help="format of A (activations), e.g. int8 e4m3fn e5m2")
    p.add_argument("--b", default=None, help="format of B (weights); default: --a")
    p.add_argument("--acc", default=None,
                   help="accumulator: fp32 fp16 bf16 int32 int24 int16, or tensor_core:GPU (h100, a100, ...); "
                        "default int32 for int8 operands, else fp32")
    p.add_argument("--rounding", default=None, help="rounding of a float accumulator (rne rna rtz rup rdn rto sr)")
    p.add_argument("--scale", choices=("tensor", "channel"), default="tensor", help="weight scales")
    p.add_argument("--array", type=parse_array_size, default=(32, 32), help="array size RxC (default 32x32)")
    p.add_argument("--dataflow", choices=("os", "ws", "is"), default="ws")
    p.add_argument("--no-task", action="store_true", help="skip the end-to-end task metric")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_replay)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "b", "") is None:
        args.b = args.a
    if getattr(args, "acc", "") is None:
        args.acc = "int32" if args.a in ("int8", "uint8", "int4") else "fp32"
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
