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

Groups are named from the definition (block index ``i // k`` along the axis, the channel
index, the tile index), per-group reductions use ``np.maximum.at``, and each formula is then
applied to every element with its group's scale: vectorised, but one spec step at a time.

Exactness.  Every input is read as float64 (exact for float16/32/64).  Power-of-two scaling
is exact.  Element rounding uses ml_dtypes' casts (RNE), fed float32 values: a float64 value is
first rounded to float32 *to odd* (truncate, then set the last bit when inexact), and rounding
to odd with p >= q + 2 bits followed by RNE to q bits equals one RNE (Boldo & Melquiond 2008),
so ml_dtypes' float32 casts give the correctly rounded result of any float64 value.  Quotients
``a / b`` (amax rule) are rounded *once* by :func:`round_quotient`: numpy's float64 division is
correctly rounded, so the exact quotient lies between the float64 neighbours of the computed
one; every rounding used here is monotone, so when both neighbours round to the same value the
exact quotient does too, and the few quotients where they do not are redone with Fractions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ScaleFmt:
    """A binary float scale format (``up``: round toward +inf instead of to nearest even)."""

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


def float_elem_exact(q: Fraction, fe: FloatElem) -> float:
    """RNE of a Fraction into ``fe``, saturating (the Fraction twin of float_elem_rne)."""
    v = round_fraction(q, fe.mbits, fe.emin)
    return float(min(max(v, Fraction(-fe.max)), Fraction(fe.max)))


def scale_round(q: np.ndarray, sf: ScaleFmt) -> np.ndarray:
    """Positive float64 values rounded once into the scale format and held at its range
    [smallest positive, max] (clamping before or after a monotone rounding is the same)."""
    q = np.clip(np.asarray(q, dtype=np.float64), 0.0, sf.max)
    if sf.name == "fp32":
        r = q.astype(np.float32).astype(np.float64)
    elif sf.name == "fp16":
        r = f32_round_to_odd(q).astype(np.float16).astype(np.float64)
    else:                                                  # ue4m3
        r = f32_round_to_odd(q).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
        if sf.up:                                          # RNE, then one step up if below
            below = r < q
            nxt = (r.astype(ml_dtypes.float8_e4m3fn).view(np.uint8) + 1).view(
                ml_dtypes.float8_e4m3fn).astype(np.float64)
            r = np.where(below, nxt, r)
    return np.maximum(r, sf.min_positive)


def scale_exact(q: Fraction, sf: ScaleFmt) -> float:
    """The Fraction twin of :func:`scale_round`."""
    v = round_fraction(q, sf.mbits, sf.emin, up=sf.up)
    return float(min(max(v, Fraction(sf.min_positive)), Fraction(sf.max)))


def scale_code(values: np.ndarray, sf: ScaleFmt) -> np.ndarray:
    """Bit patterns of (positive, representable) scale values."""
    v = np.asarray(values, dtype=np.float64)
    if sf.name == "fp32":
        return v.astype(np.float32).view(np.uint32)
    if sf.name == "fp16":
        return v.astype(np.float16).view(np.uint16)
    return v.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)


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


def mx_reference(x, axis: int, elem, rule: str = "floor", block: int = 32) -> Reference:
    """OCP MX (and BFP: an IntElem with the floor rule) per block of ``block`` along ``axis``."""
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
    if isinstance(elem, FloatElem):
        q = float_elem_rne(p, elem)
        codes = q.view(np.uint8).copy()
        ev = q.astype(np.float64)
    else:
        k = np.clip(np.rint(np.ldexp(p, elem.frac)), elem.qmin, elem.qmax).astype(np.int64)
        codes = (k % (1 << elem.bits)).astype(np.uint8)
        ev = np.ldexp(k.astype(np.float64), -elem.frac)
    values = np.where(ebad, np.nan, np.ldexp(ev, e_el))
    return Reference(codes.reshape(x64.shape), scodes.reshape(sshape), values.reshape(x64.shape),
                     1.0, bad.reshape(sshape), clipped.reshape(sshape), clamped.reshape(sshape),
                     amax.reshape(sshape))


# ---------------------------------------------------------------------------- amax rule


def _overflow_threshold(sf: ScaleFmt) -> tuple[float, bool]:
    """(t, inclusive): the scale rounds past max iff q > t (q >= t when inclusive).  Beyond max
    the next value of the unbounded format is max + ulp(max); RNE ties go to the even one."""
    if sf.up:
        return sf.max, False
    e = math.floor(math.log2(sf.max))
    ulp = 2.0 ** (e - sf.mbits)
    max_is_odd = int(sf.max / ulp) % 2 == 1
    return sf.max + ulp / 2, max_is_odd


def _scale_clamped(num, den, sf: ScaleFmt) -> np.ndarray:
    """Did the rounded scale leave [smallest positive, max] before being held there?  Below: RNE
    gives 0 when q <= min_positive / 2 (the tie goes to 0, the even code); rounding up never
    gives 0.  Above: q past the overflow threshold."""
    t, inclusive = _overflow_threshold(sf)
    over = round_quotient(num, den, lambda q: (q >= t) if inclusive else (q > t),
                          lambda Q: float((Q >= Fraction(t)) if inclusive else (Q > Fraction(t))))
    if sf.up:
        return over.astype(bool)
    h = sf.min_positive / 2
    under = round_quotient(num, den, lambda q: q > h,
                           lambda Q: float(Q > Fraction(h))) == 0
    return over.astype(bool) | (under & (np.asarray(num) > 0))


def _nf4_vec(q: np.ndarray) -> np.ndarray:
    """Nearest NF4 value of float64 q (saturating at +-1); a tie (q on the midpoint, exact in
    float64: the table values are float32 numbers a few binades apart) goes to the even code
    (neighbouring table entries have consecutive codes)."""
    t = np.array(NF4_TABLE)
    mids = (t[:-1] + t[1:]) / 2
    i = np.searchsorted(mids, q, side="left")              # mids[i-1] < q <= mids[i]
    i = np.minimum(i, len(t) - 1)
    tie = (i < len(mids)) & (q == mids[np.minimum(i, len(mids) - 1)])
    i = np.where(tie & (i % 2 == 1), i + 1, i)              # tie between codes i and i+1
    return i.astype(np.float64)                             # the code (monotone in q)


def _nf4_exact(q: Fraction) -> float:
    t = [Fraction(v) for v in NF4_TABLE]
    for i in range(len(t) - 1):
        mid = (t[i] + t[i + 1]) / 2
        if q < mid:
            return float(i)
        if q == mid:
            return float(i if i % 2 == 0 else i + 1)
    return float(len(t) - 1)


def amax_reference(x, axis: int, elem, sf: ScaleFmt, group, tensor_scale: bool = False,
                   clip: np.ndarray | None = None) -> Reference:
    """A scale ``amax / elem_max`` (over the tensor scale, if any) rounded once into ``sf`` per
    group, elements rounded once from the exact ``x / (scale * tensor_scale)``.  ``elem`` is a
    FloatElem, an IntElem (frac 0) or "nf4".  ``clip``: a calibrated range per group (flat)
    used where it is below amax."""
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
    if elem == "nf4":
        c = round_quotient(num, unit, _nf4_vec, _nf4_exact).astype(np.int64)
        codes = c.astype(np.uint8)
        ev = np.array(NF4_TABLE)[c]
    elif isinstance(elem, IntElem):
        k = round_quotient(num, unit,
                           lambda q: np.clip(np.rint(q), elem.qmin, elem.qmax),
                           lambda Q: float(min(max(round(Q), elem.qmin), elem.qmax)))
        k = k.astype(np.int64)
        codes = (k % (1 << elem.bits)).astype(np.uint8)
        ev = k.astype(np.float64)
    else:
        v = round_quotient(num, unit, lambda q: float_elem_rne(q, elem).astype(np.float64),
                           lambda Q: float_elem_exact(Q, elem))
        v = np.where(v == 0, np.copysign(0.0, num), v)       # a zero keeps x's sign
        codes = v.astype(elem.dtype).view(np.uint8).copy()
        ev = v
    values = np.where(ebad, np.nan, ev * unit)
    return Reference(codes.reshape(x64.shape), scodes.reshape(sshape), values.reshape(x64.shape),
                     s_t, bad.reshape(sshape), clipped.reshape(sshape), clamped.reshape(sshape),
                     amax.reshape(sshape))


# ---------------------------------------------------------------------------- zero point


def zero_point_reference(x, axis: int, bits: int, sf: ScaleFmt, group,
                         clip: tuple[np.ndarray, np.ndarray] | None = None) -> Reference:
    """Asymmetric unsigned ``bits``-bit integers with a scale and zero point per group (see the
    module docstring); scales and zero points are computed per group in Fractions.  ``clip``:
    calibrated (lo, hi) per group (flat), narrowing the measured range (which keeps 0)."""
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
        r = round_fraction(q, sf.mbits, sf.emin, up=sf.up)       # unbounded above
        clamped[g] = r == 0 or r > Fraction(sf.max)
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
    k = round_quotient(num, unit, np.rint, lambda Q: float(round(Q)))
    # beyond +-qmax the result clamps whatever z is; clipping first keeps int64 from overflowing
    k = np.clip(np.clip(k, -qmax, qmax).astype(np.int64) + z, 0, qmax)
    values = np.where(ebad, np.nan, (k - z) * unit)
    return Reference(k.astype(np.uint8).reshape(x64.shape), scodes.reshape(sshape),
                     values.reshape(x64.shape), 1.0, bad.reshape(sshape),
                     clipped.reshape(sshape), clamped.reshape(sshape), amax.reshape(sshape),
                     zp.astype(np.uint8).reshape(sshape))


# ---------------------------------------------------------------------------- named formats

MX_ELEMENTS = {"mxfp8_e4m3": E4M3, "mxfp8_e5m2": E5M2, "mxfp6_e3m2": E3M2, "mxfp6_e2m3": E2M3,
               "mxfp4": E2M1, "mxint8": MXINT8}


def reference(name: str, x, axis: int = -1) -> Reference:
    """The reference for a named numsim scaled format."""
    if name in MX_ELEMENTS:
        return mx_reference(x, axis, MX_ELEMENTS[name], "floor")
    for rule in ("ceil", "even", "rceil"):
        if name.endswith("_" + rule) and name[: -len(rule) - 1] in MX_ELEMENTS:
            return mx_reference(x, axis, MX_ELEMENTS[name[: -len(rule) - 1]], rule)
    if name == "bfp8_16":                        # 8-bit mantissas k/64, E8M0 floor, blocks of 16
        return mx_reference(x, axis, IntElem(8, 6), "floor", 16)
    if name in ("nvfp4", "nvfp4_up"):
        return amax_reference(x, axis, E2M1, UE4M3_UP if name == "nvfp4_up" else UE4M3_RNE,
                              16, tensor_scale=True)
    if name == "int4_g128":
        return amax_reference(x, axis, IntElem(4), FP32, 128)
    if name == "int4_g128_fp16":
        return amax_reference(x, axis, IntElem(4), FP16, 128)
    if name == "int8_channel":
        return amax_reference(x, axis, IntElem(8), FP32, "channel")
    if name == "int8_tensor":
        return amax_reference(x, axis, IntElem(8), FP32, "tensor")
    if name == "uint4_g128":
        return zero_point_reference(x, axis, 4, FP32, 128)
    if name == "uint4_g32_fp16":
        return zero_point_reference(x, axis, 4, FP16, 32)
    if name == "uint8_channel":
        return zero_point_reference(x, axis, 8, FP32, "channel")
    if name == "nf4_g64":
        return amax_reference(x, axis, "nf4", FP32, 64)
    if name == "fp8_e4m3_1x128":
        return amax_reference(x, axis, E4M3, FP32, 128)
    if name == "fp8_e4m3_128x128":
        return amax_reference(x, axis, E4M3, FP32, (128, 128))
    raise KeyError(name)
