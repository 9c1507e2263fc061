"""Codebook (lookup-table) formats: a code is an index into a table of values.

``CodebookFormat(values, name)`` holds any table of distinct finite float64 values (at most
256; nonzero magnitudes at least 2**-537, like a float format's); code ``c`` means
``values[c]``.  ``NF4`` is QLoRA's 4-bit NormalFloat table (Dettmers et
al. 2023, as published in bitsandbytes); ``FP4_E2M1_TABLE`` is the OCP e2m1 value set as a table.

Rounding goes to one of the two table values around the input (inputs beyond the ends
saturate to the end values; NaN raises ValueError, as there is no NaN code).  A table may hold
both 0.0 and -0.0 (each decodes to itself), but rounding compares values, so every zero result,
-0.0 and negative values rounded to zero included, takes the code of whichever zero comes first
in the table (``FP4_E2M1_TABLE``: +0, where the fp4_e2m1 format keeps the sign):

* ``nearest_even``: the nearer one; a tie goes to the neighbour with the *even code* (the table
  index; if both codes have the same parity, to the one of smaller magnitude).  For the e2m1
  table this is exactly e2m1's ties-to-even.  (bitsandbytes' NF4 threshold tree sends ties to
  the lower value instead.)
* ``nearest_away``: the nearer one, ties away from zero.
* ``toward_zero`` / ``toward_positive`` / ``toward_negative``: the neighbour in that direction.
* ``stochastic``: the upper neighbour with probability ``floor(f * 2**sr_bits) / 2**sr_bits``,
  ``f = (x - lo) / (hi - lo)`` computed in float64 (for a symmetric table, "up" is away from
  zero for positive inputs, as for the other formats' stochastic rounding on magnitudes).

Distances and the stochastic fraction are computed in float64 from the exact input (and the
exact low word of a sum), which decides every tie exactly when the table values and inputs are
float32 numbers within 29 binades of each other (NF4 and FP4 tables and float32 data are).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .float_kernels import two_sum
from .gpu.codebook_kernels import CodebookKernels
from .kernel_cache import njit
from .opcodes import OP_FMA, OP_MUL, OP_SUB
from .rounding import (NEAREST_AWAY, NEAREST_EVEN, STOCHASTIC, TOWARD_POSITIVE, TOWARD_ZERO,
                       random_bits)
from .scalar import ScalarFormat

# QLoRA's NF4 (bitsandbytes ``NF4`` table, create_normal_map with offset 0.9677), code order.
NF4 = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
       -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
       0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
       0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0)

# OCP FP4 (e2m1) as a table in code order (sign bit 3): for tests and as a codebook example.
FP4_E2M1_TABLE = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                  -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


@njit(inline="always")
def round_table_index(s: np.float64, e: np.float64, values, codes, mode: np.int64,
                      key: np.uint64, index: np.int64, sr_bits: np.int64) -> np.int64:
    """Index in ``values`` (the table's distinct values sorted ascending, with their ``codes``)
    of the rounded exact value ``s + e`` (``e`` the low word of a pair, or 0)."""
    n = values.shape[0]
    i = np.searchsorted(values, s, side="right")     # values[i-1] <= s < values[i]
    if i == 0:
        return 0
    if i == n:
        return n - 1
    lo = values[i - 1]
    hi = values[i + 0]
    below = s - lo + e                               # exact for float32-like tables and data
    above = hi - s - e
    if below == 0.0:
        return i - 1
    if below < 0.0:                                  # s == lo and a negative tail
        if i == 1:
            return 0
        hi = lo
        lo = values[i - 2]
        i -= 1
        above = hi - s - e
        below = s - lo + e
    up = False
    if mode == NEAREST_EVEN:
        even_hi = codes[i] % 2 == 0
        tie_up = even_hi if even_hi != (codes[i - 1] % 2 == 0) else abs(hi) < abs(lo)
        up = above < below or (above == below and tie_up)
    elif mode == NEAREST_AWAY:
        up = above < below or (above == below and abs(hi) >= abs(lo))
    elif mode == TOWARD_POSITIVE:
        up = True
    elif mode == TOWARD_ZERO:
        up = s + e < 0.0
    elif mode == STOCHASTIC:
        frac = below / (hi - lo)
        up = random_bits(key, index, sr_bits) < np.uint64(np.floor(frac * 2.0 ** sr_bits))
    return i if up else i - 1


@njit(inline="always")
def round_table(s: np.float64, e: np.float64, values, codes, mode: np.int64, key: np.uint64,
                index: np.int64, sr_bits: np.int64) -> np.int64:
    """Code of the rounded exact value ``s + e`` (see :func:`round_table_index`)."""
    return codes[round_table_index(s, e, values, codes, mode, key, index, sr_bits)]


@njit(parallel=True)
def encode_kernel(x, out, values, codes, mode, key, offset, sr_bits):
    """Encode reals into table codes; returns the number of NaN inputs (codes 0 there)."""
    nans = 0
    for i in prange(x.shape[0]):
        v = np.float64(x[i])
        nans += v != v
        out[i] = round_table(v, 0.0, values, codes, mode, key, offset + i, sr_bits) if v == v \
            else 0
    return nans


@njit(parallel=True)
def decode_kernel(codes, out, table):
    """Decode table codes into float64 values."""
    for i in prange(codes.shape[0]):
        out[i] = table[codes[i]]


@njit(parallel=True)
def arith_kernel(op, a, b, c, table, values, codes, out, mode, key, offset, sr_bits):
    """``out = round(a op b [+ c])``: products of float32-like table values are exact in float64,
    sums are TwoSum pairs."""
    for i in prange(a.shape[0]):
        x = table[a[i]]
        y = table[b[i]]
        e = 0.0
        if op == OP_MUL or op == OP_FMA:
            s = x * y
            if op == OP_FMA:
                z = table[c[i]]
                s, e = two_sum(s, z)
        else:
            if op == OP_SUB:
                y = -y
            s, e = two_sum(x, y)
        out[i] = round_table(s, e, values, codes, mode, key, offset + i, sr_bits)


class CodebookFormat(ScalarFormat):
    """A table of at most 256 distinct finite values; code ``c`` is ``values[c]``."""

    overflow_policies = ("saturate",)
    default_overflow = "saturate"
    kind = "codebook"
    has_inf = False
    has_nan = False

    def __init__(self, values, name: str | None = None):
        table = np.asarray(values, dtype=np.float64)
        if table.ndim != 1 or not 2 <= table.size <= 256:
            raise ValueError(f"a codebook needs 2..256 values in a 1-D table, got shape "
                             f"{table.shape}")
        if not np.all(np.isfinite(table)):
            raise ValueError("codebook values must be finite")
        if np.any((table != 0.0) & (np.abs(table) < 2.0**-537)):
            raise ValueError("nonzero codebook values must be at least 2**-537 in magnitude "
                             "(as a float format's are)")
        nonzero = table[table != 0.0]
        if np.unique(nonzero).size != nonzero.size:
            raise ValueError("codebook values must be distinct (only 0.0 and -0.0 may both "
                             "appear)")
        order = np.argsort(table, kind="stable")       # -0.0 sorts with 0.0, in table order
        distinct = np.concatenate(([True], np.diff(table[order]) != 0))
        self.table = table
        self._sorted = table[order][distinct] + 0.0
        self._sorted_codes = order[distinct].astype(np.int64)
        self.bits = max(1, int(np.ceil(np.log2(table.size))))
        self.signed = bool(np.any(table < 0))
        self.name = name or f"codebook{table.size}"
        self._desc = tuple(float(v) for v in table)

    def _raise_flags(self, nans: int) -> None:
        if nans:
            raise ValueError(f"{self.name} has no NaN, but the input holds {nans} NaN value(s)")

    def _check_codes(self, codes: np.ndarray) -> None:
        if codes.size and int(codes.max()) >= self.table.size:
            raise ValueError(f"code {int(codes.max())} is outside the table of {self.name} "
                             f"(valid codes are 0..{self.table.size - 1})")

    def _encode_chunk(self, x, out, mode, overflow, key, offset, sr_bits, launch=None) -> None:
        self._raise_flags(_kernels(launch).encode_kernel(x, out, self._sorted, self._sorted_codes,
                                                         mode, key, offset, sr_bits))

    def _decode_chunk(self, codes, out, launch=None) -> None:
        self._check_codes(codes)
        _kernels(launch).decode_kernel(codes, out, self.table)

    def _arith_chunk(self, op, a, b, c, out, mode, overflow, key, offset, sr_bits,
                     launch=None) -> None:
        for codes in (a, b) if c is None else (a, b, c):
            self._check_codes(codes)
        _kernels(launch).arith_kernel(op, a, b, a if c is None else c, self.table, self._sorted,
                                      self._sorted_codes, out, mode, key, offset, sr_bits)

    @property
    def max(self) -> float:
        """Largest table value."""
        return float(self._sorted[-1])

    @property
    def min_normal(self) -> float:
        """Smallest positive table value (NaN when there is none)."""
        pos = self._sorted[self._sorted > 0]
        return float(pos[0]) if pos.size else float("nan")

    min_subnormal = min_normal

    @property
    def epsilon(self) -> float:
        """Distance from 1 to the next larger table value (NaN when 1 is not in the table or is
        the largest)."""
        i = np.searchsorted(self._sorted, 1.0)
        if i + 1 < self._sorted.size and self._sorted[i] == 1.0:
            return float(self._sorted[i + 1] - 1.0)
        return float("nan")

    @property
    def n_finite(self) -> int:
        """Number of distinct values."""
        return int(self._sorted.size)

    def _precision(self) -> tuple[int, int]:
        # the most significant bits of any value, and the lowest set bit of all of them
        sig, lsb = 1, 0
        for v in self._sorted[self._sorted != 0]:
            m, ex = np.frexp(abs(v))                  # |v| = m * 2**ex, 0.5 <= m < 1
            k = int(m * 2.0 ** 53)
            bits = 53 - ((k & -k).bit_length() - 1)   # drop the trailing zeros
            sig = max(sig, bits)
            lsb = min(lsb, int(ex) - bits)
        return sig, lsb


class _NumbaKernels:
    """The Numba kernels of this module under the adapter's method names."""

    encode_kernel = staticmethod(encode_kernel)
    decode_kernel = staticmethod(decode_kernel)
    arith_kernel = staticmethod(arith_kernel)


def _kernels(launch):
    """The Numba kernels, or their CUDA twins on ``launch`` (see formats.gpu)."""
    return _NumbaKernels if launch is None else CodebookKernels(launch)
