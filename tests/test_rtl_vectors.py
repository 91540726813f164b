"""Golden vectors for RTL (accel_sim/rtl/golden.py).

Oracles: numpy's float16/float32 and ml_dtypes' bfloat16 bit patterns (the IEEE layouts the
accumulator registers use), numpy's int8/int16 two's complement views, the C engine's own
decode of the same layouts (FloatFormat), `accumulate` / `Array.gemm` for the values the
vectors must carry, and Yosys's $readmemh for the file format."""
from __future__ import annotations

import importlib
import json

import ml_dtypes
import numpy as np
import pytest

import accel_sim as acs
from accel_sim.formats import FloatFormat
from accel_sim.mac import FixedAcc, FloatAcc, IntAcc
from accel_sim.rtl.golden import acc_bits, acc_values, acc_width, vectors

IEEE = {"fp16": (np.float16, np.uint16), "bf16": (ml_dtypes.bfloat16, np.uint16), "fp32": (np.float32, np.uint32)}


def f64_bits(x):
    return np.asarray(x, dtype=np.float64).view(np.uint64)


def same_values(x, y):
    """Bit-equal float64 arrays, NaN by class."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    nan = np.isnan(x)
    return np.array_equal(nan, np.isnan(y)) and np.array_equal(f64_bits(x[~nan]), f64_bits(y[~nan]))


# -- accumulator bits <-> values -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_float_bits_match_numpy_and_ml_dtypes_on_every_pattern(name):
    dtype, utype = IEEE[name]
    mac = acs.MAC("e4m3fn", "e4m3fn", name)
    patterns = np.arange(1 << 16, dtype=np.uint64)
    with np.errstate(invalid="ignore"):       # signalling NaNs quieted on the way to float64
        values = patterns.astype(utype).view(dtype).astype(np.float64)
    assert same_values(acc_values(mac, patterns), values)
    nan = np.isnan(values)
    bits = acc_bits(mac, values)
    assert bits.dtype == np.uint64
    assert np.array_equal(bits[~nan], patterns[~nan])
    canonical = np.array(np.nan, dtype=dtype).view(utype)           # numpy/ml_dtypes' NaN pattern
    assert np.all(bits[nan] == canonical)


def test_fp32_bits_match_numpy():
    rng = np.random.default_rng(1)
    patterns = np.concatenate([rng.integers(0, 1 << 32, 200_000, dtype=np.uint64),
                               np.array([0, 1 << 31, 1, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0x7F800000, 0xFF800000,
                                         0x80000001], dtype=np.uint64)])
    with np.errstate(invalid="ignore"):
        values = patterns.astype(np.uint32).view(np.float32).astype(np.float64)
    nan = np.isnan(values)
    assert same_values(acc_values(acs.mac.ACCUMULATORS["fp32"], patterns), values)
    bits = acc_bits(acs.mac.ACCUMULATORS["fp32"], values)
    assert np.array_equal(bits[~nan], patterns[~nan])
    assert np.all(bits[nan] == np.array(np.nan, np.float32).view(np.uint32))


@pytest.mark.parametrize("e", [2, 3, 4, 5])
@pytest.mark.parametrize("m", [0, 1, 2, 4])
def test_small_float_accumulators_round_trip_every_pattern(e, m):
    acc = FloatAcc(e, m)
    width = acc_width(acc)
    assert width == 1 + e + m
    patterns = np.arange(1 << width, dtype=np.uint64)
    values = acc_values(acc, patterns)
    if m:   # the engine decodes the same IEEE layout (an ieee FloatFormat of e, m)
        assert same_values(values, FloatFormat(e, m).decode(patterns))
    nan = np.isnan(values)
    assert np.array_equal(acc_bits(acc, values)[~nan], patterns[~nan])
    if m:   # every NaN pattern writes back as the canonical quiet NaN
        assert nan.sum() == 2 * ((1 << m) - 1)
        assert np.all(acc_bits(acc, values[nan]) == (((1 << e) - 1) << m | (1 << (m - 1))))
    else:
        assert not nan.any()
    assert values[0] == 0 and not np.signbit(values[0])                       # +0
    assert values[1 << (e + m)] == 0 and np.signbit(values[1 << (e + m)])     # -0
    assert values[1 << m] == 2.0 ** acc.emin                                  # the smallest normal
    assert values[(1 << (e + m)) - (1 << m)] == np.inf                        # the all-ones exponent
    assert values[(1 << (e + m)) - (1 << m) - 1] == acc.max


@pytest.mark.parametrize("bits", [2, 3, 5, 8, 10])
def test_int_accumulators_round_trip_every_pattern(bits):
    acc = IntAcc(bits)
    patterns = np.arange(1 << bits, dtype=np.uint64)
    values = acc_values(acc, patterns)
    assert values.dtype == np.int64
    assert np.array_equal(values, np.where(patterns >= 1 << (bits - 1), patterns.astype(np.int64) - (1 << bits),
                                           patterns.astype(np.int64)))
    assert np.array_equal(acc_bits(acc, values), patterns)


@pytest.mark.parametrize("bits,dtype,utype", [(8, np.int8, np.uint8), (16, np.int16, np.uint16),
                                              (32, np.int32, np.uint32), (64, np.int64, np.uint64)])
def test_int_bits_are_numpys_twos_complement(bits, dtype, utype):
    info = np.iinfo(dtype)
    v = np.array([0, -1, 1, info.min, info.max, -12345 % info.max, -(12345 % info.max)], dtype=np.int64)
    assert np.array_equal(acc_bits(IntAcc(bits), v), v.astype(dtype).view(utype).astype(np.uint64))
    assert np.array_equal(acc_values(IntAcc(bits), v.astype(dtype).view(utype)), v)


def test_fixed_accumulator_bits():
    acc = FixedAcc(4, 4)
    patterns = np.arange(256, dtype=np.uint64)
    values = acc_values(acc, patterns)
    assert np.array_equal(values, patterns.astype(np.uint8).view(np.int8).astype(np.float64) / 16)
    assert np.array_equal(acc_bits(acc, values), patterns)


def test_acc_bits_bad_input():
    with pytest.raises(ValueError, match="not a value of fp16"):
        acc_bits(acs.mac.ACCUMULATORS["fp16"], [1 + 2.0**-11])
    with pytest.raises(ValueError, match="beyond its max"):
        acc_bits(acs.mac.ACCUMULATORS["fp16"], [65536.0])
    with pytest.raises(ValueError, match=r"\[-128, 127\]"):
        acc_bits(IntAcc(8), [128])
    with pytest.raises(ValueError, match="integers"):
        acc_bits(IntAcc(8), [np.nan])
    with pytest.raises(ValueError, match="no NaN pattern"):
        acc_bits(FloatAcc(3, 0), [np.nan])
    with pytest.raises(ValueError, match="multiples of 2"):
        acc_bits(FixedAcc(4, 4), [1 / 32])
    with pytest.raises(ValueError, match="quire"):
        acc_bits(acs.MAC("posit8", "posit8", "quire"), [0.0])
    with pytest.raises(ValueError, match="at most 53"):
        acc_width(FixedAcc(40, 20))
    with pytest.raises(ValueError, match=r"\[0, 2\^16 - 1\]"):
        acc_values(acs.mac.ACCUMULATORS["fp16"], [1 << 16])
    with pytest.raises(TypeError, match="integer array"):
        acc_values(IntAcc(8), [1.0])
    with pytest.raises(TypeError, match="mac must be"):
        acc_bits("fp16", [0.0])


# -- vectors: files ------------------------------------------------------------------------------

def read_hex(path, digits):
    lines = path.read_text().splitlines()
    assert all(len(line) == digits for line in lines), f"{path.name}: not {digits} hex digits a line"
    return np.array([int(line, 16) for line in lines], dtype=np.uint64)


def read_vectors(path):
    manifest = json.loads((path / "manifest.json").read_text())
    assert sorted(p.name for p in path.iterdir()) == sorted([*manifest["files"], "manifest.json"])
    files = {}
    for name, info in manifest["files"].items():
        files[name] = read_hex(path / name, info["hex_digits"])
        assert files[name].size == info["lines"]
    return manifest, files


def random_codes(fmt, shape, rng, finite=False):
    fmt = acs.formats.get(fmt)
    codes = np.arange(1 << fmt.bits)
    if finite:
        codes = codes[np.isfinite(fmt.decode(codes))]
    return codes[rng.integers(0, codes.size, shape)].astype(fmt.code_dtype)


MACS = {
    "int8->int32": lambda: acs.MAC("int8", "int8", "int32"),
    "int8->int16,sat": lambda: acs.MAC("int8", "int8", IntAcc(16, overflow="saturate")),
    "int4->int16": lambda: acs.MAC("int4", "int4", "int16"),
    "e4m3fn->fp32": lambda: acs.MAC("e4m3fn", "e4m3fn", "fp32"),
    "e4m3fn->fp16": lambda: acs.MAC("e4m3fn", "e4m3fn", "fp16"),
    "e5m2->e5m10,rtz": lambda: acs.MAC("e5m2", "e5m2", FloatAcc(5, 10, rounding="rtz")),
    "e3m4->bf16": lambda: acs.MAC("e3m4", "e3m4", "bf16"),
    "e4m3fn->fp16,sr": lambda: acs.MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, rounding="sr")),
    "e5m2->e4m3,sat": lambda: acs.MAC("e5m2", "e5m2", FloatAcc(4, 3, overflow="saturate")),
    "e4m3fn->fix": lambda: acs.MAC("e4m3fn", "e4m3fn", FixedAcc(12, 18)),
    "h100 e4m3": lambda: acs.presets.tensor_core("h100", "e4m3"),
}


@pytest.mark.parametrize("name", list(MACS))
def test_mac_vectors_carry_the_engines_steps(tmp_path, name):
    mac = MACS[name]()
    rng = np.random.default_rng(7)
    chains, k = 40, 37
    finite = isinstance(mac.acc, FixedAcc)   # a fixed-point register refuses NaN/inf operands
    a, b = random_codes(mac.a, (chains, k), rng, finite), random_codes(mac.b, (chains, k), rng, finite)
    returned = vectors(mac, a, b, tmp_path / "v", seed=5)
    manifest, files = read_vectors(tmp_path / "v")
    assert manifest == returned
    n = mac.terms
    steps = -(-k // n)
    assert manifest["kind"] == "mac" and manifest["seed"] == 5
    assert manifest["shapes"] == {"chains": chains, "k": k, "terms": n, "steps": steps}
    assert manifest["mac"]["name"] == mac.name and manifest["mac"]["acc"]["bits"] == acc_width(mac)
    assert manifest["accel_sim_version"] == acs.__version__
    pad = steps * n - k
    zero_a, zero_b = int(mac.a.encode(0.0)), int(mac.b.encode(0.0))
    assert np.array_equal(files["a.hex"].reshape(chains, -1), np.pad(a, ((0, 0), (0, pad)), constant_values=zero_a))
    assert np.array_equal(files["b.hex"].reshape(chains, -1), np.pad(b, ((0, 0), (0, pad)), constant_values=zero_b))
    acc_in, acc_out = files["acc_in.hex"].reshape(chains, steps), files["acc_out.hex"].reshape(chains, steps)
    assert np.all(acc_in[:, 0] == 0)                        # every chain starts from +0
    assert np.array_equal(acc_in[:, 1:], acc_out[:, :-1])   # a step's incoming bits are the last one's outgoing
    for t in range(steps):   # every step's outgoing bits: the engine's chain over that prefix, encoded
        prefix = acs.accumulate(a[:, :min(k, (t + 1) * n)], b[:, :min(k, (t + 1) * n)], mac, seed=5)
        assert np.array_equal(acc_out[:, t], acc_bits(mac, prefix)), f"step {t}"
    final = acs.accumulate(a, b, mac, seed=5)
    if mac.acc in (acs.mac.ACCUMULATORS["fp16"], acs.mac.ACCUMULATORS["bf16"], acs.mac.ACCUMULATORS["fp32"]):
        dtype, utype = IEEE[mac.acc.name]   # the same bits through numpy / ml_dtypes
        nan = np.isnan(final)
        assert np.array_equal(acc_out[~nan, -1], final[~nan].astype(dtype).view(utype).astype(np.uint64))


def test_mac_vectors_cover_specials(tmp_path):
    """Chains through NaN, inf, -0 and overflow write the canonical patterns."""
    mac = acs.MAC("e5m2", "e5m2", "fp16")
    f = mac.a
    one, big, inf, nan, neg0 = (int(f.encode(v)) for v in (1.0, 57344.0, np.inf, np.nan, -0.0))
    a = np.array([[neg0, neg0], [big, big], [inf, one], [nan, one]], dtype=np.uint8)
    b = np.array([[one, one], [big, big], [one, inf], [one, one]], dtype=np.uint8)
    vectors(mac, a, b, tmp_path / "v")
    _, files = read_vectors(tmp_path / "v")
    out = files["acc_out.hex"].reshape(4, 2)
    assert out[0].tolist() == [0x0000, 0x0000]     # +0 + (-0 * 1) = +0 under rne
    assert out[1].tolist() == [0x7C00, 0x7C00]     # 57344^2 overflows fp16 to inf
    assert out[2].tolist() == [0x7C00, 0x7C00]
    assert out[3].tolist() == [0x7E00, 0x7E00]     # NaN stays NaN, canonical


# -- vectors: arrays -------------------------------------------------------------------------------

def _clamp(v, acc):
    lo, hi = -(1 << (acc.bits - 1)), (1 << (acc.bits - 1)) - 1
    if acc.overflow == "saturate":
        return min(max(v, lo), hi)
    return (v - lo) % (1 << acc.bits) + lo


def replay(manifest, files, acc):
    """The array GEMM rebuilt from the per-PE per-cycle streams alone, with exact integer
    products, by the dataflow's rules (docs/rtl.md): os: each PE's register sums its products
    over a fold; ws/is: partial sums move down a column one PE per cycle from zero, the bottom
    PE's result joins the accumulator buffer."""
    R, C, df = manifest["array"]["rows"], manifest["array"]["cols"], manifest["array"]["dataflow"]
    n, m, n_out = manifest["shapes"]["terms"], manifest["shapes"]["m"], manifest["shapes"]["n"]
    fa, fb = acs.formats.get(manifest["mac"]["a"]["name"]), acs.formats.get(manifest["mac"]["b"]["name"])
    cycles = manifest["stream_cycles"]
    valid = files["valid.hex"].reshape(cycles, R, C).astype(bool)
    prod = (fa.decode(files["stream_a.hex"]) * fb.decode(files["stream_b.hex"])).reshape(cycles, R, C, n)
    prod = prod.sum(axis=3).astype(np.int64)   # int8 products and their sums are exact
    out = np.zeros((m, n_out), dtype=object)
    for fold in manifest["folds"]:
        t0, (s0, rows_f), (g0, cols_f) = fold["start"], fold["sr"], fold["sc"]
        regs = [[0] * C for _ in range(R)]
        for t in range(t0, t0 + fold["cycles"]):
            above = [row[:] for row in regs]
            for r in range(R):
                for c in range(C):
                    if not valid[t, r, c]:
                        continue
                    if df == "os":
                        regs[r][c] = _clamp(regs[r][c] + int(prod[t, r, c]), acc)
                        continue
                    regs[r][c] = _clamp((above[r - 1][c] if r else 0) + int(prod[t, r, c]), acc)
                    if r == rows_f - 1:   # the bottom of this tile: a chain is done
                        s = t - t0 - manifest["stream_offset"] - r - c
                        i, j = (s, g0 + c) if df == "ws" else (g0 + c, s)
                        out[i, j] = _clamp(out[i, j] + regs[r][c], acc)
        if df == "os":
            for r in range(rows_f):
                for c in range(cols_f):
                    out[s0 + r, g0 + c] = regs[r][c]
    return np.array(out.tolist(), dtype=np.int64)


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("acc", [IntAcc(32), IntAcc(16, overflow="saturate"), IntAcc(14)])
def test_array_streams_replay_to_the_gemms_bits(tmp_path, dataflow, acc):
    rng = np.random.default_rng(3)
    mac = acs.MAC("int8", "int8", acc)
    arr = acs.Array(4, 3, dataflow, mac)
    m, k, n = 6, 11, 5
    a, b = random_codes("int8", (m, k), rng), random_codes("int8", (k, n), rng)
    manifest = vectors(arr, a, b, tmp_path / "v")
    _, files = read_vectors(tmp_path / "v")
    res = arr.gemm(acs.QTensor(a, "int8"), acs.QTensor(b, "int8"))
    assert manifest["cycles"] == res.cycles == manifest["stream_cycles"]
    assert manifest["cycles"] == sum(f["cycles"] for f in manifest["folds"])
    assert manifest["array"] == {"rows": 4, "cols": 3, "dataflow": dataflow, "buffer_acc": manifest["mac"]["acc"]}
    assert np.array_equal(files["a.hex"], a.reshape(-1)) and np.array_equal(files["b.hex"], b.reshape(-1))
    assert np.array_equal(files["acc.hex"], acc_bits(acc, res.acc).reshape(-1))
    assert int(files["valid.hex"].sum()) == m * n * k        # every product once
    assert np.array_equal(replay(manifest, files, acc), res.acc)
    assert np.array_equal(acc_values(acc, files["acc.hex"]).reshape(m, n), res.acc)


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_array_vectors_of_float_and_block_macs(tmp_path, dataflow):
    rng = np.random.default_rng(4)
    for i, mac in enumerate([acs.MAC("e4m3fn", "e4m3fn", "fp16"), acs.presets.tensor_core("h100", "e4m3")]):
        arr = acs.Array(3, 2, dataflow, mac)
        a, b = random_codes(mac.a, (5, 70), rng, finite=True), random_codes(mac.b, (70, 3), rng, finite=True)
        manifest = vectors(arr, a, b, tmp_path / str(i))
        _, files = read_vectors(tmp_path / str(i))
        res = arr.gemm(acs.QTensor(a, mac.a), acs.QTensor(b, mac.b))
        assert manifest["cycles"] == res.cycles and manifest["shapes"]["k_steps"] == -(-70 // mac.terms)
        assert np.array_equal(files["acc.hex"], acc_bits(arr.buffer_acc, res.acc).reshape(-1))
        # the valid lanes hold each product of the GEMM once, plus K's zero padding (code 0: +0)
        valid = np.repeat(files["valid.hex"].astype(bool), mac.terms)
        got = np.sort(files["stream_a.hex"][valid].astype(np.int64) * 256 + files["stream_b.hex"][valid])
        pad = 5 * 3 * (manifest["shapes"]["k_steps"] * mac.terms - 70)
        want = np.sort(np.concatenate([(a[:, :, None].astype(np.int64) * 256 + b[None, :, :]).reshape(-1),
                                       np.zeros(pad, np.int64)]))
        assert np.array_equal(got, want)


def test_array_vectors_quantize_float_inputs_like_gemm(tmp_path):
    rng = np.random.default_rng(5)
    arr = acs.Array(4, 4, "os", acs.MAC("int8", "int8", "int32"))
    x, w = rng.standard_normal((5, 9)), rng.standard_normal((9, 4))
    vectors(arr, x, w, tmp_path / "v")
    _, files = read_vectors(tmp_path / "v")
    assert np.array_equal(files["acc.hex"], acc_bits(arr.mac, arr.gemm(x, w).acc).reshape(-1))


# -- writing --------------------------------------------------------------------------------------

def test_vectors_directory_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    vmod = importlib.import_module("accel_sim.rtl.golden")
    mac = acs.MAC("int8", "int8", "int32")
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError("disk full")

    monkeypatch.setattr(vmod.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        vmod.vectors(mac, a, a, tmp_path / "v")
    assert list(tmp_path.iterdir()) == []                  # nothing, not even the temporary directory
    # an existing directory survives a failed overwrite untouched
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "mine.txt").write_text("keep")
    calls.clear()
    with pytest.raises(OSError, match="disk full"):
        vmod.vectors(mac, a, a, tmp_path / "v", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["v"]
    assert (tmp_path / "v" / "mine.txt").read_text() == "keep" and len(list((tmp_path / "v").iterdir())) == 1
    monkeypatch.undo()
    with pytest.raises(ValueError, match="non-empty directory"):
        vmod.vectors(mac, a, a, tmp_path / "v")
    vmod.vectors(mac, a, a, tmp_path / "v", overwrite=True)
    assert not (tmp_path / "v" / "mine.txt").exists() and (tmp_path / "v" / "manifest.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["v"]
    (tmp_path / "empty").mkdir()                            # an empty directory is simply filled
    vmod.vectors(mac, a, a, tmp_path / "empty")
    assert (tmp_path / "empty" / "acc_out.hex").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        vmod.vectors(mac, a, a, tmp_path / "file", overwrite=True)


def test_vectors_bad_input(tmp_path, monkeypatch):
    vmod = importlib.import_module("accel_sim.rtl.golden")
    mac = acs.MAC("int4", "int4", "int32")
    ok = np.zeros((2, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        vmod.vectors(mac, ok, np.zeros((2, 4), np.uint8), tmp_path / "v")
    with pytest.raises(ValueError, match=r"outside \[0, 15\], not int4 codes"):
        vmod.vectors(mac, ok + 16, ok, tmp_path / "v")
    with pytest.raises(TypeError, match="integer array of int4 codes"):
        vmod.vectors(mac, ok.astype(float), ok, tmp_path / "v")
    with pytest.raises(ValueError, match=r"\(chains, K\)"):
        vmod.vectors(mac, np.zeros((2, 0), np.uint8), np.zeros((2, 0), np.uint8), tmp_path / "v")
    with pytest.raises(ValueError, match="quire"):
        vmod.vectors(acs.MAC("posit8", "posit8", "quire"), ok, ok, tmp_path / "v")
    with pytest.raises(TypeError, match="MAC or an Array"):
        vmod.vectors("int8", ok, ok, tmp_path / "v")
    with pytest.raises(TypeError, match="path"):
        vmod.vectors(mac, ok, ok, 3)
    arr = acs.Array(2, 2, "os", mac, seed=1)
    with pytest.raises(ValueError, match="own seed"):
        vmod.vectors(arr, ok, ok.T, tmp_path / "v", seed=2)
    with pytest.raises(ValueError, match="K differs"):
        vmod.vectors(arr, ok, ok, tmp_path / "v")
    with pytest.raises(ValueError, match="2 dimensions"):
        vmod.vectors(arr, ok[0], ok.T, tmp_path / "v")
    with pytest.raises(ValueError, match="block-scaled"):
        vmod.vectors(acs.Array(2, 2, "os", acs.MAC("e4m3fn", "e4m3fn", "fp32"), quant={"a": "block", "b": "block"}),
                     np.ones((2, 32)), np.ones((32, 2)), tmp_path / "v")
    with pytest.raises(ValueError, match="dataflow must be one of"):
        acs.Array(2, 2, "xs", mac)
    monkeypatch.setattr(vmod, "MAX_LINES", 100)
    with pytest.raises(ValueError, match="lines per file"):
        vmod.vectors(arr, np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), tmp_path / "v")
    assert list(tmp_path.iterdir()) == []


def test_cli_vectors(tmp_path, capsys):
    from accel_sim.cli import main
    capsys.readouterr()
    main(["vectors", "--a", "e4m3fn", "--acc", "fp16", "--rounding", "rne", "--m", "2", "--n", "3", "--k", "5",
          "--out", str(tmp_path / "mac")])
    manifest, files = read_vectors(tmp_path / "mac")
    assert manifest["shapes"]["chains"] == 6 and manifest["rounding"] == "rne"
    a, b = files["a.hex"].reshape(6, 5), files["b.hex"].reshape(6, 5)
    assert np.array_equal(a[0], a[2]) and np.array_equal(b[0], b[3])    # chain i*N + j: row i of A, column j of B
    capsys.readouterr()
    main(["vectors", "--a", "int8", "--acc", "int16", "--overflow", "saturate", "--m", "5", "--n", "6", "--k", "7",
          "--array", "4x4", "--dataflow", "ws", "--finite", "--out", str(tmp_path / "arr"), "--json"])
    printed = json.loads(capsys.readouterr().out)
    manifest, files = read_vectors(tmp_path / "arr")
    assert printed == manifest
    assert manifest["mac"]["acc"]["overflow"] == "saturate"
    assert manifest["cycles"] == acs.Array(4, 4, "ws").plan_gemm(5, 6, 7).cycles
    with pytest.raises(SystemExit, match="non-empty directory"):
        main(["vectors", "--a", "int8", "--out", str(tmp_path / "arr")])
    with pytest.raises(SystemExit, match="--k must be a positive integer"):
        main(["vectors", "--a", "int8", "--k", "0", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        main(["vectors", "--a", "int8", "--dataflow", "xs", "--out", str(tmp_path / "x")])
    # refused from the flags alone, before 2.7e10 codes are drawn
    with pytest.raises(SystemExit, match=r"--m \* --n \* --k \(chains \* K\) = 27000000000 lines per file"):
        main(["vectors", "--m", "3000", "--n", "3000", "--k", "3000", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match=r"--m \* --k \(A's codes\) = 100000000000 lines"):
        main(["vectors", "--m", "100000", "--n", "1", "--k", "1000000", "--array", "4x4", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
    capsys.readouterr()
    main(["vectors", "--a", "int4", "--b", "int8", "--acc", "int12", "--overflow", "saturate", "--out",
          str(tmp_path / "i12"), "--json"])
    assert json.loads(capsys.readouterr().out)["mac"]["name"] == "int4xint8->int12,sat"


@pytest.mark.rtl
def test_hex_files_load_with_a_verilog_readmemh(tmp_path):
    """Yosys's Verilog frontend runs each file's $readmemh into a memory of the manifest's
    width and depth; the words it reads are the values written."""
    import subprocess
    from accel_sim.rtl import synth
    try:
        yosys = synth._yosys_command(None)
    except RuntimeError:
        pytest.skip(f"no Yosys: {synth.INSTALL}")
    rng = np.random.default_rng(8)
    mac = acs.MAC("e4m3fn", "e4m3fn", "fp16")
    vectors(mac, random_codes(mac.a, (3, 5), rng), random_codes(mac.b, (3, 5), rng), tmp_path / "mac")
    vectors(acs.Array(2, 2, "ws", acs.MAC("int4", "int4", "int32")), random_codes("int4", (3, 4), rng),
            random_codes("int4", (4, 3), rng), tmp_path / "arr")
    for kind in ("mac", "arr"):
        manifest, files = read_vectors(tmp_path / kind)
        for name, info in manifest["files"].items():
            width, depth = 4 * info["hex_digits"], info["lines"]
            (tmp_path / "rd.v").write_text(
                f"module rd(input [31:0] i, output [{width - 1}:0] o);\n"
                f"  reg [{width - 1}:0] mem [0:{depth - 1}];\n"
                f"  initial $readmemh(\"{kind}/{name}\", mem);\n"
                "  assign o = mem[i];\nendmodule\n")
            subprocess.run([yosys, "-q", "-p", "read_verilog rd.v; proc; memory_collect; write_json m.json"],
                           cwd=tmp_path, check=True, capture_output=True)
            cells = json.loads((tmp_path / "m.json").read_text())["modules"]["rd"]["cells"]
            init = next(c for c in cells.values() if c["type"] == "$mem_v2")["parameters"]["INIT"]
            assert len(init) == width * depth
            words = [int(init[len(init) - (i + 1) * width:len(init) - i * width], 2) for i in range(depth)]
            assert words == files[name].tolist(), f"{kind}/{name}"
