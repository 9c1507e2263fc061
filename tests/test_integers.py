"""IntFormat (integers and fixed point) against exact integer arithmetic.

A format of ``bits`` bits and ``F`` fraction bits holds the integer k (two's complement when
signed: -2**(bits-1) <= k < 2**(bits-1), else 0 <= k < 2**bits) and means k * 2**-F; its code
is k mod 2**bits.  The oracle below is Python integers / Fractions with the rounding rule
written out from the mode definitions:

* nearest_even: the nearer integer, ties to the even one;  nearest_away: ties away from zero
* toward_zero: truncate;  toward_positive: ceiling;  toward_negative: floor
* stochastic: floor or ceiling (checked for membership only; probabilities: test_stochastic)

Overflow: ``saturate`` clamps k to the range; ``wrap`` reduces k modulo 2**bits into it.
Arithmetic: a + b and a - b are exact in units of 2**-F; a * b is exact in units of 2**-2F
and rounded once to 2**-F; fma adds c (exactly) before that single rounding.
(ml_dtypes' int4/uint4/int2 casts are checked in test_oracle_ml_dtypes.py.)

A second, independent oracle is NumPy: on float64, np.rint / np.floor / np.ceil / np.trunc are
exact (nearest_even / toward_negative / toward_positive / toward_zero), and np.clip (saturate)
or np.mod (wrap; fmod-based, exact) finish the job -- test_encode_against_numpy_rounding.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import formats

MODES5 = ("nearest_even", "nearest_away", "toward_zero", "toward_positive", "toward_negative")
POLICIES = ("saturate", "wrap")


def spec(name):
    """(bits, signed, F, qmin, qmax) from the name grammar (intN, uintN, fixN_F, ufixN_F)."""
    signed = not name.startswith("u")
    body = name[1:] if not signed else name
    if body.startswith("int"):
        bits, frac = int(body[3:]), 0
    else:
        bits, frac = (int(v) for v in body[3:].split("_"))
    qmin = -(1 << (bits - 1)) if signed else 0
    qmax = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    return bits, signed, frac, qmin, qmax


# ---- the oracle ------------------------------------------------------------------------------

def round_div(n, shift, mode):
    """Round the integer(s) ``n / 2**shift`` to integers.  Works elementwise on Python ints,
    int64 arrays (when nothing overflows) and object arrays of Python ints."""
    if np.ndim(shift) == 0 and shift == 0:
        return n
    d = 1 << shift                  # an array of shifts (each 0..60) works elementwise on int64
    q = n // d                      # floor
    r = n - q * d                   # 0 <= r < d
    inexact = r != 0
    if mode == "toward_negative":
        return q
    if mode == "toward_positive":
        return q + inexact
    if mode == "toward_zero":
        return q + (inexact & (n < 0))
    twice = 2 * r
    above = twice > d
    tie = twice == d
    if mode == "nearest_even":
        return q + (above | (tie & (q % 2 == 1)))
    if mode == "nearest_away":
        return q + (above | (tie & (n > 0)))
    raise ValueError(mode)


def round_fraction(x: Fraction, mode) -> int:
    """Round a rational to an integer per the mode definitions."""
    fl = math.floor(x)
    r = x - fl
    if r == 0:
        return fl
    if mode == "toward_negative":
        return fl
    if mode == "toward_positive":
        return fl + 1
    if mode == "toward_zero":
        return fl + (x < 0)
    if r > Fraction(1, 2):
        return fl + 1
    if r < Fraction(1, 2):
        return fl
    if mode == "nearest_even":
        return fl + (fl % 2)
    return fl + (x > 0)                          # nearest_away


def overflow(k, policy, bits, qmin, qmax):
    """Saturate or wrap integer(s) k into [qmin, qmax]."""
    if policy == "saturate":
        if isinstance(k, np.ndarray):
            return np.minimum(np.maximum(k, qmin), qmax)
        return min(max(k, qmin), qmax)
    return (k - qmin) % (1 << bits) + qmin


def code_of(k, bits):
    return k % (1 << bits)


def encode_oracle(x, name, mode, policy):
    """The code of each float64 in ``x`` under ``mode`` and ``policy``: round_div and overflow
    above applied to the exact binary form of x, vectorised (the Fraction loop is too slow for
    16-bit grids; test_encode_oracle_agrees_with_fractions checks the two agree).

    np.frexp gives x = m * 2**(e - 53) exactly with |m| < 2**53 an integer, so x * 2**F = m * 2**t.
    t >= 0 (m != 0): an integer of magnitude >= 2**52, beyond every format here; it saturates by
    sign, and wraps to (m mod 2**bits) * 2**t mod 2**bits.  t < -60: |x * 2**F| < 2**-8 and
    nonzero, so it rounds exactly as m * 2**-60 does (same sign, nonzero, below one half)."""
    bits, signed, frac, qmin, qmax = spec(name)
    size = 1 << bits
    f, e = np.frexp(np.asarray(x, dtype=np.float64))
    m = np.ldexp(f, 53).astype(np.int64)
    t = e.astype(np.int64) - 53 + frac
    big = t >= 0
    k = round_div(m, np.clip(-t, 0, 60), mode)
    if policy == "saturate":
        k = np.where(big, np.where(m > 0, qmax, qmin), np.clip(k, qmin, qmax))
        return k % size
    big_code = np.where(t < bits, ((m % size) << np.clip(t, 0, bits - 1)) % size, 0)
    return np.where(big, big_code, k % size)


def value_of_code(codes, bits, signed, frac):
    """k * 2**-F of each code (int64 arithmetic; exact for the formats used with it)."""
    k = np.asarray(codes).astype(np.int64)
    if signed:
        k = np.where(k >= 1 << (bits - 1), k - (1 << bits), k)
    return k * 2.0 ** -frac


def to_int(codes, bits, signed):
    """Two's-complement integer of each code (object array of Python ints)."""
    k = np.array([int(c) for c in np.ravel(codes)], dtype=object)
    if signed:
        k = np.where(k >= (1 << (bits - 1)), k - (1 << bits), k)
    return k


def compare(what, inputs, got, want, limit=6):
    got, want = np.asarray(got), np.asarray(want)
    if (got.dtype != object and want.dtype != object and got.size == want.size
            and np.array_equal(got.astype(np.int64).ravel(), want.astype(np.int64).ravel())):
        return                                     # fast path: codes fit in int64
    got = got.astype(object).ravel()
    want = np.asarray(want).astype(object).ravel()
    bad = np.flatnonzero(got != want)
    if bad.size:
        ins = [tuple(int(a[i]) for a in inputs) if isinstance(inputs, tuple) else inputs[i]
               for i in bad[:limit]]
        raise AssertionError(f"{what}: {bad.size} of {got.size} wrong; " + "; ".join(
            f"input {x!r}: got {int(got[i])}, want {int(want[i])}" for x, i in zip(ins, bad)))


# ---- decode and properties ---------------------------------------------------------------------

SMALL = ["int8", "uint8", "int4", "uint4", "int2", "uint2", "int1", "uint1", "fix8_4", "ufix8_3",
         "fix4_4", "fix8_0", "ufix8_8", "int16", "uint16", "fix16_8"]


@pytest.mark.parametrize("name", SMALL)
def test_decode_every_code(name):
    bits, signed, frac, qmin, qmax = spec(name)
    fmt = formats.get(name)
    codes = np.arange(1 << bits, dtype=np.int64)
    k = to_int(codes, bits, signed)
    want = [float(Fraction(int(v), 1 << frac)) for v in k]
    assert fmt.decode(codes).tolist() == want
    assert fmt.decode(codes.astype(fmt.code_dtype)).tolist() == want
    assert fmt.bits == bits and fmt.signed == signed and fmt.frac_bits == frac
    assert fmt.max == qmax / 2**frac and fmt.min == qmin / 2**frac
    assert fmt.min_normal == fmt.min_subnormal == fmt.epsilon == 2.0**-frac
    assert fmt.n_finite == 1 << bits
    assert fmt.values().tolist() == sorted(want)
    assert fmt.code_dtype == (np.uint8 if bits <= 8 else np.uint16)
    assert not fmt.has_nan and not fmt.has_inf and fmt.default_overflow == "saturate"


# ---- encode: every value, every midpoint, one float64 ulp either side -------------------------

ENCODE_FORMATS = ["int8", "uint8", "int4", "fix8_4", "ufix8_3", "int16", "uint16", "int2",
                  "uint2", "uint4"]


def _encode_inputs(name):
    """Every value k * 2**-F for k a little beyond the range, the midpoints, and the float64
    neighbours of both, plus far values."""
    bits, signed, frac, qmin, qmax = spec(name)
    ks = np.arange(qmin - 4, qmax + 5)
    vals = ks * 2.0**-frac
    mids = (ks[:-1] + 0.5) * 2.0**-frac
    quarter = (ks[:-1] + 0.25) * 2.0**-frac
    base = np.concatenate([vals, mids, quarter])
    x = np.concatenate([base, np.nextafter(base, np.inf), np.nextafter(base, -np.inf),
                        [0.0, -0.0, 5e-324, -5e-324, 1e-300, -1e-300, 2.0**70, -(2.0**70),
                         1e300, -1e300, 2.0**63 + 2.0**11, -(2.0**63), 2.0**64, 3.0 * 2**62,
                         np.finfo(np.float64).max, -np.finfo(np.float64).max, 0.49999999999999994,
                         -0.49999999999999994, 2.0**31 + 0.5, -(2.0**31) - 0.5]])
    return x


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", ENCODE_FORMATS)
def test_encode_all_values_midpoints_and_neighbours(name, policy, assert_same):
    bits, signed, frac, qmin, qmax = spec(name)
    fmt = formats.get(name)
    x = _encode_inputs(name)
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    keep = np.isfinite(x32) & (x32.astype(np.float64) == x)   # float32-exact inputs
    for mode in MODES5:
        want = encode_oracle(x, name, mode, policy)
        assert_same(f"{name} {mode} {policy}", x, fmt.encode(x, mode, overflow=policy), want)
        # quantize = decode(encode), value k * 2**-F (+ 0.0: the sign of a zero is not specified)
        q = fmt.quantize(x, mode, overflow=policy)
        assert_same(f"{name} {mode} {policy} quantize", x, q + 0.0,
                    value_of_code(want, bits, signed, frac))
        # float32 inputs (those that are exact in float32) give the same codes
        assert_same(f"{name} {mode} {policy} float32", x[keep],
                    fmt.encode(x32[keep], mode, overflow=policy), want[keep])
    # stochastic: one of the two neighbours (after the overflow policy)
    sr = fmt.encode(x, "stochastic", overflow=policy, seed=17).astype(np.int64)
    lo = encode_oracle(x, name, "toward_negative", policy)
    hi = encode_oracle(x, name, "toward_positive", policy)
    ok = (sr == lo) | (sr == hi)
    assert ok.all(), [(x[i], int(sr[i]), int(lo[i]), int(hi[i])) for i in np.flatnonzero(~ok)[:5]]


def _random_reals(name, n, seed):
    """Random float64 values for ``name``: uniform over 1.5 times its range, log-uniform
    magnitudes from far below its step to far beyond its range, grid midpoints and their
    neighbours, and random float64 bit patterns (finite, and finite once scaled by 2**F)."""
    bits, signed, frac, qmin, qmax = spec(name)
    rng = np.random.default_rng(seed)
    span = max(-qmin, qmax, 1) * 2.0 ** -frac
    q = n // 4
    mids = (rng.integers(qmin - 2, qmax + 2, q, endpoint=True) + 0.5) * 2.0 ** -frac
    pats = rng.integers(0, 1 << 64, 4 * q, dtype=np.uint64).view(np.float64)
    with np.errstate(all="ignore"):
        pats = pats[np.isfinite(np.ldexp(pats, frac))][:q]
    x = np.concatenate([rng.uniform(-1.5 * span, 1.5 * span, q),
                        np.exp2(rng.uniform(-frac - 20, math.log2(span) + 20, q))
                        * rng.choice([-1.0, 1.0], q),
                        mids, np.nextafter(mids[: q // 2], np.inf),
                        np.nextafter(mids[q // 2:], -np.inf), pats])
    return x


@pytest.mark.parametrize("name", ["int8", "uint8", "int4", "uint4", "int2", "uint2", "uint1",
                                  "fix8_4", "ufix8_3", "fix8_0", "int32", "uint32", "fix32_31",
                                  "ufix32_32", "fix16_8"])
def test_encode_oracle_agrees_with_fractions(name):
    """encode_oracle (vectorised) equals round_fraction + overflow (Python Fractions, written from
    the mode definitions) on the <= 8-bit grids of _encode_inputs and on random reals."""
    bits, signed, frac, qmin, qmax = spec(name)
    x = _random_reals(name, 2000, bits + 7 * frac)
    if bits <= 8:
        x = np.concatenate([x, _encode_inputs(name)])
    exact = [Fraction(float(v)) * (1 << frac) for v in x]
    for policy in POLICIES:
        for mode in MODES5:
            want = [code_of(overflow(round_fraction(e, mode), policy, bits, qmin, qmax), bits)
                    for e in exact]
            compare(f"oracle {name} {mode} {policy}", x, encode_oracle(x, name, mode, policy),
                    want)


# ---- encode against NumPy's rounding functions ------------------------------------------------

NUMPY_ROUNDING = {"nearest_even": np.rint, "toward_negative": np.floor,
                  "toward_positive": np.ceil, "toward_zero": np.trunc}
NUMPY_FORMATS = ["int1", "uint1", "int2", "uint2", "int4", "uint4", "int8", "uint8", "int16",
                 "uint16", "fix8_4", "ufix8_3", "fix16_8", "int32", "uint32", "fix32_16",
                 "ufix32_32"]


def numpy_codes(x, name, mode, policy):
    """NumPy's answer: x * 2**F (np.ldexp, exact while finite), rounded to an integer by np.rint /
    floor / ceil / trunc (exact on float64), np.clip'ed for saturate; the code is then that
    integer mod 2**bits (np.mod on float64 is fmod-based, hence exact, also for huge values)."""
    bits, signed, frac, qmin, qmax = spec(name)
    k = NUMPY_ROUNDING[mode](np.ldexp(x, frac))
    if policy == "saturate":
        k = np.clip(k, qmin, qmax)
    return np.mod(k, 2.0 ** bits).astype(np.int64)


@pytest.mark.parametrize("name", NUMPY_FORMATS)
def test_encode_against_numpy_rounding(name, assert_same):
    """<= 16 bits: every value k * 2**-F (k from qmin - 3 to qmax + 3), every midpoint, and the
    float64 neighbours of both; every format: 100,000 random reals (_random_reals)."""
    bits, signed, frac, qmin, qmax = spec(name)
    fmt = formats.get(name)
    x = _random_reals(name, 100_000, 1000 + bits * 40 + frac)
    if bits <= 16:
        ks = np.arange(qmin - 3, qmax + 4)
        base = np.concatenate([ks * 2.0 ** -frac, (ks[:-1] + 0.5) * 2.0 ** -frac])
        x = np.concatenate([base, np.nextafter(base, np.inf), np.nextafter(base, -np.inf), x])
    assert np.isfinite(np.ldexp(x, frac)).all()
    for mode in NUMPY_ROUNDING:
        for policy in POLICIES:
            assert_same(f"{name} {mode} {policy} vs numpy", x,
                        fmt.encode(x, mode, overflow=policy), numpy_codes(x, name, mode, policy))


@pytest.mark.parametrize("name", ["int32", "uint32", "fix32_16", "ufix32_16", "fix16_8",
                                  "ufix32_32", "fix32_31"])
def test_encode_random_reals_wide(name):
    bits, signed, frac, qmin, qmax = spec(name)
    fmt = formats.get(name)
    rng = np.random.default_rng(bits * 100 + frac)
    span = max(abs(qmin), qmax) * 2.0**-frac
    x = np.concatenate([rng.uniform(-1.2 * span, 1.2 * span, 3000),
                        np.exp2(rng.uniform(-40, math.log2(span) + 1, 1000)) *
                        rng.choice([-1.0, 1.0], 1000),
                        np.round(rng.uniform(-span, span, 500) * 2.0**frac) * 2.0**-frac
                        + 0.5 * 2.0**-frac])                          # exact midpoints
    exact = [Fraction(float(v)) * (1 << frac) for v in x]
    for policy in POLICIES:
        for mode in MODES5:
            want = [code_of(overflow(round_fraction(e, mode), policy, bits, qmin, qmax), bits)
                    for e in exact]
            compare(f"{name} {mode} {policy}", x, fmt.encode(x, mode, overflow=policy), want)


@pytest.mark.parametrize("name", ["int8", "fix8_4", "ufix8_3", "int32", "uint32", "fix32_16"])
def test_encode_integer_dtypes(name):
    """Integer-dtype inputs are exact: k = x * 2**F, then saturate or wrap (no float64 detour,
    even beyond 2**53)."""
    bits, signed, frac, qmin, qmax = spec(name)
    fmt = formats.get(name)
    vals = [0, 1, -1, 5, -7, 127, -128, 200, -200, 2**31 - 1, -(2**31), 2**40 + 3, 2**53 + 1,
            -(2**53 + 1), 2**60 + 3, 2**62 + 2**61 + 5, -(2**63), 2**63 - 1]
    uvals = [0, 1, 255, 2**32 - 1, 2**63, 2**63 + 2**40 + 1, 2**64 - 1, 2**60 + 3]
    for dt, vs in ((np.int64, vals), (np.uint64, uvals)):
        x = np.array(vs, dtype=dt)
        for policy in POLICIES:
            want = [code_of(overflow(v << frac, policy, bits, qmin, qmax), bits) for v in vs]
            compare(f"{name} {np.dtype(dt).name} {policy}", vs, fmt.encode(x, overflow=policy),
                    want)
    for dt in (np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32):
        info = np.iinfo(dt)
        vs = sorted(v for v in {int(info.min), -3, 0, 1, 77, int(info.max)}
                    if info.min <= v <= info.max)
        x = np.array(vs, dtype=dt)
        for policy in POLICIES:
            want = [code_of(overflow(v << frac, policy, bits, qmin, qmax), bits) for v in vs]
            compare(f"{name} {np.dtype(dt).name} {policy}", vs, fmt.encode(x, overflow=policy),
                    want)


# ---- arithmetic on all pairs (8-bit) and random pairs (32-bit) --------------------------------

def _arith_oracle(op, ka, kb, kc, frac, mode):
    """Exact k of a op b (+ c), in units of 2**-F, rounded once."""
    if op == "add":
        return ka + kb
    if op == "sub":
        return ka - kb
    if op == "mul":
        return round_div(ka * kb, frac, mode)
    return round_div(ka * kb + (kc << frac) if isinstance(kc, int) else ka * kb + kc * (1 << frac),
                     frac, mode)


def _check_arith(name, a, b, c, ka, kb, kc, policies=POLICIES, modes=MODES5):
    bits, signed, frac, qmin, qmax = spec(name)
    fmt = formats.get(name)
    for op in ("add", "sub", "mul", "fma"):
        for mode in modes:
            k = _arith_oracle(op, ka, kb, kc, frac, mode)
            for policy in policies:
                want = code_of(overflow(k, policy, bits, qmin, qmax), bits)
                args = (a, b, c) if op == "fma" else (a, b)
                got = getattr(fmt, op)(*args, rounding=mode, overflow=policy)
                assert got.dtype == fmt.code_dtype
                compare(f"{name} {op} {mode} {policy}", args, got, want)


@pytest.mark.parametrize("name", ["int8", "fix8_4"])
def test_arith_all_pairs_8bit(name):
    bits, signed, frac, qmin, qmax = spec(name)
    codes = np.arange(256, dtype=np.uint8)
    a, b = (m.ravel() for m in np.meshgrid(codes, codes, indexing="ij"))
    c = np.random.default_rng(frac).integers(0, 256, a.size).astype(np.uint8)
    # int64 oracle: |a*b + c*2**F| < 2**15 + 2**11, nothing overflows
    ka, kb, kc = (np.where(v >= 128, v.astype(np.int64) - 256, v.astype(np.int64))
                  for v in (a, b, c))
    _check_arith(name, a, b, c, ka, kb, kc)


@pytest.mark.parametrize("name", ["uint8", "ufix8_3", "int4", "fix4_2", "uint4", "fix6_5",
                                  "int2", "uint2"])
def test_arith_all_pairs_small(name):
    """Other small formats, every pair, fma with every c for the 4-bit ones."""
    bits, signed, frac, qmin, qmax = spec(name)
    n = 1 << bits
    codes = np.arange(n, dtype=np.uint8)
    if bits <= 4:
        a, b, c = (m.ravel() for m in np.meshgrid(codes, codes, codes, indexing="ij"))
    else:
        a, b = (m.ravel() for m in np.meshgrid(codes, codes, indexing="ij"))
        c = np.random.default_rng(bits).integers(0, n, a.size).astype(np.uint8)

    def k(v):
        v = v.astype(np.int64)
        return np.where(v >= n // 2, v - n, v) if signed else v

    _check_arith(name, a, b, c, k(a), k(b), k(c))


@pytest.mark.parametrize("name", ["int16", "uint16", "fix16_8"])
def test_arith_every_code_16bit(name):
    """Every 16-bit code as a, against a random permutation of the codes and against each edge
    code (all 2**32 pairs would be too slow for CI); fma with a random c.  The int64 oracle cannot
    overflow: |a*b + c*2**F| < 2**33."""
    bits, signed, frac, qmin, qmax = spec(name)
    n = 1 << bits
    rng = np.random.default_rng(bits + frac + 100 * signed)
    codes = np.arange(n, dtype=np.uint16)
    edge = np.array(sorted({0, 1, n - 1, n // 2, n // 2 - 1, 1 << frac, (3 << frac) // 2}),
                    dtype=np.uint16)
    a = np.concatenate([codes, np.tile(codes, edge.size)])
    b = np.concatenate([rng.permutation(codes), np.repeat(edge, n)])
    c = rng.integers(0, n, a.size).astype(np.uint16)

    def k(v):
        v = v.astype(np.int64)
        return np.where(v >= n // 2, v - n, v) if signed else v

    _check_arith(name, a, b, c, k(a), k(b), k(c))


def _wide_operands(name, n, seed):
    bits, signed, frac, qmin, qmax = spec(name)
    rng = np.random.default_rng(seed)
    edge = [0, 1, 2, (1 << bits) - 1, (1 << bits) - 2, 1 << (bits - 1), (1 << (bits - 1)) - 1,
            (1 << (bits - 1)) + 1, 1 << frac, (1 << frac) + 1, 3 << max(frac - 1, 0)]
    edge = np.array(sorted({e % (1 << bits) for e in edge}), dtype=np.uint64)
    ea, eb = (m.ravel() for m in np.meshgrid(edge, edge, indexing="ij"))
    ec = np.resize(edge, ea.size)
    small = rng.integers(0, 1 << 12, n // 4, dtype=np.uint64)      # small magnitudes
    small_neg = ((1 << bits) - small) % (1 << bits)
    full = rng.integers(0, 1 << bits, n, dtype=np.uint64)
    a = np.concatenate([ea, full, small, small_neg])
    b = np.concatenate([eb, rng.integers(0, 1 << bits, n, dtype=np.uint64), small_neg, small])
    c = np.concatenate([ec, rng.integers(0, 1 << bits, a.size - ec.size, dtype=np.uint64)])
    return tuple(v.astype(np.uint32) for v in (a, b, c))


@pytest.mark.parametrize("name", ["int32", "uint32", "fix32_16", "ufix32_16", "ufix32_32",
                                  "fix32_31"])
def test_arith_random_pairs_32bit(name):
    """Products need the full 64-bit range (uint32 max squared is 2**64 - 2**33 + 1); the
    oracle uses Python integers."""
    bits, signed, frac, qmin, qmax = spec(name)
    a, b, c = _wide_operands(name, 6000, bits + frac)
    ka, kb, kc = (to_int(v, bits, signed) for v in (a, b, c))
    _check_arith(name, a, b, c, ka, kb, kc)


def test_uint32_extremes_in_fma():
    """uint32 max * uint32 max + uint32 max = 2**64 - 2**32: saturates to max, wraps to 0;
    the product alone wraps to 1.  ufix32_32: (1 - 2**-32)**2 + (1 - 2**-32) is 2 - 3 * 2**-32 +
    2**-64, beyond 2**64 in units of 2**-64."""
    u = formats.get("uint32")
    m = np.array([2**32 - 1], dtype=np.uint32)
    assert int(u.fma(m, m, m)[0]) == 2**32 - 1
    assert int(u.fma(m, m, m, overflow="wrap")[0]) == 0
    assert int(u.mul(m, m, overflow="wrap")[0]) == 1
    assert int(u.mul(m, m)[0]) == 2**32 - 1
    one = np.array([1], dtype=np.uint32)
    assert int(u.fma(m, m, one, overflow="wrap")[0]) == 2      # 2**64 - 2**33 + 2 mod 2**32
    f = formats.get("ufix32_32")
    exact = (2**32 - 1) ** 2 + ((2**32 - 1) << 32)              # units of 2**-64
    for mode in MODES5:
        k = round_div(exact, 32, mode)
        assert int(f.fma(m, m, m, mode, overflow="wrap")[0]) == k % 2**32, mode
        assert int(f.fma(m, m, m, mode)[0]) == 2**32 - 1, mode
    i = formats.get("int32")
    lo = np.array([2**31], dtype=np.uint32)                     # -2**31
    assert int(i.mul(lo, lo, overflow="wrap")[0]) == 0          # 2**62 mod 2**32
    assert int(i.mul(lo, lo)[0]) == 2**31 - 1
    mone = np.array([2**32 - 1], dtype=np.uint32)               # -1
    assert int(i.fma(lo, mone, mone, overflow="wrap")[0]) == 2**31 - 1   # 2**31 - 1
    assert int(i.fma(lo, lo, lo)[0]) == 2**31 - 1


@pytest.mark.parametrize("name", ["int8", "fix8_4", "fix32_16", "uint16"])
def test_stochastic_arith_neighbours(name):
    """Stochastic mul/fma results are the floor or the ceiling of the exact result."""
    bits, signed, frac, qmin, qmax = spec(name)
    fmt = formats.get(name)
    if bits == 8:
        codes = np.arange(256, dtype=np.uint8)
        a, b = (m.ravel() for m in np.meshgrid(codes, codes, indexing="ij"))
        c = np.random.default_rng(3).integers(0, 256, a.size).astype(np.uint8)
    else:
        a, b, c = _wide_operands(name, 3000, 5)
    ka, kb, kc = (to_int(v, bits, signed) for v in (a, b, c))
    for policy in POLICIES:
        for op in ("mul", "fma"):
            lo = _arith_oracle(op, ka, kb, kc, frac, "toward_negative")
            hi = _arith_oracle(op, ka, kb, kc, frac, "toward_positive")
            lo = [code_of(overflow(int(v), policy, bits, qmin, qmax), bits) for v in lo]
            hi = [code_of(overflow(int(v), policy, bits, qmin, qmax), bits) for v in hi]
            args = (a, b, c) if op == "fma" else (a, b)
            got = getattr(fmt, op)(*args, rounding="stochastic", overflow=policy, seed=11)
            ok = np.array([int(g) in (p, q) for g, p, q in zip(got, lo, hi)])
            assert ok.all(), (name, op, policy, np.flatnonzero(~ok)[:5])


@pytest.mark.parametrize("name", ["int8", "fix8_4", "uint8", "uint16"])
def test_convert_between_integer_formats(name):
    """convert = exact decode then one rounding into the target."""
    src = formats.get("fix16_8")
    bits, signed, frac, qmin, qmax = spec(name)
    dst = formats.get(name)
    codes = np.arange(1 << 16, dtype=np.uint16)
    k16 = to_int(codes, 16, True)                    # value k16 * 2**-8
    for mode in MODES5:
        for policy in POLICIES:
            if frac >= 8:
                k = k16 * (1 << (frac - 8))
            else:
                k = round_div(k16, 8 - frac, mode)
            want = code_of(overflow(k, policy, bits, qmin, qmax), bits)
            compare(f"fix16_8 -> {name} {mode} {policy}", codes,
                    src.convert(codes, dst, mode, overflow=policy), want)
