"""Energy and area proxies of MAC designs, memory traffic and whole layers.

``cost(mac)`` prices one multiply-accumulate of a :class:`mac_models.MAC` from the components in
:mod:`mac_models.components` (calibrated to Horowitz, ISSCC 2014, 45 nm 0.9 V) and scales it to
a node with :mod:`mac_models.technology` (Stillmaker & Baas 2017).  Units: energy in pJ per MAC,
area in µm² per MAC unit, memory energy in pJ.

What one MAC is made of, by the design's parts:

* **Operand decode**, charged to every MAC (a unit that decodes its own inputs; an array that
  decodes an operand once and reuses it pays less): posits, regime leading-one detection (a
  leading-zero count of n - 1 bits), a shifter of n - 1 bits and a two's-complement adder of n
  bits; codebooks, a table lookup (a 2**bits-to-1 multiplexer as wide as the decoded value);
  asymmetric integers, a zero-point subtraction.  Floats and integers need none.
* **The multiplier**: significand multiplier (integers: the whole width, sign included;
  floats: mantissa + 1; posits and codebooks: the most significant bits a value has), the
  exponent adder, and normalize-and-round only when the product is rounded (``product_format``
  or ``fused=False``) into a format that cannot hold every exact product (an e4m3 x e4m3
  product has 8 significant bits and fits fp32: rounding it there changes nothing, so that
  design is priced as the fused one).
* **The accumulator**: an integer adder and register (+ a saturation multiplexer); an FP adder
  as wide as the wider of the product and the register (+ three more FP adds and a register for
  Kahan, + a random source and adder for stochastic rounding); the aligned multi-term adder per
  product (exponent max tree, alignment shifter of p bits, adder-tree share of p + log2(n + 1)
  bits) and per group of n (normalization, rounding, register); Kulisch and quire registers as
  a full-width adder and register per product, the product shifted across the register.
* **Promotion and block scales**: every ``promote_every`` products (or every block of a scaled
  format), the conversion of an integer partial sum to float, the scale product and its
  application, one FP add in the promotion format and its register, shared by the products of
  the segment.  With ``k`` given, an output of k products takes ceil(k / segment) such steps
  (one when k is shorter than a segment), so each product pays ceil(k / segment) / k of one;
  the aligned adder's per-group work is shared the same way.
* **Per-output work** (the Kulisch/quire final rounding, the posit encode, NVFP4's per-tensor
  scale), shared by the ``k`` products of one output: counted only when ``k`` is given.
* Shared hardware is divided among the products that use it, in energy *and area*: a unit used
  once per group of n products counts 1/n of its area per MAC, as if n MAC units shared it (a
  dot-product unit of width n, as tensor cores are built).  This is what makes the aligned
  adder's area per MAC small next to a per-MAC FP adder.

What the proxy leaves out: wires and data movement inside the array, control, clock tree,
leakage, pipeline registers between stages, and the effect of data on switching activity
(every part switches once per use).  Summation order (pairwise, chunks) changes which sums are
added, not how many, and is not priced.  See the README's "Cost models" section for the
cross-checks against published design points.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Union

import pandas as pd

from formats import CodebookFormat, FloatFormat, IntFormat, PositFormat, ScaledFormat
from formats.quire import quire_width
from formats.rounding import resolve_sr_bits

from .accumulators import AlignedAccumulator, ExactAccumulator, IntAccumulator, QuireAccumulator
from .components import (Part, adder, fp_adder, fp_multiplier, leading_zero_count, mux,
                         register, shifter)
from .mac import MAC, element_format
from .presets import preset
from .technology import TechLike, technology

CARRY_BITS = 30           # Kulisch guard bits: 2**30 worst-case products before overflow


@dataclass(frozen=True)
class _Arith:
    """How an element format enters the datapath: exponent bits (0: integer) and significant
    bits, plus what decoding one operand costs."""

    e: int
    p: int
    decode: tuple


def _table_exponent_bits(values) -> int:
    nz = [abs(float(v)) for v in values if v != 0]
    if not nz:
        return 1
    span = max(math.floor(math.log2(v)) for v in nz) - min(math.floor(math.log2(v)) for v in nz)
    return max(1, math.ceil(math.log2(span + 2)))


def _arith(fmt) -> _Arith:
    """The datapath view of one operand's element format."""
    if isinstance(fmt, IntFormat):
        return _Arith(0, fmt.bits, ())
    if isinstance(fmt, FloatFormat):
        return _Arith(fmt.ebits, fmt.mbits + 1, ())
    p = fmt.precision[0]
    if isinstance(fmt, PositFormat):
        n = fmt.bits
        e = max(1, math.ceil(math.log2(2 * fmt.emax + 2)))
        return _Arith(e, p, (leading_zero_count(n - 1, "posit decode: regime leading-one detect"),
                             shifter(n - 1, "posit decode: regime shifter"),
                             adder(n, "posit decode: two's complement")))
    if isinstance(fmt, CodebookFormat):
        e = _table_exponent_bits(fmt.table)
        return _Arith(e, p, (mux(1 + e + p, 1 << fmt.bits, "codebook lookup"),))
    raise TypeError(f"no cost model for element format {fmt!r}")


@dataclass(frozen=True)
class MacCost:
    """Energy (pJ per MAC) and area (µm² per MAC unit) of one design, with its parts."""

    mac: str
    technology: str
    k: Union[int, None]
    parts: tuple = field(repr=False)

    @property
    def energy_pj(self) -> float:
        """Energy of one MAC (pJ)."""
        return sum(p.energy_pj for p in self.parts)

    @property
    def area_um2(self) -> float:
        """Area of one MAC unit (µm²), shared hardware divided among its users."""
        return sum(p.area_um2 for p in self.parts)

    def breakdown(self) -> pd.DataFrame:
        """One row per component (same-named parts summed): energy_pj, area_um2."""
        df = pd.DataFrame([(p.component, p.energy_pj, p.area_um2) for p in self.parts],
                          columns=["component", "energy_pj", "area_um2"])
        return df.groupby("component", sort=False, as_index=False).sum()

    def __repr__(self) -> str:
        return (f"MacCost({self.mac!r}, {self.technology}, {self.energy_pj:.4g} pJ/MAC, "
                f"{self.area_um2:.4g} µm²)")


def _share(every: int, k: Union[int, None]) -> float:
    """Uses per product of a step taken once every ``every`` products and after the last one:
    ceil(k / every) / k in a dot of ``k`` products, 1 / every without ``k``."""
    return 1 / every if k is None else -(-k // every) / k


def _largest(fmt) -> float:
    """The largest magnitude among a scalar format's values."""
    low = min(fmt.table) if isinstance(fmt, CodebookFormat) else getattr(fmt, "min", 0.0)
    return max(fmt.max, -float(low))


def _holds_products(a, b, fmt: FloatFormat) -> bool:
    """True when ``fmt`` holds every product of an ``a`` value and a ``b`` value exactly (their
    significant bits add up to at most fmt's, the product of their smallest quanta is a
    multiple of fmt's, the largest product is at most fmt's largest value), so that rounding a
    product into ``fmt`` changes nothing."""
    (pa, qa), (pb, qb), (p, q) = a.precision, b.precision, fmt.precision
    return pa + pb <= p and qa + qb >= q and _largest(a) * _largest(b) <= fmt.max


def as_mac(mac: Union[MAC, str]) -> MAC:
    """``mac`` itself, or the preset it names."""
    mac = preset(mac) if isinstance(mac, str) else mac
    if not isinstance(mac, MAC):
        raise TypeError(f"mac must be a MAC or a preset name, got {mac!r}")
    return mac


def _prefixed(prefix: str, parts) -> list[Part]:
    return [Part(f"{prefix}: {p.component}", p.energy_pj, p.area_um2) for p in parts]


def _groups(n: int, seg: Union[int, None], k: Union[int, None]) -> float:
    """Aligned groups of ``n`` terms per product in a dot of ``k`` products whose segments of
    ``seg`` (None: the whole dot) each start their groups afresh, as the MAC engine runs them."""
    if seg is None:
        return _share(n, k)
    if k is None:
        return -(-seg // n) / seg
    full, rest = divmod(k, seg)
    return (full * -(-seg // n) + -(-rest // n)) / k


def _accumulate(mac: MAC, e_in: int, p_in: int, k: Union[int, None],
                seg: Union[int, None]) -> tuple[list[Part], list[Part]]:
    """(parts per product, parts per output) of the accumulator, for products of ``e_in``
    exponent bits (0: integers) and ``p_in`` significant bits, in dots of ``k`` products
    promoted every ``seg`` (None: never)."""
    acc = mac.accumulator
    if isinstance(acc, IntAccumulator):
        parts = [adder(acc.bits, "accumulate: adder"), register(acc.bits, "accumulator register")]
        if acc.overflow == "saturate":
            parts.append(mux(acc.bits, 2, "accumulate: saturation clamp"))
        return parts, []
    if isinstance(acc, (QuireAccumulator, ExactAccumulator)):
        return _exact(mac, p_in)
    fmt = acc.format
    e_acc, p_acc = fmt.ebits, fmt.mbits + 1
    if isinstance(acc, AlignedAccumulator):
        n, p = acc.n, acc.p
        w = p + (n + 1).bit_length()
        e_lane = e_in or p_in.bit_length()     # integer products: the leading one's position
        lane = [adder(e_lane, "aligned: exponent max tree"),
                mux(e_lane, 2, "aligned: exponent max tree"),
                shifter(p, "aligned: alignment shifter"), adder(w, "aligned: adder tree")]
        if acc.alignment == "round":
            lane.append(adder(p, "aligned: term rounding"))
        group = [shifter(p, "aligned: running-sum alignment"),
                 leading_zero_count(w, "aligned: leading-zero count"),
                 shifter(w, "aligned: normalization shifter"), adder(p_acc, "aligned: rounding"),
                 register(fmt.bits, "accumulator register")]
        return lane + [x.times(_groups(n, seg, k)) for x in group], []
    parts = fp_adder(max(e_in, e_acc), max(p_in, p_acc), "accumulate")
    parts.append(register(fmt.bits, "accumulator register"))
    if acc.kahan:
        parts += [x.times(3, f"Kahan: {x.component}") for x in fp_adder(e_acc, p_acc, "add")]
        parts.append(register(fmt.bits, "Kahan: compensation register"))
    if acc.rounding == "stochastic":
        parts += _random_bits(acc.sr_bits)
    return parts, []


def _random_bits(sr_bits, where: str = "stochastic rounding") -> list[Part]:
    """A random source (an LFSR of sr_bits bits) and the adder that adds its bits below the
    kept ones, for one stochastic rounding."""
    r = resolve_sr_bits(sr_bits)
    return [register(r, f"{where}: random source"), adder(r, f"{where}: random add")]


def exact_register_bits(mac: MAC) -> int:
    """Bits of the quire or Kulisch register of ``mac``: the quire's width, or for a Kulisch
    accumulator the span of the operands' products (largest product's top bit down to the
    product of the two smallest quanta), a sign and CARRY_BITS carry bits."""
    acc = mac.accumulator
    if isinstance(acc, QuireAccumulator):
        return quire_width(acc.format)
    a, b = element_format(mac.a_format), element_format(mac.b_format)
    top = math.floor(math.log2(a.max * b.max)) + 1
    bottom = a.precision[1] + b.precision[1]
    return top - bottom + 1 + CARRY_BITS


def _exact(mac: MAC, p_in: int) -> tuple[list[Part], list[Part]]:
    acc = mac.accumulator
    width = exact_register_bits(mac)
    per_product = [shifter(p_in, "exact: product placement shifter", positions=width),
                   adder(width, "exact: full-width adder"), register(width, "exact: register")]
    out = [leading_zero_count(width, "final: leading-zero count"),
           shifter(width, "final: normalization shifter")]
    if isinstance(acc, QuireAccumulator):
        n = acc.format.bits
        out += [shifter(n, "posit encode: regime shifter"), adder(n, "posit encode: rounding")]
    else:
        out.append(adder(acc.format.mbits + 1, "final: rounding"))
    if acc.rounding == "stochastic":
        out += _random_bits(getattr(acc, "sr_bits", None), "final")
    return per_product, out


def _scale_parts(mac: MAC, e_sum: int, p_sum: int) -> list[Part]:
    """Applying two block scales (X_a X_b) to a block's sum of ``p_sum`` bits."""
    scales = [f.scale for f in (mac.a_format, mac.b_format) if isinstance(f, ScaledFormat)]
    if all(s.kind == "e8m0" for s in scales):
        return [adder(9, "block scales: exponent add")] * (len(scales) - 1) + \
               [adder(max(e_sum, 9) + 1, "block scales: apply (exponent add)")]
    ps = [s.mbits + 1 for s in scales]
    es = max(s.ebits for s in scales)
    parts = []
    if len(ps) == 2:
        parts += _prefixed("block scales", fp_multiplier(es, ps[0], ps[1]))
    return parts + _prefixed("block scales: apply", fp_multiplier(max(es, e_sum), p_sum, sum(ps)))


def _segment(mac: MAC) -> Union[int, None]:
    """Products per promotion: the block size along K of scaled operands and/or
    ``promote_every`` (the smaller), None without either."""
    sizes = [mac.promote_every] if mac.promote_every else []
    for f, k_axis in ((mac.a_format, 1), (mac.b_format, 0)):
        if isinstance(f, ScaledFormat):
            if isinstance(f.group, int):
                sizes.append(f.group)
            elif isinstance(f.group, tuple):
                sizes.append(f.group[k_axis])
    return min(sizes) if sizes else None


def cost(mac: Union[MAC, str], tech: TechLike = None, k: Union[int, None] = None, *,
         segment: Union[int, None] = None) -> MacCost:
    """Energy per MAC (pJ) and area per MAC unit (µm²) of ``mac`` (a MAC or a preset name) at
    ``tech`` (a node in nm or a :class:`Technology`; 45 nm, 0.9 V by default).  ``k``, the dot
    length, shares per-output work (final roundings, posit encodes, per-tensor scales) among the
    products of one output, and counts the promotions, block-scale steps and aligned groups of a
    dot shorter than their segment as one per output; without it per-output work is left out.
    ``segment``: products per block-scale step where the operands' layout makes blocks shorter
    than the formats' (a conv whose kernel taps are blocks of their own); it takes effect only
    where ``mac`` has block scales or promotion."""
    mac = as_mac(mac)
    for name, v in (("k", k), ("segment", segment)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)
                              or v < 1):
            raise ValueError(f"{name} must be a positive number of products, got {v!r}")
    k = None if k is None else int(k)
    t = technology(tech)
    acc = mac.accumulator
    ea, eb = element_format(mac.a_format), element_format(mac.b_format)
    oa, ob = _arith(ea), _arith(eb)
    parts = _prefixed("a", oa.decode) + _prefixed("b", ob.decode)
    for name, f in (("a", mac.a_format), ("b", mac.b_format)):
        if isinstance(f, ScaledFormat) and f.zero_point:
            parts.append(adder(f.element.bits + 1, f"{name}: zero-point subtract"))
    e_ops = max(oa.e, ob.e)
    rounded = mac.product_rounding_format
    if rounded is not None and _holds_products(ea, eb, rounded):
        rounded = None                  # an exact product: rounding it is the identity
    parts += fp_multiplier(e_ops, oa.p, ob.p,
                           round_to=None if rounded is None else rounded.mbits + 1)
    if rounded is not None and mac.product_rounding == "stochastic":
        parts += _random_bits(None, "product rounding")
    if rounded is not None:
        e_in, p_in = rounded.ebits, rounded.mbits + 1
    else:
        e_in, p_in = (e_ops + 1 if e_ops else 0), oa.p + ob.p
    seg = _segment(mac)
    if seg is not None:
        seg = min(seg, segment or seg)
    per_product, per_output = _accumulate(mac, e_in, p_in, k, seg)
    parts += per_product
    if seg is not None:
        pf = mac.promotion.format
        step = []
        if isinstance(acc, IntAccumulator):
            step += [leading_zero_count(acc.bits, "promote: int-to-float leading-zero count"),
                     shifter(acc.bits, "promote: int-to-float shifter"),
                     adder(pf.mbits + 1, "promote: int-to-float rounding")]
        fmt = pf if isinstance(acc, IntAccumulator) else acc.format    # the block sum's format
        sum_e, sum_p = fmt.ebits, fmt.mbits + 1
        if any(isinstance(f, ScaledFormat) and f.group not in ("tensor", "channel")
               for f in (mac.a_format, mac.b_format)):
            step += _scale_parts(mac, sum_e, sum_p)
        step += fp_adder(pf.ebits, pf.mbits + 1, "promote")
        step.append(register(pf.bits, "promote: register"))
        parts += [x.times(_share(seg, k)) for x in step]
    if any(isinstance(f, ScaledFormat) and (f.tensor_scale or f.group in ("tensor", "channel"))
           for f in (mac.a_format, mac.b_format)):
        per_output += _prefixed("output scale", fp_multiplier(8, 24, 24, round_to=24))
    if k is not None:
        parts += [x.times(1 / k) for x in per_output]
    parts = [Part(p.component, p.energy_pj * t.energy_scale, p.area_um2 * t.area_scale)
             for p in parts]
    return MacCost(mac.name, t.name, k, tuple(parts))
