"""Posits (Posit Standard 2022) of n = 2..32 bits with es = 0..4 exponent bits.

A posit code is ``sign | regime | exponent | fraction``; a negative value's code is the two's
complement of its magnitude's code, so codes read as n-bit two's-complement integers order like
their values.  ``useed = 2**(2**es)``; ``maxpos = useed**(n-2)`` and ``minpos = 1/maxpos``.
There is one zero and one NaR ("not a real", the sign bit alone): NaN and +-Inf inputs give NaR,
and NaR decodes to NaN.

Rounding is defined on the posit ring, that is on the bit string:

* ``nearest_even`` (default) and ``nearest_away`` round the exact value's infinite posit string
  to n bits, ties to the even code or away from zero.  Where fraction bits remain this is
  rounding to the nearest value; where the regime leaves no room for all exponent bits the
  midpoint between two neighbours is the string midpoint (a geometric one), as the standard says.
* ``toward_zero``, ``toward_positive``, ``toward_negative`` give the neighbour in that direction
  (the code order is the value order, so truncating the string is directed rounding).
* ``stochastic`` rounds away from zero with probability ``floor(f * 2**sr_bits) / 2**sr_bits``,
  ``f`` being the discarded part of the string as a fraction of one unit in the last code bit.
  It equals value-linear stochastic rounding wherever fraction bits remain.

In every mode a magnitude beyond maxpos saturates to maxpos and a nonzero magnitude below minpos
holds at minpos: posits never overflow, never round a nonzero value to zero and never to NaR.
The only overflow policy is therefore ``saturate``.  ``add``/``sub``/``mul``/``fma`` round the
exact result once.  The quire (exact dot products) is :class:`formats.Quire`.
"""
from __future__ import annotations

import numpy as np

from . import posit_kernels as pk
from .gpu.posit_kernels import PositKernels
from .scalar import ScalarFormat, check_int


class PositFormat(ScalarFormat):
    """An n-bit posit with ``es`` exponent bits: ``nbits`` 2..32, ``es`` 0..4."""

    overflow_policies = ("saturate",)
    default_overflow = "saturate"
    kind = "posit"
    signed = True
    has_inf = False
    has_nan = True          # NaR, decoded as NaN

    def __init__(self, nbits: int, es: int, name: str | None = None):
        self.bits = check_int("nbits", nbits, 2, 32)
        self.es = check_int("es", es, 0, 4)
        self.name = name or f"posit{self.bits}_{self.es}"
        self._desc = (self.bits, self.es)

    @property
    def nbits(self) -> int:
        """Width of a code in bits (same as ``bits``)."""
        return self.bits

    @property
    def emax(self) -> int:
        """log2(maxpos) = (nbits - 2) * 2**es."""
        return (self.bits - 2) << self.es

    @property
    def nar_code(self) -> int:
        """The NaR code, 2**(nbits - 1)."""
        return 1 << (self.bits - 1)

    def descriptor(self) -> np.ndarray:
        """The plain integer descriptor the kernels take (field order: posit_kernels.FIELDS)."""
        return np.array(self._desc, dtype=np.int64)

    # ---- kernels -----------------------------------------------------------------------
    def _encode_chunk(self, x, out, mode, overflow, key, offset, sr_bits, launch=None) -> None:
        k = _kernels(launch)
        if x.dtype.kind in "iu" and x.dtype.itemsize == 8:
            k.encode_int_kernel(x, out, self._desc, mode, key, offset, sr_bits)
        else:
            k.encode_kernel(x, out, self._desc, mode, key, offset, sr_bits)

    def _quantize_chunk(self, x, out, mode, overflow, key, offset, sr_bits, launch=None) -> None:
        if x.dtype.kind in "iu" and x.dtype.itemsize == 8:
            super()._quantize_chunk(x, out, mode, overflow, key, offset, sr_bits, launch)
        else:
            _kernels(launch).quantize_kernel(x, out, self._desc, mode, key, offset, sr_bits)

    def _decode_chunk(self, codes, out, launch=None) -> None:
        _kernels(launch).decode_kernel(codes, out, self._desc)

    def _arith_chunk(self, op, a, b, c, out, mode, overflow, key, offset, sr_bits,
                     launch=None) -> None:
        _kernels(launch).arith_kernel(op, a, b, a if c is None else c, self._desc, out, mode,
                                      key, offset, sr_bits)

    # ---- properties --------------------------------------------------------------------
    @property
    def max(self) -> float:
        """maxpos = 2**emax."""
        return 2.0 ** self.emax

    @property
    def min_normal(self) -> float:
        """minpos = 2**-emax (posits have no subnormals: every value is normal)."""
        return 2.0 ** -self.emax

    min_subnormal = min_normal

    @property
    def epsilon(self) -> float:
        """Distance from 1 to the next larger posit (NaN for 2-bit posits, where 1 is maxpos)."""
        one = 1 << (self.bits - 2)
        return float(pk.decode_one(np.int64(one + 1), self._desc)) - 1.0

    @property
    def n_finite(self) -> int:
        """Number of values: every code but NaR, 2**nbits - 1."""
        return (1 << self.bits) - 1

    def _precision(self) -> tuple[int, int]:
        # at most n - 3 - es fraction bits (next to 1); every posit is a multiple of minpos
        return max(self.bits - 3 - self.es, 0) + 1, -self.emax


def _kernels(launch):
    """The Numba kernels, or their CUDA twins on ``launch`` (see formats.gpu)."""
    return pk if launch is None else PositKernels(launch)
