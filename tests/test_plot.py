"""accel_sim.plot: each plot is a real, readable PNG of the promised size, non-finite rows are
shown (not dropped), files are written atomically, the user's matplotlib state is untouched,
and bad input is refused with a clear error."""
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("matplotlib")
import matplotlib  # noqa: E402
import matplotlib.image  # noqa: E402
import matplotlib.text  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import accel_sim as acs  # noqa: E402
from accel_sim import ops, plot  # noqa: E402
from accel_sim.sweep import Table, pareto  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def table():
    """A real sweep: int8 and fp8 operands, int32/fp32/fp16/tensor-core accumulators, two
    weight scalings; e4m3fn and e5m2 into fp16 overflow on these operands (error = inf)."""
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((16, 64)), rng.standard_normal((64, 8))
    grid = {"a": ["int8", "e4m3fn", "e5m2"], "acc": ["int32", "fp32", "fp16", "tensor_core:h100"],
            "scale": ["tensor", "channel"]}
    t = acs.sweep((A, B), grid, executor=False, progress=False)
    assert any(not math.isfinite(r["error"]) for r in t), "the fixture must hold overflowed rows"
    assert any(math.isfinite(r["error"]) for r in t)
    return t


@pytest.fixture(scope="module")
def report():
    rng = np.random.default_rng(1)
    with acs.trace.record("toy", "tests") as rec:
        ops.linear(rng.standard_normal((4, 16)), rng.standard_normal((8, 16)), rng.standard_normal(8), name="fc")
        ops.conv2d(rng.standard_normal((2, 4, 7, 7)), rng.standard_normal((6, 2, 3, 3)), None,
                   stride=2, padding=1, groups=2, name="conv")
        ops.matmul(rng.standard_normal((3, 4, 5)), rng.standard_normal((5, 2)), name="attn")
    return acs.trace.replay(rec.trace, acs.Array(8, 8, "ws"), task=False)


def assert_png(path, size_in, dpi):
    """A non-empty PNG that matplotlib reads back, of figsize x dpi pixels (RGBA)."""
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_SIGNATURE
    img = matplotlib.image.imread(str(path))
    w, h = size_in
    assert img.shape == (round(h * dpi), round(w * dpi), 4)
    # not a blank canvas: a plot has dark (axes, text) and white pixels
    assert img[..., :3].min() < 0.3 and img[..., :3].max() > 0.9
    return img


def only_file(folder, name):
    assert sorted(os.listdir(folder)) == [name], "a temporary file was left behind"


def texts(fig):
    """Every text in the figure: titles, labels, annotations, figure texts, legend entries."""
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


# -- the three plots --------------------------------------------------------------------------------
def test_energy_accuracy_png(tmp_path, table, captured):
    out = plot.energy_accuracy(table, tmp_path / "ea.png")
    assert out == tmp_path / "ea.png"
    assert_png(out, plot.ACCURACY_FIGSIZE, plot.DPI)
    only_file(tmp_path, "ea.png")
    fig = captured[-1]
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "energy (pJ)" in ax.get_xlabel()
    # the Pareto front, as sweep.pareto computes it, is the step line
    front = pareto(table)
    steps = [ln for ln in ax.get_lines() if ln.get_drawstyle().startswith("steps")]
    assert len(steps) == 1
    assert list(steps[0].get_xdata()) == [r["energy_pj"] for r in front]
    assert list(steps[0].get_ydata()) == [r["error"] for r in front]
    # compact labels of format/accumulator and the varying scale
    all_text = texts(fig)
    assert any(t.startswith("int8/int32") for t in all_text)
    assert any(t.startswith("e4m3fn/tc:h100") for t in all_text)
    assert any(" ch" in t or ",ch" in t for t in all_text)
    # legend: a colour per format, a marker per accumulator
    for name in ("int8", "e4m3fn", "e5m2", "acc int32", "acc fp32", "acc fp16", "acc tc:h100"):
        assert name in all_text


def test_energy_accuracy_per_mac_and_title(tmp_path, table, captured):
    out = plot.energy_accuracy(table, tmp_path / "pm.png", x="pj_per_mac", title="my sweep", dpi=50,
                               figsize=(6, 4))
    assert_png(out, (6, 4), 50)
    ax = captured[-1].axes[0]
    assert "pJ/MAC" in ax.get_xlabel()
    assert ax.get_title() == "my sweep"


def test_log_y_only_when_error_spans_a_decade(tmp_path, captured):
    rows = [{"a": "int8", "b": "int8", "acc": "int32", "energy_pj": 100.0 * (i + 1), "error": e}
            for i, e in enumerate([0.01, 0.02, 0.05])]
    plot.energy_accuracy(rows, tmp_path / "lin.png")
    assert captured[-1].axes[0].get_yscale() == "linear"
    rows.append({"a": "e5m2", "b": "e5m2", "acc": "fp32", "energy_pj": 50.0, "error": 0.5})
    plot.energy_accuracy(rows, tmp_path / "log.png")
    assert captured[-1].axes[0].get_yscale() == "log"
    plot.error_vs_accumulator(rows, tmp_path / "acc.png")
    assert captured[-1].axes[0].get_yscale() == "log"


def test_energy_breakdown_png(tmp_path, report, captured):
    out = plot.energy_breakdown(report, tmp_path / "bd.png")
    assert_png(out, plot.BREAKDOWN_FIGSIZE, plot.DPI)
    only_file(tmp_path, "bd.png")
    fig = captured[-1]
    ax, axt = fig.axes
    # per layer: one bar per layer per part, stacked to the layer's energy, in µJ
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert names == [layer["name"] for layer in report.layers]
    heights = np.zeros(len(names))
    for patch in ax.patches:
        heights[round(patch.get_x() + patch.get_width() / 2)] += patch.get_height()
    assert heights == pytest.approx([layer["energy_pj"] * 1e-6 for layer in report.layers], rel=1e-9)
    assert len(ax.patches) == 7 * len(names)
    # the total bar sums to the report's total
    assert sum(p.get_height() for p in axt.patches) == pytest.approx(report.totals["energy_pj"] * 1e-6, rel=1e-9)
    assert "energy (µJ)" in ax.get_ylabel()
    legend = texts(fig)
    for part in ("mult", "pe_add", "buffer_add", "reg", "sram", "dram", "leakage"):
        assert any(t.startswith(part + " (") for t in legend)


def test_energy_breakdown_accepts_to_dict_and_widens_for_many_layers(tmp_path, report):
    d = report.to_dict()
    d["layers"] = d["layers"] * 20                          # 60 layers
    out = plot.energy_breakdown(d, tmp_path / "wide.png")
    assert_png(out, (0.2 * 60 + 2.0, plot.BREAKDOWN_FIGSIZE[1]), plot.DPI)
    # and from its JSON text (non-finite metrics as strings do not matter here)
    out = plot.energy_breakdown(json.loads(report.to_json()), tmp_path / "json.png")
    assert_png(out, plot.BREAKDOWN_FIGSIZE, plot.DPI)


def test_error_vs_accumulator_png(tmp_path, table, captured):
    out = plot.error_vs_accumulator(table, tmp_path / "acc.png")
    assert_png(out, plot.ACC_FIGSIZE, plot.DPI)
    only_file(tmp_path, "acc.png")
    ax = captured[-1].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["int32", "fp32", "fp16", "tc:h100"]
    assert ax.get_xlabel() == "accumulator"
    # every finite row is a point (its error among the plotted y values)
    plotted = {round(float(y), 15) for coll in ax.collections for _, y in coll.get_offsets()
               if coll.get_offset_transform() == ax.transData}
    for r in table:
        if math.isfinite(r["error"]):
            assert round(r["error"], 15) in plotted


def test_svg_and_no_suffix(tmp_path, table):
    svg = plot.energy_accuracy(table, tmp_path / "ea.svg")
    assert svg.read_bytes().lstrip().startswith(b"<?xml")
    bare = plot.energy_accuracy(table, tmp_path / "ea")
    assert bare.read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(os.listdir(tmp_path)) == ["ea", "ea.svg"]


# -- non-finite rows --------------------------------------------------------------------------------
def overflowed(table):
    return [r for r in table if not math.isfinite(r["error"])]


def test_overflowed_rows_are_shown_at_the_top_not_dropped(tmp_path, table, captured):
    over = overflowed(table)
    plot.energy_accuracy(table, tmp_path / "ea.png")
    fig = captured[-1]
    ax = fig.axes[0]
    note = [t for t in texts(fig) if t.startswith("overflow:")]
    assert len(note) == 1 and f"{len(over)} configurations" in note[0]
    for r in over:
        assert f"{r['a']}/{r['acc']}" in note[0]
    # red triangles at 0.96 in axes coordinates, at each overflowed row's energy
    tops = [coll for coll in ax.collections if coll.get_offset_transform() != ax.transData
            and np.allclose(coll.get_offsets()[:, 1], 0.96)]
    xs = sorted(float(coll.get_offsets()[0, 0]) for coll in tops)
    assert xs == sorted(r["energy_pj"] for r in over for _ in (0, 1))  # outline + format dot
    assert any(t.startswith("overflow (") for t in texts(fig))          # legend entry
    assert str(len(over)) + " overflowed" in ax.get_title()
    # the front ignores them
    assert all(math.isfinite(p["error"]) for p in pareto(table))

    plot.error_vs_accumulator(table, tmp_path / "acc.png")
    note = [t for t in texts(captured[-1]) if t.startswith("overflow:")]
    assert len(note) == 1 and f"{len(over)} configurations" in note[0]


def test_all_rows_overflowed(tmp_path, table):
    over = Table(overflowed(table))
    assert_png(plot.energy_accuracy(over, tmp_path / "ea.png"), plot.ACCURACY_FIGSIZE, plot.DPI)
    assert_png(plot.error_vs_accumulator(over, tmp_path / "acc.png"), plot.ACC_FIGSIZE, plot.DPI)


def test_rows_from_json_and_csv_with_inf_strings(tmp_path, table, captured):
    """Table.to_json writes inf as "inf", csv as text: both plot like the table itself."""
    from_json = json.loads(table.to_json())
    assert any(r["error"] == "inf" for r in from_json)
    plot.energy_accuracy(from_json, tmp_path / "j.png")
    assert any(t.startswith("overflow:") for t in texts(captured[-1]))
    import csv
    import io
    from_csv = list(csv.DictReader(io.StringIO(table.to_csv())))
    plot.energy_accuracy(from_csv, tmp_path / "c.png")
    steps = [ln for ln in captured[-1].axes[0].get_lines() if ln.get_drawstyle().startswith("steps")]
    assert list(steps[0].get_xdata()) == [r["energy_pj"] for r in pareto(table)]


def test_nonfinite_energy_is_listed(tmp_path, captured):
    rows = [{"a": "int8", "acc": "int32", "energy_pj": 10.0, "error": 0.1},
            {"a": "int8", "acc": "fp32", "energy_pj": math.nan, "error": 0.2}]
    plot.energy_accuracy(rows, tmp_path / "n.png")
    note = [t for t in texts(captured[-1]) if t.startswith("overflow:")]
    assert len(note) == 1 and "int8/fp32" in note[0] and "not drawn" in note[0]


# -- atomic writes and the user's matplotlib --------------------------------------------------------
def test_existing_file_is_replaced_atomically(tmp_path, table):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old picture")
    os.chmod(target, 0o640)
    plot.energy_accuracy(table, target)
    assert target.read_bytes()[:8] == PNG_SIGNATURE
    assert target.stat().st_mode & 0o777 == 0o640          # a replaced file keeps its permissions
    only_file(tmp_path, "plot.png")


@pytest.mark.parametrize("fail", ["replace", "savefig"])
def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, table, report, monkeypatch, fail):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old picture")

    def boom(*a, **k):
        raise OSError("disk full")

    if fail == "replace":
        monkeypatch.setattr(os, "replace", boom)
    else:
        monkeypatch.setattr(Figure, "savefig", boom)
    for call in (lambda: plot.energy_accuracy(table, target), lambda: plot.energy_breakdown(report, target),
                 lambda: plot.error_vs_accumulator(table, target)):
        with pytest.raises(OSError, match="disk full"):
            call()
        assert target.read_bytes() == b"old picture"
        only_file(tmp_path, "plot.png")


def test_bad_input_writes_nothing(tmp_path, table):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old picture")
    with pytest.raises(ValueError):
        plot.energy_accuracy([], target)
    with pytest.raises(ValueError):
        plot.energy_accuracy(table, target, y="nope")
    assert target.read_bytes() == b"old picture"
    only_file(tmp_path, "plot.png")


def test_backend_and_pyplot_untouched(tmp_path, table):
    """In a fresh interpreter whose user picked the svg backend: the plots neither import
    pyplot nor change the backend or rcParams."""
    rows = json.dumps([{k: r[k] for k in ("a", "b", "acc", "scale", "energy_pj", "pj_per_mac")}
                       | {"error": str(r["error"])} for r in table])
    code = textwrap.dedent(f"""
        import json, sys
        import matplotlib
        matplotlib.use("svg")
        before = dict(matplotlib.rcParams)
        import accel_sim as acs
        from accel_sim import plot
        rows = json.loads({rows!r})
        plot.energy_accuracy(rows, {str(tmp_path / 'a.png')!r})
        plot.error_vs_accumulator(rows, {str(tmp_path / 'b.png')!r})
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
        assert dict.__getitem__(matplotlib.rcParams, "backend") == "svg"
        after = dict(matplotlib.rcParams)
        changed = [k for k in before if repr(before[k]) != repr(after[k])]
        assert not changed, changed
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG_SIGNATURE


def test_import_without_matplotlib_and_a_clear_error():
    code = textwrap.dedent("""
        import sys
        sys.modules["matplotlib"] = None          # as if not installed
        from accel_sim import plot                # importing works
        try:
            plot.energy_accuracy([{"a": "int8", "acc": "int32", "energy_pj": 1.0, "error": 0.1}], "x.png")
        except ImportError as e:
            assert "pip install" in str(e) and "matplotlib" in str(e), e
            print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- errors --------------------------------------------------------------------------------------------
ROW = {"a": "int8", "b": "int8", "acc": "int32", "energy_pj": 1.0, "error": 0.1}


@pytest.mark.parametrize("fn", [plot.energy_accuracy, plot.error_vs_accumulator])
def test_table_errors(tmp_path, fn):
    p = tmp_path / "x.png"
    with pytest.raises(ValueError, match="empty"):
        fn([], p)
    with pytest.raises(ValueError, match="empty"):
        fn(Table(), p)
    with pytest.raises(ValueError, match="'error'"):
        fn([{k: v for k, v in ROW.items() if k != "error"}], p)
    with pytest.raises(ValueError, match="'acc'"):
        fn([{k: v for k, v in ROW.items() if k != "acc"}], p)
    with pytest.raises(ValueError, match="row 1 has no 'error'"):
        fn([ROW, {k: v for k, v in ROW.items() if k != "error"}], p)
    with pytest.raises(ValueError, match="row 0: error must be a number"):
        fn([dict(ROW, error="lots")], p)
    with pytest.raises(ValueError, match="row 0: error must be a number"):
        fn([dict(ROW, error=None)], p)
    with pytest.raises(TypeError, match="Table"):
        fn({"a": ["int8"]}, p)
    with pytest.raises(TypeError, match="Table"):
        fn("table.csv", p)
    with pytest.raises(TypeError, match="Table"):
        fn(42, p)
    with pytest.raises(TypeError, match="row 0 must be a dict"):
        fn([("int8", "int32")], p)
    with pytest.raises(TypeError, match="path"):
        fn([ROW], 42)
    with pytest.raises(TypeError, match="path"):
        fn([ROW], b"x.png")
    with pytest.raises(TypeError, match="title"):
        fn([ROW], p, title=3)
    with pytest.raises(ValueError, match="folder"):
        fn([ROW], tmp_path)
    with pytest.raises(ValueError, match="unknown image format 'xyz'"):
        fn([ROW], tmp_path / "x.xyz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fn([ROW], tmp_path / "missing" / "x.png")
    with pytest.raises(TypeError, match="dpi"):
        fn([ROW], p, dpi="high")
    with pytest.raises(ValueError, match="dpi"):
        fn([ROW], p, dpi=0)
    with pytest.raises(TypeError, match="figsize"):
        fn([ROW], p, figsize=5)
    with pytest.raises(ValueError, match="figsize"):
        fn([ROW], p, figsize=(0, 3))
    assert os.listdir(tmp_path) == []


def test_energy_accuracy_column_errors(tmp_path):
    p = tmp_path / "x.png"
    with pytest.raises(ValueError, match="'time_ms'"):
        plot.energy_accuracy([ROW], p, x="time_ms")
    with pytest.raises(TypeError, match="x must be a column name"):
        plot.energy_accuracy([ROW], p, x=0)
    with pytest.raises(TypeError, match="y must be a column name"):
        plot.energy_accuracy([ROW], p, y=None)
    with pytest.raises(ValueError, match="max_labels"):
        plot.energy_accuracy([ROW], p, max_labels=-1)


def test_energy_breakdown_errors(tmp_path, report):
    p = tmp_path / "x.png"
    with pytest.raises(ValueError, match="no layers"):
        plot.energy_breakdown(acs.trace.Report("empty"), p)
    with pytest.raises(ValueError, match="no layers"):
        plot.energy_breakdown({"layers": [], "totals": {}}, p)
    with pytest.raises(TypeError, match="Report"):
        plot.energy_breakdown([1, 2], p)
    with pytest.raises(TypeError, match="Report"):
        plot.energy_breakdown("report.json", p)
    with pytest.raises(TypeError, match="layers must be a list"):
        plot.energy_breakdown({"layers": "conv", "totals": {}}, p)
    with pytest.raises(TypeError, match="layer 0 must be a dict"):
        plot.energy_breakdown({"layers": [3], "totals": {}}, p)
    layer = dict(report.layers[0])
    with pytest.raises(ValueError, match=r"layer 0 \(fc\) has no energy_breakdown"):
        plot.energy_breakdown({"layers": [{k: v for k, v in layer.items() if k != "energy_breakdown"}]}, p)
    bd = {k: v for k, v in layer["energy_breakdown"].items() if k != "dram"}
    with pytest.raises(ValueError, match="lacks dram"):
        plot.energy_breakdown({"layers": [dict(layer, energy_breakdown=bd)]}, p)
    bd = dict(layer["energy_breakdown"], sram=-1.0)
    with pytest.raises(ValueError, match="energy sram must be a finite non-negative"):
        plot.energy_breakdown({"layers": [dict(layer, energy_breakdown=bd)]}, p)
    bd = dict(layer["energy_breakdown"], sram=math.inf)
    with pytest.raises(ValueError, match="energy sram"):
        plot.energy_breakdown({"layers": [dict(layer, energy_breakdown=bd)]}, p)
    with pytest.raises(TypeError, match="path"):
        plot.energy_breakdown(report, None)
    assert os.listdir(tmp_path) == []


def test_pandas_dataframe(tmp_path, table):
    pytest.importorskip("pandas")
    assert_png(plot.energy_accuracy(table.to_pandas(), tmp_path / "df.png"), plot.ACCURACY_FIGSIZE, plot.DPI)


def test_overflow_cause_is_worded_by_the_rows_scaling():
    from accel_sim.plot import _overflow_cause
    row = {"a": "e4m3fn", "acc": "fp16"}
    assert "amax at its format's max" in _overflow_cause([dict(row, scale="tensor")])
    block = _overflow_cause([dict(row, scale="block")])
    assert "block scaling" in block and "per-tensor" not in block and "Headroom" not in block
    none = _overflow_cause([dict(row, scale="none", scale_a="none")])
    assert "unscaled" in none and "amax at its format's max" not in none


def test_one_pareto_front_per_energy_table(tmp_path, captured):
    """Energies under two tables do not compare: each table's rows get their own front, and the
    point labels name the table."""
    def row(a, table, energy, error):
        return {"a": a, "acc": "fp32", "energy_table": table, "energy_pj": energy, "error": error}
    rows = [row("int8", "horowitz45", 100.0, 0.01), row("e4m3fn", "horowitz45", 120.0, 0.005),
            row("int8", "baalen2023", 100.0, 0.01), row("e4m3fn", "baalen2023", 90.0, 0.005)]
    plot.energy_accuracy(rows, tmp_path / "ea.png")
    ax = captured[-1].axes[0]
    steps = sorted(sorted(zip(ln.get_xdata(), ln.get_ydata())) for ln in ax.get_lines()
                   if ln.get_drawstyle().startswith("steps"))
    # per table, as sweep.pareto gives it: horowitz45 keeps both points, baalen2023 only e4m3fn
    assert steps == [[(90.0, 0.005)], [(100.0, 0.01), (120.0, 0.005)]]
    all_text = texts(captured[-1])
    assert any("baalen2023" in t for t in all_text) and any("horowitz45" in t for t in all_text)
