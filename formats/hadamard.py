"""The random Hadamard transform applied before low-precision quantization (FP4 training recipes).

Conventions
-----------
* ``axis`` is split into consecutive blocks of ``block`` elements (a power of two >= 2 that
  divides the axis length).  Each block ``x`` maps to ``y = H (D x)``: ``D`` is a diagonal of
  random signs, one per position in the block and the same for every block, and ``H`` the
  *unnormalized* Walsh-Hadamard matrix in Sylvester order, ``H[i, j] = (-1)**popcount(i & j)``.
* Sign ``p`` (``p = 0 .. block - 1``) is -1 when ``random_bits(resolve_seed(seed), p, 1)`` is 1
  (the counter-based generator of :mod:`formats.rounding`), else +1; ``seed=None`` draws a fresh
  seed.
* ``H @ H = block * I``, so the forward transform is orthogonal up to the factor ``sqrt(block)``:
  ``|y| = sqrt(block) * |x|``.  Callers that want the orthonormal transform multiply by
  ``block ** -0.5``; the forward does not, so that the inverse ``x = D (H y) / block`` (exact:
  ``block`` is a power of two) undoes it bit for bit whenever the float64 sums are exact (zeros
  come back as +0.0, so a -0.0 input does not survive).  The sums are exact when a block's values
  are integer multiples of some ``2**q`` below ``2**(q + 53 - log2(block))`` in magnitude; for
  float32 inputs (24-bit significands) that holds when the binades ``e`` (``2**e <= |x| <
  2**(e + 1)``) of a block's nonzero values lie within ``29 - log2(block)`` of each other (28 for
  block 2, 21 for block 256).
* Values are float64 throughout; the result is float64 whatever the input dtype.  A NaN or
  infinity makes every value of its block non-finite.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from . import gpu
from .kernel_cache import njit
from .rounding import random_bits, resolve_seed
from .scalar import as_real_array, check_bool


@njit
def _sign_vector(key, block, scale):
    """``scale`` times the random sign of each block position (-1 where the bit is 1)."""
    out = np.empty(block, dtype=np.float64)
    for p in range(block):
        out[p] = -scale if random_bits(key, p, 1) == 1 else scale
    return out


@njit(inline="always")
def _scale_block(w, a, base, d):
    """Multiply rows ``base .. base + len(d) - 1`` of ``w[a]`` by ``d`` (one factor per row);
    ``+ 0.0`` turns the -0.0 a negative sign makes of +0.0 back into +0.0."""
    for p in range(d.shape[0]):
        for b in range(w.shape[2]):
            w[a, base + p, b] = w[a, base + p, b] * d[p] + 0.0


@njit(parallel=True)
def _hadamard_kernel(w, d, inverse):
    """In place on ``w`` (A, N, B): each block of ``len(d)`` rows along N becomes ``H (d * w)``,
    or ``d * (H w)`` when ``inverse``; parallel over the A x N/len(d) blocks."""
    block = d.shape[0]
    n_blocks = w.shape[1] // block
    for t in prange(w.shape[0] * n_blocks):
        a = t // n_blocks
        base = (t % n_blocks) * block
        if not inverse:
            _scale_block(w, a, base, d)
        h = 1
        while h < block:                                   # log2(block) butterfly passes
            for start in range(base, base + block, 2 * h):
                for k in range(start, start + h):
                    for b in range(w.shape[2]):
                        u = w[a, k, b]
                        v = w[a, k + h, b]
                        w[a, k, b] = u + v
                        w[a, k + h, b] = u - v
            h *= 2
        if inverse:
            _scale_block(w, a, base, d)


def hadamard_transform(x, block: int, axis: int = -1, seed: int | None = 0,
                       inverse: bool = False, xp=None) -> np.ndarray:
    """Random Hadamard transform ``y = H (D x)`` of each block of ``block`` elements along
    ``axis`` (float64, same shape as ``x``), or with ``inverse=True`` its exact inverse
    ``x = D (H y) / block``.  Use the same ``seed`` both ways; see the module docstring.

    ``xp`` is the array module to work in: by default CuPy for a CuPy ``x``, else NumPy through
    the Numba kernel.  Any module given runs the same products and butterflies as whole-array
    operations, so the results are the same float64 values (on a GPU, NaN payloads aside)."""
    arr = as_real_array(x)
    if arr.ndim == 0:
        raise ValueError("hadamard_transform needs an array with at least one dimension, "
                         "got a 0-d array")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)):
        raise TypeError(f"block must be an integer, got {block!r}")
    if block < 2 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 2, got {block}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an integer, got {axis!r}")
    if not -arr.ndim <= axis < arr.ndim:
        raise ValueError(f"axis {axis} is out of bounds for array of dimension {arr.ndim}")
    inverse = check_bool("inverse", inverse)
    ax = int(axis) % arr.ndim
    n = arr.shape[ax]
    if n % block:
        raise ValueError(f"axis {axis} has length {n}, which is not a multiple of block {block}")
    block = int(block)
    d = _sign_vector(resolve_seed(seed), block, 1.0 / block if inverse else 1.0)
    rows, cols = math.prod(arr.shape[:ax]), math.prod(arr.shape[ax + 1:])
    if xp is None and gpu.is_device_array(arr):
        xp = gpu.cupy_module()
        arr = gpu.as_float64(gpu.resolve("gpu", arr), arr)    # CuPy's own cast flushes float32
    if xp is not None:                                         # subnormals
        return _transform_xp(xp, arr, d, (rows, n // block, block, cols), inverse)
    out = np.array(arr, dtype=np.float64, order="C")           # a fresh copy, worked in place
    _hadamard_kernel(out.reshape(rows, n, cols), d, inverse)
    return out


def _transform_xp(xp, arr, d: np.ndarray, shape: tuple, inverse: bool):
    """The kernel's arithmetic as array operations of ``xp`` on ``arr`` viewed as ``shape`` =
    (rows, blocks, block, cols): ``w * d + 0.0`` and the butterflies ``u + v``, ``u - v``."""
    block = shape[2]
    d = xp.asarray(d).reshape(1, 1, block, 1)
    w = xp.array(arr, dtype=np.float64).reshape(shape)
    if not inverse:
        w = w * d + 0.0
    h = 1
    while h < block:
        pairs = w.reshape(shape[:2] + (block // (2 * h), 2, h, shape[3]))
        w = xp.stack((pairs[:, :, :, 0] + pairs[:, :, :, 1],
                      pairs[:, :, :, 0] - pairs[:, :, :, 1]), axis=3).reshape(shape)
        h *= 2
    if inverse:
        w = w * d + 0.0
    return w.reshape(arr.shape)
