"""The block-scaled GEMM's one engine call (acs_gemm_blocks) against the per-block path it
replaced, kept here as the oracle: acs_gemm on each K-block's codes alone (seed _block_seed),
then acs_join_block of its partials into the scale registers.  Registers, outputs and counts
must agree bit for bit, under every dataflow, thread count and kernel choice (AVX2, portable,
general path)."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import accel_sim as acs
from accel_sim._native import fast_paths, ffi, lib, pointer, vector_isa
from accel_sim.array import DATAFLOWS
from accel_sim.mac import MAC, BlockFMA, FixedAcc, FloatAcc, IntAcc
from accel_sim.quant import QTensor

from conftest import assert_bits


def _block_seed(seed, blk):
    """The seed of K-block blk's chains, as docs/scaling.md states it."""
    return (seed + (blk + 1) * 0x9E3779B97F4A7C15) % (1 << 64)


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def old_block_gemm(arr, A, B):
    """The former Array._gemm_blocks loop: (scale registers as float64, counts) or the status."""
    (m, k), n, bs = A.shape, B.shape[1], A.block
    out_acc = arr.mac.acc if arr.dataflow == "os" else arr.buffer_acc
    int_out = isinstance(out_acc, IntAcc)
    sa_blocks, sb_blocks = A.block_scales(), B.block_scales()
    size = lib.acs_join_state_size()
    state = np.empty(m * n * size, np.uint8)
    assert lib.acs_join_start(arr.mac._scale_c, pointer(state, "void *"), m * n) == 0
    partial = np.empty((m, n), dtype=np.int64 if int_out else np.float64)
    p_float = ffi.NULL if int_out else pointer(partial, "double *")
    p_int = pointer(partial, "int64_t *") if int_out else ffi.NULL
    counts = ffi.new("acs_gemm_counts *")
    data = {"zero_macs": 0, "toggles_a": 0, "toggles_b": 0, "mult_toggles_a": 0, "mult_toggles_b": 0}
    for blk in range(k // bs):
        a = np.ascontiguousarray(A.codes[:, blk * bs:(blk + 1) * bs], dtype=arr.mac.a.code_dtype)
        bt = np.ascontiguousarray(B.codes.T[:, blk * bs:(blk + 1) * bs], dtype=arr.mac.b.code_dtype)
        status = lib.acs_gemm(arr.mac._c, arr._buffer_c, DATAFLOWS[arr.dataflow], arr.rows, arr.cols,
                              pointer(a, "void *"), pointer(bt, "void *"), m, n, bs, p_float, p_int,
                              _block_seed(arr.seed, blk), arr.threads, counts)
        if status:
            return status, None
        for key in data:
            data[key] += getattr(counts, key)
        sa = np.ascontiguousarray(sa_blocks[:, blk])
        sb = np.ascontiguousarray(sb_blocks[blk, :])
        status = lib.acs_join_block(arr.mac._scale_c, pointer(state, "void *"), p_float, p_int, m, n,
                                    pointer(sa, "double *"), 1, pointer(sb, "double *"), 1, arr.seed, blk)
        if status:
            return status, None
    acc = np.empty((m, n), np.float64)
    lib.acs_join_read(arr.mac._scale_c, pointer(state, "void *"), m * n, pointer(acc, "double *"))
    return acc, data


def random_codes(fmt, shape, rng, specials=True):
    codes = fmt.all_codes()
    if not specials:
        vals = fmt.decode(codes)
        codes = codes[np.isfinite(vals)]
    return rng.choice(codes, size=shape).astype(fmt.code_dtype)


def block_operands(elem, scale_format, m, k, n, block, rng, scales="typical", specials=True, coarse=False):
    fa = fb = acs.formats.get(elem)
    bits = {"e8m0": 8, "uint4": 4, "uint6": 6, "uint8": 8}[scale_format]
    if scales == "typical":   # e8m0: 2^-12..2^12; uint: 1..max
        lo, hi = (115, 140) if scale_format == "e8m0" else (1, (1 << bits) - 1)
    else:                     # every code: e8m0 extremes and NaN, zero integer scales
        lo, hi = 0, (1 << bits) - 1
    ca = rng.integers(lo, hi + 1, (m, k // block))
    cb = rng.integers(lo, hi + 1, (k // block, n))
    sa = rng.uniform(0.5, 2, m).astype(np.float32) if coarse else 1.0
    sb = rng.uniform(0.5, 2, n).astype(np.float32) if coarse else 1.0
    A = QTensor(random_codes(fa, (m, k), rng, specials), fa, scale=sa, axis=0 if coarse else None, block=block,
                block_axis=1, block_scale_codes=ca, scale_format=scale_format)
    B = QTensor(random_codes(fb, (k, n), rng, specials), fb, scale=sb, axis=1 if coarse else None, block=block,
                block_axis=0, block_scale_codes=cb, scale_format=scale_format)
    return A, B


def check(arr, A, B, what=""):
    """The engine call against the oracle, through the best (AVX-512 VNNI), AVX2 and portable
    kernels and the general path."""
    want, data = old_block_gemm(arr, A, B)
    modes = {"default": (True, True), "avx2": (2, True), "portable": (False, True), "general": (True, False)}
    if data is None:   # the same refusal (a fixed register meeting NaN or inf)
        word = {lib.ACS_ERR_NAN: "hold NaN", lib.ACS_ERR_RANGE: "hold infinities"}[want]
        for isa, fast in modes.values():
            with vector_isa(isa), fast_paths(fast), pytest.raises(ValueError, match=word):
                arr.gemm(A, B, metrics=False)
        return None
    runs = {}
    for name, (isa, fast) in modes.items():
        with vector_isa(isa), fast_paths(fast):
            runs[name] = arr.gemm(A, B, metrics=False)
    for name, res in runs.items():
        assert_bits(res.acc, want, f"{what} {name}")
        assert np.array_equal(np.isnan(res.acc), np.isnan(want))
        assert np.array_equal(res.acc.view(np.uint64)[~np.isnan(want)], want.view(np.uint64)[~np.isnan(want)])
        for key, v in data.items():
            assert res.counts[key] == v, (what, name, key)
    return runs["default"]


MX_ELEMENTS = ["e4m3fn", "e5m2", "e2m1", "e2m3", "e3m2"]
SCALE_ACCS = {"fp32": FloatAcc(8, 23), "fp16": FloatAcc(5, 10), "bf16-rtz": FloatAcc(8, 7, rounding="rtz"),
              "fixed": FixedAcc(40, 24)}


@pytest.mark.parametrize("scales", ["typical", "extreme"])
@pytest.mark.parametrize("scale_acc", list(SCALE_ACCS))
@pytest.mark.parametrize("elem", MX_ELEMENTS)
def test_mx_fp32_inner_matches_per_block_path(elem, scale_acc, scales):
    rng = rng_for("mx", elem, scale_acc, scales)
    mac = MAC(elem, elem, "fp32", scale_acc=SCALE_ACCS[scale_acc])
    A, B = block_operands(elem, "e8m0", 7, 96, 19, 32, rng, scales)
    for df in ("os", "ws", "is"):
        for rows, cols in ((4, 3), (32, 32), (5, 7)):      # 5 rows: blocks of several ws/is tiles
            check(acs.Array(rows, cols, df, mac), A, B, f"{elem} {scale_acc} {scales} {df} {rows}x{cols}")


@pytest.mark.parametrize("inner", ["int32", "int16-wrap", "int12-sat", "fixed"])
@pytest.mark.parametrize("scale_format", ["uint4", "uint8"])
@pytest.mark.parametrize("scale_acc", list(SCALE_ACCS))
def test_vsq_int_inner_matches_per_block_path(inner, scale_format, scale_acc):
    rng = rng_for("vsq", inner, scale_format, scale_acc)
    acc = {"int32": IntAcc(32), "int16-wrap": IntAcc(16), "int12-sat": IntAcc(12, "saturate"),
           "fixed": FixedAcc(24, 0)}[inner]
    mac = MAC("int4", "int4", acc, scale_acc=SCALE_ACCS[scale_acc])
    for block, scales in ((16, "typical"), (16, "extreme"), (3, "typical")):
        A, B = block_operands("int4", scale_format, 9, 48, 21, block, rng, scales, coarse=True)
        for df in ("os", "ws", "is"):
            for rows, cols in ((4, 4), (32, 32), (5, 2)):
                arr = acs.Array(rows, cols, df, mac, buffer_acc=acc)
                check(arr, A, B, f"{inner} {scale_format} {scale_acc} {block} {scales} {df} {rows}x{cols}")


def test_wide_int_operands_and_16_bit_codes():
    rng = rng_for("int8")
    for elem, acc in (("int8", IntAcc(32)), ("int8", IntAcc(24)), ("fp16", FloatAcc(8, 23))):
        mac = MAC(elem, elem, acc)
        fmt = acs.formats.get(elem)
        A = QTensor(random_codes(fmt, (6, 64), rng), fmt, block=16, block_axis=1,
                    block_scale_codes=rng.integers(0, 64, (6, 4)), scale_format="uint6")
        B = QTensor(random_codes(fmt, (64, 5), rng), fmt, block=16, block_axis=0,
                    block_scale_codes=rng.integers(0, 64, (4, 5)), scale_format="uint6")
        for df in ("os", "ws", "is"):
            check(acs.Array(8, 8, df, mac, buffer_acc=acc if isinstance(acc, IntAcc) else None), A, B, f"{elem} {df}")


@pytest.mark.parametrize("inner", ["bf16", "tensor-core", "fp16-sr"])
def test_other_inner_accumulators_match_per_block_path(inner):
    """MACs without a kernel here run acs_gemm per block inside the engine call (an fp32
    register joining natively where the scaled partial is exact, exactly otherwise)."""
    rng = rng_for("other", inner)
    mac = {"bf16": MAC("e4m3fn", "e4m3fn", FloatAcc(8, 7)),
           "tensor-core": MAC("e4m3fn", "e4m3fn", BlockFMA(16, 13, FloatAcc(8, 13, rounding="rtz"),
                                                           addend=FloatAcc(8, 23))),
           "fp16-sr": MAC("e4m3fn", "e4m3fn", FloatAcc(5, 10, rounding="sr"),
                          scale_acc=FloatAcc(5, 10, rounding="sr"))}[inner]
    for scales in ("typical", "extreme"):   # extreme: joins the fp32 shortcut cannot take
        A, B = block_operands("e4m3fn", "e8m0", 5, 64, 9, 32, rng, scales)
        for df in ("os", "ws", "is"):
            check(acs.Array(4, 3, df, mac, seed=11), A, B, f"{inner} {scales} {df}")


@pytest.mark.parametrize("df", ["os", "ws", "is"])
def test_threads_and_stochastic_joins(df):
    rng = rng_for("threads", df)
    for elem, acc, sacc in (("e4m3fn", "fp32", FloatAcc(8, 10, rounding="sr")), ("int4", "int32", FloatAcc(8, 23)),
                            ("e4m3fn", "fp32", FloatAcc(8, 23)), ("int4", "int32", FloatAcc(8, 10, rounding="sr"))):
        mac = MAC(elem, elem, acc, scale_acc=sacc)
        sf = "e8m0" if elem != "int4" else "uint4"
        A, B = block_operands(elem, sf, 11, 64, 37, 16, rng)
        base = None
        for threads in (1, 2, 3):
            res = check(acs.Array(4, 4, df, mac, seed=5, threads=threads), A, B, f"{elem} threads={threads}")
            if base is None:
                base = res
            assert_bits(res.acc, base.acc, f"{elem} threads={threads}")
            assert res.counts == base.counts


def test_fp32_join_edges():
    """The native fp32 join at its edges (scales as large and as small as it takes): registers
    that overflow to inf, cancel to zero, go subnormal, or meet NaN and inf partials."""
    rng = rng_for("edges")
    mac = MAC("e5m2", "e5m2", "fp32")
    fmt = acs.formats.get("e5m2")
    codes = fmt.all_codes()
    vals = fmt.decode(codes)
    big = codes[vals == 57344.0][0]
    tiny = codes[vals == 2.0 ** -16][0]
    a = np.full((6, 512), big, np.uint8)
    a[1, ::2] ^= 0x80                                 # row 1 cancels
    a[2, 5] = codes[np.isinf(vals)][0]                # row 2 meets an inf
    a[3] = tiny                                       # row 3 lives among subnormals
    a[4, 40] = codes[np.isnan(vals)][0]               # row 4 meets a NaN
    a[5] = rng.choice(codes[np.isfinite(vals)], 512)  # row 5 random
    ca = np.full((6, 16), 171)                        # 2^44: the largest the fast join takes here
    ca[3] = 69                                        # 2^-58: the smallest
    b = np.where(rng.random((512, 17)) < 0.5, big, tiny).astype(np.uint8)
    b[:, 3] = codes[np.isinf(vals)][0] ^ 0x80         # column 3: -inf
    cb = rng.choice([69, 127, 171], (16, 17))
    A = QTensor(a, fmt, block=32, block_axis=1, block_scale_codes=ca, scale_format="e8m0")
    B = QTensor(b, fmt, block=32, block_axis=0, block_scale_codes=cb, scale_format="e8m0")
    for df in ("os", "ws"):
        res = check(acs.Array(8, 8, df, mac), A, B, df)
        assert np.isinf(res.acc[0]).any() and (res.acc[3] != 0).all() and np.isnan(res.acc[4]).all()


def test_empty_and_single_block_shapes():
    rng = rng_for("shapes")
    mac = MAC("e4m3fn", "e4m3fn", "fp32")
    for m, k, n in ((1, 32, 1), (0, 32, 3), (3, 32, 0), (2, 0, 3), (4, 1, 5)):
        block = 32 if k >= 32 else 1
        A, B = block_operands("e4m3fn", "e8m0", m, k, n, block, rng)
        res = acs.Array(4, 4, "ws", mac).gemm(A, B, metrics=False)
        want, data = old_block_gemm(acs.Array(4, 4, "ws", mac), A, B)
        assert_bits(res.acc, want, f"{m}x{k}x{n}")
        assert res.counts["zero_macs"] == data["zero_macs"]


def test_bad_engine_arguments():
    mac = MAC("e4m3fn", "e4m3fn", "fp32")
    arr = acs.Array(4, 4, "ws", mac)
    a = np.zeros((2, 8), np.uint8)
    s = np.ones(2 * 8)
    out = np.empty(4)
    counts = ffi.new("acs_gemm_counts *")
    flag = ffi.new("int *")

    def call(k=8, block=4, threads=1, rows=4):
        return lib.acs_gemm_blocks(mac._c, arr._buffer_c, mac._scale_c, 1, rows, 4, pointer(a, "void *"),
                                   pointer(a, "void *"), 2, 2, k, block, pointer(s, "double *"),
                                   pointer(s, "double *"), pointer(out, "double *"), 0, threads, counts, flag)
    assert call() == lib.ACS_OK
    assert call(block=3) == lib.ACS_ERR_ARG      # K not a multiple of the block
    assert call(block=0) == lib.ACS_ERR_ARG
    assert call(threads=0) == lib.ACS_ERR_ARG
    assert call(rows=0) == lib.ACS_ERR_ARG
    with pytest.raises(ValueError, match="cannot accumulate"):   # a fixed register refuses a NaN partial
        fmt = acs.formats.get("e4m3fn")
        A = QTensor(np.full((2, 32), 0x7F, np.uint8), fmt, block=32, block_axis=1,
                    block_scale_codes=np.full((2, 1), 127), scale_format="e8m0")
        B = QTensor(np.full((32, 2), 0x38, np.uint8), fmt, block=32, block_axis=0,
                    block_scale_codes=np.full((1, 2), 127), scale_format="e8m0")
        acs.Array(4, 4, "ws", MAC("e4m3fn", "e4m3fn", "fp32", scale_acc=FixedAcc(40, 24))).gemm(A, B)
