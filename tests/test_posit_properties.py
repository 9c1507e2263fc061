"""Posits and the quire against an independent exact reference, plus their defining properties.

The oracle is ``tests/posit_reference.py``: a pure-Python, Fraction-exact implementation written
from the Posit Standard's definition (decode by parsing the fields, round the exact value's
infinite bit string).  Every expected code below comes from it (or from a property that needs no
oracle: ordering, negation, saturation, NaR); nothing is derived from numsim's own output.

Covered: decode (exhaustive to n = 12, all codes of some n = 13..16, random codes to n = 32);
encode/quantize in the five deterministic modes on every value, every midpoint and their float64
neighbours, plus values far beyond maxpos / below minpos (every n <= 16, every es; expected codes
for n <= 16 from the reference's vectorised ``round_floats``, itself compared with the Fraction
``round_all`` on every input for n <= 10 and on 4000 of them per format above) and on random
doubles (n <= 32); add/sub/mul exhaustively for n <= 6 and fma
on triples, randomly up to n = 32 (es = 0 and 4 included); convert; the properties (monotone codes,
negation by two's complement, no underflow to zero, no overflow to NaR, NaN/Inf -> NaR, NaR in ->
NaR out); stochastic rounding decided exactly from ``formats.rounding.random_bits`` (including
values built so that the threshold sits right at the drawn number), and its independence from
chunking and shape; the quire (exact sums, every mode, fms/add/clear, cancellation, range, NaR,
fused_dot broadcasting); bad input; input dtypes (float16/32, 64-bit integers above 2**53).

Reference loops are kept to a few hundred thousand roundings (the 16-bit grids, ~400k inputs per
format, use the vectorised path); numsim is always called vectorised.
"""
from __future__ import annotations

import math
import zlib
from fractions import Fraction as F

import numpy as np
import pytest

import formats
import posit_reference as ref
from formats.rounding import random_bits, resolve_seed

MODES5 = ref.DETERMINISTIC
MIRROR = {"nearest_even": "nearest_even", "nearest_away": "nearest_away",
          "toward_zero": "toward_zero", "toward_positive": "toward_negative",
          "toward_negative": "toward_positive"}
SR_BITS = (1, 4, 16, 32)
ALL_ES = range(5)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _rng(tag: str) -> np.random.Generator:
    """A generator seeded from a tag (stable across runs and xdist workers)."""
    return np.random.default_rng(zlib.crc32(tag.encode()))


def _pid(n, es):
    return f"posit{n}_{es}"


def P(n, es) -> formats.PositFormat:
    return formats.PositFormat(n, es)


def _codes(fmt, values) -> np.ndarray:
    return np.asarray([int(v) for v in values], dtype=np.int64).astype(fmt.code_dtype)


def _exact_float(x: F) -> float:
    f = float(x)
    assert F(f) == x, f"{x} is not a float64"
    return f


def _ref_float(n, es, code) -> float:
    """The reference value of a code as a float64 (NaN for NaR); asserts it is exact."""
    p = ref.decode_parts(n, es, int(code))
    if p is None:
        return math.nan
    num, exp = p
    assert abs(num) < 1 << 53
    return math.ldexp(num, exp)


def _rnds(seed, sr_bits, count, start=0) -> list[int]:
    """random_bits(key, i, sr_bits) for flat indices start .. start + count - 1."""
    key = resolve_seed(seed)
    return [int(random_bits(key, i, sr_bits)) for i in range(start, start + count)]


def _signed(codes, n) -> np.ndarray:
    c = np.asarray(codes).astype(np.int64)
    return np.where(c >= 1 << (n - 1), c - (1 << n), c)


def _neg_codes(codes, n) -> np.ndarray:
    return ((-np.asarray(codes).astype(np.int64)) % (1 << n))


def _same_codes(what, ours, theirs, operands=(), limit=8):
    """Codes equal elementwise; on failure name the first operands (hex) and both results."""
    ours = np.asarray(ours).astype(np.int64).ravel()
    theirs = np.asarray(theirs).astype(np.int64).ravel()
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    bad = np.flatnonzero(ours != theirs)
    if bad.size == 0:
        return
    ops = [np.asarray(o).ravel() for o in operands]
    lines = [f"{what}: {bad.size} of {ours.size} differ (first {min(limit, bad.size)}):"]
    for i in bad[:limit]:
        args = ", ".join(f"0x{int(o[i]):x}" if o.dtype.kind in "iu" else repr(o[i]) for o in ops)
        lines.append(f"  [{i}] ({args}): ours 0x{int(ours[i]):x}  theirs 0x{int(theirs[i]):x}")
    raise AssertionError("\n".join(lines))


def _values(n, es, codes) -> list:
    return [ref.decode(n, es, int(c)) for c in np.asarray(codes).ravel()]


class _RefCache:
    """Memoised ``ref.round_all`` over the five deterministic modes for one format."""

    def __init__(self, n, es):
        self.n, self.es, self.memo = n, es, {}

    def __call__(self, x):
        if x is None:
            return [ref.nar(self.n)] * len(MODES5)
        r = self.memo.get(x)
        if r is None:
            r = self.memo[x] = ref.round_all(self.n, self.es, x)
        return r


# ---------------------------------------------------------------------------------------------
# 0. the reference against itself (cheap consistency checks of the oracle)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", range(2, 10))
@pytest.mark.parametrize("es", ALL_ES)
def test_reference_self_consistency(n, es):
    """Every value rounds to its own code in every mode; (n+1)-bit code 2c+1 lies exactly halfway
    (remainder 1/2) above code c; values are strictly increasing in two's-complement order;
    negation is the two's complement of the code; maxpos/minpos are 2**+-emax."""
    order = sorted((c for c in range(1 << n) if c != ref.nar(n)),
                   key=lambda c: c - (1 << n) if c >> (n - 1) else c)
    vals = [ref.decode(n, es, c) for c in order]
    assert all(a < b for a, b in zip(vals, vals[1:]))
    for c in order:
        assert ref.round_all(n, es, ref.decode(n, es, c)) == [c] * 5
        assert ref.decode(n, es, (-c) % (1 << n)) == -ref.decode(n, es, c)
    for c in range(1, ref.maxpos_code(n)):
        assert ref.split(n, es, ref.decode(n + 1, es, 2 * c + 1)) == (False, c, F(1, 2))
    assert ref.decode(n, es, ref.maxpos_code(n)) == F(2) ** ref.emax(n, es)
    assert ref.decode(n, es, 1) == F(2) ** -ref.emax(n, es)
    # the float64 tables of the vectorised path are the decoded values (n-bit code c is the
    # (n+1)-bit code 2c); round_floats == round_all is checked on every grid input for n <= 10
    table = ref.float_table(n, es)
    assert np.isnan(table[ref.nar(n)])
    assert all(F(float(table[c])) == ref.decode(n, es, c) for c in order)


# ---------------------------------------------------------------------------------------------
# 1. decode
# ---------------------------------------------------------------------------------------------

DECODE_ALL = ([(n, es) for n in range(2, 13) for es in ALL_ES]
              + [(n, es) for n in (13, 14, 15, 16) for es in (1, 3)] + [(16, 0), (16, 2), (16, 4)])


@pytest.mark.parametrize("n,es", DECODE_ALL, ids=[_pid(*p) for p in DECODE_ALL])
def test_decode_every_code(n, es, assert_same):
    fmt = P(n, es)
    codes = np.arange(1 << n, dtype=np.int64).astype(fmt.code_dtype)
    theirs = np.array([_ref_float(n, es, c) for c in range(1 << n)])
    assert_same(f"decode {fmt.name}", codes, fmt.decode(codes), theirs)


@pytest.mark.parametrize("n", range(17, 33))
@pytest.mark.parametrize("es", ALL_ES)
def test_decode_random_codes(n, es, assert_same):
    fmt = P(n, es)
    top = (1 << (n - 1)) - 1
    special = [0, 1, 2, 3, top - 1, top, top + 1, top + 2, (1 << n) - 1, (1 << n) - 2,
               1 << (n - 2), (1 << (n - 2)) + 1, (1 << (n - 2)) - 1, 3 << (n - 2)]
    rand = _rng(f"decode{n}_{es}").integers(0, 1 << n, 800).tolist()
    codes_l = special + rand
    codes = _codes(fmt, codes_l)
    theirs = np.array([_ref_float(n, es, c) for c in codes_l])
    assert_same(f"decode {fmt.name}", codes, fmt.decode(codes), theirs)


# ---------------------------------------------------------------------------------------------
# 2. encode and quantize, deterministic modes
# ---------------------------------------------------------------------------------------------

ENCODE_ALL = [(n, es) for n in range(2, 17) for es in ALL_ES]
GRID_N = 16              # round_floats (vectorised reference) for n <= GRID_N, else Fraction only
FRACTION_ALL = 8000      # up to this many inputs all go through round_all as well ...
FRACTION_SAMPLE = 4000   # ... beyond it a sample of them (extremes and random ones)


def _fraction_sample(x):
    """Indices of ``x`` that also go through the Fraction path: all of them for small arrays,
    else both ends and the middle of the array plus random ones."""
    k = x.size
    if k <= FRACTION_ALL:
        return np.arange(k)
    ends = np.r_[0:64, k // 2 - 32:k // 2 + 32, k - 64:k]
    rand = _rng(f"sample{k}").choice(k, FRACTION_SAMPLE - ends.size, replace=False)
    return np.unique(np.concatenate([ends, rand]))


def _expected_encode(n, es, x, what):
    """Reference codes (int64, ``(x.size, 5)``) of float64 ``x`` in the five modes: for n <= 16
    from ``ref.round_floats`` (vectorised), which must agree with ``ref.round_all`` (Fraction) on
    every input of a small array and on a sample of a large one; for wider n from round_all."""
    cache = _RefCache(n, es)
    pick = _fraction_sample(x) if n <= GRID_N else np.arange(x.size)
    exact = np.array([cache(F(float(v))) for v in x[pick]], dtype=np.int64).reshape(pick.size, 5)
    if n > GRID_N:
        return exact
    expect = ref.round_floats(n, es, x)
    _same_codes(f"reference self-check {_pid(n, es)} {what}: round_floats vs round_all",
                expect[pick], exact, [x[pick]])
    return expect


def _check_encode(fmt, x, assert_same, what):
    """encode and quantize of float64 ``x`` in the five modes == reference on the exact floats."""
    n, es = fmt.bits, fmt.es
    expect = _expected_encode(n, es, x, what)
    table = ref.float_table(n, es) if n <= GRID_N else None
    for j, mode in enumerate(MODES5):
        assert_same(f"{what} encode {fmt.name} {mode}", x, fmt.encode(x, mode), expect[:, j])
        q = fmt.quantize(x, mode)
        assert q.dtype == np.float64
        if table is not None:
            want = table[expect[:, j]]
        else:
            want = np.array([_ref_float(n, es, c) for c in expect[:, j]])
        assert_same(f"{what} quantize {fmt.name} {mode}", x, q, want)


def _grid(n, es):
    """Every value of the (n+1)-bit codes (the n-bit values and the midpoints between
    neighbours, maxpos's "midpoint" with NaR beyond maxpos and minpos's with 0 below minpos),
    the float64 numbers just above and below each, and magnitudes far beyond maxpos / far below
    minpos (float64's extremes included)."""
    mags = ref.positive_floats(n + 1, es)
    pts = np.concatenate([-mags[::-1], [0.0], mags])
    far = np.array([4.0 * mags[-1], 1e300, np.finfo(np.float64).max,
                    mags[0] / 4.0, 1e-300, np.finfo(np.float64).smallest_subnormal])
    return np.concatenate([pts, np.nextafter(pts, np.inf), np.nextafter(pts, -np.inf),
                           far, -far])


@pytest.mark.parametrize("n,es", ENCODE_ALL, ids=[_pid(*p) for p in ENCODE_ALL])
def test_encode_values_midpoints_and_neighbours(n, es, assert_same):
    """Every value and every midpoint (the (n+1)-bit codes) and the float64 numbers just above
    and below each of them, plus values far beyond maxpos and below minpos, in all five
    deterministic modes, for every n <= 16 and es = 0..4 (the named formats by name)."""
    name = _pid(n, es)
    fmt = formats.get(name) if name in formats.names() else P(n, es)
    x = _grid(n, es)
    assert x.size == 3 * ((1 << (n + 1)) - 1) + 12
    _check_encode(fmt, x, assert_same, "grid")


ENCODE_RANDOM = [(13, 0), (16, 1), (16, 2), (18, 4), (20, 0), (24, 3), (27, 1), (28, 4),
                 (31, 2), (32, 0), (32, 1), (32, 2), (32, 3), (32, 4)]


@pytest.mark.parametrize("n,es", ENCODE_RANDOM, ids=[_pid(*p) for p in ENCODE_RANDOM])
def test_encode_random_doubles(n, es, assert_same):
    """Random doubles over (and a little beyond) the whole range, and random midpoints +- 1 ulp."""
    fmt = P(n, es)
    rng = _rng(f"enc{n}_{es}")
    e = ref.emax(n, es)
    k = 1200
    x = np.ldexp(1.0 + rng.random(k), rng.integers(-e - 3, e + 3, k))
    x = np.where(rng.random(k) < 0.5, -x, x)
    d = rng.integers(0, 1 << (n + 1), 400).tolist()
    mids = np.array([_exact_float(ref.decode(n + 1, es, c)) for c in d if c != ref.nar(n + 1)])
    x = np.concatenate([x, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf)])
    _check_encode(fmt, x, assert_same, "random")


# ---------------------------------------------------------------------------------------------
# 3. arithmetic
# ---------------------------------------------------------------------------------------------

def _exact(op, a, b, c=None):
    if a is None or b is None or (op == "fma" and c is None):
        return None
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    return a * b + c


def _run_op(fmt, op, ops, mode, **kw):
    return getattr(fmt, op)(*ops, rounding=mode, **kw)


def _check_arith(fmt, op, ops, what):
    n, es = fmt.bits, fmt.es
    cache = _RefCache(n, es)
    vals = [_values(n, es, o) for o in ops]
    expect = np.array([cache(_exact(op, *v)) for v in zip(*vals)], dtype=np.int64)
    for j, mode in enumerate(MODES5):
        _same_codes(f"{what} {fmt.name} {op} {mode}", _run_op(fmt, op, ops, mode), expect[:, j],
                    ops)


SMALL = [(n, es) for n in range(2, 7) for es in ALL_ES]


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
@pytest.mark.parametrize("n,es", SMALL, ids=[_pid(*p) for p in SMALL])
def test_arith_all_pairs(n, es, op):
    fmt = P(n, es)
    a, b = np.meshgrid(np.arange(1 << n), np.arange(1 << n), indexing="ij")
    _check_arith(fmt, op, (a.ravel().astype(fmt.code_dtype), b.ravel().astype(fmt.code_dtype)),
                 "all pairs")


@pytest.mark.parametrize("n,es", SMALL, ids=[_pid(*p) for p in SMALL])
def test_fma_triples(n, es):
    """All triples for n <= 4, 3000 random ones (a third with c near -a*b) for n = 5, 6."""
    fmt = P(n, es)
    if n <= 4:
        g = np.meshgrid(*[np.arange(1 << n)] * 3, indexing="ij")
        ops = [x.ravel() for x in g]
    else:
        rng = _rng(f"fma{n}_{es}")
        ops = list(rng.integers(0, 1 << n, (3, 3000)))
        near = _near_product_negation(n, es, ops[0][:1000], ops[1][:1000], rng)
        ops[2][:1000] = near
    _check_arith(fmt, "fma", tuple(o.astype(fmt.code_dtype) for o in ops), "triples")


def _near_product_negation(n, es, a, b, rng):
    """Codes next to the nearest posit of -a*b (so that a*b + c cancels heavily)."""
    out = []
    for x, y in zip(a.tolist(), b.tolist()):
        p = _exact("mul", ref.decode(n, es, x), ref.decode(n, es, y))
        base = ref.nar(n) if p is None else ref.round_fraction(n, es, -p)
        out.append((base + int(rng.integers(-2, 3))) % (1 << n))
    return np.array(out)


def _pool(n, rng, k):
    """Random codes: a third uniform, a third near +-1, a third near 0 / +-minpos / +-maxpos."""
    big = 1 << n
    one = 1 << (n - 2)
    span = max(2, big >> 6)
    top = (1 << (n - 1)) - 1
    uni = rng.integers(0, big, k)
    near1 = one + rng.integers(-span, span + 1, k)
    ext = rng.choice([0, 1, 2, 3, 4, top - 3, top - 2, top - 1, top], k)
    pick = rng.integers(0, 3, k)
    c = np.where(pick == 0, uni, np.where(pick == 1, near1, ext)) % big
    flip = (rng.random(k) < 0.5) & (pick > 0)
    return np.where(flip, _neg_codes(c, n), c) % big


def _random_operands(n, es, op, rng, k):
    a = _pool(n, rng, k)
    b = _pool(n, rng, k)
    m = k * 2 // 5
    big = 1 << n
    delta = rng.integers(-3, 4, m)
    if op == "add":                              # near cancellation: b close to -a
        b[:m] = (_neg_codes(a[:m], n) + delta) % big
    elif op == "sub":
        b[:m] = (a[:m] + delta) % big
    if op != "fma":
        return a, b
    c = _pool(n, rng, k)
    c[:m] = _near_product_negation(n, es, a[:m], b[:m], rng)
    return a, b, c


BIG_ARITH = [(7, 1), (8, 0), (8, 2), (10, 1), (12, 3), (16, 1), (16, 2), (20, 4), (24, 0),
             (28, 3), (32, 0), (32, 1), (32, 2), (32, 4)]


@pytest.mark.parametrize("op", ["add", "sub", "mul", "fma"])
@pytest.mark.parametrize("n,es", BIG_ARITH, ids=[_pid(*p) for p in BIG_ARITH])
def test_arith_random(n, es, op):
    fmt = P(n, es)
    ops = _random_operands(n, es, op, _rng(f"arith{n}_{es}_{op}"), 1000)
    _check_arith(fmt, op, tuple(o.astype(fmt.code_dtype) for o in ops), "random")


def test_arith_32bit_significand_products():
    """posit32_0 has 30-bit significands near 1: exact products need 60 bits; 1.x + tiny
    needs a long alignment."""
    n, es = 32, 0
    fmt = P(n, es)
    one = 1 << 30
    rng = _rng("sig60")
    a = one + rng.integers(1, 1 << 28, 600)               # in (1, 1.5): 29 fraction bits
    b = one + rng.integers(1, 1 << 28, 600)
    _check_arith(fmt, "mul", (a.astype(np.uint32), b.astype(np.uint32)), "60-bit")
    c = _near_product_negation(n, es, a, b, rng)
    _check_arith(fmt, "fma", (a.astype(np.uint32), b.astype(np.uint32), c.astype(np.uint32)),
                 "60-bit")
    tiny = rng.integers(1, 1 << 20, 600)                  # 1 + tiny: a long add
    _check_arith(fmt, "add", (a.astype(np.uint32), tiny.astype(np.uint32)), "60-bit")


# (n, es, t, gap): the posits nearest 2**t and 2**(t - gap), both inside the format's range
STICKY = [(n, es, t, gap) for n, es, t in [(32, 2, 60), (32, 2, 110), (12, 3, 60), (32, 4, 100),
                                           (20, 4, 0), (16, 2, 50)]
          for gap in (100, 127, 128, 129, 130, 160, 200)
          if -ref.emax(n, es) <= t - gap and t < ref.emax(n, es)]


@pytest.mark.parametrize("n,es,top_exp,gap", STICKY,
                         ids=[f"{_pid(n, es)}-2^{t}-gap{g}" for n, es, t, g in STICKY])
def test_add_keeps_a_far_smaller_addend_as_sticky(n, es, top_exp, gap):
    """a +- b with a the posit nearest 2**t and b the posit nearest 2**(t - gap): the small
    addend must still steer the directed modes (and stochastic rounding) however far below it
    lies.  (posit16_2's range allows only gap 100: a control that must pass.)"""
    fmt = P(n, es)
    lo = top_exp - gap
    a = ref.round_fraction(n, es, F(2) ** top_exp)
    b = ref.round_fraction(n, es, F(2) ** lo)
    big_v, small_v = ref.decode(n, es, a), ref.decode(n, es, b)
    nb = (-b) % (1 << n)
    A = _codes(fmt, [a, a, (-a) % (1 << n), (-a) % (1 << n)])
    B = _codes(fmt, [b, nb, b, nb])
    one = _codes(fmt, [1 << (n - 2)] * 4)
    exact = [big_v + small_v, big_v - small_v, -big_v + small_v, -big_v - small_v]
    for mode in MODES5:
        want = [ref.round_fraction(n, es, x, mode) for x in exact]
        _same_codes(f"add gap {gap} {mode}", fmt.add(A, B, mode), want, (A, B))
        _same_codes(f"sub gap {gap} {mode}", fmt.sub(A, _codes(fmt, _neg_codes(B, n)), mode),
                    want, (A, B))
        _same_codes(f"fma(a, 1, b) gap {gap} {mode}", fmt.fma(A, one, B, mode), want, (A, B))
    for s in (1, 4):
        _same_codes(f"add gap {gap} stochastic/{s}",
                    fmt.add(A, B, "stochastic", seed=8, sr_bits=s),
                    _stochastic_expect(n, es, exact, 8, s), (A, B))


CONVERT = [((32, 2), (16, 1)), ((16, 1), (8, 0)), ((8, 0), (16, 2)), ((32, 4), (12, 0)),
           ((24, 0), (32, 4)), ((32, 0), (32, 3)), ((16, 2), (5, 4))]


@pytest.mark.parametrize("src,dst", CONVERT, ids=[f"{_pid(*s)}->{_pid(*d)}" for s, d in CONVERT])
def test_convert_between_posits(src, dst):
    fs, fd = P(*src), P(*dst)
    codes = _pool(fs.bits, _rng(f"conv{src}{dst}"), 1500).astype(fs.code_dtype)
    cache = _RefCache(*dst)
    expect = np.array([cache(v) for v in _values(*src, codes)], dtype=np.int64)
    for j, mode in enumerate(MODES5):
        _same_codes(f"convert {fs.name}->{fd.name} {mode}", fs.convert(codes, fd, mode),
                    expect[:, j], (codes,))
    seed, s = 7, 4
    rn = _rnds(seed, s, codes.size)
    want = [ref.nar(fd.bits) if v is None else
            ref.round_fraction(*dst, v, "stochastic", rnd=r, sr_bits=s)
            for v, r in zip(_values(*src, codes), rn)]
    _same_codes("convert stochastic", fs.convert(codes, fd, "stochastic", seed=seed, sr_bits=s),
                want, (codes,))


def test_convert_posit_to_fp32_and_fp16_to_posit():
    p32 = formats.get("posit32_2")
    fp32 = formats.get("fp32")
    codes = _pool(32, _rng("p2f"), 2000).astype(np.uint32)
    got = p32.convert(codes, fp32)
    want = np.asarray(p32.decode(codes), dtype=np.float32).view(np.uint32)   # RNE, NaR -> NaN
    nan = np.isnan(want.view(np.float32))
    assert np.array_equal(np.isnan(got.view(np.float32)), nan)
    _same_codes("posit32_2 -> fp32", got[~nan], want[~nan], (codes[~nan],))
    fp16 = formats.get("fp16")
    h = np.arange(0, 1 << 16, 5, dtype=np.uint16)
    hv = h.view(np.float16)
    p8 = formats.get("posit8_0")
    cache = _RefCache(8, 0)
    expect = np.array([cache(None if not np.isfinite(v) else F(float(v))) for v in hv])
    for j, mode in enumerate(MODES5):
        _same_codes(f"fp16 -> posit8_0 {mode}", fp16.convert(h, p8, mode), expect[:, j], (h,))


# ---------------------------------------------------------------------------------------------
# 4. properties
# ---------------------------------------------------------------------------------------------

PROP_ALL = [(n, es) for n in (2, 3, 5, 8, 11, 14, 16) for es in ALL_ES]


@pytest.mark.parametrize("n,es", PROP_ALL, ids=[_pid(*p) for p in PROP_ALL])
def test_monotone_and_negation_every_code(n, es):
    fmt = P(n, es)
    codes = np.arange(1 << n, dtype=np.int64)
    codes = codes[codes != fmt.nar_code]
    v = fmt.decode(codes.astype(fmt.code_dtype))
    order = np.argsort(_signed(codes, n), kind="stable")
    assert np.all(np.diff(v[order]) > 0), "decoded values are not increasing in code order"
    neg = fmt.decode(_neg_codes(codes, n).astype(fmt.code_dtype))
    assert np.array_equal(neg, -v + 0.0), "decode(-c mod 2**n) != -decode(c)"
    assert np.isnan(fmt.decode(np.array([fmt.nar_code], dtype=fmt.code_dtype))[0])


PROP_RANDOM = [(n, es) for n in (20, 24, 29, 32) for es in ALL_ES]


@pytest.mark.parametrize("n,es", PROP_RANDOM, ids=[_pid(*p) for p in PROP_RANDOM])
def test_monotone_and_negation_random_codes(n, es):
    fmt = P(n, es)
    rng = _rng(f"mono{n}_{es}")
    top = (1 << (n - 1)) - 1
    codes = np.unique(np.concatenate([rng.integers(0, 1 << n, 20000),
                                      [0, 1, 2, top, top - 1, top + 2, (1 << n) - 1]]))
    codes = codes[codes != fmt.nar_code]
    order = np.argsort(_signed(codes, n))
    v = fmt.decode(codes[order].astype(fmt.code_dtype))
    assert np.all(np.diff(v) > 0)
    neg = fmt.decode(_neg_codes(codes[order], n).astype(fmt.code_dtype))
    assert np.array_equal(neg, -v + 0.0)


ENC_PROP = [(4, 1), (8, 0), (8, 4), (16, 1), (16, 3), (32, 0), (32, 2), (32, 4)]


@pytest.mark.parametrize("n,es", ENC_PROP, ids=[_pid(*p) for p in ENC_PROP])
def test_encode_is_monotone_and_odd(n, es):
    """Sorted reals give non-decreasing signed codes in every mode; encode(-x) is the two's
    complement of encode(x) with the directed modes mirrored."""
    fmt = P(n, es)
    rng = _rng(f"encprop{n}_{es}")
    e = ref.emax(n, es)
    x = np.ldexp(1.0 + rng.random(5000), rng.integers(-e - 4, e + 4, 5000))
    x = np.sort(np.concatenate([x, -x, [0.0]]))
    for mode in MODES5:
        c = fmt.encode(x, mode)
        assert np.all(np.diff(_signed(c, n)) >= 0), mode
        _same_codes(f"encode(-x) {mode}", fmt.encode(-x, MIRROR[mode]), _neg_codes(c, n), (x,))


PROP_FORMATS = [(2, 0), (3, 2), (4, 1), (8, 0), (8, 2), (16, 1), (16, 4), (24, 3), (32, 0),
                (32, 2), (32, 4)]
ALL_MODES = MODES5 + ("stochastic",)


def _all_mode_results(fn):
    """fn(mode, **kw) for every mode (stochastic with two sr_bits)."""
    for mode in MODES5:
        yield mode, fn(mode)
    for s in (1, 32):
        yield f"stochastic/{s}", fn("stochastic", seed=3, sr_bits=s)


@pytest.mark.parametrize("n,es", PROP_FORMATS, ids=[_pid(*p) for p in PROP_FORMATS])
def test_no_underflow_to_zero(n, es):
    fmt = P(n, es)
    big = 1 << n
    minpos = F(2) ** -fmt.emax
    tiny = [5e-324, 1e-300, 2.0 ** -1000, float(minpos) / 2, float(minpos) / 3,
            float(np.nextafter(float(minpos), 0)), float(minpos)]
    x = np.array(tiny + [-t for t in tiny])
    want = np.array([1] * len(tiny) + [big - 1] * len(tiny))
    for mode, got in _all_mode_results(lambda m, **kw: fmt.encode(x, m, **kw)):
        _same_codes(f"encode tiny {mode}", got, want, (x,))
    for mode, got in _all_mode_results(lambda m, **kw: fmt.quantize(x, m, **kw)):
        assert np.array_equal(got, np.where(x > 0, float(minpos), -float(minpos))), mode
    for dt in (np.float32, np.float16):                      # smallest subnormals
        xs = np.array([np.finfo(dt).smallest_subnormal, -np.finfo(dt).smallest_subnormal],
                      dtype=dt)
        for mode in MODES5:
            _same_codes(f"encode {np.dtype(dt).name} tiny {mode}", fmt.encode(xs, mode),
                        [ref.round_fraction(n, es, F(float(v)), mode) for v in xs], (xs,))
        for s in (1, 32):
            assert (fmt.encode(xs, "stochastic", seed=2, sr_bits=s) != 0).all()
    # products and fused results below minpos (in magnitude)
    mp, nmp = 1, big - 1
    one_up = (1 << (n - 2)) + 1 if n > 2 else 1              # 1 + epsilon (or 1 for n = 2)
    a = _codes(fmt, [mp, mp, nmp, nmp, mp, nmp])
    b = _codes(fmt, [mp, nmp, mp, nmp, mp, mp])
    want_mul = [1, big - 1, big - 1, 1, 1, big - 1]
    for mode, got in _all_mode_results(lambda m, **kw: fmt.mul(a, b, m, **kw)):
        _same_codes(f"mul tiny {mode}", got, want_mul, (a, b))
    c0 = _codes(fmt, [0] * 6)
    for mode, got in _all_mode_results(lambda m, **kw: fmt.fma(a, b, c0, m, **kw)):
        _same_codes(f"fma tiny {mode}", got, want_mul, (a, b))
    if n > 3:    # minpos * (1 + eps) - minpos: a tiny nonzero sum
        fa = _codes(fmt, [mp, nmp, mp])
        fb = _codes(fmt, [one_up, one_up, _neg_codes([one_up], n)[0]])
        fc = _codes(fmt, [nmp, mp, mp])
        for mode, got in _all_mode_results(lambda m, **kw: fmt.fma(fa, fb, fc, m, **kw)):
            _same_codes(f"fma tiny sum {mode}", got, [1, big - 1, big - 1], (fa, fb, fc))
    q = formats.Quire(fmt).fma(_codes(fmt, [mp]), _codes(fmt, [mp]))
    for mode in MODES5:
        assert int(q.to_posit(mode)) == 1, mode
    assert int(q.to_posit("stochastic", seed=1, sr_bits=1)) == 1


@pytest.mark.parametrize("n,es", PROP_FORMATS, ids=[_pid(*p) for p in PROP_FORMATS])
def test_no_overflow_to_nar(n, es):
    fmt = P(n, es)
    big = 1 << n
    top = (1 << (n - 1)) - 1
    maxpos = float(F(2) ** fmt.emax)
    huge = [np.finfo(np.float64).max, 1e300, maxpos * 2, float(np.nextafter(maxpos, np.inf)),
            maxpos]
    x = np.array(huge + [-h for h in huge])
    want = np.array([top] * len(huge) + [top + 2] * len(huge))
    for mode, got in _all_mode_results(lambda m, **kw: fmt.encode(x, m, **kw)):
        _same_codes(f"encode huge {mode}", got, want, (x,))
    for mode, got in _all_mode_results(lambda m, **kw: fmt.quantize(x, m, **kw)):
        assert np.array_equal(got, np.where(x > 0, maxpos, -maxpos)), mode
    xi = np.array([2 ** 63 - 1, -2 ** 63], dtype=np.int64)
    if maxpos < 2.0 ** 62:
        for mode, got in _all_mode_results(lambda m, **kw: fmt.encode(xi, m, **kw)):
            _same_codes(f"encode int64 huge {mode}", got, [top, top + 2], (xi,))
    a = _codes(fmt, [top, top, top + 2, top + 2])
    b = _codes(fmt, [top, top + 2, top, top + 2])
    want = [top, top + 2, top + 2, top]
    for mode, got in _all_mode_results(lambda m, **kw: fmt.mul(a, b, m, **kw)):
        _same_codes(f"mul huge {mode}", got, want, (a, b))
    # M*M + M, -M*M + M, -M*M - M, M*M - M: +-maxpos (0 for n = 2, where maxpos = 1)
    want = [top, top + 2, top + 2, top] if n > 2 else [top, 0, top + 2, 0]
    for mode, got in _all_mode_results(lambda m, **kw: fmt.fma(a, b, a, m, **kw)):
        _same_codes(f"fma huge {mode}", got, want, (a, b, a))
    for mode, got in _all_mode_results(lambda m, **kw: fmt.add(a, a, m, **kw)):
        _same_codes(f"add huge {mode}", got, [top, top, top + 2, top + 2], (a, a))
    for mode, got in _all_mode_results(lambda m, **kw: fmt.sub(a, b, m, **kw)):
        _same_codes(f"sub huge {mode}", got, [0, top, top + 2, 0], (a, b))
    assert fmt.nar_code == top + 1 == big // 2


@pytest.mark.parametrize("n,es", PROP_FORMATS, ids=[_pid(*p) for p in PROP_FORMATS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_nan_and_inf_give_nar(n, es, dtype):
    fmt = P(n, es)
    x = np.array([np.nan, np.inf, -np.inf, -np.nan, 1.0], dtype=dtype)
    want = [fmt.nar_code] * 4 + [ref.round_fraction(n, es, 1)]
    # every mode has its own compiled loop: all of them for float64; for the narrower inputs
    # (which only widen on the way in) one deterministic mode and stochastic keep compiles few
    if dtype == np.float64:
        results = list(_all_mode_results(lambda m, **kw: fmt.encode(x, m, **kw)))
        quantized = list(_all_mode_results(lambda m, **kw: fmt.quantize(x, m, **kw)))
    else:
        results = [(m, fmt.encode(x, m, seed=1)) for m in ("toward_zero", "stochastic")]
        quantized = [("nearest_even", fmt.quantize(x))]
    for mode, got in results:
        _same_codes(f"encode nan/inf {mode}", got, want, (x.astype(np.float64),))
    for mode, got in quantized:
        assert np.isnan(got[:4]).all() and got[4] == 1.0, mode


@pytest.mark.parametrize("n,es", [(3, 0), (8, 0), (8, 3), (16, 1), (32, 2), (32, 4)])
def test_nar_operand_gives_nar(n, es):
    fmt = P(n, es)
    nar = fmt.nar_code
    others = np.arange(1 << n) if n <= 8 else _pool(n, _rng(f"nar{n}"), 3000)
    others = others.astype(fmt.code_dtype)
    r = np.array(nar, dtype=fmt.code_dtype)
    cases = {"add(NaR, x)": ("add", (r, others)), "add(x, NaR)": ("add", (others, r)),
             "sub(NaR, x)": ("sub", (r, others)), "sub(x, NaR)": ("sub", (others, r)),
             "mul(NaR, x)": ("mul", (r, others)), "mul(x, NaR)": ("mul", (others, r)),
             "fma(NaR, x, x)": ("fma", (r, others, others)),
             "fma(x, NaR, x)": ("fma", (others, r, others)),
             "fma(x, x, NaR)": ("fma", (others, others, r))}
    for what, (op, ops) in cases.items():
        for mode, got in _all_mode_results(lambda m, **kw: getattr(fmt, op)(*ops, m, **kw)):
            assert (np.asarray(got) == nar).all(), f"{what} {mode}"
    assert np.isnan(fmt.decode(r))
    for other in (P(16, 1), formats.get("fp32")):
        got = fmt.convert(np.array([nar], dtype=fmt.code_dtype), other)
        assert np.isnan(other.decode(got)).all()


DESCR = [(n, es) for n in (2, 3, 4, 8, 12, 16, 20, 32) for es in ALL_ES]


@pytest.mark.parametrize("n,es", DESCR, ids=[_pid(*p) for p in DESCR])
def test_format_properties(n, es):
    fmt = P(n, es)
    top = (1 << (n - 1)) - 1
    assert fmt.emax == ref.emax(n, es) and fmt.nbits == fmt.bits == n and fmt.es == es
    assert F(fmt.max) == ref.decode(n, es, top)
    assert F(fmt.min_normal) == F(fmt.min_subnormal) == ref.decode(n, es, 1)
    assert fmt.nar_code == ref.nar(n)
    assert fmt.n_finite == (1 << n) - 1
    assert np.dtype(fmt.code_dtype) == {8: np.uint8, 16: np.uint16, 32: np.uint32}[
        8 if n <= 8 else 16 if n <= 16 else 32]
    if n >= 3:
        one = 1 << (n - 2)
        assert ref.decode(n, es, one) == 1
        assert F(fmt.epsilon) == ref.decode(n, es, one + 1) - 1
    if n <= 16:
        v = fmt.values()
        want = sorted(x for x in (ref.decode(n, es, c) for c in range(1 << n)) if x is not None)
        assert [F(t) for t in v] == want
    else:
        with pytest.raises(ValueError):
            fmt.values()


def test_named_posits():
    for name, (n, es) in {"posit8_0": (8, 0), "posit16_1": (16, 1), "posit32_2": (32, 2),
                          "posit8_2": (8, 2), "posit16_2": (16, 2), "posit4_1": (4, 1)}.items():
        f = formats.get(name)
        assert isinstance(f, formats.PositFormat) and (f.bits, f.es) == (n, es) and f.name == name
        assert name in formats.names()
    f = formats.get("posit13_3")
    assert (f.bits, f.es) == (13, 3) and f == P(13, 3)


# ---------------------------------------------------------------------------------------------
# 5. stochastic rounding
# ---------------------------------------------------------------------------------------------

def _stochastic_expect(n, es, xs, seed, sr_bits, start=0):
    rn = _rnds(seed, sr_bits, len(xs), start)
    return [ref.nar(n) if x is None else ref.round_fraction(n, es, x, "stochastic", rnd=r,
                                                             sr_bits=sr_bits)
            for x, r in zip(xs, rn)]


SR_FORMATS = [(4, 1), (8, 0), (8, 4), (16, 1), (32, 0), (32, 2), (32, 4), (12, 3)]


@pytest.mark.parametrize("sr_bits", SR_BITS)
@pytest.mark.parametrize("n,es", SR_FORMATS, ids=[_pid(*p) for p in SR_FORMATS])
def test_stochastic_encode_exact(n, es, sr_bits):
    fmt = P(n, es)
    rng = _rng(f"sr{n}_{es}_{sr_bits}")
    e = ref.emax(n, es)
    x = np.ldexp(1.0 + rng.random(1500), rng.integers(-e - 2, e + 2, 1500))
    x = np.where(rng.random(1500) < 0.5, -x, x)
    seed = 1000 + sr_bits
    want = _stochastic_expect(n, es, [F(float(v)) for v in x], seed, sr_bits)
    got = fmt.encode(x, "stochastic", seed=seed, sr_bits=sr_bits)
    _same_codes(f"stochastic encode {fmt.name} sr_bits={sr_bits}", got, want, (x,))
    q = fmt.quantize(x, "stochastic", seed=seed, sr_bits=sr_bits)
    assert np.array_equal(q, [_ref_float(n, es, c) for c in want])
    if sr_bits == 32:
        assert np.array_equal(fmt.encode(x, "stochastic", seed=seed), got)   # the default


def _pick_u(n, es, rng) -> int:
    """A truncated magnitude code 1 .. maxpos_code - 1 with log-uniform value (long regimes are
    as likely as short ones; there the longer strings still fit in float64)."""
    e = ref.emax(n, es)
    k = int(rng.integers(-e, e))
    u = ref.round_fraction(n, es, F(2) ** k * (1 + F(float(rng.random()))), "toward_zero")
    assert 1 <= u < ref.maxpos_code(n)
    return u


def _threshold_points(n, es, seed, sr_bits, count, rng):
    """Values whose stochastic threshold is r, r + 1, or r (just below r + 1) where r is the
    number element i draws: each triple tests 'away iff rnd < threshold' at the edge.
    Returns (values as exact Fractions, expected codes); only float64-exact values are used."""
    key = resolve_seed(seed)
    m = sr_bits + 2
    xs, want = [], []
    tries = 0
    while len(xs) < count and tries < 40 * count:
        tries += 1
        i = len(xs)
        r = int(random_bits(key, i, sr_bits))
        kind = i % 3
        if kind == 1 and r + 1 >= 1 << sr_bits:
            kind = 0
        R = {0: r << 2, 1: (r + 1) << 2, 2: ((r + 1) << 2) - 1}[kind]
        u = _pick_u(n, es, rng)
        neg = bool(rng.integers(0, 2))
        x = ref.value_with(n, es, neg, u, F(R, 1 << m))
        if F(float(x)) != x:
            continue
        t = (R << sr_bits) >> m                            # floor(rem * 2**sr_bits)
        assert ref.sr_threshold(n, es, x, sr_bits)[2] == t
        away = r < t
        assert away == (kind == 1)
        code = u + away
        xs.append(x)
        want.append((-code) % (1 << n) if neg else code)
    return xs, want


EDGE_FORMATS = [(6, 4), (8, 0), (8, 4), (12, 2), (16, 1), (16, 3), (24, 2), (32, 2), (32, 4)]


@pytest.mark.parametrize("sr_bits", SR_BITS)
@pytest.mark.parametrize("n,es", EDGE_FORMATS, ids=[_pid(*p) for p in EDGE_FORMATS])
def test_stochastic_threshold_edge(n, es, sr_bits):
    """rem*2**sr_bits == r (stays), == r + 1 (goes away), a hair below r + 1 (stays)."""
    fmt = P(n, es)
    seed = 77 + n + sr_bits
    xs, want = _threshold_points(n, es, seed, sr_bits, 120, _rng(f"edge{n}_{es}_{sr_bits}"))
    assert len(xs) >= 60, "too few float64-exact edge values"
    x = np.array([float(v) for v in xs])
    got = fmt.encode(x, "stochastic", seed=seed, sr_bits=sr_bits)
    _same_codes(f"stochastic edge {fmt.name} sr_bits={sr_bits}", got, want, (x,))
    q = fmt.quantize(x, "stochastic", seed=seed, sr_bits=sr_bits)
    assert np.array_equal(q, [_ref_float(n, es, c) for c in want])


@pytest.mark.parametrize("op", ["add", "sub", "mul", "fma"])
@pytest.mark.parametrize("sr_bits", SR_BITS)
@pytest.mark.parametrize("n,es", [(6, 2), (8, 0), (16, 1), (32, 0), (32, 4)])
def test_stochastic_arith_exact(n, es, sr_bits, op):
    fmt = P(n, es)
    ops = _random_operands(n, es, op, _rng(f"srop{n}_{es}_{op}"), 400)
    ops = tuple(o.astype(fmt.code_dtype) for o in ops)
    seed = 5 + sr_bits
    exact = [_exact(op, *v) for v in zip(*[_values(n, es, o) for o in ops])]
    want = _stochastic_expect(n, es, exact, seed, sr_bits)
    got = getattr(fmt, op)(*ops, rounding="stochastic", seed=seed, sr_bits=sr_bits)
    _same_codes(f"stochastic {op} {fmt.name} sr_bits={sr_bits}", got, want, ops)


def test_stochastic_int64_exact():
    fmt = P(32, 2)
    rng = _rng("srint")
    x = (rng.integers(1 << 53, 1 << 62, 500, dtype=np.int64)
         * np.where(rng.random(500) < 0.5, -1, 1)).astype(np.int64)
    for s in SR_BITS:
        want = _stochastic_expect(32, 2, [F(int(v)) for v in x], 9, s)
        _same_codes(f"stochastic int64 sr_bits={s}",
                    fmt.encode(x, "stochastic", seed=9, sr_bits=s), want, (x,))


@pytest.mark.parametrize("n,es", [(8, 0), (16, 1), (32, 2)])
def test_stochastic_independent_of_chunks_and_shape(n, es):
    fmt = P(n, es)
    rng = _rng(f"chunks{n}")
    e = ref.emax(n, es)
    x = np.ldexp(1.0 + rng.random(301), rng.integers(-e, e, 301))
    ops = _random_operands(n, es, "fma", rng, 301)
    ops = tuple(o.astype(fmt.code_dtype) for o in ops)
    o2 = P(n // 2 + 1, es)
    K = 13
    da = ops[0][:301 - 301 % K].reshape(-1, K)
    db = ops[1][:301 - 301 % K].reshape(-1, K)

    def run():
        kw = dict(seed=31, sr_bits=16)
        return [fmt.encode(x, "stochastic", **kw), fmt.quantize(x, "stochastic", **kw),
                fmt.add(ops[0], ops[1], "stochastic", **kw),
                fmt.fma(*ops, rounding="stochastic", **kw),
                fmt.convert(ops[0], o2, "stochastic", **kw),
                formats.fused_dot(fmt, da, db, "stochastic", **kw)]

    base = run()
    with formats.chunk_size(7):
        small = run()
    for i, (a, b) in enumerate(zip(base, small)):
        assert np.array_equal(a, b), f"result {i} depends on the chunk size"
    again = run()
    for i, (a, b) in enumerate(zip(base, again)):
        assert np.array_equal(a, b), f"result {i}: same seed, different result"
    other = fmt.encode(x, "stochastic", seed=32, sr_bits=16)
    assert not np.array_equal(other, base[0]), "a different seed changed nothing"
    # shape: the flat (C-order) index decides, whatever the shape or memory layout
    xs = x[:300]
    ref_codes = fmt.encode(xs, "stochastic", seed=31)
    assert np.array_equal(fmt.encode(xs.reshape(10, 30), "stochastic", seed=31),
                          ref_codes.reshape(10, 30))
    assert np.array_equal(fmt.encode(np.asfortranarray(xs.reshape(10, 30)), "stochastic",
                                     seed=31), ref_codes.reshape(10, 30))
    assert np.array_equal(fmt.encode(xs.reshape(5, 6, 10), "stochastic", seed=31).ravel(),
                          ref_codes)
    a2, b2 = ops[0][:300].reshape(15, 20), ops[1][:300].reshape(15, 20)
    flat = fmt.mul(ops[0][:300], ops[1][:300], "stochastic", seed=4)
    assert np.array_equal(fmt.mul(a2, b2, "stochastic", seed=4), flat.reshape(15, 20))
    assert np.array_equal(fmt.mul(np.asfortranarray(a2), b2, "stochastic", seed=4),
                          flat.reshape(15, 20))


# ---------------------------------------------------------------------------------------------
# 6. the quire and fused_dot
# ---------------------------------------------------------------------------------------------

QUIRE_FORMATS = [(2, 1), (5, 0), (5, 3), (8, 0), (8, 1), (12, 4), (16, 1), (16, 2), (16, 3),
                 (24, 4), (32, 0), (32, 1), (32, 2), (32, 4)]
LENGTHS = (1, 2, 7, 100, 2000)


def _exact_dot(n, es, a, b) -> F:
    s = sum(ref.decode_scaled(n, es, int(x)) * ref.decode_scaled(n, es, int(y))
            for x, y in zip(a, b))
    return F(s, 1 << (2 * ref.emax(n, es)))


def _quire_vectors(n, kind, length, rng):
    """Code vectors (no NaR) of one kind: uniform codes, codes near +-1, or a heavy
    cancellation (x.y - x.y shuffled together with a few small extra products)."""
    big = 1 << n
    if kind == "uniform":
        a, b = rng.integers(0, big, length), rng.integers(0, big, length)
    elif kind == "near_one":
        a, b = _pool(n, rng, length), _pool(n, rng, length)
    else:
        h = max(1, (length - 3) // 2)
        x, y = rng.integers(0, big, h), rng.integers(0, big, h)
        k = max(0, length - 2 * h)
        ex, ey = _pool(n, rng, k), _pool(n, rng, k)
        a = np.concatenate([x, _neg_codes(x, n), ex])
        b = np.concatenate([y, y, ey])
        perm = rng.permutation(a.size)
        a, b = a[perm], b[perm]
    a = np.where(a == big // 2, 0, a)
    b = np.where(b == big // 2, 1, b)
    return a.astype(np.int64), b.astype(np.int64)


@pytest.mark.parametrize("kind", ["uniform", "near_one", "cancel"])
@pytest.mark.parametrize("n,es", QUIRE_FORMATS, ids=[_pid(*p) for p in QUIRE_FORMATS])
def test_quire_dot_exact(n, es, kind):
    fmt = P(n, es)
    rng = _rng(f"quire{n}_{es}_{kind}")
    for length in LENGTHS:
        a, b = _quire_vectors(n, kind, length, rng)
        a, b = a.astype(fmt.code_dtype), b.astype(fmt.code_dtype)
        exact = _exact_dot(n, es, a, b)
        q = formats.Quire(fmt).fma(a, b)
        assert not q.is_nar
        assert q.to_fraction() == exact, (length, kind)
        want = ref.round_all(n, es, exact)
        got = [int(q.to_posit(m)) for m in MODES5]
        assert got == want, f"{fmt.name} {kind} len={length}: quire {got} reference {want}"
        fd = [int(formats.fused_dot(fmt, a, b, m)) for m in MODES5]
        assert fd == want, f"{fmt.name} {kind} len={length}: fused_dot {fd} reference {want}"
        for s in SR_BITS:
            seed = length + s
            r0 = int(random_bits(resolve_seed(seed), 0, s))
            w = ref.round_fraction(n, es, exact, "stochastic", rnd=r0, sr_bits=s)
            assert int(q.to_posit("stochastic", seed=seed, sr_bits=s)) == w, (length, s)
            assert int(formats.fused_dot(fmt, a, b, "stochastic", seed=seed, sr_bits=s)) == w
            if s == 32:                                        # the default
                assert int(q.to_posit("stochastic", seed=seed)) == w
                assert int(formats.fused_dot(fmt, a, b, "stochastic", seed=seed)) == w


@pytest.mark.parametrize("n,es", [(8, 0), (16, 1), (32, 2), (32, 4)])
def test_fused_dot_rows_stochastic(n, es):
    """Each row rounds with its own flat index as the random-stream index."""
    fmt = P(n, es)
    rng = _rng(f"fdrows{n}_{es}")
    rows, K = 60, 37
    a = np.stack([_quire_vectors(n, "near_one", K, rng)[0] for _ in range(rows)])
    b = np.stack([_quire_vectors(n, "cancel", K, rng)[1] for _ in range(rows)])
    a, b = a.astype(fmt.code_dtype), b.astype(fmt.code_dtype)
    exact = [_exact_dot(n, es, a[r], b[r]) for r in range(rows)]
    for m in MODES5:
        _same_codes(f"fused_dot rows {m}", formats.fused_dot(fmt, a, b, m),
                    [ref.round_fraction(n, es, x, m) for x in exact])
    for s in SR_BITS:
        want = _stochastic_expect(n, es, exact, 11, s)
        got = formats.fused_dot(fmt, a.reshape(6, 10, K), b.reshape(6, 10, K), "stochastic",
                                seed=11, sr_bits=s)
        assert got.shape == (6, 10)
        _same_codes(f"fused_dot rows stochastic sr_bits={s}", got, want)


def _as_posit_sum(n, es, x: F, limit=400):
    """Codes (a_i, b_i) with sum a_i * b_i == x exactly (greedy, toward zero), or None."""
    one = 1 << (n - 2)
    minpos = F(2) ** -ref.emax(n, es)
    pa, pb = [], []
    r = x
    while r != 0 and len(pa) < limit:
        if abs(r) >= minpos:
            c, b = ref.round_fraction(n, es, r, "toward_zero"), one
        else:
            c, b = ref.round_fraction(n, es, r / minpos, "toward_zero"), 1
        v = ref.decode(n, es, c) * ref.decode(n, es, b)
        if abs(v) > abs(r):
            return None
        pa.append(c)
        pb.append(b)
        r -= v
    return (pa, pb) if r == 0 else None


# (n, es, sr_bits): the edge sums need sr_bits + 2 bits below the last code bit, within the
# quire's resolution minpos**2, so posit8_0 takes only few random bits
QEDGE = ([(8, 0, 1), (8, 0, 4), (12, 3, 1), (12, 3, 4)]
         + [(n, es, s) for n, es in [(16, 1), (32, 2), (32, 4)] for s in SR_BITS])


@pytest.mark.parametrize("n,es,sr_bits", QEDGE)
def test_quire_stochastic_threshold_edge(n, es, sr_bits):
    """Quire sums built to sit exactly at the threshold of the drawn random number: Quire uses
    index 0, fused_dot the row index."""
    fmt = P(n, es)
    rng = _rng(f"qedge{n}_{es}_{sr_bits}")
    key_seed = 500 + sr_bits
    key = resolve_seed(key_seed)
    m = sr_bits + 2
    rows_a, rows_b, want = [], [], []
    for _ in range(400):
        if len(want) >= 45:
            break
        r_row = int(random_bits(key, len(want), sr_bits))
        r0 = int(random_bits(key, 0, sr_bits))
        kind = len(want) % 3
        r = r_row
        if kind == 1 and r + 1 >= 1 << sr_bits:
            kind = 0
        R = {0: r << 2, 1: (r + 1) << 2, 2: ((r + 1) << 2) - 1}[kind]
        u = _pick_u(n, es, rng)
        neg = bool(rng.integers(0, 2))
        x = ref.value_with(n, es, neg, u, F(R, 1 << m))
        terms = _as_posit_sum(n, es, x)
        if terms is None:
            continue
        t = (R << sr_bits) >> m
        code = u + (r < t)
        want.append((-code) % (1 << n) if neg else code)
        rows_a.append(terms[0])
        rows_b.append(terms[1])
        # the same sum through a Quire (index 0)
        q = formats.Quire(fmt).fma(_codes(fmt, terms[0]), _codes(fmt, terms[1]))
        assert q.to_fraction() == x
        c0 = u + (r0 < t)
        w0 = (-c0) % (1 << n) if neg else c0
        assert int(q.to_posit("stochastic", seed=key_seed, sr_bits=sr_bits)) == w0
    assert len(want) >= 30, "too few decomposable edge sums"
    K = max(len(t) for t in rows_a)
    A = np.zeros((len(want), K), dtype=np.int64)
    B = np.zeros((len(want), K), dtype=np.int64)
    for i, (ta, tb) in enumerate(zip(rows_a, rows_b)):
        A[i, :len(ta)] = ta
        B[i, :len(tb)] = tb
    got = formats.fused_dot(fmt, A.astype(fmt.code_dtype), B.astype(fmt.code_dtype),
                            "stochastic", seed=key_seed, sr_bits=sr_bits)
    _same_codes(f"fused_dot edge {fmt.name} sr_bits={sr_bits}", got, want)


@pytest.mark.parametrize("n,es", [(5, 0), (8, 0), (16, 1), (24, 4), (32, 2), (32, 4)])
def test_quire_fms_add_clear_and_zero(n, es):
    fmt = P(n, es)
    rng = _rng(f"fms{n}_{es}")
    a, b = _quire_vectors(n, "near_one", 300, rng)
    c, d = _quire_vectors(n, "uniform", 200, rng)
    a, b, c, d = (v.astype(fmt.code_dtype) for v in (a, b, c, d))
    q = formats.Quire(fmt).fma(a, b).fms(c, d)
    exact = _exact_dot(n, es, a, b) - _exact_dot(n, es, c, d)
    assert q.to_fraction() == exact
    assert [int(q.to_posit(m)) for m in MODES5] == ref.round_all(n, es, exact)
    p = _pool(n, rng, 500)
    p = np.where(p == fmt.nar_code, 0, p).astype(fmt.code_dtype)
    q.add(p)
    exact += sum(_values(n, es, p))
    assert q.to_fraction() == exact
    assert [int(q.to_posit(m)) for m in MODES5] == ref.round_all(n, es, exact)
    # scalar pairs and chaining
    q2 = formats.Quire(fmt)
    for x, y in zip(a[:20], b[:20]):
        assert q2.fma(x, y) is q2
    assert q2.to_fraction() == _exact_dot(n, es, a[:20], b[:20])
    # exact cancellation gives code 0 in every mode
    q.clear()
    assert q.to_fraction() == 0 and int(q.to_posit()) == 0
    q.fma(c, d).fms(c, d)
    assert q.to_fraction() == 0
    assert [int(q.to_posit(m)) for m in MODES5] == [0] * 5
    assert int(q.to_posit("stochastic", seed=1, sr_bits=1)) == 0
    z = formats.fused_dot(fmt, np.concatenate([c, _neg_codes(c, n).astype(fmt.code_dtype)]),
                          np.concatenate([d, d]))
    assert int(z) == 0
    assert int(formats.Quire(fmt).to_posit()) == 0                   # empty quire
    assert np.array_equal(formats.fused_dot(fmt, np.zeros((3, 0), fmt.code_dtype),
                                            np.zeros((3, 0), fmt.code_dtype)), [0, 0, 0])


QWIDTH = [(n, es) for n in (2, 5, 8, 16, 24, 32) for es in ALL_ES]


@pytest.mark.parametrize("n,es", QWIDTH, ids=[_pid(*p) for p in QWIDTH])
def test_quire_width_and_range(n, es):
    """width = 4*emax + 32 (16n for es = 2); 1000 maxpos**2 - 1000 maxpos**2 + minpos**2 is
    held exactly (the quire spans maxpos**2 .. minpos**2 at once)."""
    fmt = P(n, es)
    e = fmt.emax
    q = formats.Quire(fmt)
    assert q.width == 4 * e + 32 and q.lsb_exponent == -2 * e
    if es == 2:
        assert q.width == 16 * n
    top = ref.maxpos_code(n)
    M = np.full(1000, top, dtype=fmt.code_dtype)
    q.fma(M, M)
    assert q.to_fraction() == 1000 * F(2) ** (2 * e)
    q.fma(np.array(1, fmt.code_dtype), np.array(1, fmt.code_dtype))
    assert q.to_fraction() == 1000 * F(2) ** (2 * e) + F(2) ** (-2 * e)
    assert [int(q.to_posit(m)) for m in MODES5] == [top] * 5
    q.fms(M, M)
    assert not q.is_nar
    assert q.to_fraction() == F(2) ** (-2 * e)
    assert [int(q.to_posit(m)) for m in MODES5] == [1] * 5
    # negative: -1000 maxpos**2 - minpos**2
    q.clear().fms(M, M).fms(np.array(1, fmt.code_dtype), np.array(1, fmt.code_dtype))
    assert q.to_fraction() == -1000 * F(2) ** (2 * e) - F(2) ** (-2 * e)
    assert [int(q.to_posit(m)) for m in MODES5] == [top + 2] * 5
    assert "Quire" in repr(q)


@pytest.mark.parametrize("n,es", [(4, 0), (8, 0), (16, 2), (32, 4)])
def test_quire_nar(n, es):
    fmt = P(n, es)
    nar = fmt.nar_code
    q = formats.Quire(fmt).fma(_codes(fmt, [1, 1 << (n - 2)]), _codes(fmt, [nar, 1]))
    assert q.is_nar
    for m in ALL_MODES:
        assert int(q.to_posit(m, seed=1) if m == "stochastic" else q.to_posit(m)) == nar, m
    with pytest.raises(ValueError):
        q.to_fraction()
    q.fms(_codes(fmt, [1]), _codes(fmt, [1]))            # stays NaR
    assert q.is_nar and int(q.to_posit()) == nar
    assert "NaR" in repr(q)
    q.clear()
    assert not q.is_nar and q.to_fraction() == 0
    assert formats.Quire(fmt).add(_codes(fmt, [0, nar])).is_nar
    a = np.ones((4, 5), dtype=np.int64) << (n - 2)
    a[2, 3] = nar
    got = formats.fused_dot(fmt, a.astype(fmt.code_dtype), a.astype(fmt.code_dtype))
    want = [ref.round_fraction(n, es, 5)] * 4
    want[2] = nar
    _same_codes("fused_dot NaR row", got, want)


def test_fused_dot_broadcasting_matches_separate_quires():
    for n, es in [(8, 0), (16, 1), (32, 2)]:
        fmt = P(n, es)
        rng = _rng(f"bcast{n}")
        K = 9
        a = _pool(n, rng, 3 * K).reshape(3, 1, K)
        b = _pool(n, rng, 4 * K).reshape(4, K)
        a = np.where(a == fmt.nar_code, 0, a).astype(fmt.code_dtype)
        b = np.where(b == fmt.nar_code, 0, b).astype(fmt.code_dtype)
        for mode in MODES5:
            got = formats.fused_dot(fmt, a, b, mode)
            assert got.shape == (3, 4) and got.dtype == fmt.code_dtype
            for i in range(3):
                for j in range(4):
                    q = formats.Quire(fmt).fma(a[i, 0], b[j])
                    assert int(got[i, j]) == int(q.to_posit(mode)), (n, mode, i, j)
                    assert int(got[i, j]) == ref.round_fraction(
                        n, es, _exact_dot(n, es, a[i, 0], b[j]), mode)
        got = formats.fused_dot(fmt, a, b, "stochastic", seed=2, sr_bits=4)
        exact = [_exact_dot(n, es, a[i, 0], b[j]) for i in range(3) for j in range(4)]
        _same_codes("fused_dot broadcast stochastic", got, _stochastic_expect(n, es, exact, 2, 4))
        assert formats.fused_dot(fmt, a[0, 0], b[0]).shape == ()
        assert formats.fused_dot(fmt.name, b, b[:1]).shape == (4,)


# ---------------------------------------------------------------------------------------------
# 7. bad input
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [(1, 0), (33, 0), (0, 0), (8, 5), (8, -1), (-8, 1)])
def test_widths_out_of_range(args):
    with pytest.raises(ValueError):
        formats.PositFormat(*args)


@pytest.mark.parametrize("args", [(8.0, 0), (8, 1.0), (True, 1), (8, None), ("8", 1)])
def test_widths_not_integers(args):
    with pytest.raises(TypeError):
        formats.PositFormat(*args)


@pytest.mark.parametrize("name", ["posit1_0", "posit33_2", "posit8_5", "posit64_2"])
def test_grammar_out_of_range(name):
    with pytest.raises(ValueError):
        formats.get(name)


@pytest.mark.parametrize("name,close", [("posit16", ["posit16_1", "posit16_2"]),
                                        ("posit8", ["posit8_0", "posit8_2"]),
                                        ("posit32", ["posit32_2"]),
                                        ("Posit16_1", ["posit16_1"])])
def test_unknown_posit_names_list_close_matches(name, close):
    with pytest.raises(ValueError) as e:
        formats.get(name)
    for c in close:
        assert c in str(e.value)


def test_bad_codes_and_options():
    f = formats.get("posit8_0")
    for bad in ([256], [-1], [0, 300]):
        with pytest.raises(ValueError):
            f.decode(np.array(bad))
        with pytest.raises(ValueError):
            f.add(np.array(bad), np.array([1]))
        with pytest.raises(ValueError):
            f.fma(np.array([1]), np.array([1]), np.array(bad))
        with pytest.raises(ValueError):
            formats.Quire(f).fma(np.array(bad), np.array([1]))
        with pytest.raises(ValueError):
            formats.fused_dot(f, np.array(bad), np.array([1]))
    with pytest.raises(ValueError):
        formats.get("posit16_1").decode(np.array([1 << 16]))
    with pytest.raises(ValueError):
        formats.get("posit32_2").decode(np.array([1 << 32]))
    for bad in (np.array([1.0]), np.array([True]), np.array(["1"])):
        with pytest.raises(TypeError):
            f.decode(bad)
        with pytest.raises(TypeError):
            f.mul(bad, np.array([1]))
        with pytest.raises(TypeError):
            formats.Quire(f).add(bad)
    with pytest.raises(TypeError):
        f.encode(np.array([1 + 1j]))
    with pytest.raises(TypeError):
        f.encode(np.array(["1.0"]))
    x = np.array([1.0])
    c = np.array([1], dtype=np.uint8)
    for ovf in ("ieee", "wrap", "clamp", ""):
        with pytest.raises(ValueError):
            f.encode(x, overflow=ovf)
        with pytest.raises(ValueError):
            f.quantize(x, overflow=ovf)
        with pytest.raises(ValueError):
            f.add(c, c, overflow=ovf)
        with pytest.raises(ValueError):
            formats.get("fp16").convert(np.array([0], np.uint16), f, overflow=ovf)
    assert f.encode(x, overflow="saturate")[0] == 64
    for bad in ("nearest", "round_half_even", None):
        with pytest.raises(ValueError):
            f.encode(x, bad)
        with pytest.raises(ValueError):
            formats.Quire(f).to_posit(bad)
        with pytest.raises(ValueError):
            formats.fused_dot(f, c, c, bad)
    for s in (0, 33, -1):
        with pytest.raises(ValueError):
            f.encode(x, "stochastic", seed=1, sr_bits=s)
        with pytest.raises(ValueError):
            formats.Quire(f).to_posit("stochastic", seed=1, sr_bits=s)
    with pytest.raises(TypeError):
        f.encode(x, "stochastic", seed="1")


def test_quire_needs_a_posit_format():
    for name in ("fp16", "bf16", "int8", "fix8_4"):
        with pytest.raises(TypeError):
            formats.Quire(name)
        with pytest.raises(TypeError):
            formats.Quire(formats.get(name))
        with pytest.raises(TypeError):
            formats.fused_dot(name, np.array([1]), np.array([1]))
    with pytest.raises(ValueError):
        formats.Quire("posit16")
    with pytest.raises(TypeError):
        formats.Quire(16)


def test_fused_dot_shape_errors():
    f = formats.get("posit16_1")
    with pytest.raises(ValueError, match="last axes"):
        formats.fused_dot(f, np.ones((3, 4), np.uint16), np.ones((3, 5), np.uint16))
    with pytest.raises(ValueError):
        formats.fused_dot(f, np.ones((3, 4), np.uint16), np.ones(5, np.uint16))
    with pytest.raises(ValueError):
        formats.fused_dot(f, np.uint16(1), np.uint16(1))
    with pytest.raises(ValueError):
        formats.fused_dot(f, np.ones((3, 4), np.uint16), np.ones((2, 4), np.uint16))


# ---------------------------------------------------------------------------------------------
# 8. input dtypes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,es", [(8, 0), (12, 1), (16, 1), (16, 4)])
def test_float16_input(n, es):
    fmt = P(n, es)
    h = np.arange(0, 1 << 16, 3, dtype=np.uint16).view(np.float16)
    h = h[np.isfinite(h)]
    cache = _RefCache(n, es)
    expect = np.array([cache(F(float(v))) for v in h])
    for j, mode in enumerate(MODES5):
        _same_codes(f"float16 -> {fmt.name} {mode}", fmt.encode(h, mode), expect[:, j], (h,))


@pytest.mark.parametrize("n,es", [(16, 1), (24, 0), (32, 2), (32, 4)])
def test_float32_input(n, es):
    fmt = P(n, es)
    rng = _rng(f"f32{n}_{es}")
    bits = rng.integers(0, 1 << 32, 3000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x)]
    cache = _RefCache(n, es)
    expect = np.array([cache(F(float(v))) for v in x])
    for j, mode in enumerate(MODES5):
        _same_codes(f"float32 -> {fmt.name} {mode}", fmt.encode(x, mode), expect[:, j], (x,))
    want = _stochastic_expect(n, es, [F(float(v)) for v in x], 3, 16)
    _same_codes("float32 stochastic", fmt.encode(x, "stochastic", seed=3, sr_bits=16), want,
                (x,))


def _big_ints(rng, k):
    mags = [(1 << 53) + 1, (1 << 53) + 3, (1 << 62) + 1, (1 << 62) + (1 << 40) + 1,
            (1 << 63) - 1, (1 << 63) - (1 << 30), 3 << 60, 12345678901234567]
    vals = mags + [-v for v in mags] + [-(1 << 63), 0, 1, -1, 7, 1 << 40]
    rand = rng.integers(1 << 53, (1 << 63) - 1, k, dtype=np.int64)
    shifts = rng.integers(0, 10, k)
    rand = (rand >> shifts) | 1                               # many odd values > 2**53
    sign = np.where(rng.random(k) < 0.5, -1, 1)
    return np.concatenate([np.array(vals, dtype=np.int64), rand * sign])


@pytest.mark.parametrize("n,es", [(8, 0), (16, 1), (24, 1), (32, 0), (32, 2), (32, 4)])
def test_int64_above_2_53_round_exactly(n, es):
    fmt = P(n, es)
    x = _big_ints(_rng(f"i64{n}_{es}"), 1500)
    cache = _RefCache(n, es)
    expect = np.array([cache(F(int(v))) for v in x])
    for j, mode in enumerate(MODES5):
        _same_codes(f"int64 -> {fmt.name} {mode}", fmt.encode(x, mode), expect[:, j], (x,))
        q = fmt.quantize(x, mode)
        assert q.dtype == np.float64
        assert np.array_equal(q, [_ref_float(n, es, c) for c in expect[:, j]]), mode


@pytest.mark.parametrize("n,es", [(16, 1), (32, 2), (32, 4)])
def test_other_integer_dtypes(n, es):
    """uint64 beyond 2**63 in every mode; narrower integers (one compiled loop each) once."""
    fmt = P(n, es)
    cache = _RefCache(n, es)
    u = np.array([(1 << 64) - 1, (1 << 63) + 1, (1 << 63), (1 << 53) + 1, 0, 5], dtype=np.uint64)
    expect = np.array([cache(F(int(v))) for v in u])
    for j, mode in enumerate(MODES5):
        _same_codes(f"uint64 -> {fmt.name} {mode}", fmt.encode(u, mode), expect[:, j], (u,))
    for dt in (np.int8, np.int32, np.uint16):
        info = np.iinfo(dt)
        x = np.array([info.min, info.max, 0, 3, -3 if info.min < 0 else 9], dtype=dt)
        _same_codes(f"{x.dtype} -> {fmt.name}", fmt.encode(x),
                    [ref.round_fraction(n, es, int(v)) for v in x], (x,))


def test_quantize_output_dtype():
    """float32 out for float32 in when every value fits (posit16_1), float64 otherwise
    (posit32_2); the values are the reference's.  (All modes for float32 -> float32 only: each
    input/output dtype pair and mode compiles its own loop.)"""
    p16, p32, p8 = formats.get("posit16_1"), formats.get("posit32_2"), formats.get("posit8_0")
    assert p16.fits_in(np.float32) and not p32.fits_in(np.float32)
    assert p8.fits_in(np.float16) and not p16.fits_in(np.float16)
    x64 = np.array([0.1, -3.7, 1e6, 1e-5, 1234.5678, -2.0 ** -30, np.nan, np.inf])
    for fmt, dt, out in [(p16, np.float32, np.float32), (p32, np.float32, np.float64),
                         (p8, np.float16, np.float16), (p16, np.float16, np.float64),
                         (p32, np.float64, np.float64), (p8, np.int64, np.float64),
                         (p32, np.int64, np.float64), (p16, np.int32, np.float64)]:
        with np.errstate(over="ignore"):                       # 1e6 is inf in float16
            x = (x64.astype(dt) if np.dtype(dt).kind == "f" else
                 np.array([3, -70, 1 << 20, (1 << 31) - 1], dt))
        modes = MODES5 if (fmt is p16 and dt == np.float32) else ("nearest_even",)
        for mode in modes:
            q = fmt.quantize(x, mode)
            assert q.dtype == out, (fmt.name, dt, q.dtype)
            codes = [ref.nar(fmt.bits) if not np.isfinite(v) else
                     ref.round_fraction(fmt.bits, fmt.es, F(int(v) if x.dtype.kind == "i"
                                                            else float(v)), mode) for v in x]
            assert np.array_equal(q.astype(np.float64),
                                  [_ref_float(fmt.bits, fmt.es, c) for c in codes],
                                  equal_nan=True), (fmt.name, dt, mode)
    x = x64.astype(np.float32)
    qs = p16.quantize(x, "stochastic", seed=4, sr_bits=8)
    assert qs.dtype == np.float32
    want = _stochastic_expect(16, 1, [None if not np.isfinite(v) else F(float(v)) for v in x],
                              4, 8)
    assert np.array_equal(qs.astype(np.float64), [_ref_float(16, 1, c) for c in want],
                          equal_nan=True)
