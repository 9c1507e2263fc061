"""The built-in model: a small MLP trained on scikit-learn's bundled digits (no download).

* Data: ``sklearn.datasets.load_digits`` (1,797 8x8 images, pixel values 0..16 scaled to 0..1),
  split by a seeded permutation into 1,437 training and 360 test images.
* Network: 64 -> 64 -> 32 -> 10, ReLU between, logits out (ops ``fc1``, ``relu1``, ``fc2``,
  ``relu2``, ``fc3``).
* Training: full-batch Adam on cross-entropy in float64 numpy, seed 0, 400 steps, learning rate
  0.01, He-normal initial weights: deterministic on a given numpy.  The float32 weights are
  cached in ``$XDG_CACHE_HOME/numsim/digits-mlp-v1.npz`` (``~/.cache`` by default) after the
  first run.
* The trace runs the test images through the network as an fp32 machine would: every linear
  op is :func:`mac_models.matmul` with fp32 operands and an fp32 accumulator (sequential,
  fused), plus the bias added in fp32; so replaying it with fp32 weights, activations and
  accumulation reproduces every captured output exactly.  The test labels are the trace extra
  ``labels``.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from .traces import Op, Trace

MODEL = "digits-mlp"
VERSION = 1
SIZES = (64, 64, 32, 10)
SEED = 0
STEPS = 400
LEARNING_RATE = 0.01
N_TEST = 360


def cache_dir() -> Path:
    """numsim's cache folder (``$XDG_CACHE_HOME/numsim``, ``~/.cache/numsim`` by default)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "numsim"


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): float64 pixels in [0, 1], int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    test, train = order[:N_TEST], order[N_TEST:]
    return x[train], y[train], x[test], y[test]


def _forward(params: list, x: np.ndarray) -> list[np.ndarray]:
    """Activations of every layer (float64), input first, logits last."""
    acts = [x]
    for i, (w, b) in enumerate(params):
        z = acts[-1] @ w.T + b
        acts.append(np.maximum(z, 0.0) if i < len(params) - 1 else z)
    return acts


def train() -> list[tuple[np.ndarray, np.ndarray]]:
    """Train the MLP (see the module doc); returns [(weight (out, in), bias (out,)), ...]."""
    x, y, _, _ = load_data()
    rng = np.random.default_rng(SEED)
    params = [(rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in), np.zeros(n_out))
              for n_in, n_out in zip(SIZES, SIZES[1:])]
    moments = [[np.zeros_like(p) for p in layer for _ in range(2)] for layer in params]
    onehot = np.eye(SIZES[-1])[y]
    b1, b2, eps = 0.9, 0.999, 1e-8
    for step in range(1, STEPS + 1):
        acts = _forward(params, x)
        logits = acts[-1] - acts[-1].max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        grad = (prob - onehot) / len(x)
        for i in range(len(params) - 1, -1, -1):
            w, b = params[i]
            grads = (grad.T @ acts[i], grad.sum(axis=0))
            if i:
                grad = (grad @ w) * (acts[i] > 0)
            new = []
            for j, (p, g) in enumerate(zip((w, b), grads)):
                m, v = moments[i][2 * j], moments[i][2 * j + 1]
                m[...] = b1 * m + (1 - b1) * g
                v[...] = b2 * v + (1 - b2) * g * g
                mhat, vhat = m / (1 - b1 ** step), v / (1 - b2 ** step)
                new.append(p - LEARNING_RATE * mhat / (np.sqrt(vhat) + eps))
            params[i] = (new[0], new[1])
    return params


def weights() -> list[tuple[np.ndarray, np.ndarray]]:
    """The trained float32 weights, from the cache or trained (and cached) now."""
    path = cache_dir() / f"{MODEL}-v{VERSION}.npz"
    n = len(SIZES) - 1
    try:
        with np.load(path) as f:
            return [(f[f"w{i}"], f[f"b{i}"]) for i in range(n)]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass                                 # absent or unreadable: train and cache again
    params = [(w.astype(np.float32), b.astype(np.float32)) for w, b in train()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **{f"w{i}": w for i, (w, _) in enumerate(params)},
             **{f"b{i}": b for i, (_, b) in enumerate(params)})
    os.replace(tmp, path)
    return params


def fp32_linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``x @ w.T + b`` as an fp32 machine computes it: fp32 operands, sequential fused fp32
    accumulation, the bias added in fp32."""
    import mac_models as mm

    mac = mm.MAC("fp32", accumulator=mm.FloatAccumulator("fp32"))
    y = mm.matmul(x, w.T, mac).values
    return (y + b).astype(np.float32)


def trace() -> Trace:
    """The trace of the test images through the MLP (see the module doc)."""
    _, _, x, y = load_data()
    params = weights()
    ops = []
    act = x.astype(np.float32)
    prev: list[str] = []
    for i, (w, b) in enumerate(params, start=1):
        out = fp32_linear(act, w, b)
        ops.append(Op(f"fc{i}", "linear", {"input": act, "weight": w, "bias": b, "output": out},
                      inputs_from=prev))
        prev = [f"fc{i}"]
        act = out
        if i < len(params):
            relu = np.maximum(out, np.float32(0))
            ops.append(Op(f"relu{i}", "relu", {"input": out, "output": relu}, inputs_from=prev))
            prev = [f"relu{i}"]
            act = relu
    return Trace(ops, {"labels": y}, model=MODEL,
                 meta={"source": "sklearn load_digits", "version": VERSION, "seed": SEED,
                       "n_test": N_TEST, "task": "classification"})
