"""SCALE-Sim setups: architecture .cfg files and topology CSVs (accel_sim/scalesim.py).

The sample files below copy the structure of the files SCALE-Sim ships (configs/scale.cfg and
configs/google.cfg of scalesim-project/scale-sim-v2 and scale-sim-v3, topologies/conv_nets/*.csv,
topologies/GEMM_mnk/*.csv, topologies/mlperf/Transformer_short.csv, topologies/sparsity/*.csv),
spacing, trailing commas and missing trailing commas included; see docs/scalesim.md.
"""
from __future__ import annotations

import dataclasses

import pytest

from accel_sim import layers as acs_layers
from accel_sim.scalesim import (Layer, ScaleSimConfig, load_config, load_topology, output_size,
                                scalesim_output_size)

# ---------------------------------------------------------------------------------------------
# sample files (structure of SCALE-Sim's shipped ones)
# ---------------------------------------------------------------------------------------------

# scale-sim-v3 configs/scale.cfg (trailing spaces after the SRAM sizes are in the original)
V3_SCALE_CFG = """\
[general]
run_name = scale_example_run_32x32_ws

[architecture_presets]
ArrayHeight:    32
ArrayWidth:     32
IfmapSramSzkB:   64 \n\
FilterSramSzkB:  64 \n\
OfmapSramSzkB:   64 \n\
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : 10
Dataflow : os
MemoryBanks:   1
ReadRequestBuffer: 512
WriteRequestBuffer: 512

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""

# scale-sim-v3 configs/google.cfg
V3_GOOGLE_CFG = """\
[general]
run_name = GoogleTPU_v1_ws

[architecture_presets]
ArrayHeight:    256
ArrayWidth:     256
IfmapSramSzkB:    6144
FilterSramSzkB:   6144
OfmapSramSzkB:    2048
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Dataflow : ws
Bandwidth : 10
ReadRequestBuffer: 128
WriteRequestBuffer: 128

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: USER
UseRamulatorTrace: False
"""

# scale-sim-v2 configs/scale.cfg (a blank line inside a section, "USER " with a trailing
# space, and no newline at the end of the file)
V2_SCALE_CFG = """\
[general]
run_name = scale_example_run_32x32_os

[architecture_presets]
ArrayHeight:    32
ArrayWidth:     32
IfmapSramSzkB:   64
FilterSramSzkB:  64
OfmapSramSzkB:   64
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : 64
Dataflow : os
OnChipMemoryBanks:   1
OnChipMemoryBankPorts:   2

IfmapCustomLayout: True
FilterCustomLayout: False
IfmapSRAMBankBandwidth: 64
IfmapSRAMBankNum: 10
FilterSRAMBankBandwidth: 640
FilterSRAMBankNum: 1
IfmapSRAMBankPort: 2
FilterSRAMBankPort: 2
MemoryBanks: 1

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: USER """

# scale-sim-v2 configs/google.cfg
V2_GOOGLE_CFG = """\
[general]
run_name = GoogleTPU_v1_ws

[architecture_presets]
ArrayHeight:    256
ArrayWidth:     256
IfmapSramSzkB:    6144
FilterSramSzkB:   6144
OfmapSramSzkB:    2048
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Dataflow : ws
Bandwidth : 10
MemoryBanks: 1

[run_presets]
InterfaceBandwidth: CALC
SRAM_row_size: 2
SRAM_bank_size: 5
DRAM_row_size: 2
DRAM_bank_size: 5"""

# scale-sim-v1 (ARM-software/SCALE-Sim) configs/scale.cfg: not a v2/v3 file
V1_SCALE_CFG = """\
[general]
run_name = "MLPERF_AlphaGoZero_32x32_os"

[architecture_presets]
ArrayHeight:    32
ArrayWidth:     32
IfmapSramSz:    512
FilterSramSz:   512
OfmapSramSz:    256
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Dataflow:       os

[run_presets]
InterfaceBandwidth: CALC
"""

# topologies/conv_nets/alexnet.csv
ALEXNET_CSV = """\
Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,
Conv1     ,224         ,224        ,11           ,11          ,3       ,96        ,4      ,
Conv2     ,27         ,27        ,5            ,5           ,96      ,256       ,1      ,
Conv3     ,13          ,13         ,3            ,3           ,256     ,384       ,1      ,
Conv4     ,13          ,13         ,3            ,3           ,384     ,384       ,1      ,
Conv5     ,13          ,13         ,3            ,3           ,384     ,256       ,1      ,
"""

# topologies/conv_nets/test.csv
TEST_CSV = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, "
            "Strides,\nInc5b_3x3, 7, 7, 3, 3, 192, 384, 1,\n")

# topologies/conv_nets/mobilnet_paper.csv (first rows): a blank line after the header,
# "#dw" after the last comma, a row without the trailing comma, tab-indented rows
MOBILENET_CSV = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                 "Num Filter, Strides,\n"
                 "\n"
                 "Conv1, 224, 224, 3, 3, 3, 32, 2,\n"
                 "Conv2_dw, 112, 112, 3, 3, 1, 1, 1,#dw\n"
                 "Conv11,28,28,1,1,256,256,1\n"
                 "\tConv14_dw_0,14,14,3,3,1,1,1,\n"
                 "FC, 1, 1, 1, 1, 1024, 1000, 1,\n")

# topologies/mlperf/Transformer_short.csv (first rows): a row of bare commas, trailing spaces
TRANSFORMER_CSV = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                   "Num Filter, Strides,\n"
                   ",,,,,,,,\n"
                   "Embedding,512,1,1,1,1,33708,1,\n"
                   "Attn_Xmap,1,1,1,1,512,64,1, \n"
                   "Attn_QxK',1,64,1,1,1,64,1,\n"
                   "FFN2,1,1,1,1,2048,512,1,")

# topologies/GEMM_mnk/test_mnk_input.csv and gpt2.csv (the latter without trailing commas)
MNK_CSV = "Layer Name, M, N, K,\nTest 1, 256, 128, 256,"
GPT2_CSV = """\
Layer,M,N,K
QKT,1024,1024,64
QKTV,1024,64,1024
Linear1,1024,4800,1600
"""

# topologies/sparsity/conv.csv and gemm.csv
SPARSE_CONV_CSV = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                   "Num Filter, Strides, Sparsity,\n"
                   "CONV_1,     5,            5,           3,             3,            2,        6,"
                   "          1,       2:4,")
SPARSE_GEMM_CSV = "Layer Name, M, N, K, Sparsity,\nGEMM_1, 3, 5, 16, 3:4,\nGEMM_1, 1, 5, 16, 1:4,"

CONV_HEADER = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
               "Num Filter, Strides,\n")


def write(tmp_path, name, text, encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------

def test_v3_scale_cfg(tmp_path):
    cfg = load_config(write(tmp_path, "scale.cfg", V3_SCALE_CFG))
    assert cfg.run_name == "scale_example_run_32x32_ws"
    assert (cfg.rows, cfg.cols) == (32, 32)
    assert cfg.dataflow == "os"
    assert (cfg.ifmap_sram_kb, cfg.filter_sram_kb, cfg.ofmap_sram_kb) == (64, 64, 64)
    assert cfg.sram_kb == (64, 64, 64)
    assert cfg.bandwidth is None and cfg.dram_bytes_per_cycle is None   # CALC
    assert cfg.extra == {"IfmapOffset": "0", "FilterOffset": "10000000", "OfmapOffset": "20000000",
                         "Bandwidth": "10", "MemoryBanks": "1", "ReadRequestBuffer": "512",
                         "WriteRequestBuffer": "512", "UseRamulatorTrace": "False"}
    assert list(cfg.extra) == ["IfmapOffset", "FilterOffset", "OfmapOffset", "Bandwidth", "MemoryBanks",
                               "ReadRequestBuffer", "WriteRequestBuffer", "UseRamulatorTrace"]


def test_v3_google_cfg(tmp_path):
    cfg = load_config(write(tmp_path, "google.cfg", V3_GOOGLE_CFG))
    assert cfg.run_name == "GoogleTPU_v1_ws"
    assert (cfg.rows, cfg.cols, cfg.dataflow) == (256, 256, "ws")
    assert cfg.sram_kb == (6144, 6144, 2048)
    assert cfg.bandwidth == 10 and cfg.dram_bytes_per_cycle == 10        # USER, 1 byte a word
    assert "Bandwidth" not in cfg.extra and "InterfaceBandwidth" not in cfg.extra
    assert cfg.extra["IfmapSRAMBankNum"] == "10"
    assert cfg.extra["SparseRep"] == "ellpack_block"
    assert cfg.extra["RandomNumberGeneratorSeed"] == "40"
    assert cfg.extra["UseRamulatorTrace"] == "False"
    assert len(cfg.extra) == 3 + 2 + 8 + 5 + 1


def test_v2_scale_cfg(tmp_path):
    cfg = load_config(write(tmp_path, "scale.cfg", V2_SCALE_CFG))
    assert cfg.run_name == "scale_example_run_32x32_os"
    assert (cfg.rows, cfg.cols, cfg.dataflow) == (32, 32, "os")
    assert cfg.sram_kb == (64, 64, 64)
    assert cfg.bandwidth == 64                      # "InterfaceBandwidth: USER " (trailing space)
    assert cfg.extra["OnChipMemoryBanks"] == "1"
    assert cfg.extra["IfmapCustomLayout"] == "True"  # after the blank line, same section
    assert cfg.extra["FilterSRAMBankBandwidth"] == "640"
    assert cfg.extra["MemoryBanks"] == "1"
    assert cfg.extra["BlockSize"] == "8"


def test_v2_google_cfg(tmp_path):
    cfg = load_config(write(tmp_path, "google.cfg", V2_GOOGLE_CFG))
    assert (cfg.run_name, cfg.rows, cfg.cols, cfg.dataflow) == ("GoogleTPU_v1_ws", 256, 256, "ws")
    assert cfg.sram_kb == (6144, 6144, 2048)
    assert cfg.bandwidth is None
    assert cfg.extra == {"IfmapOffset": "0", "FilterOffset": "10000000", "OfmapOffset": "20000000",
                         "Bandwidth": "10", "MemoryBanks": "1", "SRAM_row_size": "2",
                         "SRAM_bank_size": "5", "DRAM_row_size": "2", "DRAM_bank_size": "5"}


def test_odd_spacing_case_and_delimiters(tmp_path):
    text = ("# a comment\n"
            "[general]\n"
            "RUN_NAME=  my run  \n"
            "; another comment\n"
            "[architecture_presets]\n"
            "  arrayheight   =8\n"
            "ARRAYWIDTH:4\n"
            "ifmapsramszkb : 1\n"
            "FilterSramSzKB= 2\n"
            "OFMAPSRAMSZKB :3\n"
            "dataflow:  IS \n"
            "bandwidth: 16, 8\n"
            "\n\n"
            "[run_presets]\n"
            "interfacebandwidth = user\n")
    cfg = load_config(write(tmp_path, "odd.cfg", text))
    assert cfg.run_name == "my run"
    assert (cfg.rows, cfg.cols, cfg.dataflow) == (8, 4, "is")
    assert cfg.sram_kb == (1, 2, 3)
    assert cfg.bandwidth == 16                      # one entry per memory bank; the first is used
    assert cfg.extra == {}


def test_crlf_bom_and_pathlike(tmp_path):
    p = write(tmp_path, "win.cfg", "\ufeff" + V3_GOOGLE_CFG.replace("\n", "\r\n"))
    assert load_config(p) == load_config(str(p)) == load_config(write(tmp_path, "g.cfg", V3_GOOGLE_CFG))


def test_same_key_in_two_sections(tmp_path):
    text = V3_GOOGLE_CFG.replace("[sparsity]\n", "[sparsity]\nIfmapCustomLayout: True\n")
    cfg = load_config(write(tmp_path, "two.cfg", text))
    assert "IfmapCustomLayout" not in cfg.extra
    assert cfg.extra["layout.IfmapCustomLayout"] == "False"
    assert cfg.extra["sparsity.IfmapCustomLayout"] == "True"


def test_config_is_frozen_and_hashable(tmp_path):
    cfg = load_config(write(tmp_path, "scale.cfg", V3_SCALE_CFG))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rows = 8
    assert hash(cfg) == hash(load_config(write(tmp_path, "again.cfg", V3_SCALE_CFG)))
    assert cfg == dataclasses.replace(cfg)


def test_config_constructor_checks():
    base = dict(run_name="r", rows=4, cols=4, dataflow="ws", ifmap_sram_kb=1, filter_sram_kb=1,
                ofmap_sram_kb=1)
    assert ScaleSimConfig(**base).bandwidth is None
    with pytest.raises(ValueError, match="dataflow must be one of"):
        ScaleSimConfig(**dict(base, dataflow="WS"))
    with pytest.raises(ValueError, match="rows must be a positive integer"):
        ScaleSimConfig(**dict(base, rows=0))
    with pytest.raises(TypeError, match="bandwidth must be an integer"):
        ScaleSimConfig(**base, bandwidth=1.5)


def _array_cls():
    try:
        from accel_sim.array import Array
    except (ImportError, AttributeError) as e:
        pytest.skip(f"accel_sim.array.Array is not available yet: {e}")
    return Array


def test_to_array(tmp_path):
    _array_cls()
    import accel_sim as acs
    mac = acs.MAC("e4m3", "e4m3", "fp32")
    cfg = load_config(write(tmp_path, "google.cfg", V3_GOOGLE_CFG))
    arr = cfg.to_array(mac)
    assert (arr.rows, arr.cols, arr.dataflow) == (256, 256, "ws")
    assert arr.mac is mac
    assert tuple(arr.sram_kb) == (6144, 6144, 2048)
    assert arr.dram_bytes_per_cycle == 10
    ideal = cfg.to_array(mac, dram_bytes_per_cycle=None)
    assert ideal.dram_bytes_per_cycle is None
    calc = load_config(write(tmp_path, "scale.cfg", V3_SCALE_CFG)).to_array(mac)
    assert (calc.rows, calc.cols, calc.dataflow, calc.dram_bytes_per_cycle) == (32, 32, "os", None)
    with pytest.raises(TypeError):
        cfg.to_array(mac, rows=4)


# -- config errors ----------------------------------------------------------------------------

def _bad_cfg(tmp_path, text, match, exc=ValueError):
    p = write(tmp_path, "bad.cfg", text)
    with pytest.raises(exc, match=match):
        load_config(p)


def test_error_missing_section(tmp_path):
    text = V3_SCALE_CFG.replace("[run_presets]\nInterfaceBandwidth: CALC\nUseRamulatorTrace: False\n", "")
    _bad_cfg(tmp_path, text, r"bad\.cfg: missing section \[run_presets\] \(sections found: "
                              r"\[general\], \[architecture_presets\]\)")


def test_error_missing_key(tmp_path):
    text = V3_SCALE_CFG.replace("ArrayWidth:     32\n", "")
    _bad_cfg(tmp_path, text, r"bad\.cfg: line 4: section \[architecture_presets\] has no key ArrayWidth")


def test_error_missing_run_name(tmp_path):
    _bad_cfg(tmp_path, V3_SCALE_CFG.replace("run_name = scale_example_run_32x32_ws\n", ""),
             r"bad\.cfg: line 1: section \[general\] has no key run_name")


def test_error_non_integer(tmp_path):
    _bad_cfg(tmp_path, V3_SCALE_CFG.replace("ArrayHeight:    32", "ArrayHeight:    32x"),
             r"bad\.cfg: line 5: \[architecture_presets\] ArrayHeight: expected a positive integer, got '32x'")
    _bad_cfg(tmp_path, V3_SCALE_CFG.replace("OfmapSramSzkB:   64 ", "OfmapSramSzkB:   64.5"),
             r"line 9: \[architecture_presets\] OfmapSramSzkB: expected a positive integer, got '64\.5'")


def test_error_zero_and_negative(tmp_path):
    _bad_cfg(tmp_path, V3_SCALE_CFG.replace("ArrayWidth:     32", "ArrayWidth:     0"),
             r"line 6: \[architecture_presets\] ArrayWidth: expected a positive integer, got '0'")
    _bad_cfg(tmp_path, V3_SCALE_CFG.replace("IfmapSramSzkB:   64 ", "IfmapSramSzkB:   -64"),
             r"line 7: \[architecture_presets\] IfmapSramSzkB: expected a positive integer, got '-64'")


def test_error_empty_value(tmp_path):
    _bad_cfg(tmp_path, V3_SCALE_CFG.replace("ArrayHeight:    32", "ArrayHeight:"),
             r"line 5: \[architecture_presets\] ArrayHeight: expected a positive integer, got ''")


def test_error_unknown_dataflow(tmp_path):
    _bad_cfg(tmp_path, V3_SCALE_CFG.replace("Dataflow : os", "Dataflow : rs"),
             r"bad\.cfg: line 14: \[architecture_presets\] Dataflow: unknown dataflow 'rs'; expected os, ws or is")


def test_error_interface_bandwidth(tmp_path):
    _bad_cfg(tmp_path, V3_SCALE_CFG.replace("InterfaceBandwidth: CALC", "InterfaceBandwidth: AUTO"),
             r"line 20: \[run_presets\] InterfaceBandwidth: expected USER or CALC, got 'AUTO'")


def test_error_user_without_bandwidth(tmp_path):
    _bad_cfg(tmp_path, V3_GOOGLE_CFG.replace("Bandwidth : 10\n", ""),
             r"line 4: section \[architecture_presets\] has no key Bandwidth, which InterfaceBandwidth USER requires")


def test_error_bad_bandwidth(tmp_path):
    _bad_cfg(tmp_path, V3_GOOGLE_CFG.replace("Bandwidth : 10", "Bandwidth : ten"),
             r"line 14: \[architecture_presets\] Bandwidth: expected a positive integer, got 'ten'")
    _bad_cfg(tmp_path, V3_GOOGLE_CFG.replace("Bandwidth : 10", "Bandwidth : 10,,20"),
             r"line 14: \[architecture_presets\] Bandwidth: expected a positive integer, got ''")


def test_error_duplicates(tmp_path):
    _bad_cfg(tmp_path, V3_SCALE_CFG.replace("ArrayWidth:     32\n", "ArrayWidth:     32\narraywidth: 16\n"),
             r"bad\.cfg: line 7: arraywidth: key appears twice in section \[architecture_presets\]")
    _bad_cfg(tmp_path, V3_SCALE_CFG + "[general]\nrun_name = again\n",
             r"bad\.cfg: line 2[23]: section \[general\] appears twice")


def test_error_not_ini(tmp_path):
    _bad_cfg(tmp_path, "ArrayHeight: 32\n" + V3_SCALE_CFG,
             r"bad\.cfg: line 1: expected a \[section\] header before 'ArrayHeight: 32'")
    _bad_cfg(tmp_path, V3_SCALE_CFG.replace("MemoryBanks:   1", "MemoryBanks 1"),
             r"bad\.cfg: line 15: not a \[section\], a 'key: value' or a 'key = value' line")
    _bad_cfg(tmp_path, "", r"bad\.cfg: missing section \[general\] \(sections found: none\)")


def test_error_v1_config(tmp_path):
    _bad_cfg(tmp_path, V1_SCALE_CFG,
             r"section \[architecture_presets\] has no key IfmapSramSzkB; found IfmapSramSz, the SCALE-Sim v1 spelling")


def test_error_not_text_and_bad_paths(tmp_path):
    p = tmp_path / "bin.cfg"
    p.write_bytes(b"[general]\nrun_name = \xff\xfe\n")
    with pytest.raises(ValueError, match=r"bin\.cfg: not a UTF-8 text file"):
        load_config(p)
    p.write_bytes(b"[general]\x00\n")
    with pytest.raises(ValueError, match=r"bin\.cfg: not a text file"):
        load_config(p)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.cfg")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        load_config(3)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        load_topology(None)


def test_files_are_only_read(tmp_path):
    p = write(tmp_path, "scale.cfg", V3_SCALE_CFG)
    q = write(tmp_path, "alexnet.csv", ALEXNET_CSV)
    before = sorted(tmp_path.iterdir()), p.read_bytes(), q.read_bytes()
    load_config(p)
    load_topology(q)
    assert (sorted(tmp_path.iterdir()), p.read_bytes(), q.read_bytes()) == before


# ---------------------------------------------------------------------------------------------
# topologies
# ---------------------------------------------------------------------------------------------

def test_alexnet_conv_form(tmp_path):
    net = load_topology(write(tmp_path, "alexnet.csv", ALEXNET_CSV))
    assert [l.name for l in net] == ["Conv1", "Conv2", "Conv3", "Conv4", "Conv5"]
    c1 = net[0]
    assert c1 == Layer("Conv1", "conv", ifmap_h=224, ifmap_w=224, filter_h=11, filter_w=11, channels=3,
                       num_filters=96, stride=4)
    assert (c1.m, c1.n, c1.k, c1.sparsity) == (None, None, None, None)
    # (224 - 11) / 4 = 53.25: PyTorch floor gives 54 outputs a side, SCALE-Sim's ceil 55
    assert c1.output_hw() == (54, 54)
    assert c1.output_hw("scalesim") == (55, 55)
    assert c1.gemm_shape() == (54 * 54, 96, 11 * 11 * 3)
    assert c1.gemm_shape(output_size="scalesim") == (55 * 55, 96, 363)
    assert net[1].gemm_shape() == (23 * 23, 256, 5 * 5 * 96)
    assert net[4].gemm_shape() == net[4].gemm_shape("scalesim") == (11 * 11, 256, 3 * 3 * 384)
    assert c1.macs() == 54 * 54 * 96 * 363


def test_conv_nets_test_csv(tmp_path):
    (layer,) = load_topology(write(tmp_path, "test.csv", TEST_CSV))
    assert layer == Layer("Inc5b_3x3", "conv", ifmap_h=7, ifmap_w=7, filter_h=3, filter_w=3, channels=192,
                          num_filters=384, stride=1)
    assert layer.output_hw() == layer.output_hw("scalesim") == (5, 5)
    assert layer.gemm_shape() == (25, 384, 1728)


def test_known_fact_table(tmp_path):
    """Shapes of the layers measured with SCALE-Sim 3.0.0 (ideal bandwidth)."""
    conv = load_topology(write(tmp_path, "conv.csv", CONV_HEADER + "c1, 10,10,3,3,16,32,1,\nc2, 8,8,1,1,64,64,1,\n"))
    assert conv[0].gemm_shape() == (64, 32, 144)
    assert conv[1].gemm_shape() == (64, 64, 64)
    for layer in conv:   # stride 1: both output-size rules agree
        assert layer.gemm_shape("scalesim") == layer.gemm_shape()
    gemm = load_topology(write(tmp_path, "gemm.csv", "Layer, M, N, K,\ngemm, 100,50,70,\n"))
    assert gemm == [Layer("gemm", "gemm", m=100, n=50, k=70)]
    assert gemm[0].gemm_shape() == gemm[0].gemm_shape("scalesim") == (100, 50, 70)


def test_gemm_columns_follow_scalesim_conversion(tmp_path):
    """SCALE-Sim turns a GEMM row (M, N, K) into the conv layer IFMAP M x K, filter 1 x K, one
    channel, N filters, stride 1 (topology_utils.load_arrays_gemm): its M output pixels, N
    filters and K-long windows are accel_sim's M, N and K."""
    (g,) = load_topology(write(tmp_path, "one.csv", "Layer, M, N, K,\nL, 100, 50, 70,\n"))
    as_conv = Layer("L", "conv", ifmap_h=g.m, ifmap_w=g.k, filter_h=1, filter_w=g.k, channels=1,
                    num_filters=g.n, stride=1)
    assert as_conv.gemm_shape() == as_conv.gemm_shape("scalesim") == g.gemm_shape() == (100, 50, 70)


def test_mnk_forms(tmp_path):
    assert load_topology(write(tmp_path, "mnk.csv", MNK_CSV)) == [Layer("Test 1", "gemm", m=256, n=128, k=256)]
    gpt2 = load_topology(write(tmp_path, "gpt2.csv", GPT2_CSV))
    assert [(l.name, l.gemm_shape()) for l in gpt2] == [
        ("QKT", (1024, 1024, 64)), ("QKTV", (1024, 64, 1024)), ("Linear1", (1024, 4800, 1600))]
    assert all(l.kind == "gemm" and l.ifmap_h is None and l.stride is None for l in gpt2)


def test_mobilenet_messy_rows(tmp_path):
    net = load_topology(write(tmp_path, "mobilenet.csv", MOBILENET_CSV))
    assert [l.name for l in net] == ["Conv1", "Conv2_dw", "Conv11", "Conv14_dw_0", "FC"]
    assert net[0].gemm_shape() == (111 * 111, 32, 27)
    assert net[0].gemm_shape("scalesim") == (112 * 112, 32, 27)
    assert net[1] == Layer("Conv2_dw", "conv", ifmap_h=112, ifmap_w=112, filter_h=3, filter_w=3, channels=1,
                           num_filters=1, stride=1)
    assert net[2].gemm_shape() == (28 * 28, 256, 256)     # no trailing comma
    assert net[3].gemm_shape() == (12 * 12, 1, 9)          # tab-indented
    assert net[4].gemm_shape() == (1, 1000, 1024)


def test_transformer_blank_comma_rows(tmp_path):
    net = load_topology(write(tmp_path, "transformer.csv", TRANSFORMER_CSV))
    assert [l.name for l in net] == ["Embedding", "Attn_Xmap", "Attn_QxK'", "FFN2"]
    assert net[0].gemm_shape() == (512, 33708, 1)
    assert net[1].gemm_shape() == (1, 64, 512)
    assert net[2].gemm_shape() == (64, 64, 1)


def test_sparsity_column(tmp_path):
    (c,) = load_topology(write(tmp_path, "sconv.csv", SPARSE_CONV_CSV))
    assert (c.name, c.sparsity, c.gemm_shape()) == ("CONV_1", "2:4", (9, 6, 18))
    g = load_topology(write(tmp_path, "sgemm.csv", SPARSE_GEMM_CSV))
    assert [(l.name, l.sparsity, l.gemm_shape()) for l in g] == [("GEMM_1", "3:4", (3, 5, 16)),
                                                               ("GEMM_1", "1:4", (1, 5, 16))]


def test_stride_width_column(tmp_path):
    """The form SCALE-Sim's own writer (write_topo_file) emits: Stride height, Stride width."""
    text = ("Layer name,IFMAP height,IFMAP width,Filter height,Filter width,Channels,Num filter,"
            "Stride height,Stride width,\nconv,9,9,3,3,2,4,2,2,\n")
    (layer,) = load_topology(write(tmp_path, "w.csv", text))
    assert (layer.stride, layer.gemm_shape()) == (2, (16, 4, 18))
    with pytest.raises(ValueError, match=r"w\.csv: line 2: Stride width: stride width 1 differs from stride height 2"):
        load_topology(write(tmp_path, "w.csv", text.replace("2,2,\n", "2,1,\n")))


def test_kind_override_and_split_depthwise(tmp_path):
    text = "name,h,w,fh,fw,c,f,s,\nconvDP,6,6,3,3,4,8,1,\nplain,6,6,3,3,4,8,1,\n"
    p = write(tmp_path, "custom.csv", text)
    net = load_topology(p, kind="conv")
    assert [l.name for l in net] == ["convDP", "plain"] and net[0].channels == 4
    split = load_topology(p, kind="conv", split_depthwise=True)
    assert [l.name for l in split] == [f"convDPChannel_{i}" for i in range(4)] + ["plain"]
    assert all(l.channels == 1 and l.num_filters == 8 and l.gemm_shape() == (16, 8, 9) for l in split[:4])
    g = load_topology(write(tmp_path, "g.csv", "layer,rows,cols,depth\nx,3,4,5\n"), kind="gemm")
    assert g[0].gemm_shape() == (3, 4, 5)
    # the header decides when kind is not given, and kind="gemm" on a GEMM header is fine
    assert load_topology(write(tmp_path, "mnk.csv", MNK_CSV), kind="gemm")[0].m == 256


def test_output_size_rules():
    for size in range(1, 30):
        for kernel in range(1, size + 1):
            for stride in range(1, 6):
                torch_rule = acs_layers.conv_output_size(size, kernel, stride, 0, 1)
                assert output_size(size, kernel, stride) == torch_rule
                extra = 1 if (size - kernel) % stride else 0
                assert scalesim_output_size(size, kernel, stride) == torch_rule + extra
    assert (output_size(224, 11, 4), scalesim_output_size(224, 11, 4)) == (54, 55)
    with pytest.raises(ValueError, match=r"kernel \(5\) is larger than the input \(4\)"):
        output_size(4, 5)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        scalesim_output_size(4, 3, 0)
    with pytest.raises(TypeError, match="size must be an integer"):
        output_size(4.0, 3)


def test_layer_constructor_checks():
    with pytest.raises(ValueError, match="kind must be 'conv' or 'gemm'"):
        Layer("x", "fc", m=1, n=1, k=1)
    with pytest.raises(ValueError, match="a gemm layer needs k"):
        Layer("x", "gemm", m=1, n=1)
    with pytest.raises(ValueError, match="stride belongs to the other layer kind"):
        Layer("x", "gemm", m=1, n=1, k=1, stride=1)
    with pytest.raises(ValueError, match="sparsity must be a ratio"):
        Layer("x", "gemm", m=1, n=1, k=1, sparsity="5:4")
    with pytest.raises(ValueError, match="output_size must be 'pytorch' or 'scalesim'"):
        Layer("x", "gemm", m=1, n=1, k=1).gemm_shape("floor")
    with pytest.raises(ValueError, match="is a GEMM; it has no output feature map"):
        Layer("x", "gemm", m=1, n=1, k=1).output_hw()
    with pytest.raises(dataclasses.FrozenInstanceError):
        Layer("x", "gemm", m=1, n=1, k=1).m = 2


# -- topology errors --------------------------------------------------------------------------

def _bad_topo(tmp_path, text, match, **kwargs):
    p = write(tmp_path, "bad.csv", text)
    with pytest.raises(ValueError, match=match):
        load_topology(p, **kwargs)


def test_error_empty_topology(tmp_path):
    _bad_topo(tmp_path, "", r"bad\.csv: empty topology file")
    _bad_topo(tmp_path, "\n  \n", r"bad\.csv: empty topology file")
    _bad_topo(tmp_path, CONV_HEADER + "\n,,,,,,,,\n", r"bad\.csv: line 1: empty topology \(a header and no layers\)")
    _bad_topo(tmp_path, MNK_CSV.split("\n")[0], r"bad\.csv: line 1: empty topology")


def test_error_unknown_header(tmp_path):
    _bad_topo(tmp_path, "Name, A, B, C,\nx, 1, 2, 3,\n",
              r"bad\.csv: line 1: header 'Name, A, B, C' is neither SCALE-Sim's conv form")
    _bad_topo(tmp_path, "Conv1, 224, 224, 11, 11, 3, 96, 4,\n",
              r"line 1: this looks like a layer, not a header", kind="conv")


def test_error_kind_conflict(tmp_path):
    _bad_topo(tmp_path, MNK_CSV, r"line 1: the header is SCALE-Sim's gemm form but kind='conv'", kind="conv")
    with pytest.raises(ValueError, match="kind must be None, 'conv' or 'gemm'"):
        load_topology(write(tmp_path, "ok.csv", MNK_CSV), kind="mnk")


def test_error_field_counts(tmp_path):
    _bad_topo(tmp_path, CONV_HEADER + "Conv1, 224, 224, 11, 11, 3,\n",
              r"bad\.csv: line 2: expected 8 fields \(Layer name, IFMAP Height, .*Strides\), got 6")
    _bad_topo(tmp_path, MNK_CSV + "\nshort, 1, 2,\n", r"line 3: expected 4 fields \(Layer name, M, N, K\), got 3")
    _bad_topo(tmp_path, MNK_CSV + "\nlong, 1, 2, 3, 1:2, 7,\n",
              r"line 3: expected 4 fields .* and an optional Sparsity, got 6")


def test_error_non_integer_fields(tmp_path):
    _bad_topo(tmp_path, ALEXNET_CSV.replace(",11          ,3 ", ",11.0        ,3 ", 1),
              r"bad\.csv: line 2: Filter Width \(column 5\): expected a positive integer, got '11\.0'")
    _bad_topo(tmp_path, GPT2_CSV.replace("QKTV,1024,64,", "QKTV,1024,0,"),
              r"line 3: N \(column 3\): expected a positive integer, got '0'")
    _bad_topo(tmp_path, CONV_HEADER + "c, 8,, 3, 3, 1, 1, 1,\n",
              r"line 2: IFMAP Width \(column 3\): expected a positive integer, got ''")


def test_error_filter_larger_than_ifmap(tmp_path):
    _bad_topo(tmp_path, CONV_HEADER + "ok, 8, 8, 3, 3, 1, 1, 1,\nbig, 2, 8, 3, 3, 1, 1, 1,\n",
              r"bad\.csv: line 3: Filter Height \(3\) is larger than IFMAP Height \(2\)")


def test_error_bad_sparsity_and_name(tmp_path):
    _bad_topo(tmp_path, SPARSE_GEMM_CSV.replace("3:4", "dense"),
              r"line 2: Sparsity \(column 5\): expected a sparsity ratio 'N:M' \(or no field\), got 'dense'")
    _bad_topo(tmp_path, SPARSE_GEMM_CSV.replace("1:4", "5:4"),
              r"line 3: Sparsity \(column 5\): expected N:M with 1 <= N <= M")
    _bad_topo(tmp_path, MNK_CSV + "\n , 1, 2, 3,\n", r"line 3: Layer name: empty layer name")


def test_error_not_utf8_topology(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes(MNK_CSV.replace("Test 1", "T\xe9st").encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv: not a UTF-8 text file"):
        load_topology(p)


def test_mutated_files_give_only_value_errors(tmp_path):
    """Random edits of the sample files: every outcome is a parsed result or a ValueError that
    names the file, never another exception."""
    import random
    rng = random.Random(20240601)
    bases = [V3_SCALE_CFG, V3_GOOGLE_CFG, V2_SCALE_CFG, V2_GOOGLE_CFG, V1_SCALE_CFG, ALEXNET_CSV, TEST_CSV,
             MOBILENET_CSV, TRANSFORMER_CSV, MNK_CSV, GPT2_CSV, SPARSE_CONV_CSV, SPARSE_GEMM_CSV]
    alphabet = "[]:=,#;\n\t 0123456789-.abcDP%\r\ufeff"
    p = tmp_path / "mutant.txt"
    for _ in range(300):
        s = list(rng.choice(bases))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(s) + 1)
            if rng.random() < 0.5 and s:
                del s[min(pos, len(s) - 1)]
            else:
                s.insert(pos, rng.choice(alphabet))
        p.write_text("".join(s), encoding="utf-8")
        for fn, kwargs in ((load_config, {}), (load_topology, {}), (load_topology, {"kind": "conv"}),
                           (load_topology, {"kind": "gemm"})):
            try:
                fn(p, **kwargs)
            except ValueError as e:
                assert str(p) in str(e)
