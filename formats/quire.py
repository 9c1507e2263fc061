"""The quire: an exact fixed-point accumulator for sums of posit products (Posit Standard 2022).

Layout.  The quire's least significant bit is ``minpos**2 = 2**(-2*emax)`` (every posit is a
multiple of minpos, so every product is a multiple of minpos**2) and it holds the two's-complement
integer of ``width = 4*emax + 32`` bits, ``emax = (n - 2) * 2**es``: ``2*emax`` fraction bits,
``2*emax + 1`` integer bits for maxpos**2, 30 carry-guard bits and the sign.  For es = 2 that is
the standard's 16*n bits; for other es it is the same layout, so the same guarantee holds: at least
2**30 products of maxpos * maxpos add without overflow.  (SoftPosit's posit8 and posit16 quires
are narrower, 32 and 128 bits; any sum that fits in those gives the same result here.)

A sum outside the quire's range gives NaR when read (hardware would wrap; intermediate excursions
outside the range are harmless either way, because two's-complement addition is exact modulo
2**width).  A NaR operand makes the quire NaR.

Implementation: the quire is an array of int64 digits in base 2**32 whose carries are propagated
lazily, so adding a product touches three digits and never loops over carries; digits are
normalised every 2**30 additions (each addition changes a digit by less than 2**32) and when read.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
from numba import prange

from . import posit_kernels as pk
from .bitcast import clz64
from .kernel_cache import njit
from .posits import PositFormat
from .rounding import mode_id, resolve_sr_bits, seed_key
from .scalar import as_code_array, check_int, flat_chunks

_MASK32 = np.uint64(0xFFFFFFFF)
_NORMALIZE_EVERY = 1 << 30


def quire_width(fmt: PositFormat) -> int:
    """Width in bits of the quire of a posit format: 4*emax + 32 (16*n for es = 2)."""
    return 4 * fmt.emax + 32


def _n_digits(fmt: PositFormat) -> int:
    """32-bit digits held: the width plus two digits of headroom for carries."""
    return (quire_width(fmt) + 31) // 32 + 2


@njit(inline="always")
def add_scaled(q, neg: bool, m: np.uint64, pos: np.int64) -> None:
    """q += (-1)**neg * m * 2**pos (in units of the quire's lsb); m < 2**62 and, when pos < 0,
    the low -pos bits of m are zero."""
    if pos < 0:
        m >>= np.uint64(-pos)
        pos = 0
    j = pos >> 5
    b = np.uint64(pos & 31)
    lo = np.int64((m << b) & _MASK32)
    mid = np.int64((m >> (np.uint64(32) - b)) & _MASK32)
    hi = np.int64((m >> np.uint64(32)) >> (np.uint64(32) - b))
    if neg:
        lo, mid, hi = -lo, -mid, -hi
    q[j] += lo
    q[j + 1] += mid
    q[j + 2] += hi


# A posit operand is packed once into an int64 word, so the O(rows * K) loops never decode:
# bits 0..30 the significand m (|x| = m * 2**(E - 30); 0 for zero and NaR), bit 31 the sign,
# bits 32..47 E + _E_BIAS, bit 48 NaR.
_M31 = np.int64((1 << 31) - 1)
_E_BIAS = 1024


@njit
def _pack_kernel(codes, out, d) -> None:
    """Packed words (see above) of posit codes.  Serial: it is O(operands), the dot loops are
    O(outputs * K), and a parallel launch costs more than it saves on the short vectors that
    Quire.fma is often given."""
    for i in range(codes.shape[0]):
        kind, neg, big_e, sig = pk.unpack(np.int64(codes[i]), d)
        finite = kind == pk.FINITE
        m = np.int64(sig >> np.uint64(33)) if finite else 0
        out[i] = (m | (np.int64(neg) << 31) | ((big_e if finite else 0) + _E_BIAS) << 32
                  | np.int64(kind == pk.NAR) << 48)


def _pack(fmt: PositFormat, codes: np.ndarray) -> np.ndarray:
    """Packed int64 words of a code array (any byte order and layout), same shape."""
    flat = np.ascontiguousarray(codes, dtype=codes.dtype.newbyteorder("=")).reshape(-1)
    out = np.empty(flat.shape, dtype=np.int64)
    _pack_kernel(flat, out, fmt._desc)
    return out.reshape(codes.shape)


@njit
def _dot_into(q, a, b, subtract: bool, d) -> bool:
    """q += sum(a * b) (or -= when ``subtract``) for packed 1-D arrays; True if any is NaR."""
    base = 2 * pk.emax(d) - 60 - 2 * _E_BIAS       # lsb position of a product, less the E's
    nar = np.int64(0)
    count = 0
    for i in range(a.shape[0]):
        wa = a[i]
        wb = b[i]
        p = np.uint64((wa & _M31) * (wb & _M31))      # exact; 0 when either is zero
        pos = ((wa >> 32) & 0xFFFF) + ((wb >> 32) & 0xFFFF) + base
        add_scaled(q, (((wa ^ wb) >> 31) & 1 != 0) != subtract, p, pos)
        nar |= wa | wb
        count += 1
        if count == _NORMALIZE_EVERY:
            normalize(q)
            count = 0
    normalize(q)
    return (nar >> 48) & 1 != 0


@njit
def normalize(q) -> None:
    """Propagate carries: every digit but the top one ends in 0 .. 2**32 - 1."""
    carry = np.int64(0)
    for i in range(q.shape[0] - 1):
        v = q[i] + carry
        q[i] = v & np.int64(0xFFFFFFFF)
        carry = v >> 32
    q[q.shape[0] - 1] += carry


@njit
def _round_quire(q, nar: bool, d, width: np.int64, mode: np.int64, key: np.uint64,
                 index: np.int64, sr_bits: np.int64) -> np.int64:
    """Code of the quire's value rounded once (q is normalised and may be negated in place)."""
    nar_code = 1 << (d[pk.NBITS] - 1)
    if nar:
        return nar_code
    neg = to_magnitude(q)
    if not q.any():
        return 0
    sig, top_bit = leading_bits(q)
    if top_bit > width - 2:
        return nar_code                                  # outside the quire's range
    return pk.round_unpacked(neg, top_bit - 2 * pk.emax(d), sig, d, mode, key, index, sr_bits)


@njit
def to_magnitude(q) -> bool:
    """Normalise the digits q and replace a negative value by its magnitude; True if it was
    negative."""
    normalize(q)
    top = q.shape[0] - 1
    neg = q[top] < 0
    if neg:
        for i in range(top + 1):
            q[i] = -q[i]
        normalize(q)
    return neg


@njit
def leading_bits(q):
    """(sig, top) for normalised non-negative digits q holding a nonzero value: ``sig`` is the
    value's 64 leading bits (bit 63 set) with every lower nonzero bit ORed into bit 0 (sticky),
    ``top`` the position of its leading bit, counted from bit 0 of ``q[0]``."""
    t = q.shape[0] - 1
    while q[t] == 0:
        t -= 1
    t = max(t, 1)
    hi = (np.uint64(q[t]) << np.uint64(32)) | np.uint64(q[t - 1])
    lo = (np.uint64(q[t - 2]) << np.uint64(32)) if t >= 2 else np.uint64(0)
    lo |= np.uint64(q[t - 3]) if t >= 3 else np.uint64(0)
    sticky = False
    for i in range(t - 3):
        sticky |= q[i] != 0
    lz = clz64(hi)                                      # < 64: hi holds the top digit
    sig = (hi << np.uint64(lz)) | ((lo >> np.uint64(1)) >> np.uint64(63 - lz))
    sticky |= (lo << np.uint64(lz)) != np.uint64(0)
    return sig | np.uint64(sticky), 32 * (t - 1) - lz + 63


@njit(parallel=True)
def _fused_dot_kernel(a, b, rows_a, rows_b, out, d, n_digits, width, mode, key, sr_bits):
    """out[r] = round(sum_k a[rows_a[r], k] * b[rows_b[r], k]) on packed words, each row
    through its own quire."""
    for r in prange(out.shape[0]):
        q = np.zeros(n_digits, dtype=np.int64)
        nar = _dot_into(q, a[rows_a[r]], b[rows_b[r]], False, d)
        out[r] = _round_quire(q, nar, d, width, mode, key, r, sr_bits)


def _posit_format(fmt) -> PositFormat:
    from .registry import get                     # registry imports this package's formats
    fmt = get(fmt)
    if not isinstance(fmt, PositFormat):
        raise TypeError(f"a quire needs a posit format, got {fmt.name}")
    return fmt


def fused_dot(fmt: PositFormat | str, a, b, rounding: str = "nearest_even",
              seed: int | None = None, sr_bits: int | None = None) -> np.ndarray:
    """Fused dot products over the last axis: ``round(sum_k a[..., k] * b[..., k])`` with one
    rounding per result, each accumulated exactly in a quire.  ``a`` and ``b`` are posit codes
    whose leading axes broadcast; returns codes of shape ``broadcast(a, b).shape[:-1]``."""
    fmt = _posit_format(fmt)
    a = as_code_array(a, fmt.bits, fmt.name)
    b = as_code_array(b, fmt.bits, fmt.name)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("fused_dot needs arrays with a last (summed) axis")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"last axes differ: {a.shape[-1]} and {b.shape[-1]}")
    mode = mode_id(rounding)
    sr = resolve_sr_bits(sr_bits)
    key = seed_key(seed, rounding)
    shape = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    k = a.shape[-1]
    if k == 0:
        return np.zeros(shape, dtype=fmt.code_dtype)          # empty sums are exactly 0
    # each output row names its row of a and of b: broadcasting costs no copies of the operands
    rows_a = np.broadcast_to(np.arange(a.size // k).reshape(a.shape[:-1]), shape).reshape(-1)
    rows_b = np.broadcast_to(np.arange(b.size // k).reshape(b.shape[:-1]), shape).reshape(-1)
    out = np.empty(rows_a.size, dtype=fmt.code_dtype)
    _fused_dot_kernel(_pack(fmt, a).reshape(-1, k), _pack(fmt, b).reshape(-1, k), rows_a,
                      rows_b, out, fmt._desc,
                      _n_digits(fmt), quire_width(fmt), mode, key, sr)
    return out.reshape(shape)


class Quire:
    """An exact accumulator for one posit format.

    ``q.fma(a, b)`` adds ``sum(a * b)`` exactly (arrays of codes broadcast; a scalar pair adds
    one product), ``q.fms(a, b)`` subtracts it, ``q.add(p)`` adds ``sum(p)``; each returns the
    quire.  ``q.to_posit()`` rounds the value once; ``q.to_fraction()`` gives it exactly.
    """

    def __init__(self, fmt: PositFormat | str):
        self.format = _posit_format(fmt)
        self.width = quire_width(self.format)
        self.lsb_exponent = -2 * self.format.emax
        self._digits = np.zeros(_n_digits(self.format), dtype=np.int64)
        self._nar = False

    @property
    def is_nar(self) -> bool:
        """True once a NaR went in, or when the value left the quire's range."""
        return self._nar or self._out_of_range()

    def clear(self) -> "Quire":
        """Set the quire to zero."""
        self._digits[:] = 0
        self._nar = False
        return self

    def _accumulate(self, a, b, subtract: bool) -> "Quire":
        fmt = self.format
        a, b = np.broadcast_arrays(as_code_array(a, fmt.bits, fmt.name),
                                   as_code_array(b, fmt.bits, fmt.name))
        a = a.reshape(-1)
        b = b.reshape(-1)
        for start, stop in flat_chunks(a.size):
            self._nar |= _dot_into(self._digits, _pack(fmt, a[start:stop]),
                                   _pack(fmt, b[start:stop]), subtract, fmt._desc)
        return self

    def fma(self, a, b) -> "Quire":
        """Add the exact products ``a * b`` (codes; summed over all broadcast elements)."""
        return self._accumulate(a, b, False)

    def fms(self, a, b) -> "Quire":
        """Subtract the exact products ``a * b``."""
        return self._accumulate(a, b, True)

    def add(self, p) -> "Quire":
        """Add the posits ``p`` (codes; all elements are summed)."""
        one = 1 << (self.format.bits - 2)
        return self._accumulate(p, np.array(one, dtype=self.format.code_dtype), False)

    def to_posit(self, rounding: str = "nearest_even", seed: int | None = None,
                 sr_bits: int | None = None, index: int = 0) -> np.unsignedinteger:
        """The quire's value rounded once to a posit code (NaR when the quire is NaR).

        Stochastic rounding draws the random bits of element ``index`` of the seed's stream
        (:func:`fused_dot` uses the output's flat index): give separate quires rounded with one
        seed different indices, or their rounding errors are fully correlated."""
        mode = mode_id(rounding)
        key = seed_key(seed, rounding)
        index = check_int("index", index, 0, (1 << 63) - 1)
        code = _round_quire(self._digits.copy(), self._nar, self.format._desc, self.width, mode,
                            key, index, resolve_sr_bits(sr_bits))
        return self.format.code_dtype.type(code)

    def _integer(self) -> int:
        return sum(int(v) << (32 * i) for i, v in enumerate(self._digits))

    def _out_of_range(self) -> bool:
        return abs(self._integer()) >= 1 << (self.width - 1)

    def to_fraction(self) -> Fraction:
        """The exact value as a Fraction (ValueError when the quire is NaR)."""
        if self.is_nar:
            raise ValueError("the quire is NaR")
        return Fraction(self._integer()) * Fraction(2) ** self.lsb_exponent

    def __repr__(self) -> str:
        value = "NaR" if self.is_nar else str(float(self.to_fraction()))
        return f"<Quire {self.format.name} ({self.width} bits) = {value}>"
