"""reports: format property and error tables, plots and the design report.

Expected values come from outside the code under test: published format facts (IEEE 754
binary16, bfloat16, OCP FP8 / MX v1.0, NVIDIA NVFP4, the posit standard, QLoRA's NF4), numpy's
and ml_dtypes' own float casts, quantizers written out by hand in numpy, brute-force Pareto
dominance, and the report rule re-applied to the summary by hand.
"""
import base64
import html.parser
import math
import re

import ml_dtypes
import numpy as np
import pandas as pd
import pytest

import formats
import mac_models as mm
from reports import plots
from reports.report import recommend, summarize, write_report
from reports.tables import (DISTRIBUTIONS, error_row, error_table, family, property_table,
                            quantize_2d, standard_data)
from simulator import digits
from simulator.configs import Config
from simulator.replay import replay
from simulator.traces import Op, Trace

PNG = b"\x89PNG\r\n\x1a\n"

# --- property_table against published facts ----------------------------------------------------

# format: {column: value}; every number is a format fact, not read off numsim.
FACTS = {
    # IEEE 754 binary16
    "fp16": {"family": "float", "bits": 16, "max": 65504.0, "min_normal": 2.0 ** -14,
             "min_positive": 2.0 ** -24, "epsilon": 2.0 ** -10,
             "n_values": 2 ** 16 - 2 * 2 ** 10 - 1},          # minus Inf/NaN codes, minus -0
    # bfloat16
    "bf16": {"family": "float", "bits": 16, "max": (2 - 2.0 ** -7) * 2.0 ** 127,
             "min_normal": 2.0 ** -126, "min_positive": 2.0 ** -133, "epsilon": 2.0 ** -7,
             "n_values": 2 ** 16 - 2 * 2 ** 7 - 1},
    # IEEE 754 binary32
    "fp32": {"family": "float", "bits": 32, "max": (2 - 2.0 ** -23) * 2.0 ** 127,
             "min_normal": 2.0 ** -126, "min_positive": 2.0 ** -149, "epsilon": 2.0 ** -23,
             "n_values": 2 ** 32 - 2 * 2 ** 23 - 1},
    # OCP FP8 E4M3 (no Inf, NaN at S.1111.111)
    "fp8_e4m3": {"family": "float", "bits": 8, "max": 448.0, "min_normal": 2.0 ** -6,
                 "min_positive": 2.0 ** -9, "epsilon": 2.0 ** -3, "n_values": 256 - 2 - 1},
    # OCP FP8 E5M2 (IEEE-like)
    "fp8_e5m2": {"family": "float", "bits": 8, "max": 57344.0, "min_normal": 2.0 ** -14,
                 "min_positive": 2.0 ** -16, "epsilon": 2.0 ** -2,
                 "n_values": 256 - 2 * 4 - 1},
    # AMD/Graphcore FP8 "fnuz": bias 8, no Inf, NaN at the -0 code
    "fp8_e4m3fnuz": {"family": "float", "bits": 8, "max": 240.0, "min_positive": 2.0 ** -10,
                     "n_values": 255},
    "tf32": {"family": "float", "bits": 19, "max": (2 - 2.0 ** -10) * 2.0 ** 127,
             "epsilon": 2.0 ** -10},
    # OCP MX element formats: FP6 E3M2 max 28, E2M3 max 7.5, FP4 E2M1 max 6 (min 0.5)
    "fp6_e3m2": {"family": "float", "bits": 6, "max": 28.0, "min_positive": 2.0 ** -4,
                 "n_values": 63},
    "fp6_e2m3": {"family": "float", "bits": 6, "max": 7.5, "min_positive": 0.125,
                 "n_values": 63},
    "fp4_e2m1": {"family": "float", "bits": 4, "max": 6.0, "min_positive": 0.5,
                 "epsilon": 0.5, "n_values": 15},
    # OCP E8M0 scale: 2^-127 .. 2^127, 0xFF is NaN
    "e8m0": {"bits": 8, "max": 2.0 ** 127, "min_positive": 2.0 ** -127, "n_values": 255},
    "int8": {"family": "int", "bits": 8, "max": 127.0, "min_positive": 1.0, "n_values": 256},
    # posit<16,1>: maxpos 2^28, minpos 2^-28, 12 fraction bits next to 1
    "posit16_1": {"family": "posit", "bits": 16, "max": 2.0 ** 28, "min_positive": 2.0 ** -28,
                  "epsilon": 2.0 ** -12, "n_values": 2 ** 16 - 1},
    # posit<8,0>: maxpos = useed^(n-2) = 2^6, minpos = 2^-6, NaR the only non-real
    "posit8_0": {"family": "posit", "bits": 8, "max": 64.0, "min_positive": 2.0 ** -6,
                 "epsilon": 2.0 ** -5, "n_values": 255},
    # NF4 (QLoRA): 16 values in [-1, 1]; smallest positive 0.07958029955625534
    "nf4": {"family": "codebook", "bits": 4, "max": 1.0, "min_positive": 0.07958029955625534,
            "n_values": 16},
    # OCP MX v1.0: MXFP4 = E2M1 elements (max 6, 15 distinct values) x E8M0 (2^-127..2^127)
    # per 32: 4 + 8/32 bits
    "mxfp4": {"family": "mx", "bits": 4.25, "max": 6 * 2.0 ** 127,
              "min_normal": 1.0 * 2.0 ** -127, "min_positive": 0.5 * 2.0 ** -127,
              "epsilon": 0.5, "n_values": 15},
    "mxfp8_e4m3": {"family": "mx", "bits": 8.25, "max": 448 * 2.0 ** 127, "epsilon": 2.0 ** -3},
    # MXINT8: 8-bit two's complement with 6 fraction bits, max 1.984375 x 2^127
    "mxint8": {"family": "mx", "bits": 8.25, "max": 1.984375 * 2.0 ** 127,
               "min_positive": 2.0 ** -6 * 2.0 ** -127, "epsilon": 2.0 ** -6},
    # NVFP4: E2M1 x UE4M3 (max 448) per 16: 4 + 8/16 bits, block range 6 * 448
    "nvfp4": {"family": "nvfp4", "bits": 4.5, "max": 6 * 448.0, "n_values": 15},
    "int4_g128": {"family": "int (scaled)", "bits": 4 + 32 / 128, "n_values": 16},
    "nf4_g64": {"family": "codebook (scaled)", "bits": 4 + 32 / 64, "n_values": 16},
    # DeepSeek-V3 FP8 tiles: one FP32 scale per 128 x 128 elements
    "fp8_e4m3_128x128": {"family": "float (scaled)", "bits": 8 + 32 / 128 ** 2,
                         "max": 448 * (2 - 2.0 ** -23) * 2.0 ** 127},
}


@pytest.fixture(scope="module")
def props():
    return property_table(list(FACTS)).set_index("format")


def test_property_table_takes_one_name():
    assert property_table("fp16")["format"].tolist() == ["fp16"]


@pytest.mark.parametrize("name", list(FACTS))
def test_property_table_matches_format_facts(props, name):
    row = props.loc[name]
    for col, want in FACTS[name].items():
        got = row[col]
        if isinstance(want, str):
            assert got == want, (name, col, got, want)
        else:
            assert got == pytest.approx(want, rel=1e-12, abs=0), (name, col, got, want)


@pytest.mark.parametrize("name,binades", [
    ("fp16", math.log2(65504 / 2.0 ** -24)),
    ("fp32", 276 + math.log2(2 - 2.0 ** -23)),          # log2((2-2^-23) 2^127 / 2^-149)
    ("fp8_e4m3", math.log2(448 / 2.0 ** -9)),
    ("int8", math.log2(127)),
    ("posit8_0", 12.0),
    ("mxfp4", math.log2(6 * 2.0 ** 127 / 2.0 ** -128)),
])
def test_property_table_dynamic_range(props, name, binades):
    row = props.loc[name]
    assert row["range_binades"] == pytest.approx(binades, rel=1e-12)
    # dB: 20 log10 of the same ratio = binades * 20 log10(2)
    assert row["range_db"] == pytest.approx(binades * 20 * math.log10(2), rel=1e-12)


def test_property_table_default_lists_every_named_format():
    table = property_table()
    assert list(table["format"]) == formats.registry.names() + formats.registry.scaled_names()
    assert table["format"].is_unique
    expected_cols = {"format", "family", "bits", "max", "min_normal", "min_positive", "epsilon",
                     "n_values", "range_binades", "range_db"}
    assert expected_cols <= set(table.columns)
    # internal consistency of every row: definitions from the module doc
    assert (table["max"] > 0).all() and (table["min_positive"] > 0).all()
    assert (table["min_positive"] <= table["min_normal"]).all()
    ratio = np.log2(table["max"].to_numpy(float) / table["min_positive"].to_numpy(float))
    np.testing.assert_allclose(table["range_binades"].to_numpy(float), ratio, rtol=1e-12)


def test_property_table_unknown_format_raises():
    with pytest.raises((KeyError, ValueError), match="nosuch"):
        property_table(["fp16", "nosuch"])


@pytest.mark.parametrize("name,fam", [
    ("fp16", "float"), ("fp8_e4m3", "float"), ("e5m7", "float"), ("int8", "int"),
    ("posit16_1", "posit"), ("nf4", "codebook"), ("mxfp4", "mx"), ("mxint8", "mx"),
    ("nvfp4", "nvfp4"), ("nf4_g64", "codebook (scaled)"), ("bfp8_16", "bfp"),
    ("int8_channel", "int (scaled)"), ("int4_g128", "int (scaled)"),
    ("fp8_e4m3_1x128", "float (scaled)"),
])
def test_family(name, fam):
    assert family(name) == fam


# --- standard data --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data64():
    return standard_data(64, 0)


def test_standard_data_shapes_and_seeding(data64):
    assert list(data64) == list(DISTRIBUTIONS) == ["gaussian", "laplace", "student_t3",
                                                   "uniform", "llm_outliers"]
    for name, x in data64.items():
        assert x.shape == (64, 1024) and x.dtype == np.float64, name
        assert np.isfinite(x).all(), name
    again = standard_data(64, 0)
    other = standard_data(64, 1)
    for name in data64:
        assert np.array_equal(data64[name], again[name]), name
        assert not np.array_equal(data64[name], other[name]), name
    # the distributions are drawn independently of one another
    assert not np.array_equal(data64["gaussian"], data64["llm_outliers"])


def test_standard_data_distributions_have_their_shape(data64):
    g, lap, t3, u = (data64[k] for k in ("gaussian", "laplace", "student_t3", "uniform"))
    n = g.size
    assert abs(g.mean()) < 0.02 and g.std() == pytest.approx(1.0, abs=0.02)
    assert lap.std() == pytest.approx(math.sqrt(2.0), abs=0.04)        # Laplace(1): var 2
    assert u.min() >= -1 and u.max() < 1 and u.std() == pytest.approx(1 / math.sqrt(3), abs=0.01)
    # Student t with 3 degrees of freedom: P(|T| > 3) = 0.05767
    assert np.count_nonzero(np.abs(t3) > 3) / n == pytest.approx(0.05767, abs=0.005)


def test_llm_outliers_have_one_percent_outlier_channels(data64):
    x = data64["llm_outliers"]
    col_std = x.std(axis=0)
    outliers = np.flatnonzero(col_std > 10)
    assert outliers.size == 1024 // 100                     # 1 % of the 1024 columns
    np.testing.assert_allclose(col_std[outliers], 50, rtol=0.3)
    rest = np.delete(col_std, outliers)
    assert rest.max() < 2 and rest.mean() == pytest.approx(1.0, abs=0.05)


# --- quantization and error rows ------------------------------------------------------------

CASTS = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16,
         "fp8_e4m3": ml_dtypes.float8_e4m3fn, "fp8_e5m2": ml_dtypes.float8_e5m2}


def _stats(x, q, beyond):
    """The error row by its definition (module doc), in plain numpy."""
    x = np.asarray(x, float).reshape(-1)
    q = np.asarray(q, float).reshape(-1)
    ok = np.isfinite(x) & np.isfinite(q)
    e = q[ok] - x[ok]
    noise = float(np.sum(e * e))
    return {"mse": noise / e.size,
            "sqnr_db": math.inf if noise == 0 else 10 * math.log10(np.sum(x[ok] ** 2) / noise),
            "max_abs_error": float(np.max(np.abs(e))),
            "saturated_share": beyond / x.size,
            "flushed_share": np.count_nonzero((x != 0) & (q == 0)) / x.size}


def _assert_row(row, want, bits):
    assert row["bits"] == bits
    for k, v in want.items():
        assert row[k] == pytest.approx(v, rel=1e-9, abs=1e-300), (k, row[k], v)


def _x(seed=3, scale=3.0, shape=(4, 1024)):
    return np.random.default_rng(seed).standard_normal(shape) * scale


@pytest.mark.parametrize("fmt", list(CASTS))
def test_error_row_scalar_float_against_numpy_casts(fmt):
    x = _x()
    q = x.astype(CASTS[fmt]).astype(np.float64)          # numpy / ml_dtypes round to nearest even
    got_q, beyond = quantize_2d(x, fmt)
    assert np.array_equal(got_q, q)
    assert beyond == 0
    _assert_row(error_row(x, fmt), _stats(x, q, 0), formats.get(fmt).bits)


@pytest.mark.parametrize("fmt", ["posit8_0", "posit16_1", "int8", "fp6_e2m3", "nf4"])
def test_error_row_other_scalar_formats_against_quantize(fmt):
    f = formats.get(fmt)
    x = _x(scale=2.0)
    q = f.quantize(x)
    beyond = int(np.count_nonzero(np.abs(x) > f.max))
    _assert_row(error_row(x, fmt), _stats(x, q, beyond), f.bits)


def test_error_row_int8_scalar_is_integer_rounding():
    x = _x(scale=40.0)
    q = np.clip(np.rint(x), -128, 127)        # int8: round half even, saturate at the ends
    assert np.array_equal(quantize_2d(x, "int8")[0], q)
    beyond = int(np.count_nonzero(np.abs(x) > 127))
    assert beyond > 0
    _assert_row(error_row(x, "int8"), _stats(x, q, beyond), 8)


def _e2m1(v):
    """OCP FP4 E2M1 round to nearest even with saturation at 6 (by a table of its values)."""
    grid = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])   # codes 0..7 (even = last bit 0)
    a = np.abs(v).ravel()
    out = np.empty_like(a)
    for i, t in enumerate(a):
        if t >= 6:
            out[i] = 6.0
            continue
        d = np.abs(grid - t)
        j = np.flatnonzero(d == d.min())
        out[i] = grid[j[j % 2 == 0][0] if j.size > 1 else j[0]]
    return np.sign(v) * out.reshape(np.shape(v))


def test_error_row_mxfp4_against_hand_written_ocp_mx():
    x = _x(seed=5)
    blocks = x.reshape(4, 32, 32)                          # blocks of 32 along each row
    amax = np.max(np.abs(blocks), axis=2, keepdims=True)
    scale = 2.0 ** (np.floor(np.log2(amax)) - 2)          # OCP MX: floor(log2 amax) - emax(E2M1)
    q = (_e2m1(blocks / scale) * scale).reshape(x.shape)
    beyond = int(np.count_nonzero(np.abs(blocks / scale) > 6))
    assert beyond > 0                  # the floor rule leaves values in (6, 8) to saturate
    got_q, got_beyond = quantize_2d(x, "mxfp4")
    assert np.array_equal(got_q, q)
    assert got_beyond == beyond
    _assert_row(error_row(x, "mxfp4"), _stats(x, q, beyond), 4.25)


def test_error_row_int8_tensor_against_hand_written_absmax():
    x = _x(seed=6)
    scale = float(np.float32(np.max(np.abs(x)) / 127))      # FP32 scale amax / 127
    q = np.clip(np.rint(x / scale), -127, 127) * scale
    beyond = int(np.count_nonzero(np.abs(x / scale) > 127))
    assert np.array_equal(quantize_2d(x, "int8_tensor")[0], q)
    _assert_row(error_row(x, "int8_tensor"), _stats(x, q, beyond), 8)


def test_int8_tensor_sqnr_on_uniform_data_matches_theory():
    """Uniform(-1, 1) through a uniform quantizer of step 1/127: SQNR = var(x) / (step^2/12)
    = (1/3) / (1/(12 * 127^2)) = 4 * 127^2, i.e. 48.1 dB."""
    x = np.random.default_rng(11).uniform(-1, 1, size=(64, 1024))
    assert error_row(x, "int8_tensor")["sqnr_db"] == \
        pytest.approx(10 * math.log10(4 * 127 ** 2), abs=0.15)


@pytest.mark.parametrize("fmt", ["mxfp8_e4m3", "mxfp6_e2m3", "mxint8", "nvfp4", "int4_g128",
                                 "nf4_g64", "bfp8_16"])
def test_error_row_scaled_formats_against_encode_decode(fmt):
    f = formats.get(fmt)
    x = _x(seed=7)
    st = f.encode(x, axis=1)
    q = f.decode(st)
    _assert_row(error_row(x, fmt), _stats(x, q, int(st.n_clipped)), f.bits_per_element)


def test_quantize_2d_groups_along_rows():
    """Scaled formats group along each row: a row of huge values does not change the
    quantization of a row of small ones (and vice versa)."""
    small = _x(seed=8, scale=1e-3, shape=(1, 1024))
    big = _x(seed=9, scale=1e3, shape=(1, 1024))
    for fmt in ("mxfp8_e4m3", "int4_g128", "int8_channel"):
        both = quantize_2d(np.vstack([small, big]), fmt)[0]
        assert np.array_equal(both[0], quantize_2d(small, fmt)[0][0]), fmt
        assert np.array_equal(both[1], quantize_2d(big, fmt)[0][0]), fmt


def test_quantize_2d_channel_scale_is_per_row():
    """Per-channel formats give each row its FP32 scale amax/127 (module doc: data quantized
    as a MAC's first operand, rows along K)."""
    x = np.array([[1.0, -2.0, 3.0, 100.0], [0.01, 0.02, -0.03, 0.04], [5.0, 6.0, 7.0, -8.0]])
    scale = np.float32(np.max(np.abs(x), axis=1, keepdims=True) / 127).astype(np.float64)
    q = np.clip(np.rint(x / scale), -127, 127) * scale
    got = quantize_2d(x, "int8_channel")[0]
    np.testing.assert_array_equal(got, q)


def test_error_row_saturated_share_fp8_e4m3():
    """OCP E4M3's largest value is 448: 448 itself is in range, 449, 500 and -1000 are not;
    2^-12 is below half the smallest subnormal 2^-9 and flushes to zero."""
    x = np.array([448.0, 449.0, 500.0, -1000.0, 1.0, -2.0, 0.0, 2.0 ** -12, 0.3, 100.0])
    row = error_row(x, "fp8_e4m3")
    assert row["saturated_share"] == pytest.approx(3 / 10)
    assert row["flushed_share"] == pytest.approx(1 / 10)


def test_error_row_flushed_share_fp16():
    """binary16's smallest subnormal is 2^-24: 2^-26, 1e-9 and 2^-25 (a tie with zero, which is
    even) flush to zero; 2^-24 and 0.75 * 2^-24 (rounds up to 2^-24) do not; 0 is not
    'flushed' (it was zero); 70000 and 65519 are beyond 65504."""
    x = np.array([2.0 ** -26, -1e-9, 2.0 ** -25, 2.0 ** -24, 0.75 * 2.0 ** -24, 0.0, 1.0,
                  70000.0, 65519.0, 3.0, -4.0, 5.0])
    row = error_row(x, "fp16")
    assert row["flushed_share"] == pytest.approx(3 / 12)
    assert row["saturated_share"] == pytest.approx(2 / 12)


def test_error_row_mxfp4_saturation_hand_made_block():
    """One MXFP4 block with amax 7: floor rule scale 2^(2-2) = 1, so 7 > 6 saturates; with
    amax 5.9 nothing does."""
    block = np.full(32, 0.25)
    block[3] = 7.0
    assert error_row(block, "mxfp4")["saturated_share"] == pytest.approx(1 / 32)
    block[3] = 5.9
    assert error_row(block, "mxfp4")["saturated_share"] == 0


def test_error_row_exact_values_give_infinite_sqnr():
    x = np.array([[1.0, -0.5, 0.25, 2.0, 0.0, 1024.0]])
    row = error_row(x, "fp16")
    assert row["mse"] == 0 and row["max_abs_error"] == 0 and row["sqnr_db"] == math.inf
    assert row["saturated_share"] == 0 and row["flushed_share"] == 0


# --- error_table ------------------------------------------------------------------------------

def test_error_table_layout_and_values():
    fmts = ["fp16", "fp8_e4m3", "int8_tensor"]
    table = error_table(fmts, rows=4, seed=2)
    data = standard_data(4, 2)
    assert len(table) == len(DISTRIBUTIONS) * len(fmts)
    assert list(table["data"]) == [d for d in DISTRIBUTIONS for _ in fmts]
    assert list(table["format"]) == fmts * len(DISTRIBUTIONS)
    assert list(table["family"]) == ["float", "float", "int (scaled)"] * len(DISTRIBUTIONS)
    for col in ("bits", "mse", "sqnr_db", "max_abs_error", "saturated_share", "flushed_share"):
        assert col in table
    for dname, x in data.items():
        row = table[(table["data"] == dname) & (table["format"] == "fp16")].iloc[0]
        _assert_row(row, _stats(x, x.astype(np.float16).astype(float), 0), 16)
        e4 = table[(table["data"] == dname) & (table["format"] == "fp8_e4m3")].iloc[0]
        assert row["sqnr_db"] > e4["sqnr_db"] + 30, dname   # 7 more mantissa bits: ~42 dB


def test_error_table_on_given_tensors():
    x = _x(seed=12, shape=(8, 64))
    table = error_table(["bf16", "fp8_e5m2"], data={"mine": x, "other": 2 * x})
    assert list(table["data"]) == ["mine", "mine", "other", "other"]
    row = table.iloc[1]
    _assert_row(row, _stats(x, x.astype(ml_dtypes.float8_e5m2).astype(float), 0), 8)
    # scaling by 2 leaves a float format's SQNR unchanged (no range limits hit)
    assert table.iloc[0]["sqnr_db"] == pytest.approx(table.iloc[2]["sqnr_db"], rel=1e-12)


# --- plots ------------------------------------------------------------------------------------

def _brute_front(cost, err):
    n = len(cost)
    keep = []
    for i in range(n):
        dominated = False
        for j in range(n):
            if j != i and cost[j] <= cost[i] and err[j] <= err[i] and \
                    (cost[j] < cost[i] or err[j] < err[i]):
                dominated = True
                break
        keep.append(not dominated)
    return np.array(keep, dtype=bool)


@pytest.mark.parametrize("seed", range(6))
def test_pareto_front_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 80
    cost = rng.integers(0, 12, n).astype(float)          # few distinct values: many ties
    err = rng.integers(0, 12, n).astype(float)
    cost[:5] = cost[5:10]                                 # exact duplicate points
    err[:5] = err[5:10]
    want = _brute_front(cost, err)
    got = plots.pareto_front(cost, err)
    assert got.dtype == bool and got.shape == (n,)
    np.testing.assert_array_equal(got, want)
    # pandas Series work too (the report passes columns)
    np.testing.assert_array_equal(plots.pareto_front(pd.Series(cost), pd.Series(err)), want)


def test_pareto_front_nan_points_are_off_and_beat_nothing():
    cost = [1.0, math.nan, 2.0, 0.5, 3.0]
    err = [5.0, 0.0, 1.0, math.nan, 0.5]
    assert plots.pareto_front(cost, err).tolist() == [True, False, True, False, True]
    # an overflowed output (error +inf) is not a design point either, however cheap
    assert plots.pareto_front([0.1, 1.0], [math.inf, 2.0]).tolist() == [False, True]


def test_pareto_labels_do_not_overlap_in_a_crowd():
    """20 configurations, 14 of them in a tight cluster (as the demo's are): after drawing, no
    two point labels overlap and none leaves the axes vertically; the front is named and at
    most one other name is left out."""
    from matplotlib.text import Text
    rng = np.random.default_rng(3)
    cost = np.concatenate([15 + rng.uniform(0, 1.5, 14), rng.uniform(5, 32, 6)])
    err = np.concatenate([0.02 + rng.uniform(0, 0.008, 14), rng.uniform(0.015, 0.9, 6)])
    names = [f"configuration {i} (acc)" for i in range(20)]
    summary = pd.DataFrame({"cost": cost, "err": err}, index=names)
    fig = plots.pareto(summary, "cost", "err", "cost", "error")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]
    texts = {t.get_text() for t in ax.texts}
    assert set(summary.index[plots.pareto_front(cost, err)]) <= texts and len(texts) >= 19
    frame = ax.get_window_extent(renderer)
    assert all(frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)
    assert not [(i, j) for i in range(len(boxes)) for j in range(i)
                if boxes[i].overlaps(boxes[j])]


def test_pareto_leaves_out_names_that_would_crowd_but_names_the_front():
    """36 configurations with long names on one error level (exact ones, as a sweep with
    accuracy has): names that find no free place are left out rather than drawn over others;
    the front's is drawn, and the legend counts the named."""
    from matplotlib.text import Text
    names = [f"mxfp4|aligned32x14t_fp32+promote128,store:bf16,fuse:epilogue {i}"
             for i in range(36)]
    summary = pd.DataFrame({"cost": np.linspace(0.1, 0.4, 36), "err": np.zeros(36)},
                           index=names)
    fig = plots.pareto(summary, "cost", "err", "cost", "error")
    fig.canvas.draw()
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    boxes = [Text.get_window_extent(t, fig.canvas.get_renderer()) for t in ax.texts]
    assert names[0] in texts and len(texts) < 36       # the front: the cheapest exact one
    assert not [(i, j) for i in range(len(boxes)) for j in range(i)
                if boxes[i].overlaps(boxes[j])]
    assert f"({len(texts)} of 36 points named" in ax.get_legend().get_texts()[0].get_text()


def test_pareto_names_only_the_front_of_a_large_sweep():
    """Past MAX_NAMED_POINTS configurations only the front is named, and the legend says so."""
    rng = np.random.default_rng(4)
    n = plots.MAX_NAMED_POINTS + 1
    summary = pd.DataFrame({"cost": rng.uniform(1, 10, n), "err": rng.uniform(0.01, 1, n)},
                           index=[f"c{i}" for i in range(n)])
    front = plots.pareto_front(summary["cost"], summary["err"])
    ax = plots.pareto(summary, "cost", "err", "cost", "error").axes[0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(summary.index[front])
    assert f"{n} points" in ax.get_legend().get_texts()[0].get_text()
    ax = plots.pareto(summary.iloc[:-1], "cost", "err", "cost", "error").axes[0]
    assert len(ax.texts) == n - 1
    cost = np.arange(1.0, 101.0)                   # a front of 100: one in 3 named, spread out
    trade = pd.DataFrame({"cost": cost, "err": 1 / cost}, index=[f"t{i}" for i in range(100)])
    ax = plots.pareto(trade, "cost", "err", "cost", "error").axes[0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(trade.index[::3])
    assert "one in 3; 100 points" in ax.get_legend().get_texts()[0].get_text()


def test_pareto_front_hand_made():
    cost = [1.0, 1.0, 2.0, 3.0, 3.0, 0.5, 0.5]
    err = [5.0, 4.0, 2.0, 2.0, 1.0, 9.0, 9.0]
    # (1,5) loses to (1,4) (tie on cost, worse error); (3,2) loses to (2,2); duplicates
    # (0.5, 9) both stay: neither is better than the other on anything
    assert plots.pareto_front(cost, err).tolist() == [False, True, True, False, True, True, True]
    assert plots.pareto_front([], []).tolist() == []
    assert plots.pareto_front([2.0], [3.0]).tolist() == [True]


def _png_file(path):
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG, path


def test_save_writes_png_and_svg_and_closes(tmp_path):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    before = len(plt.get_fignums())
    out = plots.save(fig, tmp_path / "sub" / "fig.png", svg=True)
    assert out == [tmp_path / "sub" / "fig.png", tmp_path / "sub" / "fig.svg"]
    _png_file(out[0])
    assert b"<svg" in out[1].read_bytes()[:2000]
    assert len(plt.get_fignums()) == before - 1
    fig2, _ = plt.subplots()
    assert plots.save(fig2, tmp_path / "only.png") == [tmp_path / "only.png"]
    assert not (tmp_path / "only.svg").exists()


def test_sqnr_vs_bits_one_line_per_family():
    import matplotlib.pyplot as plt
    fmts = ["fp16", "bf16", "fp8_e4m3", "int8_tensor", "int4_g128", "mxfp4", "nvfp4"]
    table = error_table(fmts, rows=2)
    fig = plots.sqnr_vs_bits(table, "laplace")
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.lines}
    assert set(lines) == {"float", "int (scaled)", "mx", "nvfp4"}
    lap = table[table["data"] == "laplace"]
    fl = lap[lap["family"] == "float"].sort_values("bits")
    np.testing.assert_array_equal(lines["float"].get_xdata(), fl["bits"])
    np.testing.assert_allclose(lines["float"].get_ydata(), fl["sqnr_db"])
    plt.close(fig)


def _legend(fig):
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_histogram_overlays_the_format_grid():
    """Scalar formats up to 16 bits: every representable value within the data's range (the
    E4M3 grid from ml_dtypes, -0 and +0 one value); scaled formats: the values taken."""
    import matplotlib.pyplot as plt
    x = _x(seed=13, shape=(16, 64))
    fig = plots.histogram(x, "fp8_e4m3")
    grid = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(float)
    grid = np.unique(grid[np.isfinite(grid)])
    n = np.count_nonzero((grid >= x.min()) & (grid <= x.max()))
    assert f"fp8_e4m3: {n} representable values in range" in _legend(fig)
    red = [ln for ln in fig.axes[0].lines if ln.get_color() == "tab:red" and len(ln.get_xdata())]
    assert len(red) == n
    plt.close(fig)
    fig = plots.histogram(x, "mxfp4")
    taken = np.unique(quantize_2d(x, "mxfp4")[0])
    assert f"mxfp4: {taken.size} values taken in range" in _legend(fig)
    plt.close(fig)


def test_accumulator_error_exact_int32_and_inexact_fp16():
    """int8 operands summed in an int32 accumulator are exact for K <= 4096 (|sum| < 2^31):
    the plot's floor 1e-18; an fp16 accumulator rounds (error well above fp32's epsilon)."""
    import matplotlib.pyplot as plt
    fig = plots.accumulator_error(["int8->int32", "fp16->fp16"], ks=(16, 256), trials=3)
    lines = {ln.get_label(): ln for ln in fig.axes[0].lines}
    np.testing.assert_array_equal(lines["int8->int32"].get_xdata(), [16, 256])
    np.testing.assert_array_equal(lines["int8->int32"].get_ydata(), [1e-18, 1e-18])
    fp16 = np.asarray(lines["fp16->fp16"].get_ydata())
    assert (fp16 > 2.0 ** -23).all() and (fp16 < 0.5).all(), fp16
    plt.close(fig)


# --- summarize and recommend ------------------------------------------------------------------

CONFIGS = [Config("fp32", "fp32", name="fp32"),
           Config("fp8_e4m3", "fp8_e4m3", "fp8_e4m3->fp32", name="fp8 e4m3"),
           Config("int8_channel", "int8_tensor", "int8->int32", name='int8 <i32> & "q"')]


@pytest.fixture(scope="module")
def trace():
    return digits.trace()


@pytest.fixture(scope="module")
def results(trace):
    return replay(trace, CONFIGS, "propagated")


@pytest.fixture(scope="module")
def summary(results):
    return summarize(results)


def test_summarize_one_row_per_config_in_order(summary):
    assert list(summary.index) == [c.name for c in CONFIGS]
    for col in ("accuracy", "reference_accuracy", "mean_output_sqnr_db", "compute_pj",
                "memory_pj", "total_pj", "area_um2_per_mac", "overflows", "saturations"):
        assert col in summary, col


def test_summarize_accuracy_from_task_rows(summary, results, trace):
    labels = np.asarray(trace.extras["labels"])
    logits = np.asarray(trace.ops[-1].tensors["output"])
    reference = float(np.mean(np.argmax(logits, axis=1) == labels))
    task = results[results["role"] == "task"].set_index("config")
    for cfg in CONFIGS:
        assert summary.loc[cfg.name, "accuracy"] == task.loc[cfg.name, "accuracy"]
        assert summary.loc[cfg.name, "reference_accuracy"] == reference
    # the fp32 replay reproduces the captured fp32 logits, so it scores the reference
    assert summary.loc["fp32", "accuracy"] == reference
    assert summary.loc["fp32", "mean_output_sqnr_db"] == math.inf


def test_summarize_sums_over_output_rows(summary, results):
    """Energies over every op (the MACs and the relus between them), the rest over the MACs."""
    for cfg in CONFIGS:
        every = [r for _, r in results.iterrows()
                 if r["config"] == cfg.name and r["role"] == "output"]
        rows = [r for r in every if not pd.isna(r["macs"])]
        assert [r["op"] for r in rows] == ["fc1", "fc2", "fc3"]
        between = [r for r in every if pd.isna(r["macs"])]
        assert [r["kind"] for r in between] == ["relu", "relu"]
        s = summary.loc[cfg.name]
        for col in ("compute_pj", "quantize_pj", "memory_pj", "total_pj"):
            assert s[col] == pytest.approx(sum(r[col] for r in every), rel=1e-12), col
        assert s["quantize_pj"] < s["compute_pj"]
        assert s["between_pj"] == pytest.approx(sum(r["total_pj"] for r in between),
                                                rel=1e-12)
        assert 0 < s["between_pj"] < s["total_pj"]
        # the digits MLP (64 -> 64 -> 32 -> 10) on 360 images
        assert s["macs"] == 360 * (64 * 64 + 64 * 32 + 32 * 10)
        assert s["pj_per_mac"] == pytest.approx(s["total_pj"] / s["macs"], rel=1e-12)
        assert s["area_um2_per_mac"] == max(r["area_um2"] for r in rows)
        assert s["overflows"] == sum(r["overflows"] for r in rows)
        finite = [r["sqnr_db"] for r in rows if math.isfinite(r["sqnr_db"])]
        if finite:
            assert s["mean_output_sqnr_db"] == pytest.approx(sum(finite) / len(finite))
        # the replay's own task row adds up the same costs
        task = results[(results["config"] == cfg.name) & (results["role"] == "task")].iloc[0]
        assert s["total_pj"] == pytest.approx(task["total_pj"], rel=1e-12)


def test_per_op_summaries_leave_the_ops_between_the_macs_unpriced(trace):
    s = summarize(replay(trace, CONFIGS[:1], "per-op")).iloc[0]
    assert math.isnan(s["between_pj"]) and s["total_pj"] > 0


def _by_rule(summary):
    ok = summary if "error" not in summary else summary[summary["error"].isna()]
    if "accuracy" in ok and ok["accuracy"].notna().any():
        best = ok["accuracy"].max()
        pool = [n for n in ok.index if ok.loc[n, "accuracy"] >= best - 0.01]
    else:
        best = ok["mean_output_sqnr_db"].max()
        pool = [n for n in ok.index if ok.loc[n, "mean_output_sqnr_db"] >= best - 1.0]
    return min(pool, key=lambda n: (ok.loc[n, "total_pj"], ok.loc[n, "area_um2_per_mac"]))


def test_recommend_on_replay_summary(summary):
    pick, rule = recommend(summary)
    assert pick == _by_rule(summary)
    assert "accuracy" in rule
    best = summary["accuracy"].max()
    assert summary.loc[pick, "accuracy"] >= best - 0.01
    cheaper = summary[summary["total_pj"] < summary.loc[pick, "total_pj"]]
    assert (cheaper["accuracy"] < best - 0.01).all()


def _summary_frame(rows):
    return pd.DataFrame(rows, columns=["name", "accuracy", "mean_output_sqnr_db", "total_pj",
                                       "area_um2_per_mac"]).set_index("name")


def test_recommend_rule_on_hand_made_summaries():
    s = _summary_frame([("best", 0.95, 40, 100, 10), ("close", 0.941, 30, 50, 10),
                        ("cheapest", 0.939, 20, 10, 1), ("tie_big", 0.945, 30, 50, 20)])
    # 'cheapest' is 0.011 below the best: out; 'close' and 'tie_big' tie on energy, area decides
    assert recommend(s)[0] == "close"
    s2 = _summary_frame([("a", None, 40.0, 100, 1), ("b", None, 39.5, 10, 5),
                         ("c", None, 38.9, 1, 1)]).drop(columns="accuracy")   # no task rows
    pick, rule = recommend(s2)
    assert pick == "b" and "dB" in rule
    s3 = s.assign(error=[None, "boom", None, None])
    assert recommend(s3)[0] == "tie_big"
    s4 = s.assign(accuracy=[None, 0.5, None, None])            # failed runs have no accuracy
    assert recommend(s4)[0] == "close"
    # labels the captured model never gets right: accuracy ranks nothing, SQNR decides
    s5 = s.assign(reference_accuracy=0.0)
    pick, rule = recommend(s5)
    assert pick == "best" and "reference accuracy 0" in rule and "dB" in rule
    assert recommend(s.assign(reference_accuracy=[0.0, 0.0, 0.2, 0.0]))[0] == "close"
    # the tolerances: two points of accuracy admit 'cheapest'; an SQNR floor of 39 dB admits
    # 'b' and 'c' (c the cheaper), one of 45 dB none
    pick, rule = recommend(s, accuracy_drop=0.02)
    assert pick == "cheapest" and "within 2 points of the best accuracy" in rule
    pick, rule = recommend(s2, min_sqnr_db=38.9)
    assert pick == "c" and "mean output SQNR of 38.9 dB or more (the best: 40.0 dB)" in rule
    assert recommend(s2, min_sqnr_db=39.0)[0] == "b"
    with pytest.raises(ValueError, match="accuracy_drop must be a fraction of 0 or more"):
        recommend(s, accuracy_drop=-0.05)
    pick, rule = recommend(s2, min_sqnr_db=45)
    assert pick == "none" and rule.startswith("no configuration reaches a mean output SQNR of 45")


def test_without_labels_the_model_output_sqnr_ranks():
    """Without accuracy, a propagated replay's summary ranks by the model's output SQNR, not
    by the mean over the MAC ops (which an epilogue's unstored outputs flatter): 'mean' has the
    best mean but a poor model output; per-op summaries, which have no model row, and summaries
    whose model SQNR is all NaN rank by the mean."""
    s = _summary_frame([("mean", None, 40.0, 10, 1), ("model", None, 30.0, 100, 1),
                        ("near", None, 20.0, 50, 1)]).drop(columns="accuracy")
    s.insert(1, "model_sqnr_db", [20.0, 35.0, 34.5])
    pick, rule = recommend(s)
    assert pick == "near" and "model output SQNR (35.0 dB)" in rule
    assert recommend(s.drop(columns="model_sqnr_db"))[0] == "mean"
    assert recommend(s.assign(model_sqnr_db=math.nan))[0] == "mean"


def test_summarize_takes_the_model_output_sqnr_from_the_task_rows(summary, results):
    task = results[results["role"] == "task"].set_index("config")
    assert summary["model_sqnr_db"].to_dict() == task["sqnr_db"].to_dict()
    assert list(summary.columns[:4]) == ["accuracy", "reference_accuracy",
                                         "mean_output_sqnr_db", "model_sqnr_db"]


def test_summarize_refuses_mixed_modes(results, trace):
    per_op = replay(trace, CONFIGS[:1], "per-op")
    with pytest.raises(ValueError, match="mode"):
        summarize(pd.concat([results, per_op], ignore_index=True))


def test_recommend_when_every_configuration_failed():
    s = _summary_frame([("a", None, 40.0, 100, 1), ("b", None, 39.5, 10, 5)])
    pick, rule = recommend(s.assign(error=["x", "y"]))
    assert pick == "none" and "failed" in rule


def test_summarize_hand_made_table():
    nan = math.nan
    cols = ["config", "op", "role", "sqnr_db", "macs", "compute_pj", "memory_pj", "total_pj",
            "area_um2", "overflows", "saturations", "accuracy", "reference_accuracy"]
    rows = [
        ("B", "fc1", "output", math.inf, 100, 1, 4, 5, 9, 0, 0, nan, nan),
        ("B", "fc2", "output", math.inf, 50, 2, 4, 6, 3, 0, 0, nan, nan),
        ("B", "model", "task", nan, 150, 3, 8, 11, nan, nan, nan, 0.5, 0.9),
        ("A", "fc1", "input", 50.0, nan, nan, nan, nan, nan, nan, nan, nan, nan),
        ("A", "fc1", "output", math.inf, 100, 1, 10, 11, 5, 0, 0, nan, nan),
        ("A", "relu", "output", 40.0, nan, nan, nan, nan, nan, nan, nan, nan, nan),
        ("A", "fc2", "output", 30.0, 50, 2, 20, 22, 7, 3, 1, nan, nan),
        ("A", "fc3", "output", 20.0, 10, 0.5, 0.5, 1, 2, 1, 0, nan, nan),
        ("A", "model", "task", nan, 160, 3.5, 30.5, 34, nan, nan, nan, 0.9, 0.9),
    ]
    s = summarize(pd.DataFrame(rows, columns=cols))
    assert list(s.index) == ["B", "A"]
    assert s.loc["A", "mean_output_sqnr_db"] == 25.0        # (30 + 20) / 2, inf left out
    assert s.loc["B", "mean_output_sqnr_db"] == math.inf    # every op exact
    assert s.loc["A", "total_pj"] == 34 and s.loc["B", "total_pj"] == 11
    assert s.loc["A", "macs"] == 160 and s.loc["A", "pj_per_mac"] == 34 / 160
    assert s.loc["A", "compute_pj"] == 3.5 and s.loc["A", "memory_pj"] == 30.5
    assert s.loc["A", "area_um2_per_mac"] == 7 and s.loc["B", "area_um2_per_mac"] == 9
    assert s.loc["A", "overflows"] == 4 and s.loc["A", "saturations"] == 1
    assert s.loc["A", "accuracy"] == 0.9 and s.loc["B", "accuracy"] == 0.5
    assert recommend(s)[0] == "A"


def test_summary_of_an_overflowing_configuration_is_not_exact():
    """An fp16 accumulator that overflows to Inf is never "exact": its op's SQNR is -inf (an
    infinite error) and so is the configuration's mean; it is not recommended over one that
    kept every output finite (NumPy's float16 overflows 60000 + 60000 to inf)."""
    x = np.full((2, 2), 300.0, dtype=np.float32)
    w = np.full((3, 2), 200.0, dtype=np.float32)
    y = (x.astype(float) @ w.T.astype(float)).astype(np.float32)        # 120000 everywhere
    with np.errstate(over="ignore"):
        assert np.isinf(np.float16(60000) + np.float16(60000))
    tr = Trace([Op("fc", "linear", {"input": x, "weight": w, "output": y})])
    res = replay(tr, [Config("fp32", "fp32", name="fp32"),
                      Config("fp16", "fp16", "fp16->fp16", name="fp16")], "per-op")
    out = res[(res["role"] == "output") & (res["config"] == "fp16")].iloc[0]
    assert out["inf_count"] == 6 and out["sqnr_db"] == -math.inf
    s = summarize(res)
    assert s.loc["fp16", "mean_output_sqnr_db"] == -math.inf
    assert s.loc["fp32", "mean_output_sqnr_db"] == math.inf
    assert recommend(s)[0] == "fp32"
    s["error_metric"] = 10 ** (-s["mean_output_sqnr_db"] / 10)       # as write_report plots it
    ax = plots.pareto(s, "pj_per_mac", "error_metric", "cost", "error").axes[0]
    assert [t.get_text() for t in ax.texts] == ["fp32"]


def test_summarize_keeps_a_configuration_whose_ops_all_failed():
    """A config that cannot run its only MAC op (int8 cannot hold the NaN in the input) still
    gets its summary row, with the error, and is never recommended."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    x[0, 0] = np.nan
    w = rng.standard_normal((3, 8)).astype(np.float32)
    y = (x.astype(float) @ w.T.astype(float)).astype(np.float32)
    tr = Trace([Op("fc1", "linear", {"input": x, "weight": w, "output": y})],
               {"labels": np.array([0, 1, 2, 0])})
    res = replay(tr, [Config("fp32", "fp32", name="fp32"),
                      Config("int8", "int8", "int8->int32", name="int8")], "propagated")
    assert res[res["config"] == "int8"]["error"].notna().any()      # the replay says it failed
    s = summarize(res)
    assert list(s.index) == ["fp32", "int8"]
    assert "cannot hold NaN" in str(s.loc["int8", "error"])
    assert math.isnan(s.loc["int8", "accuracy"])
    assert recommend(s)[0] == "fp32"
    for column in ("compute_pj", "memory_pj", "total_pj", "between_pj"):   # nothing ran
        assert math.isnan(s.loc["int8", column]), column
    assert s.loc["fp32", "between_pj"] == 0       # a run of MACs only: nothing between them


@pytest.mark.filterwarnings("ignore:configuration .* quantize to zero")
def test_a_configuration_with_a_failed_op_is_marked_and_off_the_fronts(tmp_path):
    """int8 cannot hold the NaN in fc2's input: its run is incomplete, so its energy covers fc1
    only (a cheaper-looking run); the summary counts the failed op, gives no mean SQNR and
    keeps it off the Pareto fronts, though its fc1 alone would beat fp32 on cost."""
    rng = np.random.default_rng(1)
    x1, w1 = rng.standard_normal((4, 8)), rng.standard_normal((3, 8))
    x2, w2 = rng.standard_normal((4, 8)), rng.standard_normal((3, 8))
    x2[0, 0] = np.nan
    tr = Trace([Op("fc1", "linear", {"input": x1, "weight": w1, "output": x1 @ w1.T}),
                Op("fc2", "linear", {"input": x2, "weight": w2, "output": x2 @ w2.T})])
    res = replay(tr, [Config("fp32", "fp32", name="fp32"),
                      Config("int8", "int8", "int8->int32", name="int8")], "per-op")
    s = summarize(res)
    assert s.loc["int8", "failed_ops"] == 1 and s.loc["fp32", "failed_ops"] == 0
    assert math.isnan(s.loc["int8", "mean_output_sqnr_db"])
    ran = res[(res["config"] == "int8") & (res["role"] == "output") & res["error"].isna()]
    assert list(ran["op"]) == ["fc1"] and s.loc["int8", "total_pj"] == ran["total_pj"].sum()
    assert s.loc["int8", "pj_per_mac"] < s.loc["fp32", "pj_per_mac"]
    write_report(res, tmp_path)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Pareto-optimal in energy and error: fp32." in md
    assert "Pareto-optimal in MAC area and error: fp32." in md
    assert "**Recommendation: fp32**" in md


# --- write_report ---------------------------------------------------------------------------

class _Html(html.parser.HTMLParser):
    """Counts start/end tags, collects <img> sources, the text of <b>, <p> and the cells of
    every table."""

    VOID = {"img", "br", "meta", "hr", "input", "link"}

    def __init__(self):
        super().__init__()
        self.starts, self.ends, self.imgs = {}, {}, []
        self.stack, self.b_text, self.p_text, self.title = [], [], [], ""
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        self.starts[tag] = self.starts.get(tag, 0) + 1
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag == "br" and "p" in self.stack:
            self.p_text[-1] += "\n"
        if tag in self.VOID:
            return
        self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "b":
            self.b_text.append("")
        elif tag == "p":
            self.p_text.append("")

    def handle_endtag(self, tag):
        self.ends[tag] = self.ends.get(tag, 0) + 1
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if "b" in self.stack:
            self.b_text[-1] += data
        if "p" in self.stack:
            self.p_text[-1] += data
        if self.stack and self.stack[-1] == "title":
            self.title += data


def _parse(path):
    p = _Html()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    assert not p.stack, p.stack
    return p


def _check_images(p):
    assert p.imgs
    for img in p.imgs:
        src = img["src"]
        assert src.startswith("data:image/png;base64,"), src[:40]
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert raw[:8] == PNG, img.get("alt")
    return [img["alt"] for img in p.imgs]


TITLE = 'Digits <3 configs> & "friends"'


@pytest.fixture(scope="module")
def report_dir(results, tmp_path_factory):
    import matplotlib.pyplot as plt
    out = tmp_path_factory.mktemp("report")
    costs = {c.name: mm.cost(c.build_mac(), k=64) for c in CONFIGS}
    etable = error_table(["fp16", "fp8_e4m3", "mxfp4"], rows=2)
    extra, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = write_report(results, out, costs=costs, error_table=etable, presets=["int8->int32"],
                        meta={"title": TITLE, "model": "digits"}, figures={"extra_fig": extra},
                        svg=True)
    assert path == out / "index.html"
    return out


def test_report_html_parses_and_embeds_png(report_dir):
    p = _parse(report_dir / "index.html")
    assert p.starts["table"] == p.ends["table"]
    assert p.starts.get("html") == p.ends.get("html") == 1
    assert p.starts["tr"] == p.ends["tr"] and p.starts["td"] == p.ends["td"]
    alts = _check_images(p)
    assert sorted(alts) == sorted(["pareto_energy", "pareto_area", "layer_heatmap",
                                   "sqnr_vs_bits", "accumulation_error", "extra_fig"])
    assert p.title == TITLE                                      # escaped, read back intact
    # summary, per-layer, cost breakdown, error and configuration tables
    assert p.starts["table"] == 5


def test_report_summary_table_and_layer_table(report_dir, summary):
    p = _parse(report_dir / "index.html")
    summary_rows = p.tables[0][1:]
    assert [r[0] for r in summary_rows] == list(summary.index)
    header = p.tables[0][0]
    assert "total_pj" in header and "accuracy" in header
    layers = p.tables[1]
    assert [c for c in layers[0][1:]] == ["fc1", "fc2", "fc3"]
    assert [r[0] for r in layers[1:]] == list(summary.index)
    costs = p.tables[2]
    assert [r[0] for r in costs[1:]] == list(summary.index)
    configurations = p.tables[4]
    assert configurations[0] == ["config", "weights", "activations", "accumulator", "rounding"]
    assert configurations[1:] == [[c.name, c.weights, c.activations, acc, c.rounding]
                                  for c, acc in zip(CONFIGS, ("fp32", "fp32", "int32"))]


def test_report_recommendation_follows_the_rule(report_dir, summary):
    p = _parse(report_dir / "index.html")
    rec = [t for t in p.b_text if t.startswith("Recommendation: ")]
    assert len(rec) == 1
    named = rec[0][len("Recommendation: "):]
    assert named == recommend(summary)[0] == _by_rule(summary)
    # the rule by hand: within 0.01 of the best accuracy, least total energy among those
    best = summary["accuracy"].max()
    pool = summary[summary["accuracy"] >= best - 0.01]
    assert named in pool.index
    assert summary.loc[named, "total_pj"] == pool["total_pj"].min()
    md = (report_dir / "report.md").read_text(encoding="utf-8")
    assert f"**Recommendation: {named}**" in md


def test_report_pareto_lists_match_brute_force(report_dir, summary):
    p = _parse(report_dir / "index.html")
    text = "\n".join(p.p_text)
    err = (1 - summary["accuracy"]).to_numpy(float)
    for label, cost in (("energy", summary["pj_per_mac"]),
                        ("MAC area", summary["area_um2_per_mac"])):
        m = re.search(rf"Pareto-optimal in {label} and error: (.*?)\.(\n|$)", text)
        assert m, (label, text)
        want = summary.index[_brute_front(cost.to_numpy(float), err)]
        assert m.group(1).split(", ") == list(want)


def _sweep_results(n):
    """A replay table of n configurations on two MAC ops where every one trades energy for
    error (all n on the energy-error front): config i costs i + 1 pJ and has SQNR 10 + i / 2 dB."""
    rows = [{"config": f"c{i}", "op": op, "role": "output", "mode": "isolated", "macs": 10.0,
             "sqnr_db": 10 + i / 2, "compute_pj": (i + 1) / 4, "memory_pj": (i + 1) / 4,
             "total_pj": (i + 1) / 2, "area_um2": 5.0, "overflows": 0, "saturations": 0}
            for i in range(n) for op in ("fc1", "fc2")]
    return pd.DataFrame(rows)


def _heatmap_rows(monkeypatch, results, tmp_path):
    """write_report's heatmap: its row labels and title, and the Markdown report's text."""
    made, real = [], plots.layer_heatmap
    monkeypatch.setattr(plots, "layer_heatmap", lambda *a, **k: made.append(real(*a, **k)) or
                        made[-1])
    write_report(results, tmp_path)
    ax = made[0].axes[0]
    return ([t.get_text() for t in ax.get_yticklabels()], ax.get_title(),
            (tmp_path / "report.md").read_text(encoding="utf-8"))


def test_layer_heatmap_shows_every_configuration_or_those_named():
    res = _sweep_results(5)
    res = pd.concat([res, pd.DataFrame([{"config": "c2", "op": "relu", "role": "output",
                                         "sqnr_db": 99.0}])], ignore_index=True)
    ax = plots.layer_heatmap(res).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"c{i}" for i in range(5)]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fc1", "fc2"]   # relu: no MACs
    assert ax.get_title() == "Per-layer output SQNR"
    ax = plots.layer_heatmap(res, ["c3", "c1"]).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["c1", "c3"]     # results' order
    assert ax.get_title() == "Per-layer output SQNR (2 of 5 configurations)"
    assert ax.images[0].get_array().tolist() == [[10.5, 10.5], [11.5, 11.5]]


def test_report_heatmap_of_a_large_sweep_shows_the_front_and_the_pick(monkeypatch, tmp_path):
    """Past MAX_HEATMAP_ROWS configurations the heatmap shows the recommendation and the
    energy-error front, every k-th in energy order, and the report says so; up to that, all."""
    n = plots.MAX_HEATMAP_ROWS
    labels, title, md = _heatmap_rows(monkeypatch, _sweep_results(n), tmp_path / "a")
    assert labels == [f"c{i}" for i in range(n)] and "of" not in title
    assert "the heatmap shows only" not in md
    n = 100
    results = _sweep_results(n)
    labels, title, md = _heatmap_rows(monkeypatch, results, tmp_path / "b")
    # by the report's rule, by hand: within 1 dB of the best SQNR (59.5 dB: c97-c99), the least
    # energy; every configuration is on the front, which holds 100 > 39 rows: every 3rd shown
    cost = np.arange(1.0, n + 1) / 10
    assert _brute_front(cost, 10 ** (-(10 + np.arange(n) / 2) / 10)).all()
    want = sorted({97, *range(0, n, 3)})
    assert labels == [f"c{i}" for i in want]
    assert title == f"Per-layer output SQNR ({len(want)} of {n} configurations)"
    assert f"With {n} configurations, the heatmap shows only the recommendation" in md
    assert "**Recommendation: c97**" in md


def test_markdown_tables_escape_the_bar_of_default_names():
    from reports.report import _md_table
    df = pd.DataFrame({"mac": ["fp16|fp32", "plain"], "x": [1.5, 2.0]},
                      index=pd.Index(["fp8|aligned", "int8"], name="config"))
    lines = _md_table(df).splitlines()
    assert len({len(re.findall(r"(?<!\\)\|", line)) for line in lines}) == 1, lines
    assert "fp8\\|aligned" in lines[2] and "fp16\\|fp32" in lines[2]


def test_report_markdown_figures_csv_svg(report_dir, results):
    md = (report_dir / "report.md").read_text(encoding="utf-8")
    assert md.startswith(f"# {TITLE}")
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(refs) == sorted(f"figures/{n}.png" for n in [
        "pareto_energy", "pareto_area", "layer_heatmap", "sqnr_vs_bits", "accumulation_error",
        "extra_fig"])
    for ref in refs:
        _png_file(report_dir / ref)
        svg = (report_dir / ref).with_suffix(".svg")
        assert svg.is_file() and b"<svg" in svg.read_bytes()[:2000], svg
    back = pd.read_csv(report_dir / "results.csv")
    assert len(back) == len(results)
    assert list(back.columns) == list(results.columns)
    assert list(back["config"]) == list(results["config"])
    assert "digits" in md                                            # meta goes to the notes
    fp32_row = next(line for line in md.splitlines() if line.startswith("| fp32 "))
    assert "| exact " in fp32_row and "inf" not in fp32_row         # as in the HTML


def test_report_without_svg_writes_no_svg(results, tmp_path):
    """Also: the figures an earlier report wrote into the folder go; files it did not write
    stay."""
    sub = results[results["config"].isin(["fp32", "fp8 e4m3"])]
    write_report(sub, tmp_path, presets=["int8->int32"], svg=True)
    assert (tmp_path / "figures" / "accumulation_error.svg").is_file()
    for name in ("mine.png", "mine.svg"):
        (tmp_path / "figures" / name).write_text("the user's own")
    write_report(sub, tmp_path)
    assert sorted(f.name for f in (tmp_path / "figures").iterdir()) == [
        ".numsim-figures", "layer_heatmap.png", "mine.png", "mine.svg", "pareto_area.png",
        "pareto_energy.png"]
    p = _parse(tmp_path / "index.html")
    assert p.starts["table"] == p.ends["table"] == 3      # no costs, no error table
    assert sorted(_check_images(p)) == ["layer_heatmap", "pareto_area", "pareto_energy"]
    assert p.title == "numsim hardware-design report"


def test_report_on_per_op_table_uses_sqnr_rule(trace, tmp_path):
    res = replay(trace, CONFIGS[1:], "per-op")
    assert not (res["role"] == "task").any()
    s = summarize(res)
    assert "accuracy" not in s
    pick, rule = recommend(s)
    assert pick == _by_rule(s) and "dB" in rule
    write_report(res, tmp_path)
    p = _parse(tmp_path / "index.html")
    rec = [t for t in p.b_text if t.startswith("Recommendation: ")]
    assert rec == [f"Recommendation: {pick}"]
    _check_images(p)


def test_error_row_counts_an_overflow_to_infinity_as_infinite_error():
    """70000 is finite but beyond binary16 (it rounds to +inf under IEEE overflow): the error
    is infinite, so MSE is inf and SQNR -inf, not the finite rest's numbers."""
    row = error_row(np.array([1.0, 2.0, 70000.0]), "fp16")
    assert row["mse"] == math.inf and row["sqnr_db"] == -math.inf
    assert row["max_abs_error"] == math.inf and row["nan_share"] == 0
    # a NaN in an MX block (OCP MX: the block's scale is NaN) turns its finite neighbours NaN:
    # errors on finite inputs too, as in simulator.metrics
    x = np.arange(1.0, 65.0)
    x[0] = np.nan
    row = error_row(x, "mxfp8_e4m3")
    assert row["nan_share"] == 0.5 and row["mse"] == math.inf and row["sqnr_db"] == -math.inf


def test_the_configurations_table_shows_storage_where_a_configuration_has_one(tmp_path):
    cfgs = [Config("fp16", "fp16", "fp16->fp32"),
            Config("fp16", "fp16", "fp16->fp32", storage="bf16")]
    res = replay(digits.trace(), cfgs, "propagated")
    p = _parse(write_report(res, tmp_path, meta={"title": "s"}))
    table = p.tables[-1]
    assert table[0] == ["config", "weights", "activations", "accumulator", "rounding",
                        "storage"]
    assert [r[0] for r in table[1:]] == [c.name for c in cfgs]
    assert table[2][-1] == "bf16" and table[1][-1] == ""        # none: left blank


def test_the_configurations_table_names_the_accumulator_as_built(tmp_path):
    # "fp8 e5m2" runs on the fp8_e4m3->fp32 preset with its operand formats replaced: the table
    # names what accumulates (an fp32 register; the aligned adder with its promotion interval)
    h100 = {"accumulator": "aligned", "n": 32, "p": 14, "format": "fp32", "promote_every": 128}
    cfgs = [Config("fp8_e5m2", "fp8_e5m2", "fp8_e4m3->fp32", name="e5m2"),
            Config("fp8_e5m2", "fp8_e5m2", h100, name="e5m2 h100")]
    res = replay(digits.trace(), cfgs, "per-op")
    table = _parse(write_report(res, tmp_path / "new", meta={"title": "a"})).tables[-1]
    assert [r[3] for r in table] == ["accumulator", "fp32", "aligned32x14t_fp32+promote128"]
    old = res.drop(columns=["accumulator"])       # a table written before the column existed
    table = _parse(write_report(old, tmp_path / "old", meta={"title": "a"})).tables[-1]
    assert [r[3] for r in table][:2] == ["mac", "fp8_e4m3->fp32"]


def test_the_method_notes_say_what_traffic_costs_and_what_storage_means(tmp_path):
    cfgs = [Config("fp16", "fp16", "fp16->fp32"),
            Config("fp16", "fp16", "fp16->fp32", storage="bf16")]
    md = (write_report(replay(digits.trace(), cfgs, "propagated", level="sram", tech=7),
                       tmp_path, meta={"title": "m"}).parent / "report.md").read_text()
    e = mm.memory.pj_per_bit("sram", tech=7)
    assert f"memory level sram at 7 nm: {e:.4g} pJ per bit moved (256 KB)" in md
    assert "without a storage format keep the values between the MACs in fp32" in md


def test_the_configurations_table_shows_fusion_where_a_configuration_fuses(tmp_path):
    cfgs = [Config("fp16", "fp16", "fp16->fp32"),
            Config("fp16", "fp16", "fp16->fp32", fusion="epilogue")]
    res = replay(digits.trace(), cfgs, "propagated")
    table = _parse(write_report(res, tmp_path, meta={"title": "f"})).tables[-1]
    assert table[0] == ["config", "weights", "activations", "accumulator", "rounding",
                        "fusion"]
    assert [r[-1] for r in table[1:]] == ["none", "epilogue"]
    s = summarize(res)                 # the relus' inputs move no more: less energy
    assert s.loc[cfgs[1].name, "total_pj"] < s.loc[cfgs[0].name, "total_pj"]
