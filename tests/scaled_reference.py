"""An independent reference for numsim's scaled formats: plain numpy, ml_dtypes and Fractions.

Written from the specifications, not from numsim's kernels:

* OCP Microscaling (MX) v1.0, section 6.3 (the sample conversion) and the format tables:
  ``shared_exp = floor(log2(amax)) - emax_elem`` from amax's float bits, ``X = 2**shared_exp``,
  ``P_i = V_i / X`` rounded to the element type with roundTiesToEven, normal values beyond the
  element's max clamped to +-max; a block holding NaN/Inf gets X = NaN (E8M0 0xFF) and every
  element of the block is NaN; the scale is clamped to E8M0's range 2**-127..2**127, and an
  all-zero block takes 2**-127.  The other shared-exponent rules in use (``ceil``, ``even``,
  ``rceil``) are written from their one-line definitions.
* NVFP4: per-tensor FP32 scale ``s_t = fp32(amax_tensor / (448 * 6))`` (amax over the finite
  values, 1 when it is 0), block scale ``amax_block / 6 / s_t`` rounded once into UE4M3 (to
  nearest even, or up) and clamped to [2**-9, 448], elements RNE to E2M1 of the exact
  ``x / (scale * s_t)``, clamped to +-6.
* integer quantization with an ``amax`` scale: ``scale = round(amax / qmax)`` into the scale
  format (FP32 by default), smallest positive scale for an all-zero group; elements
  ``clip(RNE(x / scale), -qmax, qmax)``.
* asymmetric integers (PyTorch's affine quantization, with 0 always in range): per group
  ``lo = min(min x, 0)``, ``hi = max(max x, 0)``, ``scale = round((hi - lo) / qmax)`` into the
  scale format (smallest positive for an all-zero group), ``zp = clamp(RNE(-lo / scale), 0,
  qmax)``, elements ``clamp(RNE(x / scale) + zp, 0, qmax)`` meaning ``(k - zp) * scale``;
  per group, everything in Fractions.
* NF4 (QLoRA) with an absmax scale per block: ``scale = fp32(amax)``, elements the nearest
  NF4 table value to ``x / scale`` (a tie goes to the even code, numsim's documented choice).
* DeepSeek-V3 FP8 tiles: ``scale = fp32(amax / 448)``, elements RNE e4m3 of ``x / scale``.
* block floating point ``bfpM_K`` (README: M-bit two's-complement mantissas sharing an E8M0
  exponent per K, the largest magnitude keeping its leading bit): the MX floor rule with a
  symmetric integer element ``k * 2**-(M-2)``, ``|k| <= 2**(M-1) - 1`` (emax 0: the block's
  amax scales into [1, 2)).
* scale formats (README: ``intN_gK``/``_channel``/``_tensor``, ``uintN_...``, suffix ``_fp16``,
  ``_bf16``, ``_e8m0``, ``_e4m3``): the quotient is rounded once, to nearest even, into FP32,
  FP16, BF16 (ml_dtypes' bfloat16 cast), E4M3 (float8_e4m3fn) or E8M0.  E8M0 holds only powers
  of two, and numsim documents (README, Rounding) that its nearest-even sends a tie
  ``1.5 * 2**k`` to the *even code* (biased exponent), while ml_dtypes' float8_e8m0fnu cast
  sends it away from zero: the reference takes ml_dtypes' cast for the non-ties of float32's
  normal range and decides the ties, and everything below 2**-126 (where ml_dtypes rounds
  float32 subnormals by their top mantissa bit, REFERENCES.md), from the exponent of q's bits.
  A scale is *clamped* when its once-rounded value in the format unbounded at both ends (E8M0:
  every power of two; the others: 0 below the subnormals) lies outside [smallest positive,
  max]; it is then held there.
* element rounding modes (README, Rounding): ``nearest_even`` as above; ``nearest_away``,
  ``toward_zero``, ``toward_positive`` and ``toward_negative`` are an explicit search for the
  neighbours below and above among the element's sorted values (ml_dtypes' decode of every
  code, the NF4 table), deciding by comparisons with the exact float64 midpoints; integers by
  ``floor``/``ceil``/``trunc`` (and ``trunc`` plus the exact remainder for ties away).  Every
  mode saturates at +-max, and a float element that rounds to 0 keeps x's sign.

Groups are named from the definition (block index ``i // k`` along the axis, the channel
index, the tile index), per-group reductions use ``np.maximum.at``, and each formula is then
applied to every element with its group's scale: vectorised, but one spec step at a time.

Exactness.  Every input is read as float64 (exact for float16/32/64).  Power-of-two scaling
is exact.  Element rounding uses ml_dtypes' casts (RNE), fed float32 values: a float64 value is
first rounded to float32 *to odd* (truncate, then set the last bit when inexact), and rounding
to odd with p >= q + 2 bits followed by RNE to q bits equals one RNE (Boldo & Melquiond 2008),
so ml_dtypes' float32 casts give the correctly rounded result of any float64 value (the other
modes compare float64 values with exact grid points and midpoints: no rounding at all).  Scaling
by a power of two that underflows float64 is redone in Fractions.  Quotients
``a / b`` (amax rule) are rounded *once* by :func:`round_quotient`: numpy's float64 division is
correctly rounded, so the exact quotient lies between the float64 neighbours of the computed
one; every rounding used here is monotone, so when both neighbours round to the same value the
exact quotient does too, and the few quotients where they do not are redone with Fractions.
"""
from __future__ import annotations

import bisect
import functools
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction

import ml_dtypes
import numpy as np

# ---------------------------------------------------------------------------- element formats


@dataclass(frozen=True)
class FloatElem:
    """An OCP float element type, with its constants typed in from the MX v1.0 tables."""

    name: str
    dtype: type           # the ml_dtypes type (RNE casts)
    emax: int             # exponent of the largest power of two (MX v1.0 table)
    max: float            # largest normal
    min_normal: float
    min_subnormal: float
    mbits: int
    bits: int

    @property
    def emin(self) -> int:
        return int(math.log2(self.min_normal))


E4M3 = FloatElem("fp8_e4m3", ml_dtypes.float8_e4m3fn, 8, 448.0, 2.0**-6, 2.0**-9, 3, 8)
E5M2 = FloatElem("fp8_e5m2", ml_dtypes.float8_e5m2, 15, 57344.0, 2.0**-14, 2.0**-16, 2, 8)
E3M2 = FloatElem("fp6_e3m2", ml_dtypes.float6_e3m2fn, 4, 28.0, 2.0**-2, 2.0**-4, 2, 6)
E2M3 = FloatElem("fp6_e2m3", ml_dtypes.float6_e2m3fn, 2, 7.5, 1.0, 2.0**-3, 3, 6)
E2M1 = FloatElem("fp4_e2m1", ml_dtypes.float4_e2m1fn, 2, 6.0, 1.0, 0.5, 1, 4)
UE4M3 = E4M3          # NVFP4's block scale: the positive half of E4M3 (code 0x7F is NaN)


@dataclass(frozen=True)
class IntElem:
    """A two's-complement integer element of ``bits`` bits meaning ``k * 2**-frac``."""

    bits: int
    frac: int = 0
    emax: int = 0         # MX v1.0 table: INT8 (implicit 2**-6) has emax 0
    int_min: bool = False  # allow -2**(bits-1) (MXINT8 is symmetric by default)

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.int_min else -self.qmax

    @property
    def max(self) -> float:
        return self.qmax * 2.0**-self.frac

    @property
    def min(self) -> float:
        return self.qmin * 2.0**-self.frac

    @property
    def precision(self) -> int:
        """Significant bits of the largest binade (1.xxxxxx for int8/64): bits - 1."""
        return self.bits - 1


MXINT8 = IntElem(8, 6)

# QLoRA's NF4 table in code order, typed in from bitsandbytes (bitsandbytes/functional.py,
# get_4bit_type("nf4"); the values of create_normal_map(offset=0.9677083), Dettmers et al.
# 2023, arXiv 2305.14314, appendix E).
NF4_TABLE = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
             -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
             0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
             0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023,
             1.0)

MODES = ("nearest_even", "nearest_away", "toward_zero", "toward_positive", "toward_negative")


@dataclass(frozen=True)
class Grid:
    """A sorted set of element values (``even``: the value's code is even) and the deterministic
    rounding modes onto it, saturating at its ends: the neighbours lo <= v < hi come from a
    search, and the mode picks one (ties of ``nearest_even`` go to the even code, or to the
    smaller magnitude where both codes have the same parity, as formats/codebook.py documents
    for tables; for binary floats every step changes the code's parity)."""

    values: tuple
    even: tuple
    fractions: list = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        assert list(self.values) == sorted(set(self.values)), "sorted, distinct"
        fr = [Fraction(v) for v in self.values]
        # the float64 midpoints used by round() are exact
        assert all(Fraction((a + b) / 2) == (p + q) / 2 for a, b, p, q in
                   zip(self.values, self.values[1:], fr, fr[1:]))
        object.__setattr__(self, "fractions", fr)

    def round(self, v: np.ndarray, mode: str) -> np.ndarray:
        """float64 ``v`` rounded onto the grid (exact: only comparisons with grid values and
        their midpoints, which are exact in float64 for the grids here)."""
        g = np.array(self.values)
        ev = np.array(self.even)
        v = np.asarray(v, dtype=np.float64)
        i = np.clip(np.searchsorted(g, v, side="right"), 1, g.size - 1)
        lo, hi = g[i - 1], g[i]                              # lo <= v < hi inside the grid
        mid = (lo + hi) / 2                                  # exact (checked when built)
        if mode == "toward_negative":
            up = np.zeros(v.shape, dtype=bool)
        elif mode == "toward_positive":
            up = np.ones(v.shape, dtype=bool)
        elif mode == "toward_zero":
            up = v < 0
        elif mode == "nearest_away":
            up = (v > mid) | ((v == mid) & (np.abs(hi) > np.abs(lo)))
        elif mode == "nearest_even":
            tie_up = np.where(ev[i] != ev[i - 1], ev[i], np.abs(hi) < np.abs(lo))
            up = (v > mid) | ((v == mid) & tie_up)
        else:
            raise ValueError(mode)
        out = np.where(up & (v != lo), hi, lo)
        return np.where(v <= g[0], g[0], np.where(v >= g[-1], g[-1], out))

    def round_exact(self, q: Fraction, mode: str) -> float:
        """The Fraction twin of :meth:`round`."""
        g = self.fractions
        if q <= g[0]:
            return float(g[0])
        if q >= g[-1]:
            return float(g[-1])
        i = bisect.bisect_right(g, q)
        lo, hi = g[i - 1], g[i]
        if q == lo or mode == "toward_negative":
            return float(lo)
        if mode == "toward_positive":
            return float(hi)
        if mode == "toward_zero":
            return float(hi if q < 0 else lo)
        mid = (lo + hi) / 2
        if q != mid:
            return float(hi if q > mid else lo)
        if mode == "nearest_away":
            return float(hi if abs(hi) > abs(lo) else lo)
        e_hi, e_lo = self.even[i], self.even[i - 1]
        return float(hi if (e_hi if e_hi != e_lo else abs(hi) < abs(lo)) else lo)


@functools.lru_cache(maxsize=None)
def float_grid(dtype) -> Grid:
    """Every finite value of an ml_dtypes float type (one zero), with its code's parity."""
    codes = np.arange(256 if np.dtype(dtype).itemsize == 1 else 1 << 16, dtype=np.uint8
                      if np.dtype(dtype).itemsize == 1 else np.uint16)
    vals = codes.view(dtype).astype(np.float64)
    keep = np.isfinite(vals)
    vals, codes = vals[keep] + 0.0, codes[keep]
    order = np.argsort(vals, kind="stable")                  # +0 (code 0) before -0
    vals, codes = vals[order], codes[order]
    first = np.concatenate(([True], np.diff(vals) != 0))
    return Grid(tuple(vals[first].tolist()), tuple((codes[first] % 2 == 0).tolist()))


NF4_GRID = Grid(NF4_TABLE, tuple(c % 2 == 0 for c in range(16)))   # the table is ascending


def round_int(v: np.ndarray, mode: str) -> np.ndarray:
    """float64 ``v`` rounded to an integer (as float64) in ``mode``, exactly."""
    v = np.asarray(v, dtype=np.float64)
    if mode == "nearest_even":
        return np.rint(v)
    if mode == "nearest_away":
        t = np.trunc(v)
        return t + np.sign(v) * (np.abs(v - t) >= 0.5)      # v - trunc(v) is exact
    return {"toward_zero": np.trunc, "toward_positive": np.ceil,
            "toward_negative": np.floor}[mode](v)


def round_int_exact(q: Fraction, mode: str) -> int:
    """The Fraction twin of :func:`round_int`."""
    if mode == "nearest_even":
        return round(q)                                       # half to even
    if mode == "nearest_away":
        return (1 if q >= 0 else -1) * math.floor(abs(q) + Fraction(1, 2))
    return {"toward_zero": int, "toward_positive": math.ceil,
            "toward_negative": math.floor}[mode](q)


@dataclass(frozen=True)
class ScaleFmt:
    """A binary float scale format, or E8M0 (mbits 0, powers of two only, no zero), with its
    ``up``: round toward +inf instead of to nearest even."""

    name: str
    mbits: int
    emin: int             # exponent of the smallest normal
    max: float
    code_dtype: type
    up: bool = False

    @property
    def min_positive(self) -> float:
        return 2.0 ** (self.emin - self.mbits)


FP32 = ScaleFmt("fp32", 23, -126, float(np.finfo(np.float32).max), np.uint32)
FP16 = ScaleFmt("fp16", 10, -14, 65504.0, np.uint16)
UE4M3_RNE = ScaleFmt("ue4m3", 3, -6, 448.0, np.uint8)
UE4M3_UP = ScaleFmt("ue4m3", 3, -6, 448.0, np.uint8, up=True)
BF16 = ScaleFmt("bf16", 7, -126, float(ml_dtypes.finfo(ml_dtypes.bfloat16).max), np.uint16)
E4M3_SCALE = ScaleFmt("e4m3", 3, -6, 448.0, np.uint8)      # fp8_e4m3 scales are positive
E8M0 = ScaleFmt("e8m0", 0, -127, 2.0**127, np.uint8)       # code c = 2**(c - 127), 0xFF NaN

# ---------------------------------------------------------------------------- exact rounding


def floor_log2(a: Fraction) -> int:
    """floor(log2(a)) of a positive Fraction, exactly."""
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    return e


def round_fraction(q: Fraction, mbits: int, emin: int, up: bool = False) -> Fraction:
    """``q`` rounded to a binary float with ``mbits`` fraction bits and smallest normal exponent
    ``emin`` (subnormals below), unbounded above; to nearest even, or toward +inf (``up``)."""
    if q == 0:
        return Fraction(0)
    sign = -1 if q < 0 else 1
    a = abs(q)
    e = max(floor_log2(a), emin)
    ulp = Fraction(2) ** (e - mbits)
    k = a // ulp                              # an int: a = (k + r) * ulp, 0 <= r < 1
    rem = a - k * ulp
    if up:
        k += (rem > 0) if sign > 0 else 0     # toward +inf (only used on positive values)
    elif 2 * rem > ulp or (2 * rem == ulp and k % 2 == 1):
        k += 1
    return sign * k * ulp


def round_e8m0(q: Fraction) -> Fraction:
    """Positive ``q`` to the nearest power of two, every exponent allowed; a tie ``1.5 * 2**e``
    goes to the even code ``e + 127`` or ``e + 128`` (README: e8m0's nearest_even)."""
    e = floor_log2(q)
    m = q / Fraction(2) ** e                  # in [1, 2)
    if m > Fraction(3, 2) or (m == Fraction(3, 2) and (e + 127) % 2 == 1):
        e += 1
    return Fraction(2) ** e


def scale_unbounded(q: Fraction, sf: ScaleFmt) -> Fraction:
    """``q`` rounded once into ``sf`` without its range limits (binary floats: unbounded above,
    0 below the subnormals; E8M0: any power of two)."""
    if sf.name == "e8m0":
        assert not sf.up
        return round_e8m0(q)
    return round_fraction(q, sf.mbits, sf.emin, up=sf.up)


def f32_round_to_odd(p: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounded to odd (truncate; set the last bit when inexact).  ``p`` must
    be finite and within float32's range (callers clamp first)."""
    p = np.asarray(p, dtype=np.float64)
    f = p.astype(np.float32)
    over = np.abs(f.astype(np.float64)) > np.abs(p)
    f = np.where(over, np.nextafter(f, np.float32(0)), f)
    inexact = f.astype(np.float64) != p
    return (f.view(np.uint32) | inexact.astype(np.uint32)).view(np.float32)


def float_elem_rne(p: np.ndarray, fe: FloatElem) -> np.ndarray:
    """RNE of float64 values into element ``fe``, saturating at +-max, as an ml_dtypes array.
    The clamp comes first: ml_dtypes' fp8 casts do not saturate (e4m3 465 -> NaN)."""
    p = np.clip(np.asarray(p, dtype=np.float64), -fe.max, fe.max)
    return f32_round_to_odd(p).astype(fe.dtype)


def float_elem_round(p: np.ndarray, fe: FloatElem, mode: str) -> np.ndarray:
    """float64 values of ``p`` rounded into ``fe`` in ``mode``, saturating; a zero keeps p's sign
    (nearest_even: ml_dtypes' cast, :func:`float_elem_rne`; the others: :class:`Grid`)."""
    p = np.asarray(p, dtype=np.float64)
    if mode == "nearest_even":
        return float_elem_rne(p, fe).astype(np.float64)
    v = float_grid(fe.dtype).round(p, mode)
    return np.where(v == 0, np.copysign(0.0, p), v)


def float_elem_exact(q: Fraction, fe: FloatElem) -> float:
    """RNE of a Fraction into ``fe``, saturating (the Fraction twin of float_elem_rne)."""
    v = round_fraction(q, fe.mbits, fe.emin)
    return float(min(max(v, Fraction(-fe.max)), Fraction(fe.max)))


def elem_rounders(elem, mode: str):
    """(f_vec, f_exact) for :func:`round_quotient`: element values (float elements: ignoring the
    sign of zero), integer steps k (IntElem: clamped to [qmin, qmax] of the element's grid
    ``k * 2**-frac`` in units of the step), or NF4 codes, of a value in element units."""
    if elem == "nf4":
        codes = {v: c for c, v in enumerate(NF4_TABLE)}
        return (lambda q: np.searchsorted(NF4_TABLE, NF4_GRID.round(q, mode)).astype(
                    np.float64),
                lambda Q: float(codes[NF4_GRID.round_exact(Q, mode)]))
    if isinstance(elem, IntElem):
        return (lambda q: np.clip(round_int(q, mode), elem.qmin, elem.qmax),
                lambda Q: float(min(max(round_int_exact(Q, mode), elem.qmin), elem.qmax)))
    if mode == "nearest_even":
        return (lambda q: float_elem_rne(q, elem).astype(np.float64),
                lambda Q: float_elem_exact(Q, elem))
    grid = float_grid(elem.dtype)
    return lambda q: grid.round(q, mode), lambda Q: grid.round_exact(Q, mode)


def scale_round(q: np.ndarray, sf: ScaleFmt) -> np.ndarray:
    """Positive float64 values rounded once into the scale format and held at its range
    [smallest positive, max] (clamping before or after a monotone rounding is the same)."""
    q = np.clip(np.asarray(q, dtype=np.float64), 0.0, sf.max)
    if sf.name == "fp32":
        r = q.astype(np.float32).astype(np.float64)
    elif sf.name == "fp16":
        r = f32_round_to_odd(q).astype(np.float16).astype(np.float64)
    elif sf.name == "bf16":
        r = f32_round_to_odd(q).astype(ml_dtypes.bfloat16).astype(np.float64)
    elif sf.name == "e8m0":
        assert not sf.up
        # ml_dtypes' cast (ties away) from float32 rounded to odd (which keeps a non-tie off the
        # tie 1.5 * 2**k), in float32's normal range; the ties and everything below 2**-126 from
        # q's exponent: q = m * 2**e, 0.5 <= m < 1, between 2**(e-1) (code e + 126) and 2**e
        m, e = np.frexp(q)
        low = np.ldexp(1.0, e - 1)
        r = f32_round_to_odd(np.maximum(q, 2.0**-126)).astype(
            ml_dtypes.float8_e8m0fnu).astype(np.float64)
        tie = m == 0.75
        r = np.where(tie, np.where((e + 126) % 2 == 0, low, 2 * low), r)
        r = np.where(q < 2.0**-126, np.where(q > 1.5 * 2.0**-127, 2.0**-126, 2.0**-127), r)
    else:                                                  # ue4m3, e4m3
        r = f32_round_to_odd(q).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
        if sf.up:                                          # RNE, then one step up if below
            below = r < q
            nxt = (r.astype(ml_dtypes.float8_e4m3fn).view(np.uint8) + 1).view(
                ml_dtypes.float8_e4m3fn).astype(np.float64)
            r = np.where(below, nxt, r)
    return np.maximum(r, sf.min_positive)


def scale_exact(q: Fraction, sf: ScaleFmt) -> float:
    """The Fraction twin of :func:`scale_round`."""
    v = scale_unbounded(q, sf)
    return float(min(max(v, Fraction(sf.min_positive)), Fraction(sf.max)))


def scale_code(values: np.ndarray, sf: ScaleFmt) -> np.ndarray:
    """Bit patterns of (positive, representable) scale values."""
    v = np.asarray(values, dtype=np.float64)
    if sf.name == "fp32":
        return v.astype(np.float32).view(np.uint32)
    if sf.name == "fp16":
        return v.astype(np.float16).view(np.uint16)
    if sf.name == "bf16":
        return v.astype(ml_dtypes.bfloat16).view(np.uint16)
    if sf.name == "e8m0":                                   # 2**(c - 127), from the exponent
        m, e = np.frexp(v)
        assert np.all(m == 0.5)
        return (e - 1 + 127).astype(np.uint8)
    return v.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)


def scale_value(codes: np.ndarray, sf: ScaleFmt) -> np.ndarray:
    """float64 values of scale codes (ml_dtypes' decode; NaN codes give NaN)."""
    c = np.asarray(codes)
    t = {"fp32": np.float32, "fp16": np.float16, "bf16": ml_dtypes.bfloat16,
         "e8m0": ml_dtypes.float8_e8m0fnu}.get(sf.name, ml_dtypes.float8_e4m3fn)
    return c.astype(sf.code_dtype).view(t).astype(np.float64)


def round_quotient(num: np.ndarray, den: np.ndarray, f_vec, f_exact) -> np.ndarray:
    """``f(num / den)`` for the exact quotient, f monotone non-decreasing: ``f_vec`` on float64
    arrays, ``f_exact`` on one Fraction.  Zero numerators are exact; where the float64
    neighbours of the computed quotient disagree under f, the quotient is redone exactly."""
    num = np.asarray(num, dtype=np.float64)
    den = np.broadcast_to(np.asarray(den, dtype=np.float64), num.shape)
    with np.errstate(over="ignore", under="ignore"):
        q = num / den
    out = np.asarray(f_vec(q), dtype=np.float64).copy()
    lo = np.asarray(f_vec(np.nextafter(q, -np.inf)), dtype=np.float64)
    hi = np.asarray(f_vec(np.nextafter(q, np.inf)), dtype=np.float64)
    redo = ((lo != out) | (hi != out)) & (num != 0)
    for i in np.flatnonzero(redo):
        out.flat[i] = f_exact(Fraction(float(num.flat[i])) / Fraction(float(den.flat[i])))
    return out


# ---------------------------------------------------------------------------- groups


def group_ids(shape: tuple[int, ...], axis: int, group) -> tuple[np.ndarray, tuple[int, ...]]:
    """(group id of every element, the scales' shape): ``group`` an int k (blocks of k along
    ``axis``, the last one possibly short), "channel", "tensor" or a (tm, tn) tile over the
    last two axes.  Ids are C-order flat indices into the scales' shape."""
    nd = len(shape)
    axis %= nd
    idx = np.indices(shape, sparse=True)
    if isinstance(group, tuple):
        tm, tn = group
        sidx = list(idx[:-2]) + [idx[-2] // tm, idx[-1] // tn]
        sshape = shape[:-2] + (-(-shape[-2] // tm), -(-shape[-1] // tn))
    elif group == "tensor":
        sidx = [i * 0 for i in idx]
        sshape = (1,) * nd
    elif group == "channel":
        sidx = [i if d == axis else i * 0 for d, i in enumerate(idx)]
        sshape = tuple(s if d == axis else 1 for d, s in enumerate(shape))
    else:
        sidx = [i // group if d == axis else i for d, i in enumerate(idx)]
        sshape = tuple(-(-s // group) if d == axis else s for d, s in enumerate(shape))
    gid = np.zeros(shape, dtype=np.int64)
    stride = 1
    for d in reversed(range(nd)):
        gid += sidx[d] * stride
        stride *= sshape[d]
    return gid.reshape(-1), tuple(sshape)


@dataclass
class Reference:
    """What the reference computes, in numsim's layout: element codes (x's shape), scale codes
    (the scales' shape), decoded values, the tensor scale and per-group counters."""

    codes: np.ndarray
    scales: np.ndarray
    values: np.ndarray
    tensor_scale: float
    nan_groups: np.ndarray        # bool, scales' shape
    clipped: np.ndarray           # int, scales' shape: elements whose exact scaled value lies
    #                               outside the element's range [min, max]
    clamped: np.ndarray           # bool, scales' shape: scale held at its range
    amax: np.ndarray              # float64, scales' shape: max |x| over the finite values
    zero_points: np.ndarray | None = None    # asymmetric integers: per group


def _group_stats(x64: np.ndarray, gid: np.ndarray, ng: int):
    flat = x64.reshape(-1)
    finite = np.isfinite(flat)
    amax = np.zeros(ng)
    np.maximum.at(amax, gid, np.where(finite, np.abs(flat), 0.0))
    bad = np.zeros(ng, dtype=bool)
    np.logical_or.at(bad, gid, ~finite)
    return amax, bad


def _count(gid: np.ndarray, mask: np.ndarray, ng: int) -> np.ndarray:
    return np.bincount(gid, weights=mask.reshape(-1).astype(np.float64),
                       minlength=ng).astype(np.int64)


# ---------------------------------------------------------------------------- MX / BFP


def shared_exponent(amax: np.ndarray, rule: str, elem) -> np.ndarray:
    """Unclamped shared exponent of blocks with amax > 0 (finite), from amax's bits.

    floor: floor(log2 amax) - emax (OCP MX v1.0 section 6.3); ceil: one more when amax is not
    a power of two; even: amax rounded to the element's precision first (RNE; a tie there can
    only carry into the next binade from an all-ones mantissa, which is odd, so ties-away would
    agree), then floor; rceil: the smallest E with elem_max * 2**E >= amax.
    """
    m, e = np.frexp(amax)                        # amax = m * 2**e, 0.5 <= m < 1 (exact)
    ea = e.astype(np.int64) - 1                  # floor(log2 amax)
    ma = 2.0 * m                                 # amax's significand in [1, 2)
    if rule == "floor":
        return ea - elem.emax
    if rule == "ceil":
        return ea + (ma > 1.0) - elem.emax
    if rule == "even":
        p = elem.mbits + 1 if isinstance(elem, FloatElem) else elem.precision
        r = np.rint(ma * 2.0 ** (p - 1))         # exact product, RNE to p significant bits
        return ea + (r >= 2.0**p) - elem.emax
    if rule == "rceil":
        mm, em = np.frexp(elem.max)              # elem_max = (2 mm) * 2**(em - 1)
        mm, em = 2.0 * mm, int(em) - 1
        # elem_max * 2**E >= amax  <=>  E >= ea - em + (ma > mm)  (both significands in [1,2))
        return ea - em + (ma > mm)
    raise ValueError(rule)


def _code_dtype(bits: int):
    return np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32


def mx_reference(x, axis: int, elem, rule: str = "floor", block: int = 32,
                 rounding: str = "nearest_even") -> Reference:
    """OCP MX (and BFP: an IntElem with the floor rule) per block of ``block`` along ``axis``,
    elements rounded in ``rounding``."""
    x64 = np.asarray(x).astype(np.float64)
    gid, sshape = group_ids(x64.shape, axis, block)
    ng = math.prod(sshape)
    amax, bad = _group_stats(x64, gid, ng)
    exp = np.full(ng, -127, dtype=np.int64)                 # all-zero block: 2**-127
    pos = amax > 0
    exp[pos] = shared_exponent(amax[pos], rule, elem)
    clamped = (exp < -127) | (exp > 127)
    clamped &= ~bad
    exp = np.clip(exp, -127, 127)
    scodes = np.where(bad, 0xFF, exp + 127).astype(np.uint8)

    flat = x64.reshape(-1)
    ebad = bad[gid]
    e_el = exp[gid]
    p = np.ldexp(np.where(ebad, 0.0, flat), -e_el)           # P_i = V_i / X, exact
    clipped = _count(gid, (p > elem.max) | (p < -elem.max if isinstance(elem, FloatElem)
                                            else p < elem.min), ng)
    # P_i in element units (integers: in steps of 2**-frac), exact unless V_i / X underflowed
    # float64 (a tiny element in a block with a huge scale): those are rounded from Fractions
    f_vec, f_exact = elem_rounders(elem, rounding)
    units = p if isinstance(elem, FloatElem) else np.ldexp(p, elem.frac)
    ev = np.asarray(f_vec(units), dtype=np.float64).copy()
    shift = 0 if isinstance(elem, FloatElem) else elem.frac
    for i in np.flatnonzero((flat != 0) & (np.abs(units) < 2.0**-1000) & ~ebad):
        ev[i] = f_exact(Fraction(float(flat[i])) * Fraction(2) ** int(shift - e_el[i]))
    if isinstance(elem, FloatElem):
        ev = np.where(ev == 0, np.copysign(0.0, flat), ev)   # a zero keeps x's sign
        codes = ev.astype(elem.dtype).view(np.uint8).copy()
    else:
        k = ev.astype(np.int64)
        codes = (k % (1 << elem.bits)).astype(_code_dtype(elem.bits))
        ev = np.ldexp(k.astype(np.float64), -elem.frac)       # integers have no -0
    values = np.where(ebad, np.nan, np.ldexp(ev, e_el))
    return Reference(codes.reshape(x64.shape), scodes.reshape(sshape), values.reshape(x64.shape),
                     1.0, bad.reshape(sshape), clipped.reshape(sshape), clamped.reshape(sshape),
                     amax.reshape(sshape))


# ---------------------------------------------------------------------------- amax rule


def _overflow_threshold(sf: ScaleFmt) -> tuple[float, bool]:
    """(t, inclusive): the scale rounds past max iff q > t (q >= t when inclusive).  Beyond max
    the next value of the unbounded format is max + ulp(max) (E8M0: 2 max); RNE ties go to the
    even code (the binary formats' even mantissa; E8M0's max 2**127 has the even code 254)."""
    if sf.up:
        return sf.max, False
    e = math.floor(math.log2(sf.max))
    ulp = 2.0 ** (e - sf.mbits)
    max_is_odd = int(scale_code(np.array([sf.max]), sf)[0]) % 2 == 1
    return sf.max + ulp / 2, max_is_odd


def _underflow_threshold(sf: ScaleFmt) -> tuple[float, bool]:
    """(t, inclusive): the scale rounds below the smallest positive value iff q < t (q <= t when
    inclusive).  Binary formats round to 0 below half of it (the tie goes to 0, the even code),
    never when rounding up; E8M0 to 2**-128 below 0.75 * 2**-127 (the tie goes to code 0)."""
    if sf.name == "e8m0":
        return 0.75 * sf.min_positive, False
    if sf.up:
        return 0.0, False
    return sf.min_positive / 2, True


def _scale_clamped(num, den, sf: ScaleFmt) -> np.ndarray:
    """Did the rounded scale leave [smallest positive, max] before being held there?  Below and
    above: q past the thresholds of :func:`_underflow_threshold` and :func:`_overflow_threshold`."""
    t, inclusive = _overflow_threshold(sf)
    over = round_quotient(num, den, lambda q: (q >= t) if inclusive else (q > t),
                          lambda Q: float((Q >= Fraction(t)) if inclusive else (Q > Fraction(t))))
    h, inclusive = _underflow_threshold(sf)
    # "not under" is monotone non-decreasing in q, as round_quotient needs
    above = round_quotient(num, den, lambda q: (q > h) if inclusive else (q >= h),
                           lambda Q: float((Q > Fraction(h)) if inclusive else (Q >= Fraction(h))))
    return over.astype(bool) | ((above == 0) & (np.asarray(num) > 0))


def amax_reference(x, axis: int, elem, sf: ScaleFmt, group, tensor_scale: bool = False,
                   clip: np.ndarray | None = None, rounding: str = "nearest_even") -> Reference:
    """A scale ``amax / elem_max`` (over the tensor scale, if any) rounded once into ``sf`` per
    group, elements rounded once (in ``rounding``) from the exact ``x / (scale * tensor_scale)``.
    ``elem`` is a FloatElem, an IntElem (frac 0) or "nf4".  ``clip``: a calibrated range per
    group (flat) used where it is below amax."""
    x64 = np.asarray(x).astype(np.float64)
    gid, sshape = group_ids(x64.shape, axis, group)
    ng = math.prod(sshape)
    amax, bad = _group_stats(x64, gid, ng)
    if clip is not None:
        amax = np.minimum(amax, clip)
    elem_max = 1.0 if elem == "nf4" else float(elem.max)

    # NVFP4's FP32 tensor scale: amax over the finite values / (448 * 6), rounded once to FP32
    s_t = 1.0
    if tensor_scale:
        fin = x64[np.isfinite(x64)]
        amax_t = float(np.max(np.abs(fin))) if fin.size else 0.0
        if amax_t > 0:
            s_t = scale_exact(Fraction(amax_t) / Fraction(sf.max * elem_max), FP32)

    den = elem_max * s_t                                    # exact (<= 3 + 24 bits)
    scale = round_quotient(amax, den, lambda q: scale_round(q, sf),
                           lambda Q: scale_exact(Q, sf))
    scale[amax == 0] = sf.min_positive                      # all-zero group: smallest scale
    clamped = _scale_clamped(amax, den, sf) & ~bad
    scodes = scale_code(scale, sf)

    flat = x64.reshape(-1)
    ebad = bad[gid]
    unit = scale[gid] * s_t                                 # exact: 24 x 24 bits at most
    num = np.where(ebad, 0.0, flat)
    # |x / unit| > elem_max, decided exactly: elem_max * unit is exact in float64
    clipped = _count(gid, np.abs(num) > elem_max * unit, ng)
    rounded = round_quotient(num, unit, *elem_rounders(elem, rounding))
    if elem == "nf4":
        c = rounded.astype(np.int64)
        codes = c.astype(np.uint8)
        ev = np.array(NF4_TABLE)[c]
    elif isinstance(elem, IntElem):
        k = rounded.astype(np.int64)
        codes = (k % (1 << elem.bits)).astype(_code_dtype(elem.bits))
        ev = k.astype(np.float64)
    else:
        v = np.where(rounded == 0, np.copysign(0.0, num), rounded)   # a zero keeps x's sign
        codes = v.astype(elem.dtype).view(np.uint8).copy()
        ev = v
    values = np.where(ebad, np.nan, ev * unit)
    return Reference(codes.reshape(x64.shape), scodes.reshape(sshape), values.reshape(x64.shape),
                     s_t, bad.reshape(sshape), clipped.reshape(sshape), clamped.reshape(sshape),
                     amax.reshape(sshape))


# ---------------------------------------------------------------------------- zero point


def zero_point_reference(x, axis: int, bits: int, sf: ScaleFmt, group,
                         clip: tuple[np.ndarray, np.ndarray] | None = None,
                         rounding: str = "nearest_even") -> Reference:
    """Asymmetric unsigned ``bits``-bit integers with a scale and zero point per group (see the
    module docstring); scales and zero points are computed per group in Fractions, the zero
    point always to nearest even, ``x / scale`` in ``rounding``.  ``clip``: calibrated (lo, hi)
    per group (flat), narrowing the measured range (which keeps 0)."""
    x64 = np.asarray(x).astype(np.float64)
    gid, sshape = group_ids(x64.shape, axis, group)
    ng = math.prod(sshape)
    qmax = (1 << bits) - 1
    amax, bad = _group_stats(x64, gid, ng)
    flat = x64.reshape(-1)
    fin = np.where(np.isfinite(flat), flat, 0.0)
    lo = np.zeros(ng)
    hi = np.zeros(ng)
    np.minimum.at(lo, gid, fin)
    np.maximum.at(hi, gid, fin)
    if clip is not None:
        lo = np.minimum(np.maximum(lo, clip[0]), 0.0)
        hi = np.maximum(np.minimum(hi, clip[1]), 0.0)
    scale = np.full(ng, sf.min_positive)
    zp = np.zeros(ng, dtype=np.int64)
    clamped = np.zeros(ng, dtype=bool)
    for g in np.flatnonzero((hi > lo) & ~bad):
        q = (Fraction(float(hi[g])) - Fraction(float(lo[g]))) / qmax
        r = scale_unbounded(q, sf)
        clamped[g] = r < Fraction(sf.min_positive) or r > Fraction(sf.max)
        s = min(max(r, Fraction(sf.min_positive)), Fraction(sf.max))
        scale[g] = float(s)
        zp[g] = min(max(round(-Fraction(float(lo[g])) / s), 0), qmax)   # round(): half even
    scodes = scale_code(scale, sf)

    ebad = bad[gid]
    unit = scale[gid]
    z = zp[gid]
    num = np.where(ebad, 0.0, flat)
    # exact x / unit + zp outside [0, qmax]: z * unit and (qmax - z) * unit are exact
    clipped = _count(gid, (num < -z * unit) | (num > (qmax - z) * unit), ng)
    k = round_quotient(num, unit, lambda q: round_int(q, rounding),
                       lambda Q: float(round_int_exact(Q, rounding)))
    # beyond +-qmax the result clamps whatever z is; clipping first keeps int64 from overflowing
    k = np.clip(np.clip(k, -qmax, qmax).astype(np.int64) + z, 0, qmax)
    values = np.where(ebad, np.nan, (k - z) * unit)
    return Reference(k.astype(_code_dtype(bits)).reshape(x64.shape), scodes.reshape(sshape),
                     values.reshape(x64.shape), 1.0, bad.reshape(sshape),
                     clipped.reshape(sshape), clamped.reshape(sshape), amax.reshape(sshape),
                     zp.astype(_code_dtype(bits)).reshape(sshape))


# ---------------------------------------------------------------------------- named formats

MX_ELEMENTS = {"mxfp8_e4m3": E4M3, "mxfp8_e5m2": E5M2, "mxfp6_e3m2": E3M2, "mxfp6_e2m3": E2M3,
               "mxfp4": E2M1, "mxint8": MXINT8}


SCALE_SUFFIXES = {None: FP32, "fp16": FP16, "bf16": BF16, "e8m0": E8M0, "e4m3": E4M3_SCALE}
_INTQ_NAME = re.compile(r"^(u?)int(\d+)_(?:g(\d+)|(channel|tensor))(?:_(fp16|bf16|e8m0|e4m3))?$")


def reference(name: str, x, axis: int = -1, rounding: str = "nearest_even") -> Reference:
    """The reference for a numsim scaled format named as the README's scaled-formats section
    says (the named ones and the grammar ``bfpM_K``, ``intN_gK``/``_channel``/``_tensor``,
    ``uintN_...`` with a scale suffix, ``nf4_gK``), elements rounded in ``rounding``."""
    if name in MX_ELEMENTS:
        return mx_reference(x, axis, MX_ELEMENTS[name], "floor", rounding=rounding)
    for rule in ("ceil", "even", "rceil"):
        if name.endswith("_" + rule) and name[: -len(rule) - 1] in MX_ELEMENTS:
            return mx_reference(x, axis, MX_ELEMENTS[name[: -len(rule) - 1]], rule,
                                rounding=rounding)
    m = re.fullmatch(r"bfp(\d+)_(\d+)", name)
    if m:                                        # M-bit mantissas k / 2**(M-2), E8M0 floor
        bits = int(m.group(1))
        return mx_reference(x, axis, IntElem(bits, max(bits - 2, 0)), "floor", int(m.group(2)),
                            rounding=rounding)
    if name in ("nvfp4", "nvfp4_up"):
        return amax_reference(x, axis, E2M1, UE4M3_UP if name == "nvfp4_up" else UE4M3_RNE,
                              16, tensor_scale=True, rounding=rounding)
    m = _INTQ_NAME.fullmatch(name)
    if m:
        unsigned, bits, block, whole, suffix = m.groups()
        group = int(block) if block else whole
        if unsigned:
            return zero_point_reference(x, axis, int(bits), SCALE_SUFFIXES[suffix], group,
                                        rounding=rounding)
        return amax_reference(x, axis, IntElem(int(bits)), SCALE_SUFFIXES[suffix], group,
                              rounding=rounding)
    m = re.fullmatch(r"nf4_g(\d+)", name)
    if m:
        return amax_reference(x, axis, "nf4", FP32, int(m.group(1)), rounding=rounding)
    if name == "fp8_e4m3_1x128":
        return amax_reference(x, axis, E4M3, FP32, 128, rounding=rounding)
    if name == "fp8_e4m3_128x128":
        return amax_reference(x, axis, E4M3, FP32, (128, 128), rounding=rounding)
    raise KeyError(name)
