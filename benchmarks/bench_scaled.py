"""Quantize throughput of numsim's scaled formats (MXFP8, MXFP4, NVFP4, INT4 per group of 128),
as ratios against a vectorized numpy + ml_dtypes implementation of the same rule, run in the same
process on the same data and checked to agree with numsim bit for bit.

    .venv/bin/python benchmarks/bench_scaled.py [--n-log2 24] [--repeat 5]

The data is 2**N float32 standard-normal values shaped (-1, 4096); blocks run along the last
axis.  The baselines (see each function) reshape to (n_blocks, block), take amax per block and
apply the rule with whole-array numpy operations and ml_dtypes casts:

* MX (mxfp8_e4m3, mxfp4): ``E = floor(log2 amax) - emax_elem`` from ``np.frexp``, clamped to
  [-127, 127]; ``x * 2**-E`` clipped to +-max, cast to the element type and back, times 2**E.
  All of it is exact in float32, so the float32 baseline is the rule.
* NVFP4: tensor scale ``s_t = fp32(amax / 2688)``; block scale ``amax_b / 6 / s_t`` rounded to
  E4M3 and clamped to [2**-9, 448]; elements ``x / (scale * s_t)`` clipped to +-6 and rounded to
  E2M1, times ``scale * s_t``.
* int4_g128: ``scale = fp32(amax / 7)``; ``rint(x / scale)`` clipped to +-7, times ``scale``.

The quotients of NVFP4 and int4 are not exact in float32: a float32 quotient is rounded once
before the rounding to the narrow format, and that double rounding moves a few elements (their
count is printed, from the float32 variants).  The checked baselines divide in float64 (a single
correctly rounded division, whose error 2**-53 cannot cross a rounding boundary, which the exact
quotient of a float32 by a float32 scale misses by more than 2**-31 relative).  ml_dtypes casts
float64 through float32, which would round twice again, so the float64 quotients reach float32
with round-to-odd first (:func:`f64_to_f32_odd`: float32 keeps more than two bits beyond E4M3
and E2M1, so RNE from the round-to-odd float32 equals RNE from the float64).

Target (2-core machine): quantize >= 10x the numpy + ml_dtypes baseline, per format.

Each format is timed twice: returning a new float64 array, and writing into one given array
(``quantize(x, out=given)``; the baselines' last operation writes into it too).  Also printed, as
the ceiling of any quantize that returns a new float64 array: ``x.astype(float64)`` (the kernel
zeroing the fresh output's pages on first touch costs about as much as the arithmetic here).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
from bench_formats import best_seconds, print_machine, size_args

import formats

BLOCK = {"mxfp8_e4m3": 32, "mxfp4": 32, "nvfp4": 16, "int4_g128": 128}
NAMES = tuple(BLOCK)
TARGET = 10.0


# ---------------------------------------------------------------------------- baselines

def f64_to_f32_odd(v: np.ndarray) -> np.ndarray:
    """float64 -> float32 with round-to-odd (truncate, then set the last bit if inexact), so that
    a later round-to-nearest to a format at least two bits narrower rounds only once."""
    t = v.astype(np.float32)
    back = t.astype(np.float64)
    bits = t.view(np.int32)
    bits -= (np.abs(back) > np.abs(v)).view(np.int8)      # rounded away: one ulp back to zero
    bits |= (back != v).view(np.int8)                     # inexact: the sticky (odd) bit
    return t


def mx_baseline(x: np.ndarray, block: int, elem, emax: int, elem_max: float,
                out: np.ndarray | None = None) -> np.ndarray:
    """OCP MX v1.0 section 6.3 (floor rule), exact in float32 (``out``: a float64 array of x's
    shape that receives the values)."""
    b = x.reshape(-1, block)
    amax = np.max(np.abs(b), axis=1, keepdims=True)
    _, e = np.frexp(amax)                                 # amax = m * 2**e, 0.5 <= m < 1
    shared = np.clip(e - 1 - emax, -127, 127)             # floor(log2 amax) - emax
    p = np.clip(np.ldexp(b, -shared), -elem_max, elem_max)
    q = p.astype(elem).astype(np.float32)
    return np.ldexp(q, shared, out=_blocks(out, b.shape)).reshape(x.shape)


def nvfp4_baseline(x: np.ndarray, exact: bool = True, out: np.ndarray | None = None
                   ) -> np.ndarray:
    """NVFP4: FP32 tensor scale, E4M3 block scale (RNE, clamped to [2**-9, 448]), E2M1 elements.
    ``exact=False``: the quotients in float32 arithmetic (double rounding; for the mismatch
    count)."""
    b = x.reshape(-1, 16)
    s_t = np.float32(np.max(np.abs(x))) / np.float32(6 * 448)       # IEEE: rounded once
    amax = np.max(np.abs(b), axis=1, keepdims=True)
    if exact:
        s_dec = 6.0 * np.float64(s_t)                               # exact in float64
        q = f64_to_f32_odd(amax.astype(np.float64) / s_dec)
    else:
        q = amax / np.float32(6) / s_t
    scale = np.clip(q, 2.0**-9, 448).astype(ml_dtypes.float8_e4m3fn)
    scale = np.clip(scale.astype(np.float32), 2.0**-9, 448)
    unit = scale.astype(np.float64) * np.float64(s_t)                # 4 + 24 bits: exact
    p = f64_to_f32_odd(b / unit) if exact else b / (scale * s_t)
    e = np.clip(p, -6, 6).astype(ml_dtypes.float4_e2m1fn).astype(np.float32)
    return np.multiply(e, unit, out=_blocks(out, b.shape)).reshape(x.shape)   # exact


def int4_baseline(x: np.ndarray, exact: bool = True, out: np.ndarray | None = None
                  ) -> np.ndarray:
    """Symmetric int4 per group of 128: scale fp32(amax / 7), rint(x / scale) clipped to +-7.
    ``exact=False`` divides in float32 (double rounding; for the mismatch count)."""
    b = x.reshape(-1, 128)
    amax = np.max(np.abs(b), axis=1, keepdims=True)
    scale = amax / np.float32(7)                                     # IEEE: rounded once
    scale = np.where(scale > 0, scale, np.float32(2.0**-149))        # all-zero group: smallest
    k = np.clip(np.rint(b / scale.astype(np.float64) if exact else b / scale), -7, 7)
    return np.multiply(k, scale.astype(np.float64), out=_blocks(out, b.shape)).reshape(x.shape)


def _blocks(out: np.ndarray | None, shape: tuple) -> np.ndarray | None:
    """``out`` viewed as the baseline's (blocks, block) matrix."""
    return None if out is None else out.reshape(shape)


def baseline(name: str):
    """The numpy + ml_dtypes implementation of ``name``'s rule (a function of x and out)."""
    if name == "mxfp8_e4m3":
        return lambda x, out=None: mx_baseline(x, 32, ml_dtypes.float8_e4m3fn, 8, 448.0, out)
    if name == "mxfp4":
        return lambda x, out=None: mx_baseline(x, 32, ml_dtypes.float4_e2m1fn, 2, 6.0, out)
    if name == "nvfp4":
        return lambda x, out=None: nvfp4_baseline(x, out=out)
    return lambda x, out=None: int4_baseline(x, out=out)


def n_differ(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.count_nonzero(a.astype(np.float64) != b.astype(np.float64)))


# ---------------------------------------------------------------------------- main

def main() -> None:
    args = size_args(__doc__)
    n = 1 << args.n_log2
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32).reshape(-1, 4096)
    print_machine(ml_dtypes=ml_dtypes.__version__)
    print(f"input: {n:,} float32 standard normal values shaped {x.shape}, blocks along the last "
          f"axis")
    fmts = {name: formats.get(name) for name in NAMES}
    for fmt in fmts.values():                # compile every kernel before any timing
        fmt.quantize(x[:2])
        fmt.encode(x[:2])
    fmts["mxfp4"].quantize(x[:2], rounding="stochastic", seed=1)

    rows = []
    given = np.empty(x.shape)                  # the out= runs write here (pages touched once)
    for name, fmt in fmts.items():
        ours = fmt.quantize(x)
        base_fn = baseline(name)
        base = base_fn(x)
        bad = n_differ(ours, base)
        assert bad == 0, f"{name}: the baseline differs from numsim in {bad} of {n} elements"
        for fn in (fmt.quantize, base_fn):
            given[...] = np.nan
            fn(x, out=given)
            assert n_differ(given, ours) == 0, f"{name}: out= differs from a new array"
        note = ""
        if name in ("nvfp4", "int4_g128"):
            naive = (nvfp4_baseline if name == "nvfp4" else int4_baseline)(x, exact=False)
            note = f"float32 variant: {n_differ(ours, naive)} differ (double rounding)"
        del ours, base
        rows.append((name, {
            "new": (best_seconds(lambda: fmt.quantize(x), args.repeat),
                    best_seconds(lambda: base_fn(x), args.repeat)),
            "out": (best_seconds(lambda: fmt.quantize(x, out=given), args.repeat),
                    best_seconds(lambda: base_fn(x, out=given), args.repeat)),
        }, best_seconds(lambda: fmt.encode(x), args.repeat), note))

    for kind, title in (("new", "quantize into a new float64 array (float32 in)"),
                        ("out", "quantize into a given float64 array (out=; the baseline's last "
                                "operation writes there too)")):
        print(f"{title}; baseline checked bit for bit against numsim:")
        print(f"{'format':<12}{'numsim G/s':>11}{'baseline G/s':>14}{'numsim/baseline':>17}"
              f"{'target':>8}" + (f"{'encode G/s':>12}  note" if kind == "new" else ""))
        for name, times, t_enc, note in rows:
            t_ours, t_base = times[kind]
            ratio = t_base / t_ours
            tail = f"{n / t_enc / 1e9:>12.3f}  {note}" if kind == "new" else ""
            print(f"{name:<12}{n / t_ours / 1e9:>11.3f}{n / t_base / 1e9:>14.3f}{ratio:>16.1f}x"
                  f"{'met' if ratio >= TARGET else 'MISSED':>8}{tail}")
    t_alloc = best_seconds(lambda: x.astype(np.float64), args.repeat)
    print(f"ceiling: x.astype(float64) into a new array {n / t_alloc / 1e9:.3f} G elements/s")
    fmt = fmts["mxfp4"]
    t_sr = best_seconds(lambda: fmt.quantize(x, rounding="stochastic", seed=1), args.repeat)
    t_nearest = [r[1]["new"][0] for r in rows if r[0] == "mxfp4"][0]
    print(f"mxfp4 stochastic rounding: {n / t_sr / 1e9:.3f} G elements/s "
          f"({t_nearest / t_sr:.0%} of its nearest-even quantize)")


if __name__ == "__main__":
    main()
