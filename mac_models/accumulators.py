"""Accumulator designs: what a MAC unit adds its products into.

Each class is a frozen description (a value, comparable and hashable); the arithmetic lives in
:mod:`mac_models.kernels`.  Conventions:

* ``IntAccumulator(bits, overflow)``: a two's-complement register of ``bits`` bits (2..62).  Every
  addition is exact in int64 and then wrapped modulo 2**bits or clamped to [-2**(bits-1),
  2**(bits-1) - 1]; each time that changed the value counts as one event.
* ``FloatAccumulator(format, rounding)``: every addition ``acc + x`` is rounded once into
  ``format`` (any :class:`formats.FloatFormat`) with ``rounding`` (stochastic included, keyed by
  ``seed`` and the position of the addition, see :mod:`mac_models.ops`).  ``kahan=True`` adds a
  compensation register of the same format (Kahan's algorithm, every step rounded).
* ``AlignedAccumulator(n, p, alignment, format, rounding)``: the tensor-core model of Fasi et al.
  (2021) and the DeepSeek-V3 report (arXiv 2412.19437, section 3.5.2).  Products come in groups of
  ``n``; E is the largest binade (floor(log2|v|)) among the group's products and the running sum;
  every term, the running sum included, keeps only its bits at or above 2**(E - p + 1) (``p``
  bits from E down), dropped by truncation toward zero (``"truncate"``) or rounded to nearest,
  ties to even (``"round"``); the kept terms are added exactly and the sum is rounded once into
  ``format`` with ``rounding`` (default toward zero, which Fasi et al. observed; with p + log2(n+1)
  <= the format's precision the sum is exact there anyway).
* ``ExactAccumulator(format, rounding)``: a Kulisch accumulator: the sum of all products is exact
  and rounded once, at the end, into ``format``.
* ``QuireAccumulator(format)``: the posit quire of ``format`` (see :mod:`formats.quire`); the
  operands must be posits of that format and the result is rounded once into it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from formats import FloatFormat, PositFormat, get
from formats.rounding import MODES, check_seed, resolve_sr_bits
from formats.scalar import check_bool, check_int

OVERFLOWS = ("wrap", "saturate")
ALIGNMENTS = ("truncate", "round")


def _float_format(fmt, what: str) -> FloatFormat:
    """``fmt`` (a name or object) as a FloatFormat, else a clear error naming ``what``."""
    f = get(fmt)
    if not isinstance(f, FloatFormat):
        raise TypeError(f"{what} must be a floating-point format, got {f!r}")
    if f.mbits == 0:
        raise ValueError(f"{what} {f.name} has no mantissa bits; an accumulator needs at least one")
    return f


def _check_rounding(rounding: str) -> str:
    if rounding not in MODES:
        raise ValueError(f"unknown rounding {rounding!r}; choose one of {', '.join(MODES)}")
    return rounding


def _check_random(seed, sr_bits=None) -> None:
    """Refuse a bad ``seed`` or ``sr_bits`` when the accumulator is made, not at its first use."""
    check_seed(seed)
    resolve_sr_bits(sr_bits)


@dataclass(frozen=True)
class IntAccumulator:
    """A ``bits``-bit two's-complement accumulator that wraps or saturates on overflow."""

    bits: int = 32
    overflow: str = "wrap"

    def __post_init__(self) -> None:
        check_int("IntAccumulator bits", self.bits, 2, 62)
        if self.overflow not in OVERFLOWS:
            raise ValueError(f"IntAccumulator overflow must be 'wrap' or 'saturate', got "
                             f"{self.overflow!r}")

    @property
    def name(self) -> str:
        return f"int{self.bits}" + ("_sat" if self.overflow == "saturate" else "")

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1


@dataclass(frozen=True)
class FloatAccumulator:
    """A floating-point register: each addition rounded once into ``format``."""

    format: Union[FloatFormat, str] = "fp32"
    rounding: str = "nearest_even"
    kahan: bool = False
    seed: Union[int, None] = None
    sr_bits: Union[int, None] = None
    overflow: Union[str, None] = None          # the format's default when None

    def __post_init__(self) -> None:
        object.__setattr__(self, "format", _float_format(self.format, "FloatAccumulator format"))
        _check_rounding(self.rounding)
        _check_random(self.seed, self.sr_bits)
        check_bool("kahan", self.kahan)
        if self.overflow is not None and self.overflow not in self.format.overflow_policies:
            raise ValueError(f"overflow must be one of {self.format.overflow_policies}, got "
                             f"{self.overflow!r}")

    @property
    def name(self) -> str:
        tag = "" if self.rounding == "nearest_even" else f"_{self.rounding}"
        return f"{self.format.name}{tag}" + ("_kahan" if self.kahan else "")


@dataclass(frozen=True)
class AlignedAccumulator:
    """Tensor-core multi-term adder: groups of ``n`` products aligned to the largest exponent
    (running sum included), each kept to ``p`` bits, summed exactly, rounded into ``format``."""

    n: int = 4
    p: int = 14
    alignment: str = "truncate"
    format: Union[FloatFormat, str] = "fp32"
    rounding: str = "toward_zero"

    def __post_init__(self) -> None:
        check_int("AlignedAccumulator n", self.n, 1, 1 << 16)
        check_int("AlignedAccumulator p", self.p, 1, 48)
        if self.p + (self.n + 1).bit_length() > 62:
            raise ValueError(f"AlignedAccumulator sums n + 1 = {self.n + 1} terms of p = {self.p} "
                             f"bits exactly in 62 bits: p + log2(n + 1) must stay <= 62")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be 'truncate' or 'round', got {self.alignment!r}")
        object.__setattr__(self, "format",
                           _float_format(self.format, "AlignedAccumulator format"))
        if self.rounding == "stochastic":
            raise ValueError("AlignedAccumulator rounds its normalised sum with a fixed mode; "
                             "stochastic rounding is not a tensor-core option here")
        _check_rounding(self.rounding)

    @property
    def name(self) -> str:
        return f"aligned{self.n}x{self.p}{'t' if self.alignment == 'truncate' else 'r'}" \
               f"_{self.format.name}"


@dataclass(frozen=True)
class ExactAccumulator:
    """Kulisch accumulation: the exact sum, rounded once into ``format`` at the end."""

    format: Union[FloatFormat, str] = "fp32"
    rounding: str = "nearest_even"
    seed: Union[int, None] = None
    sr_bits: Union[int, None] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "format", _float_format(self.format, "ExactAccumulator format"))
        _check_rounding(self.rounding)
        _check_random(self.seed, self.sr_bits)

    @property
    def name(self) -> str:
        return f"exact_{self.format.name}"


@dataclass(frozen=True)
class QuireAccumulator:
    """The quire of a posit format: exact sums of posit products, one rounding at the end."""

    format: Union[PositFormat, str] = "posit16_1"
    rounding: str = "nearest_even"
    seed: Union[int, None] = None

    def __post_init__(self) -> None:
        f = get(self.format)
        if not isinstance(f, PositFormat):
            raise TypeError(f"QuireAccumulator needs a posit format, got {f!r}")
        object.__setattr__(self, "format", f)
        _check_rounding(self.rounding)
        _check_random(self.seed)

    @property
    def name(self) -> str:
        return f"quire_{self.format.name}"


Accumulator = Union[IntAccumulator, FloatAccumulator, AlignedAccumulator, ExactAccumulator,
                    QuireAccumulator]
