"""Numba kernels for floating-point formats of any exponent/mantissa width.

One compiled kernel serves every float format: the format is a plain int64 descriptor (see
:data:`FIELDS`).  Codes are held as unsigned integers ``sign | exponent | mantissa``; the rounding
works on the IEEE binary64 bits of the input (or of the high word of an exact TwoSum pair), so it is
exact for every input.  Values are float64 throughout (see DESIGN.md, "Exactness rules").
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .bitcast import bits_to_f64, f64_to_bits, significand_exponent
from .kernel_cache import njit
from .opcodes import OP_FMA, OP_MUL, OP_SUB
from .rounding import (MODES as MODE_NAMES, NEAREST_AWAY, NEAREST_EVEN, SATURATE, STOCHASTIC,
                       TOWARD_NEGATIVE, TOWARD_POSITIVE, jam,
                       overflow_to_inf, random_bits, round_away, sr_threshold)

# Descriptor layout: index of each field in the int64 array built by FloatFormat.descriptor().
FIELDS = ("mbits", "emin", "max_mag", "sign_bit", "nan_code", "inf_mag", "subnormals", "no_zero",
          "neg_zero", "fnuz_nan")
(MBITS, EMIN, MAX_MAG, SIGN_BIT, NAN_CODE, INF_MAG, SUBNORMALS, NO_ZERO, NEG_ZERO,
 FNUZ_NAN) = range(len(FIELDS))

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_MANT52 = np.uint64((1 << 52) - 1)
_IMPLICIT = np.uint64(1 << 52)
_EXP_BITS = np.uint64(0x7FF << 52)
_MAG_BITS = np.uint64((1 << 63) - 1)

# Special results, precomputed per call by special_codes() (they depend on the mode and policy).
(SP_NAN, SP_INF_POS, SP_INF_NEG, SP_OVF_POS, SP_OVF_NEG, SP_ZERO_POS, SP_ZERO_NEG,
 SP_UNSIGNED_NEG, SP_MAX_VALUE) = range(9)          # SP_MAX_VALUE: only in special_values()


def _overflow_result(d: tuple, neg: bool, to_inf: bool) -> int:
    """Code for a value beyond the finite range: +-Inf where it exists and ``to_inf``, else NaN
    where that exists, else +-max (negative values in unsigned formats: NaN, or 0)."""
    if neg and d[SIGN_BIT] == 0:
        return d[NAN_CODE] if d[NAN_CODE] >= 0 else 0
    sign = d[SIGN_BIT] if neg else 0
    if to_inf and d[INF_MAG] >= 0:
        return sign | d[INF_MAG]
    if to_inf and d[NAN_CODE] >= 0:
        return d[NAN_CODE]
    return sign | d[MAX_MAG]


def special_codes(d: tuple, mode: int, overflow: int) -> tuple:
    """The codes of the special cases (field order SP_*) for descriptor ``d``, a mode and an
    overflow policy.  -1 marks NaN in a format without NaN (the kernels count it)."""
    def ovf(neg: bool) -> int:
        return _overflow_result(d, neg, overflow != SATURATE and overflow_to_inf(mode, neg))

    def inf(neg: bool) -> int:                     # an infinite input is exact, not an overflow
        return _overflow_result(d, neg, overflow != SATURATE)

    zero_neg = d[SIGN_BIT] if d[NEG_ZERO] else 0
    return (d[NAN_CODE], inf(False), inf(True), ovf(False), ovf(True),
            d[NAN_CODE] if d[NO_ZERO] else 0, d[NAN_CODE] if d[NO_ZERO] else zero_neg,
            _overflow_result(d, True, True))


@njit(inline="always")
def pow2(k: np.int64) -> np.float64:
    """2**k for a normal-range exponent (-1022 <= k <= 1023), built from its bits."""
    return bits_to_f64((k + 1023) << 52)


@njit(inline="always")
def round_pair(s: np.float64, e: np.float64, d, sp, mode: np.int64, key: np.uint64,
               index: np.int64, sr_bits: np.int64) -> np.int64:
    """Round the exact value ``s + e`` to a code.  ``e`` is 0 or the low word of a TwoSum pair
    (``|e| <= ulp(s)/2``); ``sp`` holds the special results (see :func:`special_codes`).

    The data-dependent logic is written with selects, not branches, so the loops vectorize."""
    bits = f64_to_bits(s)
    neg = (bits >> np.uint64(63)) != _U0
    exf = np.int64((bits >> np.uint64(52)) & np.uint64(0x7FF))
    mant = bits & _MANT52
    sig, ex = significand_exponent(bits)                 # |s| = sig * 2**(ex - 52)
    mb = d[MBITS]
    big_e = max(ex, d[EMIN])                             # binade of the result
    shift = 52 - mb + (big_e - ex)                       # bits of sig below the result's ulp
    sig, sh = jam(sig, shift)                            # keep <= 62 bits, the rest as sticky
    ush = np.uint64(sh)
    q = sig >> ush
    rem = sig & ((_U1 << ush) - _U1)
    ebits = f64_to_bits(e)
    has_tail = (ebits << _U1) != _U0
    tail_up = has_tail & (((ebits >> np.uint64(63)) != _U0) == neg)   # tail grows |s + e|
    tail_down = has_tail & (not tail_up)
    tail = np.int64(tail_up) - np.int64(tail_down)
    borrow = tail_down & (rem == _U0)                    # just below a code: one unit less
    rem |= np.uint64(borrow) << ush
    code = ((big_e - d[EMIN]) << mb) + np.int64(q) - (d[NO_ZERO] << mb) - np.int64(borrow)
    threshold = _U0
    rnd = _U0
    if mode == STOCHASTIC:
        threshold = sr_threshold(rem, sh, tail_down, sr_bits)
        if tail != 0 and sh < sr_bits:                   # the tail's own bits lie inside sr_bits
            # the tail in units of the result's ulp; below a power of two (borrow) the value lies
            # in the binade underneath, whose ulp is half as large
            unit_ex = ex - np.int64(borrow & (mant == _U0) & (ex > d[EMIN]))
            v = abs(e) * pow2(52 - unit_ex + sr_bits - sh)   # < 2**(sr_bits - sh): exact
            if tail > 0:
                threshold += np.uint64(np.floor(v))
            else:
                threshold -= np.uint64(max(np.ceil(v), 1.0))
        rnd = random_bits(key, index, sr_bits)
    code += np.int64(round_away(mode, neg, (code & 1) == 1, rem, _U1 << np.uint64(sh - 1), tail,
                                threshold, rnd))
    sign = d[SIGN_BIT] * np.int64(neg)
    # below the smallest normal: clamp (no-zero formats), flush (no subnormals), signed zero
    small = max(code, 0)
    if d[SUBNORMALS] == 0 and d[NO_ZERO] == 0:
        small = 0
    small_is_zero = (small == 0) & (d[NO_ZERO] == 0)
    small_code = (d[SIGN_BIT] if d[NEG_ZERO] else 0) * np.int64(neg) if small_is_zero \
        else small | sign
    res = small_code if code < (1 << mb) else code | sign
    is_zero_result = (code < (1 << mb)) & small_is_zero
    if neg & (d[SIGN_BIT] == 0) & (not is_zero_result):
        res = sp[SP_UNSIGNED_NEG]
    if code > d[MAX_MAG]:
        res = sp[SP_OVF_NEG] if neg else sp[SP_OVF_POS]
    if (bits << _U1) == _U0:
        res = sp[SP_ZERO_NEG] if neg else sp[SP_ZERO_POS]
    if exf == 0x7FF:
        res = sp[SP_NAN] if mant != _U0 else (sp[SP_INF_NEG] if neg else sp[SP_INF_POS])
    return res


@njit(inline="always")
def decode_one(code: np.int64, d) -> np.float64:
    """Exact float64 value of one code (NaN for NaN codes; subnormals read as 0 when flushed).
    Branch-free on the data, like :func:`round_pair`."""
    sign_bit = d[SIGN_BIT]
    mag = code & ~sign_bit
    mb = d[MBITS]
    exp_field = mag >> mb
    frac = mag & ((1 << mb) - 1)
    if d[NO_ZERO]:
        v = pow2(mag + d[EMIN])
    else:
        hidden = np.int64(exp_field != 0)
        scale = pow2(d[EMIN] + max(exp_field, 1) - 1 - mb)
        v = np.float64(frac + (hidden << mb)) * scale
        if d[SUBNORMALS] == 0:
            v = v if hidden else 0.0
    if mag > d[MAX_MAG]:
        v = np.inf if mag == d[INF_MAG] else np.nan
    if d[FNUZ_NAN] and code == sign_bit:
        v = np.nan
    return -v if (code & sign_bit) != 0 else v


def _make_round_loop(mode: int, to_value: bool):
    """A parallel loop rounding ``x`` (+ ``lo``, the low words of exact pairs, or None) into
    codes, or into their values when ``to_value``; ``offset`` is the flat index of ``x[0]`` in
    the whole array (for the random stream).  It returns the number of NaNs the format could not
    hold.  ``mode`` and ``to_value`` are compile-time constants: each loop carries only its own
    mode's code (about twice as fast), and only the loops a program uses get compiled."""

    @njit(parallel=True)
    def round_loop(x, lo, out, d, sp, key, offset, sr_bits):
        bad = 0
        for i in prange(x.shape[0]):
            e = 0.0 if lo is None else np.float64(lo[i])  # None: compiled without tail logic
            c = round_pair(np.float64(x[i]), e, d, sp, mode, key, offset + i, sr_bits)
            bad += c < 0
            if to_value:
                out[i] = decode_one(max(c, 0), d)
            else:
                out[i] = max(c, 0)
        return bad

    return round_loop


_ENCODE_LOOPS = tuple(_make_round_loop(m, False) for m in range(len(MODE_NAMES)))
_QUANTIZE_LOOPS = tuple(_make_round_loop(m, True) for m in range(len(MODE_NAMES)))


def encode_kernel(x, lo, out, d: tuple, sp: tuple, mode: int, key: np.uint64, offset: int,
                  sr_bits: int) -> int:
    """Encode ``x`` (+ ``lo``: low words of exact pairs, or None) into codes ``out``.
    Returns the number of NaNs the format could not hold."""
    return _ENCODE_LOOPS[mode](x, lo, out, d, sp, key, offset, sr_bits)


def quantize_kernel(x, out, d: tuple, sp: tuple, mode: int, key: np.uint64, offset: int,
                    sr_bits: int) -> int:
    """Fused decode(encode(x)) into a float array ``out``.  Returns the count of unholdable NaNs."""
    return _QUANTIZE_LOOPS[mode](x, None, out, d, sp, key, offset, sr_bits)


def special_values(d: tuple, mode: int, overflow: int) -> tuple:
    """The values of :func:`special_codes` (NaN for -1), followed by the largest finite value."""
    codes = special_codes(d, mode, overflow)
    values = tuple(float(decode_one(c, d)) if c >= 0 else np.nan for c in codes)
    return values + (float(decode_one(d[MAX_MAG], d)),)


@njit(inline="always")
def nearest_even_params(d, spv):
    """The descriptor fields and special values :func:`quantize_nearest_even_value` reads, as a
    tuple of scalars (the three magic-constant factors precomputed).  Kernels take it before
    their loops: Numba reloads array elements inside a loop that stores to other arrays (it cannot
    rule out aliasing), which stops the loop vectorising."""
    emin, mbits = d[EMIN], d[MBITS]
    return (1.5 * pow2(52 - mbits), 1.5 * pow2(emin - mbits + 52), 1.5 * pow2(1022), pow2(emin),
            d[SUBNORMALS] == 0, d[NEG_ZERO] != 0, d[SIGN_BIT] == 0,
            spv[SP_UNSIGNED_NEG], spv[SP_MAX_VALUE], spv[SP_OVF_NEG], spv[SP_OVF_POS])


@njit(inline="always")
def quantize_nearest_even_value(x: np.float64, q) -> np.float64:
    """Round ``x`` to nearest-even in the value domain, for formats with ``mbits >= 1``; ``q``
    from :func:`nearest_even_params`.

    With ``quantum`` the ulp of the result's binade, ``(x + C) - C`` for
    ``C = 1.5 * 2**52 * quantum`` rounds ``x`` exactly once, ties to even, to a multiple of the
    quantum: the sum stays in the binade whose float64 ulp is the quantum, and float64 addition is
    itself round-to-nearest-even.  C is ``2**e`` (x's exponent bits alone) times
    ``1.5 * 2**(52 - mbits)``, raised to the subnormal quantum's and capped at ``1.5 * 2**1022``
    (|x| >= 2**970 overflows every format; Inf and NaN inputs take the cap).  Gives
    ``decode(round_pair(x))`` in far fewer instructions, and branch-free.  (With ``mbits == 0``
    "even" would be the significand, not the code.)
    """
    (c_per_binade, c_min, c_max, smallest_normal, flush, keep_neg_zero, unsigned, unsigned_neg,
     max_value, ovf_neg, ovf_pos) = q
    bits = f64_to_bits(x)
    neg = (bits >> np.uint64(63)) != _U0
    c = bits_to_f64(bits & _EXP_BITS) * c_per_binade
    c = c_min if c < c_min else c                       # selects, not min/max: they vectorise
    c = c_max if c > c_max else c
    y = abs((x + c) - c)
    y = 0.0 if flush & (y < smallest_normal) else y     # flush subnormal results
    res = -y if neg & (keep_neg_zero | (y != 0.0)) else y
    res = unsigned_neg if neg & unsigned & (y != 0.0) else res
    # also +-Inf inputs: in this mode both give the same; NaN inputs stay NaN (the caller
    # rejects them where the format has no NaN)
    return (ovf_neg if neg else ovf_pos) if y > max_value else res


def bitwise_rounds(d, mode: int) -> bool:
    """Whether :func:`quantize_bitwise_value` serves this format and mode: every mode but
    nearest-even (which has its own path), formats with a zero."""
    return mode != NEAREST_EVEN and d[NO_ZERO] == 0


@njit(inline="always")
def bitwise_params(d, spv, mode, sr_bits):
    """The descriptor fields, mode flags and special values :func:`quantize_bitwise_value`
    reads, as a tuple of scalars (see :func:`nearest_even_params` for why)."""
    emin, mbits = d[EMIN], d[MBITS]
    return (mbits, emin, mode == TOWARD_POSITIVE, mode == TOWARD_NEGATIVE, mode == NEAREST_AWAY,
            mode == STOCHASTIC, np.int64(sr_bits), pow2(emin - mbits), pow2(emin),
            d[SUBNORMALS] == 0, d[NEG_ZERO] != 0, d[SIGN_BIT] == 0, spv[SP_UNSIGNED_NEG],
            spv[SP_MAX_VALUE], spv[SP_OVF_NEG], spv[SP_OVF_POS], spv[SP_INF_NEG],
            spv[SP_INF_POS], spv[SP_NAN])


def bitwise_rest(d, mode: int, sr_bits: int) -> bool:
    """Whether :func:`quantize_bitwise_value` takes ``rest`` True for this format and mode:
    stochastic rounding whose ``sr_bits`` reach below float64's bits of a normal value (fp32
    with more than 29)."""
    return mode == STOCHASTIC and 52 - d[MBITS] < sr_bits


@njit(inline="always")
def bitwise_toward_negative(q) -> bool:
    """Whether the parameters ``q`` of :func:`bitwise_params` round toward negative."""
    return q[3]


@njit(inline="always")
def bitwise_random_bits(q, key: np.uint64, index: np.int64) -> np.uint64:
    """The random bits :func:`quantize_bitwise_value` takes for element ``index``: those of
    :func:`formats.rounding.random_bits` in stochastic rounding, else 0."""
    return random_bits(key, index, q[6]) if q[5] else _U0


@njit(inline="always")
def quantize_bitwise_value(x: np.float64, r: np.float64, q, rnd: np.uint64, rest):
    """Round the exact value ``x + r * ulp(x)`` into the format in a mode other than
    nearest-even, branch-free, on the binary64 bits of ``x``: truncate the bits below the
    format's ulp, then step one ulp away from zero where the mode says (toward +-Inf: any
    discarded bit; nearest-away: the half bit; stochastic: ``rnd`` below
    ``floor(f * 2**sr_bits)``, ``f`` the discarded fraction).  ``x`` is the exact value
    truncated toward zero to float64, ``r`` in [0, 1) the rest in units of x's float64 ulp,
    rounded down (0 for a float64 input; nonzero exactly when there is a rest).  ``rest``
    (:func:`bitwise_rest`; a compile-time constant, the other case costs a third of the speed)
    says whether stochastic rounding may need bits below x's: those of ``r``.
    Returns (value, beyond): ``beyond`` when a finite ``x`` rounds past the largest finite
    value (the value is then the overflow result).  ``q`` from :func:`bitwise_params`; see
    :func:`bitwise_rounds` for the formats and modes it serves.  The same results as
    ``round_pair`` of the exact value, then ``decode_one``."""
    (mbits, emin, up_pos, up_neg, ties_away, stochastic, sr_bits, min_sub, smallest_normal,
     flush, keep_neg_zero, unsigned, unsigned_neg, max_value, ovf_neg, ovf_pos, inf_neg, inf_pos,
     nan) = q
    bits = f64_to_bits(x)
    neg = (bits >> np.uint64(63)) != _U0
    mag = bits & _MAG_BITS
    exf = np.int64(mag >> np.uint64(52))
    ex = (exf if exf > 1 else 1) - 1023                  # selects: they vectorise
    below = emin - ex
    sh = 52 - mbits + (below if below > 0 else 0)        # bits of x below the format's ulp
    # below the smallest subnormal (sh > 52) the result is 0 or that subnormal: all of the
    # significand is discarded
    tiny = sh > 52
    shc = np.uint64(52 if tiny else sh)
    sig = (mag & _MANT52) | (np.uint64(exf != 0) << np.uint64(52))
    rem = sig if tiny else mag & ((_U1 << shc) - _U1)   # the discarded bits, 2**sh per ulp
    half = sh - 1
    half_bit = ((rem >> np.uint64(half if half < 63 else 63)) & _U1) != _U0
    # floor(f * 2**sr_bits): the top sr_bits discarded bits, then those of r below them
    drop = sh - sr_bits                                 # >= 0 unless rest
    threshold = rem >> np.uint64(0 if drop < 0 else drop if drop < 63 else 63)
    if rest:
        lift = -drop if drop < 0 else 0                 # > 0 only where sh < 52: no tiny
        rbits = f64_to_bits(r)                          # r in [0, 1): floor(r * 2**lift) from
        rsh = 1075 - np.int64(rbits >> np.uint64(52)) - lift    # its bits (0 if subnormal)
        threshold = (threshold << np.uint64(lift)) \
            + (((rbits & _MANT52) | _IMPLICIT) >> np.uint64(rsh if rsh < 63 else 63))
    up = ((((rem != _U0) | (r != 0.0)) & (up_neg if neg else up_pos)) | (ties_away & half_bit)
          | (stochastic & (rnd < threshold)))
    y = bits_to_f64((mag - rem) + (np.uint64(up) << shc))
    y = (min_sub if up else 0.0) if tiny else y
    beyond = (y > max_value) & (exf != 0x7FF)
    y = 0.0 if flush & (y < smallest_normal) else y     # flush subnormal results
    res = -y if neg & (keep_neg_zero | (y != 0.0)) else y
    res = unsigned_neg if neg & unsigned & (y != 0.0) else res
    res = (ovf_neg if neg else ovf_pos) if beyond else res
    res = (inf_neg if neg else inf_pos) if mag == _EXP_BITS else res
    return (nan if mag > _EXP_BITS else res), beyond


def _make_quantize_bitwise(rest: bool):
    """The quantize kernel of :func:`quantize_bitwise_value`, compiled apart for each
    ``rest`` (:func:`bitwise_rest`)."""
    @njit(parallel=True)
    def quantize_bitwise_kernel(x, out, d, spv, mode, key, offset, sr_bits):
        """Fused quantize of ``x`` into ``out`` by :func:`quantize_bitwise_value` (the formats
        and modes of :func:`bitwise_rounds`); ``offset`` is the flat index of ``x[0]`` (for
        the random stream).  Returns the number of NaN inputs (an error only for formats
        without NaN)."""
        nans = 0
        q = bitwise_params(d, spv, mode, sr_bits)
        for i in prange(x.shape[0]):
            v = np.float64(x[i])
            nans += v != v
            out[i] = quantize_bitwise_value(v, 0.0, q, bitwise_random_bits(q, key, offset + i),
                                            rest)[0]
        return nans
    return quantize_bitwise_kernel


quantize_bitwise_kernel, quantize_bitwise_rest_kernel = (
    _make_quantize_bitwise(rest) for rest in (False, True))


@njit(inline="always")
def quantize_nearest_even_one(x: np.float64, d, spv) -> np.float64:
    """:func:`quantize_nearest_even_value` with the descriptor ``d`` and ``spv`` from
    :func:`special_values`."""
    return quantize_nearest_even_value(x, nearest_even_params(d, spv))


@njit(parallel=True)
def quantize_nearest_even_kernel(x, out, d, spv):
    """Fused nearest-even quantize of ``x`` into ``out`` (formats with ``mbits >= 1``).
    Returns the number of NaN inputs (an error only for formats without NaN)."""
    nans = 0
    q = nearest_even_params(d, spv)
    for i in prange(x.shape[0]):
        v = np.float64(x[i])
        nans += v != v
        out[i] = quantize_nearest_even_value(v, q)
    return nans


@njit(parallel=True)
def decode_kernel(codes, out, d):
    """Decode codes into float64 values."""
    for i in prange(codes.shape[0]):
        out[i] = decode_one(np.int64(codes[i]), d)


@njit
def two_sum(a: np.float64, b: np.float64):
    """Knuth's TwoSum: s = fl(a + b) and the exact error e, s + e == a + b."""
    s = a + b
    if not np.isfinite(s):
        return s, 0.0
    bp = s - a
    ap = s - bp
    return s, (a - ap) + (b - bp)


@njit(inline="always")
def two_product(a: np.float64, b: np.float64):
    """Dekker's TwoProduct: p = fl(a * b) and the exact error e, p + e == a * b (operands split
    into 26-bit halves by Veltkamp's 2**27 + 1; exact for |a|, |b| < 2**900 and products far
    above the underflow threshold)."""
    p = a * b
    t = 134217729.0 * a
    ah = t - (t - a)
    al = a - ah
    t = 134217729.0 * b
    bh = t - (t - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@njit
def exact_zero_sign(u: np.float64, v: np.float64, s: np.float64, mode: np.int64) -> np.float64:
    """IEEE 754 sign of an exact zero sum u + v: +0, or -0 when rounding toward negative
    (x + x keeps the sign of zero operands)."""
    if s == 0.0 and mode == TOWARD_NEGATIVE and not (u == 0.0 and v == 0.0 and not np.signbit(u)
                                                     and not np.signbit(v)):
        return -0.0
    return s


@njit(parallel=True)
def arith_kernel(op, a, b, c, da, db, dc, out, d, sp, mode, key, offset, sr_bits):
    """``out = round(a op b [+ c])`` on codes of formats ``da``, ``db``, ``dc`` into format ``d``.

    The exact result is formed in float64 (products of <= 24-bit significands are exact) or as a
    TwoSum pair, then rounded once.  Returns the number of NaNs the format could not hold."""
    bad = 0
    for i in prange(a.shape[0]):
        x = decode_one(np.int64(a[i]), da)
        y = decode_one(np.int64(b[i]), db)
        e = 0.0
        if op == OP_MUL or op == OP_FMA:
            p = x * y                           # exact: formats lie within 2**-537..2**512
            if op == OP_MUL:
                s = p
            else:
                z = decode_one(np.int64(c[i]), dc)
                s, e = two_sum(p, z)
                s = exact_zero_sign(p, z, s, mode)
        else:
            if op == OP_SUB:
                y = -y
            s, e = two_sum(x, y)
            s = exact_zero_sign(x, y, s, mode)
        code = round_pair(s, e, d, sp, mode, key, offset + i, sr_bits)
        bad += code < 0
        out[i] = max(code, 0)
    return bad
