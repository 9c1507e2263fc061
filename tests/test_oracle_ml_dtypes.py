"""numsim's scalar formats checked bit for bit against ml_dtypes.

The oracle is ml_dtypes' own casts and bit layouts, never our output. Conventions
matched (see the formats contract):

* fp8 / bf16: ml_dtypes rounds to nearest even, overflow per IEEE (Inf, or NaN where
  the format has no Inf) -- our defaults.
* fp6 / fp4 (``finite``): nearest even, saturating -- our default; ml_dtypes turns NaN
  into -0 where we raise ValueError, so NaN inputs are tested separately.
* e8m0: ml_dtypes rounds ties away -> ``rounding="nearest_away"``.
* int4/uint4/int2/uint2: C-style cast -> ``rounding="toward_zero", overflow="wrap"``;
  inputs stay within +-2^31 so the C cast is defined.

Inputs to ml_dtypes are always float32: its float64 -> bf16/fp8 casts round twice
(through float32), e.g. 1 + 2**-8 + 2**-40 -> bfloat16 gives 1.0.

float8_e8m0fnu and float32 subnormal inputs: an older ml_dtypes sent every x in
(2^-127, 1.5*2^-127) to 2^-126, although 2^-127 is nearer; 0.7.0 rounds them correctly, so they
are compared like every other input, and the window has its own test.
"""

import functools
import zlib
from dataclasses import dataclass, field

import numpy as np
import pytest

import ml_dtypes

import formats  # noqa: E402

N_RANDOM_BITS = 1 << 20  # random float32 bit patterns per format (>= 10^6 after filtering)
N_RANDOM_RANGE = 1 << 18  # random float32 values spread over the format's exponent range
N_QUANTIZE_RANDOM = 1 << 18

E8M0_WINDOW_LO = 2.0**-127      # float32 subnormals that an older ml_dtypes rounded wrongly
E8M0_WINDOW_HI = 1.5 * 2.0**-127


@dataclass(frozen=True)
class Spec:
    name: str  # our registry name
    oracle: str  # ml_dtypes type name
    bits: int
    family: str  # "float" (has NaN), "finite", "e8m0", "int"
    kw: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def t(self):
        return getattr(ml_dtypes, self.oracle)

    @property
    def code_dtype(self):
        return np.dtype(np.uint16 if self.bits > 8 else np.uint8)

    def __str__(self):
        return self.name


_TZ_WRAP = {"rounding": "toward_zero", "overflow": "wrap"}

SPECS = [
    Spec("bf16", "bfloat16", 16, "float"),
    Spec("fp8_e4m3", "float8_e4m3fn", 8, "float"),
    Spec("fp8_e5m2", "float8_e5m2", 8, "float"),
    Spec("fp8_e4m3fnuz", "float8_e4m3fnuz", 8, "float"),
    Spec("fp8_e5m2fnuz", "float8_e5m2fnuz", 8, "float"),
    Spec("fp8_e4m3b11fnuz", "float8_e4m3b11fnuz", 8, "float"),
    Spec("fp8_e3m4", "float8_e3m4", 8, "float"),
    Spec("e4m3", "float8_e4m3", 8, "float"),
    Spec("fp6_e3m2", "float6_e3m2fn", 6, "finite"),
    Spec("fp6_e2m3", "float6_e2m3fn", 6, "finite"),
    Spec("fp4_e2m1", "float4_e2m1fn", 4, "finite"),
    Spec("e8m0", "float8_e8m0fnu", 8, "e8m0", {"rounding": "nearest_away"}),
    Spec("int4", "int4", 4, "int", _TZ_WRAP),
    Spec("uint4", "uint4", 4, "int", _TZ_WRAP),
    Spec("int2", "int2", 2, "int", _TZ_WRAP),
    Spec("uint2", "uint2", 2, "int", _TZ_WRAP),
]
SPEC_BY_NAME = {s.name: s for s in SPECS}
FLOAT_SPECS = [s for s in SPECS if s.family != "int"]
INT_SPECS = [s for s in SPECS if s.family == "int"]
FINITE_SPECS = [s for s in SPECS if s.family == "finite"]

# Names from the grammar / constructor that must mean the same bits as a named format.
ALIASES = [
    ("e4m3fn", "float8_e4m3fn", 8),
    ("e5m2", "float8_e5m2", 8),
    ("e4m3fnuz", "float8_e4m3fnuz", 8),
    ("e5m2fnuz", "float8_e5m2fnuz", 8),
    ("e4m3fnuz_b11", "float8_e4m3b11fnuz", 8),
    ("e3m4", "float8_e3m4", 8),
    ("e3m2finite", "float6_e3m2fn", 6),
    ("e2m3finite", "float6_e2m3fn", 6),
    ("e2m1finite", "float4_e2m1fn", 4),
    ("e8m7", "bfloat16", 16),
]


def _fmt(spec):
    return formats.get(spec.name)


def _seed(*parts):
    return zlib.crc32("/".join(map(str, parts)).encode())


# --------------------------------------------------------------------------- oracle


def _all_codes(bits):
    return np.arange(1 << bits, dtype=np.uint16 if bits > 8 else np.uint8)


def _oracle_decode(t, codes):
    """ml_dtypes' value of each code (fp6/fp4/int4/int2: one code per uint8 byte)."""
    with np.errstate(all="ignore"):
        return codes.view(t).astype(np.float64)


def _oracle_cast(spec, x32):
    """ml_dtypes' cast of float32 ``x32``.  For the integer types it is the C-style cast done in
    two defined steps, truncation to int64 (numpy) then ml_dtypes' int64 -> intN conversion,
    which wraps: from ml_dtypes 0.7 a direct float -> intN cast gives 0 out of range."""
    assert x32.dtype == np.float32
    with np.errstate(all="ignore"):
        if spec.family == "int":
            return np.trunc(x32.astype(np.float64)).astype(np.int64).astype(spec.t)
        return x32.astype(spec.t)


def _oracle_encode(spec, x32):
    """(codes, values) of ml_dtypes' cast of float32 ``x32``."""
    cast = _oracle_cast(spec, x32)
    return cast.view(spec.code_dtype), cast.astype(np.float64)


@functools.lru_cache(maxsize=None)
def _oracle_finite_values(oracle, bits):
    """Sorted distinct finite values of all codes (+-0 collapsed)."""
    v = _oracle_decode(getattr(ml_dtypes, oracle), _all_codes(bits))
    return np.unique(v[np.isfinite(v)])


# --------------------------------------------------------------------------- inputs

_F32_MAX = float(np.finfo(np.float32).max)

_F32_SPECIALS = np.concatenate(
    [
        np.array(
            [0.0, -0.0, np.inf, -np.inf, _F32_MAX, -_F32_MAX, 2.0**-126, -(2.0**-126), 2.0**-149, -(2.0**-149),
             1.0, -1.0],
            dtype=np.float32,
        ),
        # quiet / signalling NaNs with payloads, both signs
        np.array([0x7FC00000, 0xFFC00000, 0x7FC00001, 0x7F800001, 0xFF812345, 0x7FFFFFFF], np.uint32).view(np.float32),
    ]
)


@functools.lru_cache(maxsize=None)
def _grid(spec):
    """Every value, every midpoint between neighbours, and one float32 ulp either side.

    The neighbours include one step past each end (max + ulp(max); for e8m0 2^-128 and
    2^128; for integers every integer in +-4 * 2^bits so wrap-around is exercised), so the
    overflow / underflow thresholds are midpoints too.
    """
    fin = _oracle_finite_values(spec.oracle, spec.bits)
    if spec.family == "int":
        span = 1 << spec.bits
        pts = np.arange(-4 * span, 4 * span + 1, dtype=np.float64)
    elif spec.family == "e8m0":
        pts = np.concatenate([[fin[0] / 2], fin, [fin[-1] * 2]])
    else:
        step = fin[-1] - fin[-2]
        pts = np.concatenate([[-(fin[-1] + step)], fin, [fin[-1] + step]])
    mids = (pts[:-1] + pts[1:]) / 2
    base = np.concatenate([pts, mids, [0.0, -0.0]])
    if spec.family == "e8m0":
        base = np.concatenate([base, -base])  # negatives -> NaN
    base = base[np.abs(base) <= _F32_MAX]  # bf16's max + ulp is 2^128
    x = base.astype(np.float32)
    assert np.array_equal(x.astype(np.float64), base), "grid point not exact in float32"
    up = np.nextafter(x, np.float32(np.inf))
    down = np.nextafter(x, np.float32(-np.inf))
    return np.concatenate([x, up, down, _F32_SPECIALS])


@functools.lru_cache(maxsize=None)
def _random_bits(spec):
    """Uniformly random float32 bit patterns (NaN, Inf, subnormals included)."""
    rng = np.random.default_rng(_seed("bits", spec.name))
    n = N_RANDOM_BITS * (2 if spec.family == "int" else 1)  # ints drop |x| >= 2^31
    return rng.integers(0, 2**32 - 1, size=n, dtype=np.uint32, endpoint=True).view(np.float32)


@functools.lru_cache(maxsize=None)
def _random_range(spec):
    """Random float32 values (random sign and mantissa) with exponents from a little below
    the format's smallest magnitude to a little above its largest."""
    fin = _oracle_finite_values(spec.oracle, spec.bits)
    pos = fin[fin > 0]
    lo = int(np.floor(np.log2(pos[0]))) - 3
    hi = int(np.floor(np.log2(pos[-1]))) + (12 if spec.family == "int" else 3)  # ints: wrap
    lo, hi = max(lo, -149), min(hi, 127)
    rng = np.random.default_rng(_seed("range", spec.name))
    n = N_RANDOM_RANGE
    e = rng.integers(lo, hi, size=n, endpoint=True)
    mant = rng.integers(0, 1 << 23, size=n, dtype=np.int64)
    mag = np.ldexp(1.0 + mant / float(1 << 23), e)  # exact in float64
    sign = np.where(rng.integers(0, 2, size=n) == 1, -1.0, 1.0)
    return (sign * mag).astype(np.float32)  # below 2^-126 this rounds to a float32 subnormal


def _oracle_domain(spec, x):
    """Drop inputs where the oracle's convention is not ours (tested separately)."""
    keep = np.ones(x.shape, bool)
    with np.errstate(invalid="ignore"):  # signalling NaNs
        xd = x.astype(np.float64)
    if spec.family in ("finite", "int"):
        keep &= ~np.isnan(x)  # we raise ValueError
    if spec.family == "int":
        keep &= np.abs(xd) < 2.0**31  # C cast UB in ml_dtypes; Inf raises with wrap
    return x[keep]


def _inputs(spec, which):
    if which == "grid":
        x = _grid(spec)
    elif which == "random_bits":
        x = _random_bits(spec)
    else:
        x = _random_range(spec)
    return _oracle_domain(spec, x)


# --------------------------------------------------------------------------- decode


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_decode_all_codes(spec, assert_same):
    codes = _all_codes(spec.bits)
    ours = _fmt(spec).decode(codes)
    assert ours.dtype == np.float64
    assert ours.shape == codes.shape
    assert_same(f"{spec.name} decode", codes, ours, _oracle_decode(spec.t, codes))


@pytest.mark.parametrize("alias,oracle,bits", ALIASES, ids=[a[0] for a in ALIASES])
def test_grammar_alias_decode(alias, oracle, bits, assert_same):
    codes = _all_codes(bits)
    fmt = formats.get(alias)
    assert fmt.bits == bits
    assert_same(f"{alias} decode", codes, fmt.decode(codes), _oracle_decode(getattr(ml_dtypes, oracle), codes))


@pytest.mark.parametrize("spec", [s for s in SPECS if s.bits < 8], ids=str)
def test_decode_rejects_wide_codes(spec):
    with pytest.raises(ValueError):
        _fmt(spec).decode(np.array([1 << spec.bits], dtype=np.uint8))


# --------------------------------------------------------------------------- encode


@pytest.mark.parametrize("which", ["grid", "random_bits", "random_range"])
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_encode(spec, which, assert_same):
    fmt = _fmt(spec)
    x = _inputs(spec, which)
    if which == "random_bits":
        assert x.size >= 10**6
    ours = fmt.encode(x, **spec.kw)
    assert ours.dtype == spec.code_dtype
    assert ours.shape == x.shape
    theirs, their_values = _oracle_encode(spec, x)
    nan_theirs = np.isnan(their_values)
    what = f"{spec.name} encode {which} {spec.kw or ''}"
    assert_same(what, x, ours, theirs, nan_ours=np.isnan(fmt.decode(ours)), nan_theirs=nan_theirs)
    # The same values as float64 must give the same codes (ml_dtypes itself is only fed
    # float32: its float64 casts round twice).
    with np.errstate(invalid="ignore"):
        x64 = x.astype(np.float64)
    ours64 = fmt.encode(x64, **spec.kw)
    assert_same(what + " (float64 input)", x64, ours64, theirs, nan_ours=np.isnan(fmt.decode(ours64)),
                nan_theirs=nan_theirs)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_encode_integer_input(spec, assert_same):
    """int32 arrays in (every int16 value plus random values within +-2^24, all exact in
    float32); the oracle is ml_dtypes' cast of the same values as float32."""
    fmt = _fmt(spec)
    rng = np.random.default_rng(_seed("int", spec.name))
    x = np.concatenate([np.arange(-(1 << 15), 1 << 15), rng.integers(-(1 << 24), 1 << 24, size=1 << 16)])
    x = x.astype(np.int32)
    ours = fmt.encode(x, **spec.kw)
    assert ours.dtype == spec.code_dtype
    theirs, their_values = _oracle_encode(spec, x.astype(np.float32))
    assert_same(f"{spec.name} encode int32", x, ours, theirs, nan_ours=np.isnan(fmt.decode(ours)),
                nan_theirs=np.isnan(their_values))


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_quantize_float32(spec, assert_same):
    fmt = _fmt(spec)
    x = np.concatenate([_inputs(spec, "grid"), _inputs(spec, "random_bits")[:N_QUANTIZE_RANDOM]])
    ours = fmt.quantize(x, **spec.kw)
    assert ours.dtype == np.float32, "every value of the format is exact in float32"
    assert ours.shape == x.shape
    theirs = _oracle_cast(spec, x).astype(np.float32)
    assert_same(f"{spec.name} quantize", x, ours, theirs)


_LAYOUT_BASE = np.linspace(-448, 448, 40, dtype=np.float32).reshape(5, 8)
LAYOUTS = {
    "c_order": _LAYOUT_BASE,
    "strided": _LAYOUT_BASE[:, ::3],
    "reversed": _LAYOUT_BASE[::-1, ::-1],
    "fortran": np.asfortranarray(_LAYOUT_BASE),
    "transposed": _LAYOUT_BASE.T,
    "big_endian": _LAYOUT_BASE.astype(">f4"),
    "zero_d": np.array(-3.3, np.float32),
    "empty": np.zeros((0, 3), np.float32),
}


@pytest.mark.parametrize("layout", list(LAYOUTS), ids=str)
def test_encode_layouts(layout, assert_same):
    """Shape is kept and the values are read right whatever the memory layout / byte order."""
    fmt = formats.get("fp8_e4m3")
    x = LAYOUTS[layout]
    ours = np.asarray(fmt.encode(x))
    assert ours.shape == x.shape
    native = np.ascontiguousarray(x, dtype=np.float32)
    theirs, _ = _oracle_encode(SPEC_BY_NAME["fp8_e4m3"], native)
    assert_same(f"fp8_e4m3 encode {layout}", native, ours, theirs)
    q = np.asarray(fmt.quantize(x))
    assert q.shape == x.shape and q.dtype == np.float32
    assert_same(f"fp8_e4m3 quantize {layout}", native, q, native.astype(ml_dtypes.float8_e4m3fn).astype(np.float32))


@pytest.mark.parametrize("dtype", ["<u2", ">u2", "<i8", ">i8"])
def test_decode_code_dtypes(dtype, assert_same):
    """Codes held in wider / other-byte-order integer arrays decode the same."""
    fmt = formats.get("fp8_e4m3")
    codes = _all_codes(8)
    assert_same(f"fp8_e4m3 decode {dtype}", codes, fmt.decode(codes.astype(dtype)),
                _oracle_decode(ml_dtypes.float8_e4m3fn, codes))


# ------------------------------------------------- conventions where ml_dtypes is not ours


@pytest.mark.parametrize("spec", FINITE_SPECS, ids=str)
def test_finite_nan_raises(spec):
    fmt = _fmt(spec)
    for x in (np.array([np.nan], np.float32), np.array([1.0, -np.nan, 2.0]), np.float64(np.nan)):
        with pytest.raises(ValueError):
            fmt.encode(x)
        with pytest.raises(ValueError):
            fmt.quantize(x)


@pytest.mark.parametrize("spec", FINITE_SPECS, ids=str)
def test_finite_inf_saturates(spec, assert_same):
    # ml_dtypes saturates +-Inf to +-max, as does our "saturate" policy.
    fmt = _fmt(spec)
    x = np.array([np.inf, -np.inf], np.float32)
    theirs, _ = _oracle_encode(spec, x)
    assert_same(f"{spec.name} encode inf", x, fmt.encode(x), theirs)


@pytest.mark.parametrize("spec", INT_SPECS, ids=str)
def test_int_nan_inf(spec):
    fmt = _fmt(spec)
    with pytest.raises(ValueError):
        fmt.encode(np.array([1.0, np.nan], np.float32), **spec.kw)
    with pytest.raises(ValueError):
        fmt.encode(np.array([np.nan], np.float32))  # default (saturate) too
    with pytest.raises(ValueError):
        fmt.encode(np.array([np.inf], np.float32), **spec.kw)  # Inf with wrap
    with pytest.raises(ValueError):
        fmt.encode(np.array([-np.inf], np.float32), **spec.kw)
    # Inf with saturate -> +-max / min, the range being ml_dtypes' iinfo
    info = ml_dtypes.iinfo(spec.t)
    got = fmt.decode(fmt.encode(np.array([np.inf, -np.inf], np.float32), overflow="saturate"))
    np.testing.assert_array_equal(got, [info.max, info.min])


def test_e8m0_subnormal_window():
    """Every float32 subnormal in (2^-127, 2^-126) against ml_dtypes, and the contract by
    hand: nearest, ties away, between 2^-127 (0x00) and 2^-126 (0x01)."""
    fmt = formats.get("e8m0")
    f32 = np.float32
    window = np.arange(1 << 22, 1 << 23, dtype=np.uint32).view(f32)
    np.testing.assert_array_equal(
        fmt.encode(window, rounding="nearest_away"),
        window.astype(ml_dtypes.float8_e8m0fnu).view(np.uint8))
    lo, mid = f32(E8M0_WINDOW_LO), f32(E8M0_WINDOW_HI)
    below = np.array([np.nextafter(lo, f32(1)), f32(1.25 * 2.0**-127), np.nextafter(mid, f32(0))], f32)
    at_or_above = np.array([mid, np.nextafter(mid, f32(1)), f32(1.75 * 2.0**-127)], f32)
    np.testing.assert_array_equal(fmt.encode(below, rounding="nearest_away"), [0, 0, 0])
    np.testing.assert_array_equal(fmt.encode(at_or_above, rounding="nearest_away"), [1, 1, 1])
    # float64 inputs take the same path
    np.testing.assert_array_equal(fmt.encode(below.astype(np.float64), rounding="nearest_away"), [0, 0, 0])


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("spec", FLOAT_SPECS, ids=str)
def test_float_properties(spec):
    fmt = _fmt(spec)
    fi = ml_dtypes.finfo(spec.t)
    assert fmt.bits == spec.bits
    assert fmt.max == float(fi.max)
    assert fmt.min_normal == float(fi.smallest_normal)
    if spec.family != "e8m0":  # e8m0 has no subnormals
        assert fmt.min_subnormal == float(fi.smallest_subnormal)
    assert fmt.epsilon == float(fi.eps)


@pytest.mark.parametrize("spec", INT_SPECS, ids=str)
def test_int_properties(spec):
    fmt = _fmt(spec)
    info = ml_dtypes.iinfo(spec.t)
    assert fmt.bits == spec.bits
    assert fmt.max == info.max


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_value_set(spec):
    """values() / n_finite / has_inf / has_nan / signed against the decoded oracle codes.

    n_finite is read as the number of distinct finite values (= len(values())), the
    reading under which the contract's "count of finite values" and values() agree.
    """
    fmt = _fmt(spec)
    all_vals = _oracle_decode(spec.t, _all_codes(spec.bits))
    expect = _oracle_finite_values(spec.oracle, spec.bits)
    got = np.asarray(fmt.values())
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expect)  # sorted, +-0 collapsed (value equality)
    assert fmt.n_finite == expect.size
    assert bool(fmt.has_nan) == bool(np.isnan(all_vals).any())
    assert bool(fmt.has_inf) == bool(np.isinf(all_vals).any())
    assert bool(fmt.signed) == bool((all_vals < 0).any())


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_default_overflow(spec):
    # ml_dtypes' conventions are our defaults for floats; ints default to saturate.
    expect = "saturate" if spec.family in ("finite", "int") else "ieee"
    assert _fmt(spec).default_overflow == expect
