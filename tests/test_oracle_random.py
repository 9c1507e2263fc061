"""fp16, bf16 and fp32 on 10**7 random operand sets per check, round to nearest even.

Each check compares numsim with an oracle nobody here wrote:

- ``add`` / ``mul``: NumPy's float16 and float32 arithmetic, ml_dtypes' bfloat16 arithmetic.
  NumPy's float16 ops (and ml_dtypes' bfloat16 ops, through Eigen) compute in float32 and
  round the float32 result: a double rounding, innocuous here.  Rounding a sum or product of
  p-bit operands first to q >= 2p + 2 bits, then to p bits, is correct (Figueroa, "When is
  double rounding innocuous?", SIGNUM Newsletter 30(3), 1995): fp16 p = 11, 24 >= 24; bf16
  p = 8, 24 >= 18; the theorem needs the float32 result to be normal or exact.  fp16: products
  (22 bits, 2**-48 .. 2**32) are exact in float32, sums are multiples of 2**-24, normal in
  float32.  bf16: a sum below float32's smallest normal is a multiple of 2**-133 below 2**-126
  (7 bits, exact); a product N * 2**j (N < 2**16) that float32 rounds (j <= -150, so it is
  below 2**-134) could only land on the bf16 midpoint 2**-134 from N = 2**16 - 1 =
  3*5*17*257, no product of two 8-bit significands; float32 overflow lies beyond bf16's.
  Beyond the argument, every result is also checked against ``exact_reference`` below.
- ``fma`` (no library computes a binary16/bfloat16/binary32 fma): ``exact_reference``.
  Products of these formats are exact in float64 (at most 48 bits, 2**-298 .. 2**256); TwoSum
  (Knuth) turns the sum into an exact pair s + e; s is rounded to odd in float64 using e, and
  NumPy (float64 -> float16 / float32, one direct rounding) or ml_dtypes (float64 -> bfloat16,
  direct) rounds that to nearest even.  Rounding to odd with at least two extra bits, then to
  nearest, is a correct rounding (Boldo & Melquiond, "Emulation of FMA and correctly rounded
  sums: proved algorithms using rounding to odd", IEEE TC 57(4), 2008); float64 has 53 bits
  >= 24 + 2.  The reference itself is checked against MPFR (tests/mpfr_oracle.py) on every
  generator here.
- ``encode`` of float64: NumPy's astype(float32), astype(float16) and ml_dtypes'
  astype(bfloat16), each one correct rounding straight from the float64 bits.

Operands are random BIT PATTERNS (NaN, Inf, subnormals and zeros appear), plus shares of
near-cancelling pairs, exponent-targeted pairs (alignment and sticky bits for add, products
near overflow and in the subnormal range for mul), exact ties by construction, and for fma
addends that cancel the product, sit half an ulp from it, or sit just off a tie (where a
double rounding through float64 goes wrong: it does on about 1% of the bf16 and fp32 fma
triples here).  Results are compared code for code; a NaN
matches any NaN (payloads differ between libraries).
"""
from __future__ import annotations

import zlib

import ml_dtypes
import numpy as np
import pytest

import formats
import mpfr_oracle as mo
from mpfr_oracle import FloatSpec

N = 10**7                   # operand sets per check
CHUNK = 2_500_000           # generated and checked per step (bounded memory)

# name -> (NumPy / ml_dtypes type, independent FloatSpec for the MPFR cross-check)
TYPES = {
    "fp16": (np.dtype(np.float16), FloatSpec(5, 10, 15)),
    "bf16": (np.dtype(ml_dtypes.bfloat16), FloatSpec(8, 7, 127)),
    "fp32": (np.dtype(np.float32), FloatSpec(8, 23, 127)),
}
OPS = ("add", "mul", "fma")


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(("random",) + key).encode()))


def uint_of(name) -> np.dtype:
    return np.dtype(f"u{TYPES[name][0].itemsize}")


def values_of(codes, name) -> np.ndarray:
    """float64 values of codes, decoded by NumPy / ml_dtypes."""
    with np.errstate(all="ignore"):
        return np.asarray(codes).astype(uint_of(name)).view(TYPES[name][0]).astype(np.float64)


def codes_of(x, name) -> np.ndarray:
    """NumPy / ml_dtypes' cast of float64 x, as codes."""
    with np.errstate(all="ignore"):
        return np.asarray(x, np.float64).astype(TYPES[name][0]).view(uint_of(name))


# ----------------------------------------------------------------------------------------
# The exact reference: exact result as an s + e pair, rounded to odd, cast by the library
# ----------------------------------------------------------------------------------------

def two_sum(a, b):
    """s = fl(a + b) and the exact error e (Knuth); e is NaN where s is not finite."""
    with np.errstate(invalid="ignore", over="ignore"):
        s = a + b
        bp = s - a
        e = (a - (s - bp)) + (b - bp)
    return s, e


def round_to_odd(s, e):
    """s + e rounded to odd in float64, for |e| <= ulp(s)/2: s where e == 0 or s is odd, else
    s's neighbour on e's side, which is odd (s == 0 forces e == 0: float sums are exact there)."""
    fix = np.isfinite(s) & (e != 0) & ((s.view(np.uint64) & np.uint64(1)) == 0)
    return np.where(fix, np.nextafter(s, np.where(e > 0, np.inf, -np.inf)), s)


def exact_reference(op, name, *codes) -> np.ndarray:
    """Codes of the correctly rounded (nearest even) op on codes, by the method above."""
    v = [values_of(c, name) for c in codes]
    with np.errstate(invalid="ignore", over="ignore"):
        if op == "add":
            s, e = two_sum(v[0], v[1])
        elif op == "mul":
            s, e = v[0] * v[1], np.zeros(len(v[0]))      # exact: at most 48 bits, in range
        else:
            s, e = two_sum(v[0] * v[1], v[2])
    return codes_of(round_to_odd(s, e), name)


def library_arith(op, name, a, b) -> np.ndarray:
    """NumPy's float16/float32 or ml_dtypes' bfloat16 arithmetic on codes, as codes."""
    dt = TYPES[name][0]
    x, y = a.view(dt), b.view(dt)
    with np.errstate(all="ignore"):
        r = x + y if op == "add" else x * y
    assert r.dtype == dt
    return r.view(uint_of(name))


# ----------------------------------------------------------------------------------------
# Operands
# ----------------------------------------------------------------------------------------

def operands(name, op, n, rng):
    """Code arrays (uint16/uint32) of n operand sets: half uniform bit patterns, a quarter
    near-cancelling (b = -a give or take 4 codes; for fma c = -(a*b) rounded, +-4 codes), a
    quarter exponent-targeted:
    add: b from 2 binades above a to mbits + 3 below, half with mantissa 0 (ties);
    mul: a*b from mbits + 2 binades below the smallest normal to past max, half of them
    halfway between two neighbours by construction (see tie_product);
    fma: a third c = +-ulp(a*b)/2 with b a power of two (ties); a third a*b halfway
    (tie_product) and c 0 or 1 .. 99 binades below it (just off a tie: a double rounding
    through float64 fails there); a third c up to mbits + 12 binades below a*b (sticky bits)."""
    spec = TYPES[name][1]
    bits, m, emask, bias = spec.bits, spec.mbits, (1 << spec.ebits) - 1, spec.bias
    sign = 1 << (bits - 1)
    ops = [rng.integers(0, 1 << bits, n, dtype=np.int64) for _ in range(3 if op == "fma" else 2)]
    a, b = ops[0], ops[1]
    q = n // 4
    s2 = slice(2 * q, 3 * q)

    def fields(k, e, mant):
        return (rng.integers(0, 2, k) * sign) | (np.clip(e, 0, emask) << m) | mant

    def exponent(x):
        return (x >> m) & emask

    def tie_product(sl, target):
        """a's significand 1.1 (3/2), b's an odd B * 2**-m below 4/3, so 3 * B is odd with
        mbits + 2 bits: a*b (exponent field about ``target``) is halfway when normal."""
        k = len(target)
        a[sl] = (a[sl] & ~((1 << m) - 1)) | (1 << (m - 1))
        top = ((1 << (m + 2)) - 1) // 3 - (1 << m)               # largest B - 2**m
        mant = rng.integers(0, (top + 1) // 2, k) * 2 + 1         # odd, 1 .. top
        b[sl] = fields(k, target - exponent(a[sl]) + bias, mant)

    def product_exponent(sl):
        with np.errstate(invalid="ignore", over="ignore"):
            p = values_of(a[sl], name) * values_of(b[sl], name)
            _, ex = np.frexp(np.where(np.isfinite(p) & (p != 0), p, 1.0))
        return ex - 1                                             # a*b in [2**ex, 2**(ex+1))

    if op in ("add", "mul"):
        b[s2] = ((a[s2] ^ sign) + rng.integers(-4, 5, q)) & ((1 << bits) - 1)
    n3 = n - 3 * q
    h = 3 * q + n3 // 2
    s3, t3, r3 = slice(3 * q, n), slice(3 * q, h), slice(h, n)
    if op == "add":
        mant = rng.integers(0, 1 << m, n3) * rng.integers(0, 2, n3)
        b[s3] = fields(n3, exponent(a[s3]) - rng.integers(-2, m + 4, n3), mant)
    elif op == "mul":
        tie_product(t3, rng.integers(1 - m - 2, emask + 2, h - 3 * q))
        k = n - h
        b[r3] = fields(k, rng.integers(1 - m - 2, emask + 2, k) - exponent(a[r3]) + bias,
                       rng.integers(0, 1 << m, k))
    else:
        c = ops[2]
        with np.errstate(invalid="ignore", over="ignore"):
            near = codes_of(-(values_of(a[s2], name) * values_of(b[s2], name)), name)
        c[s2] = (near.astype(np.int64) + rng.integers(-4, 5, q)) & ((1 << bits) - 1)
        third = n3 // 3
        u1 = slice(3 * q, 3 * q + third)
        u2 = slice(3 * q + third, 3 * q + 2 * third)
        u3 = slice(3 * q + 2 * third, n)
        # ties: b a power of two putting a*b in the normal range, c = +-ulp(a*b)/2
        b[u1] = fields(third, rng.integers(1, emask, third) - exponent(a[u1]) + bias, 0)
        ex = product_exponent(u1)
        c[u1] = codes_of(np.ldexp(np.where(rng.integers(0, 2, third) == 1, -1.0, 1.0),
                                  ex - m - 1), name)
        # a*b halfway, c zero or far below: just off the tie
        tie_product(u2, rng.integers(1, emask, third))
        ex = product_exponent(u2)
        tiny = np.ldexp(rng.uniform(1, 2, third) * np.where(rng.integers(0, 2, third), -1, 1),
                        ex - rng.integers(1, 100, third))
        c[u2] = codes_of(np.where(rng.integers(0, 8, third) == 0, 0.0, tiny), name)
        # sticky: c well below a*b
        k = n - 3 * q - 2 * third
        ex = product_exponent(u3)
        c[u3] = fields(k, ex + bias - rng.integers(1, m + 13, k), rng.integers(0, 1 << m, k))
    return tuple(x.astype(uint_of(name)) for x in ops)


def float64_inputs(name, n, rng):
    """n float64 values: a quarter uniform float64 bit patterns (NaN, Inf, float64
    subnormals), half with exponents from 4 binades below the format's smallest subnormal to
    2 binades past max (random sign and 52-bit mantissa), a quarter made from ties: the
    midpoint of two neighbouring values (max and the step past it included), exact, moved by
    one float64 ulp, or by a tail 2**-20 .. 2**-69 of it (beyond or far inside the format's
    last bit), either way; random signs."""
    spec = TYPES[name][1]
    q = n // 4
    x = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    lo = 1023 + spec.emin - spec.mbits - 4
    hi = 1023 + spec.emax + 2
    x[q:3 * q] = ((rng.integers(0, 2, 2 * q, dtype=np.uint64) << np.uint64(63))
                  | (rng.integers(lo, hi + 1, 2 * q).astype(np.uint64) << np.uint64(52))
                  | (x[q:3 * q] & np.uint64((1 << 52) - 1)))
    x = x.view(np.float64)
    # ties
    nt = n - 3 * q
    mag = rng.integers(0, (1 << (spec.bits - 1)) - 1, nt)          # finite magnitude codes
    mag = np.minimum(mag, int(mo.ref_encode_exact([spec.max], spec)[0]))
    v = values_of(mag, name)
    up = values_of(mag + 1, name)
    down = values_of(np.maximum(mag - 1, 0), name)
    step = np.where(np.isfinite(up), up - v, v - down)              # past max: max's step
    mid = v + step / 2
    kind = rng.integers(0, 5, nt)
    far = mid * np.ldexp(1.0, -rng.integers(20, 70, nt)) * np.where(kind == 3, 1.0, -1.0)
    mid = np.select([kind == 0, kind == 1, kind == 2],
                    [mid, np.nextafter(mid, np.inf), np.nextafter(mid, -np.inf)], mid + far)
    x[3 * q:] = np.where(rng.integers(0, 2, nt) == 1, -mid, mid)
    return x


# ----------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------

def compare(assert_same, what, name, inputs, ours, theirs):
    """Codes equal, or both NaN; on a mismatch shows the operands (hex) of the first few."""
    nan_o = np.isnan(values_of(ours, name))
    nan_t = np.isnan(values_of(theirs, name))
    bad = (nan_o != nan_t) | (~nan_o & ~nan_t & (ours != theirs))
    if not bad.any():
        return
    idx = np.flatnonzero(bad)[:8]
    labels = np.empty(idx.size, dtype=object)
    labels[:] = [" ".join(f"0x{int(x[i]):0{2 * x.dtype.itemsize}x}" for x in inputs)
                 for i in idx.tolist()]
    assert_same(f"{what}: {int(bad.sum())} of {bad.size} differ; operands", labels,
                ours[idx], theirs[idx], nan_ours=nan_o[idx], nan_theirs=nan_t[idx])


# ----------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", list(TYPES))
def test_exact_reference_matches_mpfr(name, op):
    """The fma / cross-check reference (round to odd, then the library's cast) == MPFR on
    200,000 operand sets from the same generator."""
    spec = TYPES[name][1]
    ops = operands(name, op, 200_000, rng_for("mpfr", name, op))
    vals = [mo.ref_decode(c, spec) for c in ops]
    assert all(mo.same_values(values_of(c, name), v).all() for c, v in zip(ops, vals))
    exp = mo.oracle_round(mo.exact_op(op, "nearest_even", *vals), spec, "nearest_even", "ieee")
    got = mo.ref_decode(exact_reference(op, name, *ops), spec)
    ok = mo.same_values(got, exp)
    assert ok.all(), mo.mismatch_report(ok, dict(zip("abc", ops), expected=exp, got=got))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", list(TYPES))
def test_arith_ten_million(name, op, assert_same):
    """10**7 operand sets: numsim == exact_reference, and for add/mul == the library's own
    float16 / bfloat16 / float32 arithmetic."""
    fmt = formats.get(name)
    rng = rng_for("arith", name, op)
    for start in range(0, N, CHUNK):
        ops = operands(name, op, min(CHUNK, N - start), rng)
        ours = getattr(fmt, op)(*ops)
        assert ours.dtype == uint_of(name)
        compare(assert_same, f"{name} {op} vs exact reference", name, ops, ours,
                exact_reference(op, name, *ops))
        if op != "fma":
            compare(assert_same, f"{name} {op} vs {TYPES[name][0].name} arithmetic", name, ops,
                    ours, library_arith(op, name, *ops))


@pytest.mark.parametrize("name", list(TYPES))
def test_encode_ten_million(name, assert_same):
    """10**7 float64 values (see float64_inputs) encoded == NumPy / ml_dtypes' cast."""
    fmt = formats.get(name)
    rng = rng_for("encode", name)
    for start in range(0, N, CHUNK):
        x = float64_inputs(name, min(CHUNK, N - start), rng)
        ours = fmt.encode(x)
        assert ours.dtype == uint_of(name)
        compare(assert_same, f"{name} encode float64", name, (x.view(np.uint64),), ours,
                codes_of(x, name))
