"""``quantize(x, out=...)``: the values written into a caller's array equal those of a plain
``quantize(x)`` bit for bit (on the CPU and on the GPU engines), ``out`` itself comes back, an
``out`` that overlaps ``x`` (in-place quantize) still gives the plain result, and an unfit ``out``
is refused with a clear error before anything is written."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import formats


def _data(shape=(6, 200), dtype=np.float32, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    span = 10 if dtype == np.float16 else 30
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-span, span, shape))
    x.reshape(-1)[::37] = 0.0
    return x.astype(dtype)


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.view(f"u{a.dtype.itemsize}")


SCALED = [("mxfp8_e4m3", {}), ("mxfp4", {"rounding": "stochastic", "seed": 3}),
          ("nvfp4", {}), ("int4_g128", {}), ("uint4_g32", {}), ("int8_channel", {}),
          ("int8_tensor", {"calibration": "mse", "mse_grid": 4}), ("nf4_g64", {}),
          ("fp8_e4m3_128x128", {})]


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("name, kw", SCALED, ids=[s[0] for s in SCALED])
def test_scaled_out_equals_quantize(name, kw, axis):
    fmt = formats.get(name)
    x = _data()
    ref = fmt.quantize(x, axis, **kw)
    out = np.full(x.shape, np.nan)
    got = fmt.quantize(x, axis, out=out, **kw)
    assert got is out
    np.testing.assert_array_equal(_bits(out), _bits(ref))


def test_scaled_hadamard_out_equals_quantize():
    fmt = formats.ScaledFormat("fp4_e2m1", "e8m0", 32, hadamard=32, hadamard_seed=5)
    x = _data((4, 96), np.float64)
    ref = fmt.quantize(x)
    out = np.full_like(ref, np.nan)
    assert fmt.quantize(x, out=out) is out
    np.testing.assert_array_equal(_bits(out), _bits(ref))


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "int4_g128", "nvfp4"])
def test_scaled_in_place(name):
    """float64 input quantized into itself equals quantizing a copy (tiles and groups read
    their amax before any element is written; the overlap is detected and copied)."""
    fmt = formats.get(name)
    x = _data(dtype=np.float64)
    ref = fmt.quantize(x.copy())
    assert fmt.quantize(x, out=x) is x
    np.testing.assert_array_equal(_bits(x), _bits(ref))


@pytest.mark.parametrize("name, in_dtype, out_dtype", [
    ("fp8_e4m3", np.float32, np.float32), ("fp16", np.float32, np.float32),
    ("bf16", np.float16, np.float64), ("fp8_e5m2", np.float16, np.float16),
    ("posit16_1", np.float64, np.float64), ("int8", np.int32, np.float64),
    ("fp32", np.float64, np.float64)])
def test_scalar_out_equals_quantize(name, in_dtype, out_dtype):
    fmt = formats.get(name)
    x = _data(dtype=in_dtype) if in_dtype != np.int32 else np.arange(-300, 300, dtype=np.int32)
    ref = fmt.quantize(x, rounding="stochastic", seed=9)
    assert ref.dtype == out_dtype
    out = np.full(x.shape, np.nan, out_dtype)
    with formats.chunk_size(257):                      # several chunks into one out
        assert fmt.quantize(x, rounding="stochastic", seed=9, out=out) is out
    np.testing.assert_array_equal(_bits(out), _bits(ref))


def test_scalar_in_place():
    fmt = formats.get("fp8_e4m3")
    x = _data()
    ref = fmt.quantize(x)
    assert fmt.quantize(x, out=x) is x
    np.testing.assert_array_equal(_bits(x), _bits(ref))


class _Subclass(np.ndarray):
    """An ndarray subclass (``np.matrix``, for one, reshapes to 2-D and broke the flat writes)."""


def _bad_outs(shape, dtype):
    ro = np.empty(shape, dtype)
    ro.flags.writeable = False
    return [
        (np.empty(shape[::-1], dtype), ValueError, "out must have shape"),
        (np.empty(shape, np.float16), ValueError, "out must have dtype"),
        (np.empty(shape, np.dtype(dtype).newbyteorder(">")), ValueError,
         r"out must have dtype .*\(in native byte order\)"),
        (np.empty(shape[::-1], dtype).T, ValueError, "out must be C-contiguous"),
        (ro, ValueError, "out must be writeable"),
        ([[0.0] * shape[1]] * shape[0], TypeError, "NumPy array"),
        (np.empty(shape, dtype).view(_Subclass), TypeError, "not a subclass"),
    ]


@pytest.mark.parametrize("case", range(7))
@pytest.mark.parametrize("name, dtype", [("mxfp4", np.float64), ("fp8_e4m3", np.float32),
                                         ("fp16", np.float64)])
def test_unfit_out_is_refused(name, dtype, case):
    x = _data((3, 64))
    if dtype == np.float64 and name == "fp16":
        x = x.astype(np.float64)
    bad, err, words = _bad_outs(x.shape, dtype)[case]
    before = np.array(bad, copy=True)
    with pytest.raises(err, match=words):
        formats.get(name).quantize(x, out=bad)
    np.testing.assert_array_equal(np.asarray(bad), before)        # nothing written


def test_zero_d_and_empty_inputs():
    fp8, mx = formats.get("fp8_e4m3"), formats.get("mxfp4")
    out = np.full((), np.nan, np.float32)
    assert fp8.quantize(np.float32(300.0), out=out) is out and out[()] == 288.0
    for fmt in (fp8, mx):
        empty = np.empty((0, 32), np.float32)
        out = np.empty(fmt.quantize(empty).shape, fmt.quantize(empty).dtype)
        assert fmt.quantize(empty, out=out) is out


def test_error_after_checks_still_raises():
    """A NaN into a format without NaN raises with ``out`` as without it (``out`` may then be
    partly written: documented)."""
    x = np.linspace(-100.0, 100.0, 1000)
    x[-1] = np.nan
    with pytest.raises(ValueError, match="no NaN"):
        formats.get("int8").quantize(x, out=np.empty_like(x))


def _peak_bytes(f) -> int:
    """Peak bytes NumPy allocates (NumPy reports its buffers to tracemalloc) while ``f`` runs."""
    tracemalloc.start()
    try:
        f()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", ["mxfp4", "int4_g128", "fp8_e4m3", "posit16_1"])
def test_out_is_written_directly(name):
    """With a fitting ``out``, no result-sized array is allocated (the kernels write into
    ``out``); without one, one is (so the measure can see it)."""
    fmt = formats.get(name)
    x = _data((64, 4096), np.float64)
    out = np.empty(x.shape)
    fmt.quantize(x, out=out)                                         # compile outside the count
    with formats.chunk_size(1 << 14):
        assert _peak_bytes(lambda: fmt.quantize(x)) >= out.nbytes
        assert _peak_bytes(lambda: fmt.quantize(x, out=out)) < out.nbytes // 4


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "int4_g128", "fp8_e4m3", "posit8_2"])
def test_gpu_engine_out(gpu_engine, name):
    """On the GPU engines: an ``out`` of the caller's kind (NumPy for NumPy input with
    backend="gpu", CuPy for CuPy input) receives the CPU's values."""
    fmt = formats.get(name)
    x = _data((5, 160))
    ref = fmt.quantize(x, backend="cpu")
    for inp in (x, gpu_engine.to(x)):
        mod = np if isinstance(inp, np.ndarray) else type(inp).__module__.split(".")[0]
        out = np.empty_like(ref) if mod is np else gpu_engine.to(np.empty_like(ref))
        assert fmt.quantize(inp, backend="gpu", out=out) is out
        gpu_engine.same(out, ref, name)
