"""MACs of real hardware.

tensor_core(gpu, informat, out): NVIDIA tensor cores as block fused multiply-adders, with the
parameters published by Khattak & Mikaitis, "Accurate Models of NVIDIA Tensor Cores"
(arXiv:2512.07004), validated there (and in our tests) against outputs measured on the GPUs:
n products per block, F fraction bits kept after alignment, and the output's fraction bits;
fp32 output rounds toward zero, fp16 output to nearest-even (its addend rounded to fp16 first).
"""
from __future__ import annotations

from accel_sim.mac import MAC, BlockFMA, FloatAcc, register_preset

__all__ = ["tensor_core", "TENSOR_CORES"]

# (gpu, informat) -> (terms n, align bits F, fp32-output fraction bits)
TENSOR_CORES = {
    ("v100", "fp16"): (4, 23, 23),
    ("a100", "fp16"): (8, 24, 23),
    ("a100", "bf16"): (8, 24, 23),
    ("ada", "e4m3"): (16, 13, 13),
    ("ada", "e5m2"): (16, 13, 13),
    ("l40s", "e4m3"): (16, 13, 13),
    ("l40s", "e5m2"): (16, 13, 13),
    ("h100", "e4m3"): (32, 13, 13),
    ("h100", "e5m2"): (32, 13, 13),
    ("h100", "fp16"): (16, 25, 23),
    ("h100", "bf16"): (16, 25, 23),
    ("h200", "e4m3"): (32, 13, 13),
    ("h200", "e5m2"): (32, 13, 13),
    ("h200", "fp16"): (16, 25, 23),
    ("h200", "bf16"): (16, 25, 23),
}
# Tensor-core FP8 "E4M3" is OCP's (max 448): our e4m3fn.
_OPERAND_FORMAT = {"fp16": "fp16", "bf16": "bf16", "e4m3": "e4m3fn", "e5m2": "e5m2"}


def tensor_core(gpu: str, informat: str, out: str = "fp32") -> MAC:
    """The MAC of an NVIDIA tensor core for one input format and output precision."""
    for argname, v in (("gpu", gpu), ("informat", informat), ("out", out)):
        if not isinstance(v, str):
            raise TypeError(f"{argname} must be a string, got {type(v).__name__}")
    gpu_l = gpu.lower()
    key = (gpu_l, informat)
    if key not in TENSOR_CORES:
        known = ", ".join(f"{g}/{f}" for g, f in TENSOR_CORES)
        raise ValueError(f"no tensor-core model for gpu={gpu!r}, informat={informat!r}; known: {known}")
    if out not in ("fp32", "fp16"):
        raise ValueError(f"out must be 'fp32' or 'fp16', got {out!r}")
    terms, align, out_frac = TENSOR_CORES[key]
    if out == "fp32":  # C is fp32; each block's result keeps out_frac fraction bits
        block = BlockFMA(terms, align, FloatAcc(8, out_frac, rounding="rtz"), addend=FloatAcc(8, 23))
    else:
        block = BlockFMA(terms, align, FloatAcc(5, 10, rounding="rne"))
    fmt = _OPERAND_FORMAT[informat]
    return MAC(fmt, fmt, block, name=f"{gpu_l}-{informat}-{out}")


def _tensor_core_by_name(a, b, gpu, rounding) -> MAC:
    """mac_from_names' "tensor_core:GPU": the GPU's preset for operands a and b (one format)."""
    informat = {"e4m3fn": "e4m3", "e5m2": "e5m2", "fp16": "fp16", "bf16": "bf16"}.get(a)
    if a != b or informat is None:
        raise ValueError(f"acc tensor_core:{gpu} needs a and b both one of e4m3fn e5m2 fp16 bf16, got {a} and {b}")
    if rounding not in (None, "rtz"):
        raise ValueError(f"a tensor core's rounding is fixed (rtz for fp32 output), got rounding={rounding!r}")
    return tensor_core(gpu, informat)


register_preset("tensor_core", _tensor_core_by_name)
