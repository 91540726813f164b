"""Plots of sweeps and replays (needs matplotlib: pip install accel_sim[plot]).

- energy_accuracy(table, path): error against energy, one point per configuration, the Pareto
  front as a step line; colour = operand format, marker = accumulator.
- energy_breakdown(report, path): stacked bars of each layer's energy parts (µJ), and the total.
- error_vs_accumulator(table, path): error against the accumulator, one series per operand format.

Every function draws on a matplotlib.figure.Figure with the Agg canvas (no pyplot, so the
user's backend, figures and rcParams are untouched), writes the file atomically (a temporary
file in the same folder, then a rename: a reader sees the old file or the new one, never a
part; an existing file is replaced) and returns the path.  The format follows the path's
suffix (png when it has none).  Rows whose metric is not finite (an accumulator that
overflowed gives error = inf) are drawn at the top edge with an "overflow" marker and listed in
a note, never dropped."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from accel_sim._io import atomic_write
from accel_sim.labels import LABEL_KEY, format_name, scale_label, short_label

__all__ = ["energy_accuracy", "energy_breakdown", "error_vs_accumulator", "DPI"]

DPI = 100
ACCURACY_FIGSIZE = (10.0, 6.0)      # inches: 1000 x 600 px at DPI
BREAKDOWN_FIGSIZE = (10.0, 5.5)     # widened by 0.2 in per layer beyond 40 layers
ACC_FIGSIZE = (8.0, 5.0)

_FORMAT_KEYS = ("a", "b")
_ENERGY_PARTS = ("mult", "pe_add", "buffer_add", "reg", "sram", "dram", "leakage")
_MARKERS = ("o", "s", "D", "v", "P", "X", "*", "h", "<", ">", "p", "d", "8", "H")
_AXIS_LABELS = {"energy_pj": "energy (pJ)", "pj_per_mac": "energy per MAC (pJ/MAC)",
                "error": "relative error  ||out - ref|| / ||ref||", "time_us": "time (µs)",
                "cycles": "cycles", "sqnr_db": "SQNR (dB)", "cosine": "cosine similarity"}
# The configuration keys besides the formats and the accumulator whose values suffix the point
# labels when they vary across the table (labels.short_label; labels.LABEL_KEY explains them).
_LABEL_KEYS = ("scale_a", "scale", "headroom", "rounding", "array", "dataflow", "calibration", "energy_table")


# -- helpers ------------------------------------------------------------------------------------
def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("accel_sim.plot needs matplotlib: pip install 'accel_sim[plot]' "
                          "(or pip install matplotlib)") from None
    return Figure, FigureCanvasAgg


def _check_path(path):
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not str(path) or path.name in ("", ".", ".."):
        raise ValueError(f"path must name a file, got {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"path {str(path)!r} is a folder; give a file name such as plot.png")
    return path


def _format_of(path, canvas):
    fmt = path.suffix[1:].lower() or "png"
    supported = canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"cannot write {path.name}: unknown image format {fmt!r}; "
                         f"use one of {', '.join(sorted(supported))}")
    return fmt


def _save(fig, canvas, path, dpi):
    """Render atomically (accel_sim._io.atomic_write) in the format the suffix names."""
    fmt = _format_of(path, canvas)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {str(path.parent)!r} does not exist")
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))


def _check_figure_args(dpi, figsize):
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)):
        raise TypeError(f"dpi must be a number, got {type(dpi).__name__}")
    if not (math.isfinite(dpi) and 10 <= dpi <= 1000):
        raise ValueError(f"dpi must be in [10, 1000], got {dpi!r}")
    if figsize is None:
        return
    try:
        w, h = (float(v) for v in figsize)
    except (TypeError, ValueError):
        raise TypeError(f"figsize must be a pair of numbers (inches), got {figsize!r}") from None
    if not (0 < w <= 100 and 0 < h <= 100):
        raise ValueError(f"figsize must be two positive sizes in inches (at most 100), got {figsize!r}")


def _rows(table, what="table"):
    """The table's rows as a list of mappings; TypeError / ValueError for anything else."""
    if hasattr(table, "to_dict") and hasattr(table, "columns") and hasattr(table, "iloc"):
        table = table.to_dict("records")            # a pandas DataFrame (Table.to_pandas())
    if isinstance(table, (str, bytes, Mapping)) or not isinstance(table, Sequence):
        raise TypeError(f"{what} must be a sweep Table (a list of row dicts), got {type(table).__name__}")
    rows = list(table)
    if not rows:
        raise ValueError(f"{what} is empty: nothing to plot (did every configuration get skipped?)")
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise TypeError(f"{what} row {i} must be a dict, got {type(r).__name__}")
    return rows


def _require(rows, columns, what="table"):
    missing = [c for c in columns if not any(c in r for r in rows)]
    if missing:
        have = sorted({k for r in rows for k in r})
        raise ValueError(f"{what} has no column {', '.join(map(repr, missing))}; it has {', '.join(have)}")
    for i, r in enumerate(rows):
        absent = [c for c in columns if c not in r]
        if absent:
            raise ValueError(f"{what} row {i} has no {', '.join(map(repr, absent))}")


def _number(v, column, i):
    """A float from a cell; the strings 'inf', '-inf', 'nan' (as JSON and CSV write them) count."""
    if isinstance(v, bool):
        raise ValueError(f"row {i}: {column} must be a number, got {v!r}")
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            raise ValueError(f"row {i}: {column} must be a number, got {v!r}") from None
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"row {i}: {column} must be a number, got {v!r}") from None


def _column_name(name, argname):
    if not isinstance(name, str):
        raise TypeError(f"{argname} must be a column name (str), got {type(name).__name__}")
    return name


def _fmt_label(r):
    a, b = str(r.get("a")), str(r.get("b") if r.get("b") is not None else r.get("a"))
    return a if a == b else f"{a}x{b}"


def _acc_label(r):
    acc = str(r.get("acc"))
    return "tc:" + acc.split(":", 1)[1] if acc.startswith("tensor_core:") else acc


def _varying(rows, keys):
    return [k for k in keys if len({repr(r.get(k)) for r in rows}) > 1]


def _point_label(r, varying):
    """'e4m3fn/fp32 ch': formats / accumulator, then the other keys that vary in the table
    (labels.LABEL_KEY explains the abbreviations)."""
    parts = [f"{_fmt_label(r)}/{_acc_label(r)}"]
    if "scale" in varying or "scale_a" in varying:
        parts.append(scale_label(r.get("scale", "tensor"), r.get("scale_a", "tensor")))
    parts += [short_label(r.get(k, 0 if k == "headroom" else None), k) for k in varying if k not in ("scale", "scale_a")]
    return " ".join(p for p in parts if p)


def _order(values):
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def _colours(n):
    from matplotlib import colormaps
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _log_or_linear_y(ax, finite_values):
    """log y when the positive finite values span more than one decade (symlog if some are 0)."""
    pos = [v for v in finite_values if v > 0]
    if len(pos) >= 2 and max(pos) / min(pos) > 10:
        if any(v <= 0 for v in finite_values):
            ax.set_yscale("symlog", linthresh=min(pos))
        else:
            ax.set_yscale("log")
        return True
    return False


def _overflow_note(fig, labels, what, rows=()):
    """A red note in the figure's bottom margin listing the rows drawn at the top edge, and
    why their outputs overflowed."""
    if not labels:
        return
    shown = ", ".join(labels[:8]) + (f", ... ({len(labels) - 8} more)" if len(labels) > 8 else "")
    cause = _overflow_cause(rows)
    fig.text(0.01, 0.012, f"overflow: {len(labels)} configuration{'s' if len(labels) > 1 else ''} with "
             f"non-finite {what}, drawn as red triangles at the top edge: {shown}." + (f" {cause}" if cause else ""),
             ha="left", va="bottom", fontsize=7, color="tab:red", wrap=True)


def _overflow_cause(rows):
    """Why the rows' outputs are not finite, in a sentence: their accumulator's max against one
    product of full-range operands, worded by the rows' scaling."""
    from accel_sim import formats
    from accel_sim.mac import get_acc
    said, scalings = [], set()
    for r in rows:
        try:
            fa = formats.get(r.get("a"))
            fb = formats.get(r.get("b") if r.get("b") is not None else r.get("a"))
            acc = get_acc(str(r.get("acc")))
            acc_max = acc.max
        except (ValueError, TypeError, AttributeError):
            continue
        product = fa.max * fb.max
        text = (f"{acc.name} (max {acc_max:g}) is exceeded by one product of full-range {format_name(fa.name)} x "
                f"{format_name(fb.name)} ({fa.max:g} x {fb.max:g} = {product:g})" if product > acc_max else
                f"partial sums exceed {acc.name}'s max {acc_max:g}")
        if text not in said:
            said.append(text)
        scalings.add("block" if r.get("scale") in ("block", "vector") else
                     "none" if r.get("scale", "tensor") == "none" and r.get("scale_a", "tensor") == "none" else "amax")
    if not said:
        return ""
    lead = {"amax": "per-tensor/per-channel scaling puts each operand's amax at its format's max",
            "block": "block scaling puts each block's amax near its format's max",
            "none": "unscaled operands (a plain cast) keep their full range"}
    return ("Cause: " + "; ".join(lead[k] for k in sorted(scalings)) + ", and " + "; ".join(said)
            + ". " + ("Headroom (amax at max/2^h) or a wider accumulator avoids it." if "amax" in scalings
                      else "A wider accumulator avoids it."))


def _overflow_band(ax, has_finite):
    """Room at the top of the axes for the overflow markers (at 0.96 in axes coordinates),
    above a dotted line."""
    if not has_finite:  # nothing finite sets the y range: give the markers an axis to sit on
        ax.set_ylim(0, 1)
        ax.set_yticks([])
    else:
        lo, hi = ax.get_ylim()
        if ax.get_yscale() == "log":
            ax.set_ylim(lo, hi * 10 ** (0.2 * math.log10(hi / lo)))
        else:
            ax.set_ylim(lo, hi + 0.2 * (hi - lo))
    ax.plot([0, 1], [0.92, 0.92], transform=ax.transAxes, color="tab:red", linewidth=0.7, linestyle=":",
            alpha=0.7, zorder=1)


def _energy_ticks(ax, axis):
    """Engineering tick labels (510k, 1.2M) on a log axis; minor ticks labelled too when the
    axis spans less than about a decade (otherwise it may have no labelled tick at all)."""
    from matplotlib.ticker import EngFormatter, NullFormatter
    a = ax.xaxis if axis == "x" else ax.yaxis
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    a.set_major_formatter(EngFormatter(sep=""))
    a.set_minor_formatter(EngFormatter(sep="") if hi / lo < 20 else NullFormatter())
    a.set_tick_params(which="minor", labelsize=7)


def _place_labels(ax, items, fontsize=6.5):
    """Annotate points without overlaps where possible: items are (x, y, text, colour,
    xycoords) in the coordinates xycoords names; labels of points that coincide on screen and
    share their format/accumulator are merged ("e5m2/fp32 t,ch").  Each label tries offsets in
    rings around its point and takes the first free spot inside the axes; a far one gets a
    leader line."""
    fig = ax.figure
    ax.get_xlim(), ax.get_ylim()            # settle autoscaling before transforming
    px_per_pt = fig.dpi / 72.0
    box = ax.get_window_extent()
    merged = []
    for x, y, text, colour, coords in items:
        disp = (coords.transform((x, y)) if coords is not ax.transData else ax.transData.transform((x, y)))
        head, _, tail = text.partition(" ")
        for m in merged:
            if abs(m["disp"][0] - disp[0]) < 3 and abs(m["disp"][1] - disp[1]) < 3 and m["head"] == head:
                if tail and tail not in m["tails"]:
                    m["tails"].append(tail)
                break
        else:
            merged.append({"xy": (x, y), "disp": disp, "head": head, "tails": [tail] if tail else [],
                           "colour": colour, "coords": coords})
    obstacles = [(m["disp"][0] - 4, m["disp"][1] - 4, m["disp"][0] + 4, m["disp"][1] + 4) for m in merged]
    placed = []

    def free(r):
        if r[0] < box.x0 or r[2] > box.x1 + 40 or r[1] < box.y0 or r[3] > box.y1:
            return False
        return not any(r[0] < o[2] and o[0] < r[2] and r[1] < o[3] and o[1] < r[3] for o in placed + obstacles)

    for m in sorted(merged, key=lambda m: (m["disp"][0], -m["disp"][1])):
        text = m["head"] + (" " + ",".join(m["tails"]) if m["tails"] else "")
        w = len(text) * fontsize * 0.58 * px_per_pt
        h = fontsize * 1.25 * px_per_pt
        px, py = m["disp"]
        choice = None
        for ring in (5, 12, 22, 34, 48):
            d = ring * px_per_pt
            for dx, dy in ((d, d * 0.4), (d, -d * 0.4 - h), (-d - w, d * 0.4), (-d - w, -d * 0.4 - h),
                           (-w / 2, d), (-w / 2, -d - h), (d, -h / 2), (-d - w, -h / 2)):
                r = (px + dx, py + dy, px + dx + w, py + dy + h)
                if free(r):
                    choice = (dx, dy, ring)
                    break
            if choice:
                break
        if choice is None:
            choice = (5 * px_per_pt, 2 * px_per_pt, 5)
        dx, dy, ring = choice
        placed.append((px + dx, py + dy, px + dx + w, py + dy + h))
        ax.annotate(text, m["xy"], xycoords=m["coords"], xytext=(dx / px_per_pt, dy / px_per_pt),
                    textcoords="offset points", fontsize=fontsize, color=m["colour"], ha="left", va="bottom",
                    zorder=6, annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.55", "shrinkA": 0, "shrinkB": 2}
                    if ring > 12 else None)


# -- energy against accuracy ----------------------------------------------------------------------
def energy_accuracy(table, path, x="energy_pj", y="error", title=None, *, dpi=DPI, figsize=None,
                    max_labels=40):
    """Scatter of `y` (default the relative error) against `x` (energy_pj, or pj_per_mac) for
    every row of a sweep Table, log x axis, log y axis when y spans more than a decade.

    Colour: the operand format (a, or "axb" when they differ); marker: the accumulator.  Each
    point is labelled "format/acc" plus the other configuration keys that vary in the table
    (weight scale as t/ch/noscale, activation scale as a:t/a:noscale, rounding, array, dataflow,
    calibration, energy table); beyond max_labels points only the Pareto front and the overflowed
    rows are labelled.  The Pareto front (sweep.pareto: lower is better on both axes) is a step
    line, one per energy table when the rows differ in it.  Rows whose y is not finite are drawn at the top edge
    with a red "overflow" triangle and listed in a note; rows whose x is not finite are listed
    in the note too.  Returns the path written."""
    from accel_sim.sweep import pareto
    rows = _rows(table)
    x = _column_name(x, "x")
    y = _column_name(y, "y")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    if isinstance(max_labels, bool) or not isinstance(max_labels, int) or max_labels < 0:
        raise ValueError(f"max_labels must be a non-negative int, got {max_labels!r}")
    _check_figure_args(dpi, figsize)
    path = _check_path(path)
    _require(rows, [x, y, "a", "acc"])
    xs = [_number(r[x], x, i) for i, r in enumerate(rows)]
    ys = [_number(r[y], y, i) for i, r in enumerate(rows)]
    Figure, Canvas = _matplotlib()
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    varying = _varying(rows, _LABEL_KEYS)
    labels = [_point_label(r, varying) for r in rows]
    fmts = _order(_fmt_label(r) for r in rows)
    accs = _order(_acc_label(r) for r in rows)
    colour = dict(zip(fmts, _colours(len(fmts))))
    marker = {acc: _MARKERS[i % len(_MARKERS)] for i, acc in enumerate(accs)}

    fig = Figure(figsize=figsize or ACCURACY_FIGSIZE, dpi=dpi)
    canvas = Canvas(fig)
    ax = fig.add_axes((0.09, 0.2, 0.66, 0.7))
    ok = [i for i in range(len(rows)) if math.isfinite(xs[i]) and math.isfinite(ys[i])]
    over = [i for i in range(len(rows)) if math.isfinite(xs[i]) and not math.isfinite(ys[i])]
    lost = [i for i in range(len(rows)) if not math.isfinite(xs[i])]
    finite_x = [xs[i] for i in ok + over]
    log_x = bool(finite_x) and min(finite_x) > 0
    if log_x:
        ax.set_xscale("log")
    _log_or_linear_y(ax, [ys[i] for i in ok])

    # one front per energy table when the rows differ in it: energies under two tables do not compare
    by_table = {}
    for i in ok:
        by_table.setdefault(rows[i].get("energy_table") if "energy_table" in varying else None, []).append(i)
    fronts = [pareto([{x: xs[i], y: ys[i], "_i": i} for i in idx], x, y) for idx in by_table.values()]
    front_idx = {p["_i"] for front in fronts for p in front}
    for i in ok:
        r = rows[i]
        ax.scatter([xs[i]], [ys[i]], s=46, color=colour[_fmt_label(r)], marker=marker[_acc_label(r)],
                   edgecolors="black" if i in front_idx else "none", linewidths=0.9, zorder=3)
    for front in fronts:
        ax.step([p[x] for p in front], [p[y] for p in front], where="post", color="0.25", linewidth=1.2,
                linestyle="--", zorder=2)
    if over and not ok:
        ax.scatter([xs[i] for i in over], [0.5] * len(over), s=0)   # x range from the overflowed rows
    ax.margins(x=0.08, y=0.08)
    if over:
        _overflow_band(ax, bool(ok))
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    for i in over:
        r = rows[i]
        ax.scatter([xs[i]], [0.96], transform=trans, marker="^", s=80, facecolor="none",
                   edgecolors="tab:red", linewidths=1.4, zorder=5, clip_on=False)
        ax.scatter([xs[i]], [0.96], transform=trans, marker=marker[_acc_label(r)], s=14,
                   color=colour[_fmt_label(r)], zorder=6, clip_on=False)
    if log_x:
        _energy_ticks(ax, "x")
    label_all = len(rows) <= max_labels
    items = [(xs[i], ys[i], labels[i], "black" if i in front_idx else "0.3", ax.transData)
             for i in ok if label_all or i in front_idx]
    items += [(xs[i], 0.96, labels[i], "tab:red", trans) for i in over]
    _place_labels(ax, items)
    if over or lost:
        notes = [labels[i] for i in over] + [f"{labels[i]} ({x} = {xs[i]}, not drawn)" for i in lost]
        _overflow_note(fig, notes, y + (f" (or {x})" if lost else ""), [rows[i] for i in over])

    ax.set_xlabel(_AXIS_LABELS.get(x, x) + (" (log)" if log_x else ""))
    ax.set_ylabel(_AXIS_LABELS.get(y, y) + (" (log)" if ax.get_yscale() != "linear" else ""))
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    n_over = len(over) + len(lost)
    ax.set_title(title if title is not None else
                 f"{_AXIS_LABELS.get(y, y).split('  ')[0]} vs {_AXIS_LABELS.get(x, x)}: {len(rows)} configurations"
                 + (f", {n_over} overflowed" if n_over else ""), fontsize=10)

    colours = [Line2D([], [], linestyle="", marker="o", color=colour[f], label=f) for f in fmts]
    legend = fig.legend(handles=colours, loc="upper left", bbox_to_anchor=(0.77, 0.9), fontsize=8, frameon=False,
                        title="colour: operand format\n(A, or AxB)", title_fontsize=8, alignment="left")
    fig.canvas.draw()   # the first legend's height places the second below it
    box = legend.get_window_extent().transformed(fig.transFigure.inverted())
    handles = [Line2D([], [], linestyle="", marker=marker[a], color="0.35", label=f"acc {a}") for a in accs]
    handles.append(Line2D([], [], linestyle="", label=" "))
    if front_idx:
        handles.append(Line2D([], [], color="0.25", linestyle="--", marker="o", markerfacecolor="none",
                              markeredgecolor="black", label=f"Pareto front ({len(front_idx)})" if len(fronts) == 1
                              else f"Pareto fronts ({len(fronts)}):\none per energy table"))
    if over:
        handles.append(Line2D([], [], linestyle="", marker="^", markerfacecolor="none", markeredgecolor="tab:red",
                              label=f"overflow ({len(over)}): non-finite {y}"))
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.77, box.y0 - 0.01), fontsize=8, frameon=False,
               title="marker: accumulator\n(black edge: on the front)", title_fontsize=8, alignment="left")
    fig.text(0.01, 0.085, LABEL_KEY, ha="left", va="bottom", fontsize=7, color="0.3", wrap=True)
    return _save(fig, canvas, path, dpi)


# -- energy breakdown of a replay --------------------------------------------------------------------
def _report_parts(report):
    if isinstance(report, Mapping):
        layers, totals = report.get("layers"), report.get("totals", {})
        model = report.get("model", "")
    elif hasattr(report, "layers") and hasattr(report, "totals"):
        layers, totals, model = report.layers, report.totals, getattr(report, "model", "")
    else:
        raise TypeError(f"report must be a trace Report (or its to_dict()), got {type(report).__name__}")
    if isinstance(layers, (str, bytes, Mapping)) or not isinstance(layers, Sequence):
        raise TypeError(f"report.layers must be a list of layer dicts, got {type(layers).__name__}")
    if not layers:
        raise ValueError("report has no layers: nothing to plot")
    if not isinstance(totals, Mapping):
        raise TypeError(f"report.totals must be a dict, got {type(totals).__name__}")
    return list(layers), totals, model


def energy_breakdown(report, path, title=None, *, dpi=DPI, figsize=None):
    """Stacked bars of each layer's energy by part (mult, pe_add, buffer_add, reg, sram, dram,
    leakage) in µJ, and beside them the whole model's total bar on its own scale, from a
    trace.replay Report (or Report.to_dict()).  The legend gives each part's share of the
    total.  Returns the path written."""
    layers, _totals, model = _report_parts(report)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    _check_figure_args(dpi, figsize)
    path = _check_path(path)
    names, parts = [], {p: [] for p in _ENERGY_PARTS}
    for i, layer in enumerate(layers):
        if not isinstance(layer, Mapping):
            raise TypeError(f"report layer {i} must be a dict, got {type(layer).__name__}")
        bd = layer.get("energy_breakdown")
        if not isinstance(bd, Mapping):
            raise ValueError(f"report layer {i} ({layer.get('name', '?')}) has no energy_breakdown dict")
        missing = [p for p in _ENERGY_PARTS if p not in bd]
        if missing:
            raise ValueError(f"report layer {i} ({layer.get('name', '?')}): energy_breakdown lacks "
                             f"{', '.join(missing)}")
        for p in _ENERGY_PARTS:
            v = _number(bd[p], f"energy_breakdown[{p!r}]", i)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"report layer {i} ({layer.get('name', '?')}): energy {p} must be a finite "
                                 f"non-negative number, got {bd[p]!r}")
            parts[p].append(v * 1e-6)          # pJ -> µJ
        names.append(str(layer.get("name", f"layer {i}")))
    totals = {p: sum(parts[p]) for p in _ENERGY_PARTS}
    grand = sum(totals.values())

    Figure, Canvas = _matplotlib()
    n = len(names)
    if figsize is None:
        figsize = (max(BREAKDOWN_FIGSIZE[0], 0.2 * n + 2.0), BREAKDOWN_FIGSIZE[1])
    fig = Figure(figsize=figsize, dpi=dpi)
    canvas = Canvas(fig)
    gs = fig.add_gridspec(1, 2, width_ratios=(max(n, 2), 1.2), left=0.08, right=0.8, bottom=0.3 if n > 4 else 0.1, top=0.88,
                          wspace=0.25)
    ax, axt = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
    colours = dict(zip(_ENERGY_PARTS, _colours(len(_ENERGY_PARTS))))
    bottom = [0.0] * n
    tb = 0.0
    for p in _ENERGY_PARTS:
        share = totals[p] / grand if grand else 0.0
        lab = f"{p} ({100 * share:.1f}%)" if share >= 0.001 or not grand else f"{p} (<0.1%)"
        ax.bar(range(n), parts[p], bottom=bottom, color=colours[p], width=0.75, label=lab)
        bottom = [b + v for b, v in zip(bottom, parts[p])]
        axt.bar([0], [totals[p]], bottom=[tb], color=colours[p], width=0.6)
        tb += totals[p]
    ax.set_xticks(range(n))
    ax.set_xticklabels(names, rotation=60 if n > 4 else 0, ha="right" if n > 4 else "center",
                       fontsize=7 if n > 12 else 8)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("energy (µJ)")
    ax.set_title("per layer", fontsize=9)
    axt.set_xticks([0])
    axt.set_xticklabels(["total"], fontsize=8)
    axt.set_xlim(-0.7, 0.7)
    axt.set_title("total", fontsize=9)
    axt.annotate(f"{grand:.4g} µJ", (0, grand), xytext=(0, 3), textcoords="offset points", ha="center",
                 fontsize=8)
    axt.set_ylim(0, grand * 1.12 if grand else 1.0)
    for a in (ax, axt):
        a.grid(True, axis="y", alpha=0.3)
        a.set_axisbelow(True)
    handles, labs = ax.get_legend_handles_labels()
    fig.legend(handles[::-1], labs[::-1], loc="upper left", bbox_to_anchor=(0.81, 0.88), fontsize=8,
               frameon=False, title="part (share of total)", title_fontsize=8)
    fig.suptitle(title if title is not None else
                 f"energy by part{' - ' + str(model) if model else ''}: {n} layer{'s' if n != 1 else ''}, "
                 f"{grand:.4g} µJ", fontsize=10)
    return _save(fig, canvas, path, dpi)


# -- error against the accumulator -------------------------------------------------------------------
def error_vs_accumulator(table, path, y="error", title=None, *, dpi=DPI, figsize=None):
    """`y` (default the relative error, log axis when it spans more than a decade) against the
    accumulator (categories in the table's order), one colour per operand format; rows of one
    format and accumulator that differ in other keys (scale, rounding, ...) sit side by side,
    and a line joins each format's best row per accumulator.  Non-finite rows (overflow) are
    drawn at the top edge and listed in a note.  Returns the path written."""
    rows = _rows(table)
    y = _column_name(y, "y")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    _check_figure_args(dpi, figsize)
    path = _check_path(path)
    _require(rows, [y, "a", "acc"])
    ys = [_number(r[y], y, i) for i, r in enumerate(rows)]
    Figure, Canvas = _matplotlib()
    from matplotlib.transforms import blended_transform_factory

    fmts = _order(_fmt_label(r) for r in rows)
    accs = _order(_acc_label(r) for r in rows)
    colour = dict(zip(fmts, _colours(len(fmts))))
    varying = _varying(rows, _LABEL_KEYS)
    fig = Figure(figsize=figsize or ACC_FIGSIZE, dpi=dpi)
    canvas = Canvas(fig)
    ax = fig.add_axes((0.1, 0.2, 0.64, 0.7))
    finite = [v for v in ys if math.isfinite(v)]
    _log_or_linear_y(ax, finite)
    width = 0.7 / max(len(fmts), 1)
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    over = []   # (x position, row index)
    for fi, f in enumerate(fmts):
        offset = (fi - (len(fmts) - 1) / 2) * width
        best_x, best_y = [], []
        for ai, acc in enumerate(accs):
            idx = [i for i, r in enumerate(rows) if _fmt_label(r) == f and _acc_label(r) == acc]
            if not idx:
                continue
            k = len(idx)
            for j, i in enumerate(idx):
                xpos = ai + offset + ((j - (k - 1) / 2) * width / k * 0.8 if k > 1 else 0)
                if math.isfinite(ys[i]):
                    ax.scatter([xpos], [ys[i]], color=colour[f], s=36, zorder=3,
                               marker="s" if rows[i].get("scale") == "channel" else "o")
                else:
                    over.append((xpos, i))
            fin = [ys[i] for i in idx if math.isfinite(ys[i])]
            best_x.append(ai + offset)
            best_y.append(min(fin) if fin else math.nan)   # a gap where every row overflowed
        if any(math.isfinite(v) for v in best_y):
            ax.plot(best_x, best_y, color=colour[f], linewidth=1.0, alpha=0.7, zorder=2)
        ax.scatter([], [], color=colour[f], label=f)
    ax.set_xlim(-0.6, len(accs) - 0.4)
    if finite:
        ax.margins(y=0.08)
    if over:
        _overflow_band(ax, bool(finite))
        for xpos, i in over:
            f = _fmt_label(rows[i])
            ax.scatter([xpos], [0.96], transform=trans, marker="^", s=70, facecolor="none",
                       edgecolors="tab:red", linewidths=1.3, zorder=4, clip_on=False)
            ax.scatter([xpos], [0.96], transform=trans, marker="s" if rows[i].get("scale") == "channel" else "o",
                       s=12, color=colour[f], zorder=5, clip_on=False)
        ax.scatter([], [], marker="^", facecolor="none", edgecolors="tab:red", label="overflow (non-finite)")
        _overflow_note(fig, [_point_label(rows[i], varying) for _, i in over], y, [rows[i] for _, i in over])
    if "scale" in varying:
        ax.scatter([], [], color="0.4", marker="o", label="scale per tensor")
        ax.scatter([], [], color="0.4", marker="s", label="scale per channel")
    ax.set_xticks(range(len(accs)))
    ax.set_xticklabels(accs, rotation=30 if len(accs) > 5 else 0, ha="right" if len(accs) > 5 else "center",
                       fontsize=8)
    ax.set_xlabel("accumulator")
    ax.set_ylabel(_AXIS_LABELS.get(y, y) + (" (log)" if ax.get_yscale() != "linear" else ""))
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.set_title(title if title is not None else
                 f"{_AXIS_LABELS.get(y, y).split('  ')[0]} by accumulator: {len(rows)} configurations",
                 fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(0.76, 0.9), fontsize=8,
               frameon=False, title="operand format\n(line: best per acc)", title_fontsize=8, alignment="left")
    return _save(fig, canvas, path, dpi)
