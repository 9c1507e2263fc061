"""Error metrics between a reference tensor ``x`` and a test tensor ``y`` (same shape).

All are computed in float64 over the elements where both are finite (NaN and Inf are counted by
:func:`nan_count` and :func:`inf_count` instead); ``e = y - x``; sums run over those elements;
``n`` is their count.  Empty selections give NaN.

* ``mse = sum(e**2) / n``; ``rmse = sqrt(mse)``
* ``sqnr_db = 10 log10(sum(x**2) / sum(e**2))`` (+inf when e is all zero)
* ``max_abs_error = max |e|``
* ``mean_rel_error = mean(|e| / |x|)`` and ``max_rel_error = max(|e| / |x|)`` over x != 0
* ``cosine = sum(x y) / (||x|| ||y||)`` (1 when both are all zero, 0 when only one is)
* ``kl_softmax(x, y) = mean over rows of sum_i p_i (log p_i - log q_i)`` with p = softmax(x),
  q = softmax(y) along the last axis (nats), for logits.
* Counts against the reference: ``nan_count`` (NaN in y where x is not), ``inf_count`` (y
  infinite where x is finite: overflow), ``underflow_count`` (y == 0 where x != 0: flushed),
  ``saturation_count`` (|y| < |x| at a format's largest magnitude: ``|y| == fmt_max < |x|``).
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"reference shape {x.shape} and test shape {y.shape} differ")
    return x, y


def _finite(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = _pair(x, y)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def mse(x, y) -> float:
    x, y = _finite(x, y)
    return float(np.mean((y - x) ** 2)) if x.size else math.nan


def rmse(x, y) -> float:
    return math.sqrt(mse(x, y))


def _rescaled(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y divided by one power of two bringing their largest magnitude near 1, so sums
    of squares neither overflow nor underflow (for the scale-free metrics)."""
    top = max(float(np.max(np.abs(x), initial=0.0)), float(np.max(np.abs(y), initial=0.0)))
    if top == 0.0 or 1e-100 < top < 1e100:
        return x, y
    k = math.frexp(top)[1]
    return np.ldexp(x, -k), np.ldexp(y, -k)


def sqnr_db(x, y) -> float:
    x, y = _rescaled(*_finite(x, y))
    if not x.size:
        return math.nan
    noise = float(np.sum((y - x) ** 2))
    signal = float(np.sum(x * x))
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def max_abs_error(x, y) -> float:
    x, y = _finite(x, y)
    return float(np.max(np.abs(y - x))) if x.size else math.nan


def _rel(x, y) -> np.ndarray:
    x, y = _finite(x, y)
    nz = x != 0
    return np.abs(y[nz] - x[nz]) / np.abs(x[nz])


def mean_rel_error(x, y) -> float:
    r = _rel(x, y)
    return float(np.mean(r)) if r.size else math.nan


def max_rel_error(x, y) -> float:
    r = _rel(x, y)
    return float(np.max(r)) if r.size else math.nan


def cosine(x, y) -> float:
    x, y = _rescaled(*_finite(x, y))
    if not x.size:
        return math.nan
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0 or ny == 0:
        return 1.0 if nx == ny else 0.0
    return float(np.dot(x, y) / (nx * ny))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - np.max(z, axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def kl_softmax(x, y) -> float:
    """KL(softmax(x) || softmax(y)) along the last axis, averaged over rows (nats)."""
    x, y = _pair(x, y)
    if x.ndim == 0 or x.shape[-1] == 0:
        return math.nan
    x2, y2 = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    rows = np.all(np.isfinite(x2), axis=1) & np.all(np.isfinite(y2), axis=1)
    if not rows.any():
        return math.nan
    lp, lq = _log_softmax(x2[rows]), _log_softmax(y2[rows])
    return float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1)))


def nan_count(x, y) -> int:
    x, y = _pair(x, y)
    return int(np.count_nonzero(np.isnan(y) & ~np.isnan(x)))


def inf_count(x, y) -> int:
    x, y = _pair(x, y)
    return int(np.count_nonzero(np.isinf(y) & np.isfinite(x)))


def underflow_count(x, y) -> int:
    x, y = _pair(x, y)
    return int(np.count_nonzero((y == 0) & (x != 0) & np.isfinite(x)))


def saturation_count(x, y, fmt_max: Union[float, None]) -> int:
    """Elements clamped to the format's largest magnitude ``fmt_max`` (0 when None)."""
    x, y = _pair(x, y)
    if fmt_max is None:
        return 0
    return int(np.count_nonzero((np.abs(y) == fmt_max) & (np.abs(x) > fmt_max)))


def error_metrics(x, y, fmt_max: Union[float, None] = None) -> dict:
    """Every metric above as one record, except kl_softmax; saturation_count only when the
    format's largest magnitude ``fmt_max`` is given (replay reports clipped operands and the
    MAC's saturations instead)."""
    rec = {"mse": mse(x, y), "rmse": rmse(x, y), "sqnr_db": sqnr_db(x, y),
           "max_abs_error": max_abs_error(x, y), "mean_rel_error": mean_rel_error(x, y),
           "max_rel_error": max_rel_error(x, y), "cosine": cosine(x, y),
           "nan_count": nan_count(x, y), "inf_count": inf_count(x, y),
           "underflow_count": underflow_count(x, y)}
    if fmt_max is not None:
        rec["saturation_count"] = saturation_count(x, y, fmt_max)
    return rec
