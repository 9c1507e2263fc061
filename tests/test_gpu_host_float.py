"""The float kernels of formats/gpu (CUDA source) against the Numba kernels, bit for bit.

Run on the host build of the CUDA source (any machine with a C++ compiler) and on a GPU where
CuPy finds one (the ``gpu_engine`` fixture).  Formats of <= 16 bits are covered exhaustively:
every code decoded, every value and every midpoint between neighbours (and the doubles just
beside them) encoded in every rounding mode; wider formats on 2 * 10^5 random values (10^7 on a
GPU).
"""
import numpy as np
import pytest

import formats

SMALL = ["fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "fp8_e4m3fnuz", "fp8_e5m2fnuz",
         "fp8_e4m3b11fnuz", "fp8_e3m4", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1", "e8m0", "fp16_ftz",
         "ue4m3", "e5m2_b3"]
WIDE = ["fp32", "tf32", "e8m23_ftz", "e10m23"]
MODES = list(formats.MODES)


def _probe_values(fmt) -> np.ndarray:
    """Every value, the midpoints between neighbours and the doubles just beside both, with
    both signs, zeros, infinities, NaN (where the format holds it) and values past the range."""
    v = fmt.values()
    mids = (v[1:] + v[:-1]) / 2
    pts = np.concatenate([v, mids, [fmt.max * 2, fmt.max * 1.5, 2.0 ** -1070]])
    pts = np.concatenate([pts, np.nextafter(pts, np.inf), np.nextafter(pts, -np.inf)])
    pts = np.concatenate([pts, -pts, [0.0, -0.0, np.inf, -np.inf]])
    return np.concatenate([pts, [np.nan]]) if fmt.has_nan else pts


def _random(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * 2.0 ** rng.integers(-140, 140, n)
    x[:8] = [0.0, -0.0, np.inf, -np.inf, 5e-324, -2.0 ** -1022, 1e308, np.nan]
    return x


def _check(engine, fn, *arrays, **kw):
    """``fn`` on the engine gives what it gives on the CPU."""
    engine.same(fn(*map(engine.to, arrays), backend="gpu", **kw),
                fn(*arrays, backend="cpu", **kw), getattr(fn, "__name__", ""))


@pytest.mark.parametrize("name", SMALL)
def test_decode_every_code(gpu_engine, name):
    fmt = formats.get(name)
    codes = np.arange(1 << fmt.bits, dtype=fmt.code_dtype)
    _check(gpu_engine, fmt.decode, codes)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", SMALL)
def test_encode_and_quantize_exhaustive(gpu_engine, name, mode):
    fmt = formats.get(name)
    x = _probe_values(fmt)
    for overflow in fmt.overflow_policies:
        for dtype in (np.float64, np.float32):
            with np.errstate(over="ignore"):            # past float32's range: infinity
                xi = x.astype(dtype)
            for sr_bits in ((1, 8, 32) if mode == "stochastic" else (None,)):
                kw = dict(rounding=mode, overflow=overflow, seed=7, sr_bits=sr_bits)
                _check(gpu_engine, fmt.encode, xi, **kw)
                _check(gpu_engine, fmt.quantize, xi, **kw)


@pytest.mark.parametrize("name", WIDE)
def test_random_values(gpu_engine, name):
    fmt = formats.get(name)
    x = _random(gpu_engine.random_count(200_000), seed=len(name))
    if not fmt.has_nan:
        x = x[~np.isnan(x)]
    for mode in MODES:
        kw = dict(rounding=mode, seed=11)
        _check(gpu_engine, fmt.encode, x, **kw)
        _check(gpu_engine, fmt.quantize, x, **kw)


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp8_e4m3", "e8m0", "tf32"])
def test_float32_bit_patterns(gpu_engine, name):
    """float32 inputs read and float32 results written by integer operations (numsim.cuh's
    ns_load/ns_store; CuPy compiles with flush-to-zero): subnormals of every size, both zeros,
    infinities and NaNs with payloads, quiet and signalling, against the CPU."""
    fmt = formats.get(name)
    words = np.concatenate([np.arange(0, 1 << 23, 4099), np.arange(1 << 23, 1 << 31, 65537),
                            [0x7F800000, 0x7F800001, 0x7FBFFFFF, 0x7FC00000, 0x7FFFFFFF]])
    x = np.concatenate([words, words | 0x80000000]).astype(np.uint32).view(np.float32)
    if not fmt.has_nan:
        x = x[~np.isnan(x)]
    for mode in ("nearest_even", "toward_zero"):
        _check(gpu_engine, fmt.encode, x, rounding=mode)
        _check(gpu_engine, fmt.quantize, x, rounding=mode)


def test_input_dtypes(gpu_engine):
    """float16, integer and 64-bit integer inputs go through the same exact paths."""
    fmt = formats.get("fp8_e4m3")
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal(5000).astype(np.float16),
              rng.integers(-600, 600, 5000).astype(np.int16),
              rng.integers(-2**62, 2**62, 5000, dtype=np.int64),
              rng.integers(0, 2**63, 5000, dtype=np.uint64)]
    bf16 = formats.get("bf16")
    for x in inputs:
        for f in (fmt, bf16):
            _check(gpu_engine, f.encode, x)
            _check(gpu_engine, f.quantize, x)


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2", "bf16", "fp6_e2m3", "fp4_e2m1",
                                  "fp8_e4m3fnuz"])
@pytest.mark.parametrize("mode", MODES)
def test_arithmetic(gpu_engine, name, mode):
    """add/sub/mul/fma on codes: all pairs for <= 8 bits, a strided grid for 16 bits."""
    fmt = formats.get(name)
    codes = np.arange(1 << fmt.bits, dtype=fmt.code_dtype)
    step = 1 if fmt.bits <= 8 else 97
    a, b = np.meshgrid(codes[::step], codes[::step // 2 + 1 if step > 1 else 1])
    c = np.roll(a, 1)
    kw = dict(rounding=mode, seed=5)
    for op, args in (("add", (a, b)), ("sub", (a, b)), ("mul", (a, b)), ("fma", (a, b, c))):
        fn = getattr(fmt, op)
        _check(gpu_engine, fn, *args, **kw)


def test_convert(gpu_engine):
    src, dst = formats.get("bf16"), formats.get("fp8_e5m2")
    codes = np.arange(1 << 16, dtype=np.uint16)
    _check(gpu_engine, src.convert, codes, other=dst)


def test_nan_into_format_without_nan_raises(gpu_engine):
    fmt = formats.get("fp4_e2m1")
    with pytest.raises(ValueError, match="no NaN"):
        fmt.encode(gpu_engine.to(np.array([1.0, np.nan])), backend="gpu")
    with pytest.raises(ValueError, match="no NaN"):
        fmt.quantize(gpu_engine.to(np.array([np.nan])), backend="gpu")


def test_backend_errors():
    fmt = formats.get("fp16")
    with pytest.raises(ValueError, match="unknown backend"):
        fmt.encode([1.0], backend="tpu")
    if formats.gpu.cupy_module() is None:
        with pytest.raises(RuntimeError, match="CuPy"):
            fmt.encode([1.0], backend="gpu")
