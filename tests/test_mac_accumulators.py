"""mac_models' integer and floating-point accumulators checked against outside oracles.

None of the expected values below comes from numsim: each is computed here, step by step, with
arithmetic somebody else wrote.  The operands are quantized by the oracle first (NumPy's int
casts, ``np.float16``, ``ml_dtypes.bfloat16``, ``np.float32``) and handed to numsim as float64
values already in the operand format, so numsim's own quantizer is a no-op on them.

Oracle of each group of tests:

* Integer wrap (int8/int16 -> int32, int8 -> int16): a sequential NumPy loop over k with the
  register as an ``int32``/``int16`` array (NumPy integer array addition wraps modulo 2**bits);
  overflow events counted with Python's unbounded ints (each step whose exact sum leaves
  [-2**(b-1), 2**(b-1) - 1]).
* Integer saturation: Python ints clamped after every step.
* Fixed point (fix8_4): the integer oracle above on the raw codes, times 2**-8.
* Promotion of int32 partial sums into fp32: Python ints per block of 16 (wrapped like the
  register), each block added into an ``np.float32`` total as ``float32(float64(total) + block)``
  (the float64 sum of two integers below 2**53 is exact, so this is one rounding).
* fp32 register: NumPy ``float32`` arithmetic (IEEE, nearest even), after asserting that every
  product of the fp16 / bf16 operands is exact in float32.
* fp16 register: NumPy ``float16`` arithmetic (computed in float32 and rounded once to float16,
  which is correctly rounded for + and * since 24 >= 2 * 11 + 2); for the fused case
  ``float16(float64(acc) + p)`` with the exactness of every float64 sum asserted by TwoSum.
* bf16 register: ``ml_dtypes.bfloat16`` arithmetic (float32 inside, 24 >= 2 * 8 + 2).
* Kahan, pairwise and chunked orders: the textbook algorithms written out below in np.float16.
* Stochastic rounding: unbiasedness against the exact sum in ``fractions.Fraction``.
* Statistics (swamped, overflows, max_abs_partial): hand-made cases whose answer follows from
  IEEE 754 (fp16 has 11 significant bits, max 65504, RNE overflow threshold 65520), plus the
  prefix values of the oracle loops.
"""
from __future__ import annotations

import math
from fractions import Fraction

import gmpy2
import ml_dtypes
import numpy as np
import pytest

import mac_models as mm
from formats import FloatFormat, ScaledFormat
from mac_models import kernels as mm_kernels
from mac_models import ops as mm_ops
from tests.mpfr_oracle import FloatSpec, oracle_round, rounder, same_values

BF16 = ml_dtypes.bfloat16


# ---- helpers --------------------------------------------------------------------------------
def _rng(seed):
    return np.random.default_rng(seed)


def _same(what, ours, theirs):
    """numsim's float64 values equal the oracle's values exactly, the sign of zero included
    (NaN == NaN, payloads ignored)."""
    ours = np.asarray(ours, dtype=np.float64)
    theirs = np.asarray(theirs).astype(np.float64)
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    bad = ~(((ours == theirs) & (np.signbit(ours) == np.signbit(theirs)))
            | (np.isnan(ours) & np.isnan(theirs)))
    if bad.any():
        idx = np.argwhere(bad)[:6]
        rows = [f"  at {tuple(int(t) for t in i)}: numsim {ours[tuple(i)]!r} oracle "
                f"{theirs[tuple(i)]!r}" for i in idx]
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} differ\n" + "\n".join(rows))


def _int_operands(rng, shape, lo, hi, signs=True):
    """Integers with |v| in [lo, hi], random signs: large values that force overflow."""
    v = rng.integers(lo, hi + 1, size=shape)
    if signs:
        v = v * rng.choice([-1, 1], size=shape, p=[0.3, 0.7])
    return v


def _int_reference_python(ia, ib, bits, saturate):
    """Python-int register per output: (values, events, max |register|), events being the steps
    whose exact sum left the range (wrapped or clamped)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    m, k = ia.shape
    n = ib.shape[1]
    out = np.zeros((m, n), dtype=object)
    events = 0
    peak = 0
    for i in range(m):
        for j in range(n):
            acc = 0
            for t in range(k):
                s = acc + int(ia[i, t]) * int(ib[t, j])
                if s < lo or s > hi:
                    events += 1
                    s = min(max(s, lo), hi) if saturate else ((s - lo) % (1 << bits)) + lo
                acc = s
                peak = max(peak, abs(acc))
            out[i, j] = acc
    return out, events, peak


def _int_reference_numpy(ia, ib, dtype):
    """Sequential loop over k in NumPy integer arrays of ``dtype`` (addition wraps)."""
    a = np.asarray(ia).astype(dtype)
    b = np.asarray(ib).astype(dtype)
    acc = np.zeros((a.shape[0], b.shape[1]), dtype=dtype)
    with np.errstate(over="ignore"):
        for t in range(a.shape[1]):
            acc = acc + a[:, t, None] * b[None, t, :]
    assert acc.dtype == dtype
    return acc


def _float_loop(a, b, dtype, fused=False):
    """Sequential loop in ``dtype`` arithmetic: acc = acc + a_k * b_k, all in ``dtype``
    (fused=False); returns (values, max |prefix|)."""
    a = np.asarray(a, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    acc = np.zeros((a.shape[0], b.shape[1]), dtype=dtype)
    peak = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(a.shape[1]):
            p = a[:, t, None] * b[None, t, :]
            assert p.dtype == dtype
            acc = acc + p
            assert acc.dtype == dtype
            peak = max(peak, float(np.max(np.abs(acc.astype(np.float64)))))
    return acc, peak


def _two_sum_err(x, y):
    s = x + y
    bp = s - x
    return s, (x - (s - bp)) + (y - bp)


# ---- 1. integer wrap ------------------------------------------------------------------------
WRAP_CASES = [
    # (operand format, register bits, numpy dtype, |value| range, K)
    ("int16", 32, np.int32, (30000, 32767), 64),     # 2**30-sized products: many wraps
    ("int8", 16, np.int16, (100, 127), 40),          # ~2**14 products into 16 bits: wraps
    ("int8", 32, np.int32, (0, 127), 64),            # no wrap possible at this K
]


@pytest.mark.parametrize("fmt,bits,dtype,vrange,k", WRAP_CASES,
                         ids=[f"{c[0]}->int{c[1]}" for c in WRAP_CASES])
def test_int_wrap_matches_numpy_integer_arithmetic(fmt, bits, dtype, vrange, k):
    rng = _rng(bits * 1000 + k)
    m, n = 3, 4
    ia = _int_operands(rng, (m, k), *vrange)
    ib = _int_operands(rng, (k, n), *vrange)
    qmin = -(1 << (int(fmt[3:]) - 1))
    ia[0, 0], ib[0, 0] = qmin, qmin                   # the most negative code takes part too
    r = mm.matmul(ia.astype(np.float64), ib.astype(np.float64),
                  mm.MAC(fmt, accumulator=mm.IntAccumulator(bits, "wrap")))
    expected = _int_reference_numpy(ia, ib, dtype)
    py_values, events, peak = _int_reference_python(ia, ib, bits, saturate=False)
    assert np.array_equal(expected.astype(np.int64), py_values.astype(np.int64))  # oracles agree
    _same("values", r.values, expected)
    assert r.integers is not None
    assert np.array_equal(np.asarray(r.integers).astype(np.int64), expected.astype(np.int64))
    assert r.overflows == events
    assert r.saturations == 0
    assert r.macs == m * n * k
    assert r.max_abs_partial == peak
    if vrange[0] >= 100:
        assert events > 0, "the case is meant to overflow"


def test_int8_int32_wraps_exactly_at_2_31():
    """(-128)(-128) = 2**14 added 2**17 + 5 times: the int32 register first leaves its range at
    step 2**17 (sum 2**31).  Oracle: np.cumsum in int32 (wraps) and Python ints."""
    k = (1 << 17) + 5
    a = np.full(k, -128.0)
    r = mm.dot(a, a, mm.MAC("int8", accumulator=mm.IntAccumulator(32)))
    with np.errstate(over="ignore"):
        expected = np.cumsum(np.full(k, 1 << 14, dtype=np.int32), dtype=np.int32)[-1]
    exact = (1 << 14) * k
    assert int(expected) == ((exact + (1 << 31)) % (1 << 32)) - (1 << 31)
    assert float(r.values) == float(expected)
    assert int(r.integers) == int(expected)
    # Python-int count: partial sums 2**14 * t for t = 2**17 .. k all exceed 2**31 - 1 before
    # wrapping; after the first wrap the register holds -2**31 + 2**14 (t - 2**17) < hi.
    assert r.overflows == 1


# ---- 2. integer saturation ------------------------------------------------------------------
SAT_CASES = [("int16", 32, (30000, 32767), 64), ("int8", 16, (100, 127), 40)]


@pytest.mark.parametrize("fmt,bits,vrange,k", SAT_CASES,
                         ids=[f"{c[0]}->int{c[1]}_sat" for c in SAT_CASES])
def test_int_saturate_matches_python_clamping(fmt, bits, vrange, k):
    rng = _rng(7 * bits + k)
    m, n = 3, 4
    ia = _int_operands(rng, (m, k), *vrange)
    ib = _int_operands(rng, (k, n), *vrange)
    r = mm.matmul(ia.astype(np.float64), ib.astype(np.float64),
                  mm.MAC(fmt, accumulator=mm.IntAccumulator(bits, "saturate")))
    expected, events, peak = _int_reference_python(ia, ib, bits, saturate=True)
    _same("values", r.values, expected.astype(np.float64))
    assert np.array_equal(np.asarray(r.integers).astype(np.int64), expected.astype(np.int64))
    assert events > 0, "the case is meant to saturate"
    assert r.saturations == events
    assert r.overflows == 0
    assert r.max_abs_partial == peak


# ---- 3. fixed point -------------------------------------------------------------------------
def test_fixed_point_is_integer_result_times_2_to_minus_8():
    rng = _rng(84)
    m, k, n = 4, 50, 5
    qa = rng.integers(-128, 128, size=(m, k))
    qb = rng.integers(-128, 128, size=(k, n))
    a, b = qa / 16.0, qb / 16.0                         # exact fix8_4 values
    r = mm.matmul(a, b, mm.MAC("fix8_4", accumulator=mm.IntAccumulator(32)))
    ints = _int_reference_numpy(qa, qb, np.int32)
    _same("values", r.values, ints.astype(np.float64) * 2.0 ** -8)
    assert np.array_equal(np.asarray(r.integers).astype(np.int64), ints.astype(np.int64))
    assert r.overflows == 0


# ---- 4. promotion of integer partial sums ---------------------------------------------------
@pytest.mark.parametrize("vrange", [(0, 8000), (30000, 32767)], ids=["no_wrap", "wrapping_blocks"])
def test_int32_promotion_into_fp32(vrange):
    rng = _rng(16 + vrange[0])
    m, k, n, every = 3, 70, 4, 16                       # 70 = 4 * 16 + 6: a short last block
    ia = _int_operands(rng, (m, k), *vrange)
    ib = _int_operands(rng, (k, n), *vrange)
    r = mm.matmul(ia.astype(np.float64), ib.astype(np.float64),
                  mm.MAC("int16", accumulator=mm.IntAccumulator(32), promote_every=every))
    lo, hi = -(1 << 31), (1 << 31) - 1
    expected = np.zeros((m, n), dtype=np.float32)
    events = 0
    rounded = False
    for i in range(m):
        for j in range(n):
            total = np.float32(0.0)
            for k0 in range(0, k, every):
                block = 0
                for t in range(k0, min(k, k0 + every)):
                    s = block + int(ia[i, t]) * int(ib[t, j])
                    if s < lo or s > hi:
                        events += 1
                        s = ((s - lo) % (1 << 32)) + lo
                    block = s
                exact = float(total) + float(block)     # exact: integers below 2**53
                assert Fraction(exact) == Fraction(float(total)) + block
                total = np.float32(np.float64(exact))
                rounded |= float(total) != exact
            expected[i, j] = total
    _same("values", r.values, expected)
    assert r.overflows == events
    assert rounded, "the fp32 total should have had to round somewhere"
    if vrange[0] > 0:
        assert events > 0


def test_bf16_partial_sums_promoted_into_fp32():
    """bf16 register (unfused) restarted every 16 products, each block sum added into an fp32
    total: ml_dtypes.bfloat16 loops per block, np.float32 additions for the total (a bf16 value
    is exact in float32)."""
    rng = _rng(1632)
    m, k, n, every = 3, 70, 4, 16
    a = _fp_operands(rng, (m, k), BF16, 4.0)
    b = _fp_operands(rng, (k, n), BF16, 4.0)
    r = mm.matmul(a.astype(np.float64), b.astype(np.float64),
                  mm.MAC("bf16", accumulator=mm.FloatAccumulator("bf16"), fused=False,
                         promote_every=every))
    total = np.zeros((m, n), dtype=np.float32)
    for k0 in range(0, k, every):
        block = _float_loop(a[:, k0:k0 + every], b[k0:k0 + every, :], BF16)[0]
        total = (total + block.astype(np.float32)).astype(np.float32)
    _same("values", r.values, total)
    assert not np.array_equal(total, _float_loop(a, b, BF16)[0].astype(np.float32))


# ---- 5. fp32 register -----------------------------------------------------------------------
def _fp_operands(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize("fmt,dtype", [("fp16", np.float16), ("bf16", BF16)], ids=["fp16", "bf16"])
def test_fp32_register_matches_numpy_float32(fmt, dtype):
    rng = _rng(32)
    m, k, n = 4, 200, 5
    a = _fp_operands(rng, (m, k), dtype, 8.0)
    b = _fp_operands(rng, (k, n), dtype, 8.0)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    r = mm.matmul(a64, b64, mm.MAC(fmt, accumulator=mm.FloatAccumulator("fp32")))
    acc = np.zeros((m, n), dtype=np.float32)
    peak = 0.0
    for t in range(k):
        p = a64[:, t, None] * b64[None, t, :]           # exact float64 product
        assert np.array_equal(p.astype(np.float32).astype(np.float64), p), "p exact in fp32"
        acc = (acc + p.astype(np.float32)).astype(np.float32)
        assert acc.dtype == np.float32
        peak = max(peak, float(np.abs(acc).max()))
    _same("values", r.values, acc)
    assert r.max_abs_partial == peak
    assert r.overflows == 0 and r.saturations == 0


def test_fp32_unfused_with_fp32_operands_matches_numpy_float32():
    rng = _rng(3232)
    m, k, n = 4, 150, 5
    a = _fp_operands(rng, (m, k), np.float32, 3.0)
    b = _fp_operands(rng, (k, n), np.float32, 3.0)
    r = mm.matmul(a.astype(np.float64), b.astype(np.float64),
                  mm.MAC("fp32", accumulator=mm.FloatAccumulator("fp32"), fused=False))
    expected, peak = _float_loop(a, b, np.float32)
    _same("values", r.values, expected)
    assert r.max_abs_partial == peak


# ---- 6. fp16 register -----------------------------------------------------------------------
def _fp16_fused_reference(a16, b16):
    """acc = float16(float64(acc) + p) with p the exact product; asserts every float64 sum is
    exact (TwoSum error zero), so the one float16 rounding is of the exact sum."""
    a64, b64 = a16.astype(np.float64), b16.astype(np.float64)
    acc = np.zeros((a16.shape[0], b16.shape[1]), dtype=np.float16)
    peak = 0.0
    for t in range(a16.shape[1]):
        p = a64[:, t, None] * b64[None, t, :]
        s, err = _two_sum_err(acc.astype(np.float64), p)
        assert not err.any(), "float64 sum not exact: the oracle does not apply"
        acc = s.astype(np.float16)
        peak = max(peak, float(np.abs(acc.astype(np.float64)).max()))
    return acc, peak


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_fp16_register(fused):
    rng = _rng(1616)
    m, k, n = 4, 120, 5
    a = _fp_operands(rng, (m, k), np.float16, 2.0)
    b = _fp_operands(rng, (k, n), np.float16, 2.0)
    r = mm.matmul(a.astype(np.float64), b.astype(np.float64),
                  mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp16"), fused=fused))
    unfused, peak_u = _float_loop(a, b, np.float16)
    fused_ref, peak_f = _fp16_fused_reference(a, b)
    assert not np.array_equal(unfused, fused_ref), "data should tell fused from unfused apart"
    expected, peak = (fused_ref, peak_f) if fused else (unfused, peak_u)
    _same("values", r.values, expected)
    assert r.max_abs_partial == peak


# ---- 7. bf16 register -----------------------------------------------------------------------
def test_bf16_register_unfused_matches_ml_dtypes():
    rng = _rng(1600)
    m, k, n = 4, 120, 5
    a = _fp_operands(rng, (m, k), BF16, 2.0)
    b = _fp_operands(rng, (k, n), BF16, 2.0)
    r = mm.matmul(a.astype(np.float64), b.astype(np.float64),
                  mm.MAC("bf16", accumulator=mm.FloatAccumulator("bf16"), fused=False))
    expected, peak = _float_loop(a, b, BF16)
    _same("values", r.values, expected)
    assert r.max_abs_partial == peak


# ---- 7b. any register, operands over their whole exponent range -----------------------------
def _mpfr_sequential(a, b, spec, mode="nearest_even"):
    """Per output, ``acc = round(acc + a_t * b_t)`` with the exact sum rounded once by MPFR in
    ``mode`` (IEEE overflow policy) and an exact zero sum signed as IEEE 754 says; returns
    (values, overflows: roundings beyond the largest finite value, swamped, max |acc|).  An
    infinite register stays infinite (the operands are finite), and its steps count nothing."""
    m, k = a.shape
    n = b.shape[1]
    acc = np.zeros((m, n))
    overflows = swamped = 0
    peak = 0.0
    for t in range(k):
        pf = (a[:, t, None] * b[None, t, :]).ravel()        # exact in float64, zero signs too
        p = [Fraction(float(x)) for x in pf]
        old = acc.ravel()
        live = np.isfinite(old)
        with gmpy2.context(precision=4096):
            exact = np.array([gmpy2.mpfr(gmpy2.mpq(Fraction(float(o)) + q)) if f else gmpy2.mpfr(0)
                              for o, q, f in zip(old, p, live)], dtype=object)
        rounded = rounder(spec).round(exact, mode)
        new = np.where(live, rounded.finalize("ieee"), old)
        # an exact zero sum: two zeros of one sign keep it, else -0 toward negative, +0 otherwise
        zero = live & np.array([f and Fraction(float(o)) + q == 0
                                for o, q, f in zip(old, p, live)], dtype=bool)
        same_zeros = (old == 0) & (pf == 0) & (np.signbit(old) == np.signbit(pf))
        neg = np.where(same_zeros, np.signbit(old), mode == "toward_negative")
        new = np.where(zero, np.where(neg, -0.0, 0.0), new)
        overflows += int((live & (np.abs(rounded.r) > spec.max)).sum())
        swamped += int(sum(f and q != 0 and v == o for f, q, v, o in zip(live, p, new, old)))
        acc = new.reshape(m, n)
        peak = max(peak, float(np.abs(new).max()))
    return acc, overflows, swamped, peak


def _wide_operands(rng, shape, dtype, lo, hi):
    """Random signs and magnitudes 2**uniform(lo, hi), cast by the oracle dtype (NumPy float16
    or ml_dtypes): exponents spread over the whole range, subnormals and zeros included."""
    v = rng.choice([-1.0, 1.0], size=shape) * 2.0 ** rng.uniform(lo, hi, size=shape)
    return v.astype(dtype).astype(np.float64)


@pytest.mark.parametrize("mode", ["nearest_even", "toward_zero", "toward_positive",
                                  "toward_negative", "nearest_away"])
@pytest.mark.parametrize("register,spec,operand,dtype,lo,hi,big", [
    ("fp16", FloatSpec(5, 10, 15), "fp16", np.float16, -26, 7, 7.5),
    ("fp16", FloatSpec(5, 10, 15), "fp8_e4m3", ml_dtypes.float8_e4m3fn, -10, 8.5, 8.5),
    ("fp32", FloatSpec(8, 23, 127), "bf16", BF16, -135, 62, 64),
    ("bf16", FloatSpec(8, 7, 127), "fp8_e4m3", ml_dtypes.float8_e4m3fn, -10, 8.5, None),
    ("bf16", FloatSpec(8, 7, 127), "bf16", BF16, -135, 62, 64),
], ids=["fp16<-fp16", "fp16<-e4m3", "fp32<-bf16", "bf16<-e4m3", "bf16<-bf16"])
def test_register_rounds_each_exact_sum_once(register, spec, operand, dtype, lo, hi, big, mode):
    """Every step is the exact sum rounded once (MPFR), statistics and zero signs included, with
    operand exponents spread so that the float64 sum of register and product is often inexact
    and the smallest products fall below the register's subnormals.  Where the operands can
    reach it (``big``), row 0 starts with four large products and overflows.  To nearest even,
    the first four pairs take the kernel's shortcut through the float64 sum
    (``mac_models.ops._direct_nearest``), the last the round-to-odd path; the other modes take
    the bitwise path (``mac_models.kernels.add_bitwise``)."""
    rng = _rng(7007)
    m, k, n = 4, 96, 6
    a = _wide_operands(rng, (m, k), dtype, lo, hi)
    b = _wide_operands(rng, (k, n), dtype, lo, hi)
    if big is not None:
        a[0, :4] = np.abs(_wide_operands(rng, 4, dtype, big - 0.5, big))
        b[:4] = np.abs(_wide_operands(rng, (4, n), dtype, big - 0.5, big))
        a[1:, :4] = _wide_operands(rng, (m - 1, 4), dtype, lo, lo + 4)
    # row 3 ends in an exact zero sum of opposite addends (the sign depends on the mode)
    a[3, :-2], a[3, -2:], b[-1] = 0.0, [1.0, -1.0], b[-2]
    mac = mm.MAC(operand, accumulator=mm.FloatAccumulator(register, mode))
    plan = mm_ops._acc_plan(mac.accumulator)
    if mode == "nearest_even":
        shortcut = (register, operand) != ("bf16", "bf16")
        assert mm_ops._direct_nearest(mac, plan) == shortcut
    else:
        assert mm_kernels.add_path(plan) == mm_kernels.PATH_BITWISE
    assert not mm_ops._native_fp32(mac, False)
    r = mm.matmul(a, b, mac)
    values, overflows, swamped, peak = _mpfr_sequential(a, b, spec, mode)
    _same("values", r.values, values)
    zeros = values == 0
    assert zeros[3].all() and (np.signbit(r.values[zeros]) == np.signbit(values[zeros])).all()
    assert np.isfinite(values[1:]).any() and (overflows > 0) == (big is not None)
    assert (r.overflows, r.swamped, r.max_abs_partial) == (overflows, swamped, peak)
    assert swamped > 0


@pytest.mark.parametrize("mode,sign,step", [
    ("toward_positive", 1, 388), ("toward_negative", -1, 387), ("toward_zero", -1, 387),
    ("toward_zero", 1, None), ("nearest_away", 1, None)])
def test_register_sees_a_rest_far_below_float64(mode, sign, step):
    """2**400 in an e10m12 register (bias 526: 2**-537 .. 2**497) plus the product
    +-2**-1074 of two smallest subnormals: the float64 sum is 2**400, the rest 2**-1422 of its
    float64 ulp.  The directed modes still step to the neighbour 2**step away (the binade below
    for a negative rest); toward zero from above and nearest-away keep 2**400."""
    fmt = FloatFormat(10, 12, bias=526)
    a, b = np.array([[2.0 ** 400, 2.0 ** -537]]), np.array([[1.0], [sign * 2.0 ** -537]])
    r = mm.matmul(a, b, mm.MAC(fmt, accumulator=mm.FloatAccumulator(fmt, mode)))
    want = Fraction(2) ** 400 + (0 if step is None else sign * Fraction(2) ** step)
    assert Fraction(r.values[0, 0]) == want


# ---- 7c. a scaled segment sum added into the register ---------------------------------------
@pytest.mark.parametrize("mode", ["nearest_even", "toward_zero", "toward_positive",
                                  "toward_negative"])
@pytest.mark.parametrize("register,spec", [("fp32", FloatSpec(8, 23, 127)),
                                           ("fp16", FloatSpec(5, 10, 15))])
def test_combine_rounds_each_scaled_sum_once(register, spec, mode):
    """The step that adds a segment's sum times its scales into the register (block scales,
    promotion): ``total + part * sa * sb`` is the exact value rounded once (MPFR), zero signs
    and statistics included.  The scales are powers of two (the addend is exact in float64: in
    nearest-even, the kernel's shortcut), 24-bit significands (often inexact: its exact path),
    tiny ones whose addend underflows float64 (kept as a nonzero of its sign) and, with scale
    formats near 2**511, scales near 2**1000 (TwoProduct's split would overflow) whose addends
    are finite but beyond float64: an overflow in every mode, not an exact infinity."""
    rng = _rng(7117)
    m, n = 5, 3000
    dtype, lo, hi = (np.float32, -149, 127) if register == "fp32" else (np.float16, -24, 15)
    part = _wide_operands(rng, (1, n), dtype, lo, hi)
    part[0, :40] = 0.0
    part[0, 20:40] = -0.0
    total = _wide_operands(rng, (m, n), dtype, lo, hi)
    total[:, ::7] = 0.0
    total[:, 1::14] = -0.0
    pick = rng.integers(0, 4, n)
    sig24 = rng.integers(1 << 23, 1 << 24, n) * 2.0 ** -23
    sb = np.select([pick == 0, pick == 1, pick == 2],
                   [2.0 ** rng.integers(-200, 200, n), sig24 * 2.0 ** rng.integers(-60, 60, n),
                    2.0 ** rng.integers(-700, -600, n)], sig24 * 2.0 ** rng.integers(480, 511, n))
    sa = np.array([1.0, 2.0 ** -300, 12582913 * 2.0 ** -20, 2.0 ** 100,
                   16777215 * 2.0 ** 487])[:, None]
    if register == "fp32":
        # 8388611 * 1848289963 = M * 2**29 + 1 (M odd): float64 rounds it onto an fp32 midpoint,
        # so only the exact product, not its float64 value, rounds correctly into row 0's 0
        part[0, 40], sb[40], total[0, 40] = 8388611.0, 1848289963.0, 0.0
    cd = mm_ops._acc_plan(mm.FloatAccumulator(register, rounding=mode))
    exact_addends = beyond_float64 = 0
    for i in range(m):
        got = total[i].copy()
        st = np.zeros((mm_kernels.N_STATS, n), dtype=np.int64)
        top = np.zeros(n)
        mm_kernels._combine(got, part[0], 1.0, sa, sb[None, :], i, 0, cd, st, top, 0, 1)
        addend = [Fraction(float(p)) * Fraction(float(sa[i, 0])) * Fraction(float(s))
                  for p, s in zip(part[0], sb)]
        with np.errstate(over="ignore"):
            x64 = part[0] * (sa[i, 0] * sb)
        exact_addends += sum(math.isfinite(x) and Fraction(x) == q
                             for x, q in zip(x64.tolist(), addend))
        beyond_float64 += sum(abs(q) > Fraction(float(np.finfo(np.float64).max)) for q in addend)
        with gmpy2.context(precision=4096):
            exact = np.array([gmpy2.mpfr(gmpy2.mpq(Fraction(float(o)) + q))
                              for o, q in zip(total[i], addend)], dtype=object)
        want = oracle_round(exact, spec, mode, "ieee")
        # an exact zero sum (IEEE): two zeros of one sign keep it; otherwise -0 toward negative
        zero = np.array([Fraction(float(o)) + q == 0 for o, q in zip(total[i], addend)])
        neg_addend = np.signbit(part[0]) != np.signbit(sa[i, 0] * sb)
        zeros = (total[i] == 0) & (part[0] == 0)
        neg_zero = np.where(zeros & (np.signbit(total[i]) == neg_addend), neg_addend,
                            mode == "toward_negative")
        want = np.where(zero, np.where(neg_zero, -0.0, 0.0), want)
        bad = ~same_values(got, want)
        assert not bad.any(), (i, np.flatnonzero(bad)[:5], got[bad][:5], want[bad][:5])
        # an overflow: the exact sum rounded (in an unbounded exponent range) beyond the max
        over = np.abs(rounder(spec).round(exact, mode).r) > spec.max
        assert st[mm_kernels.ST_OVERFLOW].sum() == int(over.sum())
        nonzero = np.array([q != 0 for q in addend])
        assert st[mm_kernels.ST_SWAMPED].sum() == int((nonzero & (want == total[i])).sum())
    assert 0 < exact_addends < m * n                          # both paths taken
    assert beyond_float64 > 0


def test_block_scales_beyond_float64_overflow_in_every_mode():
    """Scales near 2**511 (an e8m0 scale biased up to 2**257..2**511) make every block's
    addend larger than float64's maximum.  Each is an overflow in the register's mode, never
    an exact infinity: toward zero the outputs are the largest finite value with the sign of
    the last block (the last rounding); to nearest (either tie rule) and stochastically the
    infinity of the first block's sign, which no later block can undo; and blocks of opposite
    signs never meet as Inf - Inf."""
    fmt = ScaledFormat("fp8_e4m3", scale=FloatFormat(8, 0, bias=-257, kind="e8m0",
                                                     signed=False), group=16)
    rng = _rng(515)
    m, k, n = 3, 64, 4
    a = rng.standard_normal((m, k)) * 2.0 ** 512
    b = rng.standard_normal((k, n)) * 2.0 ** 512
    # the signs of the first and last blocks' sums: the quantized values scaled by 2**-500
    # (exact) have products near 1, whose float64 sum has the exact sum's sign
    qa = fmt.quantize(a, axis=1) * 2.0 ** -500
    qb = fmt.quantize(b, axis=0) * 2.0 ** -500
    first, last = np.sign(qa[:, :16] @ qb[:16]), np.sign(qa[:, -16:] @ qb[-16:])
    assert (first != 0).all() and (last != 0).all() and (first != last).any()
    fp32_max = float(np.finfo(np.float32).max)
    for mode in ("toward_zero", "nearest_even", "nearest_away", "stochastic"):
        acc = mm.FloatAccumulator("fp32", mode, seed=1 if mode == "stochastic" else None)
        r = mm.matmul(a, b, mm.MAC(fmt, accumulator=acc, promote_to=acc))
        if mode == "toward_zero":
            np.testing.assert_array_equal(r.values, last * fp32_max)
            assert r.overflows == m * n * (k // 16)               # every block rounds beyond
        else:
            np.testing.assert_array_equal(r.values, first * np.inf)
            assert r.overflows == m * n               # then Inf: no events from infinite inputs


# ---- 8. Kahan -------------------------------------------------------------------------------
def _kahan_fp16(a16, b16):
    acc = np.zeros((a16.shape[0], b16.shape[1]), dtype=np.float16)
    c = np.zeros_like(acc)
    for t in range(a16.shape[1]):
        p = a16[:, t, None] * b16[None, t, :]
        y = p - c
        s = acc + y
        c = (s - acc) - y
        acc = s
        assert acc.dtype == c.dtype == np.float16
    return acc


def test_kahan_fp16_matches_textbook_loop_random():
    rng = _rng(4242)
    m, k, n = 3, 150, 4
    a = _fp_operands(rng, (m, k), np.float16, 2.0)
    b = _fp_operands(rng, (k, n), np.float16, 2.0)
    r = mm.matmul(a.astype(np.float64), b.astype(np.float64),
                  mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp16", kahan=True),
                         fused=False))
    _same("values", r.values, _kahan_fp16(a, b))


def test_kahan_fp16_beats_plain_fp16_on_long_small_sums():
    rng = _rng(99)
    k = 4096
    a = rng.uniform(0.05, 0.15, size=(2, k)).astype(np.float16)
    b = np.ones((k, 1), dtype=np.float16)               # products exact in fp16
    mac_k = mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp16", kahan=True), fused=False)
    mac_p = mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp16"), fused=False)
    rk = mm.matmul(a.astype(np.float64), b.astype(np.float64), mac_k)
    rp = mm.matmul(a.astype(np.float64), b.astype(np.float64), mac_p)
    _same("kahan values", rk.values, _kahan_fp16(a, b))
    _same("plain values", rp.values, _float_loop(a, b, np.float16)[0])
    exact = np.array([[float(math.fsum(row.astype(np.float64)))] for row in a])
    err_k = np.abs(rk.values - exact)
    err_p = np.abs(rp.values - exact)
    assert np.all(err_k < err_p / 10), (err_k, err_p)
    assert np.all(err_k <= 1.0)                        # ulp(256..512) = 0.25 in fp16


# ---- 9. pairwise and chunked orders ---------------------------------------------------------
def _pairwise_fp16(values):
    level = list(values)
    while len(level) > 1:
        nxt = [np.float16(level[2 * t] + level[2 * t + 1]) for t in range(len(level) // 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


@pytest.mark.parametrize("k", [1, 2, 3, 7, 16, 33, 100])
def test_pairwise_fp16_matches_tree(k):
    rng = _rng(500 + k)
    m, n = 3, 4
    a = _fp_operands(rng, (m, k), np.float16, 4.0)
    b = _fp_operands(rng, (k, n), np.float16, 4.0)
    r = mm.matmul(a.astype(np.float64), b.astype(np.float64),
                  mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp16"), fused=False,
                         order="pairwise"))
    expected = np.zeros((m, n), dtype=np.float16)
    for i in range(m):
        for j in range(n):
            products = [np.float16(a[i, t] * b[t, j]) for t in range(k)]
            expected[i, j] = _pairwise_fp16(products)
    _same("values", r.values, expected)


@pytest.mark.parametrize("k", [2, 5, 16, 33])
def test_pairwise_swamped_counts_either_lost_operand(k):
    """Each tree addition x + y counts as swamped when a nonzero operand is lost (the fp16 sum
    equals the other one), whichever side it is on: the count does not depend on the order
    of the products.  Oracle: the tree in NumPy float16."""
    rng = _rng(900 + k)
    a = (rng.choice([1.0, -1.0], (2, k)) * np.exp2(rng.integers(-24, 4, (2, k)))
         ).astype(np.float16)
    b = np.ones((k, 1), dtype=np.float16)
    mac = mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp16"), order="pairwise")
    for row in a:
        counts = []
        for values in (row, row[::-1]):
            level, lost = list(values), 0
            while len(level) > 1:
                nxt = []
                for t in range(len(level) // 2):
                    x, y = level[2 * t], level[2 * t + 1]
                    s = np.float16(x + y)
                    lost += bool((y != 0 and s == x) or (x != 0 and s == y))
                    nxt.append(s)
                level = nxt + ([level[-1]] if len(level) % 2 else [])
            r = mm.matmul(values[None, :].astype(np.float64), b.astype(np.float64), mac)
            assert r.swamped == lost
            counts.append(lost)
        if k == 2:
            assert counts[0] == counts[1]
    for pair in ([2.0 ** -20, 1.0], [1.0, 2.0 ** -20]):
        assert mm.matmul(np.array([pair]), np.ones((2, 1)), mac).swamped == 1


def test_pairwise_lone_product_enters_the_register():
    """K = 1 leaves the tree no addition, but the exact product still goes into the fp16
    register (0 + p, so -0 becomes +0): NumPy's float16 rounding of it, overflow to Inf counted;
    in stochastic rounding, the same draw as the sequential order."""
    a = np.array([[1 + 2**-10], [60000.0], [-3.0], [2.0**-20]])
    b = np.array([[1 + 2**-10, 2.0, -0.0, 2.0**-5]])
    pairwise = mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp16"), order="pairwise")
    r = mm.matmul(a, b, pairwise)
    with np.errstate(over="ignore"):                   # each product is exact in float64
        expected = np.float16(0.0) + (a * b).astype(np.float16)   # the register starts at +0
    _same("values", r.values, expected)
    assert r.overflows == np.isinf(expected).sum() == 1
    assert r.max_abs_partial == np.inf
    sr = mm.FloatAccumulator("fp16", "stochastic", seed=5)
    rng = _rng(521)
    a = rng.standard_normal((9, 1)).astype(np.float32).astype(np.float64)
    b = rng.standard_normal((1, 7)).astype(np.float32).astype(np.float64)
    tree = mm.matmul(a, b, mm.MAC("fp32", accumulator=sr, order="pairwise"))
    line = mm.matmul(a, b, mm.MAC("fp32", accumulator=sr))
    _same("values", tree.values, line.values)
    assert not np.array_equal(tree.values, (a * b).astype(np.float16)), "a draw went the far way"


@pytest.mark.parametrize("k", [5, 30, 64, 101])
def test_chunks_fp16_matches_chunked_reference(k):
    rng = _rng(600 + k)
    m, n, chunks = 3, 4, 4
    a = _fp_operands(rng, (m, k), np.float16, 4.0)
    b = _fp_operands(rng, (k, n), np.float16, 4.0)
    r = mm.matmul(a.astype(np.float64), b.astype(np.float64),
                  mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp16"), fused=False,
                         chunks=chunks))
    size = -(-k // chunks)
    total = np.zeros((m, n), dtype=np.float16)
    for k0 in range(0, k, size):
        piece = _float_loop(a[:, k0:k0 + size], b[k0:k0 + size, :], np.float16)[0]
        total = (total + piece).astype(np.float16)
    _same("values", r.values, total)
    if k >= 30:
        assert not np.array_equal(total, _float_loop(a, b, np.float16)[0]), \
            "data should tell chunked from sequential apart"


# ---- 10. stochastic rounding ----------------------------------------------------------------
def test_stochastic_bf16_is_unbiased_and_seeded():
    rng = _rng(1010)
    k = 64
    a = _fp_operands(rng, k, BF16, 3.0).astype(np.float64)
    b = _fp_operands(rng, k, BF16, 3.0).astype(np.float64)
    exact = sum((Fraction(x) * Fraction(y) for x, y in zip(a, b)), Fraction(0))

    def run(seed):
        mac = mm.MAC("bf16", accumulator=mm.FloatAccumulator("bf16", rounding="stochastic",
                                                             seed=seed))
        return float(mm.dot(a, b, mac).values)

    results = np.array([run(s) for s in range(200)])
    assert np.all(results.astype(BF16).astype(np.float64) == results), "results are bf16 values"
    mean = Fraction(sum(Fraction(v) for v in results), len(results))
    se = results.std(ddof=1) / math.sqrt(len(results))
    assert se > 0, "stochastic rounding should vary with the seed"
    assert abs(float(mean - exact)) <= 5 * se, (float(mean), float(exact), se)
    assert run(12345) == run(12345)
    assert len(set(results.tolist())) > 10            # different seeds differ


def test_stochastic_same_seed_identical_matmul():
    rng = _rng(1011)
    a = _fp_operands(rng, (4, 50), BF16, 3.0).astype(np.float64)
    b = _fp_operands(rng, (50, 6), BF16, 3.0).astype(np.float64)

    def run(seed):
        return mm.matmul(a, b, mm.MAC("bf16", accumulator=mm.FloatAccumulator(
            "bf16", rounding="stochastic", seed=seed))).values

    assert np.array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


# ---- 11. statistics -------------------------------------------------------------------------
@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_swamped_fp16_2048_plus_ones(fused):
    """fp16 has 11 significant bits: ulp(2048) = 2, 2048 + 1 is a tie, to even is 2048."""
    a = np.array([2048.0] + [1.0] * 5)
    b = np.ones(6)
    r = mm.dot(a, b, mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp16"), fused=fused))
    assert float(r.values) == float(np.float16(2048) + np.float16(1)) == 2048.0
    assert r.swamped == 5
    assert r.overflows == 0
    assert r.max_abs_partial == 2048.0


def test_swamped_fp32_2_24_plus_ones():
    """fp32 register (fp16 operands, the native float32 path): 4096 * 4096 = 2**24, +1 ties to
    even, so each +1 is swamped."""
    a = np.array([4096.0, 1.0, 1.0, 1.0])
    r = mm.dot(a, a, mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp32")))
    assert float(r.values) == float(np.float32(2 ** 24) + np.float32(1)) == 2.0 ** 24
    assert r.swamped == 3


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_fp16_overflow_counted_once(fused):
    a = np.array([60000.0, 60000.0, -60000.0, 5.0])
    b = np.ones(4)
    r = mm.dot(a, b, mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp16"), fused=fused))
    with np.errstate(over="ignore"):
        ref = _float_loop(a[None, :].astype(np.float16), b[:, None].astype(np.float16),
                          np.float16)[0]
    assert float(ref[0, 0]) == math.inf
    assert float(r.values) == math.inf
    assert r.overflows == 1


@pytest.mark.parametrize("addend,value,events", [
    (4.0, 65504.0, 0),         # exact 65508 < 65520: rounds to 65504, no overflow (IEEE 7.4)
    (8.0, 65504.0, 0),         # 65512: still below the threshold
    (16.0, math.inf, 1),       # 65520: the tie, nearest even goes to Inf
    (32.0, math.inf, 1),
], ids=["+4", "+8", "+16", "+32"])
@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_fp16_overflow_threshold(addend, value, events, fused):
    """An overflow is a finite -> Inf transition (IEEE 754: the rounded result exceeds the
    largest finite number).  Sums in (65504, 65520) round back to 65504: no overflow."""
    a = np.array([65504.0, addend])
    b = np.ones(2)
    with np.errstate(over="ignore"):
        ref = np.float16(65504) + np.float16(addend)
    assert float(ref) == value
    r = mm.dot(a, b, mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp16"), fused=fused))
    assert float(r.values) == value
    assert r.overflows == events, (r.overflows, events)
    assert r.swamped == (1 if value == 65504.0 else 0)


def test_unfused_products_saturate_with_the_register():
    """fused=False rounds each product into the register's format under the register's
    rules: with overflow='saturate', a product beyond fp16 saturates to +-65504 (it went to
    +-Inf, which the register then clamped, counting overflows).  Oracle: NumPy float16 with
    each rounded product and sum clamped to +-65504."""
    rng = _rng(2024)
    a = np.round(rng.uniform(-400, 400, (3, 40))).astype(ml_dtypes.bfloat16).astype(np.float64)
    b = np.round(rng.uniform(-400, 400, (40, 4))).astype(ml_dtypes.bfloat16).astype(np.float64)
    acc, events = np.zeros((3, 4), np.float16), 0
    with np.errstate(over="ignore"):
        for t in range(a.shape[1]):
            p = (a[:, t, None] * b[None, t, :]).astype(np.float16)
            events += int(np.isinf(p).sum())
            acc = acc + np.clip(p, -65504, 65504)
            events += int(np.isinf(acc).sum())
            acc = np.clip(acc, -65504, 65504)
    assert events > 10
    r = mm.matmul(a, b, mm.MAC("bf16", accumulator=mm.FloatAccumulator("fp16",
                                                                         overflow="saturate"),
                               fused=False))
    _same("values", r.values, acc)
    assert (r.saturations, r.overflows) == (events, 0)
    edge = mm.matmul(np.array([[300.0, 300.0]]), np.array([[300.0], [-300.0]]),
                     mm.MAC("bf16", accumulator=mm.FloatAccumulator("fp16", overflow="saturate"),
                            fused=False))
    assert edge.values.tolist() == [[0.0]] and edge.saturations == 2


def test_max_abs_partial_is_largest_prefix():
    """Products first positive then negative: the peak is in the middle of the sum."""
    rng = _rng(77)
    k = 60
    a = np.concatenate([rng.uniform(1, 4, 30), -rng.uniform(1, 4, 30)]).astype(np.float16)
    b = rng.uniform(1, 4, k).astype(np.float16)
    r = mm.dot(a.astype(np.float64), b.astype(np.float64),
               mm.MAC("fp16", accumulator=mm.FloatAccumulator("fp16"), fused=False))
    values, peak = _float_loop(a[None, :], b[:, None], np.float16)
    _same("values", r.values, values[0, 0])
    assert peak > abs(float(values[0, 0]))
    assert r.max_abs_partial == peak
