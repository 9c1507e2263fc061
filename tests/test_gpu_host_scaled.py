"""The CUDA scaled-format kernels (formats/gpu/scaled.cu) against the Numba kernels, bit for bit.

Every test runs the public API with ``backend="cpu"`` and with ``backend="gpu"`` on the engine of
the ``gpu_engine`` fixture (the CUDA sources built as C++ on the host, or CuPy on a GPU) and
compares element codes, scale codes, zero points, clip counts, flags, the tensor scale, quantized
and decoded values as bit patterns (NaN payloads included).  Inputs span a wide dynamic range
with zeros, -0, subnormals, huge values, blocks of zeros, blocks whose scale clamps and blocks
holding NaN or Inf; shapes leave ragged last blocks.
"""
from __future__ import annotations

import numpy as np
import pytest

from formats import CodebookFormat, ScaledFormat, gpu
from formats.codebook import FP4_E2M1_TABLE
from formats.hadamard import hadamard_transform
from formats import scaled_kernels as sk
from formats.registry import get, scaled_names

F32_SPECIALS = (0.0, -0.0, 1e-45, -1e-45, 1e-39, -3e38, 3e38)
F64_SPECIALS = (0.0, -0.0, 5e-324, -1e-310, 1e-300, -1e300, 1.7e308)
NONFINITE = (np.inf, -np.inf, np.nan, -np.nan)
RULES = ("floor", "ceil", "even", "rceil")
MODES = ("nearest_even", "nearest_away", "toward_zero", "toward_positive", "toward_negative",
         "stochastic")


def _data(rng, shape, dtype=np.float32, nonfinite: float = 0.004) -> np.ndarray:
    """Random values: rows of normal values spread over 2**+-6 (or of integers up to 255, which
    hit rounding ties) times 2**k (k mostly within +-20, some rows far out, so that scales
    clamp), a 2% sprinkle of special values, a ``nonfinite`` fraction of +-Inf/NaN, and some
    runs of zeros."""
    f32 = np.dtype(dtype) == np.float32
    rows = int(np.prod(shape[:-1]))
    extreme = np.array([-140, -60, 60, 100] if f32 else [-1000, -300, 300, 1000])
    k = np.where(rng.random(rows) < 0.1, rng.choice(extreme, rows), rng.integers(-20, 21, rows))
    x = rng.standard_normal((rows, shape[-1])) * np.exp2(rng.uniform(-6, 6, (rows, shape[-1])))
    grid_rows = rng.random(rows) < 0.15         # small integers: ties in element and scale
    x[grid_rows] = rng.integers(-255, 256, (int(grid_rows.sum()), shape[-1]))
    x = np.ldexp(x, k[:, None])
    flat = x.reshape(-1)
    n = flat.size
    flat[rng.choice(n, n // 50, replace=False)] = rng.choice(F32_SPECIALS if f32 else
                                                             F64_SPECIALS, n // 50)
    if nonfinite:
        m = max(int(n * nonfinite), 1)
        flat[rng.choice(n, m, replace=False)] = rng.choice(NONFINITE, m)
    zero_rows = rng.choice(rows, max(rows // 8, 1), replace=False)
    x[zero_rows, : shape[-1] // 2] = 0.0
    return x.reshape(shape).astype(dtype)


def _check(engine, fmt, x, axis: int = -1, **kw):
    """encode, quantize and decode of ``x`` on both engines, compared bit for bit; returns the
    CPU's ScaledTensor."""
    fmt = get(fmt) if isinstance(fmt, str) else fmt
    on = engine.to(x)
    ref = fmt.encode(x, axis, backend="cpu", **kw)
    got = fmt.encode(on, axis, backend="gpu", **kw)
    assert gpu.is_device_array(got.elements) == (engine.name != "host")
    for field in ("elements", "scales", "clipped", "flags", "zero_points"):
        r, g = getattr(ref, field), getattr(got, field)
        assert (r is None) == (g is None), field
        if r is not None:
            engine.same(g, r, f"{fmt.name} {field}")
    engine.same(np.float64(got.tensor_scale), np.float64(ref.tensor_scale),
                f"{fmt.name} tensor scale")
    engine.same(fmt.quantize(on, axis, backend="gpu", **kw),
                fmt.quantize(x, axis, backend="cpu", **kw), f"{fmt.name} quantize")
    engine.same(fmt.decode(got, backend="gpu"), fmt.decode(ref, backend="cpu"),
                f"{fmt.name} decode")
    return ref


@pytest.mark.parametrize("name", scaled_names())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_named_formats(gpu_engine, name, dtype):
    rng = np.random.default_rng(1)
    blockwise = isinstance(get(name).group, int)
    x = _data(rng, (150, 200), dtype, nonfinite=0.004 if blockwise else 0.0)
    ref = _check(gpu_engine, name, x)
    assert ref.n_nan_groups > 0 or not blockwise            # the data reach every case
    assert ref.n_scale_clamped > 0 or dtype == np.float32
    assert ref.n_clipped > 0 or dtype == np.float32


@pytest.mark.parametrize("element", ["fp8_e4m3", "fp8_e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1",
                                     "fix8_6", "int4", "nf4"])
@pytest.mark.parametrize("rule", RULES)
def test_power_of_two_rules(gpu_engine, element, rule):
    rng = np.random.default_rng(2)
    fmt = ScaledFormat(element, "e8m0", 32, rule)
    for dtype in (np.float32, np.float64):
        _check(gpu_engine, fmt, _data(rng, (64, 330), dtype))


def _edge_amaxes(fmt: ScaledFormat, dtype) -> np.ndarray:
    """Group maxima on the edges of the scale rules: the element's largest value and the
    midpoints below and above it and below the next power of two, at the element precision, each
    with its neighbours one float ulp away, over a range of binades."""
    top = float(2 ** min(fmt._plan[sk.P_ELEM_PREC], 52))
    base = [fmt._elem["max"], top - 0.5, top - 1.5, top - 1.0, top]
    base = np.array([b * 2.0 ** e for b in base for e in (-30, -3, 0, 7, 40)], dtype=dtype)
    return np.concatenate([base, np.nextafter(base, dtype(np.inf)),
                           np.nextafter(base, dtype(0))])


@pytest.mark.parametrize("element", ["fp8_e4m3", "fp6_e2m3", "fp4_e2m1", "fix8_6", "int4"])
@pytest.mark.parametrize("rule", RULES + ("amax",))
def test_scale_rule_edges(gpu_engine, element, rule):
    """Groups whose maximum sits on a rounding edge of the scale rule (ties, one ulp off)."""
    rng = np.random.default_rng(12)
    fmt = ScaledFormat(element, "e8m0" if rule != "amax" else "fp8_e4m3", 8, rule)
    for dtype in (np.float32, np.float64):
        amax = _edge_amaxes(fmt, dtype)
        x = (amax[:, None] * rng.uniform(-1, 1, (amax.size, 8))).astype(dtype)
        x[np.arange(amax.size), rng.integers(0, 8, amax.size)] = amax * rng.choice([-1, 1],
                                                                                    amax.size)
        _check(gpu_engine, fmt, x)


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxint8", "int8_channel", "uint4_channel",
                                  "int4_g16", "nvfp4"])
def test_every_axis(gpu_engine, name):
    rng = np.random.default_rng(3)
    x = _data(rng, (21, 34, 40), np.float32, nonfinite=0.0)
    for axis in (0, 1, 2, -2):
        _check(gpu_engine, name, x, axis)


@pytest.mark.parametrize("name", ["mxfp4", "mxfp6_e2m3", "mxint8", "nvfp4", "nf4_g64",
                                  "int4_g32", "uint4_g32", "int8_channel", "fp8_e4m3_1x128"])
@pytest.mark.parametrize("mode", MODES)
def test_rounding_modes(gpu_engine, name, mode):
    rng = np.random.default_rng(4)
    x = _data(rng, (40, 260), np.float32, nonfinite=0.0 if name == "int8_channel" else 0.002)
    for sr_bits in ((1, 8, 32) if mode == "stochastic" else (None,)):
        _check(gpu_engine, name, x, rounding=mode, seed=11, sr_bits=sr_bits)


@pytest.mark.parametrize("rule", RULES)
def test_unsorted_codebook_element(gpu_engine, rule):
    """A table in code order that is not sorted (the e2m1 values, negatives after positives)
    with every power-of-two rule (rule even keeps a table's full precision) and mode."""
    fmt = ScaledFormat(CodebookFormat(FP4_E2M1_TABLE, "e2m1_table"), "e8m0", 32, rule)
    x = _data(np.random.default_rng(9), (24, 100), np.float32)
    for mode in MODES:
        _check(gpu_engine, fmt, x, rounding=mode, seed=2)


@pytest.mark.parametrize("group", [16, 64, "channel", "tensor", (8, 24)])
@pytest.mark.parametrize("scale", ["fp32", "fp16", "bf16", "fp8_e4m3"])
@pytest.mark.parametrize("element", ["uint4", "uint8"])
def test_zero_points(gpu_engine, group, scale, element):
    rng = np.random.default_rng(5)
    fmt = ScaledFormat(element, scale, group, "amax")
    x = _data(rng, (48, 120), np.float32, nonfinite=0.0)
    x[:8] = np.abs(x[:8])                      # all-positive and all-negative groups too
    x[8:16] = -np.abs(x[8:16])
    _check(gpu_engine, fmt, x)
    _check(gpu_engine, fmt, x, rounding="stochastic", seed=5, sr_bits=8)


@pytest.mark.parametrize("scale", ["ue4m3fn", "fp8_e4m3", "bf16", "fp16"])
@pytest.mark.parametrize("scale_rounding", ["nearest_even", "toward_positive"])
@pytest.mark.parametrize("tensor_scale", [True, False])
def test_amax_scales(gpu_engine, scale, scale_rounding, tensor_scale):
    rng = np.random.default_rng(6)
    fmt = ScaledFormat("fp4_e2m1", scale, 16, "amax", scale_rounding=scale_rounding,
                       tensor_scale=tensor_scale)
    for dtype in (np.float32, np.float64):
        _check(gpu_engine, fmt, _data(rng, (50, 170), dtype))


@pytest.mark.parametrize("fmt", [ScaledFormat("fp8_e4m3", "fp32", (32, 48), "amax"),
                                 ScaledFormat("int8", "bf16", (16, 16), "amax"),
                                 ScaledFormat("fp4_e2m1", "e8m0", (4, 8), "rceil")])
def test_tiles(gpu_engine, fmt):
    rng = np.random.default_rng(7)
    _check(gpu_engine, fmt, _data(rng, (3, 70, 100), np.float32, nonfinite=0.0002))
    _check(gpu_engine, fmt, _data(rng, (70, 100), np.float64, nonfinite=0.0))


@pytest.mark.parametrize("name", ["mxfp4", "int4_g32", "uint8_g32", "nf4_g64", "int8_channel"])
@pytest.mark.parametrize("calibration", ["percentile", "mse"])
def test_calibration(gpu_engine, name, calibration):
    rng = np.random.default_rng(8)
    x = _data(rng, (24, 128), np.float32, nonfinite=0.0)
    _check(gpu_engine, name, x, calibration=calibration, percentile=99.0, mse_grid=4)


def test_hadamard(gpu_engine):
    rng = np.random.default_rng(9)
    fmt = ScaledFormat("fp4_e2m1", "ue4m3fn", 16, "amax", tensor_scale=True, hadamard=16,
                       hadamard_seed=3)
    x = _data(rng, (20, 64), np.float32, nonfinite=0.0)
    _check(gpu_engine, fmt, x)
    _check(gpu_engine, fmt, x.T.copy(), axis=0)


def test_hadamard_transform_of_engine_arrays(gpu_engine):
    """The public transform on the engine's arrays (CuPy ones take the array-module path), both
    ways, float32 subnormals included (widened by the engine, not by CuPy's flushing cast)."""
    x = np.random.default_rng(3).standard_normal((6, 32)).astype(np.float32)
    x[0, :4] = [1e-40, -1e-42, 0.0, -0.0]
    for inverse in (False, True):
        got = hadamard_transform(gpu_engine.to(x), 16, axis=1, seed=4, inverse=inverse)
        gpu_engine.same(got, hadamard_transform(x, 16, axis=1, seed=4, inverse=inverse))


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4", "int8_tensor", "uint4_channel", "nf4_g64"])
def test_special_inputs(gpu_engine, name):
    for x in (np.zeros((3, 40)), np.full((2, 33), np.nan), np.full((2, 33), -np.inf),
              np.array([[np.inf, 1.0, -2.0]]), np.zeros((0, 5)), np.array([-3.5]),
              np.arange(-50, 50, dtype=np.int64).reshape(4, 25),
              np.linspace(-1, 1, 96).astype(np.float16).reshape(2, 48)):
        _check(gpu_engine, name, x)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["nf4_g64", "int4_g128_e8m0", "uint8_g64_e8m0", "nvfp4",
                                  "int8_channel"])
def test_tiny_quotients_and_scales_below_e8m0(gpu_engine, name, mode):
    """Elements whose quotient by the group's scale lies in float64's subnormal range, and groups
    so small that an e8m0 scale would fall below 2**-127 (held there and counted clamped)."""
    x = np.zeros((4, 128))
    x[0, :8] = [1.5, 5e-324, -5e-324, 1e-310, -1e-310, 2.0 ** -1000, -(2.0 ** -1000), 3.0]
    x[1, :4] = [7 * 2.0 ** -140, -(2.0 ** -150), 2.0 ** -149, -(2.0 ** -133)]
    x[2] = np.ldexp(np.linspace(-1, 1, 128), -1020)
    x[3] = np.random.default_rng(5).standard_normal(128)
    _check(gpu_engine, name, x, rounding=mode, seed=3)


@pytest.mark.parametrize("family, names", [
    ("mx", ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8",
            "mxfp4_rceil", "mxfp8_e4m3_even")),
    ("nvfp4", ("nvfp4", "nvfp4_up")),
    ("bfp", ("bfp8_16", "bfp4_32")),
    ("int", ("int8_g32", "int4_g128", "int8_channel", "int4_tensor")),
    ("zero_point", ("uint4_g64", "uint8_channel")),
    ("codebook", ("nf4_g64", "nf4_g32")),
    ("tiles", ("fp8_e4m3_128x128",))])
def test_random_values_per_family(gpu_engine, family, names):
    """At least 10**6 random values per family (10**7 on a GPU), float32, in nearest-even and
    stochastic."""
    rng = np.random.default_rng(10)
    per = -(-gpu_engine.random_count(1_000_000) // len(names))
    for i, name in enumerate(names):
        blockwise = isinstance(get(name).group, int)
        x = _data(rng, (per // 1000 + 1, 1000), np.float32, 0.001 if blockwise else 0.0)
        _check(gpu_engine, name, x, rounding="stochastic" if i % 2 else "nearest_even", seed=i)


def _raised(call):
    try:
        call()
    except Exception as e:                   # the type and message are what is compared
        return type(e), str(e)
    return None


@pytest.mark.parametrize("case", range(9))
def test_same_errors(gpu_engine, case):
    fmt, x, kw = get("mxfp4"), np.ones((4, 32)), {}
    if case == 0:
        x = np.float64(1.0)
    elif case == 1:
        kw = {"axis": 2}
    elif case == 2:
        fmt = ScaledFormat("fp4_e2m1", group=32, pad=False)
        x = np.ones((4, 33))
    elif case == 3:
        fmt = ScaledFormat("fp4_e2m1", hadamard=16)
        x = np.ones((4, 40))
    elif case == 4:
        kw = {"calibration": "median"}
    elif case == 5:
        fmt, x = get("fp8_e4m3_128x128"), np.ones(10)
    elif case == 6:
        x = np.array([[2 ** 60 + 1, 1]], dtype=np.int64)
    elif case == 7:
        kw = {"rounding": "stochastic", "sr_bits": 0}
    elif case == 8:
        kw = {"axis": 1.5}
    cpu = _raised(lambda: fmt.encode(x, backend="cpu", **kw))
    assert cpu is not None
    arr = gpu_engine.to(np.asarray(x))
    assert _raised(lambda: fmt.encode(arr, backend="gpu", **kw)) == cpu
    assert _raised(lambda: fmt.quantize(arr, backend="gpu", **kw)) == _raised(
        lambda: fmt.quantize(x, backend="cpu", **kw))


def test_decode_errors(gpu_engine):
    st = get("mxfp4").encode(np.ones((2, 32)))
    for fmt, arg in ((get("nvfp4"), st), (get("mxfp4"), np.ones(3))):
        assert _raised(lambda: fmt.decode(arg, backend="gpu")) == _raised(
            lambda: fmt.decode(arg, backend="cpu"))
