"""The `accel-sim` command."""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from accel_sim import formats, quant

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
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
