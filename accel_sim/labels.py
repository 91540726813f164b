"""Names a reader understands without the source: a sweep configuration (a Table row) as
"E4M3 x E4M3 -> fp16, per-tensor", and the short point labels of the plots with the key that
explains them."""
from __future__ import annotations

__all__ = ["format_name", "acc_name", "scaling_name", "describe", "scale_label", "short_label", "LABEL_KEY"]

# OCP's FP8/FP6/FP4 flavours by their exponent/mantissa split; fn/fnuz: no infinities (fn),
# and no negative zero either (fnuz)
_SUFFIXES = {"fnuz": " (fnuz)", "fn": ""}
_SCALES = {"tensor": "per-tensor", "channel": "per-channel", "none": "unscaled"}
_ACT_SCALES = {"tensor": "per-tensor", "channel": "per-row", "none": "unscaled"}

# What the short point labels of the plots abbreviate.
LABEL_KEY = ("labels: operand format/accumulator, then what differs between points: no suffix = scales per "
             "tensor, ch = per-channel weights, block / vector = MX / VS-Quant block scales, noscale = a plain "
             "cast, a:X = activations scaled otherwise, h4 = 4 bits of headroom (amax at max/16), h-auto = the "
             "least headroom that cannot overflow; tc:GPU = that GPU's tensor core; a preset's name (horowitz45, ...) = "
             "the energy table the point was costed with")


def format_name(name) -> str:
    """'e4m3fn' -> 'E4M3', 'e5m2fnuz' -> 'E5M2 (fnuz)', 'int8' -> 'INT8'; others as given."""
    name = str(name)
    if name.startswith(("int", "uint")):
        return name.upper()
    if name == "e4m3":   # the IEEE-style E4M3 (with infinities), not OCP's e4m3fn
        return "E4M3 (with inf)"
    if name[:1] == "e" and "m" in name and name[1:2].isdigit():
        base, _, rest = name.partition("f")
        suffix = _SUFFIXES.get("f" + rest, " " + "f" + rest) if rest else ""
        return base.upper() + suffix
    return name


def acc_name(acc) -> str:
    """'fp16' as it is; 'tensor_core:h100' -> 'H100 tensor core'; 'quire:posit16' -> 'quire
    read out to posit16'."""
    acc = str(acc)
    kind, _, arg = acc.partition(":")
    if kind == "tensor_core" and arg:
        return f"{arg.upper()} tensor core"
    if kind == "quire":
        return f"quire read out to {arg}" if arg else "quire"
    return acc


def scaling_name(row) -> str:
    """How the operands are scaled: 'per-tensor', 'per-channel weights', 'MX blocks of 32
    (e8m0 scales)', 'VS-Quant blocks of 16 (uint4 scales)', ...; with the headroom."""
    w, a = row.get("scale", "tensor"), row.get("scale_a", "tensor")
    if w in ("block", "vector"):
        kind, size = ("MX", 32) if w == "block" else ("VS-Quant", 16)
        fmt = row.get("scale_format") or ("e8m0" if w == "block" else "uint8")
        text = f"{kind} blocks of {size} ({fmt} scales)"
    elif w == a:
        text = _SCALES.get(w, str(w))
    else:
        text = f"{_SCALES.get(w, str(w))} weights, activations {_ACT_SCALES.get(a, str(a))}"
    h = row.get("headroom", 0)
    if h == "auto":
        text += ", headroom auto"
    elif h:
        text += f", headroom {h} bits"
    return text


def describe(row) -> str:
    """'E4M3 x E4M3 -> fp16, per-tensor' for a sweep row or configuration, with the rounding
    when one is given."""
    a = row.get("a")
    b = row.get("b") if row.get("b") is not None else a
    text = f"{format_name(a)} x {format_name(b)} -> {acc_name(row.get('acc'))}, {scaling_name(row)}"
    if row.get("rounding"):
        text += f", {row['rounding']}"
    return text


_SCALE_SHORT = {"tensor": "", "channel": "ch", "none": "noscale"}


def scale_label(weights, activations) -> str:
    """A point label's scaling suffix: '' for per-tensor scales, 'ch' for per-channel weights
    (activations per tensor), 'block', 'noscale', with 'a:X' where activations differ."""
    w = _SCALE_SHORT.get(weights, str(weights))
    same = activations == weights or (weights == "channel" and activations == "tensor")
    a = "" if same else "a:" + (_SCALE_SHORT.get(activations) or "t")
    return " ".join(p for p in (a, w) if p)


def short_label(value, key) -> str:
    """A label suffix for a key that varies across a plot's points (LABEL_KEY explains them);
    "" for no headroom."""
    if key == "scale":
        return {"tensor": "t", "channel": "ch", "none": "noscale"}.get(value, str(value))
    if key == "scale_a":
        return "a:" + {"tensor": "t", "channel": "ch", "none": "noscale"}.get(value, str(value))
    if key == "rounding":
        return str(value) if value is not None else "rne"
    if key == "headroom":   # none: no suffix
        return "" if not value else f"h{value}" if value != "auto" else "h-auto"
    return str(value)
