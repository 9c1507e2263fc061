"""formats.hadamard: the random Hadamard transform y = H (D x) per block along an axis.

Oracle: an explicit dense product with H built by the Sylvester recursion and D from
``formats.rounding.random_bits`` as documented.  Integer-valued inputs make every sum exact, so
those comparisons are bit for bit; random reals are compared to a few ulps.
"""
from __future__ import annotations

import numpy as np
import pytest

from formats import hadamard
from formats.rounding import random_bits, resolve_seed

BLOCKS = [2, 4, 8, 16, 32, 64, 128, 256]


def _sylvester(block: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < block:
        h = np.block([[h, h], [h, -h]])
    return h


def _signs(block: int, seed: int) -> np.ndarray:
    key = resolve_seed(seed)
    return np.array([-1.0 if random_bits(key, p, 1) == 1 else 1.0 for p in range(block)])


def _dense(x: np.ndarray, block: int, axis: int, seed: int) -> np.ndarray:
    """H (D x) per block, by matrix products on the axis moved last."""
    xm = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    blocks = xm.reshape(*xm.shape[:-1], -1, block) * _signs(block, seed)
    y = blocks @ _sylvester(block).T
    return np.moveaxis(y.reshape(xm.shape), -1, axis)


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_sylvester_order():
    h = _sylvester(16)
    i, j = np.indices(h.shape)
    popcount = np.vectorize(lambda v: bin(v).count("1"))(i & j)
    np.testing.assert_array_equal(h, (-1.0) ** popcount)


# ---- against the dense product ---------------------------------------------------------------

@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("shape,axis", [((512,), 0), ((3, 512), -1), ((512, 3), 0),
                                        ((2, 512, 3), 1), ((2, 3, 512), 2), ((2, 512, 3), -2)])
def test_forward_matches_dense_exactly(block, shape, axis):
    rng = np.random.default_rng(block * 31 + len(shape) + axis)
    x = rng.integers(-1000, 1001, size=shape).astype(np.float64)   # every sum is exact
    y = hadamard.hadamard_transform(x, block, axis=axis, seed=5)
    assert y.dtype == np.float64 and y.shape == x.shape
    assert _bits_equal(y, _dense(x, block, axis, 5))


@pytest.mark.parametrize("block", BLOCKS)
def test_forward_matches_dense_on_reals(block):
    rng = np.random.default_rng(block)
    x = rng.standard_normal((4, 2 * block, 3))
    y = hadamard.hadamard_transform(x, block, axis=1, seed=11)
    scale = np.sqrt(block) * np.abs(x).max()
    np.testing.assert_allclose(y, _dense(x, block, 1, 11), rtol=0,
                               atol=8 * np.log2(block) * np.finfo(np.float64).eps * scale)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.int8, np.uint16, np.int64, ">f8"])
def test_input_dtypes(dtype):
    x = np.arange(24).reshape(3, 8).astype(dtype)
    y = hadamard.hadamard_transform(x, 4)
    assert y.dtype == np.float64
    assert _bits_equal(y, _dense(x.astype(np.float64), 4, -1, 0))


def test_list_input_and_input_untouched():
    x = np.arange(8.0)
    keep = x.copy()
    y = hadamard.hadamard_transform(x, 8)
    assert _bits_equal(x, keep)
    assert _bits_equal(hadamard.hadamard_transform(list(range(8)), 8), y)


def test_non_contiguous_input():
    base = np.arange(96.0).reshape(8, 12)
    view = base[:, ::3].T                                     # (4, 8), strided
    assert _bits_equal(hadamard.hadamard_transform(view, 4, axis=1),
                       _dense(view, 4, 1, 0))


@pytest.mark.parametrize("shape,axis", [((0,), 0), ((0, 4), 1), ((3, 0), 1), ((3, 0, 2), 1)])
def test_empty(shape, axis):
    y = hadamard.hadamard_transform(np.zeros(shape), 2, axis=axis)
    assert y.shape == shape and y.dtype == np.float64


# ---- inverse and orthogonality ---------------------------------------------------------------

def _float32_in_binades(rng, shape, span: int) -> np.ndarray:
    """float32 with random 24-bit significands, random signs and binades in 0..span."""
    mant = rng.integers(1 << 23, 1 << 24, size=shape)
    exp = rng.integers(0, span + 1, size=shape)
    sign = rng.choice([-1, 1], size=shape)
    return (sign * np.ldexp(mant.astype(np.float64), exp - 23)).astype(np.float32)


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_inverse_is_exact_for_float32(block, axis):
    rng = np.random.default_rng(10 * block + axis + 1)
    shape = [3, 2, 2]
    shape[axis] = 2 * block
    x = _float32_in_binades(rng, tuple(shape), span=6)
    x.flat[::5] = 0.0                                         # +0.0 comes back as +0.0
    y = hadamard.hadamard_transform(x, block, axis=axis, seed=123)
    back = hadamard.hadamard_transform(y, block, axis=axis, seed=123, inverse=True)
    assert _bits_equal(back, x.astype(np.float64))


@pytest.mark.parametrize("block", BLOCKS)
def test_inverse_exact_at_documented_span(block):
    # the documented sufficient condition: float32 binades within 29 - log2(block)
    span = 29 - int(np.log2(block))
    rng = np.random.default_rng(block)
    x = _float32_in_binades(rng, (64, block), span)
    x[:, 0] = np.float32(1.0)                                 # both ends of the span present
    x[:, 1] = np.float32(2.0 ** span * (2 - 2.0 ** -23))
    y = hadamard.hadamard_transform(x, block, seed=9)
    back = hadamard.hadamard_transform(y, block, seed=9, inverse=True)
    assert _bits_equal(back, x.astype(np.float64))


@pytest.mark.parametrize("block", BLOCKS)
def test_inverse_of_integers_both_ways(block):
    rng = np.random.default_rng(block)
    x = rng.integers(-2**20, 2**20, size=(5, block)).astype(np.float64)
    seed = 2**63 + 12345
    y = hadamard.hadamard_transform(x, block, seed=seed)
    assert _bits_equal(hadamard.hadamard_transform(y, block, seed=seed, inverse=True), x)
    # the inverse is also a left inverse of the forward applied second
    z = hadamard.hadamard_transform(x, block, seed=seed, inverse=True) * block
    assert _bits_equal(hadamard.hadamard_transform(z, block, seed=seed) / block, x)


@pytest.mark.parametrize("block", BLOCKS)
def test_norm_grows_by_sqrt_block(block):
    rng = np.random.default_rng(block)
    x = rng.standard_normal((6, 4 * block))
    y = hadamard.hadamard_transform(x, block, seed=1)
    xb = x.reshape(6, 4, block)
    yb = y.reshape(6, 4, block)
    np.testing.assert_allclose(np.linalg.norm(yb, axis=-1),
                               np.sqrt(block) * np.linalg.norm(xb, axis=-1), rtol=1e-12)
    # inner products (each block with the first of its row) grow by the factor block
    np.testing.assert_allclose((yb * yb[:, :1]).sum(-1), block * (xb * xb[:, :1]).sum(-1),
                               rtol=0, atol=1e-12 * block * block)


# ---- seeds -----------------------------------------------------------------------------------

def test_seed_determines_signs():
    e = np.eye(64)
    same = hadamard.hadamard_transform(e, 64, seed=42)
    assert _bits_equal(same, hadamard.hadamard_transform(e, 64, seed=42))
    # each row of the result is H @ (d_p e_p): its first entry is the sign d_p
    np.testing.assert_array_equal(same[:, 0], _signs(64, 42))
    others = [hadamard.hadamard_transform(e, 64, seed=s)[:, 0] for s in (0, 1, 43, 2**40)]
    for signs in others:
        assert not np.array_equal(signs, same[:, 0])
    assert set(np.unique(same[:, 0])) == {-1.0, 1.0}


def test_fresh_seed_when_none():
    e = np.eye(64)
    draws = {hadamard.hadamard_transform(e, 64, seed=None)[:, 0].tobytes() for _ in range(4)}
    assert len(draws) > 1


def test_same_signs_for_every_block():
    x = np.tile(np.eye(8), (1, 3))                            # three identical blocks per row
    y = hadamard.hadamard_transform(x, 8, seed=3)
    assert _bits_equal(y[:, :8], y[:, 8:16]) and _bits_equal(y[:, :8], y[:, 16:])


# ---- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [0, 1, 3, 6, 12, 100, -4])
def test_block_not_power_of_two(block):
    with pytest.raises(ValueError, match=rf"block must be a power of two >= 2, got {block}"):
        hadamard.hadamard_transform(np.zeros(96), block)


@pytest.mark.parametrize("block", [4.0, "4", None, True])
def test_block_not_an_integer(block):
    with pytest.raises(TypeError, match="block must be an integer"):
        hadamard.hadamard_transform(np.zeros(8), block)


def test_block_does_not_divide_axis():
    with pytest.raises(ValueError, match="length 24, which is not a multiple of block 16"):
        hadamard.hadamard_transform(np.zeros((2, 24)), 16)
    with pytest.raises(ValueError, match="axis 0 has length 3"):
        hadamard.hadamard_transform(np.zeros((3, 8)), 2, axis=0)


@pytest.mark.parametrize("axis", [2, -3, 10])
def test_axis_out_of_range(axis):
    with pytest.raises(ValueError, match=rf"axis {axis} is out of bounds for array of dimension 2"):
        hadamard.hadamard_transform(np.zeros((4, 4)), 2, axis=axis)


@pytest.mark.parametrize("axis", [1.0, None, "0"])
def test_axis_not_an_integer(axis):
    with pytest.raises(TypeError, match="axis must be an integer"):
        hadamard.hadamard_transform(np.zeros((4, 4)), 2, axis=axis)


def test_zero_dimensional():
    with pytest.raises(ValueError, match="0-d"):
        hadamard.hadamard_transform(np.float64(1.0), 2)


@pytest.mark.parametrize("x", [np.zeros(4, complex), np.zeros(4, bool), np.array(["a"] * 4),
                               np.zeros(4, np.longdouble)])
def test_bad_dtype(x):
    if x.dtype == np.longdouble and np.finfo(np.longdouble).nmant == 52:
        pytest.skip("longdouble is float64 here")
    with pytest.raises(TypeError, match="input"):
        hadamard.hadamard_transform(x, 2)


@pytest.mark.parametrize("seed", [1.5, "0"])
def test_bad_seed(seed):
    with pytest.raises(TypeError, match="seed"):
        hadamard.hadamard_transform(np.zeros(4), 2, seed=seed)


def test_bad_inverse_flag():
    with pytest.raises(TypeError, match="inverse"):
        hadamard.hadamard_transform(np.zeros(4), 2, inverse=1)


@pytest.mark.parametrize("block", [2, 16, 64])
@pytest.mark.parametrize("inverse", [False, True])
def test_array_module_path_equals_kernel(block, inverse):
    """``xp=`` (the path CuPy arrays take, here run with NumPy) gives the kernel's bits: zeros'
    signs, non-finite blocks and reals that round included."""
    rng = np.random.default_rng(block)
    x = rng.standard_normal((3, 4 * block, 5))
    x[0, :block, 0] = -0.0
    x[1, 3, 2], x[2, block, 4] = np.nan, -np.inf
    ours = hadamard.hadamard_transform(x, block, axis=1, seed=9, inverse=inverse, xp=np)
    ref = hadamard.hadamard_transform(x, block, axis=1, seed=9, inverse=inverse)
    nan = np.isnan(ref)
    assert nan[1].any() and np.array_equal(np.isnan(ours), nan)
    assert _bits_equal(ours[~nan], ref[~nan])
