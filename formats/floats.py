"""Floating-point formats of any exponent and mantissa width (IEEE-style and OCP conventions).

Special-value conventions (``kind``):

* ``ieee``   top exponent reserved: mantissa 0 is +-Inf, anything else NaN (fp32, fp16, bf16,
  fp8_e5m2, ...).  Needs ``mbits >= 1``.
* ``fn``     no Inf; NaN only where exponent and mantissa are all ones (OCP fp8_e4m3, max 448).
* ``fnuz``   no Inf, no -0; the single NaN is the negative-zero code (default bias 2**(ebits-1)).
* ``finite`` no Inf, no NaN: every code is a number (OCP fp6/fp4).
* ``e8m0``   unsigned powers of two, no zero, no sign, no mantissa: code c is 2**(c - bias), the
  all-ones code is NaN (OCP MX scale).  ``nearest_even`` breaks a tie (1.5 * 2**k) toward the
  even code; ml_dtypes' cast breaks it away from zero (``nearest_away``).

Values are ``(-1)**s * 2**(E - bias) * 1.m`` for exponent field E >= 1 and
``(-1)**s * 2**(1 - bias) * 0.m`` for E = 0 (subnormals; read as zero when ``subnormals=False``).

Overflow defaults: ``ieee`` for every format with NaN (the common casts: e4m3 464 -> 448,
465 -> NaN; e5m2 overflow -> Inf), ``saturate`` for ``finite`` formats (OCP).  NaN into a format
without NaN raises ValueError.  Subnormal results are flushed to zero of the same sign (+0 in
fnuz) after rounding when ``subnormals=False``.  Unsigned formats: a negative value that does not
round to zero becomes NaN (or 0 where there is no NaN).  ``e8m0`` has no zero: 0 and negative
inputs give NaN, positive values below 2**-bias give the smallest code.
"""
from __future__ import annotations

import numpy as np

from . import float_kernels as fk
from .gpu.float_kernels import FloatKernels
from .rounding import NEAREST_EVEN
from .scalar import ScalarFormat, check_bool, check_int

KINDS = ("ieee", "fn", "fnuz", "finite", "e8m0")


class FloatFormat(ScalarFormat):
    """A binary floating-point format: ``ebits`` 1..10, ``mbits`` 0..23, optional ``bias``.

    Every value and every product of two values is exact in float64 (checked: the bias must
    keep the format's range inside 2**-537 .. 2**512).
    """

    overflow_policies = ("ieee", "saturate")

    def __init__(self, ebits: int, mbits: int, bias: int | None = None, kind: str = "ieee",
                 signed: bool = True, subnormals: bool = True, name: str | None = None):
        self.ebits = check_int("ebits", ebits, 1, 10)
        self.mbits = check_int("mbits", mbits, 0, 23)
        if kind not in KINDS:
            raise ValueError(f"unknown float kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind = kind
        self.signed = check_bool("signed", signed)
        self.subnormals = check_bool("subnormals", subnormals)
        if kind == "ieee" and self.mbits == 0:
            raise ValueError("kind 'ieee' needs mbits >= 1 to encode NaN; use 'fn' or 'finite'")
        if kind == "fnuz" and not self.signed:
            raise ValueError("kind 'fnuz' puts NaN at the negative-zero code: it must be signed")
        if kind == "e8m0" and (self.mbits != 0 or self.signed):
            raise ValueError("kind 'e8m0' is unsigned with mbits=0")
        default_bias = (1 << (self.ebits - 1)) - (0 if kind == "fnuz" else 1)
        self.bias = default_bias if bias is None else check_int("bias", bias, -1000, 1000)
        self.bits = self.ebits + self.mbits + int(self.signed)
        self.has_inf = kind == "ieee"
        self.has_nan = kind in ("ieee", "fn", "fnuz", "e8m0")
        self.default_overflow = "ieee" if self.has_nan else "saturate"
        self.name = name or self._grammar_name()
        top_field = (1 << self.ebits) - (2 if kind in ("ieee", "e8m0") else 1)
        top = top_field - self.bias                     # the largest value is below 2**(top+1)
        lsb = self._precision()[1]
        if lsb < -537 or top > 511:
            raise ValueError(f"bias {self.bias} puts {self.name} outside 2**-537..2**512, where "
                             f"products are no longer exact in float64")
        self._desc = self._descriptor()
        if self.kind != "e8m0" and not self.max >= self.min_normal:
            raise ValueError(f"{self.name} has no normal numbers (its largest finite value is "
                             f"{self.max}); use more exponent bits")

    def _grammar_name(self) -> str:
        suffix = "" if self.kind in ("ieee", "e8m0") else self.kind
        name = f"{'' if self.signed or self.kind == 'e8m0' else 'u'}e{self.ebits}m{self.mbits}"
        name += suffix
        default_bias = (1 << (self.ebits - 1)) - (0 if self.kind == "fnuz" else 1)
        if self.bias != default_bias:
            name += f"_b{self.bias}"
        if not self.subnormals:
            name += "_ftz"
        return name

    def _descriptor(self) -> tuple[int, ...]:
        e, m = self.ebits, self.mbits
        top_exp = (1 << e) - 1
        if self.kind == "ieee":
            max_mag = (top_exp << m) - 1
        elif self.kind in ("fn", "e8m0"):
            max_mag = (1 << (e + m)) - 2
        else:
            max_mag = (1 << (e + m)) - 1
        sign_bit = (1 << (e + m)) if self.signed else 0
        nan_code = {"ieee": (top_exp << m) | (1 << (m - 1)) if m else -1,
                    "fn": (1 << (e + m)) - 1, "fnuz": sign_bit, "finite": -1,
                    "e8m0": (1 << e) - 1}[self.kind]
        fields = {
            "mbits": m,
            "emin": self.emin,
            "max_mag": max_mag,
            "sign_bit": sign_bit,
            "nan_code": nan_code,
            "inf_mag": (top_exp << m) if self.kind == "ieee" else -1,
            "subnormals": int(self.subnormals),
            "no_zero": int(self.kind == "e8m0"),
            "neg_zero": int(self.signed and self.kind != "fnuz"),
            "fnuz_nan": int(self.kind == "fnuz"),
        }
        return tuple(int(fields[f]) for f in fk.FIELDS)

    def descriptor(self) -> np.ndarray:
        """The plain integer descriptor the kernels take (field order: float_kernels.FIELDS)."""
        return np.array(self._desc, dtype=np.int64)

    # ---- kernels -----------------------------------------------------------------------
    def _raise_flags(self, n_nan: int) -> None:
        """Raise for NaN inputs the format cannot hold (the kernels count them)."""
        if n_nan:
            raise ValueError(f"{self.name} has no NaN, but the input holds {n_nan} NaN value(s)")

    def _encode_chunk(self, x, out, mode, overflow, key, offset, sr_bits, launch=None) -> None:
        if x.dtype.kind in "iu" and x.dtype.itemsize == 8:
            x, lo = _int64_pairs(x)
        else:
            lo = None
        self._raise_flags(_kernels(launch).encode_kernel(
            x, lo, out, self._desc, self._specials(mode, overflow), mode, key, offset, sr_bits))

    def _quantize_chunk(self, x, out, mode, overflow, key, offset, sr_bits, launch=None) -> None:
        if x.dtype.kind in "iu" and x.dtype.itemsize == 8:
            super()._quantize_chunk(x, out, mode, overflow, key, offset, sr_bits, launch)
            return
        k = _kernels(launch)
        spv = fk.special_values(self._desc, mode, overflow)
        if mode == NEAREST_EVEN and self.mbits >= 1:
            nans = k.quantize_nearest_even_kernel(x, out, self._desc, spv)
        elif launch is None and fk.bitwise_rounds(self._desc, mode):
            # the CUDA engine takes the general kernel below: the same bits
            kernel = (fk.quantize_bitwise_rest_kernel if fk.bitwise_rest(self._desc, mode, sr_bits)
                      else fk.quantize_bitwise_kernel)
            nans = kernel(x, out, self._desc, spv, mode, key, offset, sr_bits)
        else:
            self._raise_flags(k.quantize_kernel(
                x, out, self._desc, self._specials(mode, overflow), mode, key, offset, sr_bits))
            return
        self._raise_flags(nans if not self.has_nan else 0)      # NaN inputs, counted

    def _decode_chunk(self, codes, out, launch=None) -> None:
        _kernels(launch).decode_kernel(codes, out, self._desc)

    def _arith_chunk(self, op, a, b, c, out, mode, overflow, key, offset, sr_bits,
                     launch=None) -> None:
        d = self._desc
        self._raise_flags(_kernels(launch).arith_kernel(
            op, a, b, a if c is None else c, d, d, d, out, d, self._specials(mode, overflow),
            mode, key, offset, sr_bits))

    def _specials(self, mode: int, overflow: int) -> tuple:
        return fk.special_codes(self._desc, mode, overflow)

    # ---- properties --------------------------------------------------------------------
    @property
    def emin(self) -> int:
        """Exponent of the smallest normal binade (min_normal = 2**emin)."""
        return -self.bias if self.kind == "e8m0" else 1 - self.bias

    @property
    def max(self) -> float:
        """Largest finite value."""
        return float(fk.decode_one(np.int64(self._desc[fk.MAX_MAG]), self._desc))

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value, 2**emin (for e8m0 the smallest value)."""
        return 2.0 ** self.emin

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value; equals min_normal when there are no subnormals."""
        if self.subnormals and self.mbits and self.kind != "e8m0":
            return 2.0 ** (self.emin - self.mbits)
        return self.min_normal

    @property
    def epsilon(self) -> float:
        """Distance from 1 to the next larger value, 2**-mbits."""
        return 2.0 ** -self.mbits

    @property
    def n_finite(self) -> int:
        """Number of distinct finite values (+0 and -0 count once)."""
        mags = int(self._desc[fk.MAX_MAG]) + 1
        if not self.subnormals and self.kind != "e8m0":
            mags -= (1 << self.mbits) - 1
        if self.kind == "e8m0" or not self.signed:
            return mags
        return 2 * mags - 1

    def _precision(self) -> tuple[int, int]:
        lsb = self.emin - self.mbits if self.subnormals else self.emin
        return self.mbits + 1, lsb


def _kernels(launch):
    """The Numba kernels, or their CUDA twins on ``launch`` (see formats.gpu)."""
    return fk if launch is None else FloatKernels(launch)


def _int64_pairs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact, normalised (s, e) float64 pairs with s + e == x for int64/uint64 values."""
    low = x & 0x7FF
    hi = (x - low).astype(np.float64)                 # a multiple of 2**11 below 2**64: exact
    lo = low.astype(np.float64)
    s = hi + lo                                       # TwoSum (Knuth): e is the exact error
    bp = s - hi
    e = (hi - (s - bp)) + (lo - bp)
    return s, e
