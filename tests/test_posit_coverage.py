"""Posit coverage the SoftPosit oracle tests leave out: every es = 2 width, every small format,
posit32 decode in bulk, and white-box quire range / carry tests.

Oracles (never numsim's own output): SoftPosit (PyPI ``softposit``, helpers imported from
``test_oracle_softposit``) and, where SoftPosit has no such format, the pure-Python Fraction
reference ``tests/posit_reference.py``.  An n-bit posit extended to m > n bits with the same es
by appending zeros (``code << (m - n)``) keeps its value, so SoftPosit's p8 (es 0) decodes every
es = 0 code of n <= 8 bits, p16 (es 1) every es = 1 code of n <= 16 bits, and pX2 decodes es = 2 at
any n = 2..32.  The rounding boundary between neighbouring n-bit codes c and c + 1 is the value
of the (n+1)-bit code 2c + 1 (decoded the same way, or by the reference when n + 1 exceeds what
SoftPosit has).  Encoding is checked against the rounding rule on the code order, from those
oracle values: the midpoint goes to the even one of c, c + 1, one float64 ulp above it to c + 1,
one below to c, every value to its own code; and beyond maxpos / between 0 and +-minpos the result
saturates / holds (maxpos, -maxpos, minpos, -minpos).  Where SoftPosit rounds at exactly that
(n, es) (pX2 for es = 2, p8 for posit8_0, p16 for posit16_1) its encoder is compared as well.

1. es = 2 for EVERY n = 2..32 through pX2: decode (all codes for n <= 16; for n > 16, 2000 random
   codes plus the special codes and their neighbours within 2 codes), encode of 2000 random
   doubles (pX2's encoder), encode of midpoints +- 1 float64 ulp (of all codes for n <= 16, which
   is section 3 for es = 2; for n > 16 of the same random and special codes; midpoints by pX2
   at n + 1 bits, by the reference for n = 32), add and mul of 2000 random pairs (pX2's add /
   mul, with the known n = 32 pX2 defects handled as in test_oracle_softposit).
2. posit32_2 decode against p32 (and pX2 at 32 bits) for 200k random codes plus every special
   code (0, +-minpos, +-1, +-maxpos, NaR) and its neighbours within 3 codes.
3. Exhaustive decode and encode at every midpoint +- 1 ulp (and every value) for every grammar
   format of n <= 16 bits with es = 0..2: es 0 at n <= 8 through p8, es 1 at n <= 16 through p16
   (the named posit4_1 included, obtained by its name), es 2 in section 1.  es 0 at n = 9..16 has
   no SoftPosit format and uses the reference, as do es = 3 and 4 at n = 11..16 (all codes: the
   reference decodes the 2**16 + 2**17 codes of n = 16 in well under a second; es 3 and 4 at
   n <= 10 are in test_posit_properties, which also runs all five deterministic modes on the
   same grids for every n <= 16 and es).
4. The quire, white box (``q._digits``: int64 base-2**32 digits, the top one signed, carries
   propagated lazily): values written into the digits (canonically and with carries spread over
   the digits) near +-2**(width-1) and over every bit length: ``is_nar`` and ``to_posit()`` give
   NaR exactly from magnitude 2**(width-1) on and otherwise the reference's rounding of the exact
   value in all five deterministic modes, ``to_fraction`` the exact value; crossing the limit by
   one maxpos**2 or one minpos**2 product with fma / fms and coming back; 2**31 - 1 products of
   maxpos**2 fit; and normalisation after 2**20 additions in one or several ``Quire.fma`` calls
   (maxpos**2, minpos**2 under maxpos**2, random codes, then fms back to zero) is exact.
   (``_NORMALIZE_EVERY`` = 2**30 is compiled into the kernel, so the in-kernel periodic
   normalisation itself is not reached: it would take 2**30 products in one call.)

Runtime with pytest-xdist ``-n 2`` on 2 cores: about 11 s with Numba's cache warm on an idle
machine, 20-25 s when kernels recompile or other jobs share the cores.
"""
from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np
import pytest

import formats
import posit_reference as ref
from formats.quire import quire_width
from test_oracle_softposit import (P8, P16, P32, X2, _check_arith, _check_encode, _operands,
                                   _seed, _signed, _special_codes, _spread_doubles, sp_decode,
                                   sp_encode)

CODE_DTYPE = {n: np.dtype(np.uint8 if n <= 8 else np.uint16 if n <= 16 else np.uint32)
              for n in range(2, 33)}


def _fmt(n, es):
    """The format by its grammar name (named ones, e.g. posit4_1, come back by name)."""
    fmt = formats.get(f"posit{n}_{es}")
    assert (fmt.bits, fmt.es, fmt.name) == (n, es, f"posit{n}_{es}")
    return fmt


def _rng(*parts):
    return np.random.default_rng(_seed("coverage", *parts))


# --------------------------------------------------------------------------- the oracle values


def _sp_padded(n, es):
    """(SoftPosit case, left shift) that decodes n-bit codes of this es, or None."""
    if es == 0 and n <= 8:
        return P8, 8 - n
    if es == 1 and n <= 16:
        return P16, 16 - n
    if es == 2 and n <= 32:
        return X2(n), 0                                   # pX2 left-aligns the n bits itself
    return None


def _oracle_source(n, es):
    sp_case = _sp_padded(n, es)
    return "ref" if sp_case is None else sp_case[0].kind


def oracle_values(n, es, codes):
    """float64 values of n-bit codes (NaR -> NaN): SoftPosit through zero padding where it has
    this es at >= n bits, else the Fraction reference (checked to be exact in float64)."""
    codes = np.asarray(codes, dtype=np.int64)
    nar = codes == (1 << (n - 1))
    sp_case = _sp_padded(n, es)
    if sp_case is not None:
        case, shift = sp_case
        vals = sp_decode(case, codes << shift)
        assert not np.isfinite(vals[nar]).any(), "SoftPosit decodes NaR to inf or NaN"
        vals[nar] = np.nan
        return vals
    vals = np.empty(codes.size, dtype=np.float64)
    for i, c in enumerate(codes.tolist()):
        v = ref.decode(n, es, c)
        vals[i] = np.nan if v is None else float(v)
        assert v is None or Fraction(vals[i]) == v, (n, es, c)
    return vals


@functools.lru_cache(maxsize=None)
def _all_values(n, es):
    return oracle_values(n, es, np.arange(1 << n, dtype=np.int64))


def _check_decode(assert_same, n, es, codes, theirs, what):
    fmt = _fmt(n, es)
    codes = np.asarray(codes, dtype=np.int64).astype(CODE_DTYPE[n])
    ours = fmt.decode(codes)
    assert ours.dtype == np.float64 and ours.shape == codes.shape
    is_nar = codes == (1 << (n - 1))
    assert np.isnan(ours[is_nar]).all(), f"{fmt.name}: NaR must decode to NaN"
    assert_same(f"{fmt.name} decode ({what})", codes, ours, theirs, nan_theirs=is_nar)


def _check_value_order(n, es, vals):
    """Oracle sanity: values increase strictly in two's-complement code order (so the padding
    and the decoding are right); NaR aside."""
    order = np.argsort(_signed(_Width(n), np.arange(1 << n)))
    order = order[order != (1 << (n - 1))]
    v = vals[order]
    assert np.all(np.isfinite(v)) and np.all(np.diff(v) > 0), (n, es)


class _Width:
    """The bit-width attributes the imported helpers read."""

    def __init__(self, n):
        self.n = n
        self.nar = 1 << (n - 1)
        self.code_dtype = CODE_DTYPE[n]


# --------------------------------------------------------------------------- midpoint encode


def midpoint_grid(n, es, c):
    """Inputs and expected codes for n-bit codes c (int64 array): the value of c, the midpoint of
    c and c + 1 (the (n+1)-bit code 2c + 1) and one float64 ulp either side of it, plus special
    doubles.  Expected codes follow from the code order alone (see the module docstring); the
    values are the oracle's."""
    full = 1 << n
    nar = full >> 1
    c = np.asarray(c, dtype=np.int64)
    hi = (c + 1) % full
    v_lo = oracle_values(n, es, c)
    v_hi = oracle_values(n, es, hi)
    mid = oracle_values(n + 1, es, 2 * c + 1)
    # the oracle's midpoints really lie between the neighbours
    inner = (c != nar - 1) & (c != nar)
    assert np.all((v_lo < mid)[inner] & (mid < v_hi)[inner]), (n, es)
    assert np.all(mid[c == nar - 1] > v_lo[c == nar - 1])  # beyond maxpos
    assert np.all(mid[c == nar] < v_hi[c == nar])          # below -maxpos
    up = np.nextafter(mid, np.inf)
    down = np.nextafter(mid, -np.inf)
    even = np.where(c % 2 == 0, c, hi)
    held = {0: 1, nar - 1: nar - 1, nar: nar + 1, full - 1: full - 1}   # minpos, +-maxpos, -minpos

    def fix(e):
        e = e.copy()
        for code, to in held.items():
            e[c == code] = to
        return e

    finite = c != nar
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 5e-324, -5e-324,
                         np.finfo(np.float64).max, -np.finfo(np.float64).max])
    spec_codes = np.array([0, 0, nar, nar, nar, nar - 1, nar + 1, 1, full - 1, nar - 1,
                           nar + 1]) % full
    x = np.concatenate([v_lo[finite], mid, up, down, specials])
    expected = np.concatenate([c[finite], fix(even), fix(hi), fix(c), spec_codes])
    return x, expected.astype(CODE_DTYPE[n])


def _native_sp_encoder(n, es):
    """SoftPosit case that rounds to exactly (n, es), or None."""
    if es == 2:
        return X2(n)
    return {(8, 0): P8, (16, 1): P16}.get((n, es))


def check_midpoint_encode(assert_same, n, es, c, what):
    fmt = _fmt(n, es)
    x, expected = midpoint_grid(n, es, c)
    ours = fmt.encode(x)
    assert ours.dtype == CODE_DTYPE[n] and ours.shape == x.shape
    with np.errstate(invalid="ignore"):
        assert_same(f"{fmt.name} encode {what} (rounding rule)", x, ours, expected)
    case = _native_sp_encoder(n, es)
    if case is not None:
        _check_encode(assert_same, case, x, sp_encode(case, x), f"{what} [{case.kind}]")


# ============================================================================ 1. es = 2, n = 2..32

ES2_N = list(range(2, 33))
SWEEP = 2000


def _special_neighbours(n):
    """The special codes (0, NaR, +-1, +-maxpos, +-minpos) and their neighbours within 2 codes."""
    s = _special_codes(_Width(n))
    return np.unique((s[:, None] + np.arange(-2, 3)[None, :]).ravel() % (1 << n))


def _sweep_codes(n, what):
    """All codes for n <= 16, else SWEEP random codes plus the special codes and their
    neighbours."""
    if n <= 16:
        return np.arange(1 << n, dtype=np.int64)
    r = _rng(what, n).integers(0, 1 << n, size=SWEEP, dtype=np.int64)
    return np.concatenate([_special_neighbours(n), r])


@pytest.mark.parametrize("n", ES2_N, ids=lambda n: f"posit{n}_2")
def test_es2_decode(n, assert_same):
    codes = _sweep_codes(n, "decode")
    if n <= 16:
        theirs = _all_values(n, 2)
        _check_value_order(n, 2, theirs)
    else:
        theirs = oracle_values(n, 2, codes)
    _check_decode(assert_same, n, 2, codes, theirs, f"pX2, {codes.size} codes")


@pytest.mark.parametrize("n", ES2_N, ids=lambda n: f"posit{n}_2")
def test_es2_encode_random(n, assert_same):
    case = X2(n)
    x = _spread_doubles(case, SWEEP, _rng("encode", n))
    assert x.size >= SWEEP
    _check_encode(assert_same, case, x, sp_encode(case, x), "random doubles [pX2]")


@pytest.mark.parametrize("n", ES2_N, ids=lambda n: f"posit{n}_2")
def test_es2_encode_midpoints(n, assert_same):
    c = _sweep_codes(n, "midpoints")
    check_midpoint_encode(assert_same, n, 2, c, f"midpoints +-1ulp of {c.size} codes")


@pytest.mark.parametrize("op", ["add", "mul"])
@pytest.mark.parametrize("n", ES2_N, ids=lambda n: f"posit{n}_2")
def test_es2_arith(n, op, assert_same):
    case = X2(n)
    a, b = _operands(case, SWEEP, _rng(op, n))
    assert a.size == SWEEP
    _check_arith(assert_same, case, op, a, b)


# ============================================================================ 2. posit32_2 decode


def test_posit32_decode_random_and_specials(assert_same):
    n = 32
    specials = np.unique((_special_codes(P32)[:, None] + np.arange(-3, 4)[None, :]).ravel()
                         % (1 << n))
    for must in (0, 1, 0x40000000, 0x7FFFFFFF, 0x80000000, 0x80000001, 0xC0000000, 0xFFFFFFFF):
        assert must in specials
    codes = np.concatenate([specials, _rng("p32-decode").integers(0, 1 << n, size=200_000,
                                                                  dtype=np.int64)])
    codes = codes.astype(np.uint32)
    is_nar = codes == P32.nar
    theirs = sp_decode(P32, codes)                        # p32: NaR -> NaN
    assert np.isnan(theirs[is_nar]).all()
    _check_decode(assert_same, n, 2, codes, theirs, "p32")
    theirs_x2 = sp_decode(X2(32), codes)                  # pX2 at 32 bits: NaR -> inf
    theirs_x2[is_nar] = np.nan
    _check_decode(assert_same, n, 2, codes, theirs_x2, "pX2 n=32")


# ============================================================================ 3. every small format

SMALL = ([(n, 0) for n in range(2, 17)] + [(n, 1) for n in range(2, 17)]
         + [(n, es) for es in (3, 4) for n in range(11, 17)])


def _small_id(p):
    n, es = p
    return f"posit{n}_{es}-{_oracle_source(n, es)}"


@pytest.mark.parametrize("n,es", SMALL, ids=map(_small_id, SMALL))
def test_small_decode_all_codes(n, es, assert_same):
    vals = _all_values(n, es)
    _check_value_order(n, es, vals)
    codes = np.arange(1 << n, dtype=np.int64)
    _check_decode(assert_same, n, es, codes, vals, f"all codes [{_oracle_source(n, es)}]")


@pytest.mark.parametrize("n,es", SMALL, ids=map(_small_id, SMALL))
def test_small_encode_all_midpoints(n, es, assert_same):
    c = np.arange(1 << n, dtype=np.int64)
    check_midpoint_encode(assert_same, n, es, c,
                          f"every midpoint +-1ulp [{_oracle_source(n + 1, es)}]")


def test_named_posit4_1_is_covered():
    """posit4_1 is a named format and its grammar parameters go through p16 above."""
    assert "posit4_1" in formats.names()
    assert (4, 1) in SMALL and _oracle_source(4, 1) == "p16" and _oracle_source(5, 1) == "p16"
    assert formats.get("posit4_1") is _fmt(4, 1)
    # its 16 values through p16 (codes << 12), spelled out: useed = 4, maxpos = 16
    expect = [0, 1 / 16, 1 / 4, 1 / 2, 1, 2, 4, 16,
              np.nan, -16, -4, -2, -1, -1 / 2, -1 / 4, -1 / 16]
    np.testing.assert_array_equal(_all_values(4, 1), expect)


# ============================================================================ 4. quire, white box

QUIRE_FORMATS = [(2, 0), (3, 0), (4, 1), (5, 4), (8, 0), (8, 2), (10, 3), (13, 0), (16, 1),
                 (16, 2), (32, 2), (32, 4)]
QIDS = [f"posit{n}_{es}" for n, es in QUIRE_FORMATS]


def _write_digits(q, v, spread=None):
    """Store the integer v (in units of the quire's lsb) in q._digits: digit i = (v >> 32 i) &
    0xFFFFFFFF, the top digit signed.  With ``spread`` (a Generator), carries are then moved
    between neighbouring digits (digit i += t * 2**32, digit i+1 -= t, random |t| < 2**28), the
    non-normalised form the lazy carries leave; the value is unchanged."""
    d = q._digits
    k = d.size
    top = v >> (32 * (k - 1))
    assert -(1 << 62) <= top < (1 << 62), "value too large for the digit array"
    vals = [(v >> (32 * i)) & 0xFFFFFFFF for i in range(k - 1)] + [top]
    if spread is not None:
        for i in range(k - 1):
            t = int(spread.integers(-(1 << 28), 1 << 28))
            vals[i] += t << 32
            vals[i + 1] -= t
    d[:] = np.array(vals, dtype=np.int64)
    assert sum(int(x) << (32 * i) for i, x in enumerate(d)) == v


def _check_quire_value(q, v, what):
    """q holds v lsb units: NaR iff |v| >= 2**(width-1), else the reference's rounding."""
    n, es = q.format.bits, q.format.es
    limit = 1 << (q.width - 1)
    before = q._digits.copy()
    codes = [int(q.to_posit(rounding=m)) for m in ref.DETERMINISTIC]
    np.testing.assert_array_equal(q._digits, before, err_msg="to_posit changed the digits")
    if abs(v) >= limit:
        assert q.is_nar, (what, v)
        assert codes == [q.format.nar_code] * 5, (what, v, codes)
        with pytest.raises(ValueError):
            q.to_fraction()
    else:
        x = Fraction(v) * Fraction(2) ** q.lsb_exponent
        assert not q.is_nar, (what, v)
        assert q.to_fraction() == x, (what, v)
        assert codes == ref.round_all(n, es, x), (what, v, codes)


def _near_limit_values(q):
    """Integers near +-2**(width-1): the limit +- a few units, +- one maxpos**2 product, one bit
    of every other position, and a few far beyond (the digit array holds them)."""
    w = q.width
    L = 1 << (w - 1)
    P = 1 << (4 * q.format.emax)                            # maxpos**2 in lsb units
    mags = {L - 2, L - 1, L, L + 1, L + 2, L - P, L + P, 2 * L - 1, 2 * L, 3 * L, 1 << (w + 40),
            L - 1 - (L >> 1), (L - 1) ^ 1}
    mags |= {L - (1 << j) for j in range(w - 1)}                 # just below, every position
    mags |= {L + (1 << j) for j in range(0, w + 8, 3)}           # just above
    return sorted(s * m for m in mags for s in (1, -1))


@pytest.mark.parametrize("n,es", QUIRE_FORMATS, ids=QIDS)
def test_quire_range_limit_white_box(n, es):
    q = formats.Quire(_fmt(n, es))
    assert q.width == quire_width(q.format) == 4 * q.format.emax + 32
    assert q.lsb_exponent == -2 * q.format.emax
    rng = _rng("quire-limit", n, es)
    for v in _near_limit_values(q):
        for spread in (None, rng):
            _write_digits(q, v, spread)
            _check_quire_value(q, v, f"near limit, spread={spread is not None}")


@pytest.mark.parametrize("n,es", QUIRE_FORMATS, ids=QIDS)
def test_quire_random_values_white_box(n, es):
    """Random values of every bit length 1 .. width - 1 (and a few above), random low bits (so
    the rounding sees sticky bits far below), canonical and spread digits."""
    q = formats.Quire(_fmt(n, es))
    rng = _rng("quire-random", n, es)
    w = q.width
    for bits in list(range(1, w + 3)):
        for _ in range(2):
            low = int.from_bytes(rng.bytes(bits // 8 + 1), "little") & ((1 << (bits - 1)) - 1)
            v = (1 << (bits - 1)) | low
            if rng.integers(0, 2):
                v = -v
            _write_digits(q, v, rng if rng.integers(0, 2) else None)
            _check_quire_value(q, v, f"random {bits}-bit")


@pytest.mark.parametrize("n,es", QUIRE_FORMATS, ids=QIDS)
def test_quire_crossing_the_limit(n, es):
    """One product over the limit makes the quire NaR on reading; taking it back makes it a
    number again (two's-complement addition is exact modulo 2**width)."""
    fmt = _fmt(n, es)
    dt = fmt.code_dtype.type
    maxpos, minpos = dt(fmt.nar_code - 1), dt(1)
    L = 1 << (quire_width(fmt) - 1)
    P = 1 << (4 * fmt.emax)
    q = formats.Quire(fmt)
    for start, a, unit in ((L - P, maxpos, P), (L - 1, minpos, 1)):
        for sign in (1, -1):
            step = q.fma if sign == 1 else q.fms
            back = q.fms if sign == 1 else q.fma
            _write_digits(q, sign * start)
            _check_quire_value(q, sign * start, "below the limit")
            step(a, a)
            _check_quire_value(q, sign * (start + unit), "at the limit")
            step(a, a)
            _check_quire_value(q, sign * (start + 2 * unit), "beyond the limit")
            back(a, a)
            back(a, a)
            _check_quire_value(q, sign * start, "back below the limit")
    # 2**31 - 1 products of maxpos**2 fit (the documented 2**30 guarantee, and more)
    _write_digits(q, ((1 << 31) - 2) * P)
    q.fma(maxpos, maxpos)
    _check_quire_value(q, ((1 << 31) - 1) * P, "2**31 - 1 maxpos**2")
    assert not q.is_nar
    q.fma(maxpos, maxpos)
    assert q.is_nar and int(q.to_posit()) == fmt.nar_code


MANY = 1 << 20


@pytest.mark.parametrize("n,es", QUIRE_FORMATS, ids=QIDS)
def test_quire_many_additions_exact(n, es):
    fmt = _fmt(n, es)
    dt = fmt.code_dtype
    maxpos_v = Fraction(2) ** fmt.emax
    minpos_v = 1 / maxpos_v
    big = np.full(MANY, fmt.nar_code - 1, dtype=dt)
    small = np.full(MANY, 1, dtype=dt)

    # 2**20 maxpos * maxpos in one call, then in four calls
    q = formats.Quire(fmt).fma(big, big)
    assert q.to_fraction() == MANY * maxpos_v**2
    assert int(q.to_posit()) == fmt.nar_code - 1
    q4 = formats.Quire(fmt)
    for part in np.split(big, 4):
        q4.fma(part, part)
    assert q4.to_fraction() == MANY * maxpos_v**2
    np.testing.assert_array_equal(q4._digits, q._digits)       # both normalised
    assert np.all(q._digits[:-1] >= 0) and np.all(q._digits[:-1] < 1 << 32)

    # minpos**2 (the lsb) 2**20 times under one maxpos**2: carries through every digit
    q = formats.Quire(fmt).fma(small, small).fma(big[:1], big[:1]).fms(small[:3], small[:3])
    exact = maxpos_v**2 + (MANY - 3) * minpos_v**2
    assert q.to_fraction() == exact
    assert int(q.to_posit()) == ref.round_fraction(n, es, exact)

    # random codes from a pool of 32 each side, 2**20 products, exact sum by counting pairs
    rng = _rng("quire-many", n, es)
    full = 1 << n
    pool = rng.integers(0, full, size=(2, 32), dtype=np.int64)
    pool[pool == fmt.nar_code] = 1
    ia = rng.integers(0, 32, size=MANY)
    ib = rng.integers(0, 32, size=MANY)
    a, b = pool[0][ia].astype(dt), pool[1][ib].astype(dt)
    counts = np.bincount(ia * 32 + ib, minlength=32 * 32)
    va = [ref.decode(n, es, int(c)) for c in pool[0]]
    vb = [ref.decode(n, es, int(c)) for c in pool[1]]
    exact = sum(int(counts[i * 32 + j]) * va[i] * vb[j] for i in range(32) for j in range(32))
    q = formats.Quire(fmt)
    for start in range(0, MANY, 3 * MANY // 8):                   # uneven pieces
        q.fma(a[start:start + 3 * MANY // 8], b[start:start + 3 * MANY // 8])
    assert not q.is_nar
    assert q.to_fraction() == exact
    assert int(q.to_posit()) == ref.round_fraction(n, es, exact)
    assert int(formats.fused_dot(fmt, a, b)) == ref.round_fraction(n, es, exact)
    q.fms(a, b)                                                   # everything back out
    assert q.to_fraction() == 0 and int(q.to_posit()) == 0
    assert not q._digits.any()
