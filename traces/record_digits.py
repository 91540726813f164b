"""Record the digits-CNN trace: train traces/digits_cnn.py's CNN on scikit-learn's bundled
8x8 digits (fixed seed, fixed split), then record its float32 forward over the test set.

    python traces/record_digits.py                    # the shipped traces/digits_cnn.npz
    python traces/record_digits.py --out /tmp/d.npz   # elsewhere

Needs scikit-learn (load_digits ships its data; nothing is downloaded); replaying the trace
does not.  Deterministic: the same numpy/BLAS gives the same bits on every run (training is
float64 numpy with one seeded generator; OPENBLAS_NUM_THREADS is pinned to 1 below).

What is recorded: the three acs.ops calls (conv1, conv2, fc) of one forward over all 500
test images (the last 500 of load_digits; the first 1297 train), each with its input,
weight, bias and float32 output.  The weights and the test images (float32, k/16 exactly)
live only there (digits_cnn.params_from_trace reads the weights back; task.images names
conv1's input array); the task adds the labels (int64, "task.labels").
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import accel_sim as acs  # noqa: E402
import digits_cnn  # noqa: E402

MODEL = "digits-cnn"
OUT = HERE / "digits_cnn.npz"


def load_data():
    return digits_cnn.load_split("recording (not replay)")


def record(params, x_test, y_test, train_acc=None):
    """The trace (not saved) of params' forward over x_test, with the task data."""
    import sklearn
    source = (f"scikit-learn {sklearn.__version__} load_digits (1797 8x8 images; first {digits_cnn.N_TRAIN} "
              f"train, last {len(y_test)} test); trained at record time by traces/record_digits.py: "
              f"numpy Adam, seed {digits_cnn.SEED}, {digits_cnn.EPOCHS} epochs")
    with acs.trace.record(model=MODEL, source=source) as rec:
        logits = digits_cnn.forward(params, x_test)
    trace = rec.trace
    assert [layer["name"] for layer in trace.layers] == ["conv1", "conv2", "fc"], trace.layers
    conv1 = trace.layers[0]
    assert np.array_equal(trace.arrays[conv1["inputs"]["x"]], x_test)
    trace.add_array("task.labels", y_test.astype(np.int64))
    acc = float(np.mean(np.argmax(logits, axis=1) == y_test))
    trace.task = {
        "forward": "digits_cnn.py",
        "metric": "accuracy",
        "images": conv1["inputs"]["x"],  # the test images are conv1's recorded input
        "labels": "task.labels",
        "n": int(len(y_test)),
        "accuracy_fp32": acc,
        "train_accuracy_fp32": train_acc,
        "seed": digits_cnn.SEED,
        "weights_sha256": digits_cnn.weights_sha256(params),
        "architecture": "conv1 3x3 1->6 s1 p1, ReLU, conv2 3x3 6->16 s2 p1, ReLU, flatten (CHW), fc 256->10",
        "input": "load_digits images / 16 (values k/16, exact in float32), NCHW (N, 1, 8, 8)",
    }
    return trace


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    x_train, y_train, x_test, y_test = load_data()
    t0 = time.perf_counter()
    params = digits_cnn.train(x_train, y_train)
    t1 = time.perf_counter()
    train_acc = digits_cnn.accuracy(params, x_train, y_train)
    trace = record(params, x_test, y_test, train_acc)
    trace.save(args.out, overwrite=True)
    print(f"trained in {t1 - t0:.1f} s; float32 accuracy: train {train_acc:.4f}, "
          f"test {trace.task['accuracy_fp32']:.4f} (n={trace.task['n']})")
    print(f"weights sha256 {trace.task['weights_sha256']}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {trace}")


if __name__ == "__main__":
    main()
