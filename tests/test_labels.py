"""Readable labels: configurations described as "E4M3 x E4M3 -> fp16, per-tensor" in tables
and the CLI, plot legends that say what colour and marker mean, and a caption that explains
the overflow points."""
import math

import matplotlib
import pytest

from accel_sim import plot
from accel_sim.cli import _print_table
from accel_sim.labels import LABEL_KEY, describe, format_name

matplotlib.use("Agg")


@pytest.mark.parametrize("row,want", [
    ({"a": "e4m3fn", "acc": "fp16", "scale": "tensor", "scale_a": "tensor"}, "E4M3 x E4M3 -> fp16, per-tensor"),
    ({"a": "e4m3fn", "b": "e5m2", "acc": "fp32", "scale": "channel", "scale_a": "tensor"},
     "E4M3 x E5M2 -> fp32, per-channel weights, activations per-tensor"),
    ({"a": "e5m2", "acc": "fp16", "scale": "tensor", "headroom": "auto"}, "E5M2 x E5M2 -> fp16, per-tensor, headroom auto"),
    ({"a": "e4m3fn", "acc": "fp16", "headroom": 4}, "E4M3 x E4M3 -> fp16, per-tensor, headroom 4 bits"),
    ({"a": "e4m3fn", "acc": "tensor_core:h100"}, "E4M3 x E4M3 -> H100 tensor core, per-tensor"),
    ({"a": "e2m1", "acc": "fp32", "scale": "block", "scale_a": "block"}, "E2M1 x E2M1 -> fp32, MX blocks of 32 (e8m0 scales)"),
    ({"a": "int4", "acc": "int32", "scale": "vector", "scale_a": "vector", "scale_format": "uint4"},
     "INT4 x INT4 -> int32, VS-Quant blocks of 16 (uint4 scales)"),
    ({"a": "posit8", "acc": "quire:posit16", "scale": "tensor", "scale_a": "none"},
     "posit8 x posit8 -> quire read out to posit16, per-tensor weights, activations unscaled"),
    ({"a": "e5m2", "acc": "fp32", "rounding": "rtz"}, "E5M2 x E5M2 -> fp32, per-tensor, rtz"),
])
def test_describe(row, want):
    assert describe(row) == want


def test_format_names():
    assert [format_name(n) for n in ("e4m3fn", "e4m3", "e5m2fnuz", "int8", "bf16", "posit8")] == \
        ["E4M3", "E4M3 (with inf)", "E5M2 (fnuz)", "INT8", "bf16", "posit8"]


ROWS = [{"a": "int8", "b": "int8", "acc": "int32", "scale": "tensor", "energy_pj": 5e6, "error": 0.04, "sqnr_db": 22.5,
         "pj_per_mac": 6.2},
        {"a": "e4m3fn", "b": "e4m3fn", "acc": "fp16", "scale": "tensor", "energy_pj": 6e6, "error": math.inf,
         "sqnr_db": -math.inf, "pj_per_mac": 6.5, "overflow": "21070 of 98304 outputs overflowed (inf/NaN) ..."},
        {"a": "e4m3fn", "b": "e4m3fn", "acc": "fp16", "scale": "tensor", "headroom": "auto", "energy_pj": 5.9e6,
         "error": 0.027, "sqnr_db": 28.6, "pj_per_mac": 6.4}]


def test_cli_table_reads_without_the_source(capsys):
    _print_table(ROWS)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("configuration (A x B -> accumulator, scaling)")
    assert any(l.startswith("E4M3 x E4M3 -> fp16, per-tensor, headroom auto ") and "28.60" in l for l in out)
    assert any(l.startswith("E4M3 x E4M3 -> fp16, per-tensor ") and "overflow" in l for l in out)
    assert "overflow in E4M3 x E4M3 -> fp16, per-tensor: 21070 of 98304 outputs overflowed (inf/NaN) ..." in out


def test_plot_legends_caption_and_overflow_cause(tmp_path, captured):
    plot.energy_accuracy(ROWS, tmp_path / "ea.png")
    texts = [t.get_text() for t in captured[-1].findobj(matplotlib.text.Text)]
    assert any(t.startswith("colour: operand format") for t in texts)
    assert any(t.startswith("marker: accumulator") for t in texts)
    assert LABEL_KEY in texts
    assert any(t == "e4m3fn/fp16 h-auto" for t in texts)          # headroom in the point label
    note = [t for t in texts if t.startswith("overflow:")]
    assert len(note) == 1
    assert "fp16 (max 65504) is exceeded by one product of full-range E4M3 x E4M3 (448 x 448 = 200704)" in note[0]
    assert "Headroom" in note[0]


def test_point_label_scale_suffixes():
    from accel_sim.labels import scale_label
    assert [scale_label(w, a) for w, a in (("tensor", "tensor"), ("channel", "tensor"), ("none", "none"),
                                           ("tensor", "none"), ("block", "block"), ("channel", "none"))] == \
        ["", "ch", "noscale", "a:noscale", "block", "a:noscale ch"]
