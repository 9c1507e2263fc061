"""Error metrics (simulator.metrics) against independent formulas.

Expected values come from hand-derived tiny cases, from numpy formulas written out here and
from scipy (``scipy.spatial.distance.cosine``, ``scipy.stats.entropy`` on
``scipy.special.softmax``), never from the module's own output.
"""
import math

import numpy as np
import pytest
from scipy.spatial.distance import cosine as scipy_cosine_distance
from scipy.special import softmax as scipy_softmax
from scipy.stats import entropy as scipy_entropy

from simulator import metrics as M

PAIR_FUNCS = [M.mse, M.rmse, M.sqnr_db, M.max_abs_error, M.mean_rel_error, M.max_rel_error,
              M.cosine, M.kl_softmax, M.nan_count, M.inf_count, M.underflow_count]


# --- hand-made cases -----------------------------------------------------------------------

def test_known_error_vector():
    # x = [1, 2, 3, 4], y = [1, 2, 3, 6]: e = [0, 0, 0, 2]
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([1.0, 2.0, 3.0, 6.0])
    assert M.mse(x, y) == pytest.approx(1.0, rel=1e-15)             # 4 / 4
    assert M.rmse(x, y) == pytest.approx(1.0, rel=1e-15)
    assert M.max_abs_error(x, y) == 2.0
    # signal 1 + 4 + 9 + 16 = 30, noise 4
    assert M.sqnr_db(x, y) == pytest.approx(10 * math.log10(7.5), rel=1e-13)
    # relative errors 0, 0, 0, 0.5
    assert M.mean_rel_error(x, y) == pytest.approx(0.125, rel=1e-15)
    assert M.max_rel_error(x, y) == pytest.approx(0.5, rel=1e-15)
    # x.y = 1 + 4 + 9 + 24 = 38, |x|^2 = 30, |y|^2 = 50
    assert M.cosine(x, y) == pytest.approx(38 / math.sqrt(1500), rel=1e-14)
    assert M.nan_count(x, y) == M.inf_count(x, y) == M.underflow_count(x, y) == 0


def test_mse_sign_and_2d_input():
    x = np.array([[0.0, 1.0], [2.0, -3.0]])
    y = np.array([[0.5, 1.0], [2.0, -4.0]])       # e = [0.5, 0, 0, -1]
    assert M.mse(x, y) == pytest.approx((0.25 + 1.0) / 4, rel=1e-15)
    assert M.max_abs_error(x, y) == 1.0
    # relative error over x != 0 only: 0, 0, 1/3
    assert M.mean_rel_error(x, y) == pytest.approx((1 / 3) / 3, rel=1e-14)
    assert M.max_rel_error(x, y) == pytest.approx(1 / 3, rel=1e-14)


def test_zero_error_gives_infinite_sqnr():
    x = np.array([0.5, -1.25, 3.0])
    assert M.sqnr_db(x, x.copy()) == math.inf
    assert M.mse(x, x.copy()) == 0.0
    assert M.max_abs_error(x, x.copy()) == 0.0
    assert M.cosine(x, x.copy()) == pytest.approx(1.0, abs=1e-15)
    assert M.kl_softmax(x, x.copy()) == pytest.approx(0.0, abs=1e-15)


def test_zero_signal_nonzero_noise_gives_minus_inf_sqnr():
    assert M.sqnr_db(np.zeros(3), np.array([0.0, 1e-3, 0.0])) == -math.inf


def test_cosine_zero_vectors():
    z = np.zeros(4)
    v = np.array([1.0, 0.0, -2.0, 0.5])
    assert M.cosine(z, z) == 1.0
    assert M.cosine(z, v) == 0.0
    assert M.cosine(v, z) == 0.0
    assert M.cosine(v, -v) == pytest.approx(-1.0, abs=1e-15)


def test_relative_errors_skip_zero_reference():
    x = np.array([0.0, 0.0, 2.0])
    y = np.array([5.0, -1.0, 2.5])
    assert M.mean_rel_error(x, y) == pytest.approx(0.25, rel=1e-15)
    assert M.max_rel_error(x, y) == pytest.approx(0.25, rel=1e-15)
    # all-zero reference: no element to take a relative error over
    assert math.isnan(M.mean_rel_error(np.zeros(2), np.ones(2)))
    assert math.isnan(M.max_rel_error(np.zeros(2), np.ones(2)))


def test_counts_hand_made():
    inf, nan = np.inf, np.nan
    x = np.array([1.0, 2.0, nan, 3.0, inf, 4.0, 0.0, 5.0, -7.0, 1.0])
    y = np.array([nan, inf, nan, 0.0, nan, -inf, 0.0, -0.0, 1.0, 2.0])
    # NaN in y where x is not NaN: positions 0 and 4 (x = inf there) -> 2
    assert M.nan_count(x, y) == 2
    # y infinite where x finite: 1 and 5 -> 2
    assert M.inf_count(x, y) == 2
    # y == 0 (either sign) where x is finite and nonzero: 3 and 7 -> 2
    assert M.underflow_count(x, y) == 2
    # out of x's finite non-zero elements: 1, 2, 3, 4, 5, -7, 1
    assert M.nonzero_count(x) == 7


def test_saturation_count_hand_made():
    fmax = 448.0
    x = np.array([500.0, -1000.0, 448.0, 10.0, 449.0, np.inf, 600.0])
    y = np.array([448.0, -448.0, 448.0, 10.0, 447.0, 448.0, np.nan])
    # |y| == 448 and |x| > 448: 0, 1 and 5 (x = inf is beyond the range too)
    assert M.saturation_count(x, y, fmax) == 3
    assert M.saturation_count(x, y, None) == 0


def test_kl_softmax_hand_made():
    # x = [0, 0] -> p = [1/2, 1/2]; y = [ln 3, 0] -> q = [3/4, 1/4]
    x = np.array([0.0, 0.0])
    y = np.array([math.log(3.0), 0.0])
    want = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert M.kl_softmax(x, y) == pytest.approx(want, rel=1e-13)
    # softmax ignores a constant added to a row
    assert M.kl_softmax(x + 100.0, y - 3.0) == pytest.approx(want, rel=1e-12)


# --- random arrays against numpy / scipy -----------------------------------------------------

def _ref_finite(x, y):
    keep = np.isfinite(x)
    return x[keep], y[keep]


@pytest.fixture(scope="module")
def noisy():
    """A reference with NaN and -inf in it and a test tensor finite wherever the reference is
    (-inf where the reference is, at 300)."""
    rng = np.random.default_rng(1234)
    x = rng.standard_normal(2000) * 3.0
    y = x + rng.standard_normal(2000) * 0.01
    x[[5, 17]] = np.nan
    x[[300]] = y[[300]] = -np.inf
    return x, y


def _poisoned(x, y):
    """noisy with overflow (+-inf) and NaN in the test tensor where the reference is finite."""
    y = y.copy()
    y[[40, 41]] = np.inf
    y[[99]] = -np.inf
    y[[7]] = np.nan
    return x, y


def test_random_against_numpy_formulas(noisy):
    x, y = noisy
    xf, yf = _ref_finite(x, y)
    assert xf.size == 2000 - 3 and np.isfinite(yf).all()
    e = yf - xf
    mse = np.sum(e * e) / e.size
    assert M.mse(x, y) == pytest.approx(mse, rel=1e-12)
    assert M.rmse(x, y) == pytest.approx(np.sqrt(mse), rel=1e-12)
    assert M.sqnr_db(x, y) == pytest.approx(
        10 * np.log10(np.sum(xf ** 2) / np.sum(e ** 2)), rel=1e-12)
    assert M.max_abs_error(x, y) == np.max(np.abs(e))
    nz = xf != 0
    rel = np.abs(e[nz]) / np.abs(xf[nz])
    assert M.mean_rel_error(x, y) == pytest.approx(np.mean(rel), rel=1e-12)
    assert M.max_rel_error(x, y) == pytest.approx(np.max(rel), rel=1e-12)


def test_random_cosine_against_scipy(noisy):
    x, y = noisy
    xf, yf = _ref_finite(x, y)
    assert M.cosine(x, y) == pytest.approx(1.0 - scipy_cosine_distance(xf, yf), abs=1e-12)
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal(300), rng.standard_normal(300)
    assert M.cosine(a, b) == pytest.approx(1.0 - scipy_cosine_distance(a, b), abs=1e-12)


def test_random_counts(noisy):
    x, y = _poisoned(*noisy)
    assert M.nan_count(x, y) == 1       # y[7]; y is NaN nowhere else
    assert M.inf_count(x, y) == 3       # y[40], y[41], y[99]
    assert M.underflow_count(x, y) == 0


def test_nonfinite_reference_elements_are_not_compared(noisy):
    """Metrics with NaN/Inf in the reference equal the metrics where the reference is finite."""
    x, y = noisy
    xf, yf = _ref_finite(x, y)
    for f in (M.mse, M.rmse, M.sqnr_db, M.max_abs_error, M.mean_rel_error, M.max_rel_error,
              M.cosine):
        got, want = f(x, y), f(xf, yf)
        assert math.isfinite(got), f.__name__
        assert got == want, f.__name__


def test_overflow_or_nan_in_the_result_is_an_infinite_error(noisy):
    """An Inf or a NaN where the reference is finite is never exact: the error is infinite
    (numpy's own sum of squares of y - x gives inf or NaN there, not a finite number)."""
    for x, y in (_poisoned(*noisy), (np.array([1.0, 2.0, 70000.0]), np.array([1.0, 2.0, np.inf])),
                 (np.array([1.0, 0.0]), np.array([1.0, np.nan]))):
        with np.errstate(invalid="ignore"):
            assert not np.isfinite(np.sum((y - x)[np.isfinite(x)] ** 2))
        assert M.mse(x, y) == M.rmse(x, y) == M.max_abs_error(x, y) == math.inf
        assert M.sqnr_db(x, y) == -math.inf
        assert math.isnan(M.cosine(x, y))
    x, y = _poisoned(*noisy)
    assert M.mean_rel_error(x, y) == M.max_rel_error(x, y) == math.inf
    # at a zero of the reference the relative error is not defined: left out as before
    assert M.max_rel_error(np.array([1.0, 0.0]), np.array([1.5, np.nan])) == 0.5


def test_rmse_and_cosine_at_extreme_scales():
    """rmse is computed scaled: neither the squares' underflow nor their overflow shows; the
    cosine of a vector with itself (or its negation) stays within [-1, 1]."""
    assert M.rmse([1e-170], [2e-170]) == pytest.approx(1e-170, rel=1e-15)
    assert M.rmse([1e200, 0.0], [2e200, 0.0]) == pytest.approx(1e200 / math.sqrt(2), rel=1e-15)
    rng = np.random.default_rng(11)
    for _ in range(200):
        v = rng.standard_normal(rng.integers(1, 50)) * 10.0 ** rng.uniform(-5, 5)
        assert -1.0 <= M.cosine(v, -v) <= M.cosine(v, v) <= 1.0


def test_complex_input_is_refused():
    with pytest.raises(TypeError, match="complex"):
        M.mse(np.array([1 + 5j]), np.array([1.0]))
    with pytest.raises(TypeError, match="complex"):
        M.error_metrics(np.array([1.0]), np.array([1 + 0j]))


def test_kl_softmax_against_scipy():
    rng = np.random.default_rng(99)
    x = rng.standard_normal((4, 3, 7)) * 4.0
    y = x + rng.standard_normal(x.shape) * 0.3
    x[0, 1, 0] = 800.0                  # large logits: needs a stable softmax
    y[0, 1, 0] = 801.5
    x2, y2 = x.reshape(-1, 7), y.reshape(-1, 7)
    p, q = scipy_softmax(x2, axis=1), scipy_softmax(y2, axis=1)
    want = np.mean([scipy_entropy(p[i], q[i]) for i in range(len(p))])
    assert M.kl_softmax(x, y) == pytest.approx(want, rel=1e-9)


def test_kl_softmax_rows_with_infinities():
    """Reference rows with NaN are not compared; -inf logits are masked positions (zero
    probability; scipy's softmax and entropy agree); q = 0 where p > 0, and a NaN or +inf in y,
    make the divergence infinite."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 4))
    y = x + rng.standard_normal((5, 4)) * 0.2
    x[1, 2] = np.nan
    x[2, 1] = y[2, 1] = -np.inf                     # masked in both
    keep = [0, 2, 3, 4]
    p, q = scipy_softmax(x[keep], axis=1), scipy_softmax(y[keep], axis=1)
    want = np.mean([scipy_entropy(p[i], q[i]) for i in range(4)])
    assert np.isfinite(want)
    assert M.kl_softmax(x, y) == pytest.approx(want, rel=1e-10)
    x[0, 3] = -np.inf                               # masked in the reference only: still finite
    p, q = scipy_softmax(x[keep], axis=1), scipy_softmax(y[keep], axis=1)
    want = np.mean([scipy_entropy(p[i], q[i]) for i in range(4)])
    assert M.kl_softmax(x, y) == pytest.approx(want, rel=1e-10)
    for bad in (-np.inf, np.inf, np.nan):           # q_i = 0 < p_i; y not a distribution
        z = y.copy()
        z[4, 0] = bad
        assert M.kl_softmax(x, z) == math.inf, bad
    assert scipy_entropy([0.5, 0.5], [1.0, 0.0]) == math.inf
    # every reference row poisoned -> NaN
    x[:, 0] = np.nan
    assert math.isnan(M.kl_softmax(x, y))
    assert math.isnan(M.kl_softmax(np.full((2, 3), -np.inf), y[:2, :3]))


def test_error_metrics_record_matches_the_functions(noisy):
    x, y = noisy
    rec = M.error_metrics(x, y, fmt_max=2.0)
    xf, yf = _ref_finite(x, y)
    e = yf - xf
    assert set(rec) == {"mse", "rmse", "sqnr_db", "max_abs_error", "mean_rel_error",
                        "max_rel_error", "cosine", "nan_count", "inf_count",
                        "underflow_count", "nonzero_count", "saturation_count"}
    assert rec["mse"] == pytest.approx(np.mean(e * e), rel=1e-12)
    assert rec["max_abs_error"] == np.max(np.abs(e))
    assert rec["nan_count"] == rec["inf_count"] == 0
    poisoned = M.error_metrics(*_poisoned(x, y))
    assert poisoned["nan_count"] == 1 and poisoned["inf_count"] == 3
    assert poisoned["mse"] == math.inf
    # no element of y sits exactly at 2.0 -> nothing saturated
    assert rec["saturation_count"] == 0
    yy = np.where(np.abs(x) > 2.0, np.sign(x) * 2.0, x)
    want = int(np.count_nonzero(np.isfinite(x) & (np.abs(x) > 2.0)))
    want += int(np.count_nonzero(np.isinf(x) & ~np.isnan(x)))
    assert M.error_metrics(x, yy, fmt_max=2.0)["saturation_count"] == want


# --- edge cases --------------------------------------------------------------------------

@pytest.mark.parametrize("f", PAIR_FUNCS, ids=lambda f: f.__name__)
def test_shape_mismatch_raises(f):
    with pytest.raises(ValueError, match="shape"):
        f(np.zeros((2, 3)), np.zeros((3, 2)))


def test_shape_mismatch_raises_error_metrics_and_saturation():
    with pytest.raises(ValueError, match="shape"):
        M.error_metrics(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        M.saturation_count(np.zeros(3), np.zeros(4), 1.0)


def test_saturation_count_without_fmt_max_still_checks_shapes():
    with pytest.raises(ValueError, match="shape"):
        M.saturation_count(np.zeros(3), np.zeros(4), None)


@pytest.mark.parametrize("f", [M.mse, M.rmse, M.sqnr_db, M.max_abs_error, M.mean_rel_error,
                               M.max_rel_error, M.cosine, M.kl_softmax],
                         ids=lambda f: f.__name__)
def test_empty_inputs_give_nan(f):
    assert math.isnan(f(np.array([]), np.array([])))


@pytest.mark.parametrize("f", [M.mse, M.rmse, M.sqnr_db, M.max_abs_error, M.mean_rel_error,
                               M.max_rel_error, M.cosine], ids=lambda f: f.__name__)
def test_nonfinite_reference_gives_nan(f):
    x = np.array([np.nan, -np.inf, np.inf])
    y = np.array([1.0, np.nan, 2.0])
    assert math.isnan(f(x, y))


def test_empty_counts_are_zero():
    e = np.array([])
    assert M.nan_count(e, e) == M.inf_count(e, e) == M.underflow_count(e, e) == 0
    assert M.saturation_count(e, e, 1.0) == 0


def test_all_nan_test_tensor_counts_every_element():
    x = np.arange(1.0, 7.0).reshape(2, 3)
    y = np.full_like(x, np.nan)
    rec = M.error_metrics(x, y)
    assert rec["nan_count"] == 6
    assert rec["mse"] == math.inf and rec["sqnr_db"] == -math.inf


@pytest.mark.parametrize("fmt, dtype", [("fp16", np.float16), ("fp32", np.float32)])
def test_max_ulp_error_against_numpy_spacing(fmt, dtype):
    """ulps of the format at the reference: NumPy's spacing of the same float (references drawn
    among the format's own finite values, zero and subnormals included, the largest left out:
    spacing goes past it)."""
    rng = np.random.default_rng(17)
    bits = rng.integers(0, 2 ** (8 * np.dtype(dtype).itemsize), 20000, dtype=np.uint64)
    x = bits.astype(np.uint16 if dtype == np.float16 else np.uint32).view(dtype)
    x = x[np.isfinite(x) & (np.abs(x) < np.finfo(dtype).max)]
    x = np.concatenate([x, np.zeros(1, dtype), np.array([np.finfo(dtype).smallest_subnormal])])
    x64 = x.astype(np.float64)
    y = x64 + rng.standard_normal(x.size) * np.abs(x64) * 1e-2
    want = np.max(np.abs(y - x64) / np.spacing(np.abs(x)).astype(np.float64))
    assert M.max_ulp_error(x64, y, fmt) == want
    assert M.max_ulp_error(x64, x64, fmt) == 0.0


def test_max_ulp_error_where_it_applies():
    assert M.max_ulp_error([3.0, -7.0], [3.0, -9.5], "int8") == 2.5      # integers: ulp 1
    assert M.max_ulp_error([1.0], [1.0 + 2 ** -10], "bf16") == 0.125     # bf16's ulp at 1: 2**-7
    assert M.max_ulp_error([1.0, 2.0], [1.0, np.inf], "fp16") == math.inf
    for fmt in ("posit16_1", "mxfp8_e4m3", "nf4"):
        assert math.isnan(M.max_ulp_error([1.0], [1.5], fmt))
    assert math.isnan(M.max_ulp_error([np.nan], [1.0], "fp16"))


def test_kl_softmax_is_never_negative():
    """KL divergence is >= 0; summed in floating point, near-equal logits can give -1e-17."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 7))
    got = [M.kl_softmax(x[i:i + 1], x[i:i + 1] + rng.normal(size=(1, 7)) * 1e-15)
           for i in range(50)]
    assert min(got) >= 0.0
