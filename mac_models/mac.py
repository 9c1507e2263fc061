"""The MAC configuration: operand formats, multiplier, accumulator, order and promotion.

A :class:`MAC` describes one hardware design; :mod:`mac_models.ops` runs ``dot``, ``matmul`` and
``conv2d`` through it.  Conventions:

* Operands are first quantized to ``a_format`` / ``b_format`` (nearest even); a format object
  or a registry name, scalar or scaled (MX, NVFP4, integer groups...).  For scaled formats the
  element products of a block are summed by the accumulator from zero, the block sum is then
  multiplied by the two block scales and added into the promotion register (``promote_to``,
  fp32 round-to-nearest-even unless given) with one rounding: ``sum_blocks (sum P_a P_b) X_a
  X_b``, as MX hardware does.  Per-tensor scales (NVFP4's FP32 one) multiply the result once at
  the end, rounded into the same register.
* The multiplier is exact (every product of two operands whose significant bits add to <= 53 is
  exact in float64; integers multiply in int64), or rounds into ``product_format``.
  ``fused=False`` rounds each product into the accumulator's format first (a separate multiply
  and add); ``fused=True`` (FMA) rounds only the sum.
* ``order``: ``"sequential"`` (k = 0, 1, ..., K - 1), ``"pairwise"`` (a balanced tree over the
  products in order) or sequential in ``chunks`` contiguous pieces summed separately and then
  combined, in order, in the same accumulator.
* ``promote_every=N``: every N products the partial sum is added into the wider ``promote_to``
  register and the accumulator restarts from zero (DeepSeek-V3's N_C = 128 into FP32; INT32
  partial sums into FP32 in integer training).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from formats import FloatFormat, IntFormat, ScaledFormat, get
from formats.rounding import MODES
from formats.scalar import ScalarFormat, check_bool, check_int

from .accumulators import (Accumulator, AlignedAccumulator, ExactAccumulator, FloatAccumulator,
                           IntAccumulator, QuireAccumulator)

ORDERS = ("sequential", "pairwise")
FormatLike = Union[str, ScalarFormat, ScaledFormat]


def element_format(fmt) -> ScalarFormat:
    """The scalar format of one operand element: the element format of a scaled format."""
    return fmt.element if isinstance(fmt, ScaledFormat) else fmt


@dataclass(frozen=True)
class MAC:
    """One multiply-accumulate design (see the module doc for each field's meaning)."""

    a_format: FormatLike = "fp32"
    b_format: Union[FormatLike, None] = None          # same as a_format when None
    accumulator: Accumulator = field(default_factory=FloatAccumulator)
    product_format: Union[str, FloatFormat, None] = None
    product_rounding: str = "nearest_even"
    fused: bool = True
    order: str = "sequential"
    chunks: int = 1
    promote_every: Union[int, None] = None
    promote_to: Union[FloatAccumulator, None] = None
    name: str = ""

    def __post_init__(self) -> None:
        a = get(self.a_format)
        b = a if self.b_format is None else get(self.b_format)
        object.__setattr__(self, "a_format", a)
        object.__setattr__(self, "b_format", b)
        acc = self.accumulator
        if not isinstance(acc, (IntAccumulator, FloatAccumulator, AlignedAccumulator,
                                ExactAccumulator, QuireAccumulator)):
            raise TypeError(f"accumulator must be one of the mac_models accumulators, got "
                            f"{acc!r}")
        check_bool("fused", self.fused)
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        check_int("chunks", self.chunks, 1, 1 << 30)
        if self.product_rounding not in MODES:
            raise ValueError(f"unknown product_rounding {self.product_rounding!r}")
        if self.product_format is not None:
            pf = get(self.product_format)
            if not isinstance(pf, FloatFormat):
                raise TypeError(f"product_format must be a float format, got {pf!r}")
            object.__setattr__(self, "product_format", pf)
        if self.promote_every is not None:
            check_int("promote_every", self.promote_every, 1, 1 << 40)
        if self.promote_to is not None and not isinstance(self.promote_to, FloatAccumulator):
            raise TypeError("promote_to must be a FloatAccumulator")
        self._check_units(a, b, acc)
        if not self.name:
            object.__setattr__(self, "name", self._default_name())

    def _check_units(self, a, b, acc) -> None:
        elem_a, elem_b = element_format(a), element_format(b)
        scaled = isinstance(a, ScaledFormat) or isinstance(b, ScaledFormat)
        for f in (a, b):
            if isinstance(f, ScaledFormat) and f.hadamard is not None:
                raise ValueError(f"{f.name} rotates its input by a Hadamard transform; a MAC "
                                 f"would need the same rotation on both operands, which is not "
                                 f"modelled - quantize with it outside the MAC instead")
        special = self.order != "sequential" or self.chunks > 1
        if isinstance(acc, QuireAccumulator):
            if a != acc.format or b != acc.format:
                raise ValueError(f"the quire of {acc.format.name} takes {acc.format.name} "
                                 f"operands, got {a.name} and {b.name}")
            if special or self.promote_every or self.product_format or not self.fused:
                raise ValueError("the quire is exact: order, chunks, promotion and product "
                                 "rounding do not apply to it")
            return
        if isinstance(acc, IntAccumulator):
            for f in (elem_a, elem_b):
                if not isinstance(f, IntFormat):
                    raise TypeError(f"an integer accumulator takes integer or fixed-point "
                                    f"operands, got {f.name}")
            big = max(-elem_a.qmin, elem_a.qmax) * max(-elem_b.qmin, elem_b.qmax)
            if big > acc.hi:
                raise ValueError(f"{acc.name} cannot hold a product of {elem_a.name} and "
                                 f"{elem_b.name} (up to {int(big)}); widen the accumulator")
            if self.product_format or not self.fused:
                raise ValueError("integer products are exact: product_format and fused=False "
                                 "do not apply to an integer accumulator")
            if self.chunks > 1:
                raise ValueError("chunks apply to float accumulators; for integer partial sums "
                                 "moved into a float register use promote_every")
            if (self.promote_every or scaled) and acc.bits > 53:
                raise ValueError("promoting an integer accumulator into a float register needs "
                                 "its sums exact in float64: at most 53 bits")
        else:
            sa, sb = elem_a.precision[0], elem_b.precision[0]
            if sa + sb > 53:
                raise ValueError(f"products of {elem_a.name} and {elem_b.name} need {sa + sb} "
                                 f"significant bits, more than float64 holds exactly; use a "
                                 f"narrower format (or the quire for posits)")
            if not isinstance(acc, FloatAccumulator):
                if self.product_format or not self.fused:
                    raise ValueError(f"{type(acc).__name__} adds exact products: product_format "
                                     f"and fused=False apply to FloatAccumulator only")
                if special:
                    raise ValueError(f"{type(acc).__name__} sums in order: order='pairwise' and "
                                     f"chunks apply to integer and float accumulators")
            if isinstance(acc, ExactAccumulator) and (self.promote_every or scaled):
                raise ValueError("the exact accumulator needs no promotion and takes scalar "
                                 "operands")
        if self.order == "pairwise" and (self.chunks > 1 or self.promote_every or scaled
                                         or isinstance(acc, IntAccumulator)
                                         or (isinstance(acc, FloatAccumulator) and acc.kahan)):
            raise ValueError("order='pairwise' applies to a float accumulator without Kahan "
                             "compensation, chunks, promotion or scaled operands")
        if self.chunks > 1 and (self.promote_every or scaled):
            raise ValueError("chunks and promotion (or block scales) both cut K into pieces; "
                             "choose one")

    @property
    def product_rounding_format(self) -> Union[FloatFormat, None]:
        """The format products are rounded into before accumulation, if any."""
        if self.product_format is not None:
            return self.product_format
        if not self.fused and isinstance(self.accumulator, FloatAccumulator):
            return self.accumulator.format
        return None

    @property
    def promotion(self) -> FloatAccumulator:
        """The register partial sums are promoted into (fp32, nearest even, by default)."""
        return self.promote_to if self.promote_to is not None else FloatAccumulator("fp32")

    def _default_name(self) -> str:
        a, b = self.a_format.name, self.b_format.name
        ops = a if a == b else f"{a}x{b}"
        tail = f"_promote{self.promote_every}" if self.promote_every else ""
        return f"{ops}->{self.accumulator.name}{tail}"
