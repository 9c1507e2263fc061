"""Numba kernels for floating-point formats of any exponent/mantissa width.

One compiled kernel serves every float format: the format is a plain int64 descriptor (see
:data:`FIELDS`).  Codes are held as unsigned integers ``sign | exponent | mantissa``; the rounding
works on the IEEE binary64 bits of the input (or of the high word of an exact TwoSum pair), so it is
exact for every input.  Values are float64 throughout (see DESIGN.md, "Exactness rules").
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .rounding import (IEEE, NEAREST_EVEN, SATURATE, STOCHASTIC, TOWARD_NEGATIVE, jam,
                       overflow_to_inf, random_bits, round_away, sr_threshold)

# Descriptor layout: index of each field in the int64 array built by FloatFormat.descriptor().
FIELDS = ("mbits", "emin", "max_mag", "sign_bit", "nan_code", "inf_mag", "subnormals", "no_zero",
          "neg_zero", "fnuz_nan")
(MBITS, EMIN, MAX_MAG, SIGN_BIT, NAN_CODE, INF_MAG, SUBNORMALS, NO_ZERO, NEG_ZERO,
 FNUZ_NAN) = range(len(FIELDS))

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_MANT52 = np.uint64((1 << 52) - 1)
_HIDDEN = np.uint64(1 << 52)
_DBL_MAX = np.finfo(np.float64).max



@njit(cache=True, inline="always")
def _overflow_code(d, neg: bool, mode: np.int64, overflow: np.int64) -> np.int64:
    """Code for a value beyond the finite range (or an infinite input), per the overflow policy."""
    sign = d[SIGN_BIT] if neg else 0
    if neg and d[SIGN_BIT] == 0:                      # negative value in an unsigned format
        return d[NAN_CODE] if d[NAN_CODE] >= 0 else 0
    if overflow == SATURATE or not overflow_to_inf(mode, neg):
        return sign | d[MAX_MAG]
    if d[INF_MAG] >= 0:
        return sign | d[INF_MAG]
    if d[NAN_CODE] >= 0:
        return d[NAN_CODE]
    return sign | d[MAX_MAG]


@njit(cache=True, inline="always")
def round_pair(s: np.float64, e: np.float64, d, mode: np.int64, overflow: np.int64, key: np.uint64,
               index: np.int64, sr_bits: np.int64) -> np.int64:
    """Round the exact value ``s + e`` to a code.  ``e`` is 0 or the low word of a TwoSum pair
    (``|e| <= ulp(s)/2``).  Returns -1 for NaN in a format without NaN (the caller flags it)."""
    if s != s:
        return d[NAN_CODE]
    neg = s < 0.0 or (s == 0.0 and np.signbit(s))
    if np.isinf(s):
        if overflow == SATURATE:
            return _overflow_code(d, neg, mode, SATURATE)
        return _overflow_code(d, neg, NEAREST_EVEN, IEEE)
    if s == 0.0:
        if d[NO_ZERO]:
            return d[NAN_CODE]
        if neg and d[NEG_ZERO]:
            return d[SIGN_BIT]
        return 0
    mb = d[MBITS]
    bits = np.uint64(np.float64(abs(s)).view(np.uint64))
    ex = np.int64(bits >> np.uint64(52))
    sig = bits & _MANT52
    if ex == 0:
        ex = -1022
    else:
        ex -= 1023
        sig |= _HIDDEN
    big_e = max(ex, d[EMIN])
    shift = 52 - mb + (big_e - ex)
    sig, shift = jam(sig, shift)                         # far below half an ulp: keep a sticky bit
    ushift = np.uint64(shift)
    q = sig >> ushift
    rem = sig & ((_U1 << ushift) - _U1)
    tail = 0
    if e != 0.0:
        tail = 1 if (e < 0.0) == neg else -1
    code = ((big_e - d[EMIN]) << mb) + np.int64(q) - (d[NO_ZERO] << mb)
    if tail < 0 and rem == _U0:                          # just below a code: borrow one unit
        code -= 1
        rem = _U1 << ushift
    threshold = _U0
    rnd = _U0
    if mode == STOCHASTIC:
        threshold = sr_threshold(rem, shift, tail < 0, sr_bits)
        if shift < sr_bits and tail != 0:               # the tail's own bits lie inside sr_bits
            v = np.ldexp(abs(e), 52 - ex + sr_bits - shift)
            if tail > 0:
                threshold += np.uint64(np.floor(v))
            else:
                threshold -= np.uint64(max(np.ceil(v), 1.0))
        rnd = random_bits(key, index, sr_bits)
    if round_away(mode, neg, (code & 1) == 1, rem, _U1 << np.uint64(shift - 1), tail, threshold,
                  rnd):
        code += 1
    if code > d[MAX_MAG]:
        return _overflow_code(d, neg, mode, overflow)
    if code < 0:                                         # no-zero formats: below the smallest
        code = 0
    if code < (1 << mb) and d[SUBNORMALS] == 0 and d[NO_ZERO] == 0:
        code = 0                                         # flush subnormal results to zero
    if neg:
        if d[SIGN_BIT] == 0:                             # unsigned: only zero survives
            return _overflow_code(d, True, mode, overflow) if code != 0 or d[NO_ZERO] else 0
        if code != 0 or d[NEG_ZERO]:
            code |= d[SIGN_BIT]
    return code


@njit(cache=True, inline="always")
def decode_one(code: np.int64, d) -> np.float64:
    """Exact float64 value of one code (NaN for NaN codes; subnormals read as 0 when flushed)."""
    sign_bit = d[SIGN_BIT]
    mag = code & ~sign_bit if sign_bit else code
    neg = sign_bit != 0 and (code & sign_bit) != 0
    if d[FNUZ_NAN]:
        if code == sign_bit:
            return np.nan
    elif mag > d[MAX_MAG]:
        if mag == d[INF_MAG]:
            return -np.inf if neg else np.inf
        return np.nan
    mb = d[MBITS]
    if d[NO_ZERO]:
        v = np.ldexp(1.0, mag + d[EMIN])
    else:
        exp_field = mag >> mb
        frac = mag & ((1 << mb) - 1)
        if exp_field == 0:
            v = np.ldexp(np.float64(frac), d[EMIN] - mb) if d[SUBNORMALS] else 0.0
        else:
            v = np.ldexp(np.float64(frac + (1 << mb)), d[EMIN] + exp_field - 1 - mb)
    return -v if neg else v


@njit(cache=True, parallel=True)
def encode_kernel(x, lo, out, d, mode, overflow, key, offset, sr_bits):
    """Encode ``x`` (+ ``lo`` when it has the same length: exact pairs) into ``out``.

    ``offset`` is the flat index of ``x[0]`` in the whole array (for the random stream).
    Returns the number of NaNs the format could not hold."""
    bad = 0
    pairs = lo.shape[0] == x.shape[0]
    for i in prange(x.shape[0]):
        e = np.float64(lo[i]) if pairs else 0.0
        c = round_pair(np.float64(x[i]), e, d, mode, overflow, key, offset + i, sr_bits)
        if c < 0:
            bad += 1
            c = 0
        out[i] = c
    return bad


@njit(cache=True, parallel=True)
def quantize_kernel(x, out, d, mode, overflow, key, offset, sr_bits):
    """Fused decode(encode(x)) into a float array ``out``.  Returns the number of NaNs the format could not hold."""
    bad = 0
    for i in prange(x.shape[0]):
        c = round_pair(np.float64(x[i]), 0.0, d, mode, overflow, key, offset + i, sr_bits)
        if c < 0:
            bad += 1
            c = 0
        out[i] = decode_one(c, d)
    return bad


@njit(cache=True, parallel=True)
def decode_kernel(codes, out, d):
    """Decode codes into float64 values."""
    for i in prange(codes.shape[0]):
        out[i] = decode_one(np.int64(codes[i]), d)


@njit(cache=True, inline="always")
def _two_sum(a: np.float64, b: np.float64):
    """Knuth's TwoSum: s = fl(a + b) and the exact error e, s + e == a + b."""
    s = a + b
    if not np.isfinite(s):
        return s, 0.0
    bp = s - a
    ap = s - bp
    return s, (a - ap) + (b - bp)


@njit(cache=True, inline="always")
def _exact_zero_sign(u: np.float64, v: np.float64, s: np.float64, mode: np.int64) -> np.float64:
    """IEEE 754 sign of an exact zero sum u + v: +0, or -0 when rounding toward negative
    (x + x keeps the sign of zero operands)."""
    if s == 0.0 and mode == TOWARD_NEGATIVE and not (u == 0.0 and v == 0.0 and not np.signbit(u)
                                                     and not np.signbit(v)):
        return -0.0
    return s


# Arithmetic op ids for arith_kernel.
OP_ADD, OP_SUB, OP_MUL, OP_FMA = range(4)


@njit(cache=True, parallel=True)
def arith_kernel(op, a, b, c, da, db, dc, out, d, mode, overflow, key, offset, sr_bits):
    """``out = round(a op b [+ c])`` on codes of formats ``da``, ``db``, ``dc`` into format ``d``.

    The exact result is formed in float64 (products of <= 24-bit significands are exact) or as a
    TwoSum pair, then rounded once.  Returns the number of NaNs the format could not hold."""
    bad = 0
    for i in prange(a.shape[0]):
        x = decode_one(np.int64(a[i]), da)
        y = decode_one(np.int64(b[i]), db)
        e = 0.0
        if op == OP_MUL or op == OP_FMA:
            p = x * y
            if np.isinf(p) and np.isfinite(x) and np.isfinite(y):
                p = np.copysign(_DBL_MAX, p)              # beyond float64: beyond every format
            if op == OP_MUL:
                s = p
            else:
                z = decode_one(np.int64(c[i]), dc)
                s, e = _two_sum(p, z)
                s = _exact_zero_sign(p, z, s, mode)
        else:
            if op == OP_SUB:
                y = -y
            s, e = _two_sum(x, y)
            s = _exact_zero_sign(x, y, s, mode)
        code = round_pair(s, e, d, mode, overflow, key, offset + i, sr_bits)
        if code < 0:
            bad += 1
            code = 0
        out[i] = code
    return bad
