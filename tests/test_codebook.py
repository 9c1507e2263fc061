"""Codebook formats (formats/codebook.py).

Oracles: NF4 is rebuilt from its definition in the QLoRA paper (Dettmers et al. 2023,
bitsandbytes ``create_normal_map(offset=0.9677083, use_extra_value=True)``: quantiles of the
standard normal, normalised to [-1, 1], stored as float32) with the standard library's
``statistics.NormalDist``, and every deterministic mode of NF4's encode and arithmetic is
checked against an explicit search over the published table (bitsandbytes' values as typed in
tests/scaled_reference.py) on the exact value (Fractions): the neighbours below and above, the
mode's choice between them, ties to the even code (nearest_even, the documented choice) or
away from zero.  The e2m1 value set written as a table must round like ml_dtypes'
float4_e2m1fn casts (nearest-even: ties-to-even-code is ties-to-even for e2m1) and like MPFR
(tests/mpfr_oracle.py) in the other modes, saturating, for encode and for the exact results
of add/sub/mul/fma; the stochastic decision is checked against the documented threshold rule
with the counter-based generator.
"""
from fractions import Fraction
from statistics import NormalDist

import ml_dtypes
import numpy as np
import pytest

import formats
from formats.codebook import FP4_E2M1_TABLE, NF4, CodebookFormat
from formats.rounding import random_bits, resolve_seed
from mpfr_oracle import FloatSpec, oracle_round
from scaled_reference import NF4_TABLE as NF4_PUBLISHED

MODES5 = ["nearest_even", "nearest_away", "toward_zero", "toward_positive", "toward_negative"]


def nf4_from_definition() -> np.ndarray:
    """QLoRA's NF4: 8 positive quantiles, zero, 7 negative quantiles, normalised, float32."""
    offset = 0.9677083
    nd = NormalDist()
    pos = [nd.inv_cdf(p) for p in np.linspace(offset, 0.5, 9)[:-1]]
    neg = [-nd.inv_cdf(p) for p in np.linspace(offset, 0.5, 8)[:-1]]
    values = np.sort(np.array(pos + [0.0] + neg))
    return (values / values.max()).astype(np.float32).astype(np.float64)


def test_nf4_table_matches_its_definition():
    ours = np.array(NF4)
    ref = nf4_from_definition()
    # bitsandbytes computed the quantiles with scipy and normalised in torch float32; the
    # published values differ from a float64 normalisation by a few float32 ulps (< 1e-6
    # relative), far below the 0.08 spacing of the table
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=0)
    assert ours[7] == 0.0 and ours[0] == -1.0 and ours[-1] == 1.0
    assert np.all(ours == ours.astype(np.float32))


def test_nf4_named_format():
    f = formats.get("nf4")
    assert isinstance(f, CodebookFormat) and f.bits == 4 and f.n_finite == 16
    np.testing.assert_array_equal(f.values(), np.sort(np.array(NF4)))
    np.testing.assert_array_equal(f.decode(np.arange(16, dtype=np.uint8)), np.array(NF4))


FP4_TABLE = CodebookFormat(FP4_E2M1_TABLE, name="fp4_table")
E2M1_SPEC = FloatSpec(2, 1, 1, "finite")            # OCP e2m1 for the MPFR oracle
E2M1_ML = ml_dtypes.float4_e2m1fn


def _fp4_dense():
    """Every finite float16 and bfloat16 value, +-Inf, and the float32 neighbours of e2m1's
    values and midpoints, each in its own dtype (ml_dtypes casts each exactly once)."""
    v = np.unique(np.arange(16, dtype=np.uint8).view(E2M1_ML).astype(np.float32))
    pts = np.concatenate([v, (v[1:] + v[:-1]) / 2])
    f16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    bf16 = np.arange(1 << 16, dtype=np.uint16).view(ml_dtypes.bfloat16)
    return [f16[~np.isnan(f16)], bf16[~np.isnan(bf16)],
            np.concatenate([np.nextafter(pts, np.float32(np.inf)),
                            np.nextafter(pts, np.float32(-np.inf))])]


def _fp4_oracle(exact, mode):
    """e2m1 values of exact reals (an array of one dtype) rounded in ``mode``, saturating, zeros
    made +0 (the table has one zero, code 0): ml_dtypes' cast for nearest-even, else MPFR."""
    exact = np.asarray(exact)
    if mode == "nearest_even":
        return exact.astype(E2M1_ML).astype(np.float64) + 0.0
    return oracle_round(exact.astype(np.float64), E2M1_SPEC, mode, "saturate") + 0.0


def _fp4_codes(values):
    """e2m1 codes of e2m1 values (+0 for zero)."""
    return (np.asarray(values) + 0.0).astype(np.float32).astype(E2M1_ML).view(np.uint8)


@pytest.mark.parametrize("mode", MODES5)
def test_fp4_table_encodes_like_ml_dtypes_and_mpfr(mode):
    for x in _fp4_dense():
        want = _fp4_oracle(x, mode)
        x_in = x.astype(np.float32) if x.dtype == ml_dtypes.bfloat16 else x      # exact
        codes = FP4_TABLE.encode(x_in, rounding=mode)
        assert np.array_equal(codes, _fp4_codes(want)), (mode, x.dtype)
        ours = FP4_TABLE.quantize(x_in, rounding=mode)
        bad = np.flatnonzero(ours.astype(np.float64) != want)
        assert bad.size == 0, (mode, x.dtype, x[bad[:5]], ours[bad[:5]], want[bad[:5]])


def _fp4_exact(op, a, b, c=None):
    """Exact float64 results of e2m1 codes (few-bit values: exact) from ml_dtypes' decode."""
    va, vb = (k.view(E2M1_ML).astype(np.float64) for k in (a, b))
    if op == "fma":
        return va * vb + c.view(E2M1_ML).astype(np.float64)
    return {"add": va + vb, "sub": va - vb, "mul": va * vb}[op]


@pytest.mark.parametrize("mode", MODES5)
@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_fp4_table_arithmetic_vs_ml_dtypes_and_mpfr(op, mode):
    a, b = (c.ravel().astype(np.uint8) for c in np.meshgrid(np.arange(16), np.arange(16)))
    ours = FP4_TABLE.decode(getattr(FP4_TABLE, op)(a, b, rounding=mode))
    np.testing.assert_array_equal(ours + 0.0, _fp4_oracle(_fp4_exact(op, a, b), mode))


@pytest.mark.parametrize("mode", MODES5)
def test_fp4_table_fma_vs_ml_dtypes_and_mpfr(mode):
    a, b, c = (g.ravel().astype(np.uint8) for g in np.meshgrid(*[np.arange(16)] * 3))
    ours = FP4_TABLE.decode(FP4_TABLE.fma(a, b, c, rounding=mode))
    np.testing.assert_array_equal(ours + 0.0, _fp4_oracle(_fp4_exact("fma", a, b, c), mode))


# ---------------------------------------------------------------------------- NF4 modes

NF4_FRACTIONS = [Fraction(v) for v in NF4_PUBLISHED]     # code c means NF4_PUBLISHED[c]


def nf4_search(q: Fraction, mode: str) -> int:
    """The NF4 code of the exact value ``q`` in ``mode``: the published values nearest below
    and above q (saturating at the ends), then the mode's choice."""
    t = NF4_FRACTIONS
    codes = range(len(t))
    if q <= min(t):
        return min(codes, key=lambda c: t[c])
    if q >= max(t):
        return max(codes, key=lambda c: t[c])
    lo = max((c for c in codes if t[c] <= q), key=lambda c: t[c])
    hi = min((c for c in codes if t[c] >= q), key=lambda c: t[c])
    if t[lo] == q:
        return lo
    if mode == "toward_negative":
        return lo
    if mode == "toward_positive":
        return hi
    if mode == "toward_zero":
        return lo if q > 0 else hi
    d_lo, d_hi = q - t[lo], t[hi] - q
    if d_lo != d_hi:
        return lo if d_lo < d_hi else hi
    if mode == "nearest_away":
        return lo if abs(t[lo]) > abs(t[hi]) else hi
    assert (lo - hi) % 2 == 1                    # neighbouring values have consecutive codes
    return lo if lo % 2 == 0 else hi             # the documented tie rule: the even code


def _nf4_inputs():
    t = np.array(NF4_PUBLISHED)
    mids = (t[1:] + t[:-1]) / 2                  # exact in float64
    rng = np.random.default_rng(17)
    f32 = np.concatenate([t, mids]).astype(np.float32)
    return np.concatenate([
        t, mids, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), np.nextafter(mids, np.inf),
        np.nextafter(mids, -np.inf), np.nextafter(f32, np.float32(np.inf)).astype(np.float64),
        np.nextafter(f32, np.float32(-np.inf)).astype(np.float64),
        rng.uniform(-1.2, 1.2, 1500), rng.uniform(-0.1, 0.1, 300).astype(np.float32),
        [0.0, -0.0, 5e-324, -5e-324, 1e-300, -1e-300, 1.5, -7.0, np.inf, -np.inf]])


@pytest.mark.parametrize("mode", MODES5)
def test_nf4_encode_every_mode_vs_published_table(mode):
    nf4 = formats.get("nf4")
    x = _nf4_inputs()
    want = np.array([nf4_search(Fraction(float(v)) if np.isfinite(v) else
                                Fraction(int(np.sign(v)) * 10), mode) for v in x])
    ours = nf4.encode(x, rounding=mode)
    bad = np.flatnonzero(ours != want)
    assert bad.size == 0, (mode, x[bad[:5]], ours[bad[:5]], want[bad[:5]])
    np.testing.assert_array_equal(nf4.quantize(x, rounding=mode), np.array(NF4_PUBLISHED)[want])


@pytest.mark.parametrize("mode", MODES5)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "fma"])
def test_nf4_arithmetic_every_mode_vs_published_table(op, mode):
    # every pair (triple for fma) of codes; the exact result formed in Fractions from the
    # published values, rounded once by the search
    nf4 = formats.get("nf4")
    n = 3 if op == "fma" else 2
    args = [g.ravel().astype(np.uint8) for g in np.meshgrid(*[np.arange(16)] * n)]
    t = NF4_FRACTIONS
    exact = {"add": lambda a, b: t[a] + t[b], "sub": lambda a, b: t[a] - t[b],
             "mul": lambda a, b: t[a] * t[b], "fma": lambda a, b, c: t[a] * t[b] + t[c]}[op]
    want = np.array([nf4_search(exact(*map(int, k)), mode) for k in zip(*args)])
    ours = getattr(nf4, op)(*args, rounding=mode)
    bad = np.flatnonzero(ours != want)
    assert bad.size == 0, (op, mode, [a[bad[:5]] for a in args], ours[bad[:5]], want[bad[:5]])


@pytest.mark.parametrize("sr_bits", [1, 4, 32])
def test_stochastic_rounding_follows_the_threshold_rule(sr_bits):
    nf4 = formats.get("nf4")
    table = np.sort(np.array(NF4))
    x = np.random.default_rng(5).uniform(-1, 1, 5000)
    codes = nf4.encode(x, rounding="stochastic", seed=11, sr_bits=sr_bits)
    key = resolve_seed(11)
    for i, v in enumerate(x):
        j = np.searchsorted(table, v, side="right")
        lo, hi = table[j - 1], table[j]
        threshold = int(np.floor((v - lo) / (hi - lo) * 2.0 ** sr_bits))
        up = int(random_bits(key, i, sr_bits)) < threshold
        assert nf4.decode(codes[i:i + 1])[0] == (hi if up else lo), (i, v)


def test_signed_zeros_take_the_first_zero_code():
    """Rounding compares values: every zero result takes the code of the table's first zero."""
    x = np.array([0.0, -0.0, -0.1, 0.1])
    assert CodebookFormat(FP4_E2M1_TABLE).encode(x).tolist() == [0, 0, 0, 0]
    swapped = CodebookFormat(FP4_E2M1_TABLE[8:] + FP4_E2M1_TABLE[:8])   # -0.0 first, +0.0 8th
    assert swapped.encode(x).tolist() == [0, 0, 0, 0]
    assert np.signbit(swapped.decode([0, 8])).tolist() == [True, False]


def test_values_between_table_ends_saturate():
    nf4 = formats.get("nf4")
    np.testing.assert_array_equal(nf4.quantize([-5.0, 5.0, np.inf, -np.inf]),
                                  [-1.0, 1.0, 1.0, -1.0])


def test_bad_tables_and_inputs():
    with pytest.raises(ValueError, match="distinct"):
        CodebookFormat([0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        CodebookFormat([0.0, np.nan])
    with pytest.raises(ValueError, match="2..256"):
        CodebookFormat([1.0])
    for tiny in (1e-300, -(2.0**-538)):                     # below a float format's range
        with pytest.raises(ValueError, match=r"at least 2\*\*-537"):
            CodebookFormat([-1.0, 0.0, tiny])
    CodebookFormat([-(2.0**-537), 0.0, 1e300])              # the end is allowed; no upper bound
    with pytest.raises(ValueError, match="NaN"):
        formats.get("nf4").encode([0.0, np.nan])
    with pytest.raises(ValueError, match="outside the table"):
        CodebookFormat([0.0, 1.0, 2.0]).decode(np.array([3], dtype=np.uint8))
