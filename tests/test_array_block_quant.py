"""Float inputs block-quantized by the Array's quant spec (OCP MX "block", VS-Quant "vector"):
gemm, linear, matmul and conv2d against quantize() plus the explicit block-scaled gemm, with
K zero-padded to whole blocks; their error metrics against numpy recomputations."""
import numpy as np
import pytest

import accel_sim as acs
from accel_sim import MAC
from accel_sim.quant import quantize

SPECS = [("block", "e4m3fn", "fp32", None), ("block", "e2m1", "fp32", None), ("vector", "int4", "int32", "uint4"),
         ("vector", "int8", "int32", "uint6")]


def array_for(kind, fmt, acc, scale_format, block=None, dataflow="ws"):
    quant = {"a": kind, "b": kind, "scale_format": scale_format, "block": block}
    return acs.Array(8, 4, dataflow, MAC(fmt, fmt, acc), quant=quant)


def explicit(arr, A, B, kind, fmt, scale_format, block):
    """quantize() each operand along K, padded with zeros to whole blocks, then the gemm."""
    pad = -A.shape[1] % block
    qa = quantize(np.pad(A, [(0, 0), (0, pad)]), fmt, scale=kind, axis=1, block=block, scale_format=scale_format)
    qb = quantize(np.pad(B, [(0, pad), (0, 0)]), fmt, scale=kind, axis=0, block=block, scale_format=scale_format)
    return arr.gemm(qa, qb), qa, qb


def same(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return np.array_equal(x.view(np.uint64), y.view(np.uint64))


def sqnr(out, ref):
    with np.errstate(divide="ignore"):
        return 10 * np.log10(np.sum(ref ** 2) / np.sum((out - ref) ** 2))


@pytest.mark.parametrize("dataflow", ["os", "ws"])
@pytest.mark.parametrize("kind,fmt,acc,scale_format", SPECS)
def test_gemm_of_floats_equals_quantize_then_gemm(kind, fmt, acc, scale_format, dataflow):
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((11, 70)), rng.standard_normal((70, 9))   # 70: not a whole number of blocks
    block = 32 if kind == "block" else 16
    arr = array_for(kind, fmt, acc, scale_format, dataflow=dataflow)
    res = arr.gemm(A, B, bias=np.arange(9.0))
    want, qa, qb = explicit(arr, A, B, kind, fmt, scale_format, block)
    bias_want = arr.gemm(qa, qb, bias=np.arange(9.0))
    assert same(res.acc, want.acc) and same(res.output, bias_want.output)
    assert res.cycles == bias_want.cycles and res.counts == bias_want.counts
    ref = A @ B + np.arange(9.0)
    assert res.metrics["vs_float64"]["sqnr_db"] == pytest.approx(sqnr(res.output, ref), rel=1e-9)
    ref_q = qa.dequantize() @ qb.dequantize() + np.arange(9.0, dtype=np.float32)
    assert res.metrics["vs_dequantized"]["sqnr_db"] == pytest.approx(sqnr(res.output, ref_q), rel=1e-9)


@pytest.mark.parametrize("kind,fmt,acc,scale_format", SPECS[::2])
def test_linear_matmul_conv_lower_to_block_scaled_gemms(kind, fmt, acc, scale_format):
    rng = np.random.default_rng(2)
    block = 16
    arr = array_for(kind, fmt, acc, scale_format, block=block)
    x, w, bias = rng.standard_normal((2, 3, 40)), rng.standard_normal((6, 40)), rng.standard_normal(6)
    res = arr.linear(x, w, bias=bias)
    want, _, _ = explicit(arr, x.reshape(-1, 40), w.T, kind, fmt, scale_format, block)
    assert same(res.acc.reshape(-1, 6), want.acc)

    a, b = rng.standard_normal((2, 1, 5, 24)), rng.standard_normal((3, 24, 7))      # broadcast batch
    res = arr.matmul(a, b)
    assert res.output.shape == (2, 3, 5, 7)
    for i in range(2):
        for j in range(3):
            want, _, _ = explicit(arr, a[i, 0], b[j], kind, fmt, scale_format, block)
            assert same(res.acc[i, j], want.acc) and same(res.output[i, j], want.output)
    assert res.metrics["vs_float64"]["sqnr_db"] == pytest.approx(sqnr(res.output, a @ b), rel=1e-9)

    xc, wc, bc = rng.standard_normal((2, 4, 6, 6)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    res = arr.conv2d(xc, wc, padding=1, stride=2, groups=2, bias=bc)
    for g in range(2):
        cols, (oh, ow) = acs.layers.im2col(xc[:, 2 * g:2 * g + 2], (3, 3), (2, 2), (1, 1), (1, 1))
        want, _, _ = explicit(arr, cols, wc[3 * g:3 * g + 3].reshape(3, -1).T, kind, fmt, scale_format, block)
        got = res.acc[:, 3 * g:3 * g + 3].transpose(0, 2, 3, 1).reshape(-1, 3)
        assert same(got, want.acc)


def test_bad_block_quant_specs_and_inputs():
    with pytest.raises(ValueError, match="must both be 'block' or both 'vector'"):
        acs.Array(4, 4, quant={"a": "block", "b": "tensor"})
    with pytest.raises(ValueError, match="must both be 'block' or both 'vector'"):
        acs.Array(4, 4, quant={"a": "block", "b": "vector"})
    with pytest.raises(ValueError, match="apply to 'block' and 'vector' scaling only"):
        acs.Array(4, 4, quant={"a": "tensor", "b": "tensor", "block": 32})
    with pytest.raises(ValueError, match="quant: block must be positive"):
        acs.Array(4, 4, quant={"a": "block", "b": "block", "block": 0})
    with pytest.raises(TypeError, match="quant: block must be an integer"):
        acs.Array(4, 4, quant={"a": "vector", "b": "vector", "block": 2.5})
    with pytest.raises(ValueError, match="quant: scale_format"):
        acs.Array(4, 4, quant={"a": "vector", "b": "vector", "scale_format": "e8m0"})
    with pytest.raises(ValueError, match="calibrates by absmax"):
        acs.Array(4, 4, quant={"a": "block", "b": "block", "calibration": "mse"})
    arr = acs.Array(4, 4, "ws", MAC("e4m3fn", "e4m3fn", "fp32"), quant={"a": "block", "b": "block"})
    with pytest.raises(ValueError, match="pass floats"):
        arr.matmul(quantize(np.ones((4, 32)), "e4m3fn"), np.ones((32, 4)))
    with pytest.raises(TypeError, match="x must be a float array"):
        arr.conv2d(np.array([[["a"]]]), np.ones((1, 1, 1, 1)))
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        arr.conv2d(np.ones((1, 1, 3)), np.ones((1, 1, 1, 1)))
    with pytest.raises(ValueError, match="K differs"):
        arr.matmul(np.ones((2, 3, 5)), np.ones((2, 4, 5)))
    with pytest.raises(ValueError, match=r"A \(3, 70\) and B \(96, 2\) do not multiply: K differs"):
        arr.gemm(np.ones((3, 70)), quantize(np.ones((96, 2)), "e4m3fn", scale="block", axis=0))
