"""Format property tables and format error tables (pandas).

* :func:`property_table`: for any formats, scalar or scaled: bits per element (scale overhead
  included), largest value, smallest normal and smallest positive value, epsilon (the spacing
  above 1, relative), dynamic range in binades (log2 of largest over smallest positive) and in
  dB (20 log10 of the same ratio), and the count of distinct finite values.  A scaled format's
  range is its element's stretched by its scale format's (largest element x largest scale over
  smallest positive element x smallest scale); its value count is the element's.
* :func:`error_table`: quantize standard distributions (or given tensors) into each format and
  report MSE, SQNR (dB), max absolute error, the share saturated (beyond the range: clipped by
  a scaled format's encoder, or beyond a scalar format's largest value) and the share flushed
  (nonzero in, zero out), in the style of the MX and FP8-versus-INT8 papers' tables, and the
  share NaN out.  Data are 2-D (rows of 1,024 values), quantized as a MAC's first operand is:
  scaled formats group along each row, per-channel ones give each row its scale.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence, Union

import numpy as np
import pandas as pd

import formats
from formats import ScaledFormat
from mac_models.ops import beyond_range, quantized_operand

ROW = 1024


def family(fmt) -> str:
    """A format's family for grouping: float, int, posit, codebook, or for scaled formats mx,
    nvfp4, bfp, or the element's family with " (scaled)"."""
    f = formats.get(fmt)
    if isinstance(f, ScaledFormat):
        for prefix in ("mx", "nvfp4", "bfp"):
            if f.name.startswith(prefix):
                return prefix
        return f"{family(f.element)} (scaled)"
    return {formats.FloatFormat: "float", formats.IntFormat: "int", formats.PositFormat: "posit",
            formats.CodebookFormat: "codebook"}[type(f)]


def _bits(f) -> float:
    return f.bits_per_element if isinstance(f, ScaledFormat) else float(f.bits)


def _smallest(f) -> float:
    return f.min_subnormal if f.min_subnormal > 0 else f.min_normal


def property_table(names: Union[Sequence[str], str, None] = None) -> pd.DataFrame:
    """Properties of ``names`` (a list or one name; every named scalar and scaled format by
    default)."""
    names = [names] if isinstance(names, str) else list(names) if names is not None else \
        formats.registry.names() + formats.registry.scaled_names()
    rows = []
    for name in names:
        f = formats.get(name)
        if isinstance(f, ScaledFormat):
            e, s = f.element, f.scale
            top, bottom = e.max * s.max, _smallest(e) * _smallest(s)
            row = {"format": name, "family": family(f), "bits": _bits(f), "max": top,
                   "min_normal": e.min_normal * _smallest(s), "min_positive": bottom,
                   "epsilon": e.epsilon, "n_values": e.n_finite}
        else:
            top, bottom = f.max, _smallest(f)
            row = {"format": name, "family": family(f), "bits": _bits(f), "max": top,
                   "min_normal": f.min_normal, "min_positive": bottom, "epsilon": f.epsilon,
                   "n_values": f.n_finite}
        ratio = top / bottom
        row["range_binades"] = math.log2(ratio)
        row["range_db"] = 20 * math.log10(ratio)
        rows.append(row)
    return pd.DataFrame(rows)


def _llm_activations(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Gaussian activations with outlier channels: 1 % of the columns scaled by 50 (the
    systematic outlier features LLM.int8() reports in large transformers)."""
    x = rng.standard_normal((rows, ROW))
    outliers = rng.choice(ROW, size=ROW // 100, replace=False)
    x[:, outliers] *= 50.0
    return x


DISTRIBUTIONS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "gaussian": lambda rng, rows: rng.standard_normal((rows, ROW)),
    "laplace": lambda rng, rows: rng.laplace(size=(rows, ROW)),
    "student_t3": lambda rng, rows: rng.standard_t(3, size=(rows, ROW)),
    "uniform": lambda rng, rows: rng.uniform(-1.0, 1.0, size=(rows, ROW)),
    "llm_outliers": _llm_activations,
}

DEFAULT_FORMATS = ("fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "int8_tensor", "int8_channel",
                   "int4_g128", "mxfp8_e4m3", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8",
                   "nvfp4", "posit8_0", "posit16_1", "nf4_g64")


def standard_data(rows: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Each standard distribution as a (rows, 1024) float64 array (seeded)."""
    return {name: make(np.random.default_rng([seed, i]), rows)
            for i, (name, make) in enumerate(DISTRIBUTIONS.items())}


def quantize_2d(x: np.ndarray, fmt, rounding: str = "nearest_even",
                seed: int = 0) -> tuple[np.ndarray, int]:
    """``x`` (2-D, any real dtype: integers are read exactly) quantized into ``fmt``, as float64,
    and the count of elements beyond the format's range, each element rounded by ``rounding``.
    Scalar formats quantize as :meth:`formats.ScalarFormat.quantize` does (+-Inf saturates into
    an integer format that saturates); scaled formats as a MAC's first operand (groups along
    each row; per-channel ones give each row its scale)."""
    fmt = formats.get(fmt)
    if isinstance(fmt, ScaledFormat):
        return quantized_operand(x, fmt, 1, rounding, seed)
    return (fmt.quantize(x, rounding, seed=seed).astype(np.float64),
            beyond_range(np.asarray(x, dtype=np.float64), fmt))


def error_row(x: np.ndarray, fmt, rounding: str = "nearest_even", seed: int = 0) -> dict:
    """MSE, SQNR, max error, and the shares saturated, flushed and NaN of ``x`` quantized
    into ``fmt``.  Errors run over the elements finite in ``x``; one that turns infinite or NaN
    (an overflow; a scaled group holding a NaN) is an infinite error, as in
    :mod:`simulator.metrics`: the MSE is infinite and the SQNR -inf.  NaN when there are none."""
    return quantized_with_errors(x, fmt, rounding, seed)[1]


def quantized_with_errors(x: np.ndarray, fmt, rounding: str = "nearest_even",
                          seed: int = 0) -> tuple[np.ndarray, dict]:
    """``x`` quantized into ``fmt`` (float64, x's shape; rows of its last axis as in
    :func:`quantize_2d`) and its :func:`error_row`, from one quantization."""
    x = np.asarray(x)
    x2 = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
    q, beyond = quantize_2d(x2, fmt, rounding, seed)
    x2 = x2.astype(np.float64)                         # the errors are computed in float64
    finite = np.isfinite(x2)                  # NaN or inf where x is finite: an infinite error
    err = np.where(np.isnan(q), np.inf, q - x2)[finite]
    signal = float(np.sum(x2[finite] ** 2))
    noise = float(np.sum(err ** 2))
    n = max(x2.size, 1)
    if not err.size:
        sqnr = math.nan
    elif noise == 0:
        sqnr = math.inf
    elif signal == 0 or math.isinf(noise):
        sqnr = -math.inf
    else:
        sqnr = 10 * math.log10(signal / noise)
    return q.reshape(x.shape), {
        "bits": _bits(formats.get(fmt)),
        "mse": noise / err.size if err.size else math.nan, "sqnr_db": sqnr,
        "max_abs_error": float(np.max(np.abs(err))) if err.size else math.nan,
        "saturated_share": beyond / n,
        "flushed_share": int(np.count_nonzero((x2 != 0) & (q == 0))) / n,
        "nan_share": int(np.count_nonzero(np.isnan(q))) / n}


def error_table(fmts: Sequence[str] = DEFAULT_FORMATS,
                data: Union[Mapping[str, np.ndarray], None] = None, rows: int = 64,
                seed: int = 0) -> pd.DataFrame:
    """One row per (data set, format): see the module doc.  ``data`` maps names to tensors
    (captured ones, say); by default the standard distributions, ``rows`` x 1024 each."""
    data = standard_data(rows, seed) if data is None else data
    out = []
    for dname, x in data.items():
        for name in fmts:
            out.append({"data": dname, "format": name, "family": family(name),
                        **error_row(x, name)})
    return pd.DataFrame(out)
