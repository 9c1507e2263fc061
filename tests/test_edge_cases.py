"""Edge cases of the scalar formats, with every expected value derived from the format
definitions (never from numsim output).

Format facts used below (value = (-1)**s * 2**(E - bias) * 1.m, subnormals 2**(1 - bias) * 0.m):

* fp8_e4m3   OCP E4M3 ("fn"): bias 7, no Inf, NaN = S.1111.111, max 1.75 * 2**8 = 448,
             min normal 2**-6, min subnormal 2**-9.
* fp8_e5m2   IEEE-style: bias 15, Inf = S.11111.00, max 1.75 * 2**15 = 57344, min sub 2**-16.
* fp8_e4m3fnuz / fp8_e5m2fnuz: bias 8 / 16, no Inf, no -0, the single NaN is code 0x80;
             max 1.875 * 2**7 = 240 / 1.75 * 2**15 = 57344; min sub 2**-10 / 2**-17.
* fp8_e3m4   IEEE-style, bias 3: max 1.9375 * 2**3 = 15.5, min sub 2**-6.
* fp6_e3m2 / fp6_e2m3 / fp4_e2m1: OCP, no Inf/NaN ("finite"), biases 3 / 1 / 1,
             max 28 / 7.5 / 6, min sub 2**-4 / 2**-3 / 2**-1.
* bf16, fp16, fp32: IEEE binary formats (8/7, 5/10, 8/23 exponent/mantissa bits).
* e5m7       IEEE-style 13-bit format, bias 15: max (2 - 2**-7) * 2**15 = 65280, min sub 2**-21.
* e8m0       OCP MX scale: code c means 2**(c - 127), 0xFF is NaN, no zero, no sign.
"""
from __future__ import annotations

import math
import sys
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import formats
import mac_models as mm

MODES5 = ("nearest_even", "nearest_away", "toward_zero", "toward_positive", "toward_negative")
MODES6 = MODES5 + ("stochastic",)
INF = math.inf
U64 = np.uint64


def up(x: float) -> float:
    return float(np.nextafter(x, INF))


def down(x: float) -> float:
    return float(np.nextafter(x, -INF))


def bits64(x) -> int:
    return int(np.asarray(x, dtype=np.float64).view(np.uint64))


def same(got, want) -> bool:
    """Float equality that tells -0 from +0 and lets NaN equal NaN."""
    got, want = float(got), float(want)
    if math.isnan(want):
        return math.isnan(got)
    return bits64(got) == bits64(want)


def check_values(what, xs, got, want):
    bad = [(x, g, w) for x, g, w in zip(np.ravel(xs), np.ravel(got), np.ravel(want))
           if not same(g, w)]
    assert not bad, f"{what}: {len(bad)} wrong, e.g. " + "; ".join(
        f"x={x!r}: got {float(g)!r}, want {float(w)!r}" for x, g, w in bad[:6])


def enc(name, x, **kw):
    return formats.get(name).encode(np.asarray(x, dtype=np.float64), **kw)


def quant(name, x, **kw):
    return formats.get(name).quantize(np.asarray(x, dtype=np.float64), **kw)


# NaN code sets, from the layouts: (bits, sign bit, exponent mask, mantissa mask, kind)
LAYOUT = {
    "fp32": (32, 1 << 31, 0xFF << 23, (1 << 23) - 1, "ieee"),
    "fp16": (16, 1 << 15, 0x1F << 10, 0x3FF, "ieee"),
    "bf16": (16, 1 << 15, 0xFF << 7, 0x7F, "ieee"),
    "fp8_e5m2": (8, 0x80, 0x7C, 0x03, "ieee"),
    "fp8_e3m4": (8, 0x80, 0x70, 0x0F, "ieee"),
    "e5m7": (13, 1 << 12, 0x1F << 7, 0x7F, "ieee"),
    "fp8_e4m3": (8, 0x80, 0x78, 0x07, "fn"),
    "fp8_e4m3fnuz": (8, 0x80, 0x78, 0x07, "fnuz"),
    "fp8_e5m2fnuz": (8, 0x80, 0x7C, 0x03, "fnuz"),
    "ue4m3fn": (7, 0, 0x78, 0x07, "fn"),
    "e8m0": (8, 0, 0xFF, 0, "e8m0"),
}


def is_nan_code(name, code) -> bool:
    bits, sign, emask, mmask, kind = LAYOUT[name]
    code = int(code)
    mag = code & ~sign
    if kind == "ieee":
        return (mag & emask) == emask and (mag & mmask) != 0
    if kind == "fn":
        return mag == emask | mmask
    if kind == "fnuz":
        return code == sign
    return code == 0xFF                                   # e8m0


def inf_code(name, neg=False) -> int:
    bits, sign, emask, _, kind = LAYOUT[name]
    assert kind == "ieee"
    return emask | (sign if neg else 0)


# ---------------------------------------------------------------------------------------------
# Signed zeros
# ---------------------------------------------------------------------------------------------

SIGNED_FLOATS = ["fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp8_e3m4", "fp6_e3m2",
                 "fp6_e2m3", "fp4_e2m1", "e5m7", "fp16_ftz"]


@pytest.mark.parametrize("mode", MODES6)
@pytest.mark.parametrize("name", SIGNED_FLOATS)
def test_signed_zero(name, mode):
    fmt = formats.get(name)
    sign = 1 << (fmt.bits - 1)
    codes = fmt.encode(np.array([0.0, -0.0]), mode)
    assert codes.tolist() == [0, sign]
    q = fmt.quantize(np.array([0.0, -0.0]), mode)
    assert bits64(q[0]) == bits64(0.0) and bits64(q[1]) == bits64(-0.0)
    d = fmt.decode(np.array([0, sign], dtype=fmt.code_dtype))
    assert bits64(d[0]) == bits64(0.0) and bits64(d[1]) == bits64(-0.0)
    # a tiny value that rounds to zero keeps its sign (a quarter of the smallest subnormal)
    tiny = fmt.min_subnormal / 4
    q = fmt.quantize(np.array([-tiny, tiny]), mode, seed=1)
    if not fmt.subnormals:          # fp16_ftz: 2**-16 is a subnormal result, flushed in any mode
        assert bits64(q[0]) == bits64(-0.0) and bits64(q[1]) == bits64(0.0)
        return
    if mode in ("nearest_even", "nearest_away", "toward_zero"):
        assert bits64(q[0]) == bits64(-0.0) and bits64(q[1]) == bits64(0.0)
    if mode == "toward_positive":
        assert bits64(q[0]) == bits64(-0.0) and q[1] == fmt.min_subnormal
    if mode == "toward_negative":
        assert q[0] == -fmt.min_subnormal and bits64(q[1]) == bits64(0.0)
    if mode == "stochastic":
        assert bits64(q[0]) in (bits64(-0.0), bits64(-fmt.min_subnormal))
        assert bits64(q[1]) in (bits64(0.0), bits64(fmt.min_subnormal))


@pytest.mark.parametrize("mode", MODES6)
@pytest.mark.parametrize("name", ["fp8_e4m3fnuz", "fp8_e5m2fnuz", "fp8_e4m3b11fnuz", "int8",
                                  "uint8", "fix8_4", "ue4m3fn", "ue2m1finite"])
def test_zero_without_negative_zero(name, mode):
    """fnuz, integers and unsigned formats have one zero: -0.0 gives code 0 and +0.0 back."""
    fmt = formats.get(name)
    assert fmt.encode(np.array([-0.0, 0.0]), mode, seed=1).tolist() == [0, 0]
    q = fmt.quantize(np.array([-0.0]), mode, seed=1)
    assert bits64(q[0]) == bits64(0.0)


@pytest.mark.parametrize("name", ["bf16", "fp8_e4m3", "fp4_e2m1", "fp8_e5m2"])
def test_signed_zero_arithmetic(name):
    """IEEE 754 6.3: an exact zero sum is +0 except in roundTowardNegative (-0); x + x and
    x - (-x) keep the sign of a zero x; products are signed by the xor of the signs."""
    fmt = formats.get(name)
    pz, nz, one, mone = fmt.encode(np.array([0.0, -0.0, 1.0, -1.0]))
    PZ, NZ = 0.0, -0.0

    def val(c):
        return float(fmt.decode(np.asarray(c, dtype=fmt.code_dtype)))

    for mode in MODES5:
        neg_sum = NZ if mode == "toward_negative" else PZ
        cases = [
            ("+0 + -0", fmt.add(pz, nz, mode), neg_sum),
            ("-0 + +0", fmt.add(nz, pz, mode), neg_sum),
            ("-0 + -0", fmt.add(nz, nz, mode), NZ),
            ("+0 + +0", fmt.add(pz, pz, mode), PZ),
            ("1 + -1", fmt.add(one, mone, mode), neg_sum),
            ("-1 + 1", fmt.add(mone, one, mode), neg_sum),
            ("1 - 1", fmt.sub(one, one, mode), neg_sum),
            ("+0 - +0", fmt.sub(pz, pz, mode), neg_sum),
            ("-0 - +0", fmt.sub(nz, pz, mode), NZ),
            ("+0 - -0", fmt.sub(pz, nz, mode), PZ),
            ("-1 * +0", fmt.mul(mone, pz, mode), NZ),
            ("-0 * -1", fmt.mul(nz, mone, mode), PZ),
            ("+0 * 1", fmt.mul(pz, one, mode), PZ),
            ("fma(-1, +0, +0)", fmt.fma(mone, pz, pz, mode), neg_sum),
            ("fma(-1, +0, -0)", fmt.fma(mone, pz, nz, mode), NZ),
            ("fma(1, +0, -0)", fmt.fma(one, pz, nz, mode), neg_sum),
            ("fma(1, 1, -1)", fmt.fma(one, one, mone, mode), neg_sum),
            ("fma(-1, -1, +0)", fmt.fma(mone, mone, pz, mode), 1.0),
        ]
        for what, got, want in cases:
            assert same(val(got), want), f"{name} {mode}: {what} = {val(got)!r}, want {want!r}"


# ---------------------------------------------------------------------------------------------
# NaN (payload-insensitive) and infinities
# ---------------------------------------------------------------------------------------------

NAN64 = np.array([0x7FF8000000000000, 0x7FF8000000000001, 0x7FF0000000000001,
                  0x7FFFFFFFFFFFFFFF, 0x7FF4000000000000, 0xFFF8000000000000,
                  0xFFF0000000000001, 0xFFFFFFFFFFFFFFFF], dtype=np.uint64).view(np.float64)
NAN32 = np.array([0x7FC00000, 0x7FC00001, 0x7F800001, 0x7FFFFFFF, 0xFFC00000, 0xFF800001],
                 dtype=np.uint32).view(np.float32)
NAN16 = np.array([0x7E00, 0x7C01, 0x7FFF, 0xFE00, 0xFC01], dtype=np.uint16).view(np.float16)
NAN_FORMATS = ["fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp8_e4m3fnuz", "fp8_e5m2fnuz",
               "fp8_e3m4", "e5m7", "e8m0", "ue4m3fn"]


@pytest.mark.parametrize("overflow", ["ieee", "saturate"])
@pytest.mark.parametrize("name", NAN_FORMATS)
def test_nan_payloads(name, overflow):
    fmt = formats.get(name)
    assert np.all(np.isnan(NAN64)) and np.all(np.isnan(NAN32)) and np.all(np.isnan(NAN16))
    for mode in MODES6:
        for arr in (NAN64, NAN32, NAN16):
            codes = fmt.encode(arr, mode, overflow=overflow, seed=3)
            assert all(is_nan_code(name, c) for c in codes), (name, mode, arr.dtype, codes)
            pos = codes[~np.signbit(arr)]
            neg = codes[np.signbit(arr)]
            # the payload does not matter: one code per sign of the input
            assert len(set(pos.tolist())) == 1 and len(set(neg.tolist())) == 1, (name, codes)
            q = fmt.quantize(arr, mode, overflow=overflow, seed=3)
            assert np.all(np.isnan(q))
    # every NaN code decodes to NaN
    bits = LAYOUT[name][0]
    all_codes = np.arange(1 << min(bits, 16), dtype=fmt.code_dtype)
    if bits == 32:
        all_codes = np.array([0x7F800001, 0x7FC00000, 0xFFFFFFFF, 0x7FFFFFFF], dtype=np.uint32)
    nan_mask = np.array([is_nan_code(name, c) for c in all_codes])
    d = fmt.decode(all_codes)
    assert np.array_equal(np.isnan(d), nan_mask)


@pytest.mark.parametrize("name", ["fp16", "bf16", "fp8_e5m2", "fp8_e4m3", "fp8_e4m3fnuz"])
def test_nan_from_arithmetic(name):
    fmt = formats.get(name)
    nan = fmt.encode(np.array(np.nan))
    one, zero, big = fmt.encode(np.array([1.0, 0.0, fmt.max]))
    for mode in MODES5:
        assert is_nan_code(name, fmt.add(nan, one, mode))
        assert is_nan_code(name, fmt.mul(zero, nan, mode))
        assert is_nan_code(name, fmt.fma(one, one, nan, mode))
        assert is_nan_code(name, fmt.fma(nan, zero, one, mode))
    if LAYOUT[name][4] == "ieee":
        inf, ninf = inf_code(name), inf_code(name, True)
        assert is_nan_code(name, fmt.add(inf, ninf))
        assert is_nan_code(name, fmt.sub(inf, inf))
        assert is_nan_code(name, fmt.mul(inf, zero))
        assert is_nan_code(name, fmt.fma(zero, inf, one))
        assert int(fmt.fma(big, big, ninf)) == ninf          # huge finite product + -Inf
        assert int(fmt.fma(one, ninf, big)) == ninf
        assert int(fmt.add(inf, big)) == inf


# name: (codes of +Inf and -Inf under "ieee"), (... under "saturate"); None: a NaN code
INF_TABLE = {
    "fp8_e5m2": ((0x7C, 0xFC), (0x7B, 0xFB)),
    "bf16": ((0x7F80, 0xFF80), (0x7F7F, 0xFF7F)),
    "fp16": ((0x7C00, 0xFC00), (0x7BFF, 0xFBFF)),
    "e5m7": ((0x0F80, 0x1F80), (0x0F7F, 0x1F7F)),
    "fp8_e3m4": ((0x70, 0xF0), (0x6F, 0xEF)),
    "fp8_e4m3": ((None, None), (0x7E, 0xFE)),            # no Inf: NaN, or +-448
    "fp8_e4m3fnuz": ((None, None), (0x7F, 0xFF)),        # NaN is 0x80; max 240 = 0x7F
    "fp8_e5m2fnuz": ((None, None), (0x7F, 0xFF)),
    "fp4_e2m1": ((0x7, 0xF), (0x7, 0xF)),                # no Inf, no NaN: always +-6
    "fp6_e3m2": ((0x1F, 0x3F), (0x1F, 0x3F)),
    "e8m0": ((None, None), (0xFE, None)),                # +Inf: NaN or 2**127; -Inf: NaN
    "ue4m3fn": ((None, None), (0x7E, None)),             # unsigned: -Inf is NaN
}


@pytest.mark.parametrize("overflow", ["ieee", "saturate"])
@pytest.mark.parametrize("name", list(INF_TABLE))
def test_infinity_inputs(name, overflow):
    """An infinite input is exact, so every mode gives the same code (IEEE 754: Inf converts
    to Inf whatever the rounding direction); formats without Inf give NaN under "ieee"
    (or +-max where there is no NaN either), +-max under "saturate"."""
    want_pos, want_neg = INF_TABLE[name][0 if overflow == "ieee" else 1]
    fmt = formats.get(name)
    for mode in MODES6:
        for dt in (np.float64, np.float32, np.float16):
            codes = fmt.encode(np.array([INF, -INF], dtype=dt), mode, overflow=overflow, seed=1)
            for c, w in zip(codes.tolist(), (want_pos, want_neg)):
                ok = is_nan_code(name, c) if w is None else c == w
                assert ok, (mode, np.dtype(dt).name, [hex(c) for c in codes], w)


@pytest.mark.parametrize("name,qmax_code,qmin_code",
                         [("int8", 0x7F, 0x80), ("uint8", 0xFF, 0x00), ("int4", 0x7, 0x8),
                          ("fix8_4", 0x7F, 0x80), ("int32", 0x7FFFFFFF, 0x80000000)])
def test_infinity_into_integers_saturates(name, qmax_code, qmin_code):
    for mode in MODES6:
        codes = enc(name, [INF, -INF], rounding=mode, seed=1)
        assert codes.tolist() == [qmax_code, qmin_code]


@pytest.mark.parametrize("name", ["fp8_e5m2", "bf16", "fp16", "e5m7"])
def test_decode_infinities(name):
    fmt = formats.get(name)
    d = fmt.decode(np.array([inf_code(name), inf_code(name, True)], dtype=fmt.code_dtype))
    assert d.tolist() == [INF, -INF]


# ---------------------------------------------------------------------------------------------
# Ties, one float64 ulp either side, carries into the exponent, subnormals
# ---------------------------------------------------------------------------------------------

# (format, lo, hi, which neighbour has the even significand): consecutive positive values.
NEIGHBOURS = [
    ("fp8_e4m3", 1.0, 1.125, "lo"),
    ("fp8_e4m3", 1.125, 1.25, "hi"),
    ("fp8_e4m3", 1.875, 2.0, "hi"),                # tie 1.9375: carry into the exponent
    ("fp8_e4m3", 15.0, 16.0, "hi"),
    ("fp8_e4m3", 416.0, 448.0, "hi"),              # 1.101 vs 1.110 * 2**8
    ("fp8_e4m3", 2.0**-9, 2.0**-8, "hi"),          # subnormals 0.001 and 0.010
    ("fp8_e4m3", 0.0, 2.0**-9, "lo"),              # half the smallest subnormal
    ("fp8_e4m3", 7 * 2.0**-9, 2.0**-6, "hi"),      # largest subnormal -> min normal
    ("fp8_e5m2", 1.0, 1.25, "lo"),
    ("fp8_e5m2", 1.75, 2.0, "hi"),
    ("fp8_e5m2", 2.0**-16, 2.0**-15, "hi"),
    ("fp8_e5m2", 0.0, 2.0**-16, "lo"),
    ("fp8_e5m2", 3 * 2.0**-16, 2.0**-14, "hi"),
    ("fp8_e5m2", 49152.0, 57344.0, "lo"),
    ("fp8_e4m3fnuz", 1.0, 1.125, "lo"),
    ("fp8_e4m3fnuz", 0.0, 2.0**-10, "lo"),
    ("fp8_e4m3fnuz", 7 * 2.0**-10, 2.0**-7, "hi"),
    ("fp8_e3m4", 1.0, 1.0625, "lo"),
    ("fp8_e3m4", 15 * 2.0**-6, 2.0**-2, "hi"),     # largest subnormal 0.1111 * 2**-2
    ("bf16", 1.0, 1 + 2.0**-7, "lo"),
    ("bf16", 2 - 2.0**-7, 2.0, "hi"),
    ("bf16", 2.0**-133, 2.0**-132, "hi"),
    ("bf16", 0.0, 2.0**-133, "lo"),
    ("bf16", 2.0**-126 - 2.0**-133, 2.0**-126, "hi"),
    ("bf16", (2 - 2.0**-6) * 2.0**127, (2 - 2.0**-7) * 2.0**127, "lo"),
    ("fp16", 1.0, 1 + 2.0**-10, "lo"),
    ("fp16", 2048.0, 2050.0, "lo"),
    ("fp16", 2.0**-24, 2.0**-23, "hi"),
    ("fp16", 0.0, 2.0**-24, "lo"),
    ("fp16", 65472.0, 65504.0, "lo"),
    ("fp32", 1.0, 1 + 2.0**-23, "lo"),
    ("fp32", 0.0, 2.0**-149, "lo"),
    ("fp32", 2.0**-126 - 2.0**-149, 2.0**-126, "hi"),
    ("fp32", 2.0**24, 2.0**24 + 2, "lo"),
    ("e5m7", 1.0, 1 + 2.0**-7, "lo"),
    ("e5m7", 0.0, 2.0**-21, "lo"),
    ("e5m7", 65024.0, 65280.0, "lo"),
    ("fp4_e2m1", 0.0, 0.5, "lo"),
    ("fp4_e2m1", 0.5, 1.0, "hi"),
    ("fp4_e2m1", 1.0, 1.5, "lo"),
    ("fp4_e2m1", 1.5, 2.0, "hi"),
    ("fp4_e2m1", 2.0, 3.0, "lo"),
    ("fp4_e2m1", 3.0, 4.0, "hi"),
    ("fp4_e2m1", 4.0, 6.0, "lo"),
    ("fp6_e2m3", 0.0, 0.125, "lo"),
    ("fp6_e2m3", 0.875, 1.0, "hi"),
    ("fp6_e2m3", 7.0, 7.5, "lo"),
    ("fp6_e3m2", 24.0, 28.0, "lo"),
    ("fp6_e3m2", 0.1875, 0.25, "hi"),              # largest subnormal 0.11 * 2**-2
]


def _expected_rounding(mode, x, lo, hi, even, zero_sign_kept):
    """Expected result for lo < |x| < hi (or |x| in {lo, hi}) from the mode definitions."""
    neg = math.copysign(1.0, x) < 0
    a = abs(x)
    if a == lo or a == hi:
        mag = a
    else:
        mid = (lo + hi) / 2
        if mode == "nearest_even":
            mag = lo if a < mid else hi if a > mid else (lo if even == "lo" else hi)
        elif mode == "nearest_away":
            mag = lo if a < mid else hi
        elif mode == "toward_zero":
            mag = lo
        elif mode == "toward_positive":
            mag = lo if neg else hi
        else:
            mag = hi if neg else lo
    if neg and (mag != 0 or zero_sign_kept):
        return -mag
    return mag


@pytest.mark.parametrize("mode", MODES5)
@pytest.mark.parametrize("name,lo,hi,even", NEIGHBOURS,
                         ids=[f"{n}-{lo!r}-{hi!r}" for n, lo, hi, _ in NEIGHBOURS])
def test_ties_and_neighbours(name, lo, hi, even, mode):
    fmt = formats.get(name)
    tie = (lo + hi) / 2
    assert lo < tie < hi
    xs = [lo, hi, tie, up(tie), down(tie), up(lo), down(hi), (lo + tie) / 2, (tie + hi) / 2]
    xs = np.array(xs + [-v for v in xs])
    zero_sign_kept = fmt.kind != "fnuz"
    want = [_expected_rounding(mode, x, lo, hi, even, zero_sign_kept) for x in xs]
    check_values(f"{name} {mode} quantize", xs, fmt.quantize(xs, mode), want)
    # float32 input where the values are float32 (all of these are, except the ulp steps of
    # fp32 ties which then are float32 neighbours of their own)
    x32 = xs.astype(np.float32)
    exact32 = x32.astype(np.float64) == xs
    got = fmt.quantize(x32[exact32], mode)
    check_values(f"{name} {mode} float32 input", xs[exact32], got,
                 np.array(want)[exact32].astype(got.dtype))


def test_carry_into_exponent_codes():
    """1.9375 (tie between 1.875 = 0x3F and 2.0 = 0x40 in E4M3) carries into the exponent."""
    assert enc("fp8_e4m3", 1.9375).item() == 0x40
    assert enc("fp8_e4m3", -1.9375).item() == 0xC0
    assert enc("fp8_e4m3", 1.9375, rounding="toward_zero").item() == 0x3F
    # the largest subnormal 7 * 2**-9 (0x07) + half a step rounds to min normal 0x08
    assert enc("fp8_e4m3", 7.5 * 2.0**-9).item() == 0x08
    assert enc("fp8_e4m3", 7.5 * 2.0**-9, rounding="nearest_away").item() == 0x08
    assert enc("fp8_e4m3", 7.5 * 2.0**-9, rounding="toward_zero").item() == 0x07
    # bf16: 2 - 2**-8 -> 2.0 (0x4000); the top binade rolls over into Inf
    assert enc("bf16", 2 - 2.0**-8).item() == 0x4000
    assert enc("bf16", (2 - 2.0**-8) * 2.0**127).item() == 0x7F80
    # fp4: 1.75 -> 2.0 (code 0b0100), 5 -> 4 (tie to even), 7 -> 6 saturates
    assert enc("fp4_e2m1", [1.75, 5.0, 7.0]).tolist() == [0x4, 0x6, 0x7]


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2", "bf16", "fp16", "fp32", "fp4_e2m1",
                                  "fp8_e4m3fnuz", "e5m7", "fp6_e2m3"])
def test_below_half_smallest_subnormal(name):
    fmt = formats.get(name)
    s = fmt.min_subnormal
    rng = np.random.default_rng(len(name))
    tiny = np.concatenate([
        np.exp2(rng.uniform(-1074, math.log2(s / 2), 3000)),
        [5e-324, 2.2250738585072014e-308, down(s / 2), s / 4, s / 2 * (1 - 2.0**-30)]])
    tiny = tiny[(tiny > 0) & (tiny < s / 2)]
    neg_zero = -0.0 if fmt.kind != "fnuz" else 0.0
    for sign in (1.0, -1.0):
        x = sign * tiny
        zero = 0.0 if sign > 0 else neg_zero
        for mode in ("nearest_even", "nearest_away", "toward_zero"):
            check_values(f"{name} {mode}", x, fmt.quantize(x, mode), np.full(x.shape, zero))
        away_mode = "toward_positive" if sign > 0 else "toward_negative"
        other = "toward_negative" if sign > 0 else "toward_positive"
        check_values(f"{name} {away_mode}", x, fmt.quantize(x, away_mode),
                     np.full(x.shape, sign * s))
        check_values(f"{name} {other}", x, fmt.quantize(x, other), np.full(x.shape, zero))
        # exactly half: tie between 0 (even) and s
        check_values(f"{name} half", [sign * s / 2],
                     fmt.quantize(np.array([sign * s / 2])), [zero])
        check_values(f"{name} half away", [sign * s / 2],
                     fmt.quantize(np.array([sign * s / 2]), "nearest_away"), [sign * s])
        check_values(f"{name} above half", [sign * up(s / 2)],
                     fmt.quantize(np.array([sign * up(s / 2)])), [sign * s])


# ---------------------------------------------------------------------------------------------
# The overflow threshold in every mode
# ---------------------------------------------------------------------------------------------

# name: (max, spacing of the top binade, max's significand is odd, what overflow gives under
# "ieee": "inf", "nan" or "max" (no Inf and no NaN))
OVERFLOW = {
    "fp8_e5m2": (57344.0, 8192.0, True, "inf"),
    "fp8_e4m3": (448.0, 32.0, False, "nan"),       # 1.110 * 2**8: 1.111 * 2**8 is the NaN code
    "fp8_e4m3fnuz": (240.0, 16.0, True, "nan"),
    "fp8_e5m2fnuz": (57344.0, 8192.0, True, "nan"),
    "fp8_e3m4": (15.5, 0.5, True, "inf"),
    "bf16": ((2 - 2.0**-7) * 2.0**127, 2.0**120, True, "inf"),
    "fp16": (65504.0, 32.0, True, "inf"),
    "fp32": ((2 - 2.0**-23) * 2.0**127, 2.0**104, True, "inf"),
    "e5m7": (65280.0, 256.0, True, "inf"),
    "fp4_e2m1": (6.0, 2.0, True, "max"),
    "fp6_e3m2": (28.0, 4.0, True, "max"),
    "fp6_e2m3": (7.5, 0.5, True, "max"),
}


def _expected_overflow(mode, x, mx, ulp, odd, kind, policy):
    """Expected result for |x| >= max, from the mode definitions and the contract's policies."""
    neg = x < 0
    a = abs(x)
    tie = mx + ulp / 2
    if mode == "nearest_even":
        beyond = a > tie or (a == tie and odd)
    elif mode == "nearest_away":
        beyond = a >= tie
    elif mode == "toward_zero":
        beyond = False
    elif mode == "toward_positive":
        beyond = a > mx and not neg
    else:
        beyond = a > mx and neg
    if beyond and policy == "ieee" and kind != "max":
        return math.nan if kind == "nan" else (-INF if neg else INF)
    return -mx if neg else mx


@pytest.mark.parametrize("policy", ["ieee", "saturate"])
@pytest.mark.parametrize("mode", MODES5)
@pytest.mark.parametrize("name", list(OVERFLOW))
def test_overflow_threshold(name, mode, policy):
    mx, ulp, odd, kind = OVERFLOW[name]
    fmt = formats.get(name)
    assert fmt.max == mx
    tie = mx + ulp / 2
    xs = [mx, up(mx), down(tie), tie, up(tie), mx + ulp, 2 * mx, 1e300,
          np.finfo(np.float64).max]
    xs = np.array(xs + [-v for v in xs])
    want = [_expected_overflow(mode, x, mx, ulp, odd, kind, policy) for x in xs]
    check_values(f"{name} {mode} {policy}", xs, fmt.quantize(xs, mode, overflow=policy), want)


@pytest.mark.parametrize("name", list(OVERFLOW))
def test_overflow_stochastic(name):
    """Far beyond max+ulp both neighbours are gone: stochastic overflows like the nearest
    modes (Inf/NaN under "ieee") and gives +-max under "saturate"."""
    mx, ulp, _, kind = OVERFLOW[name]
    fmt = formats.get(name)
    xs = np.array([mx + ulp, 2 * mx, 1e300, -(mx + ulp), -2 * mx, -1e300])
    want = [_expected_overflow("nearest_even", x, mx, ulp, True, kind, "ieee") for x in xs]
    check_values(f"{name} stochastic ieee", xs, fmt.quantize(xs, "stochastic", overflow="ieee",
                                                               seed=2), want)
    check_values(f"{name} stochastic saturate", xs,
                 fmt.quantize(xs, "stochastic", overflow="saturate", seed=2),
                 [math.copysign(mx, x) for x in xs])


def test_e4m3_464_465():
    f = formats.get("fp8_e4m3")
    assert f.quantize(np.array([464.0, -464.0])).tolist() == [448.0, -448.0]
    assert np.isnan(f.quantize(np.array([465.0, -465.0, up(464.0)]))).all()
    assert f.encode(np.array([465.0])).item() in (0x7F, 0xFF)
    assert f.quantize(np.array([465.0, -465.0, 1e9]), overflow="saturate").tolist() == \
        [448.0, -448.0, 448.0]
    # default policy of fp8_e4m3 is "ieee" (the common cast convention)
    assert f.default_overflow == "ieee"


def test_e5m2_61440():
    f = formats.get("fp8_e5m2")
    assert f.quantize(np.array([61440.0, down(61440.0)])).tolist() == [INF, 57344.0]
    assert f.quantize(np.array([1e30]), "toward_zero").tolist() == [57344.0]
    assert f.quantize(np.array([up(57344.0), -1e30]), "toward_positive").tolist() == \
        [INF, -57344.0]
    assert f.quantize(np.array([-up(57344.0), 1e30]), "toward_negative").tolist() == \
        [-INF, 57344.0]


def test_overflow_in_arithmetic():
    """Arithmetic results beyond max follow the same rules as encode."""
    f = formats.get("fp8_e5m2")
    big, = f.encode(np.array([57344.0]))
    nbig, = f.encode(np.array([-57344.0]))
    cases = {"nearest_even": (0x7C, 0xFC), "toward_zero": (0x7B, 0xFB),
             "toward_positive": (0x7C, 0xFB), "toward_negative": (0x7B, 0xFC)}
    for mode, (p, n) in cases.items():
        assert f.add(big, big, mode).item() == p, mode
        assert f.add(nbig, nbig, mode).item() == n, mode
        assert f.mul(big, nbig, mode).item() == n, mode
        assert f.add(big, big, mode, overflow="saturate").item() == 0x7B
    e4 = formats.get("fp8_e4m3")
    a, b = e4.encode(np.array([448.0, 16.0]))
    assert e4.add(a, b).item() == 0x7E                    # 464: tie, stays at 448
    c, = e4.encode(np.array([32.0]))
    assert e4.add(a, c).item() in (0x7F, 0xFF)            # 480 -> NaN
    assert e4.add(a, c, overflow="saturate").item() == 0x7E
    fp4 = formats.get("fp4_e2m1")
    six, = fp4.encode(np.array([6.0]))
    assert fp4.mul(six, six).item() == 0x7 and fp4.mul(six, six, overflow="ieee").item() == 0x7


# ---------------------------------------------------------------------------------------------
# Flush to zero
# ---------------------------------------------------------------------------------------------

def test_fp16_ftz():
    f = formats.get("fp16_ftz")
    assert f.bits == 16 and f.min_subnormal == f.min_normal == 2.0**-14
    mn = 2.0**-14
    # subnormal results become zero of the same sign (in every mode)
    for mode in MODES6:
        x = np.array([2.0**-20, -(2.0**-20), 2.0**-24, -(2.0**-15), mn - 2.0**-24, 2.0**-30,
                      -(2.0**-30)])
        got = f.quantize(x, mode, seed=1)
        # (2**-30 rounds to 0 or to the smallest subnormal 2**-24: zero either way)
        check_values(f"ftz {mode}", x, got, [0.0, -0.0, 0.0, -0.0, 0.0, 0.0, -0.0])
    # a value that rounds up to the smallest normal stays
    check_values("ftz rounds up", [mn - 2.0**-26, -(mn - 2.0**-26)],
                 f.quantize(np.array([mn - 2.0**-26, -(mn - 2.0**-26)])), [mn, -mn])
    check_values("ftz normal", [mn, 1.0], f.quantize(np.array([mn, 1.0])), [mn, 1.0])
    # subnormal codes decode to zero of the code's sign
    sub = np.arange(1, 0x400, dtype=np.uint16)
    d = f.decode(np.concatenate([sub, sub | 0x8000]))
    assert np.all(d == 0)
    assert not np.signbit(d[:sub.size]).any() and np.signbit(d[sub.size:]).all()
    assert f.decode(np.array([0x0400], dtype=np.uint16)).item() == mn
    # arithmetic: 2**-7 * 2**-8 = 2**-15 is subnormal -> 0; -2**-15 -> -0
    a, b, c = f.encode(np.array([2.0**-7, 2.0**-8, -(2.0**-8)]))
    check_values("ftz mul", [0, 1], f.decode(np.array([f.mul(a, b), f.mul(a, c)])),
                 [0.0, -0.0])
    # 1.5 * 2**-14 - 2**-14 = 2**-15 is subnormal -> 0 (and -0 the other way round)
    m, h = f.encode(np.array([mn, 1.5 * mn]))
    check_values("ftz sub", [0, 1], f.decode(np.array([f.sub(h, m), f.sub(m, h)])), [0.0, -0.0])
    assert f.n_finite == 2 * (31 * 1024 - 1023) - 1


# ---------------------------------------------------------------------------------------------
# Integer wrap and saturation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES5)
def test_integer_wrap_and_saturate(mode):
    i8, u8 = formats.get("int8"), formats.get("uint8")
    assert i8.decode(i8.encode(np.array([200.0]), mode, overflow="wrap")).item() == -56
    assert i8.encode(np.array([200.0]), mode, overflow="wrap").item() == 0xC8
    assert i8.decode(i8.encode(np.array([200.0]), mode)).item() == 127
    assert i8.decode(i8.encode(np.array([-200.0]), mode, overflow="wrap")).item() == 56
    assert i8.decode(i8.encode(np.array([-200.0]), mode, overflow="saturate")).item() == -128
    assert u8.encode(np.array([-1.0]), mode, overflow="wrap").item() == 255
    assert u8.encode(np.array([-1.0]), mode, overflow="saturate").item() == 0
    assert u8.encode(np.array([256.0]), mode, overflow="wrap").item() == 0
    assert u8.encode(np.array([256.0]), mode).item() == 255
    assert i8.encode(np.array([2.0**40 + 5]), mode, overflow="wrap").item() == 5
    assert i8.encode(np.array([1e300]), mode, overflow="wrap").item() == 0     # multiple of 2**8
    assert i8.encode(np.array([1e300, -1e300]), mode).tolist() == [0x7F, 0x80]
    # integer dtypes take the same path exactly
    assert i8.encode(np.array([200], dtype=np.int64), overflow="wrap").item() == 0xC8
    assert u8.encode(np.array([-1], dtype=np.int8), overflow="wrap").item() == 255
    assert u8.encode(np.array([-1], dtype=np.int8)).item() == 0


# ---------------------------------------------------------------------------------------------
# fnuz formats never produce the negative-zero code
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["fp8_e4m3fnuz", "fp8_e5m2fnuz", "fp8_e4m3b11fnuz",
                                  "e3m2fnuz"])
def test_fnuz_never_negative_zero(name):
    fmt = formats.get(name)
    nz = 1 << (fmt.bits - 1)                      # the negative-zero position (NaN in fnuz)
    s = fmt.min_subnormal
    rng = np.random.default_rng(7)
    x = -np.concatenate([np.exp2(rng.uniform(-1074, math.log2(s) + 1, 20000)),
                         [0.0, 5e-324, s / 2, down(s / 2), up(s / 2), s / 4, down(s)]])
    x = np.concatenate([x, -x, [-0.0]])
    for policy in ("ieee", "saturate"):
        for mode in MODES6:
            codes = fmt.encode(x, mode, overflow=policy, seed=5)
            assert not np.any(codes == nz), (name, mode, policy, x[codes == nz][:5])
            codes = fmt.encode(x.astype(np.float32), mode, overflow=policy, seed=5)
            assert not np.any(codes == nz), (name, mode, policy, "float32")
    # arithmetic: exact cancellation, tiny products and underflowing sums, in every mode
    # (operands small enough that no product overflows: NaN results may use the 0x80 code)
    vals = fmt.values()
    vals = vals[np.abs(vals) <= math.sqrt(fmt.max) / 2]
    a = fmt.encode(vals)
    b = fmt.encode(-vals)
    tiny = fmt.encode(np.array([-s, s, 0.0]))
    for mode in MODES6:
        for got in (fmt.add(a, b, mode, seed=1), fmt.sub(a, a, mode, seed=1),
                    fmt.sub(b, b, mode, seed=1), fmt.mul(b, tiny[2], mode, seed=1),
                    fmt.mul(tiny[0], tiny[1], mode, seed=1),
                    fmt.fma(a, tiny[2], tiny[2], mode, seed=1),
                    fmt.fma(tiny[0], tiny[1], tiny[2], mode, seed=1),
                    fmt.fma(a, a, fmt.mul(b, a), mode, seed=1)):
            assert not np.any(got == nz), (name, mode)
    # exact cancellation in toward_negative gives +0 (code 0), not NaN
    assert np.all(fmt.add(a, b, "toward_negative") == 0)
    # the -0 code itself decodes to NaN and re-encodes to NaN
    assert np.isnan(fmt.decode(np.array([nz], dtype=np.uint8))).all()
    # converting a -0 from a format that has one
    e4 = formats.get("fp8_e4m3")
    assert e4.convert(np.array([0x80], dtype=np.uint8), fmt).item() == 0


# ---------------------------------------------------------------------------------------------
# e8m0 and unsigned floats
# ---------------------------------------------------------------------------------------------

def test_e8m0():
    f = formats.get("e8m0")
    assert f.bits == 8 and not f.signed and f.max == 2.0**127 and f.min_normal == 2.0**-127
    codes = np.arange(255, dtype=np.uint8)
    assert f.decode(codes).tolist() == [2.0**(c - 127) for c in range(255)]
    assert np.isnan(f.decode(np.array([0xFF], dtype=np.uint8))).all()
    for mode in MODES6:
        for policy in ("ieee", "saturate"):
            got = f.encode(np.array([0.0, -0.0, -1.0, -(2.0**-130), -INF, np.nan]), mode,
                           overflow=policy, seed=1)
            assert got.tolist() == [0xFF] * 6, (mode, policy)
        assert f.encode(np.array([2.0**-130, 2.0**-127, 5e-324]), mode, seed=1).tolist() == \
            [0, 0, 0]
        assert f.encode(np.array([1.0, 2.0**127, 0.5]), mode, seed=1).tolist() == [127, 254, 126]
    # overflow: NaN in the nearest modes ("ieee" policy: no Inf, so NaN), max under saturate
    assert f.encode(np.array([2.0**128, 2.0**200, INF])).tolist() == [0xFF, 0xFF, 0xFF]
    assert f.encode(np.array([2.0**128, 2.0**200]), overflow="saturate").tolist() == [254, 254]
    assert f.encode(np.array([2.0**200]), "toward_zero").item() == 254
    assert f.encode(np.array([up(2.0**127)]), "toward_positive").item() == 0xFF
    # 1.5 * 2**k lies half way between 2**k and 2**(k+1); away from zero goes up
    assert f.encode(np.array([1.5, 3.0, 1.5 * 2.0**-100]), "nearest_away").tolist() == \
        [128, 129, 28]
    assert f.encode(np.array([1.4, 1.6, 1.9]), "nearest_away").tolist() == [127, 128, 128]
    assert f.encode(np.array([1.9, 1.01]), "toward_zero").tolist() == [127, 127]
    assert f.encode(np.array([1.01, 2.0]), "toward_positive").tolist() == [128, 128]


@pytest.mark.parametrize("mode", MODES5)
def test_e8m0_between_every_pair_of_codes(mode):
    """Every gap (2**e, 2**(e+1)) of e8m0: its midpoint 1.5 * 2**e, the doubles next to it and
    inside the gap, against the rules README states: the directed modes go to the lower or upper
    code, nearest goes to the nearer, and a tie goes to the even code (``nearest_even``, as a
    rounder working on the code's bits does) or the upper one (``nearest_away``, ml_dtypes)."""
    lo = np.arange(254)                                   # codes 0..253: 2**-127 .. 2**126
    e = (lo - 127).astype(float)
    mid = 1.5 * np.exp2(e)
    x = np.stack([np.nextafter(np.exp2(e), INF), np.nextafter(mid, 0), mid,
                  np.nextafter(mid, INF), np.nextafter(np.exp2(e + 1), 0)])
    upper = {"toward_zero": [0, 0, 0, 0, 0], "toward_negative": [0, 0, 0, 0, 0],
             "toward_positive": [1, 1, 1, 1, 1], "nearest_away": [0, 0, 1, 1, 1],
             "nearest_even": [0, 0, None, 1, 1]}[mode]
    want = np.stack([lo + (lo % 2 if u is None else u) for u in upper])
    assert formats.get("e8m0").encode(x, mode).astype(np.int64).tolist() == want.tolist()


@pytest.mark.parametrize("policy", ["ieee", "saturate"])
@pytest.mark.parametrize("mode", MODES5)
def test_unsigned_floats(mode, policy):
    f = formats.get("ue4m3fn")
    assert f.bits == 7 and not f.signed and f.max == 448.0 and f.has_nan
    # negative values that do not round to zero -> NaN (0x7F)
    neg = np.array([-1.0, -448.0, -1e10, -(2.0**-9), -INF])
    assert f.encode(neg, mode, overflow=policy).tolist() == [0x7F] * 5
    # -0 and negatives that round to zero -> code 0
    tiny = np.array([-0.0, -(2.0**-12)])
    want = [0, 0x7F] if mode == "toward_negative" else [0, 0]
    assert f.encode(tiny, mode, overflow=policy).tolist() == want
    assert f.encode(np.array([1.0, 448.0, 2.0**-9]), mode, overflow=policy).tolist() == \
        [0x38, 0x7E, 0x01]
    d = f.decode(np.arange(128, dtype=np.uint8))
    assert np.isnan(d[0x7F]) and np.all(d[:0x7F] >= 0) and d[0x7E] == 448.0
    # unsigned without NaN: negatives clamp to 0
    g = formats.get("ue2m1finite")
    assert g.bits == 3 and not g.has_nan
    assert g.encode(np.array([-1.0, -6.0, -INF, 6.0, 1.0]), mode, overflow=policy).tolist() == \
        [0, 0, 0, 7, 2]
    assert g.decode(np.arange(8, dtype=np.uint8)).tolist() == [0, 0.5, 1, 1.5, 2, 3, 4, 6]


def test_unsigned_ieee_float():
    f = formats.get("ue5m2")
    assert f.bits == 7 and f.has_inf
    codes = f.encode(np.array([INF, 57344.0, -1.0, -INF, 1e6])).tolist()
    assert codes[0] == 0x7C and codes[1] == 0x7B and codes[4] == 0x7C     # +Inf, max, overflow
    # negatives are NaN: exponent all ones, mantissa not zero (no sign bit in 7 bits)
    assert all((c >> 2) == 0x1F and (c & 0x3) != 0 for c in codes[2:4]), codes


# ---------------------------------------------------------------------------------------------
# Shapes and dtypes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bf16", "fp8_e4m3", "int8", "fix8_4", "e5m7", "fp32"])
def test_shapes(name):
    fmt = formats.get(name)
    cd = fmt.code_dtype
    for x in (np.float64(3.0), np.array(3.0), 3.0, np.float32(-2.0), np.int16(-1)):
        c = fmt.encode(x)
        assert isinstance(c, np.ndarray) and c.shape == () and c.dtype == cd
        assert fmt.decode(c).shape == () and fmt.quantize(x).shape == ()
        assert fmt.quantize(x).item() == float(x)
        assert fmt.add(c, c).shape == () and fmt.fma(c, c, c).shape == ()
    for shape in ((0,), (0, 3), (2, 0, 4)):
        for dt in (np.float64, np.float32, np.int16):
            x = np.zeros(shape, dtype=dt)
            c = fmt.encode(x)
            assert c.shape == shape and c.dtype == cd
            q = fmt.quantize(x, "stochastic")
            assert q.shape == shape
            assert fmt.decode(c).shape == shape and fmt.decode(c).dtype == np.float64
            assert fmt.add(c, c).shape == shape and fmt.mul(c, c, "stochastic").shape == shape
    assert fmt.encode([]).shape == (0,)
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.25]])
    assert fmt.encode(x).shape == (2, 3)
    c = fmt.encode(x)
    assert fmt.add(c[:, :1], c[0]).shape == (2, 3)          # broadcasting
    np.testing.assert_array_equal(fmt.encode(x.T), fmt.encode(np.ascontiguousarray(x.T)))
    np.testing.assert_array_equal(fmt.encode(x[:, ::2]), fmt.encode(x)[:, ::2])
    np.testing.assert_array_equal(fmt.quantize(x[::-1]), fmt.quantize(x)[::-1])


# small values every integer dtype holds, and what E4M3 / int4 (saturating) / fix8_4 make of them
SMALL = [0, 1, 2, 3, 5, 7, 9, 17, 100, 127]
# E4M3 near 17: 16 (1.000) and 18 (1.001): tie -> 16; near 100: 96 (1.100) and 104: tie -> 96;
# 127 -> 128 (step 8 above 64: 120, 128)
E4M3_SMALL = {0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0, 5: 5.0, 7: 7.0, 9: 9.0, 17: 16.0, 100: 96.0,
              127: 128.0}
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
FLOAT_DTYPES = [np.float16, np.float32, np.float64]


@pytest.mark.parametrize("dtype", INT_DTYPES + FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_input_dtype(dtype):
    signed = np.dtype(dtype).kind != "u"
    vals = SMALL + ([-v for v in SMALL[1:]] if signed else [])
    x = np.array(vals, dtype=dtype)
    want_e4 = [math.copysign(E4M3_SMALL[abs(v)], v) for v in vals]
    for mode in ("nearest_even", "toward_zero"):
        got = formats.get("fp8_e4m3").quantize(x, mode)
        w = want_e4 if mode == "nearest_even" else \
            [math.copysign({17: 16.0, 100: 96.0, 127: 120.0}.get(abs(v), abs(v)), v) for v in vals]
        check_values(f"e4m3 {np.dtype(dtype).name} {mode}", x, got, w)
    got = formats.get("int4").decode(formats.get("int4").encode(x))
    check_values(f"int4 {np.dtype(dtype).name}", x, got, [min(max(v, -8), 7) for v in vals])
    got = formats.get("int4").decode(formats.get("int4").encode(x, overflow="wrap"))
    check_values(f"int4 wrap {np.dtype(dtype).name}", x, got,
                 [((v + 8) % 16) - 8 for v in vals])
    got = formats.get("fix8_4").quantize(x)
    check_values(f"fix8_4 {np.dtype(dtype).name}", x, got,
                 [min(max(v, -8.0), 7.9375) for v in vals])
    got = formats.get("bf16").quantize(x)
    check_values(f"bf16 {np.dtype(dtype).name}", x, got, [float(v) for v in vals])
    # the extremes of each integer dtype
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        ext = np.array([info.min, info.max], dtype=dtype)
        got = formats.get("int8").decode(formats.get("int8").encode(ext))
        check_values(f"int8 saturate {np.dtype(dtype).name}", ext, got,
                     [max(int(info.min), -128), min(int(info.max), 127)])
        got = formats.get("int8").decode(formats.get("int8").encode(ext, overflow="wrap"))
        check_values(f"int8 wrap {np.dtype(dtype).name}", ext, got,
                     [((int(v) + 128) % 256) - 128 for v in (info.min, info.max)])
    else:
        frac = np.array([0.5, 1.5, 2.5, -2.5, 0.0625, 0.1], dtype=dtype)
        xf = [Fraction(float(v)) for v in frac]                  # the dtype's exact values
        got = formats.get("fix8_4").quantize(frac)
        want = [float(round(v * 16) / 16) for v in xf]           # round() is ties-to-even
        check_values(f"fix8_4 fractions {np.dtype(dtype).name}", frac, got, want)


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e5m2", "float8_e4m3fn",
                                   "float4_e2m1fn", "int4"])
def test_ml_dtypes_arrays_read_as_float64(dtype):
    """ml_dtypes arrays (a core dependency; traces keep bfloat16) are read exactly: every
    entry point gives what it gives for the same values in float64.  float8_e5m2 reports kind
    'f' and reached the Numba kernels (a TypingError); the others were refused as not real."""
    t = getattr(ml_dtypes, dtype)
    x = np.array([[1.5, -3.0, 0.25, 6.0], [-0.5, 2.0, 4.0, 1.0]]).astype(t)
    wide = x.astype(np.float64)
    for name in ("fp16", "fp8_e4m3", "int8", "posit8_0", "nf4", "mxfp4", "nvfp4"):
        fmt = formats.get(name)
        np.testing.assert_array_equal(fmt.quantize(x), fmt.quantize(wide), err_msg=name)
    for name in ("fp16", "fp8_e4m3"):
        np.testing.assert_array_equal(formats.get(name).encode(x),
                                      formats.get(name).encode(wide))
    np.testing.assert_array_equal(mm.matmul(x, x.T, "fp16->fp32").values,
                                  mm.matmul(wide, wide.T, "fp16->fp32").values)
    np.testing.assert_array_equal(
        mm.conv2d(x[None, None], x[None, None, :, :2], "bf16->fp32").values,
        mm.conv2d(wide[None, None], wide[None, None, :, :2], "bf16->fp32").values)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES + [np.int16, np.uint32],
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["fp8_e4m3", "int8", "fix8_4", "posit8_0", "nf4"])
def test_byte_swapped_input_reads_as_native(name, dtype):
    """A non-native byte order (here big-endian; float16 too, which the kernels read as float32)
    gives the native array's results."""
    native = (np.random.default_rng(8).standard_normal(257) * 8).astype(dtype)
    swapped = native.astype(native.dtype.newbyteorder(">" if sys.byteorder == "little" else "<"))
    fmt = formats.get(name)
    assert np.array_equal(fmt.encode(swapped), fmt.encode(native))
    assert np.array_equal(fmt.quantize(swapped), fmt.quantize(native), equal_nan=True)
    a, b = swapped.reshape(1, -1), swapped.reshape(-1, 1)
    got = mm.matmul(a, b, "fp16->fp32")
    want = mm.matmul(native.reshape(1, -1), native.reshape(-1, 1), "fp16->fp32")
    assert np.array_equal(got.values, want.values) and got.swamped == want.swamped
    if name == "fp8_e4m3":                         # a scaled format too
        mx = formats.get("mxfp4")
        assert np.array_equal(mx.quantize(swapped), mx.quantize(native))


# ----- 64-bit integers beyond 2**53: the input must be read exactly, not through float64 ---

def _round_exact(X: Fraction, mbits: int, emin: int, mode: str) -> Fraction:
    """Round the exact rational X to a float with ``mbits`` fraction bits and minimum exponent
    ``emin`` (unbounded above), from the mode definitions."""
    if X == 0:
        return X
    neg = X < 0
    a = abs(X)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    ulp = Fraction(2) ** (max(e, emin) - mbits)
    q = a / ulp
    fl = math.floor(q)
    r = q - fl
    if mode == "nearest_even":
        bump = r > Fraction(1, 2) or (r == Fraction(1, 2) and fl % 2 == 1)
    elif mode == "nearest_away":
        bump = r >= Fraction(1, 2)
    elif mode == "toward_zero":
        bump = False
    elif mode == "toward_positive":
        bump = r > 0 and not neg
    else:
        bump = r > 0 and neg
    res = (fl + bump) * ulp
    return -res if neg else res


def _expected_float(X: Fraction, name, mbits, emin, mx, mode) -> float:
    r = _round_exact(X, mbits, emin, mode)
    if r == 0:
        return math.copysign(0.0, X)
    if abs(r) > mx:               # ieee overflow for an IEEE-style (Inf) format
        to_inf = {"nearest_even": True, "nearest_away": True, "toward_zero": False,
                  "toward_positive": r > 0, "toward_negative": r < 0}[mode]
        return math.copysign(INF if to_inf else mx, r)
    return float(r)


BIG_U64 = [2**63 + 2**40 + 1, 2**63 + 2**39, 2**63 + 2**39 + 1, 2**63 + 2**39 - 1, 2**64 - 1,
           2**53 + 1, 2**54 + 3, 2**63 + 2**11, 2**63 + 2**10 + 1, 2**64 - 2**40 - 2**39 - 1,
           2**63 + 2**56 + 2**55 + 1, 2**63 + 2**55]
BIG_I64 = [-(2**62 + 2**38 + 1), -(2**63), 2**63 - 1, -(2**63 - 1), 2**62 + 2**38 + 1,
           -(2**53 + 1), 2**53 + 3, -(2**62 + 2**38), 65407, 65408, 65409, -65408, 65280]
# name: (mbits, emin, max)
BIG_TARGETS = {
    "fp32": (23, -126, (2 - 2.0**-23) * 2.0**127),
    "bf16": (7, -126, (2 - 2.0**-7) * 2.0**127),
    "e5m7": (7, -14, 65280.0),
    "e5m7_b-50": (7, 51, (2 - 2.0**-7) * 2.0**80),          # bias -50: 2**51 .. ~2**81
    "fp16": (10, -14, 65504.0),
}


@pytest.mark.parametrize("mode", MODES5)
@pytest.mark.parametrize("name", list(BIG_TARGETS))
def test_int64_beyond_2_53(name, mode):
    mbits, emin, mx = BIG_TARGETS[name]
    fmt = formats.get(name)
    assert fmt.max == mx and fmt.min_normal == 2.0**emin
    for vals, dt in ((BIG_U64, np.uint64), (BIG_I64, np.int64)):
        x = np.array(vals, dtype=dt)
        assert [int(v) for v in x] == vals
        want = [_expected_float(Fraction(v), name, mbits, emin, mx, mode) for v in vals]
        check_values(f"{name} {dt.__name__} {mode} quantize", vals, fmt.quantize(x, mode), want)
        got = fmt.decode(fmt.encode(x, mode))
        check_values(f"{name} {dt.__name__} {mode} encode", vals, got, want)


def test_uint64_double_rounding_example():
    """2**63 + 2**39 + 1 is just above the fp32 tie 2**63 + 2**39; through float64 it would
    first become the tie 2**63 + 2**39 and then 2**63 (ties to even)."""
    fp32 = formats.get("fp32")
    x = np.array([2**63 + 2**39 + 1], dtype=np.uint64)
    assert fp32.quantize(x).item() == 2.0**63 + 2.0**40
    assert fp32.quantize(np.array([2**63 + 2**39], dtype=np.uint64)).item() == 2.0**63
    assert fp32.quantize(np.array([2**63 + 1], dtype=np.uint64), "toward_positive").item() == \
        2.0**63 + 2.0**40
    assert fp32.quantize(np.array([2**64 - 1], dtype=np.uint64), "toward_zero").item() == \
        2.0**64 - 2.0**40
    assert fp32.quantize(np.array([-(2**62 + 2**38 + 1)], dtype=np.int64)).item() == \
        -(2.0**62 + 2.0**39)


@pytest.mark.parametrize("name,frac", [("int32", 0), ("uint32", 0), ("int8", 0), ("fix16_4", 4),
                                       ("ufix16_4", 4)])
def test_int64_into_integer_formats(name, frac):
    fmt = formats.get(name)
    bits = fmt.bits
    lo = -(1 << (bits - 1)) if fmt.signed else 0          # two's complement / unsigned range
    hi = (1 << (bits - 1)) - 1 if fmt.signed else (1 << bits) - 1
    for vals, dt in ((BIG_U64, np.uint64), (BIG_I64, np.int64)):
        x = np.array(vals, dtype=dt)
        sat = [min(max(v << frac, lo), hi) for v in vals]
        wrap = [((v << frac) - lo) % (1 << bits) + lo for v in vals]
        for policy, ks in (("saturate", sat), ("wrap", wrap)):
            codes = fmt.encode(x, overflow=policy)
            assert codes.tolist() == [k % (1 << bits) for k in ks], (name, dt, policy)
            q = fmt.quantize(x, overflow=policy)
            assert q.tolist() == [k / 2**frac for k in ks]


# ----- quantize's output dtype ---------------------------------------------------------------

# (format, input dtype, output dtype): the input float dtype is kept when it holds every value
# of the format (significand bits, smallest step and max all fit), else float64.
QUANT_DTYPES = [
    ("fp8_e4m3", np.float32, np.float32),
    ("fp8_e4m3", np.float16, np.float16),        # 4 bits, steps >= 2**-9, max 448
    ("fp8_e5m2", np.float16, np.float16),        # min sub 2**-16 >= 2**-24, max 57344 <= 65504
    ("fp8_e5m2fnuz", np.float16, np.float16),    # min sub 2**-17
    ("bf16", np.float16, np.float64),            # bf16 reaches 2**127 and 2**-133
    ("bf16", np.float32, np.float32),
    ("fp16", np.float16, np.float16),
    ("fp16", np.float32, np.float32),
    ("fp32", np.float32, np.float32),
    ("fp32", np.float16, np.float64),
    ("tf32", np.float32, np.float32),
    ("e5m7", np.float16, np.float16),            # 8 bits, min sub 2**-21, max 65280
    ("e5m10_b14", np.float16, np.float64),       # twice fp16's range: max 131008
    ("e8m0", np.float32, np.float32),            # 2**-127 .. 2**127
    ("e8m0", np.float16, np.float64),
    ("fp4_e2m1", np.float16, np.float16),
    ("fp8_e4m3", np.float64, np.float64),
    ("int8", np.float16, np.float16),            # integers up to 127
    ("int16", np.float16, np.float64),           # 15 bits > 11
    ("int16", np.float32, np.float32),
    ("int32", np.float32, np.float64),
    ("fix8_4", np.float16, np.float16),
    ("fix16_15", np.float16, np.float64),
    ("fp8_e4m3", np.int32, np.float64),          # integer input: float64
    ("int8", np.int8, np.float64),
    ("int8", np.uint64, np.float64),
]


@pytest.mark.parametrize("name,din,dout", QUANT_DTYPES,
                         ids=[f"{n}-{np.dtype(i).name}" for n, i, _ in QUANT_DTYPES])
def test_quantize_output_dtype(name, din, dout):
    fmt = formats.get(name)
    x = np.array([1, 2, 3, 5, 100], dtype=din)
    q = fmt.quantize(x)
    assert q.dtype == dout, (name, din, q.dtype)
    assert fmt.quantize(x[:0]).dtype == dout
    np.testing.assert_array_equal(q.astype(np.float64), fmt.decode(fmt.encode(x)))
    if fmt.bits <= 16:
        # the claim behind keeping the dtype: every value of the format is exact in it
        v = fmt.values()
        if dout != np.float64:
            assert np.array_equal(v.astype(dout).astype(np.float64), v)
        elif np.dtype(din).kind == "f" and din != np.float64:
            with np.errstate(over="ignore"):
                assert not np.array_equal(v.astype(din).astype(np.float64), v)


# ----- the fused nearest-even quantize agrees with decode(encode(x)) -----------------------------

FUSED = ["fp32", "tf32", "fp16", "fp16_ftz", "bf16", "bf16_ftz", "fp8_e4m3", "fp8_e5m2",
         "fp8_e4m3fnuz", "fp8_e5m2fnuz", "fp8_e4m3b11fnuz", "fp8_e3m4", "fp6_e3m2", "fp6_e2m3",
         "fp4_e2m1", "e5m7", "ue4m3fn", "ue2m1finite", "ue5m2", "e3m2fnuz_b-3", "e4m3_b20",
         "e2m1finite_b-5", "e8m0"]


@pytest.mark.parametrize("policy", ["ieee", "saturate"])
@pytest.mark.parametrize("name", FUSED)
def test_quantize_equals_decode_of_encode(name, policy):
    """quantize may take a faster value-domain path (nearest_even); it must give exactly
    decode(encode(x)) for every input: values, midpoints and their float64 neighbours, random
    reals over the whole range and beyond, specials, float32 and float16 inputs."""
    fmt = formats.get(name)
    rng = np.random.default_rng(sum(map(ord, name)))
    lo, hi = math.log2(fmt.min_subnormal) - 4, math.log2(fmt.max) + 2
    n = 20000
    x = np.ldexp(rng.uniform(1, 2, n), rng.integers(int(lo), int(hi) + 1, n))
    x = np.concatenate([x, -x, [0.0, -0.0, INF, -INF, 5e-324, -5e-324, 1e300, -1e300,
                                np.finfo(np.float64).max]])
    if fmt.bits <= 16:
        v = fmt.values()
        mid = (v[1:] + v[:-1]) / 2
        grid = np.concatenate([v, mid])
        x = np.concatenate([x, grid, -grid, np.nextafter(grid, INF), np.nextafter(grid, -INF)])
    if not fmt.has_nan:
        x = x[~np.isnan(x)]
    with np.errstate(over="ignore"):
        inputs = [x] + [a[np.isfinite(a) | np.isinf(x)]
                        for a in (x.astype(np.float32), x.astype(np.float16))]
    for mode in MODES5:
        for arr in inputs:
            q = fmt.quantize(arr, mode, overflow=policy)
            want = fmt.decode(fmt.encode(arr, mode, overflow=policy)).astype(q.dtype)
            same_bits = (q.view(f"u{q.itemsize}") == want.view(f"u{want.itemsize}")) | \
                (np.isnan(q) & np.isnan(want))
            assert same_bits.all(), (name, mode, policy, arr.dtype, arr[~same_bits][:5],
                                     q[~same_bits][:5], want[~same_bits][:5])
