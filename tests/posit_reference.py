"""A deliberately simple pure-Python reference for posits, written from the Posit Standard (2022).

It shares no code or algorithm with ``formats.posit_kernels``; everything is exact (Python ints
and :class:`fractions.Fraction`) and works for any ``n >= 2`` and ``es >= 0`` (the tests use
wider-than-32-bit "posits" to build midpoints and values with a chosen remainder).

Decoding (:func:`decode`) follows the standard's formula literally, negative codes included, without
taking the two's complement first: after the sign bit ``s`` comes the regime, a run of ``m``
identical bits ended by the opposite bit or by the end of the code (``r = m - 1`` for a run of
ones, ``-m`` for zeros), then ``es`` exponent bits ``e`` (bits cut off by the end of the code are
zeros) and the fraction bits ``f`` (as a fraction in [0, 1)); the value is::

    ((1 - 3s) + f) * 2**((1 - 2s) * (r * 2**es + e + s))

Zero is all zeros; NaR (the sign bit alone) decodes to ``None``.

Rounding (:func:`split`, :func:`round_fraction`) is defined on the bit string: the exact positive
magnitude ``2**k * (1 + f)`` (``k = r * 2**es + e``, ``0 <= e < 2**es``) is written as its infinite
posit string ``regime | e in es bits | fraction bits of f``; read as the binary fraction
``0.b1 b2 b3 ...``, multiplied by ``2**(n-1)``, its integer part is the truncated magnitude code
``u`` and what is left, ``rem`` in [0, 1), is the discarded part as a fraction of one unit of the
last code bit.  The modes then decide from ``rem`` alone (ties: ``rem == 1/2``); stochastic rounding
moves away from zero iff ``rnd < floor(rem * 2**sr_bits)``.  Magnitudes >= maxpos give maxpos,
nonzero magnitudes <= minpos give minpos (in every mode, ``rem`` is then 0), 0 gives code 0; a
negative value's code is the two's complement of its magnitude's code.

Handy identity (checked by the tests): the midpoint of the neighbouring n-bit codes ``c, c + 1``
is the value of the (n+1)-bit code ``2c + 1``; more generally the value whose string is
``u`` followed by the m bits ``R`` is the (n+m)-bit code ``(u << m) | R`` (see :func:`value_with`).

For large sets of float64 inputs (every value, midpoint and neighbour of a 16-bit posit is some
400k doubles, too many for the Fraction path) :func:`round_floats` gives the same codes from the
same two ingredients, vectorised: the position of ``|x|`` among the exact values of the positive
(n+1)-bit codes (decoded by :func:`decode_parts`) tells the truncated code ``u`` and whether the
discarded fraction is 0, in (0, 1/2), 1/2 or in (1/2, 1), and the decision is :func:`_away`'s for
that class.  By the identity above this is exactly :func:`round_all`; the tests also compare the
two directly.
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np

DETERMINISTIC = ("nearest_even", "nearest_away", "toward_zero", "toward_positive",
                 "toward_negative")


def nar(n: int) -> int:
    """The NaR code: the sign bit alone."""
    return 1 << (n - 1)


def maxpos_code(n: int) -> int:
    return (1 << (n - 1)) - 1


def emax(n: int, es: int) -> int:
    """log2(maxpos) = (n - 2) * 2**es."""
    return (n - 2) << es


@lru_cache(maxsize=None)
def decode_parts(n: int, es: int, code: int):
    """``(num, exp)`` with value ``num * 2**exp`` (num a signed int), or None for NaR."""
    if not 0 <= code < (1 << n):
        raise ValueError(f"code {code} is not an {n}-bit code")
    if code == 0:
        return 0, 0
    if code == nar(n):
        return None
    s = code >> (n - 1)
    nbody = n - 1                                   # bits after the sign
    body = code & ((1 << nbody) - 1)
    first = (body >> (nbody - 1)) & 1
    i = nbody - 1                                   # scan the regime run from the top
    m = 0
    while i >= 0 and ((body >> i) & 1) == first:
        m += 1
        i -= 1
    r = m - 1 if first else -m
    nrest = max(i, 0)                               # bits after the terminating bit (if any)
    rest = body & ((1 << nrest) - 1)
    if nrest >= es:
        flen = nrest - es
        e = rest >> flen
        frac = rest & ((1 << flen) - 1)
    else:                                           # exponent bits cut off: zeros
        flen = 0
        e = rest << (es - nrest)
        frac = 0
    num = (1 - 3 * s) * (1 << flen) + frac          # ((1 - 3s) + f) * 2**flen
    exp = (1 - 2 * s) * ((r << es) + e + s) - flen
    return num, exp


def decode(n: int, es: int, code: int) -> Fraction | None:
    """Exact value of a code (None for NaR)."""
    p = decode_parts(n, es, code)
    if p is None:
        return None
    num, exp = p
    return Fraction(num << exp) if exp >= 0 else Fraction(num, 1 << -exp)


def decode_scaled(n: int, es: int, code: int) -> int | None:
    """``decode(code) * 2**emax`` as an int (every posit is a multiple of minpos), None for NaR."""
    p = decode_parts(n, es, code)
    if p is None:
        return None
    num, exp = p
    sh = exp + emax(n, es)
    assert sh >= 0 or num % (1 << -sh) == 0
    return num << sh if sh >= 0 else num >> -sh


def _split_int(n: int, es: int, p: int, q: int):
    """For x = p/q > 0: ``(u, rem_num, rem_den)``: magnitude code truncated and the discarded
    fraction rem_num / rem_den of one unit (saturation and minpos hold applied, rem = 0 there)."""
    top = maxpos_code(n)
    big = emax(n, es)
    # compare with maxpos = 2**big and minpos = 2**-big
    if p >= (q << big):
        return top, 0, 1
    if (p << big) <= q:
        return 1, 0, 1
    k = p.bit_length() - q.bit_length()             # 2**k <= x < 2**(k+1) after the fix-up
    if (p << max(0, -k)) < (q << max(0, k)):
        k -= 1
    a = p << max(0, -k)                             # x / 2**k = a / b in [1, 2)
    b = q << max(0, k)
    assert b <= a < 2 * b
    r, e = divmod(k, 1 << es)                       # floor division: 0 <= e < 2**es
    if r >= 0:                                      # r + 1 ones, then a zero
        regime, rlen = ((1 << (r + 1)) - 1) << 1, r + 2
    else:                                           # -r zeros, then a one
        regime, rlen = 1, -r + 1
    head = (regime << es) | e                       # regime and exponent, rlen + es bits
    length = rlen + es
    # string value S = (head + f) / 2**length with f = (a - b) / b; T = S * 2**(n-1)
    num = head * b + (a - b)
    den = b
    shift = (n - 1) - length
    if shift >= 0:
        num <<= shift
    else:
        den <<= -shift
    u, rem = divmod(num, den)
    assert 1 <= u <= top
    return u, rem, den


def split(n: int, es: int, x: Fraction):
    """``(neg, u, rem)`` of an exact value: sign, truncated magnitude code, discarded fraction
    (Fraction in [0, 1)).  x = 0 gives (False, 0, 0)."""
    x = Fraction(x)
    if x == 0:
        return False, 0, Fraction(0)
    neg = x < 0
    u, rn, rd = _split_int(n, es, abs(x.numerator), x.denominator)
    return neg, u, Fraction(rn, rd)


def _code(n: int, neg: bool, u: int) -> int:
    assert 0 <= u <= maxpos_code(n)
    return (-u) % (1 << n) if neg else u


def _away(mode: str, neg: bool, u: int, rn: int, rd: int, rnd, sr_bits: int) -> bool:
    if mode == "nearest_even":
        return 2 * rn > rd or (2 * rn == rd and u & 1 == 1)
    if mode == "nearest_away":
        return 2 * rn >= rd
    if mode == "toward_zero":
        return False
    if mode == "toward_positive":
        return rn > 0 and not neg
    if mode == "toward_negative":
        return rn > 0 and neg
    if mode == "stochastic":
        return rnd < (rn << sr_bits) // rd
    raise ValueError(mode)


def round_fraction(n: int, es: int, x, mode: str = "nearest_even", rnd: int | None = None,
                   sr_bits: int = 32) -> int:
    """Code of the exact value ``x`` (Fraction, int or float) rounded in ``mode``; stochastic
    needs the element's random number ``rnd`` (an ``sr_bits``-bit integer)."""
    return round_all(n, es, x, (mode,), rnd, sr_bits)[0]


def round_all(n: int, es: int, x, modes=DETERMINISTIC, rnd: int | None = None,
              sr_bits: int = 32) -> list[int]:
    """Codes of ``x`` in each of ``modes`` (one string computation for all)."""
    x = Fraction(x)
    if x == 0:
        return [0] * len(modes)
    neg = x < 0
    u, rn, rd = _split_int(n, es, abs(x.numerator), x.denominator)
    return [_code(n, neg, u + _away(m, neg, u, rn, rd, rnd, sr_bits)) for m in modes]


def sr_threshold(n: int, es: int, x, sr_bits: int):
    """``(toward_zero code, away code, floor(rem * 2**sr_bits))`` for the exact value ``x``:
    stochastic rounding gives the away code iff the random number is below the threshold.
    (Where x is held or saturated both codes are the same and the threshold is 0.)"""
    x = Fraction(x)
    if x == 0:
        return 0, 0, 0
    neg = x < 0
    u, rn, rd = _split_int(n, es, abs(x.numerator), x.denominator)
    if rn == 0:
        return _code(n, neg, u), _code(n, neg, u), 0
    return _code(n, neg, u), _code(n, neg, u + 1), (rn << sr_bits) // rd


def value_with(n: int, es: int, neg: bool, u: int, rem: Fraction) -> Fraction:
    """The exact value whose n-bit truncated magnitude code is ``u`` (1 <= u < maxpos code) and
    whose discarded fraction is ``rem`` (a dyadic fraction in [0, 1)): the value of the longer
    posit string ``u`` followed by the bits of ``rem``."""
    rem = Fraction(rem)
    m = max(rem.denominator.bit_length() - 1, 0)
    assert rem.denominator == 1 << m and 0 <= rem < 1 and 1 <= u < maxpos_code(n)
    v = decode(n + m, es, (u << m) | rem.numerator)
    return -v if neg else v


# ------------------------------------------------------------------ vectorised, for float64 grids

FLOAT_TABLE_MAX_N = 24      # 2**23 positive codes; the grids use n + 1 <= 17


@lru_cache(maxsize=4)
def positive_floats(n: int, es: int) -> np.ndarray:
    """float64 values of the positive n-bit codes 1 .. maxpos (index ``code - 1``), read-only,
    from :func:`decode_parts` (not its cache: the tables would fill it); asserts they are exact
    in float64 and strictly increasing."""
    assert 2 <= n <= FLOAT_TABLE_MAX_N, n
    parts = decode_parts.__wrapped__
    out = np.empty(maxpos_code(n), dtype=np.float64)
    for code in range(1, maxpos_code(n) + 1):
        num, exp = parts(n, es, code)
        assert 0 < num < 1 << 53 and -1021 < exp + num.bit_length() <= 1024   # normal double
        out[code - 1] = math.ldexp(num, exp)
    assert np.all(np.diff(out) > 0), (n, es)
    out.flags.writeable = False
    return out


def float_table(n: int, es: int) -> np.ndarray:
    """float64 values of every n-bit code 0 .. 2**n - 1 (NaR -> NaN), indexed by the code: the
    positive ones are the even (n+1)-bit codes of :func:`positive_floats`, a negative code is the
    negation of its two's complement (the standard's decoding, checked by the tests)."""
    pos = positive_floats(n + 1, es)[1::2]          # n-bit code c is the (n+1)-bit code 2c
    assert pos.size == maxpos_code(n)
    return np.concatenate([[0.0], pos, [np.nan], -pos[::-1]])


_CLASS_REM = (0, 1, 2, 3)   # rn / 4 stands for a discarded 0, (0, 1/2), 1/2, (1/2, 1)


def round_floats(n: int, es: int, x, modes=DETERMINISTIC) -> np.ndarray:
    """Codes (int64, shape ``x.shape + (len(modes),)``) of the finite float64 array ``x`` in the
    deterministic ``modes``: the same codes as :func:`round_all`, vectorised (see the module
    docstring).  ``mags`` are the positive (n+1)-bit values; ``|x|`` at index ``i`` of them (or
    strictly between index ``i`` and ``i + 1``) lies at or just above the (n+1)-bit code
    ``d = i + 1``: the n-bit string truncates to ``u = d >> 1`` and the discarded fraction is 0 or
    1/2 (d even or odd) when ``|x|`` equals it, else strictly above that and below the next half.
    Magnitudes at or beyond maxpos saturate and nonzero ones at or below minpos hold (u = maxpos
    or 1, nothing discarded), as in :func:`_split_int`."""
    assert all(m in DETERMINISTIC for m in modes), modes
    x = np.asarray(x, dtype=np.float64)
    assert np.all(np.isfinite(x)), "round_floats takes finite values (NaN/Inf are not reals)"
    mags = positive_floats(n + 1, es)
    a = np.abs(x)
    i = np.searchsorted(mags, a, side="right") - 1          # -1: below the (n+1)-bit minpos
    exact = (i >= 0) & (mags[np.maximum(i, 0)] == a)
    d = i + 1
    u = d >> 1
    cls = np.where(exact, np.where(d & 1, 2, 0), np.where(d & 1, 3, 1))
    top = maxpos_code(n)
    held = (u == 0) | (u >= top)
    u = np.clip(u, 1, top)
    cls = np.where(held, 0, cls)
    neg = np.signbit(x) & (a > 0)
    out = np.empty(x.shape + (len(modes),), dtype=np.int64)
    for j, mode in enumerate(modes):
        # the reference's own decision, tabulated over sign, parity of u and class of the remainder
        table = np.array([[[_away(mode, bool(s), p, rn, 4, None, 32) for rn in _CLASS_REM]
                           for p in (0, 1)] for s in (0, 1)], dtype=np.int64)
        mag = u + table[neg.astype(np.int64), u & 1, cls]
        code = np.where(neg, (-mag) % (1 << n), mag)
        out[..., j] = np.where(a == 0, 0, code)
    return out
