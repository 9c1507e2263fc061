"""Stochastic rounding, decided exactly: with seeds chosen so that the rounding at hand draws a
given random value r, the result must round away from zero exactly when
r < floor(f * 2**sr_bits), f being the discarded fraction of an ulp computed with Fractions.
Statistical tests cannot see an error of one part in 2**32; these can.  The last test checks
``truncated_sum``, the (truncated sum, rest) pair those roundings start from, against Fractions.
"""
import math
from fractions import Fraction as F

import numpy as np
import pytest

import formats
import mac_models as mm
from mac_models.kernels import truncated_sum

_M = (1 << 64) - 1
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB   # SplitMix64's finalizer constants
_GOLDEN = 0x9E3779B97F4A7C15                            # the counter's step per element


def _unxorshift(z: int, s: int) -> int:
    x = z
    for _ in range(64 // s + 1):
        x = z ^ (x >> s)
    return x & _M


def _unmix(z: int) -> int:
    """Inverse of SplitMix64's finalizer (z ^= z >> 30; z *= MIX1; z ^= z >> 27; z *= MIX2;
    z ^= z >> 31)."""
    z = _unxorshift(z, 31)
    z = (z * pow(_MIX2, -1, 1 << 64)) & _M
    z = _unxorshift(z, 27)
    z = (z * pow(_MIX1, -1, 1 << 64)) & _M
    return _unxorshift(z, 30)


def _seed_drawing(r: int, sr_bits: int, index: int = 0) -> int:
    """A seed whose element ``index`` draws the random value r (key = mix(seed), bits =
    mix(key + index * golden))."""
    return _unmix((_unmix(r << (64 - sr_bits)) - index * _GOLDEN) & _M)


# (format, operation on exact inputs, exact value, toward-zero neighbour, ulp there)
_CASES = [
    # just below a power of two: the value lies in the lower binade (ulp 2**-24)
    ("fp32", "add", (1.0, -2.0 ** -54), F(1) - F(2) ** -54, 1 - F(2) ** -24, F(2) ** -24),
    ("fp32", "add", (4.0, -2.0 ** -45), 4 - F(2) ** -45, 4 - F(2) ** -22, F(2) ** -22),
    # a positive tail beyond float64's 53 bits
    ("fp32", "add", (1.0 + 2.0 ** -23, 2.0 ** -60), 1 + F(2) ** -23 + F(2) ** -60,
     1 + F(2) ** -23, F(2) ** -23),
    # a negative tail, not at a binade boundary
    ("fp32", "add", (1.5, -2.0 ** -60), F(3, 2) - F(2) ** -60, F(3, 2) - F(2) ** -23,
     F(2) ** -23),
    ("fp32", "add", (-1.0, 2.0 ** -54), -1 + F(2) ** -54, -1 + F(2) ** -24, F(2) ** -24),
    ("bf16", "encode", (1.0 + 2.0 ** -9,), 1 + F(2) ** -9, F(1), F(2) ** -7),
    ("fp8_e4m3", "encode", (-0.3,), F(-0.3), F(-0.28125), F(2) ** -5),
    # quantize on the CPU takes the bitwise kernel (encode the general rounding)
    ("bf16", "quantize", (1.0 + 2.0 ** -9,), 1 + F(2) ** -9, F(1), F(2) ** -7),
    ("fp8_e4m3", "quantize", (-0.3,), F(-0.3), F(-0.28125), F(2) ** -5),
    ("fp32", "quantize", (-1.0 - 2.0 ** -23 - 2.0 ** -45,), -1 - F(2) ** -23 - F(2) ** -45,
     -1 - F(2) ** -23, F(2) ** -23),
    # below fp16's smallest subnormal (2**-24): 0 or that subnormal
    ("fp16", "quantize", (2.0 ** -26 + 2.0 ** -50,), F(2) ** -26 + F(2) ** -50, F(0),
     F(2) ** -24),
    ("fp16", "quantize", (-(2.0 ** -60),), -F(2) ** -60, F(0), F(2) ** -24),
    # float64 inputs with fewer bits below fp32's ulp than sr_bits (29 in [1, 2))
    ("fp32", "quantize", (1.0 + 2.0 ** -24 + 2.0 ** -52,), 1 + F(2) ** -24 + F(2) ** -52, F(1),
     F(2) ** -23),
    ("fp32", "quantize", (-(3.0 + 2.0 ** -51),), -3 - F(2) ** -51, F(-3), F(2) ** -22),
    # a float register's second addition (fp32 operands; the first, 0 + args[0], is exact):
    # the exact sum lies below or above float64's rounded sum, at a power of two or not
    ("fp32", "accumulate", (1.0, 2.0 ** -60), 1 + F(2) ** -60, F(1), F(2) ** -23),
    ("fp32", "accumulate", (1.0, -(2.0 ** -60)), 1 - F(2) ** -60, 1 - F(2) ** -24, F(2) ** -24),
    ("fp32", "accumulate", (1.5, -(2.0 ** -120)), F(3, 2) - F(2) ** -120, F(3, 2) - F(2) ** -23,
     F(2) ** -23),
    ("fp16", "accumulate", (1.0, 2.0 ** -11 + 2.0 ** -30), 1 + F(2) ** -11 + F(2) ** -30, F(1),
     F(2) ** -10),
    ("bf16", "accumulate", (1.0, -(2.0 ** -9 + 2.0 ** -30)), 1 - F(2) ** -9 - F(2) ** -30,
     1 - F(2) ** -8, F(2) ** -8),
]


def _run(fmt, op, args, seed, sr_bits):
    if op == "accumulate":
        acc = mm.FloatAccumulator(fmt, "stochastic", seed=seed, sr_bits=sr_bits)
        mac = mm.MAC("fp32", accumulator=acc)
        return mm.matmul(np.array([args]), np.ones((len(args), 1)), mac).values[0, 0]
    if op == "quantize":
        return fmt.quantize(np.array(args), "stochastic", seed=seed, sr_bits=sr_bits)[0]
    if op == "encode":
        return fmt.decode(fmt.encode(np.array(args), "stochastic", seed=seed, sr_bits=sr_bits))[0]
    a, b = fmt.encode(np.array(args))
    return fmt.decode(fmt.add(np.array([a]), np.array([b]), "stochastic", seed=seed,
                              sr_bits=sr_bits))[0]


@pytest.mark.parametrize("sr_bits", [8, 24, 28, 29, 30, 31, 32])
@pytest.mark.parametrize("name,op,args,exact,trunc,ulp", _CASES)
def test_rounds_away_exactly_below_the_threshold(name, op, args, exact, trunc, ulp, sr_bits):
    fmt = formats.get(name)
    f = abs(exact - trunc) / ulp                       # discarded fraction, in [0, 1)
    assert 0 < f < 1
    threshold = int(f * 2 ** sr_bits)                  # floor
    away = trunc + (ulp if exact > 0 else -ulp)
    for r in (threshold - 2, threshold - 1, threshold, threshold + 1):
        if not 0 <= r < 2 ** sr_bits:
            continue
        seed = _seed_drawing(r, sr_bits, index=1 if op == "accumulate" else 0)
        got = F(_run(fmt, op, args, seed, sr_bits))
        want = away if r < threshold else trunc
        assert got == want, f"{name} {op}{args} sr_bits={sr_bits} r=T{r - threshold:+d}"


def test_rest_far_below_float64_bits():
    """An fp32-wide register (e10m23) holding 2**400, plus the product -2**-1066 of 2**-533 and
    -2**-533, stochastic with 32 bits: the discarded fraction is 1 - 2**-1442, a rest that
    underflows float64 once scaled to the ulp, yet the threshold is 2**32 - 1, so exactly the
    draw 2**32 - 1 keeps the truncation."""
    fmt = formats.get("e10m23")
    a, b = np.array([[2.0 ** 400, 2.0 ** -533]]), np.array([[1.0], [-(2.0 ** -533)]])
    for r, want in ((2 ** 32 - 2, F(2) ** 400), (2 ** 32 - 1, F(2) ** 400 - F(2) ** 376)):
        acc = mm.FloatAccumulator(fmt, "stochastic", seed=_seed_drawing(r, 32, index=1),
                                  sr_bits=32)
        assert F(mm.matmul(a, b, mm.MAC(fmt, accumulator=acc)).values[0, 0]) == want, r


def test_rest_scaled_past_float64_range():
    """Pairwise order, e10m23 register: the first level adds the products 2**-972 and
    2**-1066, whose float64 ulp (2**-1024) takes a scale factor beyond 2**1023 to turn the
    rest into a fraction of it.  The sum is far below the smallest subnormal 2**-533, so the
    threshold is 0: even the draw 0 keeps 0."""
    fmt = formats.get("e10m23")
    a = np.array([[2.0 ** -486, 2.0 ** -533]])
    b = np.array([[2.0 ** -486], [2.0 ** -533]])
    for r in (0, 1):
        acc = mm.FloatAccumulator(fmt, "stochastic", seed=_seed_drawing(r, 32), sr_bits=32)
        got = mm.matmul(a, b, mm.MAC(fmt, accumulator=acc, order="pairwise")).values[0, 0]
        assert got == 0.0, r


def _toward_zero(x: F) -> float:
    """The Fraction ``x`` truncated toward zero to float64 (Python's float() rounds to nearest)."""
    f = float(x)
    return float(np.nextafter(f, 0.0)) if abs(F(f)) > abs(x) else f


def _sum_operands(rng, n: int) -> list[tuple[float, float]]:
    """Pairs whose sum is finite: random signs, significands and exponents across float64's
    range (subnormals and the top binade included), exponent gaps up to 120, plus sums that
    cancel to zero and powers of two nudged by a tiny opposite addend (where the truncation
    steps below a binade's edge)."""
    pairs = []
    for _ in range(n):
        ea = int(rng.integers(-1074, 1024))
        a = float(np.ldexp(rng.uniform(0.5, 1.0), ea)) * rng.choice([-1.0, 1.0])
        b = float(np.ldexp(rng.uniform(0.5, 1.0), ea - int(rng.integers(0, 121))))
        pairs.append((a, b * rng.choice([-1.0, 1.0])))
    for n_exp in (-1021, -900, -1, 0, 1, 52, 600, 1022):
        for gap in (1, 53, 54, 60, 200, 1100):
            p = 2.0 ** n_exp
            tiny = float(np.ldexp(1.0, max(n_exp - gap, -1074)))
            pairs += [(p, -tiny), (-p, tiny), (p, tiny), (-p, -tiny)]
    pairs += [(1.5, -1.5), (-0.0, 0.0), (-0.0, -0.0), (2.0 ** 1000, 2.0 ** -1074),
              (-(2.0 ** 1023), -(2.0 ** 970))]
    return pairs


def test_truncated_sum_against_fractions():
    """``truncated_sum(a, b, rest)`` gives t, the exact sum truncated toward zero to float64,
    and r in [0, 1), the rest |a + b| - |t| in units of ulp(t) (math.ulp: the step above
    |t|) rounded down to float64; below float64's normal range (a rest of 2**-2000 of an ulp
    of 2**1000) r may only be some value in (0, 2**-1022].  Without the rest, r is nonzero
    exactly when the sum is inexact; an exact zero sum has the sign of a + b.  An Inf or NaN
    operand gives t = a + b, r = 0."""
    pairs = _sum_operands(np.random.default_rng(7), 4000)
    for a, b in pairs:
        exact = F(a) + F(b)
        t_want = _toward_zero(exact)
        rest = (abs(exact) - abs(F(t_want))) / F(math.ulp(t_want))
        for with_rest in (False, True):
            t, r = truncated_sum(a, b, with_rest)
            assert t == t_want and (exact != 0 or np.signbit(t) == np.signbit(a + b)), \
                (a, b, with_rest)
            assert (r != 0.0) == (rest != 0), (a, b, with_rest)
        assert 0 <= rest < 1
        if rest >= F(2) ** -1022:
            assert r == _toward_zero(rest), (a, b)
        else:
            assert F(r) <= F(2) ** -1022, (a, b)
    inf = math.inf
    for a, b in ((inf, 1.0), (-inf, 2.0 ** 1023), (inf, -inf), (math.nan, 1.0), (1.0, -inf)):
        for with_rest in (False, True):
            t, r = truncated_sum(a, b, with_rest)
            assert (t == a + b or (t != t and a + b != a + b)) and r == 0.0, (a, b)
