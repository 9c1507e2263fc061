"""Codebook formats (formats/codebook.py).

Oracles: NF4 is rebuilt from its definition in the QLoRA paper (Dettmers et al. 2023,
bitsandbytes ``create_normal_map(offset=0.9677083, use_extra_value=True)``: quantiles of the
standard normal, normalised to [-1, 1], stored as float32) with the standard library's
``statistics.NormalDist``; the e2m1 value set written as a table must round, add and multiply
exactly like numsim's e2m1 float format (itself checked against ml_dtypes and MPFR), since
ties-to-even-code is ties-to-even for e2m1; the stochastic decision is checked against the
documented threshold rule with the counter-based generator.
"""
from statistics import NormalDist

import numpy as np
import pytest

import formats
from formats.codebook import FP4_E2M1_TABLE, NF4, CodebookFormat
from formats.rounding import random_bits, resolve_seed

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
E2M1 = formats.get("fp4_e2m1")


def _fp4_inputs():
    v = E2M1.values()
    mids = (v[1:] + v[:-1]) / 2
    rng = np.random.default_rng(3)
    return np.concatenate([v, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf),
                           rng.standard_normal(20000) * 4, [7.0, -9.0, 1e9, -0.0]])


@pytest.mark.parametrize("mode", MODES5)
def test_fp4_table_encodes_like_e2m1(mode):
    x = _fp4_inputs()
    ours = FP4_TABLE.quantize(x, rounding=mode)
    ref = E2M1.quantize(x, rounding=mode, overflow="saturate")
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("mode", MODES5)
@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_fp4_table_arithmetic_like_e2m1(op, mode):
    a, b = (c.ravel().astype(np.uint8) for c in np.meshgrid(np.arange(16), np.arange(16)))
    ours = FP4_TABLE.decode(getattr(FP4_TABLE, op)(a, b, rounding=mode))
    ref = E2M1.decode(getattr(E2M1, op)(a, b, rounding=mode, overflow="saturate"))
    np.testing.assert_array_equal(ours + 0.0, ref + 0.0)       # the table merges -0 into +0


@pytest.mark.parametrize("mode", MODES5)
def test_fp4_table_fma_like_e2m1(mode):
    a, b, c = (g.ravel().astype(np.uint8) for g in np.meshgrid(*[np.arange(16)] * 3))
    ours = FP4_TABLE.decode(FP4_TABLE.fma(a, b, c, rounding=mode))
    ref = E2M1.decode(E2M1.fma(a, b, c, rounding=mode, overflow="saturate"))
    np.testing.assert_array_equal(ours + 0.0, ref + 0.0)


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
    with pytest.raises(ValueError, match="NaN"):
        formats.get("nf4").encode([0.0, np.nan])
    with pytest.raises(ValueError, match="outside the table"):
        CodebookFormat([0.0, 1.0, 2.0]).decode(np.array([3], dtype=np.uint8))
