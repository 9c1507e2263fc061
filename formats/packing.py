"""Sub-byte code packing for storage: ``bits``-bit codes (1..8) in a dense little-endian bitstream.

Conventions
-----------
* Codes are taken in C order and laid end to end: element ``i`` occupies bits
  ``[i * bits, (i + 1) * bits)`` of the stream, code bit 0 first; stream bit ``k`` is bit
  ``k % 8`` (0 = least significant) of byte ``k // 8``.  A code may straddle two bytes
  (``bits`` = 3, 5, 6, 7); the last byte is zero-padded.
* For ``bits=4`` this puts two codes in a byte, the first in the low nibble: the low-nibble-first
  layout of PyTorch's ``torch.float4_e2m1fn_x2`` (its tests pack ``x[1::2] << 4 | x[::2]``),
  NVIDIA's ``__nv_fp4x2_e2m1`` and torchao's MX formats.  ``bits=1`` matches
  ``np.packbits(..., bitorder="little")``.
* ``count`` codes take ``ceil(count * bits / 8)`` bytes (:func:`packed_size`).
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from .kernel_cache import njit
from .scalar import as_code_array, check_int


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits take: ``ceil(count * bits / 8)``."""
    return (check_int("count", count, 0, np.iinfo(np.int64).max // 8)
            * check_int("bits", bits, 1, 8) + 7) // 8


@njit(parallel=True)
def _pack_kernel(codes, bits, out):
    """Byte ``j`` of the stream: OR of the (shifted) codes overlapping bits ``8j .. 8j + 7``."""
    n = codes.shape[0]
    for j in prange(out.shape[0]):
        lo = 8 * j
        acc = 0
        for i in range(lo // bits, min((lo + 7) // bits, n - 1) + 1):
            shift = i * bits - lo                 # negative: the code started in an earlier byte
            c = np.int64(codes[i])
            acc |= (c << shift) if shift >= 0 else (c >> -shift)
        out[j] = acc & 0xFF


@njit(parallel=True)
def _unpack_kernel(data, bits, out):
    """Code ``i``: the ``bits`` stream bits from ``i * bits``, read from one or two bytes."""
    mask = (1 << bits) - 1
    for i in prange(out.shape[0]):
        pos = i * bits
        j = pos >> 3
        off = pos & 7
        v = np.int64(data[j]) >> off
        if off + bits > 8:
            v |= np.int64(data[j + 1]) << (8 - off)
        out[i] = v & mask


def pack_codes(codes, bits: int) -> np.ndarray:
    """Pack integer ``codes`` (any shape, values ``0 .. 2**bits - 1``) into a 1-D uint8 array of
    :func:`packed_size` bytes, in C order (see the module docstring for the bit layout)."""
    bits = check_int("bits", bits, 1, 8)
    arr = as_code_array(codes, bits, f"packing (bits={bits})")
    flat = np.ascontiguousarray(arr, dtype=np.uint8).reshape(-1)   # C order; exact after check
    out = np.empty(packed_size(flat.size, bits), dtype=np.uint8)
    _pack_kernel(flat, bits, out)
    return out


def unpack_codes(data, bits: int, count: int, shape=None) -> np.ndarray:
    """The first ``count`` codes of ``bits`` bits stored in ``data`` (a uint8 array, read in C
    order, or a bytes-like object), as uint8, reshaped to ``shape`` when given (its size must be
    ``count``).  Bytes beyond :func:`packed_size` are ignored."""
    bits = check_int("bits", bits, 1, 8)
    count = check_int("count", count, 0, np.iinfo(np.int64).max // 8)
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    buf = np.asarray(data)
    if buf.dtype != np.uint8:
        raise TypeError(f"data must be a uint8 array or bytes, got dtype {buf.dtype}")
    buf = np.ascontiguousarray(buf).reshape(-1)
    need = packed_size(count, bits)
    if buf.size < need:
        raise ValueError(f"data holds {buf.size} bytes but {count} codes of {bits} bits need "
                         f"{need}")
    if shape is not None:
        dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0
               for d in dims) or math.prod(dims) != count:
            raise ValueError(f"shape {shape!r} does not hold count={count} codes")
    out = np.empty(count, dtype=np.uint8)
    _unpack_kernel(buf, bits, out)
    return out if shape is None else out.reshape(dims)
