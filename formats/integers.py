"""Two's-complement and unsigned integers of 1..32 bits, and fixed point.

``IntFormat(bits, signed, frac_bits)`` holds the integer ``k`` in ``bits`` bits (two's complement
when signed) and means ``k * 2**-frac_bits``.  Rounding uses the same modes as floats; overflow
either ``saturate``s (default) to the range or ``wrap``s modulo ``2**bits`` as two's-complement
hardware does.  NaN input raises ValueError; +-Inf saturates, and raises under ``wrap``.
Integer-dtype inputs are exact (no float64 detour).  Arithmetic: sums are exact, products keep
``2 * frac_bits`` fraction bits and are rounded once (FMA adds before that rounding).
"""
from __future__ import annotations

import numpy as np

from . import int_kernels as ik
from .gpu.int_kernels import IntKernels
from .rounding import NEAREST_EVEN, SATURATE, WRAP
from .scalar import ScalarFormat, check_bool, check_int


class IntFormat(ScalarFormat):
    """Integer or fixed-point format: ``bits`` 1..32, ``frac_bits`` 0..32."""

    overflow_policies = ("saturate", "wrap")
    default_overflow = "saturate"
    has_inf = False
    has_nan = False
    kind = "int"

    def __init__(self, bits: int, signed: bool = True, frac_bits: int = 0,
                 name: str | None = None):
        self.bits = check_int("bits", bits, 1, 32)
        self.frac_bits = check_int("frac_bits", frac_bits, 0, 32)
        self.signed = check_bool("signed", signed)
        prefix = "" if self.signed else "u"
        self.name = name or (f"{prefix}int{self.bits}" if self.frac_bits == 0
                             else f"{prefix}fix{self.bits}_{self.frac_bits}")
        self.qmin = -(1 << (self.bits - 1)) if self.signed else 0
        self.qmax = (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1
        fields = {"bits": self.bits, "signed": int(self.signed), "frac_bits": self.frac_bits,
                  "qmin": self.qmin, "qmax": self.qmax}
        self._desc = tuple(int(fields[f]) for f in ik.FIELDS)

    def descriptor(self) -> np.ndarray:
        """The plain integer descriptor the kernels take (field order: int_kernels.FIELDS)."""
        return np.array(self._desc, dtype=np.int64)

    def _raise_flags(self, counts: tuple[int, int]) -> None:
        n_nan, n_inf = counts
        if n_nan:
            raise ValueError(f"{self.name} has no NaN, but the input holds {n_nan} NaN value(s)")
        if n_inf:
            raise ValueError(f"{self.name}: {n_inf} infinite value(s) cannot wrap; "
                             f"use overflow='saturate'")

    def _encode_chunk(self, x, out, mode, overflow, key, offset, sr_bits, launch=None) -> None:
        k = _kernels(launch)
        if x.dtype.kind in "iu":
            if x.dtype == np.uint64:     # wrap: same bits modulo 2**64; saturate: clip first
                x = (x.view(np.int64) if overflow == WRAP
                     else np.minimum(x, np.iinfo(np.int64).max).astype(np.int64))
            k.encode_int_kernel(x, out, self._desc, overflow)
            return
        self._raise_flags(k.encode_kernel(x, out, self._desc, mode, overflow, key, offset,
                                          sr_bits))

    def _quantize_chunk(self, x, out, mode, overflow, key, offset, sr_bits, launch=None) -> None:
        if (launch is None and mode == NEAREST_EVEN and overflow == SATURATE
                and x.dtype.kind == "f" and self.bits <= 53):
            self._raise_flags((ik.quantize_nearest_saturate_kernel(x, out, self._desc), 0))
            return
        super()._quantize_chunk(x, out, mode, overflow, key, offset, sr_bits, launch)

    def _decode_chunk(self, codes, out, launch=None) -> None:
        _kernels(launch).decode_kernel(codes, out, self._desc)

    def _arith_chunk(self, op, a, b, c, out, mode, overflow, key, offset, sr_bits,
                     launch=None) -> None:
        _kernels(launch).arith_kernel(op, a, b, a if c is None else c, self._desc, out, mode,
                                      overflow, key, offset, sr_bits)

    @property
    def max(self) -> float:
        """Largest value, ``qmax * 2**-frac_bits``."""
        return self.qmax * 2.0 ** -self.frac_bits

    @property
    def min(self) -> float:
        """Smallest (most negative) value."""
        return self.qmin * 2.0 ** -self.frac_bits

    @property
    def min_normal(self) -> float:
        """Smallest positive value, 2**-frac_bits (integers have no subnormals)."""
        return 2.0 ** -self.frac_bits

    min_subnormal = min_normal

    @property
    def epsilon(self) -> float:
        """The spacing of the grid, 2**-frac_bits."""
        return 2.0 ** -self.frac_bits

    @property
    def n_finite(self) -> int:
        """Number of values, 2**bits."""
        return 1 << self.bits

    def _precision(self) -> tuple[int, int]:
        return self.bits - int(self.signed), -self.frac_bits


def _kernels(launch):
    """The Numba kernels, or their CUDA twins on ``launch`` (see formats.gpu)."""
    return ik if launch is None else IntKernels(launch)
