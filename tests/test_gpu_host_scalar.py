"""The integer/fixed-point, posit and codebook kernels of formats/gpu (CUDA source) against the
Numba kernels, bit for bit: codes, values (NaN and -0 bit patterns included) and raised errors.

Run on the host build of the CUDA source (any machine with a C++ compiler) and on a GPU where
CuPy finds one (the ``gpu_engine`` fixture).  Formats of <= 16 bits are covered exhaustively
(every code decoded; every value, the midpoints between neighbours and the doubles just beside
them encoded in every rounding mode and overflow policy); 32-bit formats on 10^6 random values
over a wide range (10^7 on a GPU); arithmetic on all pairs for <= 8 bits and on strided or random
pairs above.
"""
import numpy as np
import pytest

import formats
from formats.codebook import FP4_E2M1_TABLE, NF4, CodebookFormat

MODES = list(formats.MODES)
SPECIALS = (0.0, -0.0, np.inf, -np.inf, np.nan)
INTS = ["int1", "uint1", "int4", "uint8", "int8", "fix8_4", "ufix8_3", "fix8_8", "ufix12_12",
        "int16", "fix16_8"]
INTS_WIDE = ["int32", "uint32", "fix32_16", "ufix32_32", "int24", "fix20_3"]
POSITS = ["posit8_0", "posit16_1", "posit16_2", "posit2_0", "posit3_1", "posit5_2", "posit8_4",
          "posit10_3", "posit13_4"]
POSITS_WIDE = ["posit32_2", "posit27_0", "posit32_4", "posit20_1"]
USER_TABLE = (0.75, -3.0, 0.0, 2.5, -0.0, -0.125, 1e300)    # unsorted, both zeros, sums to inf
SYMMETRIC_TABLE = (1.5, 0.5, -0.5, -1.5)                     # no zero: 0 is a tie of +-0.5


def _codebooks():
    rng = np.random.default_rng(4)
    wide = np.unique(rng.standard_normal(256).astype(np.float32)).astype(np.float64)
    return [formats.get("nf4"), CodebookFormat(FP4_E2M1_TABLE, name="fp4_table"),
            CodebookFormat(USER_TABLE, name="user7"), CodebookFormat(SYMMETRIC_TABLE, name="sym4"),
            CodebookFormat(wide, name="user256")]


CODEBOOKS = _codebooks()


def _outcome(fn, *args, **kw):
    """The result of ``fn``, or the (type, message) of the exception it raised."""
    try:
        return fn(*args, **kw)
    except (ValueError, TypeError) as err:
        return type(err), str(err)


def _check(engine, fn, *arrays, **kw):
    """``fn`` on the engine equals ``fn`` on the CPU: the same bits, or the same error."""
    ref = _outcome(fn, *arrays, backend="cpu", **kw)
    got = _outcome(fn, *map(engine.to, arrays), backend="gpu", **kw)
    if isinstance(ref, tuple):
        assert got == ref
    else:
        assert not isinstance(got, tuple), got
        engine.same(got, ref, getattr(fn, "__name__", ""))


def _options(fmt, mode):
    """The keyword sets to try with ``mode``: every overflow policy, and for stochastic rounding
    sr_bits 1, 8 and 32 under the default policy."""
    opts = [dict(rounding=mode, overflow=ovf, seed=7) for ovf in fmt.overflow_policies]
    if mode == "stochastic":
        opts += [dict(rounding=mode, sr_bits=sr, seed=9) for sr in (1, 8)]
    return opts


def _probe_values(fmt) -> np.ndarray:
    """Every finite value, the midpoints between neighbours (geometric ones too for posits,
    whose string midpoints are geometric where no fraction bits remain) and the doubles just
    beside all of them, with both signs, values past the range and tiny and subnormal doubles."""
    v = np.unique(fmt.table + 0.0) if isinstance(fmt, CodebookFormat) else fmt.values()
    mids = [(v[1:] + v[:-1]) / 2]
    if fmt.kind == "posit":
        pos = v[v > 0]
        mids.append(np.sqrt(pos[1:] * pos[:-1]))
    edges = [fmt.max * 2, fmt.max * 1.5, 2.0 ** 64, 2.0 ** 70, 1e300, 2.0 ** -1070, 1e-300]
    pts = np.concatenate([v, *mids, edges])
    pts = np.concatenate([pts, np.nextafter(pts, np.inf), np.nextafter(pts, -np.inf)])
    return np.concatenate([pts, -pts])


def _random_values(n, seed, scale=1.0) -> np.ndarray:
    """Finite random values over 2**-80 .. 2**80 times ``scale``, with zeros, subnormals and
    huge values among them."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * 2.0 ** rng.integers(-80, 80, n) * scale
    x[:8] = [0.0, -0.0, 5e-324, -2.0 ** -1022, 1e308, -1e300, 2.0 ** 63, -1.0]
    return x


def _f32(x):
    """``x`` cast to float32, saturating instead of overflowing to +-Inf."""
    big = float(np.finfo(np.float32).max)
    return np.clip(x, -big, big).astype(np.float32)


def _encode_all(engine, fmt, x, modes=MODES):
    """encode of float64 ``x`` and quantize of its float32 cast in every mode and option (for
    nearest_even also the other dtypes), then the special inputs, whose errors must match."""
    x32 = _f32(x)
    for mode in modes:
        for kw in _options(fmt, mode):
            _check(engine, fmt.encode, x, **kw)
            _check(engine, fmt.quantize, x32, **kw)
            if mode == "nearest_even":
                _check(engine, fmt.encode, x32, **kw)
                _check(engine, fmt.quantize, x, **kw)
            for special in SPECIALS:
                _check(engine, fmt.encode, np.array([1.0, special]), **kw)
                _check(engine, fmt.quantize, np.array([special, 1.0], np.float32), **kw)


def _encode_wide(engine, fmt, x):
    """Every mode and option on the first 10^5 of ``x``, the two main modes on all of it."""
    _encode_all(engine, fmt, x[:100_000])
    for mode in ("nearest_even", "stochastic"):
        _check(engine, fmt.encode, x, rounding=mode, seed=3)
        _check(engine, fmt.quantize, _f32(x), rounding=mode, seed=3)


def _code_grid(fmt, n_max: int, seed: int = 1):
    """(a, b, c) code arrays: all pairs when there are at most n_max of them, else n_max random
    pairs led by all pairs of the extreme and middle codes."""
    size = 1 << fmt.bits
    if size * size <= n_max:
        codes = np.arange(size, dtype=fmt.code_dtype)
        a, b = (g.ravel() for g in np.meshgrid(codes, codes))
    else:
        rng = np.random.default_rng(seed)
        a, b = (rng.integers(0, size, n_max).astype(fmt.code_dtype) for _ in range(2))
        ends = np.array([0, 1, 2, size // 2 - 1, size // 2, size // 2 + 1, size - 2, size - 1],
                        dtype=fmt.code_dtype)
        a[:64], b[:64] = (g.ravel() for g in np.meshgrid(ends, ends))
    return a, b, np.roll(a, 7)


def _arith_all(engine, fmt, n_max):
    a, b, c = _code_grid(fmt, n_max)
    for mode in MODES:
        for kw in _options(fmt, mode):
            for op, args in (("add", (a, b)), ("sub", (a, b)), ("mul", (a, b)),
                             ("fma", (a, b, c))):
                _check(engine, getattr(fmt, op), *args, **kw)


# ---- integers and fixed point ---------------------------------------------------------------

@pytest.mark.parametrize("name", INTS + POSITS)
def test_exhaustive(gpu_engine, name):
    """Integers, fixed point and posits of <= 16 bits: every code decoded, every probe value
    encoded in every mode and overflow policy."""
    fmt = formats.get(name)
    _check(gpu_engine, fmt.decode, np.arange(1 << fmt.bits, dtype=fmt.code_dtype))
    _encode_all(gpu_engine, fmt, _probe_values(fmt))


@pytest.mark.parametrize("name", INTS_WIDE)
def test_int_wide_random(gpu_engine, name):
    fmt = formats.get(name)
    n = gpu_engine.random_count(100_000)
    codes = np.random.default_rng(2).integers(0, 1 << fmt.bits, n).astype(fmt.code_dtype)
    _check(gpu_engine, fmt.decode, codes)
    x = _random_values(gpu_engine.random_count(1_000_000), seed=fmt.bits,
                       scale=2.0 ** (fmt.bits - fmt.frac_bits - 8))
    _encode_wide(gpu_engine, fmt, x)


@pytest.mark.parametrize("name", ["int8", "uint8", "fix8_4", "ufix8_3", "int1", "fix16_8",
                                  "int32", "ufix32_32", "fix32_16"])
def test_int_arithmetic(gpu_engine, name):
    _arith_all(gpu_engine, formats.get(name), 1 << 16)


@pytest.mark.parametrize("name", ["int8", "uint4", "fix8_4", "ufix16_8", "fix32_30", "uint32"])
def test_int_integer_inputs(gpu_engine, name):
    """Integer dtypes take the exact path (encode_int_kernel), each overflow policy."""
    fmt = formats.get(name)
    rng = np.random.default_rng(5)
    inputs = [rng.integers(-300, 300, 5000).astype(np.int16),
              rng.integers(0, 255, 5000).astype(np.uint8),
              rng.integers(-2**31, 2**31, 5000).astype(np.int32),
              rng.integers(0, 2**32, 5000).astype(np.uint32),
              np.concatenate([rng.integers(-2**63, 2**63 - 1, 5000, dtype=np.int64),
                              np.array([-2**63, 2**63 - 1, 0, -1, 1, 2**32, -2**32],
                                       dtype=np.int64)]),
              np.concatenate([rng.integers(0, 2**64 - 1, 5000, dtype=np.uint64),
                              np.array([2**64 - 1, 2**63, 2**63 - 1, 0], dtype=np.uint64)])]
    for x in inputs:
        for overflow in fmt.overflow_policies:
            _check(gpu_engine, fmt.encode, x, overflow=overflow)
            _check(gpu_engine, fmt.quantize, x, overflow=overflow)


def test_int_errors(gpu_engine):
    """NaN raises under every policy and +-Inf under wrap, with the CPU's message, also when the
    values come from convert."""
    fmt = formats.get("fix8_4")
    for x in ([1.0, np.nan], [np.inf, 2.0, -np.inf]):
        for overflow in fmt.overflow_policies:
            _check(gpu_engine, fmt.encode, np.array(x), overflow=overflow)
    with pytest.raises(ValueError, match="cannot wrap"):
        fmt.encode(gpu_engine.to(np.array([-np.inf])), overflow="wrap", backend="gpu")
    src = formats.get("posit8_0")
    _check(gpu_engine, src.convert, np.arange(256, dtype=np.uint8), other=fmt)   # NaR raises
    _check(gpu_engine, src.convert, np.arange(1, 128, dtype=np.uint8), other=fmt,
           overflow="wrap")


# ---- posits ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", POSITS_WIDE)
def test_posit_wide_random(gpu_engine, name):
    fmt = formats.get(name)
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 1 << fmt.bits, gpu_engine.random_count(100_000)).astype(fmt.code_dtype)
    codes[:4] = [0, 1, 1 << (fmt.bits - 1), (1 << fmt.bits) - 1]
    _check(gpu_engine, fmt.decode, codes)
    x = _random_values(gpu_engine.random_count(1_000_000), seed=fmt.bits)
    x[10:20] = fmt.decode(codes[4:14])                               # exact values
    _encode_wide(gpu_engine, fmt, x)


@pytest.mark.parametrize("name", ["posit8_0", "posit8_2", "posit4_1", "posit5_4", "posit16_1",
                                  "posit16_2", "posit32_2", "posit27_3"])
def test_posit_arithmetic(gpu_engine, name):
    _arith_all(gpu_engine, formats.get(name), 1 << 16)


@pytest.mark.parametrize("name", ["posit8_0", "posit16_1", "posit32_2", "posit32_4"])
def test_posit_integer_inputs(gpu_engine, name):
    """int64/uint64 take the exact integer path in every mode; narrower integers go through
    float64 (checked in one mode: the Numba loops compile per mode and dtype)."""
    fmt = formats.get(name)
    rng = np.random.default_rng(6)
    big = rng.integers(-2**63, 2**63 - 1, 5000, dtype=np.int64) >> rng.integers(0, 63, 5000)
    wide = [np.concatenate([big, np.array([-2**63, 2**63 - 1, 0, -1, 1, 3, -5], np.int64)]),
            np.concatenate([big.view(np.uint64), np.array([2**64 - 1, 2**63, 0], np.uint64)])]
    for x in wide:
        for mode in MODES:
            for kw in _options(fmt, mode):
                _check(gpu_engine, fmt.encode, x, **kw)
                _check(gpu_engine, fmt.quantize, x, **kw)
    narrow = rng.integers(-2**31, 2**31, 5000).astype(np.int32)
    _check(gpu_engine, fmt.encode, narrow)
    _check(gpu_engine, fmt.quantize, narrow)


# ---- codebooks ------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", CODEBOOKS, ids=lambda f: f.name)
def test_codebook_exhaustive(gpu_engine, fmt):
    _check(gpu_engine, fmt.decode, np.arange(fmt.table.size, dtype=np.uint8))
    _check(gpu_engine, fmt.decode, np.arange(fmt.table.size, dtype=np.int64)[::-1])
    x = _probe_values(fmt)
    rng = np.random.default_rng(8)
    _encode_all(gpu_engine, fmt, np.concatenate([x, rng.standard_normal(20_000) * fmt.max]))
    _encode_all(gpu_engine, fmt, rng.integers(-50, 50, 2000).astype(np.int32))


@pytest.mark.parametrize("fmt", CODEBOOKS, ids=lambda f: f.name)
def test_codebook_arithmetic(gpu_engine, fmt):
    """add/sub/mul on all pairs, fma on all triples of <= 16 codes (else random ones)."""
    size = fmt.table.size
    codes = np.arange(size, dtype=np.uint8)
    if size <= 16:
        a, b, c = (g.ravel() for g in np.meshgrid(codes, codes, codes))
    else:
        a, b, c = np.random.default_rng(9).integers(0, size, (3, 1 << 16)).astype(np.uint8)
    for mode in MODES:
        for kw in _options(fmt, mode):
            for op in ("add", "sub", "mul"):
                _check(gpu_engine, getattr(fmt, op), a, b, **kw)
            _check(gpu_engine, fmt.fma, a, b, c, **kw)


def test_codebook_errors(gpu_engine):
    fmt = CODEBOOKS[2]
    _check(gpu_engine, fmt.encode, np.array([0.5, np.nan, np.nan]))
    _check(gpu_engine, fmt.decode, np.array([0, 7], dtype=np.uint8))       # outside the table
    _check(gpu_engine, fmt.add, np.array([1, 2], dtype=np.uint8), np.array([9, 0], np.uint8))


# ---- across families ------------------------------------------------------------------------

def test_convert_between_families(gpu_engine):
    p16, nf4, fix = formats.get("posit16_1"), formats.get("nf4"), formats.get("fix8_6")
    codes = np.arange(1 << 16, dtype=np.uint16)
    codes = codes[codes != 1 << 15]                                       # NaR raises in ints
    for mode in ("stochastic", "toward_negative"):
        for dst in (fix, nf4):
            for kw in _options(dst, mode):
                _check(gpu_engine, p16.convert, codes, other=dst, **kw)
    _check(gpu_engine, nf4.convert, np.arange(16, dtype=np.uint8), other=p16)


def test_other_dtypes_and_shapes(gpu_engine):
    """float16 values, int64 and uint64 code arrays and broadcast operands take the same paths."""
    rng = np.random.default_rng(13)
    x16 = (rng.standard_normal(4000) * 4).astype(np.float16)
    for name in ("fix8_4", "posit16_1", "posit8_2", "nf4"):
        fmt = formats.get(name)
        _check(gpu_engine, fmt.encode, x16, rounding="stochastic", seed=2)
        _check(gpu_engine, fmt.quantize, x16, rounding="toward_negative")
        codes = rng.integers(0, 1 << fmt.bits, 4000)
        _check(gpu_engine, fmt.decode, codes.reshape(40, 100))
        _check(gpu_engine, fmt.mul, codes.reshape(40, 100), codes[:100].astype(np.uint64))


def test_zero_d_inputs_and_float32_subnormal_results(gpu_engine):
    """0-d inputs give 0-d results, as on the CPU.  A float32 result that holds float32
    subnormals keeps them: on a GPU a numsim kernel writes it (CuPy's own cast flushes them)."""
    for name in ("fp8_e4m3", "fix8_4", "posit16_1", "nf4"):
        fmt = formats.get(name)
        for x in (np.float64(0.3), np.float32(-2.5)):
            _check(gpu_engine, fmt.encode, np.asarray(x))
            _check(gpu_engine, fmt.quantize, np.asarray(x))
        code = np.asarray(fmt.encode(np.float64(0.3), backend="cpu"))
        _check(gpu_engine, fmt.decode, code)
        _check(gpu_engine, fmt.add, code, code)
    tiny = CodebookFormat([0.0, 2.0 ** -140, -2.0 ** -149, 1.0], name="tiny4")
    assert tiny.fits_in(np.float32)                    # so quantize returns float32
    x = np.array([2.0 ** -140, -2.0 ** -149, 2.0 ** -141, 1.0, 0.7, -1e-45], dtype=np.float32)
    for mode in MODES:
        _check(gpu_engine, tiny.quantize, x, rounding=mode, seed=1)


def test_empty_and_byte_swapped_inputs(gpu_engine):
    """Empty arrays launch nothing and keep their shape.  NumPy input with ``backend="gpu"`` is
    copied to the engine and its result back (NumPy in, NumPy out), in either byte order."""
    x = np.linspace(-3, 3, 41)
    for name in ("fp8_e4m3", "int8", "posit16_1", "nf4"):
        fmt = formats.get(name)
        _check(gpu_engine, fmt.encode, np.zeros((0, 3)))
        _check(gpu_engine, fmt.quantize, np.zeros((2, 0), dtype=np.float32))
        _check(gpu_engine, fmt.decode, np.zeros(0, dtype=np.uint8))
        got = fmt.quantize(x.astype(">f8"), rounding="toward_zero", backend="gpu")
        assert type(got) is np.ndarray
        gpu_engine.same(got, fmt.quantize(x, rounding="toward_zero", backend="cpu"))


def test_stochastic_independent_of_chunking(gpu_engine):
    """One GPU launch draws the same random bits as the CPU's chunked calls (element index)."""
    x = np.random.default_rng(12).standard_normal(10_000)
    for fmt in (formats.get("fix16_8"), formats.get("posit16_1"), formats.get("nf4")):
        with formats.chunk_size(999):
            ref = fmt.encode(x, rounding="stochastic", seed=3, sr_bits=8, backend="cpu")
        got = fmt.encode(gpu_engine.to(x), rounding="stochastic", seed=3, sr_bits=8,
                         backend="gpu")
        gpu_engine.same(got, ref)
