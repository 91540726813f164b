"""Overflow reports: how many outputs of a GEMM overflowed or saturated, in which accumulator,
the likely cause and the remedy.

The counts come from the engine (csrc/array.c): acs_epilogue_counted counts each output row as
it writes it, acs_gemm the PE's tile sums:
  acc_nonfinite     output registers holding inf or NaN (the accumulator overflowed to inf, or a
                    NaN/inf operand code reached it);
  acc_saturated     output registers exactly at their clamp: +-max of a FloatAcc with
                    overflow="saturate", or of one rounding toward zero, up, down or
                    stochastically (IEEE directed rounding turns an overflow into +-max), the two's
                    complement bounds of a saturating IntAcc or FixedAcc, +-maxpos of a quire's
                    posit readout.  A sum that lands exactly on the clamp without having been
                    clamped counts too, so this is an upper bound on the outputs that were clamped
                    (it is exact whenever no exact sum equals the bound);
  pe_saturated      ws/is with a buffer unlike the PE register: outputs one of whose tile sums
                    left the PEs at the PE register's clamp (same definition; block-scaled GEMMs
                    count per K-block).  A PE that overflows to inf passes inf to the buffer, so
                    it shows in acc_nonfinite;
  out_nonfinite     epilogue outputs (fp32 acc * scale + bias) that are inf or NaN;
  format_nonfinite  outputs finite in fp32 that the rounding to out_format made inf or NaN.
The output register is the one holding the result: the PE's accumulator for os, the
accumulator buffer for ws and is, the MAC's scale_acc for block-scaled GEMMs.  Wrapping
integer and fixed-point registers (and quires past max_terms) overflow silently into valid
values: they are not counted."""
from __future__ import annotations

import warnings

__all__ = ["AccumulatorOverflowWarning", "COUNT_KEYS", "counted_clamp", "report", "message", "warn", "combine"]

COUNT_KEYS = ("acc_nonfinite", "acc_saturated", "out_nonfinite", "pe_saturated", "format_nonfinite")
_DIRECTED = ("rtz", "rup", "rdn", "sr")


class AccumulatorOverflowWarning(RuntimeWarning):
    """A GEMM's outputs overflowed (inf/NaN) or saturated in the accumulator; the message
    says how many, where, why and what to do.  Filter it with the warnings module."""


def counted_clamp(reg):
    """(lo, hi) the register's outputs are counted as saturated at: a saturating register's
    clamp, +-max of a float register (FloatAcc, BlockFMA) that overflows to inf but rounds
    toward zero, up, down or stochastically; None otherwise."""
    if reg.clamp is not None:
        return reg.clamp
    inner = getattr(reg, "acc", reg)
    if getattr(inner, "rounding", None) in _DIRECTED and getattr(inner, "overflow", None) == "inf":
        return (-reg.max, reg.max)
    return None


def report(counts, acc, outputs, scale_a=None, scale_b=None, fmt_a=None, fmt_b=None, pe=None, out_format=None):
    """The overflow report of a run (a dict), or None when nothing overflowed or saturated.
    acc: the output register's description; outputs: how many outputs the run wrote; pe: the
    PEs' register (ws/is); out_format: the format the outputs were rounded to."""
    nonfinite, saturated, out_nonfinite, pe_sat, fmt_nonfinite = (int(counts.get(k, 0)) for k in COUNT_KEYS)
    if not (nonfinite or saturated or out_nonfinite or pe_sat or fmt_nonfinite):
        return None
    biggest = None
    if fmt_a is not None and fmt_b is not None:
        biggest = fmt_a.max * fmt_b.max
    scaled = scale_a not in (None, "none") or scale_b not in (None, "none")
    wider = "a wider accumulator" + (" (fp32)" if acc.max < 3.4e38 else "")
    remedy = ("headroom when quantizing (quant={'headroom': N} or 'auto', --headroom N: amax maps to "
              f"max / 2^N), or {wider}")
    causes = []
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
        causes.append(cause)
    if saturated:
        if hasattr(acc, "readout"):   # a quire: the register is exact, its posit readout saturates
            causes.append(f"sums beyond the readout format's maxpos {acc.clamp[1]:.6g} read out as +-maxpos "
                          f"({acc.readout.name} saturates); read out to a wider posit (quire:posit16)")
            remedy = remedy.replace("a wider accumulator (fp32)", "a wider readout")
        else:
            causes.append(_clamp_cause("partial sums", acc))
    if pe_sat:
        causes.append(_clamp_cause("tile sums in the PEs", pe) + f", before the buffer {acc.name}")
    if fmt_nonfinite:
        causes.append(f"outputs beyond {out_format.name}'s max {out_format.max:.6g} became inf in the rounding to "
                      f"out_format {out_format.name}")
        fmt_remedy = f"a wider out_format than {out_format.name} (None: fp32)"
        remedy = fmt_remedy if len(causes) == 1 else f"{remedy}, or {fmt_remedy}"
    rep = {"outputs": int(outputs), **{k: int(counts.get(k, 0)) for k in COUNT_KEYS}, "accumulator": acc.name,
           "acc_max": float(acc.clamp[1] if saturated and acc.clamp else acc.max),
           "cause": "; ".join(causes), "remedy": remedy}
    if pe_sat:
        rep.update(pe=pe.name, pe_max=float(pe.max))
    if fmt_nonfinite:
        rep.update(out_format=out_format.name, out_format_max=float(out_format.max))
    rep["message"] = message(rep)
    return rep


def _clamp_cause(what, reg):
    inner = getattr(reg, "acc", reg)
    if reg.clamp is None:
        return (f"{what} reached +-max {reg.max:.6g} of {reg.name}, where rounding {inner.rounding!r} turns an "
                "overflow into +-max (IEEE directed rounding clamps)")
    return f"{what} reached the saturating accumulator {reg.name}'s clamp +-{reg.clamp[1]:.6g} and were clamped"


def message(rep: dict) -> str:
    """One line (for warnings and the CLI) of an overflow report."""
    parts = []
    if rep["acc_nonfinite"]:
        parts.append(f"{rep['acc_nonfinite']} of {rep['outputs']} outputs overflowed (inf/NaN)")
    if rep["acc_saturated"]:
        parts.append(f"{rep['acc_saturated']} of {rep['outputs']} outputs saturated")
    if rep["out_nonfinite"] and not rep["acc_nonfinite"]:
        parts.append(f"{rep['out_nonfinite']} of {rep['outputs']} outputs are inf/NaN after the epilogue")
    where = f"in the accumulator {rep['accumulator']} (max {rep['acc_max']:.6g})"
    if parts:
        parts[-1] += " " + where
    if rep.get("pe_saturated"):
        parts.append(f"{rep['pe_saturated']} of {rep['outputs']} outputs had a tile sum saturated in the PE "
                     f"register {rep.get('pe', '')} (max {rep.get('pe_max', 0):.6g})")
    if rep.get("format_nonfinite"):
        parts.append(f"{rep['format_nonfinite']} of {rep['outputs']} outputs overflowed (inf) in the rounding "
                     f"to out_format {rep.get('out_format', '')} (max {rep.get('out_format_max', 0):.6g})")
    return f"{' and '.join(parts)}; likely cause: {rep['cause']}; remedy: {rep['remedy']}"


def warn(rep, stacklevel=3):
    """One AccumulatorOverflowWarning for a report (nothing for None)."""
    if rep is not None:
        warnings.warn(rep["message"], AccumulatorOverflowWarning, stacklevel=stacklevel)


def combine(named: list, outputs=None):
    """One report over several runs (a replay's layers): (name, report or None) pairs -> the
    summed counts, the layers that overflowed, and the first such layer's cause and remedy.
    outputs: every run's outputs together (the Y of "X of Y outputs"), the layers that did not
    overflow included; default: those of the reports."""
    hit = [(name, rep) for name, rep in named if rep is not None]
    if not hit:
        return None
    first = hit[0][1]
    rep = {key: sum(r.get(key, 0) for _, r in hit) for key in COUNT_KEYS}
    rep["outputs"] = sum(r["outputs"] for _, r in hit) if outputs is None else int(outputs)
    rep.update({k: first[k] for k in ("accumulator", "acc_max", "cause", "remedy", "pe", "pe_max", "out_format",
                                      "out_format_max") if k in first}, layers=[name for name, _ in hit])
    rep["message"] = f"{len(hit)} of {len(named)} layers ({', '.join(rep['layers'])}): " + message(rep)
    return rep
