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
from numba import njit, prange

from . import posit_kernels as pk
from .bitcast import clz64
from .posits import PositFormat
from .rounding import mode_id, resolve_seed, resolve_sr_bits
from .scalar import as_code_array, flat_chunks

_MASK32 = np.uint64(0xFFFFFFFF)
_NORMALIZE_EVERY = 1 << 30


def quire_width(fmt: PositFormat) -> int:
    """Width in bits of the quire of a posit format: 4*emax + 32 (16*n for es = 2)."""
    return 4 * fmt.emax + 32


def _n_digits(fmt: PositFormat) -> int:
    """32-bit digits held: the width plus two digits of headroom for carries."""
    return (quire_width(fmt) + 31) // 32 + 2


@njit(cache=True, inline="always")
def _add_scaled(q, neg: bool, m: np.uint64, pos: np.int64) -> None:
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


@njit(cache=True, inline="always")
def _add_product(q, a: np.int64, b: np.int64, subtract: bool, d) -> bool:
    """q += a*b (or -= when ``subtract``) for codes a, b; returns True when either is NaR."""
    ka, na, ea, sa = pk.unpack(a, d)
    kb, nb, eb, sb = pk.unpack(b, d)
    if ka == pk.FINITE and kb == pk.FINITE:
        p = (sa >> np.uint64(33)) * (sb >> np.uint64(33))     # exact: value p * 2**(ea+eb-60)
        _add_scaled(q, (na != nb) != subtract, p, ea + eb - 60 + 2 * pk.emax(d))
    return ka == pk.NAR or kb == pk.NAR


@njit(cache=True)
def _normalize(q) -> None:
    """Propagate carries: every digit but the top one ends in 0 .. 2**32 - 1."""
    carry = np.int64(0)
    for i in range(q.shape[0] - 1):
        v = q[i] + carry
        q[i] = v & np.int64(0xFFFFFFFF)
        carry = v >> 32
    q[q.shape[0] - 1] += carry


@njit(cache=True)
def _round_quire(q, nar: bool, d, width: np.int64, mode: np.int64, key: np.uint64,
                 index: np.int64, sr_bits: np.int64) -> np.int64:
    """Code of the quire's value rounded once (q is normalised and may be negated in place)."""
    nar_code = 1 << (d[pk.NBITS] - 1)
    if nar:
        return nar_code
    _normalize(q)
    top = q.shape[0] - 1
    neg = q[top] < 0
    if neg:
        for i in range(top + 1):
            q[i] = -q[i]
        _normalize(q)
    t = top
    while t >= 0 and q[t] == 0:
        t -= 1
    if t < 0:
        return 0
    if 32 * t + 64 - clz64(np.uint64(q[t])) > width - 1:
        return nar_code                                  # outside the quire's range
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
    big_e = 32 * (t - 1) - lz + 63 - 2 * pk.emax(d)
    return pk.round_unpacked(neg, big_e, sig | np.uint64(sticky), d, mode, key, index, sr_bits)



@njit(cache=True)
def _accumulate(q, a, b, subtract, d) -> bool:
    """q += sum(a*b) (or -= when ``subtract``) over flat code arrays; True if any is NaR."""
    nar = False
    count = 0
    for i in range(a.shape[0]):
        nar |= _add_product(q, np.int64(a[i]), np.int64(b[i]), subtract, d)
        count += 1
        if count == _NORMALIZE_EVERY:
            _normalize(q)
            count = 0
    _normalize(q)
    return nar


@njit(cache=True, parallel=True)
def _fused_dot_kernel(a, b, rows_a, rows_b, out, d, n_digits, width, mode, key, sr_bits):
    """out[r] = round(sum_k a[rows_a[r], k] * b[rows_b[r], k]), each through its own quire."""
    for r in prange(out.shape[0]):
        ra = rows_a[r]
        rb = rows_b[r]
        q = np.zeros(n_digits, dtype=np.int64)
        nar = False
        count = 0
        for k in range(a.shape[1]):
            nar |= _add_product(q, np.int64(a[ra, k]), np.int64(b[rb, k]), False, d)
            count += 1
            if count == _NORMALIZE_EVERY:
                _normalize(q)
                count = 0
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
    key = resolve_seed(seed) if rounding == "stochastic" else np.uint64(0)
    shape = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    k = a.shape[-1]
    if k == 0:
        return np.zeros(shape, dtype=fmt.code_dtype)          # empty sums are exactly 0
    # each output row names its row of a and of b: broadcasting costs no copies of the operands
    rows_a = np.broadcast_to(np.arange(a.size // k).reshape(a.shape[:-1]), shape).reshape(-1)
    rows_b = np.broadcast_to(np.arange(b.size // k).reshape(b.shape[:-1]), shape).reshape(-1)
    out = np.empty(rows_a.size, dtype=fmt.code_dtype)
    _fused_dot_kernel(np.ascontiguousarray(a).reshape(-1, k),
                      np.ascontiguousarray(b).reshape(-1, k), rows_a, rows_b, out, fmt._desc,
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
            self._nar |= _accumulate(self._digits, np.ascontiguousarray(a[start:stop]),
                                     np.ascontiguousarray(b[start:stop]), subtract, fmt._desc)
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
                 sr_bits: int | None = None):
        """The quire's value rounded once to a posit code (NaR when the quire is NaR)."""
        mode = mode_id(rounding)
        key = resolve_seed(seed) if rounding == "stochastic" else np.uint64(0)
        code = _round_quire(self._digits.copy(), self._nar, self.format._desc, self.width, mode,
                            key, 0, resolve_sr_bits(sr_bits))
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
