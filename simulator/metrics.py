"""Error metrics between a reference tensor ``x`` and a test tensor ``y`` (same shape).

All are computed in float64 over the elements where the reference ``x`` is finite (where it is
NaN or infinite there is nothing to compare against); ``e = y - x`` there, except that a NaN or
an infinity in ``y`` is an infinite error (``e = +inf``: an overflowed or poisoned output is
never "exact"); sums run over those elements; ``n`` is their count.  Empty selections give NaN.

* ``mse = sum(e**2) / n``; ``rmse = sqrt(mse)`` (computed scaled, so it neither overflows nor
  underflows where ``max_abs_error`` does not)
* ``sqnr_db = 10 log10(sum(x**2) / sum(e**2))`` (+inf when e is all zero, -inf when some e is
  infinite)
* ``max_abs_error = max |e|``
* ``mean_rel_error = mean(|e| / |x|)`` and ``max_rel_error = max(|e| / |x|)`` over x != 0
* ``cosine = sum(x y) / (||x|| ||y||)`` (1 when both are all zero, 0 when only one is, NaN when
  some y is not finite)
* ``max_ulp_error(x, y, fmt) = max |e| / ulp(x)``: the error in units in the last place of a
  float or integer/fixed-point format at the reference value, ``ulp(x) = 2**max(floor(log2
  |x|) - (p - 1), q)`` with ``(p, q) = fmt.precision`` (2**q at 0, and everywhere for integers);
  NaN for formats whose spacing is not of that form (posits, codebooks, scaled formats)
* ``kl_softmax(x, y) = mean over rows of sum_i p_i (log p_i - log q_i)`` with p = softmax(x),
  q = softmax(y) along the last axis (nats), for logits; see its docstring for infinities.
* Counts against the reference: ``nan_count`` (NaN in y where x is not), ``inf_count`` (y
  infinite where x is finite: overflow), ``underflow_count`` (y == 0 where x != 0: flushed, out
  of ``nonzero_count``, the finite x != 0),
  ``saturation_count`` (|y| < |x| at a format's largest magnitude: ``|y| == fmt_max < |x|``).
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if np.iscomplexobj(x) or np.iscomplexobj(y):
        raise TypeError("error metrics take real tensors, not complex ones")
    x, y = x.astype(np.float64, copy=False), y.astype(np.float64, copy=False)
    if x.shape != y.shape:
        raise ValueError(f"reference shape {x.shape} and test shape {y.shape} differ")
    return x, y


def _compared(x, y, rescale: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(x, y, e, k) over the elements where x is finite, e = y - x there (+inf where y is not
    finite).  With ``rescale``, x, y and e are divided by 2**k, which brings the largest finite
    magnitude near 1 so that sums of squares neither overflow nor underflow (k = 0 otherwise)."""
    x, y = _pair(x, y)
    keep = np.isfinite(x)
    x, y = x[keep], y[keep]
    ok = np.isfinite(y)
    k = 0
    if rescale:
        top = max(float(np.max(np.abs(x), initial=0.0)),
                  float(np.max(np.abs(y[ok]), initial=0.0)))
        if top != 0.0 and not 1e-100 < top < 1e100:
            k = math.frexp(top)[1]
            x, y = np.ldexp(x, -k), np.ldexp(y, -k)
    e = np.where(ok, y - x, np.inf)
    return x, y, e, k


def mse(x, y) -> float:
    e = _compared(x, y)[2]
    return float(np.mean(e * e)) if e.size else math.nan


def rmse(x, y) -> float:
    _, _, e, k = _compared(x, y, rescale=True)
    return math.ldexp(math.sqrt(float(np.mean(e * e))), k) if e.size else math.nan


def sqnr_db(x, y) -> float:
    x, _, e, _ = _compared(x, y, rescale=True)
    if not x.size:
        return math.nan
    noise = float(np.sum(e * e))
    signal = float(np.sum(x * x))
    if noise == 0:
        return math.inf
    if math.isinf(noise) or signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


def max_abs_error(x, y) -> float:
    e = _compared(x, y)[2]
    return float(np.max(np.abs(e))) if e.size else math.nan


def _rel(x, y) -> np.ndarray:
    x, _, e, _ = _compared(x, y)
    nz = x != 0
    return np.abs(e[nz]) / np.abs(x[nz])


def mean_rel_error(x, y) -> float:
    r = _rel(x, y)
    return float(np.mean(r)) if r.size else math.nan


def max_rel_error(x, y) -> float:
    r = _rel(x, y)
    return float(np.max(r)) if r.size else math.nan


def cosine(x, y) -> float:
    x, y, e, _ = _compared(x, y, rescale=True)
    if not x.size or np.isinf(e).any():
        return math.nan
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0 or ny == 0:
        return 1.0 if nx == ny else 0.0
    return min(1.0, max(-1.0, float(np.dot(x, y) / (nx * ny))))


def max_ulp_error(x, y, fmt) -> float:
    """The largest error in ulps of ``fmt`` (a format or its name) at the reference values (see
    the module doc)."""
    import formats
    fmt = formats.get(fmt)
    x, _, e, _ = _compared(x, y)
    if not x.size or not isinstance(fmt, (formats.FloatFormat, formats.IntFormat)):
        return math.nan
    p, q = fmt.precision
    if isinstance(fmt, formats.IntFormat):
        k = np.full(x.shape, q)
    else:
        k = np.where(x == 0, q, np.maximum(np.frexp(np.abs(x))[1] - p, q))
    return float(np.max(np.abs(e) / np.ldexp(1.0, k)))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - np.max(z, axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def kl_softmax(x, y) -> float:
    """KL(softmax(x) || softmax(y)) along the last axis, averaged over rows (nats).  A -inf
    logit is a probability of exactly zero (an attention mask), and terms with p_i = 0 add
    nothing; a row is +inf where q_i = 0 < p_i, or where y holds NaN or +inf or only -inf.
    Rows whose reference holds NaN or +inf or only -inf are not compared."""
    x, y = _pair(x, y)
    if x.ndim == 0 or x.shape[-1] == 0:
        return math.nan
    x2, y2 = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])

    def defined(z: np.ndarray) -> np.ndarray:
        return ~np.any(np.isnan(z) | (z == np.inf), axis=1) & np.any(z > -np.inf, axis=1)

    rows = defined(x2)
    if not rows.any():
        return math.nan
    x2, y2 = x2[rows], y2[rows]
    kl = np.full(len(x2), np.inf)
    ok = defined(y2)
    lp, lq = _log_softmax(x2[ok]), _log_softmax(y2[ok])
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):             # -inf - -inf where p = 0: left out
        kl[ok] = np.sum(np.where(p > 0, p * (lp - lq), 0.0), axis=1)
    return max(float(np.mean(kl)), 0.0)       # KL >= 0; rounding can give -1e-17


def nan_count(x, y) -> int:
    x, y = _pair(x, y)
    return int(np.count_nonzero(np.isnan(y) & ~np.isnan(x)))


def inf_count(x, y) -> int:
    x, y = _pair(x, y)
    return int(np.count_nonzero(np.isinf(y) & np.isfinite(x)))


def underflow_count(x, y) -> int:
    x, y = _pair(x, y)
    return int(np.count_nonzero((y == 0) & (x != 0) & np.isfinite(x)))


def nonzero_count(x) -> int:
    """The finite non-zero elements of the reference: those ``underflow_count`` can flush."""
    x = np.asarray(x, dtype=np.float64)
    return int(np.count_nonzero((x != 0) & np.isfinite(x)))


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
           "underflow_count": underflow_count(x, y), "nonzero_count": nonzero_count(x)}
    if fmt_max is not None:
        rec["saturation_count"] = saturation_count(x, y, fmt_max)
    return rec
