"""Real silicon: every case measured on NVIDIA GPUs (../shared/vectors/tensor-cores) must come
out bit for bit through acs.presets.tensor_core.  Skipped when the vectors are absent."""
from pathlib import Path

import numpy as np
import pytest

import accel_sim as acs

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "tensor-cores"

# (directory, file tag, gpu preset, informat preset)
SETS = [
    ("V100/fp16", "V100_fp16", "v100", "fp16"),
    ("A100/fp16", "A100_fp16", "a100", "fp16"),
    ("A100/bf16", "A100_bf16", "a100", "bf16"),
    ("Ada/E4M3", "Ada_E4M3", "ada", "e4m3"),
    ("Ada/E5M2", "Ada_E5M2", "ada", "e5m2"),
    ("L40S/E4M3", "L40S_E4M3", "l40s", "e4m3"),
]
CASES = [(d, tag, g, f, out) for d, tag, g, f in SETS for out in ("fp32", "fp16")]


def _hex_rows(path):
    return np.array([[int(v, 16) for v in line.split()] for line in path.read_text().split("\n") if line.strip()],
                    dtype=np.uint32).view(np.float32)


def _binary_rows(path):
    return np.array([int(line, 2) for line in path.read_text().split() if line.strip()], dtype=np.uint32)


@pytest.mark.parametrize("directory,tag,gpu,informat,out", CASES, ids=[f"{c[0]}-{c[4]}" for c in CASES])
def test_tensor_core_matches_gpu(directory, tag, gpu, informat, out):
    folder = VECTORS / directory
    gpu_name = tag.split("_")[0]
    d_path = folder / f"d_{gpu_name}_{out}.txt"
    if not folder.is_dir():
        pytest.skip(f"real-GPU vectors not present at {folder}")
    if not d_path.exists():
        pytest.skip(f"no {out} output measured for {directory}")
    a = _hex_rows(folder / f"a_{tag}.txt")
    b = _hex_rows(folder / f"b_{tag}.txt")
    c = _binary_rows(folder / f"c_{gpu_name}_fp32.txt").view(np.float32)
    d = _binary_rows(d_path)
    mac = acs.presets.tensor_core(gpu, informat, out=out)
    # The files hold values exactly representable in the input format: encoding is exact.
    a_codes, b_codes = mac.a.encode(a), mac.b.encode(b)
    assert np.array_equal(mac.a.decode(a_codes), a.astype(np.float64), equal_nan=True)
    assert np.array_equal(mac.b.decode(b_codes), b.astype(np.float64), equal_nan=True)
    got = acs.accumulate(a_codes, b_codes, mac, init=c.astype(np.float64))
    got_bits = got.astype(np.float32).view(np.uint32)  # exact: results lie on the output grid
    assert np.array_equal(got.astype(np.float32).astype(np.float64), got, equal_nan=True)
    mismatches = np.flatnonzero(got_bits != d)
    assert a.shape[0] == d.size == 5000
    assert mismatches.size == 0, (
        f"{mismatches.size} of {d.size} cases differ from the GPU; first: case {mismatches[0]}, "
        f"got {got_bits[mismatches[0]]:08x}, GPU {d[mismatches[0]]:08x}")
