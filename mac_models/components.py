"""Hardware building blocks priced at 45 nm, 0.9 V: energy in pJ per operation, area in µm².

Every price rests on M. Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, 45 nm, 0.9 V (the table in ``shared/REFERENCES.md``):

=================  ==========  ==========
operation          energy pJ   area µm²
=================  ==========  ==========
8/16/32b int add   .03/.05/.1  36/67/137
8b / 32b int mult  0.2 / 3.1   282 / 3,495
16b / 32b FP add   0.4 / 0.9   1,360 / 4,184
16b / 32b FP mult  1.1 / 3.7   1,640 / 7,700
SRAM 64b read      8 KB 10, 32 KB 20, 1 MB 100
DRAM 32b read      640
=================  ==========  ==========

How widths between those points are priced (each *cell count* times a per-cell price):

* an adder of ``w`` bits is ``w`` cells; a multiplier of ``wa x wb`` bits is ``wa * wb`` cells; a
  barrel shifter of ``w`` bits is ``w * log2(w)`` cells.  The per-cell price is the table's at its
  points (8/16/32-bit adds, 8x8 and 32x32 multiplies) and is interpolated linearly in log2(cells)
  between them, held constant beyond, so the points are reproduced exactly and the price grows
  monotonically in every width.
* The FP adder is exponent compare (adder of e bits), alignment shifter (p + 3 bits: guard,
  round, sticky), significand adder (p + 3), leading-zero count (p + 3), normalization shifter
  (p + 3) and rounding (an incrementer of p bits).  The two shifters' per-cell price is what the
  16- and 32-bit FP adds cost beyond the adder-priced parts (solved at those two points).
* The FP multiplier is the significand multiplier (p x p), the exponent adder (e + 1 bits) and
  normalize-and-round, priced per ``p * log2(p)`` cells at what the 16- and 32-bit FP multiplies
  cost beyond the other two (0.70 and 1.91 pJ: it also stands for the pipeline, sticky and
  exception logic the table does not separate).
* Assumptions where the table is silent, each stated once here: a flip-flop bit and a
  leading-zero-count bit are priced as an adder bit of the same width (in standard-cell
  libraries a D flip-flop is about a full adder's size); a 2:1 multiplexer bit as half an adder
  bit; a register is clocked once per use.
* Memory: SRAM per bit is the table's 64-bit access energy / 64 at 8 KB, 32 KB and 1 MB,
  interpolated in log-log between, extended below 8 KB with the 8->32 KB slope (energy ~
  sqrt(capacity): a register file is a small SRAM here) and above 1 MB with the 32 KB->1 MB
  slope; DRAM is 640 pJ / 32 bits = 20 pJ per bit.  Reads and writes cost the same.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

_ADD = {8: (0.03, 36.0), 16: (0.05, 67.0), 32: (0.1, 137.0)}          # bits: (pJ, µm²)
_MUL = {64: (0.2, 282.0), 1024: (3.1, 3495.0)}                         # 8x8, 32x32 cells
_FP_ADD = {(5, 11): (0.4, 1360.0), (8, 24): (0.9, 4184.0)}            # (e, p): (pJ, µm²)
_FP_MUL = {(5, 11): (1.1, 1640.0), (8, 24): (3.7, 7700.0)}
_SRAM_PJ_PER_BIT = {8.0: 10 / 64, 32.0: 20 / 64, 1024.0: 100 / 64}    # KB: pJ per bit
DRAM_PJ_PER_BIT = 640 / 32
MUX_CELL = 0.5                      # a 2:1 mux bit, in adder bits


@dataclass(frozen=True)
class Part:
    """One component's share of a MAC: energy (pJ per MAC) and area (µm² per MAC unit)."""

    component: str
    energy_pj: float
    area_um2: float

    def times(self, n: float, component: str | None = None) -> "Part":
        """This part used ``n`` times per MAC (a fraction when shared by 1/n MACs)."""
        return Part(component or self.component, self.energy_pj * n, self.area_um2 * n)


def _per_cell(points: dict) -> dict:
    """{cells: (pJ, µm²) per cell} from {cells: (pJ, µm²) in all}."""
    return {k: (v[0] / k, v[1] / k) for k, v in points.items()}


def _interp(prices: dict, x: float) -> tuple[float, float]:
    """Per-cell (pJ, µm²) at ``x``: the keyed prices, linear in log2(x) between keys, flat
    beyond."""
    keys = sorted(prices)
    if x <= keys[0]:
        return prices[keys[0]]
    if x >= keys[-1]:
        return prices[keys[-1]]
    for lo, hi in zip(keys, keys[1:]):
        if x <= hi:
            t = math.log2(x / lo) / math.log2(hi / lo)
            return tuple((1 - t) * prices[lo][i] + t * prices[hi][i] for i in range(2))
    raise AssertionError("unreachable")


_ADD_PRICE = _per_cell(_ADD)
_MUL_PRICE = _per_cell(_MUL)


def _check_width(name: str, w) -> float:
    if not w >= 1:
        raise ValueError(f"{name} width must be at least 1 bit, got {w!r}")
    return float(w)


def adder(w: float, component: str = "adder") -> Part:
    """A ``w``-bit two's-complement adder."""
    w = _check_width("adder", w)
    e, a = _interp(_ADD_PRICE, w)
    return Part(component, e * w, a * w)


def register(w: float, component: str = "register") -> Part:
    """A ``w``-bit register, clocked once (priced as ``w`` adder bits)."""
    return adder(w, component)


def leading_zero_count(w: float, component: str = "leading-zero count") -> Part:
    """A leading-zero counter over ``w`` bits (priced as a ``w``-bit adder)."""
    return adder(w, component)


def mux(w: float, inputs: int = 2, component: str = "mux") -> Part:
    """A ``w``-bit ``inputs``-to-1 multiplexer (inputs >= 2): (inputs - 1) * w 2:1 mux bits."""
    if isinstance(inputs, bool) or not isinstance(inputs, numbers.Integral):
        raise TypeError(f"mux inputs must be an integer, got {inputs!r}")
    if inputs < 2:
        raise ValueError(f"a multiplexer chooses among at least 2 inputs, got {inputs!r}")
    return adder(w).times(MUX_CELL * (inputs - 1), component)


def multiplier(wa: float, wb: float, component: str = "multiplier") -> Part:
    """A ``wa`` x ``wb``-bit array multiplier (wa * wb cells)."""
    cells = _check_width("multiplier", wa) * _check_width("multiplier", wb)
    e, a = _interp(_MUL_PRICE, cells)
    return Part(component, e * cells, a * cells)


def _shift_cells(w: float, positions: float | None = None) -> float:
    return w * max(math.log2(w if positions is None else positions), 1.0)


def _fp_adder_fixed(e: float, p: float) -> list[Part]:
    """The adder-priced parts of an FP adder (everything but its two shifters)."""
    return [adder(e, "exponent compare"), adder(p + 3, "significand adder"),
            leading_zero_count(p + 3), adder(p, "rounding")]


def _solve_shifter() -> dict:
    """Per shifter cell (pJ, µm²) at the widths of the 16- and 32-bit FP adders."""
    out = {}
    for (e, p), (pj, um2) in _FP_ADD.items():
        fixed = _fp_adder_fixed(e, p)
        cells = 2 * _shift_cells(p + 3)
        out[p + 3] = (pj - sum(f.energy_pj for f in fixed)) / cells, \
                     (um2 - sum(f.area_um2 for f in fixed)) / cells
    return out


def _solve_normalize_round() -> dict:
    """Per normalize-and-round cell (pJ, µm²) at the 16- and 32-bit FP multipliers' widths."""
    out = {}
    for (e, p), (pj, um2) in _FP_MUL.items():
        fixed = [multiplier(p, p), adder(e + 1)]
        cells = _shift_cells(p)
        out[p] = (pj - sum(f.energy_pj for f in fixed)) / cells, \
                 (um2 - sum(f.area_um2 for f in fixed)) / cells
    return out


_SHIFTER = _solve_shifter()
_NORM_ROUND = _solve_normalize_round()


def shifter(w: float, component: str = "shifter", positions: float | None = None) -> Part:
    """A barrel shifter moving ``w`` bits across ``positions`` places (default ``w``):
    w * log2(positions) cells, priced per cell as the FP adders' shifters of that width."""
    w = _check_width("shifter", w)
    e, a = _interp(_SHIFTER, w)
    cells = _shift_cells(w, positions)
    return Part(component, e * cells, a * cells)


def normalize_round(p: float, component: str = "normalize and round") -> Part:
    """Normalizing and rounding a product to ``p`` significant bits (p * log2 p cells)."""
    p = _check_width("normalize-and-round", p)
    e, a = _interp(_NORM_ROUND, p)
    cells = _shift_cells(p)
    return Part(component, e * cells, a * cells)


def fp_adder(e: float, p: float, prefix: str = "FP add") -> list[Part]:
    """An FP adder for ``e`` exponent bits and ``p`` significant bits (hidden bit included)."""
    fixed = _fp_adder_fixed(e, p)
    parts = [fixed[0], shifter(p + 3, "alignment shifter"), fixed[1], fixed[2],
             shifter(p + 3, "normalization shifter"), fixed[3]]
    return [Part(f"{prefix}: {x.component}", x.energy_pj, x.area_um2) for x in parts]


def fp_multiplier(e: float, pa: float, pb: float | None = None, round_to: float | None = None,
                  prefix: str = "multiply") -> list[Part]:
    """An FP multiplier of ``pa`` x ``pb`` significant bits: significand multiplier, exponent
    adder (e + 1 bits; none when ``e`` is 0: integer operands) and, when ``round_to`` is given,
    normalize-and-round of the product to that many bits (Horowitz's FP multiplies:
    ``fp_multiplier(e, p, p, round_to=p)``)."""
    pb = pa if pb is None else pb
    parts = [multiplier(pa, pb, "significand multiplier" if e else "integer multiplier")]
    if e:
        parts.append(adder(e + 1, "exponent adder"))
    if round_to is not None:
        parts.append(normalize_round(round_to))
    return [Part(f"{prefix}: {x.component}", x.energy_pj, x.area_um2) for x in parts]


def sram_pj_per_bit(kilobytes: float) -> float:
    """SRAM read (or write) energy per bit for an array of ``kilobytes`` KB."""
    if not 0 < kilobytes < math.inf:
        raise ValueError(f"an SRAM needs a positive, finite size in KB, got {kilobytes!r}")
    keys = sorted(_SRAM_PJ_PER_BIT)
    lo, hi = (keys[0], keys[1]) if kilobytes <= keys[1] else (keys[1], keys[2])
    slope = math.log(_SRAM_PJ_PER_BIT[hi] / _SRAM_PJ_PER_BIT[lo]) / math.log(hi / lo)
    return _SRAM_PJ_PER_BIT[lo] * (kilobytes / lo) ** slope


def total(parts: list[Part]) -> tuple[float, float]:
    """(energy pJ, area µm²) of a list of parts."""
    return sum(p.energy_pj for p in parts), sum(p.area_um2 for p in parts)
