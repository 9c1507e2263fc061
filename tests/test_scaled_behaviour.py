"""Behaviour of formats.ScaledFormat / ScaledTensor beyond bit-exactness, and bad input.

The bit-exact comparison with an independent reference is tests/test_scaled_reference.py; this
file checks the properties the module docstring of formats.scaled promises, each against an
explicit construction:

* layout: quantizing along any axis equals moving that axis last; the shape of ``scales`` for
  blocks, channels, the whole tensor and 2-D tiles; a ragged last block equals the zero-padded
  computation cropped; ``pad=False``, bad axes, 0-d and empty inputs; input dtypes.
* ``decode(encode(x)) == quantize(x)`` bit for bit for every named format, grammar formats and
  every rounding mode; decode of a foreign ScaledTensor or of something else raises.
* the counters ``n_clipped``, ``n_scale_clamped`` and ``n_nan_groups`` on hand-built blocks.
* stochastic rounding (for formats other than MXFP4, which the reference file covers): seeds,
  memory layout, and every element one of the two neighbours of ``x / scale``.
* the ``hadamard`` option against an explicit formats.hadamard_transform sandwich.
* ``packed_elements`` against formats.pack_codes / unpack_codes; ``bits_per_element``.
* constructor errors and the registry's scaled names and grammar.

All data comes from fixed seeds.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import formats
from formats import ScaledFormat, ScaledTensor
from formats.codebook import FP4_E2M1_TABLE

MODES = list(formats.MODES)                     # the five deterministic modes and stochastic

# every named scaled format and a few the grammar builds
NAMED = formats.scaled_names()
GRAMMAR = ["mxfp4_rceil", "mxfp4_ceil", "mxfp4_even", "mxfp8_e5m2_rceil", "mxint8_ceil",
           "bfp8_16", "bfp4_8", "int4_g32", "int8_channel", "int4_tensor", "int4_g128_fp16",
           "int8_g64_bf16", "int8_g32_e8m0", "int4_g32_e4m3", "nf4_g32", "uint4_g32",
           "uint8_channel_fp16", "uint4_tensor"]


def _seed(*parts) -> int:
    """A stable seed from the parts (str hash is salted per process, so spell it out)."""
    acc = 17
    for ch in "/".join(map(str, parts)):
        acc = (acc * 131 + ord(ch)) % (2**32)
    return acc


def _data(shape, seed, dtype=np.float64) -> np.ndarray:
    """Gaussian values over a few binades, with some exact zeros."""
    rng = np.random.default_rng(_seed("data", seed))
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-4, 5, size=shape))
    x[rng.random(shape) < 0.05] = 0.0
    return x.astype(dtype)


def _bits(a: np.ndarray) -> np.ndarray:
    """float64 bit patterns with every NaN made the same (NaN-aware, -0 != +0)."""
    a = np.asarray(a, dtype=np.float64).copy()
    a[np.isnan(a)] = np.nan
    return a.view(np.int64)


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.array_equal(_bits(a), _bits(b))


# ---------------------------------------------------------------------------- layout

LAYOUT_NAMES = ["mxfp4", "mxfp8_e5m2", "nvfp4", "int4_g32", "bfp8_16", "nf4_g64",
                "int8_channel", "int8_tensor", "uint4_g32", "uint8_channel"]


@pytest.mark.parametrize("axis", [0, 1, -1, -2])
@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_any_axis_equals_moving_it_last(name, axis):
    fmt = formats.get(name)
    x = _data((40, 70, 36), f"axis{name}{axis}", np.float32)
    q = fmt.quantize(x, axis=axis)
    moved = np.moveaxis(x, axis, -1)
    expected = np.moveaxis(fmt.quantize(moved, axis=-1), -1, axis)
    assert _same(q, expected)
    st, st_moved = fmt.encode(x, axis=axis), fmt.encode(moved, axis=-1)
    assert st.axis == axis % 3
    assert np.array_equal(st.elements, np.moveaxis(st_moved.elements, -1, axis))
    assert np.array_equal(st.scales, np.moveaxis(st_moved.scales, -1, axis))
    assert st.tensor_scale == st_moved.tensor_scale
    assert _same(fmt.decode(st), q)


@pytest.mark.parametrize("name, shape, axis, scales_shape", [
    ("mxfp4", (3, 70, 5), 0, (1, 70, 5)),
    ("mxfp4", (3, 70, 5), 1, (3, 3, 5)),
    ("mxfp4", (3, 70, 5), -1, (3, 70, 1)),
    ("mxfp4", (64,), 0, (2,)),
    ("nvfp4", (2, 33), -1, (2, 3)),
    ("int4_g128", (300, 4), 0, (3, 4)),
    ("int8_channel", (3, 70, 5), 0, (3, 1, 1)),
    ("int8_channel", (3, 70, 5), 1, (1, 70, 1)),
    ("int8_channel", (3, 70, 5), -1, (1, 1, 5)),
    ("int8_tensor", (3, 70, 5), 1, (1, 1, 1)),
    ("int8_tensor", (7,), 0, (1,)),
    ("fp8_e4m3_128x128", (300, 130), -1, (3, 2)),
    ("fp8_e4m3_128x128", (2, 300, 130), -1, (2, 3, 2)),
    ("fp8_e4m3_128x128", (2, 128, 128), 0, (2, 1, 1)),
    ("fp8_e4m3_1x128", (300, 130), -1, (300, 2)),
], ids=lambda v: str(v).replace(" ", ""))
def test_scales_shape(name, shape, axis, scales_shape):
    fmt = formats.get(name)
    st = fmt.encode(_data(shape, f"shape{name}{shape}"), axis=axis)
    assert st.shape == st.elements.shape == shape
    assert st.scales.shape == st.clipped.shape == st.flags.shape == scales_shape


def test_tiles_need_two_axes():
    with pytest.raises(ValueError, match="1-D"):
        formats.get("fp8_e4m3_128x128").encode(np.ones(256))


def _pad_to(x: np.ndarray, axis: int, block: int) -> np.ndarray:
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, -x.shape[axis] % block)
    return np.pad(x, widths)


def _crop(a: np.ndarray, axis: int, n: int) -> np.ndarray:
    return np.take(a, np.arange(n), axis=axis)


RAGGED = [("mxfp4", 32), ("mxfp8_e4m3", 32), ("nvfp4", 16), ("int4_g128", 128),
          ("bfp8_16", 16), ("nf4_g64", 64), ("mxint8", 32)]


@pytest.mark.parametrize("length", [1, 5, 17, 31, 33, 70, 129, 200])
@pytest.mark.parametrize("axis", [0, -1])
@pytest.mark.parametrize("name, block", RAGGED, ids=[r[0] for r in RAGGED])
def test_ragged_last_block_equals_zero_padding(name, block, axis, length):
    fmt = formats.get(name)
    shape = (length, 3) if axis == 0 else (3, length)
    x = _data(shape, f"ragged{name}{axis}{length}", np.float32)
    padded = _pad_to(x, axis, block)
    q, q_pad = fmt.quantize(x, axis=axis), fmt.quantize(padded, axis=axis)
    assert _same(q, _crop(q_pad, axis, length))
    st, st_pad = fmt.encode(x, axis=axis), fmt.encode(padded, axis=axis)
    assert np.array_equal(st.elements, _crop(st_pad.elements, axis, length))
    assert np.array_equal(st.scales, st_pad.scales)
    assert st.tensor_scale == st_pad.tensor_scale
    assert np.array_equal(st.clipped, st_pad.clipped)


@pytest.mark.parametrize("shape", [(130, 300), (2, 200, 129), (5, 7)])
def test_ragged_tiles_equal_zero_padding(shape):
    fmt = formats.get("fp8_e4m3_128x128")
    x = _data(shape, f"tiles{shape}", np.float32)
    padded = _pad_to(_pad_to(x, -1, 128), -2, 128)
    q_pad = fmt.quantize(padded)
    expected = q_pad[..., :shape[-2], :shape[-1]]
    assert _same(fmt.quantize(x), expected)
    assert np.array_equal(fmt.encode(x).scales, fmt.encode(padded).scales)


def test_pad_false_rejects_a_ragged_axis():
    fmt = ScaledFormat("fp4_e2m1", "e8m0", 32, "floor", pad=False)
    ok = fmt.quantize(_data((4, 64), "pad"), axis=-1)       # a multiple: fine
    assert _same(ok, formats.get("mxfp4").quantize(_data((4, 64), "pad")))
    with pytest.raises(ValueError, match=r"axis 1 has 40 elements.*block size 32"):
        fmt.encode(np.ones((4, 40)))
    with pytest.raises(ValueError, match=r"axis 0 has 40 elements.*block size 32"):
        fmt.quantize(np.ones((40, 64)), axis=0)
    tiles = ScaledFormat("fp8_e4m3", "fp32", (4, 8), "amax", pad=False)
    assert tiles.quantize(np.ones((8, 16))).shape == (8, 16)
    with pytest.raises(ValueError, match=r"axis 0 has 6 elements.*block size 4"):
        tiles.quantize(np.ones((6, 16)))
    with pytest.raises(ValueError, match=r"axis 1 has 12 elements.*block size 8"):
        tiles.quantize(np.ones((8, 12)))


@pytest.mark.parametrize("axis", [3, -4, 100])
def test_axis_out_of_range(axis):
    with pytest.raises(ValueError, match="out of range"):
        formats.get("mxfp4").quantize(np.ones((2, 3, 32)), axis=axis)


@pytest.mark.parametrize("axis", [1.0, "1", None, True, [1]], ids=repr)
def test_axis_not_an_integer(axis):
    fmt = formats.get("mxfp4")
    with pytest.raises(TypeError, match="axis"):
        fmt.quantize(np.ones((2, 32)), axis=axis)
    with pytest.raises(TypeError, match="axis"):
        fmt.encode(np.ones((2, 32)), axis=axis)


def test_numpy_integer_axis_accepted():
    fmt = formats.get("mxfp4")
    x = _data((64, 3), "npaxis")
    assert _same(fmt.quantize(x, axis=np.int64(0)), fmt.quantize(x, axis=0))


@pytest.mark.parametrize("x", [1.5, np.float32(2.0), np.array(3.0)], ids=["float", "np.float32",
                                                                           "0-d array"])
def test_zero_d_input(x):
    for name in ("mxfp4", "int8_tensor"):
        with pytest.raises(ValueError, match="0-d"):
            formats.get(name).quantize(x)
        with pytest.raises(ValueError, match="0-d"):
            formats.get(name).encode(x)


@pytest.mark.parametrize("shape", [(0, 32), (4, 0), (0,)])
@pytest.mark.parametrize("name", ["mxfp4", "nvfp4", "int4_g128", "int8_channel", "int8_tensor",
                                  "fp8_e4m3_128x128", "nf4_g64", "uint4_g128", "uint8_tensor"])
def test_empty_arrays(name, shape):
    # group="tensor" (scales (1,) * ndim) and group="channel" with an empty non-axis dimension
    # (scales (1, 32) for (0, 32)) promise scales where the kernel makes none
    fmt = formats.get(name)
    x = np.zeros(shape, dtype=np.float32)
    if len(shape) == 1 and isinstance(fmt.group, tuple):
        with pytest.raises(ValueError, match="last two axes"):
            fmt.quantize(x)
        return
    q = fmt.quantize(x)
    assert q.shape == shape and q.dtype == np.float64
    st = fmt.encode(x)
    assert st.elements.shape == shape and st.elements.size == 0
    assert st.n_clipped == st.n_scale_clamped == st.n_nan_groups == 0
    d = fmt.decode(st)
    assert d.shape == shape and d.dtype == np.float64
    assert st.packed_elements().size == 0


# (integers are read through float64, which holds these exactly)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.int64,
                                   ">f4", "<f8"], ids=str)
@pytest.mark.parametrize("name", ["mxfp4", "nvfp4", "int4_g32"])
def test_input_dtypes(name, dtype):
    fmt = formats.get(name)
    x = (_data((6, 128), f"dtype{name}") * (30 if np.dtype(dtype).kind == "i" else 1)).astype(dtype)
    exact = x.astype(np.float64)                          # every input here fits float64
    q = fmt.quantize(x)
    assert q.dtype == np.float64
    assert _same(q, fmt.quantize(exact))
    st, st64 = fmt.encode(x), fmt.encode(exact)
    assert np.array_equal(st.elements, st64.elements)
    assert np.array_equal(st.scales, st64.scales)
    assert st.tensor_scale == st64.tensor_scale


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_integers_float64_cannot_hold_are_refused(dtype):
    # 2**62 + 2**55 + 1 would round to a float64 tie first and then to the wrong neighbour
    x = np.zeros(32, dtype=dtype)
    x[0] = 2**62 + 2**55 + 1
    with pytest.raises(ValueError, match="cannot hold exactly"):
        formats.get("mxint8").quantize(x)
    x[0] = 2**62 + 2**56                                    # exact in float64: fine
    assert formats.get("mxint8").quantize(x)[0] == 2.0**62 + 2.0**56  # 1 + 2**-6 times 2**62
    x[0] = 2**62 + 2**55 + 1
    with pytest.raises(ValueError, match="cannot hold exactly"):      # checked before rotating
        ScaledFormat("fp4_e2m1", hadamard=32).quantize(x)
    x[0] = np.iinfo(dtype).max                   # float64 rounds it up to 2**63 or 2**64
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # refused cleanly, no cast warning on the way
        with pytest.raises(ValueError, match="cannot hold exactly"):
            formats.get("mxint8").quantize(x)


def test_list_input():
    fmt = formats.get("mxfp4")
    x = _data((2, 32), "list")
    assert _same(fmt.quantize(x.tolist()), fmt.quantize(x))


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([1 + 2j, 3.0])], ids=["str",
                                                                                        "complex"])
def test_non_real_input(bad):
    with pytest.raises((TypeError, ValueError)):
        formats.get("mxfp4").quantize(bad)


# ---------------------------------------------------------------------------- decode


def _decode_data(seed) -> np.ndarray:
    """(8, 128): Gaussian blocks, a zero row, an outlier, tiny and huge values, one NaN."""
    x = _data((8, 128), seed, np.float32)
    x[1] = 0.0
    x[2, 5] *= 1e4
    x[3] *= 1e-30
    x[4] *= 1e30
    x[5, 77] = np.nan
    return x


@pytest.mark.parametrize("rounding", MODES)
@pytest.mark.parametrize("name", NAMED + GRAMMAR)
def test_decode_of_encode_is_quantize(name, rounding):
    fmt = formats.get(name)
    x = _decode_data(name)
    seed = 99 if rounding == "stochastic" else None
    st = fmt.encode(x, rounding=rounding, seed=seed)
    assert isinstance(st, ScaledTensor) and st.format == fmt
    q = fmt.quantize(x, rounding=rounding, seed=seed)
    assert _same(fmt.decode(st), q)
    assert np.isnan(q).any()                                # the NaN group ...
    if fmt.group != "tensor" and not isinstance(fmt.group, tuple):     # (one group: all NaN)
        assert np.isfinite(q).any()                         # ... and the others


@pytest.mark.parametrize("name", ["mxfp4", "int4_g32", "nvfp4"])
def test_decode_of_encode_along_axis_0_of_3d(name):
    fmt = formats.get(name)
    x = _data((50, 3, 4), f"dec3d{name}", np.float32)
    for rounding, seed in (("toward_zero", None), ("stochastic", 5)):
        st = fmt.encode(x, axis=0, rounding=rounding, seed=seed)
        assert _same(fmt.decode(st), fmt.quantize(x, axis=0, rounding=rounding, seed=seed))


def test_decode_of_another_format_raises():
    x = _data((4, 64), "foreign")
    st = formats.get("mxfp4").encode(x)
    for other in ("mxfp4_rceil", "mxfp8_e4m3", "nvfp4", "int4_g32"):
        with pytest.raises(ValueError, match="mxfp4"):
            formats.get(other).decode(st)
    padless = ScaledFormat("fp4_e2m1", "e8m0", 32, "floor", pad=False)
    with pytest.raises(ValueError):
        padless.decode(st)


def test_decode_with_an_equal_format_built_separately():
    x = _data((4, 64), "equal")
    st = formats.get("mxfp4").encode(x)
    twin = ScaledFormat("fp4_e2m1", "e8m0", 32, "floor", name="my_mxfp4")
    assert twin == formats.get("mxfp4") and hash(twin) == hash(formats.get("mxfp4"))
    assert len({twin, formats.get("mxfp4"), formats.get("mxfp4_rceil")}) == 2
    assert _same(twin.decode(st), formats.get("mxfp4").quantize(x))


def test_default_names_tell_every_option_apart():
    """Formats built without a name that quantize differently get different names; equal
    formats get the same one."""
    variants = [dict(), dict(scale_rounding="toward_positive"), dict(tensor_scale=True),
                dict(pad=False), dict(hadamard=32), dict(hadamard=32, hadamard_seed=7),
                dict(group=64), dict(group=(2, 16)), dict(scale="fp16"), dict(scale="fp32"),
                dict(element="fp4_e2m1"), dict(element="int4"), dict(element="int4", int_min=True)]
    made = []
    for v in variants:
        v = {"element": "fp6_e2m3", "scale": "ue4m3fn", "group": 32, **v}
        made.append(ScaledFormat(v.pop("element"), v.pop("scale"), v.pop("group"), "amax", **v))
    assert len({f.name for f in made}) == len(made) == len(set(made))
    assert made[3].name == ScaledFormat("fp6_e2m3", "ue4m3fn", 32, "amax", pad=False).name
    assert made[7].name.split("/")[2] == "2x16"


@pytest.mark.parametrize("thing", [np.zeros((4, 32)), None, {"elements": np.zeros(32)},
                                   (np.zeros(32, np.uint8), np.zeros(1, np.uint8))],
                         ids=["ndarray", "None", "dict", "tuple"])
def test_decode_of_a_non_scaled_tensor(thing):
    with pytest.raises(TypeError, match="ScaledTensor"):
        formats.get("mxfp4").decode(thing)


# ---------------------------------------------------------------------------- counters


@pytest.mark.parametrize("k", [-20, 0, 5])
def test_n_clipped_mxfp4_floor(k):
    # amax = 1.75 * 2**k: floor gives E = k - 2, so 6 * 2**E = 1.5 * 2**k; elements whose
    # magnitude exceeds 1.5 * 2**k are clipped (1.5 itself is not, 1.52 is though it rounds to 6)
    top = np.array([1.75, 1.6, 1.5, 1.52, -1.7, -1.5, 1.25, 0.3, -1.55])
    x = np.zeros((2, 32))
    x[0, :top.size] = np.ldexp(top, k)
    x[1, :4] = np.ldexp([1.5, -1.0, 0.5, 1.0], k)              # amax 1.5 * 2**k: none clipped
    fmt = formats.get("mxfp4")
    st = fmt.encode(x)
    assert st.scales.ravel().tolist() == [127 + k - 2, 127 + k - 2]
    assert st.clipped.ravel().tolist() == [5, 0]                # 1.75 1.6 1.52 -1.7 -1.55
    assert st.n_clipped == 5
    q = fmt.quantize(x)
    assert q[0, 0] == math.ldexp(1.5, k) and q[0, 4] == -math.ldexp(1.5, k)
    # rceil picks E = k - 1 and clips nothing
    assert formats.get("mxfp4_rceil").encode(x).n_clipped == 0


def test_n_clipped_counts_per_block_on_random_data():
    # mxfp8_e4m3 floor: the elements with |x| * 2**-E > 448 per block
    x = _data((16, 256), "clip", np.float32)
    fmt = formats.get("mxfp8_e4m3")
    st = fmt.encode(x)
    e = st.scales.astype(np.int64) - 127
    scaled = np.abs(x.astype(np.float64)).reshape(16, 8, 32) * np.exp2(-e)[..., None]
    expected = np.count_nonzero(scaled > 448, axis=-1)
    assert expected.sum() > 0
    assert np.array_equal(st.clipped, expected)


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4", "int4_g128", "uint4_g32", "mxfp8_e4m3"])
def test_value_pass_counts_clipped_as_encode_does(name):
    # quantize's pass (values, paired blocks for NVFP4) fills the same per-group counters as
    # encode's (codes); calibration and the replay statistics read them
    fmt = formats.get(name)
    x = _data((64, 300), f"clipv{name}", np.float32)
    x[3, 7], x[3, 20], x[9, 40] = 1e4, -1e4, 3e4               # outliers in blocks 0, 1, 1-2
    x[5, :40] = np.nan                                         # NaN groups count nothing
    arr, axis, view, groups, _, n_groups = fmt._prepare(x, -1)
    t_scale = fmt._tensor_scale(arr.reshape(-1))
    _, values, _, _, clipped, flags = fmt._kernel(view, groups, n_groups, arr.dtype, 0,
                                                  np.uint64(0), 32, np.empty((0, 2)), True,
                                                  t_scale)
    st = fmt.encode(x)
    assert st.n_clipped > 0
    assert np.array_equal(clipped, st.clipped.reshape(-1))
    assert np.array_equal(flags, st.flags.reshape(-1))
    assert _same(values.reshape(x.shape), fmt.decode(st))


def test_n_scale_clamped_e8m0_tiny_block():
    # amax 1e-45 (float32: 2**-149): floor(log2) - 2 = -151 < -127, clamped to 2**-127 (code 0)
    x = np.zeros((3, 32), dtype=np.float32)
    x[0, 3] = 1e-45
    x[0, 4] = -1e-45
    x[1] = _data(32, "clamp")
    x[2, 0] = 2.0**-110                                       # E = -112 / -118: in range
    for name in ("mxfp4", "mxfp8_e4m3"):
        st = formats.get(name).encode(x)
        assert st.scales[0, 0] == 0
        assert (st.flags[:, 0] & 1).tolist() == [1, 0, 0]
        assert st.n_scale_clamped == 1
        assert formats.get(name).decode(st)[0, 3] == 0.0      # 2**-22 is below half of min


def test_n_scale_clamped_fp16_scale_overflow_and_underflow():
    fmt = formats.get("int8_g32_fp16")
    x = np.zeros((4, 32))
    x[0] = np.linspace(-1e9, 1e9, 32)                         # 1e9 / 127 > 65504
    x[1] = np.linspace(-1, 1, 32)                             # normal
    x[2] = np.linspace(-1e-12, 1e-12, 32)                     # 1e-12 / 127 < 2**-24
    st = fmt.encode(x)
    assert st.flags[:, 0].tolist()[:3] == [1, 0, 1]
    assert st.n_scale_clamped == 2                            # an all-zero group (row 3): no
    fp16 = formats.get("fp16")
    assert fp16.decode(st.scales[0, 0]) == 65504.0
    assert fp16.decode(st.scales[2, 0]) == 2.0**-24
    q = fmt.quantize(x)
    assert q[0, 0] == -127 * 65504.0 and q[0, -1] == 127 * 65504.0
    # clipped: |x| / scale > 127, with the scale as stored (fp16 RNE of 1/127 is below 1/127,
    # so row 1's +-1 count too, though they round to +-127 anyway)
    scale = fp16.decode(st.scales[:, 0])
    expected = np.count_nonzero(np.abs(x) / scale[:, None] > 127, axis=1)
    assert expected.tolist() == [32, 2, 0, 0]
    assert st.clipped[:, 0].tolist() == expected.tolist()


@pytest.mark.parametrize("name", ["mxfp4", "mxfp8_e5m2", "nvfp4", "int4_g32", "bfp8_16",
                                  "nf4_g32", "int8_g32_fp16", "uint4_g32"])
def test_n_nan_groups(name):
    fmt = formats.get(name)
    x = _data((4, 64), f"nan{name}")
    x[0, 40] = np.nan                                          # block (0, 1)
    x[2, 3] = np.inf                                           # block (2, 0)
    x[3, 63] = -np.inf                                         # block (3, 1)
    st = fmt.encode(x)
    assert st.n_nan_groups == 3
    g = fmt.group
    assert st.scales.shape == (4, 64 // g)
    nan_blocks = np.zeros((4, 64 // g), dtype=bool)
    nan_blocks[0, 40 // g] = nan_blocks[2, 3 // g] = nan_blocks[3, 63 // g] = True
    assert np.array_equal((st.flags & 2) != 0, nan_blocks)
    nan_elems = np.repeat(nan_blocks, g, axis=1)
    for out in (fmt.quantize(x), fmt.decode(st)):
        assert np.isnan(out[nan_elems]).all()
        assert np.isfinite(out[~nan_elems]).all()


# ---------------------------------------------------------------------------- stochastic

SR_NAMES = ["mxfp8_e4m3", "mxfp6_e2m3", "nvfp4", "int4_g32", "bfp8_16", "nf4_g64", "mxint8",
            "uint4_g32"]


def _units(fmt: ScaledFormat, st: ScaledTensor) -> np.ndarray:
    """The value of one element unit per element (scale value times tensor scale), for a 2-D
    block format along the last axis."""
    if fmt.rule == "amax":
        u = fmt.scale.decode(st.scales) * st.tensor_scale
    else:
        u = np.exp2(st.scales.astype(np.float64) - 127)
    return np.repeat(u, fmt.group, axis=-1)[:, :st.shape[-1]]


def _zero_points(fmt: ScaledFormat, st: ScaledTensor):
    """The zero point per element (0 for symmetric formats), as for :func:`_units`."""
    if not fmt.zero_point:
        return 0
    return np.repeat(st.zero_points.astype(np.int64), fmt.group, axis=-1)[:, :st.shape[-1]]


def _grid(fmt: ScaledFormat) -> np.ndarray:
    v = fmt.element.values()
    return v[np.abs(v) <= fmt.element.max]


@pytest.mark.parametrize("name", SR_NAMES)
def test_stochastic_seeds(name):
    fmt = formats.get(name)
    x = _data((16, 128), f"srseed{name}", np.float32)
    a = fmt.encode(x, rounding="stochastic", seed=7)
    b = fmt.encode(x, rounding="stochastic", seed=7)
    c = fmt.encode(x, rounding="stochastic", seed=8)
    assert np.array_equal(a.elements, b.elements)
    assert not np.array_equal(a.elements, c.elements)
    assert np.array_equal(a.scales, c.scales)                  # the scale ignores the rounding
    assert _same(fmt.quantize(x, rounding="stochastic", seed=7), fmt.decode(a))


@pytest.mark.parametrize("name", SR_NAMES)
def test_stochastic_independent_of_memory_layout(name):
    fmt = formats.get(name)
    x = _data((16, 128), f"srlayout{name}", np.float32)
    base = fmt.encode(x, rounding="stochastic", seed=3)
    wide = np.zeros((32, 256), dtype=np.float32)
    wide[::2, ::2] = x
    layouts = {"fortran": np.asfortranarray(x), "strided slice": wide[::2, ::2],
               "reversed twice": x[::-1][::-1], "transposed back": np.ascontiguousarray(x.T).T}
    for what, y in layouts.items():
        assert np.array_equal(y, x)
        st = fmt.encode(y, rounding="stochastic", seed=3)
        assert np.array_equal(st.elements, base.elements), what
        assert np.array_equal(st.scales, base.scales), what
        assert _same(fmt.quantize(y, rounding="stochastic", seed=3), fmt.decode(base)), what


@pytest.mark.parametrize("name", SR_NAMES)
def test_stochastic_picks_a_neighbour_of_x_over_scale(name):
    fmt = formats.get(name)
    x = _data((32, 128), f"srnb{name}", np.float32)
    grid = _grid(fmt)
    ups = 0
    inexact = 0
    for seed in range(4):
        st = fmt.encode(x, rounding="stochastic", seed=seed)
        unit = _units(fmt, st)
        zp = _zero_points(fmt, st)                             # the grid in codes: k - zp
        p = np.clip(x.astype(np.float64) / unit + zp, grid[0], grid[-1])
        lo = grid[np.searchsorted(grid, p, side="right") - 1]
        hi = grid[np.searchsorted(grid, p, side="left")]
        v = fmt.element.decode(st.elements)
        ok = (v == lo) | (v == hi)
        assert ok.all(), (name, p[~ok][:5], v[~ok][:5], lo[~ok][:5], hi[~ok][:5])
        assert _same(fmt.quantize(x, rounding="stochastic", seed=seed), (v - zp) * unit)
        ups += int(np.count_nonzero((v == hi) & (lo != hi)))
        inexact += int(np.count_nonzero(lo != hi))
    assert 0 < ups < inexact                                   # both neighbours are chosen


def test_stochastic_keeps_grid_values():
    # an element exactly on the grid stays there whatever the seed or sr_bits
    fmt = formats.get("mxfp4")
    x = np.tile([6.0, -4.0, 3.0, 0.5, 0.0, 1.5, -2.0, 1.0], 4)
    for seed in range(3):
        for sr_bits in (1, 8, 32):
            assert _same(fmt.quantize(x, rounding="stochastic", seed=seed, sr_bits=sr_bits), x)


# ---------------------------------------------------------------------------- hadamard

HADAMARD = [("fp4_e2m1", "e8m0", 32, "floor", False, 32),
            ("fp4_e2m1", "ue4m3fn", 16, "amax", True, 16),
            ("int4", "fp32", 32, "amax", False, 32),
            ("fp8_e4m3", "e8m0", 32, "rceil", False, 64)]


@pytest.mark.parametrize("seed", [0, 12345])
@pytest.mark.parametrize("elem, scale, group, rule, ts, block", HADAMARD,
                         ids=[f"{h[0]}-{h[3]}-h{h[5]}" for h in HADAMARD])
def test_hadamard_option_equals_explicit_transform(elem, scale, group, rule, ts, block, seed):
    plain = ScaledFormat(elem, scale, group, rule, tensor_scale=ts)
    rotated = ScaledFormat(elem, scale, group, rule, tensor_scale=ts, hadamard=block,
                           hadamard_seed=seed)
    assert rotated != plain
    for shape, axis in (((6, 128), -1), ((128, 5), 0), ((2, 64, 3), 1)):
        x = _data(shape, f"had{elem}{rule}{seed}{axis}", np.float32)
        y = formats.hadamard_transform(x, block, axis=axis, seed=seed)
        expected = formats.hadamard_transform(plain.quantize(y, axis=axis), block, axis=axis,
                                              seed=seed, inverse=True)
        q = rotated.quantize(x, axis=axis)
        assert _same(q, expected)
        st = rotated.encode(x, axis=axis)
        assert np.array_equal(st.elements, plain.encode(y, axis=axis).elements)
        assert _same(rotated.decode(st), q)
        for rounding, s in (("toward_negative", None), ("stochastic", 4)):
            st = rotated.encode(x, axis=axis, rounding=rounding, seed=s)
            assert _same(rotated.decode(st), rotated.quantize(x, axis=axis, rounding=rounding,
                                                              seed=s))


def test_hadamard_seed_none_draws_one_seed_per_format():
    """seed None: one random seed, kept, so quantize undoes exactly the transform it applied."""
    fmt = ScaledFormat("fp4_e2m1", hadamard=32, hadamard_seed=None)
    assert isinstance(fmt.hadamard_seed, int)
    x = _data((4, 64), "hadnone")
    fixed = ScaledFormat("fp4_e2m1", hadamard=32, hadamard_seed=fmt.hadamard_seed)
    assert _same(fmt.quantize(x), fixed.quantize(x))
    assert _same(fmt.decode(fmt.encode(x)), fmt.quantize(x))


def test_hadamard_seed_without_hadamard_means_nothing():
    assert ScaledFormat("fp4_e2m1", hadamard_seed=None) == ScaledFormat("fp4_e2m1")
    assert ScaledFormat("fp4_e2m1", hadamard_seed=3).hadamard_seed is None
    with pytest.raises(TypeError, match="hadamard_seed"):
        ScaledFormat("fp4_e2m1", hadamard_seed="7")


def test_hadamard_seed_matters():
    x = _data((4, 64), "hadseed")
    a = ScaledFormat("fp4_e2m1", hadamard=32, hadamard_seed=1).quantize(x)
    b = ScaledFormat("fp4_e2m1", hadamard=32, hadamard_seed=2).quantize(x)
    assert not _same(a, b)


@pytest.mark.parametrize("block, error", [(24, ValueError), (1, ValueError), (0, ValueError),
                                          (-4, ValueError), (3, ValueError), (2.0, TypeError),
                                          ("32", TypeError)], ids=repr)
def test_hadamard_bad_block(block, error):
    with pytest.raises(error):
        ScaledFormat("fp4_e2m1", hadamard=block)


def test_hadamard_block_must_divide_the_axis():
    fmt = ScaledFormat("fp4_e2m1", hadamard=64)
    with pytest.raises(ValueError, match="multiple"):
        fmt.quantize(np.ones((2, 96)))
    with pytest.raises(ValueError, match="multiple"):
        fmt.encode(np.ones((96, 2)), axis=0)


# ---------------------------------------------------------------------------- packing


@pytest.mark.parametrize("shape", [(4, 64), (3, 33), (1,), (5, 7, 3)])
@pytest.mark.parametrize("name, bits", [("mxfp4", 4), ("mxfp6_e3m2", 6), ("mxfp6_e2m3", 6),
                                        ("nvfp4", 4), ("nf4_g64", 4), ("mxfp8_e5m2", 8)])
def test_packed_elements(name, bits, shape):
    st = formats.get(name).encode(_data(shape, f"pack{name}{shape}"))
    assert st.format.element.bits == bits
    packed = st.packed_elements()
    assert packed.dtype == np.uint8
    assert packed.size == -(-st.elements.size * bits // 8)
    assert np.array_equal(packed, formats.pack_codes(st.elements, bits))
    back = formats.unpack_codes(packed, bits, st.elements.size, st.elements.shape)
    assert np.array_equal(back, st.elements)
    if bits == 4 and st.elements.size >= 2:                  # low nibble first
        flat = st.elements.reshape(-1)
        assert packed[0] == flat[0] | (flat[1] << 4)


# ---------------------------------------------------------------------------- bits per element


@pytest.mark.parametrize("name, bits", [("mxfp4", 4.25), ("mxfp8_e4m3", 8.25),
                                        ("mxfp8_e5m2", 8.25), ("mxfp6_e3m2", 6.25),
                                        ("mxfp6_e2m3", 6.25), ("mxint8", 8.25), ("nvfp4", 4.5),
                                        ("nvfp4_up", 4.5), ("bfp8_16", 8.5),
                                        ("int4_g128", 4.25), ("int4_g128_fp16", 4.125),
                                        ("nf4_g64", 4.5), ("int8_channel", 8.0),
                                        ("int4_tensor", 4.0), ("uint4_g128", 4 + 36 / 128),
                                        ("uint8_g32_fp16", 8 + 24 / 32),
                                        ("fp8_e4m3_1x128", 8.25),
                                        ("fp8_e4m3_128x128", 8 + 32 / 16384)])
def test_bits_per_element(name, bits):
    assert formats.get(name).bits_per_element == bits


# ---------------------------------------------------------------------------- constructor


@pytest.mark.parametrize("kwargs, error, match", [
    ({"scale": "fp32", "rule": "floor"}, ValueError, "e8m0"),
    ({"scale": "ue4m3fn", "rule": "rceil"}, ValueError, "e8m0"),
    ({"scale": "bf16", "rule": "ceil"}, ValueError, "e8m0"),
    ({"scale": "fp16", "rule": "even"}, ValueError, "e8m0"),
    ({"rule": "nearest"}, ValueError, "unknown scale rule"),
    ({"rule": None}, ValueError, "unknown scale rule"),
    ({"scale": "fp32", "rule": "amax", "scale_rounding": "up"}, ValueError, "scale_rounding"),
    ({"scale_rounding": "stochastic"}, ValueError, "scale_rounding"),
    ({"group": 0}, ValueError, "group"),
    ({"group": -1}, ValueError, "group"),
    ({"group": "foo"}, ValueError, "group"),
    ({"group": (0, 4)}, ValueError, "group"),
    ({"group": (4, 4, 4)}, ValueError, "group"),
    ({"group": 2.5}, ValueError, "group"),
    ({"group": True}, ValueError, "group"),
    ({"element": "uint8"}, ValueError, "zero point"),       # needs rule="amax"
    ({"element": "uint4", "scale": "fp32", "rule": "amax", "tensor_scale": True}, ValueError,
     "zero point"),
    ({"element": "ufix8_4", "scale": "fp32", "rule": "amax"}, ValueError, "zero point"),
    ({"element": "posit8_0"}, TypeError, "posit8_0"),
    ({"element": "posit16_1"}, TypeError, "posit16_1"),
    ({"scale": "int8"}, ValueError, "NaN"),
    ({"scale": "fp6_e3m2"}, ValueError, "NaN"),
    ({"scale": "fp4_e2m1"}, ValueError, "NaN"),
    ({"scale": "posit8_0"}, ValueError, "NaN"),
    ({"element": "not_a_format"}, ValueError, "unknown format"),
    ({"pad": "False"}, TypeError, "pad must be True or False"),
    ({"tensor_scale": "no"}, TypeError, "tensor_scale must be True or False"),
    ({"int_min": 1}, TypeError, "int_min must be True or False"),
    ({"int_min": True}, ValueError, "int_min lets a signed integer"),      # fp4 element
    ({"element": "uint4", "scale": "fp32", "rule": "amax", "int_min": True}, ValueError,
     "int_min lets a signed integer"),
], ids=lambda v: repr(v) if isinstance(v, dict) else "")
def test_constructor_errors(kwargs, error, match):
    args = {"element": "fp4_e2m1", "scale": "e8m0", "group": 32, "rule": "floor", **kwargs}
    with pytest.raises(error, match=match):
        ScaledFormat(**args)


def test_constructor_accepts_any_scale_with_amax_and_numpy_groups():
    x = _data((4, 64), "ctor")
    for scale in ("fp32", "fp16", "bf16", "e8m0", "ue4m3fn", "fp8_e5m2"):
        fmt = ScaledFormat("int8", scale, np.int64(32), "amax")
        assert fmt.group == 32 and isinstance(fmt.group, int)
        assert np.isfinite(fmt.quantize(x)).all()
    tiles = ScaledFormat("fp8_e4m3", "fp32", (np.int32(2), 16), "amax")
    assert tiles.group == (2, 16)


def test_unknown_rounding_mode():
    with pytest.raises(ValueError, match="rounding"):
        formats.get("mxfp4").quantize(np.ones(32), rounding="nearest")


# ---------------------------------------------------------------------------- registry

EXPECTED_NAMED = {
    # name: (element, scale, group, rule, tensor_scale, scale_rounding)
    "mxfp8_e4m3": ("fp8_e4m3", "e8m0", 32, "floor", False, "nearest_even"),
    "mxfp8_e5m2": ("fp8_e5m2", "e8m0", 32, "floor", False, "nearest_even"),
    "mxfp6_e3m2": ("fp6_e3m2", "e8m0", 32, "floor", False, "nearest_even"),
    "mxfp6_e2m3": ("fp6_e2m3", "e8m0", 32, "floor", False, "nearest_even"),
    "mxfp4": ("fp4_e2m1", "e8m0", 32, "floor", False, "nearest_even"),
    "mxint8": ("fix8_6", "e8m0", 32, "floor", False, "nearest_even"),
    "nvfp4": ("fp4_e2m1", "ue4m3fn", 16, "amax", True, "nearest_even"),
    "nvfp4_up": ("fp4_e2m1", "ue4m3fn", 16, "amax", True, "toward_positive"),
    "fp8_e4m3_1x128": ("fp8_e4m3", "fp32", 128, "amax", False, "nearest_even"),
    "fp8_e4m3_128x128": ("fp8_e4m3", "fp32", (128, 128), "amax", False, "nearest_even"),
    "nf4_g64": ("nf4", "fp32", 64, "amax", False, "nearest_even"),
}


def _check_shape(fmt, element, scale, group, rule, tensor_scale=False,
                 scale_rounding="nearest_even"):
    assert isinstance(fmt, ScaledFormat)
    assert fmt.element == formats.get(element)
    assert fmt.scale == formats.get(scale)
    assert fmt.group == group
    assert fmt.rule == rule
    assert fmt.tensor_scale == tensor_scale
    assert fmt.scale_rounding == scale_rounding


def test_named_list_is_complete():
    assert sorted(formats.scaled_names()) == sorted(EXPECTED_NAMED)


@pytest.mark.parametrize("name", list(EXPECTED_NAMED))
def test_get_named(name):
    fmt = formats.get(name)
    assert fmt.name == name
    assert formats.get(name) is fmt                            # cached
    assert formats.get(fmt) is fmt                             # a format object passes through
    _check_shape(fmt, *EXPECTED_NAMED[name])
    assert name not in formats.names()                         # scalar names are separate


@pytest.mark.parametrize("name, shape", [
    ("mxfp4_rceil", ("fp4_e2m1", "e8m0", 32, "rceil")),
    ("mxfp4_ceil", ("fp4_e2m1", "e8m0", 32, "ceil")),
    ("mxfp4_even", ("fp4_e2m1", "e8m0", 32, "even")),
    ("mxfp8_e4m3_rceil", ("fp8_e4m3", "e8m0", 32, "rceil")),
    ("mxint8_even", ("fix8_6", "e8m0", 32, "even")),
    ("bfp8_16", ("fix8_6", "e8m0", 16, "floor")),
    ("bfp4_32", ("fix4_2", "e8m0", 32, "floor")),
    ("bfp16_64", ("fix16_14", "e8m0", 64, "floor")),
    ("int4_g128", ("int4", "fp32", 128, "amax")),
    ("int8_g32", ("int8", "fp32", 32, "amax")),
    ("int4_channel", ("int4", "fp32", "channel", "amax")),
    ("int8_tensor", ("int8", "fp32", "tensor", "amax")),
    ("int4_g128_fp16", ("int4", "fp16", 128, "amax")),
    ("int8_g32_bf16", ("int8", "bf16", 32, "amax")),
    ("int8_g32_e8m0", ("int8", "e8m0", 32, "amax")),
    ("int4_g32_e4m3", ("int4", "fp8_e4m3", 32, "amax")),
    ("int3_channel_fp16", ("int3", "fp16", "channel", "amax")),
    ("nf4_g32", ("nf4", "fp32", 32, "amax")),
    ("nf4_g256", ("nf4", "fp32", 256, "amax")),
    ("uint4_g128", ("uint4", "fp32", 128, "amax")),
    ("uint8_channel_bf16", ("uint8", "bf16", "channel", "amax")),
])
def test_grammar_names(name, shape):
    fmt = formats.get(name)
    assert fmt.name == name
    _check_shape(fmt, *shape)


@pytest.mark.parametrize("name, close", [
    ("mxfp5", "mxfp4"), ("mxfp8", "mxfp8_e4m3"), ("nvfp", "nvfp4"), ("nvfp4_down", "nvfp4_up"),
    ("mxfp6_e3m1", "mxfp6_e3m2"), ("nf4_g6x", "nf4_g64"),
])
def test_unknown_names_list_close_matches(name, close):
    with pytest.raises(ValueError, match=rf"unknown format '{name}'.*close matches:.*\b{close}\b"):
        formats.get(name)


@pytest.mark.parametrize("name", ["nvfp4_rceil", "mxfp4_floor", "int4_g0x", "bfp8", "int4_g128_fp8",
                                  "mxfp4_RCEIL", "int4_rows", "nf4_channel"])
def test_names_outside_the_grammar(name):
    with pytest.raises(ValueError):
        formats.get(name)


@pytest.mark.parametrize("name", ["int4_g0", "bfp8_0", "nf4_g0", "uint4_g0", "int1_g32"])
def test_grammar_names_with_bad_parameters(name):
    # the shape matches the grammar (or nearly) but the parameters do not make a format
    with pytest.raises(ValueError):
        formats.get(name)


# ---------------------------------------------------------------------------- codebook elements

@pytest.mark.parametrize("rounding", ["nearest_even", "nearest_away", "toward_zero",
                                      "toward_positive", "toward_negative"])
def test_unsorted_codebook_element_equals_its_float_format(rounding):
    """The e2m1 value set as a table in code order (not sorted: the negatives follow the
    positives) rounds like the fp4_e2m1 element itself: same values (but for the sign of
    zero) and the same codes wherever the value is not zero.  (Not stochastic rounding: a
    table's random draw decides "toward +inf", a float's "away from zero".)"""
    table = formats.CodebookFormat(FP4_E2M1_TABLE, "e2m1_table")
    as_table = ScaledFormat(table, "e8m0", 32, "floor")
    as_float = ScaledFormat("fp4_e2m1", "e8m0", 32, "floor")
    x = _data((8, 256), "cbtable")
    kw = dict(rounding=rounding, seed=3)
    q = as_table.quantize(x, **kw)
    assert np.array_equal(q, as_float.quantize(x, **kw))
    st, ref = as_table.encode(x, **kw), as_float.encode(x, **kw)
    assert np.array_equal(st.scales, ref.scales)
    nonzero = q != 0
    assert nonzero.mean() > 0.3
    assert np.array_equal(st.elements[nonzero], ref.elements[nonzero])
    assert np.array_equal(as_table.decode(st), q)


def test_even_rule_with_a_codebook_element_is_the_floor_rule():
    """A table's values are kept at full (53-bit) precision, so rounding amax to the element
    precision (rule "even") changes nothing."""
    x = _data((4, 128), "cbeven")
    even = ScaledFormat("nf4", "e8m0", 32, "even").quantize(x)
    assert _same(even, ScaledFormat("nf4", "e8m0", 32, "floor").quantize(x))
