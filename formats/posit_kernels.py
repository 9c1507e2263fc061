"""Numba kernels for posits of n = 2..32 bits with es = 0..4 exponent bits (Posit Standard 2022).

A code is the n-bit pattern as an unsigned integer; a negative value is the two's complement of
its magnitude's code, 0 is all zeros and NaR is the sign bit alone.  Inside the kernels a nonzero
value is *unpacked* as ``(neg, E, sig)`` with ``|x| = sig * 2**(E - 63)`` and the top bit of the
uint64 ``sig`` set.  Exact results are formed in that shape: products of two posit significands
(at most 30 bits each) are exact in 64 bits, sums are aligned in 128 bits (two words) and then cut
to 64 bits with the rest jammed into the lowest bit.  The rounding point of an n <= 32 posit lies
at most 29 bits below the leading bit, so the jammed bit never changes a rounding decision, not even
a 32-bit stochastic threshold.

Rounding is defined on the bit string, as the standard does: the exact value's infinite posit
string (regime, exponent, fraction) is cut after n - 1 bits; what falls off is the remainder.
Magnitudes beyond maxpos saturate to maxpos and nonzero magnitudes below minpos hold at minpos, in
every mode.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .bitcast import bits_to_f64, clz64, f64_to_bits, significand_exponent
from .kernel_cache import njit
from .opcodes import OP_FMA, OP_MUL, OP_SUB
from .rounding import MODES as MODE_NAMES, STOCHASTIC, random_bits, round_away, sr_threshold

FIELDS = ("nbits", "es")
NBITS, ES = range(len(FIELDS))

ZERO, FINITE, NAR = range(3)       # kinds of an unpacked value

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_TOP = np.uint64(1 << 63)


@njit(inline="always")
def emax(d) -> np.int64:
    """log2(maxpos) = (n - 2) * 2**es; minpos is 2**-emax."""
    return (d[NBITS] - 2) << d[ES]


@njit(inline="always")
def _shl(x: np.uint64, s: np.int64) -> np.uint64:
    """x << s for any s >= 0 (0 from 64 on; a plain shift by 64 is undefined)."""
    return (x << np.uint64(min(s, 63))) & (_U0 - np.uint64(s < 64))


@njit(inline="always")
def _shr(x: np.uint64, s: np.int64) -> np.uint64:
    """x >> s for any s >= 0 (0 from 64 on)."""
    return (x >> np.uint64(min(s, 63))) & (_U0 - np.uint64(s < 64))


@njit(inline="always")
def unpack(code: np.int64, d):
    """(kind, neg, E, sig) of a code; E and sig are meaningful for kind FINITE only."""
    n = d[NBITS]
    es = d[ES]
    ucode = np.uint64(code)
    neg = ((ucode >> np.uint64(n - 1)) & _U1) != _U0
    mask = (_U1 << np.uint64(n)) - _U1
    mag = ((_U0 - ucode) & mask) if neg else ucode
    body = mag << np.uint64(65 - n)                 # the n - 1 bits after the sign, at the top
    ones = (body >> np.uint64(63)) != _U0
    run = clz64(~body if ones else body)            # regime run length
    k = run - 1 if ones else -run
    rest = _shl(body, run + 1)                      # exponent and fraction bits, at the top
    e = np.int64(((rest >> _U1) >> np.uint64(63 - es)) & ((_U1 << np.uint64(es)) - _U1))
    sig = _TOP | ((rest << np.uint64(es)) >> _U1)
    kind = FINITE
    if mag == _U0:
        kind = ZERO
    if ucode == (_U1 << np.uint64(n - 1)):
        kind = NAR
    return kind, neg, (k << es) + e, sig


@njit(inline="always")
def decode_one(code: np.int64, d) -> np.float64:
    """Exact float64 value of a code (NaN for NaR); branch-free."""
    kind, neg, big_e, sig = unpack(code, d)
    # 1.fraction as binary64 bits: the <= 29 fraction bits fit in binary64's 52
    bits = (np.uint64(big_e + 1023) << np.uint64(52)) | ((sig << _U1) >> np.uint64(12))
    v = bits_to_f64(bits | (np.uint64(neg) << np.uint64(63)))
    if kind == ZERO:
        v = 0.0
    if kind == NAR:
        v = np.nan
    return v


@njit(inline="always")
def round_unpacked(neg: bool, big_e: np.int64, sig: np.uint64, d, mode: np.int64,
                   key: np.uint64, index: np.int64, sr_bits: np.int64) -> np.int64:
    """Code of the nonzero value ``(-1)**neg * sig * 2**(big_e - 63)`` (top bit of ``sig`` set;
    its lowest bit may be a sticky bit).  Branch-free on the data."""
    n = d[NBITS]
    es = d[ES]
    top = emax(d)
    e_in = min(max(big_e, -top), top - 1)          # in range; the ends are patched below
    k = e_in >> es
    e = np.uint64(e_in & ((1 << es) - 1))
    pos = k >= 0
    run_len = k + 2 if pos else 1 - k              # regime bits, terminator included
    regime = np.uint64((1 << max(k + 2, 1)) - 2) if pos else _U1
    avail = max(n - 1 - run_len, 0)                # exponent + fraction bits kept, 0..n-3
    frac = sig << _U1                              # hidden bit dropped
    tail = ((e << np.uint64(63 - es)) << _U1) | (frac >> np.uint64(es))
    tail |= np.uint64((frac & ((_U1 << np.uint64(es)) - _U1)) != _U0)   # jam what fell off
    kept = (tail >> _U1) >> np.uint64(63 - avail)
    rem = tail << np.uint64(avail)                 # remainder as a 64-bit fraction of a unit
    mag = (regime << np.uint64(avail)) | kept
    threshold = _U0
    rnd = _U0
    if mode == STOCHASTIC:
        threshold = sr_threshold(rem, 64, False, sr_bits)
        rnd = random_bits(key, index, sr_bits)
    mag += np.uint64(round_away(mode, neg, (mag & _U1) == _U1, rem, _TOP, 0, threshold, rnd))
    if big_e >= top:
        mag = (_U1 << np.uint64(n - 1)) - _U1      # maxpos
    if big_e < -top:
        mag = _U1                                  # minpos
    mask = (_U1 << np.uint64(n)) - _U1
    return np.int64(((_U0 - mag) & mask) if neg else mag)


@njit(inline="always")
def round_real(x: np.float64, d, mode: np.int64, key: np.uint64, index: np.int64,
               sr_bits: np.int64) -> np.int64:
    """Code of a float64 (NaN and +-Inf give NaR, +-0 gives 0)."""
    bits = f64_to_bits(x)
    neg = (bits >> np.uint64(63)) != _U0
    sig53, ex = significand_exponent(bits)
    # subnormal float64 inputs (sig53 < 2**52) lie far below minpos: only their exponent matters
    code = round_unpacked(neg, ex, (sig53 << np.uint64(11)) | _TOP, d, mode, key, index, sr_bits)
    if x == 0.0:
        code = 0
    if not np.isfinite(x):
        code = 1 << (d[NBITS] - 1)
    return code


@njit(parallel=True)
def encode_int_kernel(x, out, d, mode, key, offset, sr_bits):
    """Encode 64-bit integers exactly (float64 would round those above 2**53 a first time)."""
    for i in prange(x.shape[0]):
        v = x[i]
        neg = v < 0
        mag = (_U0 - np.uint64(v)) if neg else np.uint64(v)
        lz = clz64(mag)
        code = round_unpacked(neg, 63 - lz, _shl(mag, lz), d, mode, key, offset + i, sr_bits)
        out[i] = code if mag != _U0 else 0


# ---- exact arithmetic on unpacked values ----------------------------------------------------

@njit(inline="always")
def mul_exact(ea: np.int64, sa: np.uint64, eb: np.int64, sb: np.uint64):
    """(E, sig) of the exact product of two unpacked magnitudes (<= 31-bit significands)."""
    p = (sa >> np.uint64(33)) * (sb >> np.uint64(33))    # in [2**60, 2**62): exact
    carry = np.int64(p >= (_U1 << np.uint64(61)))
    return ea + eb + carry, p << np.uint64(3 - carry)


@njit(inline="always")
def add_exact(neg1: bool, e1: np.int64, s1: np.uint64, neg2: bool, e2: np.int64, s2: np.uint64):
    """(is_zero, neg, E, sig) of the exact sum of two nonzero unpacked values, cut to 64 bits
    with a sticky lowest bit."""
    if (e2 > e1) or (e2 == e1 and s2 > s1):        # make operand 1 the larger magnitude
        neg1, e1, s1, neg2, e2, s2 = neg2, e2, s2, neg1, e1, s1
    # operand 1 as the 128-bit integer s1 * 2**63 (top bit 126, room for a carry)
    ahi = s1 >> _U1
    alo = s1 << np.uint64(63)
    # operand 2 the same, shifted right by the exponent difference, jamming what falls off
    bhi = s2 >> _U1
    blo = s2 << np.uint64(63)
    dist = e1 - e2
    lost = (_shl(blo, 64 - dist) != _U0) if dist < 64 else True
    if dist >= 64:
        # from 128 on everything falls off (bhi is not 0): the shift by 0 says so
        lost = (blo != _U0) | (_shl(bhi, max(128 - dist, 0)) != _U0)
        blo = _shr(bhi, dist - 64)
        bhi = _U0
    elif dist > 0:
        blo = (blo >> np.uint64(dist)) | (bhi << np.uint64(64 - dist))
        bhi = bhi >> np.uint64(dist)
    blo |= np.uint64(lost & (dist > 0))
    if neg1 == neg2:
        lo = alo + blo
        hi = ahi + bhi + np.uint64(lo < alo)
    else:
        lo = alo - blo
        hi = ahi - bhi - np.uint64(alo < blo)
    if hi == _U0 and lo == _U0:
        return True, False, 0, _U0
    lz = clz64(hi) if hi != _U0 else 64 + clz64(lo)
    top = _shl(hi, lz) | _shr(lo, 64 - lz) if lz < 64 else _shl(lo, lz - 64)
    rest = _shl(lo, lz)
    return False, neg1, e1 + 1 - lz, top | np.uint64(rest != _U0)


@njit
def exact_op(op: np.int64, a: np.int64, b: np.int64, c: np.int64, d):
    """(kind, neg, E, sig) of the exact ``a op b [+ c]`` on codes."""
    ka, na, ea, sa = unpack(a, d)
    kb, nb, eb, sb = unpack(b, d)
    kc, nc, ec, sc = unpack(c, d)
    if ka == NAR or kb == NAR or (op == OP_FMA and kc == NAR):
        return NAR, False, 0, _U0
    if op == OP_MUL or op == OP_FMA:
        if ka == ZERO or kb == ZERO:
            ka = ZERO
        else:
            ea, sa = mul_exact(ea, sa, eb, sb)
            na = na != nb
        if op == OP_MUL:
            return ka, na, ea, sa
        kb, nb, eb, sb = kc, nc, ec, sc          # the addend
    elif op == OP_SUB:
        nb = not nb
    if ka == ZERO:
        return kb, nb, eb, sb
    if kb == ZERO:
        return ka, na, ea, sa
    zero, neg, big_e, sig = add_exact(na, ea, sa, nb, eb, sb)
    return (ZERO if zero else FINITE), neg, big_e, sig


@njit(parallel=True)
def arith_kernel(op, a, b, c, d, out, mode, key, offset, sr_bits):
    """``out = round(a op b [+ c])`` on codes, one rounding."""
    nar = 1 << (d[NBITS] - 1)
    for i in prange(a.shape[0]):
        kind, neg, big_e, sig = exact_op(op, np.int64(a[i]), np.int64(b[i]), np.int64(c[i]), d)
        code = round_unpacked(neg, big_e, sig, d, mode, key, offset + i, sr_bits)
        if kind == ZERO:
            code = 0
        if kind == NAR:
            code = nar
        out[i] = code


@njit(parallel=True)
def decode_kernel(codes, out, d):
    """Decode codes into float64 values."""
    for i in prange(codes.shape[0]):
        out[i] = decode_one(np.int64(codes[i]), d)


def _make_round_loop(mode: int, to_value: bool):
    """A parallel loop rounding float ``x`` into codes, or into their values when ``to_value``;
    ``offset`` is the flat index of ``x[0]`` (for the random stream).  ``mode`` and ``to_value``
    are compile-time constants, so each loop holds only its own mode's code."""

    @njit(parallel=True)
    def round_loop(x, out, d, key, offset, sr_bits):
        for i in prange(x.shape[0]):
            c = round_real(np.float64(x[i]), d, mode, key, offset + i, sr_bits)
            if to_value:
                out[i] = decode_one(c, d)
            else:
                out[i] = c

    return round_loop


_ENCODE_LOOPS = tuple(_make_round_loop(m, False) for m in range(len(MODE_NAMES)))
_QUANTIZE_LOOPS = tuple(_make_round_loop(m, True) for m in range(len(MODE_NAMES)))


def encode_kernel(x, out, d: tuple, mode: int, key: np.uint64, offset: int, sr_bits: int) -> None:
    """Encode float ``x`` into posit codes ``out``."""
    _ENCODE_LOOPS[mode](x, out, d, key, offset, sr_bits)


def quantize_kernel(x, out, d: tuple, mode: int, key: np.uint64, offset: int,
                    sr_bits: int) -> None:
    """Fused decode(encode(x)) into a float array ``out``."""
    _QUANTIZE_LOOPS[mode](x, out, d, key, offset, sr_bits)
