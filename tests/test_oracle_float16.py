"""numsim's ``fp16`` checked bit for bit against NumPy's float16.

NumPy's float64 -> float16 and float32 -> float16 casts round correctly (to nearest,
ties to even, straight from the source bits), and overflow to Inf -- our ``ieee``
default. So float64 inputs can probe one float64 ulp either side of every tie.
"""

import numpy as np
import pytest

import formats

N_RANDOM = 1 << 20  # >= 10^6 each for random float64 values and random float32 bit patterns

CODES = np.arange(1 << 16, dtype=np.uint16)
with np.errstate(all="ignore"):
    ORACLE_VALUES = CODES.view(np.float16).astype(np.float64)
FINITE = np.unique(ORACLE_VALUES[np.isfinite(ORACLE_VALUES)])  # sorted, +-0 collapsed


@pytest.fixture(scope="module")
def fp16():
    return formats.get("fp16")


def _oracle(x):
    """(codes, values) of NumPy's cast of ``x`` (float32 or float64) to float16."""
    with np.errstate(all="ignore"):
        h = x.astype(np.float16)
    return h.view(np.uint16), h.astype(np.float64)


def _check_encode(fmt, x, what, assert_same, **kw):
    ours = fmt.encode(x, **kw)
    assert ours.dtype == np.uint16
    assert ours.shape == x.shape
    theirs, their_values = _oracle(x)
    assert_same(
        f"fp16 encode {what}",
        x,
        ours,
        theirs,
        nan_ours=np.isnan(fmt.decode(ours)),
        nan_theirs=np.isnan(their_values),
    )


def _grid():
    """Every finite value, every midpoint between neighbours (with one step past +-max, so
    +-65520 -- the overflow thresholds -- are midpoints), and +-1 float64 ulp of each."""
    step = FINITE[-1] - FINITE[-2]
    pts = np.concatenate([[-(FINITE[-1] + step)], FINITE, [FINITE[-1] + step]])
    mids = (pts[:-1] + pts[1:]) / 2
    base = np.concatenate([FINITE, mids, [0.0, -0.0]])
    return np.concatenate([base, np.nextafter(base, np.inf), np.nextafter(base, -np.inf)])


def _boundaries():
    s = 2.0**-24  # min subnormal
    n = 2.0**-14  # min normal
    m = 65504.0  # max
    pts = [
        0.0, m, m + 16, 65519.0, 65520.0, 65535.0, 65536.0, 1e5, 1e300, np.finfo(np.float64).max,
        s, s / 2, s / 4, 3 * s / 2, 5 * s / 2, 3 * s / 4, 5e-324, 2.0**-1022,
        n, n - s, n - s / 2, n + s, n + s / 2, n + 3 * s / 2,
        1.0, 1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 - 2.0**-12, 2049.0, 2051.0, 4095.0, 4097.0,
    ]
    pts = np.array(pts, np.float64)
    with np.errstate(over="ignore"):  # nextafter(float64 max, inf)
        pts = np.concatenate([pts, np.nextafter(pts, np.inf), np.nextafter(pts, -np.inf)])
    pts = np.concatenate([pts, -pts, [np.inf, -np.inf, np.nan, -np.nan]])
    nan_payload = np.array([0x7FF0000000000001, 0xFFF8000000000123], np.uint64).view(np.float64)
    return np.concatenate([pts, nan_payload])


def _random_float64():
    """Random sign and 52-bit mantissa; exponents mostly around float16's range
    (2^-30 .. 2^20), one in eight anywhere in float64 (subnormals included)."""
    rng = np.random.default_rng(16_64)
    sign = rng.integers(0, 2, size=N_RANDOM, dtype=np.uint64) << np.uint64(63)
    near = rng.integers(1023 - 30, 1023 + 20, size=N_RANDOM, endpoint=True)
    wide = rng.integers(0, 2046, size=N_RANDOM, endpoint=True)
    exp = np.where(rng.integers(0, 8, size=N_RANDOM) == 0, wide, near).astype(np.uint64) << np.uint64(52)
    mant = rng.integers(0, 1 << 52, size=N_RANDOM, dtype=np.uint64)
    return (sign | exp | mant).view(np.float64)


def _random_float32_bits():
    rng = np.random.default_rng(16_32)
    return rng.integers(0, 2**32 - 1, size=N_RANDOM, dtype=np.uint32, endpoint=True).view(np.float32)


# --------------------------------------------------------------------------- tests


def test_decode_all_codes(fp16, assert_same):
    ours = fp16.decode(CODES)
    assert ours.dtype == np.float64
    assert_same("fp16 decode", CODES, ours, ORACLE_VALUES)


def test_encode_grid(fp16, assert_same):
    _check_encode(fp16, _grid(), "values/midpoints/+-ulp", assert_same)


def test_encode_boundaries(fp16, assert_same):
    _check_encode(fp16, _boundaries(), "boundaries", assert_same)


def test_encode_boundaries_float32(fp16, assert_same):
    x = _boundaries()
    with np.errstate(all="ignore"):
        x32 = x.astype(np.float32)
    _check_encode(fp16, x32, "boundaries float32", assert_same)


def test_encode_random_float64(fp16, assert_same):
    _check_encode(fp16, _random_float64(), "random float64", assert_same)


def test_encode_random_float32_bits(fp16, assert_same):
    _check_encode(fp16, _random_float32_bits(), "random float32 bits", assert_same)


def test_encode_float16_input(fp16, assert_same):
    # a float16 array in is read exactly, so every code maps back to itself (NaN to NaN)
    x = CODES.view(np.float16)
    ours = fp16.encode(x)
    nan = np.isnan(ORACLE_VALUES)
    assert_same("fp16 encode float16 input", x, ours, CODES, nan_ours=np.isnan(fp16.decode(ours)), nan_theirs=nan)


def test_encode_default_overflow_is_ieee(fp16, assert_same):
    assert fp16.default_overflow == "ieee"
    x = np.array([65520.0, -65520.0, 1e9, -1e9, np.inf, -np.inf])
    theirs, _ = _oracle(x)
    assert_same("fp16 encode overflow=ieee", x, fp16.encode(x, overflow="ieee"), theirs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantize(fp16, dtype, assert_same):
    with np.errstate(all="ignore"):
        x = np.concatenate([_grid(), _boundaries(), _random_float64()[: 1 << 16]]).astype(dtype)
        theirs = x.astype(np.float16).astype(dtype)
    ours = fp16.quantize(x)
    assert ours.dtype == dtype, "every float16 value is exact in float32 and float64"
    assert_same(f"fp16 quantize {np.dtype(dtype).name}", x, ours, theirs)


def test_properties(fp16):
    fi = np.finfo(np.float16)
    assert fp16.bits == 16
    assert fp16.max == float(fi.max)
    assert fp16.min_normal == float(fi.smallest_normal)
    assert fp16.min_subnormal == float(fi.smallest_subnormal)
    assert fp16.epsilon == float(fi.eps)
    assert fp16.has_inf and fp16.has_nan and fp16.signed


def test_value_set(fp16):
    # n_finite read as the number of distinct finite values (= len(values())).
    got = np.asarray(fp16.values())
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, FINITE)
    assert fp16.n_finite == FINITE.size == 63487
