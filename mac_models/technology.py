"""Technology-node scaling of energy and area, from Stillmaker & Baas (2017).

Source: A. Stillmaker and B. Baas, "Scaling equations for the accurate prediction of CMOS device
performance from 180 nm to 7 nm", Integration, the VLSI Journal 58 (2017) 74-81, with its
corrigendum.  Their Table 2 gives area ratios between nodes; their Table 5 gives, per node, a
quadratic in the supply voltage whose value is proportional to the energy per operation:
``EnergyFactor(V) = a V**2 + b V + c``.  Energy at node ``n`` and supply ``V`` is then
``E_45 * EnergyFactor_n(V) / EnergyFactor_45(V_45)``.

Conventions here:

* The reference is 45 nm at 0.9 V, the operating point of Horowitz's ISSCC 2014 table that
  :mod:`mac_models.components` is calibrated to; the 45 nm and 32 nm equations are the paper's
  high-performance (HP) ones, as are those from 20 nm down.
* A node's default supply is its nominal one in the Predictive Technology Models the paper's
  equations were fitted to (PTM bulk 1.1 V at 65 nm and 0.9 V at 32 nm; PTM-MG FinFET 0.9, 0.85,
  0.8, 0.75 and 0.7 V at 20, 16, 14, 10 and 7 nm), except 45 nm, where it is Horowitz's 0.9 V
  (PTM's nominal 1.0 V would cost 1.23x more); pass ``vdd`` to choose another.
* Nodes between the paper's (28 nm, 22 nm, ...) are interpolated linearly in log(node) on
  log(factor) between the two neighbouring nodes; the supply likewise.  Nodes outside 7..65 nm
  are refused.
* Supplies: the voltage range each fit was made over could not be established from a source
  here, so a supply is accepted where the fit is physical: from 0.3 to 2.0 V and above the
  vertex -b / 2a of the node's quadratic (of both neighbours' for an interpolated node), below
  which the fitted energy would rise as the supply falls (0.586 V at 65 nm; 0.15-0.26 V, under
  the 0.3 V floor, at the others).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Union

# Table 2 of the paper, the 45 nm row: area at node n divided by area at 45 nm.
_AREA_VS_45 = {65: 1.5, 45: 1.0, 32: 0.46, 20: 0.21, 16: 0.19, 14: 0.17, 10: 0.1, 7: 0.059}

# Table 5 of the paper: energy-factor coefficients (a, b, c) of a V**2 + b V + c.
_ENERGY_POLY = {
    65: (3.755, -4.398, 1.975),
    45: (1.018, -0.3107, 0.1539),       # HP45
    32: (0.8367, -0.4341, 0.1701),      # HP32
    20: (0.373, -0.1582, 0.04104),
    16: (0.2958, -0.1241, 0.03024),
    14: (0.2363, -0.09675, 0.02239),
    10: (0.2068, -0.09311, 0.02375),
    7: (0.1776, -0.09097, 0.02447),
}

# Default supplies (V): PTM / PTM-MG nominal ones, Horowitz's 0.9 V at 45 nm.
_NOMINAL_VDD = {65: 1.1, 45: 0.9, 32: 0.9, 20: 0.9, 16: 0.85, 14: 0.8, 10: 0.75, 7: 0.7}

REFERENCE_NODE = 45
REFERENCE_VDD = 0.9          # Horowitz, ISSCC 2014: 45 nm, 0.9 V
NODES = tuple(sorted(_AREA_VS_45, reverse=True))


def _energy_factor(node: int, vdd: float) -> float:
    a, b, c = _ENERGY_POLY[node]
    return a * vdd * vdd + b * vdd + c


def _vertex(node: int) -> float:
    """The supply (V) where the node's energy fit is least; it rises with vdd above it."""
    a, b, _ = _ENERGY_POLY[node]
    return -b / (2 * a)


def _neighbours(node: float) -> tuple[int, int, float]:
    """The paper's nodes either side of ``node`` and the log-space weight of the smaller."""
    if not NODES[-1] <= node <= NODES[0]:
        raise ValueError(f"technology node {node} nm is outside the {NODES[-1]}..{NODES[0]} nm "
                         f"that Stillmaker & Baas cover")
    for big, small in zip(NODES, NODES[1:]):
        if small <= node <= big:
            t = math.log(big / node) / math.log(big / small)
            return big, small, t
    raise AssertionError("unreachable")


def _interp(values: dict, node: float) -> float:
    big, small, t = _neighbours(node)
    return math.exp((1 - t) * math.log(values[big]) + t * math.log(values[small]))


@dataclass(frozen=True)
class Technology:
    """A process node (nm) and supply (V): multiplies 45 nm / 0.9 V energies and areas.  A
    supply where the node's energy fit is unphysical is refused (see the module doc)."""

    node: float = REFERENCE_NODE
    vdd: float | None = None        # the node's nominal supply when None

    def __post_init__(self) -> None:
        if isinstance(self.node, bool) or not isinstance(self.node, numbers.Real):
            raise TypeError(f"node must be a number of nanometres, got {self.node!r}")
        object.__setattr__(self, "node", float(self.node))
        big, small, t = _neighbours(self.node)
        if self.vdd is None:
            object.__setattr__(self, "vdd", _interp(_NOMINAL_VDD, self.node))
        elif isinstance(self.vdd, bool) or not isinstance(self.vdd, numbers.Real):
            raise TypeError(f"vdd must be a supply voltage in volts, got {self.vdd!r}")
        else:
            vertex = max(_vertex(n) for n, weight in ((big, 1 - t), (small, t)) if weight)
            if not (0.3 <= float(self.vdd) <= 2.0 and float(self.vdd) > vertex):
                raise ValueError(f"vdd must be a supply voltage between 0.3 and 2.0 V, above "
                                 f"{vertex:.3f} V at {self.node:g} nm (below it the Stillmaker & "
                                 f"Baas energy fit rises as the supply falls), got {self.vdd!r}")
        object.__setattr__(self, "vdd", float(self.vdd))

    @property
    def energy_scale(self) -> float:
        """Energy per operation here divided by the same operation at 45 nm, 0.9 V."""
        big, small, t = _neighbours(self.node)
        ref = _energy_factor(REFERENCE_NODE, REFERENCE_VDD)
        ratio = {n: _energy_factor(n, self.vdd) / ref for n in (big, small)}
        return math.exp((1 - t) * math.log(ratio[big]) + t * math.log(ratio[small]))

    @property
    def area_scale(self) -> float:
        """Area here divided by the same circuit's area at 45 nm."""
        return _interp(_AREA_VS_45, self.node)

    @property
    def name(self) -> str:
        return f"{self.node:g} nm, {self.vdd:.2f} V"


TechLike = Union[Technology, float, int, None]


def technology(tech: TechLike) -> Technology:
    """``tech`` as a :class:`Technology`: a node in nm, a Technology, or None for 45 nm."""
    if tech is None:
        return Technology()
    if isinstance(tech, Technology):
        return tech
    return Technology(tech)
