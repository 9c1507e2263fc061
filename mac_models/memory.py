"""Memory traffic: the bits a tensor of some format occupies and the energy of moving them.

Levels: ``"rf"`` (a register file, 1 KB by default), ``"sram"`` (an on-chip buffer, 256 KB by
default) and ``"dram"``.  Per-bit energies come from :mod:`mac_models.components` (Horowitz's
cache and DRAM figures); on-chip levels scale with the node (:mod:`mac_models.technology`), DRAM
does not (its energy is off-chip I/O and the DRAM array).  Energies in pJ; a read and a write cost
the same.

Stored widths are the formats' own (fp6 and fp4 packed), except TF32: it is a tensor-core
compute mode whose operands are ordinary 32-bit FP32 words in memory (the unit ignores the low 13
mantissa bits), so a TF32 tensor moves 32 bits per element, not 19.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Union

from formats import ScaledFormat, get

from .components import DRAM_PJ_PER_BIT, sram_pj_per_bit
from .technology import TechLike, technology

LEVELS = ("rf", "sram", "dram")
DEFAULT_KB = {"rf": 1.0, "sram": 256.0}


@dataclass(frozen=True)
class MemoryCost:
    """Bits moved to or from one memory level and their energy (pJ)."""

    format: str
    n_elements: int
    bits: int
    level: str
    kilobytes: Union[float, None]
    pj_per_bit: float

    @property
    def energy_pj(self) -> float:
        return self.bits * self.pj_per_bit


def pj_per_bit(level: str, kilobytes: Union[float, None] = None,
               tech: TechLike = None) -> float:
    """Access energy per bit (pJ) of a memory ``level``: ``"rf"`` (a register file, 1 KB by
    default), ``"sram"`` (256 KB by default) or ``"dram"`` (20 pJ/bit at every node: off-chip
    I/O and the DRAM array do not follow the logic node)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    t = technology(tech)
    if level == "dram":
        if kilobytes is not None:
            raise ValueError("a DRAM access energy does not depend on a size; drop kilobytes")
        return DRAM_PJ_PER_BIT
    kb = DEFAULT_KB[level] if kilobytes is None else kilobytes
    if isinstance(kb, bool) or not isinstance(kb, numbers.Real):
        raise TypeError(f"kilobytes must be a number, got {kb!r}")
    return sram_pj_per_bit(kb) * t.energy_scale


def _count(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def format_bits(fmt, n_elements: int, channels: Union[int, None] = None, rows: int = 1,
                matrix: Union[tuple[int, int], None] = None) -> int:
    """Bits that ``n_elements`` values of ``fmt`` occupy, scales and zero points included
    (:func:`scale_count` scales), plus a 32-bit per-tensor scale (NVFP4's) where the format
    has one."""
    fmt = get(fmt)
    scales = scale_count(fmt, n_elements, channels, rows, matrix)    # checks the arguments
    if not isinstance(fmt, ScaledFormat):
        return n_elements * (32 if fmt == get("tf32") else fmt.bits)   # TF32: FP32 words
    scale_bits = 8 * fmt.scale.code_dtype.itemsize + (fmt.element.bits if fmt.zero_point else 0)
    return n_elements * fmt.element.bits + (32 if fmt.tensor_scale else 0) + scales * scale_bits


def scale_count(fmt, n_elements: int, channels: Union[int, None] = None, rows: int = 1,
                matrix: Union[tuple[int, int], None] = None) -> int:
    """The scales ``n_elements`` values of ``fmt`` carry (0 for a scalar format), the per-tensor
    scale of a two-level format aside.  The values form ``rows`` equal rows along which the
    groups run (a ragged last group is padded: MXFP4's 33 values take two scales).  A format of
    r x c tiles takes one scale per tile of each (height, width) ``matrix`` the values form
    (default: one matrix of ``rows`` rows), ragged edge tiles padded.  One scale per tensor, or
    per channel (``channels``), where the format has them."""
    fmt = get(fmt)
    n = _count("n_elements", n_elements, 0)
    rows = _count("rows", rows, 1)
    if n % rows:
        raise ValueError(f"{n} elements do not form {rows} equal rows")
    if not isinstance(fmt, ScaledFormat):
        return 0
    if fmt.group == "tensor":
        return 1
    if fmt.group == "channel":
        if channels is None:
            raise ValueError(f"{fmt.name} has one scale per channel: give channels=")
        return _count("channels", channels, 1)
    if isinstance(fmt.group, int):
        return rows * -(-(n // rows) // fmt.group)
    if not n:
        return 0
    h, w = (rows, n // rows) if matrix is None else (_count("matrix height", matrix[0], 1),
                                                      _count("matrix width", matrix[1], 1))
    if n % (h * w):
        raise ValueError(f"{n} elements do not form {h} x {w} matrices")
    r, c = fmt.group
    return n // (h * w) * -(-h // r) * -(-w // c)


def memory_cost(fmt, n_elements: int, level: str = "dram", *,
                kilobytes: Union[float, None] = None, tech: TechLike = None,
                channels: Union[int, None] = None, rows: int = 1,
                matrix: Union[tuple[int, int], None] = None) -> MemoryCost:
    """Moving ``n_elements`` values of ``fmt`` once to or from ``level`` (see :func:`pj_per_bit`
    and :func:`format_bits`)."""
    fmt = get(fmt)
    bits = format_bits(fmt, n_elements, channels, rows, matrix)
    e = pj_per_bit(level, kilobytes, tech)
    kb = None if level == "dram" else (DEFAULT_KB[level] if kilobytes is None else kilobytes)
    return MemoryCost(fmt.name, n_elements, bits, level, kb, e)
