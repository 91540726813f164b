"""Block-scaled GEMMs on the array (OCP MX, VS-Quant; docs/scaling.md): both operands carry
scales per block of K; the engine (csrc/blockscale.c) runs the array's usual accumulation per
K-block and joins each block's partial sum, times its two block scales, into the MAC's
scale_acc register; the epilogue applies the coarse scales and bias."""
from __future__ import annotations

import numpy as np

from accel_sim import formats, operands, plan as plan_
from accel_sim._metrics import ErrorSums, add_gemm, gemm_metrics
from accel_sim._native import DATAFLOWS, check_float_array, ffi, lib, pointer, raise_for_status, size_text
from accel_sim.energy import add_scale_energy
from accel_sim.epilogue import epilogue
from accel_sim.quant import QTensor, quantize
from accel_sim.result import Result

__all__ = ["block_operands", "gemm_blocks", "block_gemms"]


def block_operands(array, A, B, names):
    """Float operands quantized per the quant spec's block scaling along K (A along axis 1,
    B along axis 0), K zero-padded to whole blocks; QTensors pass through (checked later)."""
    if not any(not isinstance(v, QTensor) for v in (A, B)):
        return A, B
    (m_, k_), (k2, n_) = (np.shape(v.codes if isinstance(v, QTensor) else v) for v in (A, B))
    if k_ != k2:
        raise ValueError(f"{names[0]} ({m_}, {k_}) and {names[1]} ({k2}, {n_}) do not multiply: K differs")
    if array.quant["a"] not in operands.BLOCK_SCALES:
        name = names[0] if not isinstance(A, QTensor) else names[1]
        raise ValueError(f"{name} must be a block-scaled QTensor: in a block-scaled GEMM both operands carry block "
                         "scales along K (quantize both, or give the Array quant={'a': 'block', 'b': 'block'})")
    ops = []
    for argname, v, fmt, k_axis in ((names[0], A, array.mac.a, 1), (names[1], B, array.mac.b, 0)):
        if isinstance(v, QTensor):
            ops.append(v)
            continue
        arr = check_float_array(v, argname, 2, finite=False, what="a float array or a QTensor")
        block = array.quant["block"] or (32 if array.quant["a"] == "block" else 16)
        pad = [(0, 0), (0, 0)]
        pad[k_axis] = (0, -arr.shape[k_axis] % block)
        try:
            ops.append(quantize(np.pad(arr, pad), fmt, scale=array.quant["a"], axis=k_axis, block=block,
                                scale_format=array.quant["scale_format"], rounding=array.quant["rounding"]))
        except ValueError as e:
            raise ValueError(f"{argname}: {e}") from None
    return tuple(ops)

def gemm_blocks(array, A, B, bias, out_format, metrics, names, floats=None) -> Result:
    """A block-scaled GEMM (OCP MX, VS-Quant; docs/scaling.md): per K-block, the array's
    usual accumulation (from zero, in dataflow order) gives a partial sum; the MAC's
    scale_acc adds partial * (scale_a * scale_b) with one rounding per block; the epilogue
    applies the coarse scales and bias as in an unscaled GEMM."""
    for argname, q, k_axis in ((names[0], A, 1), (names[1], B, 0)):
        if not isinstance(q, QTensor) or not q.is_block_scaled:
            raise ValueError(f"{argname} must be a block-scaled QTensor: in a block-scaled GEMM both operands "
                             "carry block scales along K")
        if q.ndim != 2:
            raise ValueError(f"{argname} must have 2 dimensions, got shape {q.shape}")
        if q.block_axis != k_axis:
            raise ValueError(f"{argname} must be block-scaled along K (axis {k_axis}), got block_axis {q.block_axis}")
        if q.axis not in (None, 1 - k_axis):
            raise ValueError(f"{argname}'s coarse scales must be per tensor or along axis {1 - k_axis}, "
                             f"got axis {q.axis}")
    if A.format != array.mac.a or B.format != array.mac.b:
        raise ValueError(f"{names[0]} and {names[1]} hold {A.format.name} and {B.format.name} codes, but the MAC "
                         f"takes {array.mac.a.name} and {array.mac.b.name}")
    if A.block != B.block:
        raise ValueError(f"{names[0]} and {names[1]} must share the block size along K, got {A.block} and {B.block}")
    (m, k), (k2, n) = A.shape, B.shape
    if k != k2:
        raise ValueError(f"{names[0]} ({m}, {k}) and {names[1]} ({k2}, {n}) do not multiply: K differs")
    array._check_memory(m, n, k)
    bias32 = operands.bias32(bias, n)
    bs, nb = A.block, k // A.block
    state_size = lib.acs_join_state_size()
    if m * n * (state_size + 8) > array.memory_limit_bytes:
        raise ValueError(f"the block-scaled GEMM's output registers ({size_text(m * n * state_size)}) exceed the "
                         f"array's memory_limit_bytes ({size_text(array.memory_limit_bytes)})")
    out_acc = array.mac.acc if array.dataflow == "os" else array.buffer_acc
    # one engine call: operands decoded once, each K-block's partial joined as it is made
    sa_blocks = np.ascontiguousarray(A.block_scales(), dtype=np.float64)
    sb_blocks = np.ascontiguousarray(B.block_scales(), dtype=np.float64)
    a = np.ascontiguousarray(A.codes, dtype=array.mac.a.code_dtype)
    bt = np.ascontiguousarray(B.codes.T, dtype=array.mac.b.code_dtype)
    acc = np.empty((m, n), np.float64)
    counts = ffi.new("acs_gemm_counts *")
    in_join = ffi.new("int *")
    status = lib.acs_gemm_blocks(array.mac._c, array._buffer_c, array.mac._scale_c, DATAFLOWS[array.dataflow],
                                 array.rows, array.cols, pointer(a, "void *"), pointer(bt, "void *"), m, n, k, bs,
                                 pointer(sa_blocks, "double *"), pointer(sb_blocks, "double *"),
                                 pointer(acc, "double *"), array.seed, array.threads, counts, in_join)
    raise_for_status(status, array.mac.scale_acc.name if in_join[0] else out_acc.name, array)
    output, overflow = epilogue(array, acc, array.mac.scale_acc, operands.scales(A, 0, m), operands.scales(B, 1, n),
                                bias32, out_format, counts)
    plan = plan_.plan(array, m, n, k, 32 if out_format is None else formats.get(out_format).bits)
    plan.counts.update({key: getattr(counts, key) for key in plan_.MEASURED_COUNTS}, **overflow)
    plan.counts.update({"scale_mults": m * n * nb, "scale_joins": m * n * nb})
    plan = plan_.with_energy(array, plan, measured=True)
    add_scale_energy(array.energy, plan, array.mac, A.scale_format, B.scale_format, out_acc)
    if not metrics:
        return Result(**vars(plan), output=output, acc=acc, metrics={})
    fa, fb = (A, B) if floats is None else (A if isinstance(floats[0], QTensor) else floats[0],
                                            B if isinstance(floats[1], QTensor) else floats[1])
    pairs = [("vs_dequantized", A, B, None if bias is None else bias32.astype(np.float64)),
             ("vs_float64", fa, fb, None if bias is None else np.asarray(bias, np.float64))]
    metrics = gemm_metrics(output, pairs)
    return Result(**vars(plan), output=output, acc=acc, metrics={k: metrics[k] for k in ("vs_float64", "vs_dequantized")})


def block_gemms(array, triples, out_format):
    """Block-scaled GEMMs of float (A, B, bias or None) triples: their Results, and the error
    sums against the dequantized operands' products."""
    results, sums = [], ErrorSums()
    for A, B, bias in triples:
        qa, qb = block_operands(array, A, B, ("a", "b"))
        res = gemm_blocks(array, qa, qb, bias, out_format, False, ("a", "b"))
        b32 = None if bias is None else operands.bias32(bias, res.output.shape[1]).astype(np.float64)
        add_gemm({"q": sums}, res.output, [("q", qa, qb, b32)])
        results.append(res)
    return results, sums
