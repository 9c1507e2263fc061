"""numsim's scalar floating-point formats against an MPFR oracle (gmpy2).

The oracle (tests/mpfr_oracle.py) knows nothing of ``formats``: each format is restated
here as a plain FloatSpec (exponent bits, mantissa bits, bias, kind), codes are decoded
from their bit fields, exact results are formed in MPFR and rounded once by MPFR.
Results are compared as float64 bit patterns (zero signs count; any NaN matches any NaN).

Coverage:
- the oracle itself against ml_dtypes / NumPy casts (nearest_even) and against a
  neighbour search on the sorted value table (every mode);
- decode/encode of codes and the format properties;
- quantize (encode + decode) in the five deterministic modes and both overflow policies
  (and the default), on every value, every midpoint, +-1 float64 ulp around those, and
  random float64s from far below the smallest subnormal to far beyond max;
- add/sub/mul on ALL finite operand pairs of formats of 8 bits or fewer, fma on ALL finite
  triples where there are at most 2**18 of them (fp6, fp4, ...), else on random and
  cancellation-heavy triples; random and boundary operands for wider formats;
- unsigned formats (no sign bit: NVFP4's ue4m3fn scale, ...) and custom biases;
- NaN/Inf operands, flush-to-zero (subnormals=False) and conversion between formats.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import mpfr_oracle as mo
from mpfr_oracle import FloatSpec, MODES

# ----------------------------------------------------------------------------------------
# The formats under test, restated independently
# ----------------------------------------------------------------------------------------

# FloatFormat(e, m) with the default kind ("ieee") and bias 2**(e-1) - 1.
CUSTOM = {
    "e3m4": FloatSpec(3, 4, 3),
    "e2m5": FloatSpec(2, 5, 1),
    "e5m7": FloatSpec(5, 7, 15),
    "e6m9": FloatSpec(6, 9, 31),
    "e7m3": FloatSpec(7, 3, 63),
    # other kinds with an explicit bias
    "e3m3fn_b2": FloatSpec(3, 3, 2, "fn"),
    "e4m2fnuz_b5": FloatSpec(4, 2, 5, "fnuz"),
    "e3m3finite_b4": FloatSpec(3, 3, 4, "finite"),
    # the ends of FloatFormat's range: products of two values reach 2**1023 and 2**-1074,
    # the ends of float64, where the exact intermediate has no room left
    "e10m5": FloatSpec(10, 5, 511),
    "e10m12_b526": FloatSpec(10, 12, 526),
    # unsigned (no sign bit): a negative result that does not round to zero is NaN, or 0
    # where there is no NaN (ue4m3fn is NVFP4's block-scale format)
    "ue4m3fn": FloatSpec(4, 3, 7, "fn", signed=False),
    "ue2m1finite": FloatSpec(2, 1, 1, "finite", signed=False),
    "ue5m2": FloatSpec(5, 2, 15, "ieee", signed=False),
    # biases far from the default: nonzero values all >= 4, all < 1/32, all >= 32
    "e3m2fnuz_b-3": FloatSpec(3, 2, -3, "fnuz"),
    "e4m3_b20": FloatSpec(4, 3, 20),
    "e2m1finite_b-5": FloatSpec(2, 1, -5, "finite"),
}

NAMED = {
    "fp8_e4m3": FloatSpec(4, 3, 7, "fn"),          # OCP E4M3, max 448
    "fp8_e5m2": FloatSpec(5, 2, 15, "ieee"),
    "fp8_e4m3fnuz": FloatSpec(4, 3, 8, "fnuz"),    # max 240
    "fp8_e5m2fnuz": FloatSpec(5, 2, 16, "fnuz"),
    "fp8_e4m3b11fnuz": FloatSpec(4, 3, 11, "fnuz"),
    "fp8_e3m4": FloatSpec(3, 4, 3, "ieee"),
    "fp6_e3m2": FloatSpec(3, 2, 3, "finite"),      # OCP MX, max 28
    "fp6_e2m3": FloatSpec(2, 3, 1, "finite"),      # max 7.5
    "fp4_e2m1": FloatSpec(2, 1, 1, "finite"),      # max 6
    "fp16": FloatSpec(5, 10, 15),
    "bf16": FloatSpec(8, 7, 127),
    "tf32": FloatSpec(8, 10, 127),
    "fp32": FloatSpec(8, 23, 127),
}

SPECS = {**CUSTOM, **NAMED}
SMALL = [n for n, s in SPECS.items() if s.bits <= 8]      # exhaustive operand pairs
WIDE = [n for n, s in SPECS.items() if s.bits > 8]        # random + boundary operands

OPS2 = ("add", "sub", "mul")
POLICIES = ("ieee", "saturate")

_FORMATS: dict = {}


def get_format(name: str):
    """The numsim format object for a name of SPECS (custom ones built by FloatFormat)."""
    if name not in _FORMATS:
        import formats

        if name in CUSTOM:
            s = CUSTOM[name]
            if s.kind == "ieee" and s.bias == mo.default_bias(s.ebits) and s.signed:
                f = formats.FloatFormat(s.ebits, s.mbits)
            else:
                f = formats.FloatFormat(s.ebits, s.mbits, bias=s.bias, kind=s.kind,
                                        signed=s.signed)
        else:
            f = formats.get(name)
        _FORMATS[name] = f
    return _FORMATS[name]


def code_dtype(bits: int):
    return np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def check(got_vals, exp_vals, what: str, **columns):
    ok = mo.same_values(got_vals, exp_vals)
    if not ok.all():
        cols = dict(columns)
        cols["expected"] = exp_vals
        cols["got"] = got_vals
        pytest.fail(f"{what}: " + mo.mismatch_report(ok, cols), pytrace=False)


def result_values(codes, spec: FloatSpec) -> np.ndarray:
    codes = np.asarray(codes)
    assert codes.dtype.kind == "u", f"codes must be unsigned, got {codes.dtype}"
    assert codes.dtype.itemsize * 8 >= spec.bits
    return mo.ref_decode(codes, spec)


# ----------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------

def fields_to_codes(spec: FloatSpec, sign, expf, mant) -> np.ndarray:
    """Codes from fields; an unsigned format has no sign bit, so ``sign`` is ignored."""
    sign = np.asarray(sign, np.int64) * int(spec.signed)
    expf = np.asarray(expf, np.int64)
    mant = np.asarray(mant, np.int64)
    return (sign << (spec.bits - 1)) | (expf << spec.mbits) | mant


def top_expf(spec: FloatSpec) -> int:
    """Largest exponent field holding finite values."""
    return 2**spec.ebits - (2 if spec.kind == "ieee" else 1)


def keep_finite(codes, spec: FloatSpec, fallback=None):
    v = mo.ref_decode(codes, spec)
    fin = np.isfinite(v)
    if fallback is None:
        return codes[fin]
    return np.where(fin, codes, fallback)


def representable(spec: FloatSpec, v: float) -> bool:
    try:
        mo.ref_encode_exact([v], spec)
    except ValueError:
        return False
    return True


def boundary_values(spec: FloatSpec) -> np.ndarray:
    """Positive and negative (unsigned: positive) boundary cases of a format, all
    representable."""
    s = spec
    cand = [0.0, s.min_subnormal, 2 * s.min_subnormal, 3 * s.min_subnormal,
            s.min_normal - s.min_subnormal, s.min_normal, s.min_normal + s.min_subnormal,
            1.0, 1.0 + s.epsilon, 1.5, 2.0 - s.epsilon, 2.0, s.max, s.max - s.ulp_top,
            s.max / 2, np.ldexp(1.0, s.emax // 2), np.ldexp(1.5, s.emax // 2),
            np.ldexp(1.0, (s.emin - s.mbits) // 2), np.ldexp(1.0, s.emin // 2 - 1)]
    out = []
    for v in cand:
        try:
            mo.ref_encode_exact([v], s)
        except ValueError:
            continue
        if 0 <= v <= s.max:
            out.append(v)
    out = np.unique(np.array(out))
    return np.concatenate([out, -out]) if spec.signed else out


def boundary_codes(spec: FloatSpec) -> np.ndarray:
    v = boundary_values(spec)
    if not spec.has_neg_zero:
        v = v[~((v == 0) & np.signbit(v))]
    return mo.ref_encode_exact(v, spec).astype(np.int64)


def random_finite_codes(spec: FloatSpec, rng, n: int, lo: int | None = None,
                        hi: int | None = None) -> np.ndarray:
    """Random finite codes, exponent field uniform in [lo, hi] (default: all)."""
    lo = 0 if lo is None else max(0, lo)
    hi = top_expf(spec) if hi is None else min(top_expf(spec), hi)
    e = rng.integers(lo, hi + 1, n)
    m = rng.integers(0, 2**spec.mbits, n)
    s = rng.integers(0, 2, n)
    c = fields_to_codes(spec, s, e, m)
    return keep_finite(c, spec, fallback=fields_to_codes(spec, s, e, 0))


def expf_of(codes, spec: FloatSpec) -> np.ndarray:
    return (np.asarray(codes, np.int64) >> spec.mbits) & (2**spec.ebits - 1)


def quantize_inputs(spec: FloatSpec, rng, n_random: int = 20000) -> np.ndarray:
    """Values, midpoints, +-1 float64 ulp around both, random float64s, extremes."""
    if spec.bits <= 16:
        g = mo.values_grid(spec)
        nxt = np.append(g[1:], spec.next_above_max)
    else:
        pos = random_finite_codes(spec, rng, n_random) & ((1 << (spec.bits - 1)) - 1)
        pos = np.unique(np.concatenate([pos, boundary_codes(spec)[: len(boundary_codes(spec)) // 2]]))
        g = mo.ref_decode(pos, spec)
        nxt = mo.ref_decode(np.minimum(pos + 1, (1 << (spec.bits - 1)) - 1), spec)
        nxt = np.where(np.isfinite(nxt) & (nxt > g), nxt, spec.next_above_max)
    mids = (g + nxt) / 2
    lo = np.log2(spec.min_subnormal) - 12
    hi = np.log2(spec.max) + 6
    rnd = np.exp2(rng.uniform(lo, hi, n_random))
    extremes = np.array([5e-324, 1e-310, 1e-300, 1e-200, spec.min_subnormal / 4,
                         spec.min_subnormal * 0.75, spec.min_subnormal / 2, spec.max * 2,
                         spec.next_above_max * 4, 1e38, 1e300, np.finfo(np.float64).max])
    x = np.concatenate([g, mids, np.nextafter(g, np.inf), np.nextafter(g, -np.inf),
                        np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf), rnd, extremes])
    x = x[x >= 0]
    return np.concatenate([x, -x, [np.inf, -np.inf]])


# ----------------------------------------------------------------------------------------
# 1. The oracle itself
# ----------------------------------------------------------------------------------------

ML_DTYPES = {  # name -> (ml_dtypes / numpy type name, policy of its cast)
    "fp8_e4m3": ("float8_e4m3fn", "ieee"),
    "fp8_e5m2": ("float8_e5m2", "ieee"),
    "fp8_e4m3fnuz": ("float8_e4m3fnuz", "ieee"),
    "fp8_e5m2fnuz": ("float8_e5m2fnuz", "ieee"),
    "fp8_e4m3b11fnuz": ("float8_e4m3b11fnuz", "ieee"),
    "fp8_e3m4": ("float8_e3m4", "ieee"),
    "fp6_e3m2": ("float6_e3m2fn", "saturate"),
    "fp6_e2m3": ("float6_e2m3fn", "saturate"),
    "fp4_e2m1": ("float4_e2m1fn", "saturate"),
    "bf16": ("bfloat16", "ieee"),
    "fp16": ("float16", "ieee"),
    "fp32": ("float32", "ieee"),
}


@pytest.mark.parametrize("name", list(ML_DTYPES))
def test_oracle_matches_ml_dtypes(name):
    """MPFR oracle (nearest_even) == ml_dtypes/NumPy casts, and decode == their decode.

    ml_dtypes converts float64 through float32 (a double rounding), so its inputs here are
    float32 values: every value, midpoint, +-1 float32 ulp, random float32s.
    """
    import ml_dtypes
    spec = NAMED[name]
    tname, policy = ML_DTYPES[name]
    dt = getattr(np, tname) if tname in ("float16", "float32") else getattr(ml_dtypes, tname)
    rng = rng_for("ml", name)
    if spec.bits <= 16:
        codes = mo.all_codes(spec)
        with np.errstate(invalid="ignore"):
            raw = codes.astype(code_dtype(spec.bits)).view(dt).astype(np.float64)
        check(raw, mo.ref_decode(codes, spec), f"{name} decode vs {tname}", code=codes)
    x = quantize_inputs(spec, rng)
    x = x[np.isfinite(x)]
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    if name != "fp32":
        x32 = np.concatenate([x32, np.nextafter(x32, np.float32(np.inf)),
                              np.nextafter(x32, np.float32(-np.inf))])
        x = x32[np.isfinite(x32)].astype(np.float64)
    exp = mo.oracle_round(x, spec, "nearest_even", policy)
    with np.errstate(all="ignore"):
        got = x.astype(dt).astype(np.float64)
    check(got, exp, f"oracle vs {tname}", x=x)


def grid_round(x, spec: FloatSpec, mode: str) -> np.ndarray:
    """Independent rounding by neighbour search in the sorted value table (|x| < next)."""
    g = np.append(mo.values_grid(spec), spec.next_above_max)
    a = np.abs(x)
    i = np.searchsorted(g, a, side="right") - 1
    lo = g[i]
    hi = g[np.minimum(i + 1, len(g) - 1)]
    exact = lo == a
    neg = np.signbit(x)
    # position in the table of non-negative values is the code, so parity = last bit
    lo_even = (i % 2) == 0
    if mode == "nearest_even":
        up = (a - lo > hi - a) | ((a - lo == hi - a) & ~lo_even)
    elif mode == "nearest_away":
        up = a - lo >= hi - a
    elif mode == "toward_zero":
        up = np.zeros(a.shape, bool)
    elif mode == "toward_positive":
        up = ~neg
    else:
        up = neg
    r = np.where(exact, lo, np.where(up, hi, lo))
    return np.where(neg, -r, r)


@pytest.mark.parametrize("name", SMALL + ["e7m3", "e5m7", "fp16"])
def test_oracle_matches_neighbour_search(name):
    """The MPFR roundings (every mode, before the overflow policy) == neighbour search."""
    spec = SPECS[name]
    x = quantize_inputs(spec, rng_for("grid", name), n_random=5000)
    x = x[np.abs(x) < spec.next_above_max]
    for mode in MODES:
        exp = grid_round(x, spec, mode)
        got = mo.rounder(spec).round(x, mode).r
        check(got, exp, f"{name} {mode}: MPFR vs neighbour search", x=x)


def test_oracle_spot_values():
    """Hand-checked cases: OCP E4M3 overflow, ties, signed underflow, fnuz zero."""
    e4m3 = NAMED["fp8_e4m3"]
    r = mo.oracle_round(np.array([464.0, -464.0, 465.0, 480.0, 1e9]), e4m3, "nearest_even", "ieee")
    assert r[:2].tolist() == [448.0, -448.0] and np.isnan(r[2:]).all()
    r = mo.oracle_round(np.array([464.0, 1e9, -1e9]), e4m3, "nearest_away", "ieee")
    assert np.isnan(r).all()
    r = mo.oracle_round(np.array([1e9, -1e9]), e4m3, "toward_zero", "ieee")
    assert r.tolist() == [448.0, -448.0]
    r = mo.oracle_round(np.array([1e9, -1e9]), e4m3, "toward_positive", "ieee")
    assert np.isnan(r[0]) and r[1] == -448.0
    r = mo.oracle_round(np.array([1e9, -np.inf]), e4m3, "toward_negative", "saturate")
    assert r.tolist() == [448.0, -448.0]
    ms = e4m3.min_subnormal
    for mode, expect in [("nearest_even", [0.0, ms, -0.0]), ("nearest_away", [ms, ms, -ms]),
                         ("toward_zero", [0.0, 0.0, -0.0]), ("toward_positive", [ms, ms, -0.0]),
                         ("toward_negative", [0.0, 0.0, -ms])]:
        r = mo.oracle_round(np.array([ms / 2, ms * 0.75, -ms / 2]), e4m3, mode, "ieee")
        assert mo.same_values(r, expect).all(), (mode, r)
    fnuz = NAMED["fp8_e4m3fnuz"]
    r = mo.oracle_round(np.array([-1e-30, -0.0, 1e6]), fnuz, "nearest_even", "ieee")
    assert mo.same_values(r, [0.0, 0.0, np.nan]).all()
    e5m2 = NAMED["fp8_e5m2"]
    r = mo.oracle_round(np.array([61440.0, 61439.0, 1e6]), e5m2, "nearest_even", "ieee")
    assert r.tolist() == [np.inf, 57344.0, np.inf]
    assert e5m2.max == 57344.0 and e4m3.max == 448.0 and fnuz.max == 240.0
    assert NAMED["fp6_e3m2"].max == 28.0 and NAMED["fp6_e2m3"].max == 7.5
    assert NAMED["fp4_e2m1"].max == 6.0 and NAMED["fp16"].max == 65504.0
    # unsigned: codes without a sign bit; negative values that do not round to 0 -> NaN (or 0)
    ue4m3, ue2m1, ue5m2 = CUSTOM["ue4m3fn"], CUSTOM["ue2m1finite"], CUSTOM["ue5m2"]
    assert (ue4m3.bits, ue2m1.bits, ue5m2.bits) == (7, 3, 7)
    assert ue4m3.max == 448.0 and ue2m1.max == 6.0 and ue5m2.max == 57344.0
    assert mo.same_values(mo.ref_decode([0x7E, 0x7F, 0x08, 0x01], ue4m3),
                          [448.0, np.nan, 2.0**-6, 2.0**-9]).all()
    assert mo.ref_decode([7], ue2m1).tolist() == [6.0]
    assert mo.same_values(mo.ref_decode([0x7C, 0x7D], ue5m2), [np.inf, np.nan]).all()
    x = np.array([-1.0, -2.0**-10, -0.0, 1e9, -1e9])          # 2**-10: half ue4m3fn's min
    r = mo.oracle_round(x, ue4m3, "nearest_even", "ieee")
    assert mo.same_values(r, [np.nan, 0.0, 0.0, np.nan, np.nan]).all()
    r = mo.oracle_round(x, ue4m3, "toward_negative", "saturate")
    assert mo.same_values(r, [np.nan, np.nan, 0.0, 448.0, np.nan]).all()
    r = mo.oracle_round(x, ue4m3, "toward_positive", "ieee")
    assert mo.same_values(r, [np.nan, 0.0, 0.0, np.nan, np.nan]).all()
    assert mo.same_values(mo.oracle_round(x, ue2m1, "nearest_even", None),
                          [0.0, 0.0, 0.0, 6.0, 0.0]).all()
    assert mo.same_values(mo.oracle_round(np.array([np.inf, -np.inf, -1.0]), ue5m2,
                                          "nearest_even", "ieee"), [np.inf, np.nan, np.nan]).all()
    with pytest.raises(ValueError):
        mo.ref_encode_exact([-1.0], ue4m3)
    assert mo.ref_encode_exact([-0.0, 448.0], ue4m3).tolist() == [0, 0x7E]
    # exact sums keep IEEE zero signs
    assert mo.same_values(mo.exact_op("add", "nearest_even", [1.0, -0.0, 0.0], [-1.0, -0.0, -0.0]),
                          [0.0, -0.0, 0.0]).all()
    assert mo.same_values(mo.exact_op("add", "toward_negative", [1.0, -0.0, 0.0], [-1.0, -0.0, 0.0]),
                          [-0.0, -0.0, 0.0]).all()


# ----------------------------------------------------------------------------------------
# 2. Codes and properties
# ----------------------------------------------------------------------------------------

def sample_codes(spec: FloatSpec, rng, n: int = 50000) -> np.ndarray:
    if spec.bits <= 16:
        return mo.all_codes(spec)
    c = np.concatenate([rng.integers(0, 1 << spec.bits, n), boundary_codes(spec),
                        mo.ref_encode_exact([np.inf, -np.inf, np.nan], spec).astype(np.int64),
                        [(1 << spec.bits) - 1]])
    return c


@pytest.mark.parametrize("name", list(SPECS))
def test_decode_and_encode_exact(name):
    spec = SPECS[name]
    f = get_format(name)
    codes = sample_codes(spec, rng_for("dec", name)).astype(code_dtype(spec.bits))
    exp = mo.ref_decode(codes, spec)
    got = np.asarray(f.decode(codes))
    assert got.dtype == np.float64
    check(got, exp, f"{name} decode", code=codes)
    # exact values encode to their own code (NaN codes and fnuz aside)
    keep = ~np.isnan(exp)
    enc = np.asarray(f.encode(exp[keep]))
    assert enc.dtype == np.dtype(code_dtype(spec.bits)), enc.dtype
    check(result_values(enc, spec), exp[keep], f"{name} encode of exact values",
          code=codes[keep])
    if spec.has_neg_zero:
        assert np.array_equal(enc.astype(np.int64), codes[keep].astype(np.int64))
    with pytest.raises(ValueError):
        f.decode(np.array([1 << spec.bits], dtype=np.uint64))


@pytest.mark.parametrize("name", list(SPECS))
def test_properties(name):
    spec = SPECS[name]
    f = get_format(name)
    assert f.bits == spec.bits
    assert f.max == spec.max
    assert f.min_normal == spec.min_normal
    assert f.min_subnormal == spec.min_subnormal
    assert f.epsilon == spec.epsilon
    assert bool(f.has_inf) == spec.has_inf
    assert bool(f.has_nan) == spec.has_nan
    assert bool(f.signed) == spec.signed
    assert f.default_overflow == spec.default_overflow
    if spec.bits <= 16:
        g = mo.values_grid(spec)
        assert np.array_equal(np.asarray(f.values()),
                              np.concatenate([-g[:0:-1], g]) if spec.signed else g)


@pytest.mark.parametrize("name", list(CUSTOM))
def test_custom_names_in_registry(name):
    """The registry's name for a custom format builds the same format as FloatFormat(...)
    (so the formats other tests reach by name are the ones checked here)."""
    import formats

    f, g = get_format(name), formats.get(name)
    assert g.name == f.name == name
    assert np.array_equal(g.descriptor(), f.descriptor())
    assert (g.ebits, g.mbits, g.bias, g.kind, g.signed) == (f.ebits, f.mbits, f.bias, f.kind,
                                                           f.signed)


# ----------------------------------------------------------------------------------------
# 3. Quantize / encode
# ----------------------------------------------------------------------------------------

_QINPUTS: dict = {}


def qinputs(name):
    if name not in _QINPUTS:
        spec = SPECS[name]
        x = quantize_inputs(spec, rng_for("q", name))
        if spec.has_nan:
            x = np.append(x, np.nan)
        _QINPUTS[name] = x
    return _QINPUTS[name]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(SPECS))
def test_quantize(name, mode):
    spec = SPECS[name]
    f = get_format(name)
    x = qinputs(name)
    rounded = mo.rounder(spec).round(x, mode)
    for policy in POLICIES + (None,):
        exp = rounded.finalize(policy)
        codes = f.encode(x, rounding=mode, overflow=policy)
        check(result_values(codes, spec), exp, f"{name} encode {mode} overflow={policy}", x=x)
        q = np.asarray(f.quantize(x, rounding=mode, overflow=policy))
        assert q.dtype == np.float64
        check(q, exp, f"{name} quantize {mode} overflow={policy}", x=x)


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if not s.has_nan])
def test_quantize_nan_raises_without_nan(name):
    f = get_format(name)
    with pytest.raises(ValueError):
        f.encode(np.array([1.0, np.nan]))


@pytest.mark.parametrize("name,in_dtype,out_dtype", [
    ("fp8_e4m3", np.float32, np.float32), ("fp8_e5m2", np.float32, np.float32),
    ("bf16", np.float32, np.float32), ("fp8_e4m3", np.float16, np.float16),
    ("bf16", np.float16, np.float64), ("fp32", np.float16, np.float64),
])
def test_quantize_float32_input(name, in_dtype, out_dtype):
    """Narrow float inputs: read exactly, output dtype per the contract, values per oracle."""
    spec = SPECS[name]
    x = qinputs(name)
    with np.errstate(over="ignore"):
        xi = x[np.isfinite(x)].astype(in_dtype)
    for mode in MODES:
        q = np.asarray(get_format(name).quantize(xi, rounding=mode))
        assert q.dtype == out_dtype
        exp = mo.oracle_round(xi.astype(np.float64), spec, mode, None)
        check(q.astype(np.float64), exp, f"{name} quantize({in_dtype.__name__}) {mode}",
              x=xi.astype(np.float64))


# ----------------------------------------------------------------------------------------
# 4. Arithmetic
# ----------------------------------------------------------------------------------------

def run_op(f, op, codes, mode, policy):
    fn = getattr(f, op)
    return fn(*codes, rounding=mode, overflow=policy)


def check_arith(name, spec, f, op, mode, operand_codes, policies=POLICIES, fmt_spec=None,
                daz=False):
    """Compare f.<op> on operand codes with the oracle for the given policies (``daz``: the
    operands' subnormal codes read as zeros of their sign, -0 as +0 where there is no -0)."""
    cd = code_dtype(spec.bits)
    ops = [np.asarray(c, dtype=np.int64).astype(cd) for c in operand_codes]
    vals = [mo.ref_decode(c, spec) for c in ops]
    if daz:
        sub = [np.abs(v) < spec.min_normal for v in vals]
        zero = (lambda v: np.copysign(0.0, v)) if spec.kind != "fnuz" else (lambda v: 0.0 * v)
        vals = [np.where(z, zero(v), v) for v, z in zip(vals, sub)]
    exact = mo.exact_op(op, mode, *vals)
    rounded = mo.rounder(fmt_spec or spec).round(exact, mode)
    for policy in policies:
        exp = rounded.finalize(policy)
        got = result_values(run_op(f, op, ops, mode, policy), spec)
        cols = {}
        for k, (c, v) in zip("abc", zip(ops, vals)):
            cols[k] = c
            cols[k + "_val"] = v
        check(got, exp, f"{name} {op} {mode} overflow={policy}", **cols)


_PAIRS: dict = {}


def all_finite_pairs(spec: FloatSpec):
    if spec not in _PAIRS:
        fc = mo.finite_codes(spec)
        a, b = np.meshgrid(fc, fc, indexing="ij")
        _PAIRS[spec] = (a.ravel(), b.ravel())
    return _PAIRS[spec]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS2)
@pytest.mark.parametrize("name", SMALL)
def test_arith_exhaustive(name, op, mode):
    """add/sub/mul on every pair of finite codes (65,536 pairs for 8-bit formats)."""
    spec = SPECS[name]
    pols = POLICIES + ((None,) if op == "mul" else ())
    check_arith(name, spec, get_format(name), op, mode, all_finite_pairs(spec), pols)


def cancelling_addends(spec: FloatSpec, a, b, rng, mode="nearest_even"):
    """c close to -(a*b): the rounded negated product, a few codes either side (unsigned
    formats cannot cancel: c close to +a*b there)."""
    p = mo.ref_decode(a, spec) * mo.ref_decode(b, spec)
    p = -p if spec.signed else p
    r = mo.oracle_round(p, spec, mode, "saturate")
    c = mo.ref_encode_exact(np.where(r == 0, 0.0, r), spec).astype(np.int64)
    c = c + rng.integers(-2, 3, len(c))
    c = np.clip(c, 0, (1 << spec.bits) - 1)
    return keep_finite(c, spec, fallback=0)


def small_addends(spec: FloatSpec, a, b, rng):
    """c a few to many binades below a*b (sticky-bit cases)."""
    p = mo.ref_decode(a, spec) * mo.ref_decode(b, spec)
    _, k = np.frexp(np.where(p == 0, 1.0, p))
    e = k - 1 - rng.integers(1, spec.mbits + 12, len(a)) + spec.bias
    e = np.clip(e, 0, top_expf(spec))
    c = fields_to_codes(spec, rng.integers(0, 2, len(a)), e, rng.integers(0, 2**spec.mbits, len(a)))
    return keep_finite(c, spec, fallback=0)


def structured_triples(spec: FloatSpec):
    v = np.array([0.0, -0.0, spec.min_subnormal, -spec.min_subnormal, 1.0, -1.0,
                  spec.max, -spec.max, spec.min_normal, -1.5])
    if not spec.has_neg_zero:
        v = v[~((v == 0) & np.signbit(v))]
    if not spec.signed:
        v = v[v >= 0]
    v = v[[representable(spec, x) for x in v]]     # e.g. 1.0 lies beyond max with a large bias
    c = mo.ref_encode_exact(v, spec).astype(np.int64)
    a, b, cc = np.meshgrid(c, c, c, indexing="ij")
    return a.ravel(), b.ravel(), cc.ravel()


def tie_triples(spec: FloatSpec, rng, n: int):
    """a * b representable (b a power of two) and c = +-half an ulp of it: exact ties."""
    m, bias = spec.mbits, spec.bias
    a = random_finite_codes(spec, rng, n, 1, top_expf(spec))
    ea = expf_of(a, spec) - bias
    ep = rng.integers(spec.emin, spec.emax + 1, n)            # exponent of the product
    eb = np.clip(ep - ea + bias, 1, top_expf(spec))
    b = fields_to_codes(spec, rng.integers(0, 2, n), eb, 0)
    p = mo.ref_decode(a, spec) * mo.ref_decode(b, spec)
    _, k = np.frexp(np.where(p == 0, 1.0, p))
    half = np.ldexp(1.0, k - 1 - m - 1)
    ok = (np.abs(p) >= spec.min_normal) & (np.abs(p) <= spec.max) & (half >= spec.min_subnormal)
    c = np.where((rng.integers(0, 2, n) == 1) & spec.signed, -half, half)
    a, b, c = a[ok], b[ok], c[ok]
    return a, b, mo.ref_encode_exact(c, spec).astype(np.int64)


def fma_triples(spec: FloatSpec, rng, n: int):
    """60% uniform, 15% near-cancelling, 15% small addend (sticky bits), 10% exact ties."""
    fc = mo.finite_codes(spec) if spec.bits <= 16 else None
    pick = (lambda k: rng.choice(fc, k)) if fc is not None else \
        (lambda k: random_finite_codes(spec, rng, k))
    n1 = n * 6 // 10
    a1, b1, c1 = pick(n1), pick(n1), pick(n1)
    n2 = n * 15 // 100
    a2, b2 = pick(n2), pick(n2)
    c2 = cancelling_addends(spec, a2, b2, rng)
    n3 = n * 15 // 100
    a3, b3 = pick(n3), pick(n3)
    c3 = small_addends(spec, a3, b3, rng)
    a4, b4, c4 = tie_triples(spec, rng, n - n1 - n2 - n3)
    sa, sb, sc = structured_triples(spec)
    return (np.concatenate([a1, a2, a3, a4, sa]), np.concatenate([b1, b2, b3, b4, sb]),
            np.concatenate([c1, c2, c3, c4, sc]))


# fma runs on every finite triple when there are at most this many (fp6: 64**3)
FMA_EXHAUSTIVE = 1 << 18


def all_finite_triples(spec: FloatSpec):
    fc = mo.finite_codes(spec)
    a, b, c = np.meshgrid(fc, fc, fc, indexing="ij")
    return a.ravel(), b.ravel(), c.ravel()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", SMALL)
def test_fma_small(name, mode):
    """fma on every finite triple where there are at most FMA_EXHAUSTIVE of them (fp6_e3m2,
    fp6_e2m3: 262,144; e3m2fnuz_b-3: 250,047; fp4_e2m1, e2m1finite_b-5: 4,096; ue2m1finite:
    512), else on 20,000 random triples (see fma_triples) plus all combinations of 10 edge
    values."""
    spec = SPECS[name]
    if len(mo.finite_codes(spec)) ** 3 <= FMA_EXHAUSTIVE:
        trip = all_finite_triples(spec)
    else:
        trip = fma_triples(spec, rng_for("fma", name, mode), 20000)
    check_arith(name, spec, get_format(name), "fma", mode, trip)


def wide_operands(spec: FloatSpec, op: str, rng, n: int):
    """Random operand codes for wider formats, with boundary pairs."""
    if op == "fma":
        return fma_triples(spec, rng, n)
    q = n // 4
    bias, m = spec.bias, spec.mbits
    a1, b1 = random_finite_codes(spec, rng, q), random_finite_codes(spec, rng, q)
    # moderate magnitudes (results in the normal range)
    a2 = random_finite_codes(spec, rng, q, bias - m - 4, bias + m + 4)
    b2 = random_finite_codes(spec, rng, q, bias - m - 4, bias + m + 4)
    a3 = random_finite_codes(spec, rng, q)
    ea = expf_of(a3, spec)
    if op in ("add", "sub"):
        # close exponents: carries, cancellation (half the signs differ)
        eb = ea + rng.integers(-(m + 3), m + 4, q)
    else:
        # products near overflow, near the subnormal range, and in between
        target = rng.choice([spec.emax, spec.emax + 1, spec.emin, spec.emin - m,
                             spec.emin - m - 1, 0], q) + rng.integers(-2, 3, q)
        eb = target - (np.maximum(ea, 1) - bias) + bias
    eb = np.clip(eb, 0, top_expf(spec))
    b3 = keep_finite(fields_to_codes(spec, rng.integers(0, 2, q), eb,
                                     rng.integers(0, 2**m, q)), spec, fallback=0)
    # near-equal magnitudes: a and b differ in the last few bits
    a4 = random_finite_codes(spec, rng, n - 3 * q)
    b4 = keep_finite(np.clip(a4 + rng.integers(-3, 4, len(a4)), 0, (1 << spec.bits) - 1)
                     ^ (rng.integers(0, 2, len(a4)) << (spec.bits - 1)), spec, fallback=0)
    bc = boundary_codes(spec)
    ba, bb = np.meshgrid(bc, bc, indexing="ij")
    return (np.concatenate([a1, a2, a3, a4, ba.ravel()]),
            np.concatenate([b1, b2, b3, b4, bb.ravel()]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS2 + ("fma",))
@pytest.mark.parametrize("name", WIDE)
def test_arith_random(name, op, mode):
    """Wider formats: 4,000 random operand sets per op and mode plus boundary pairs."""
    spec = SPECS[name]
    operands = wide_operands(spec, op, rng_for("wide", name, op, mode), 4000)
    check_arith(name, spec, get_format(name), op, mode, operands)


def special_operands(spec: FloatSpec, op: str):
    """Operand sets where at least one operand is NaN or Inf."""
    codes = mo.all_codes(spec) if spec.bits <= 16 else sample_codes(spec, rng_for("sp"), 0)
    v = mo.ref_decode(codes, spec)
    spec_codes = np.unique(codes[~np.isfinite(v)])
    nan_codes = spec_codes[np.isnan(mo.ref_decode(spec_codes, spec))]
    # every Inf code, and a few NaN codes of each sign (first, last and one in between)
    spec_codes = np.unique(np.concatenate([
        spec_codes[np.isinf(mo.ref_decode(spec_codes, spec))],
        nan_codes[[0, len(nan_codes) // 4, len(nan_codes) // 2, -1]]]))
    fin = boundary_codes(spec)
    if spec.bits <= 8:
        fin = mo.finite_codes(spec)
    pool = np.concatenate([spec_codes, fin])
    if op == "fma":
        small = np.concatenate([spec_codes, boundary_codes(spec)])
        a, b, c = (x.ravel() for x in np.meshgrid(small, small, small, indexing="ij"))
        sel = ~(np.isfinite(mo.ref_decode(a, spec)) & np.isfinite(mo.ref_decode(b, spec))
                & np.isfinite(mo.ref_decode(c, spec)))
        return a[sel], b[sel], c[sel]
    a, b = (x.ravel() for x in np.meshgrid(pool, pool, indexing="ij"))
    sel = ~(np.isfinite(mo.ref_decode(a, spec)) & np.isfinite(mo.ref_decode(b, spec)))
    return a[sel], b[sel]


@pytest.mark.parametrize("op", OPS2 + ("fma",))
@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if s.has_nan])
def test_arith_nan_inf_operands(name, op):
    """NaN in -> NaN; Inf results as IEEE 754 (Inf - Inf, 0 * Inf -> NaN); an Inf result
    is +-Inf under 'ieee' (NaN where the format has no Inf) and +-max under 'saturate'."""
    spec = SPECS[name]
    f = get_format(name)
    operands = special_operands(spec, op)
    for mode in MODES:
        check_arith(name, spec, f, op, mode, operands)


# ----------------------------------------------------------------------------------------
# 5. Flush to zero
# ----------------------------------------------------------------------------------------

FTZ = {  # name -> spec (built with subnormals=False)
    "fp8_e4m3_ftz": FloatSpec(4, 3, 7, "fn", subnormals=False),
    "fp8_e5m2_ftz": FloatSpec(5, 2, 15, "ieee", subnormals=False),
    "fp8_e4m3fnuz_ftz": FloatSpec(4, 3, 8, "fnuz", subnormals=False),
    "e3m4_ftz": FloatSpec(3, 4, 3, "ieee", subnormals=False),
    "fp4_e2m1_ftz": FloatSpec(2, 1, 1, "finite", subnormals=False),
    "bf16_ftz": FloatSpec(8, 7, 127, "ieee", subnormals=False),
    "fp16_ftz": FloatSpec(5, 10, 15, "ieee", subnormals=False),
}


def ftz_format(spec: FloatSpec):
    import formats

    return formats.FloatFormat(spec.ebits, spec.mbits, bias=spec.bias, kind=spec.kind,
                               subnormals=False)


@pytest.mark.parametrize("op", ("quantize",) + OPS2 + ("fma",))
@pytest.mark.parametrize("name", list(FTZ))
def test_flush_to_zero(name, op):
    """subnormals=False: a result that would be subnormal is a zero of the same sign.

    Operands are zero or normal (subnormal operand codes: the test below).
    """
    spec = FTZ[name]
    f = ftz_format(spec)
    sub_spec = spec.replace(subnormals=True)
    rng = rng_for("ftz", name, op)
    if op == "quantize":
        x = quantize_inputs(sub_spec, rng, 5000)
        for mode in MODES:
            exp = mo.oracle_round(x, spec, mode, None)
            check(np.asarray(f.quantize(x, rounding=mode)), exp, f"{name} quantize {mode}", x=x)
        return
    if spec.bits <= 8:
        fc = mo.finite_codes(spec)
    else:
        fc = np.unique(np.concatenate([random_finite_codes(spec, rng, 3000, 1, 20),
                                       random_finite_codes(spec, rng, 3000),
                                       boundary_codes(spec)]))
    v = mo.ref_decode(fc, spec)
    fc = fc[(v == 0) | (np.abs(v) >= spec.min_normal)]
    if op == "fma":
        n = 20000
        operands = (rng.choice(fc, n), rng.choice(fc, n), rng.choice(fc, n))
        c2 = cancelling_addends(sub_spec, operands[0][:5000], operands[1][:5000], rng)
        c2 = np.where(np.abs(mo.ref_decode(c2, spec)) < spec.min_normal, 0, c2)
        operands[2][:5000] = c2
    elif spec.bits <= 8:
        a, b = np.meshgrid(fc, fc, indexing="ij")
        operands = (a.ravel(), b.ravel())
    else:
        n = 20000
        a = rng.choice(fc, n)
        ea = expf_of(a, spec)
        # products and sums landing around the subnormal range
        eb = np.clip(spec.bias + spec.emin - (ea - spec.bias) + rng.integers(-4, 3, n),
                     1, top_expf(spec))
        b = fields_to_codes(spec, rng.integers(0, 2, n), eb, rng.integers(0, 2**spec.mbits, n))
        if op != "mul":
            b = np.clip(a + rng.integers(-3, 4, n), 0, (1 << (spec.bits - 1)) - 1) \
                ^ (1 << (spec.bits - 1)) * rng.integers(0, 2, n)
            b = keep_finite(b, spec, fallback=0)
        b = np.where(np.abs(mo.ref_decode(b, spec)) < spec.min_normal, 0, b)
        operands = (a, b)
    for mode in MODES:
        check_arith(name, spec, f, op, mode, operands, policies=(None,))


@pytest.mark.parametrize("op", OPS2 + ("fma",))
@pytest.mark.parametrize("name", [n for n, spec in FTZ.items() if spec.bits <= 8])
def test_flush_to_zero_reads_subnormal_operands_as_zero(name, op):
    """subnormals=False: an operand's subnormal code reads as a zero of its sign (formats.floats:
    'read as zero when subnormals=False'): every pair of codes, subnormals included, and for fma
    random triples with a subnormal operand in each."""
    spec = FTZ[name]
    f = ftz_format(spec)
    fc = mo.finite_codes(spec)
    if op == "fma":
        rng = rng_for("daz", name, op)
        v = mo.ref_decode(fc, spec)
        subs = fc[(v != 0) & (np.abs(v) < spec.min_normal)]
        n = 20000
        operands = [rng.choice(fc, n), rng.choice(fc, n), rng.choice(fc, n)]
        which = rng.integers(0, 3, n)
        for k in range(3):
            operands[k] = np.where(which == k, rng.choice(subs, n), operands[k])
    else:
        a, b = np.meshgrid(fc, fc, indexing="ij")
        operands = (a.ravel(), b.ravel())
    for mode in MODES:
        check_arith(name, spec, f, op, mode, operands, policies=(None,), daz=True)


# ----------------------------------------------------------------------------------------
# 6. Conversion between formats
# ----------------------------------------------------------------------------------------

CONVERSIONS = [
    ("fp16", "fp8_e4m3"), ("fp16", "fp8_e5m2"), ("bf16", "fp8_e4m3fnuz"), ("fp32", "bf16"),
    ("fp32", "fp16"), ("fp32", "tf32"), ("e5m7", "e3m4"), ("fp8_e5m2", "fp8_e4m3"),
    ("fp8_e4m3", "fp4_e2m1"), ("fp8_e4m3", "fp6_e2m3"), ("e7m3", "fp8_e5m2"),
    ("fp4_e2m1", "fp32"), ("fp8_e4m3", "bf16"), ("fp6_e3m2", "fp8_e4m3fnuz"),
    # into and out of unsigned formats and far biases (negative values -> NaN, or 0)
    ("fp16", "ue4m3fn"), ("fp8_e4m3", "ue2m1finite"), ("ue5m2", "e3m2fnuz_b-3"),
    ("e4m3_b20", "fp16"),
]


@pytest.mark.parametrize("src,dst", CONVERSIONS)
def test_convert(src, dst):
    s_spec, d_spec = SPECS[src], SPECS[dst]
    fs, fd = get_format(src), get_format(dst)
    codes = sample_codes(s_spec, rng_for("conv", src, dst), 30000)
    v = mo.ref_decode(codes, s_spec)
    if not d_spec.has_nan:
        codes, v = codes[~np.isnan(v)], v[~np.isnan(v)]
    codes = codes.astype(code_dtype(s_spec.bits))
    for mode in MODES:
        rounded = mo.rounder(d_spec).round(v, mode)
        for policy in POLICIES:
            out = fs.convert(codes, fd, rounding=mode, overflow=policy)
            check(result_values(out, d_spec), rounded.finalize(policy),
                  f"{src}->{dst} {mode} overflow={policy}", code=codes, x=v)
