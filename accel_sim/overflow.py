"""Overflow reports: how many outputs of a GEMM overflowed or saturated, in which accumulator,
the likely cause and the remedy.

The counts come from the C epilogue (csrc/array.c, acs_epilogue_counted), which counts each
output row as it writes it:
  acc_nonfinite  output registers holding inf or NaN (the accumulator overflowed to inf, or a
                 NaN/inf operand code reached it);
  acc_saturated  output registers exactly at a saturating register's clamp: +-max of a FloatAcc
                 with overflow="saturate", the two's complement bounds of a saturating IntAcc or
                 FixedAcc, +-maxpos of a quire's posit readout.  A sum that lands exactly on the
                 clamp without having been clamped counts too, so this is an upper bound on the
                 outputs that were clamped (it is exact whenever no exact sum equals the bound);
  out_nonfinite  epilogue outputs (fp32 acc * scale + bias) that are inf or NaN.
The output register is the one holding the result: the PE's accumulator for os, the
accumulator buffer for ws and is, the MAC's scale_acc for block-scaled GEMMs.  Wrapping
integer and fixed-point registers (and quires past max_terms) overflow silently into valid
values: they are not counted.  Outputs converted to an out_format are counted before the
conversion."""
from __future__ import annotations

import warnings

__all__ = ["AccumulatorOverflowWarning", "COUNT_KEYS", "report", "message", "warn", "combine"]

COUNT_KEYS = ("acc_nonfinite", "acc_saturated", "out_nonfinite")


class AccumulatorOverflowWarning(RuntimeWarning):
    """A GEMM's outputs overflowed (inf/NaN) or saturated in the accumulator; the message
    says how many, where, why and what to do.  Filter it with the warnings module."""


def report(counts: dict, acc, outputs: int, scale_a=None, scale_b=None, fmt_a=None, fmt_b=None):
    """The overflow report of a run (a dict), or None when nothing overflowed or saturated.
    acc: the output register's description; outputs: how many outputs the run wrote."""
    nonfinite, saturated, out_nonfinite = (int(counts.get(k, 0)) for k in COUNT_KEYS)
    if not (nonfinite or saturated or out_nonfinite):
        return None
    biggest = None
    if fmt_a is not None and fmt_b is not None:
        biggest = fmt_a.max * fmt_b.max
    scaled = scale_a not in (None, "none") or scale_b not in (None, "none")
    wider = "a wider accumulator" + (" (fp32)" if acc.max < 3.4e38 else "")
    remedy = ("headroom when quantizing (quant={'headroom': N} or 'auto', --headroom N: amax maps to "
              f"max / 2^N), or {wider}")
    if nonfinite or out_nonfinite:
        cause = f"a partial sum exceeded the accumulator's max {acc.max:.6g}"
        if biggest is not None and biggest > acc.max:
            cause += (f" (one product of full-range {fmt_a.name} x {fmt_b.name} operands reaches "
                      f"{fmt_a.max:g} x {fmt_b.max:g} = {biggest:.6g}"
                      + (", and per-tensor scaling puts amax at the format's max)" if scaled else ")"))
        cause += ", or an operand code was NaN or inf"
        if getattr(acc, "overflow", None) == "inf":
            remedy += ", or a saturating one (overflow='saturate': clamps to +-max instead of inf)"
        if out_nonfinite > nonfinite:
            cause += f"; {out_nonfinite - nonfinite} outputs overflowed fp32 in the epilogue (acc x scale + bias)"
    elif hasattr(acc, "readout"):   # a quire: the register is exact, its posit readout saturates
        cause = (f"sums beyond the readout format's maxpos {acc.clamp[1]:.6g} read out as +-maxpos "
                 f"({acc.readout.name} saturates); read out to a wider posit (quire:posit16)")
        remedy = remedy.replace("a wider accumulator (fp32)", "a wider readout")
    else:
        cause = f"partial sums reached the saturating accumulator's clamp +-{acc.clamp[1]:.6g} and were clamped"
    rep = {"outputs": int(outputs), "acc_nonfinite": nonfinite, "acc_saturated": saturated,
           "out_nonfinite": out_nonfinite, "accumulator": acc.name,
           "acc_max": float(acc.clamp[1] if saturated and acc.clamp else acc.max),
           "cause": cause, "remedy": remedy}
    rep["message"] = message(rep)
    return rep


def message(rep: dict) -> str:
    """One line (for warnings and the CLI) of an overflow report."""
    parts = []
    if rep["acc_nonfinite"]:
        parts.append(f"{rep['acc_nonfinite']} of {rep['outputs']} outputs overflowed (inf/NaN)")
    if rep["acc_saturated"]:
        parts.append(f"{rep['acc_saturated']} of {rep['outputs']} outputs saturated")
    if rep["out_nonfinite"] and not rep["acc_nonfinite"]:
        parts.append(f"{rep['out_nonfinite']} of {rep['outputs']} outputs are inf/NaN after the epilogue")
    return (f"{' and '.join(parts)} in the accumulator {rep['accumulator']} (max {rep['acc_max']:.6g}); "
            f"likely cause: {rep['cause']}; remedy: {rep['remedy']}")


def warn(rep, stacklevel=3):
    """One AccumulatorOverflowWarning for a report (nothing for None)."""
    if rep is not None:
        warnings.warn(rep["message"], AccumulatorOverflowWarning, stacklevel=stacklevel)


def combine(named: list):
    """One report over several runs (a replay's layers): (name, report or None) pairs -> the
    summed counts, the layers that overflowed, and the first such layer's cause and remedy."""
    hit = [(name, rep) for name, rep in named if rep is not None]
    if not hit:
        return None
    first = hit[0][1]
    rep = {key: sum(r[key] for _, r in hit) for key in ("outputs",) + COUNT_KEYS}
    rep.update(accumulator=first["accumulator"], acc_max=first["acc_max"], cause=first["cause"],
               remedy=first["remedy"], layers=[name for name, _ in hit])
    rep["message"] = f"{len(hit)} of {len(named)} layers ({', '.join(rep['layers'])}): " + message(rep)
    return rep
