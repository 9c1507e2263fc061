"""Numba kernels for two's-complement and unsigned integers and fixed point.

A format is an int64 descriptor (see :data:`FIELDS`); a code holds the ``bits``-wide two's-complement
pattern of the integer ``k`` and its value is ``k * 2**-frac_bits``.  Magnitudes are handled as
uint64 so that every product of two 32-bit operands, and every fused multiply-add, is exact.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .bitcast import f64_to_bits, significand_exponent
from .kernel_cache import njit
from .opcodes import OP_ADD, OP_FMA, OP_SUB

from .rounding import SATURATE, STOCHASTIC, jam, random_bits, round_away, sr_threshold

FIELDS = ("bits", "signed", "frac_bits", "qmin", "qmax")
BITS, SIGNED, FRAC, QMIN, QMAX = range(len(FIELDS))

_U0 = np.uint64(0)
_U1 = np.uint64(1)

ERR_NAN = -1          # round_real's return for NaN input
ERR_INF_WRAP = -2     # ... and for +-Inf under wrap


@njit
def _mask(d) -> np.uint64:
    return (_U1 << np.uint64(d[BITS])) - _U1


@njit
def finish(mag: np.uint64, huge: bool, neg: bool, d, overflow: np.int64) -> np.int64:
    """Code of the integer ``(-1)**neg * mag``, saturated or wrapped into the format.

    ``huge`` says the true magnitude is at least 2**64 and ``mag`` holds it modulo 2**64 (enough
    to wrap, since 2**64 is a multiple of 2**bits)."""
    if overflow == SATURATE:
        if neg:
            limit = np.uint64(-d[QMIN])
            if huge or mag > limit:
                mag = limit
        elif huge or mag > np.uint64(d[QMAX]):
            mag = np.uint64(d[QMAX])
    val = (_U0 - mag) if neg else mag
    return np.int64(val & _mask(d))


@njit
def shift_round(mag: np.uint64, shift: np.int64, neg: bool, mode: np.int64, key: np.uint64,
                index: np.int64, sr_bits: np.int64) -> np.uint64:
    """Round ``mag / 2**shift`` to an integer magnitude (``shift`` >= 0) in ``mode``."""
    if shift == 0:
        return mag
    mag, shift = jam(mag, shift)
    ushift = np.uint64(shift)
    q = mag >> ushift
    rem = mag & ((_U1 << ushift) - _U1)
    threshold = _U0
    rnd = _U0
    if mode == STOCHASTIC:
        threshold = sr_threshold(rem, shift, False, sr_bits)
        rnd = random_bits(key, index, sr_bits)
    if round_away(mode, neg, (q & _U1) == _U1, rem, _U1 << np.uint64(shift - 1), 0, threshold, rnd):
        q += _U1
    return q


@njit
def round_real(s: np.float64, d, mode: np.int64, overflow: np.int64, key: np.uint64,
               index: np.int64, sr_bits: np.int64) -> np.int64:
    """Code of the real ``s`` rounded to the format; negative returns are ERR_* codes."""
    if s != s:
        return ERR_NAN
    neg = s < 0.0
    if np.isinf(s):
        if overflow != SATURATE:
            return ERR_INF_WRAP
        return finish(_U0, True, neg, d, overflow)
    a = np.ldexp(abs(s), d[FRAC])
    if np.isinf(a):                            # |s| * 2**frac beyond float64: a multiple of 2**64
        return finish(_U0, True, neg, d, overflow)
    if a == 0.0:
        return 0
    sig, ex = significand_exponent(f64_to_bits(a))       # a = sig * 2**(ex - 52)
    shift = 52 - ex
    if shift > 0:
        return finish(shift_round(sig, shift, neg, mode, key, index, sr_bits), False, neg, d,
                      overflow)
    # an integer of 53 significant bits times 2**-shift
    huge = ex >= 64
    mag = sig << np.uint64(-shift) if -shift < 64 else _U0
    return finish(mag, huge, neg, d, overflow)


@njit(parallel=True)
def encode_kernel(x, out, d, mode, overflow, key, offset, sr_bits):
    """Encode reals ``x`` into codes ``out``.  Returns the counts of (NaN, Inf-under-wrap)."""
    n_nan = 0
    n_inf = 0
    for i in prange(x.shape[0]):
        c = round_real(np.float64(x[i]), d, mode, overflow, key, offset + i, sr_bits)
        if c < 0:
            n_nan += c == ERR_NAN
            n_inf += c == ERR_INF_WRAP
            c = 0
        out[i] = c
    return n_nan, n_inf


@njit(parallel=True)
def quantize_nearest_saturate_kernel(x, out, d):
    """Fused nearest-even, saturating quantize of reals into ``out`` (formats of <= 53 bits, so
    that qmin, qmax and every integer between are doubles): ``rint(x * 2**frac)`` clamped to
    [qmin, qmax], times ``2**-frac``; ``+ 0.0`` turns -0 into the integers' 0.  Scaling by a
    power of two is exact wherever it matters (a product below 2**-1022 rounds to 0 either way;
    an infinite one clamps).  Returns the number of NaN inputs (an error)."""
    up = np.ldexp(1.0, d[FRAC])
    down = np.ldexp(1.0, -d[FRAC])
    lo = np.float64(d[QMIN])
    hi = np.float64(d[QMAX])
    nans = 0
    for i in prange(x.shape[0]):
        v = np.float64(x[i])
        nans += v != v
        k = np.rint(v * up)
        k = lo if k < lo else k
        k = hi if k > hi else k
        out[i] = (k + 0.0) * down
    return nans


@njit(parallel=True)
def encode_int_kernel(x, out, d, overflow):
    """Encode int64 integers (exact, no rounding): ``k = x * 2**frac_bits``, then overflow."""
    f = np.uint64(d[FRAC])
    for i in prange(x.shape[0]):
        v = np.int64(x[i])
        neg = v < 0
        mag = (_U0 - np.uint64(v)) if neg else np.uint64(v)
        huge = f > _U0 and (mag >> (np.uint64(64) - f)) != _U0    # bits shifted past 2**64
        out[i] = finish(mag << f, huge, neg, d, overflow)


@njit
def to_int(code: np.int64, d) -> np.int64:
    """The integer ``k`` a code holds (sign-extended for signed formats)."""
    if d[SIGNED] and (code >> (d[BITS] - 1)) & 1:
        return code - (np.int64(1) << d[BITS])
    return code


@njit(parallel=True)
def decode_kernel(codes, out, d):
    """Decode codes into float64 values ``k * 2**-frac_bits`` (exact)."""
    for i in prange(codes.shape[0]):
        out[i] = np.ldexp(np.float64(to_int(np.int64(codes[i]), d)), -d[FRAC])




@njit
def _signed_mag(k: np.int64):
    return k < 0, (_U0 - np.uint64(k)) if k < 0 else np.uint64(k)


@njit(parallel=True)
def arith_kernel(op, a, b, c, d, out, mode, overflow, key, offset, sr_bits):
    """``out = round(a op b [+ c])`` for codes of one integer/fixed-point format.

    Sums are exact in int64; a product carries 2*frac fraction bits and is rounded once to frac
    bits; the FMA adds ``c`` (shifted to 2*frac bits) to the exact product before that rounding.
    """
    frac = d[FRAC]
    for i in prange(a.shape[0]):
        x = to_int(np.int64(a[i]), d)
        y = to_int(np.int64(b[i]), d)
        if op == OP_ADD or op == OP_SUB:
            r = x + y if op == OP_ADD else x - y
            neg, mag = _signed_mag(r)
            out[i] = finish(mag, False, neg, d, overflow)
            continue
        nx, mx = _signed_mag(x)
        ny, my = _signed_mag(y)
        neg = nx != ny
        mag = mx * my
        huge = False
        if op == OP_FMA:
            nz, mz = _signed_mag(to_int(np.int64(c[i]), d))
            mz = mz << np.uint64(frac)
            if mag == _U0:
                neg = nz
            if nz == neg:
                total = mag + mz
                huge = total < mag                      # carried past 2**64
                mag = total
            elif mag >= mz:
                mag = mag - mz
            else:
                mag = mz - mag
                neg = nz
        if mag == _U0:
            neg = False
        q = shift_round(mag, frac, neg, mode, key, offset + i, sr_bits)
        out[i] = finish(q, huge, neg, d, overflow)
