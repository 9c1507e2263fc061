"""Replay configurations: which formats and which MAC a model runs with.

A :class:`Config` names the weight, activation and gradient formats (registry names, see
:mod:`formats.registry`), the MAC (a preset name, a :class:`mac_models.MAC`, a spec table, or
None for an fp32 accumulator), the rounding of the operands and the seed, and the ``storage``
format of the values between the MACs (None: MAC outputs in fp32 and the ops between the MACs
in float64; see :mod:`simulator.replay`), and the ``fusion`` of the hardware: "none" (every op a
kernel of its own) or "epilogue" (a MAC applies the elementwise ops and batch norms that alone
read its output before it writes it; see :mod:`simulator.replay`).  The MAC's operand
formats are replaced by the config's: the MAC contributes its multiplier, accumulator, order
and promotion, the config says what is multiplied.  A spec table (from TOML or a dict) is::

    {accumulator = "int" | "float" | "aligned" | "exact" | "quire", <that accumulator's
     arguments: bits, overflow, format, rounding, kahan, n, p, alignment, ...>,
     <MAC arguments: promote_every, fused, order, chunks, product_format>}
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any, Mapping, Union

import formats
import mac_models as mm
from formats import ScaledFormat
from formats.rounding import MODES

ACCUMULATORS = {"int": mm.IntAccumulator, "float": mm.FloatAccumulator,
                "aligned": mm.AlignedAccumulator, "exact": mm.ExactAccumulator,
                "quire": mm.QuireAccumulator}
MAC_ARGS = ("promote_every", "fused", "order", "chunks", "product_format", "product_rounding")
MacSpec = Union[str, mm.MAC, Mapping[str, Any], None]
FUSIONS = ("none", "epilogue")


def mac_from_spec(spec: Mapping[str, Any]) -> mm.MAC:
    """A MAC (fp32 operands, to be replaced) from a spec table (see the module doc)."""
    spec = dict(spec)
    kind = spec.pop("accumulator", None)
    if kind not in ACCUMULATORS:
        raise ValueError(f"a MAC spec needs accumulator = one of {', '.join(ACCUMULATORS)}, "
                         f"got {kind!r}")
    mac_args = {k: spec.pop(k) for k in MAC_ARGS if k in spec}
    try:
        acc = ACCUMULATORS[kind](**spec)
    except TypeError as exc:
        raise ValueError(f"bad arguments for a {kind} accumulator {spec}: {exc}") from exc
    a = acc.format.name if kind == "quire" else "fp32"
    return mm.MAC(a, accumulator=acc, **mac_args)


def _format_name(value, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a format name, got {value!r}")
    formats.get(value)                       # unknown names raise with close matches
    return value


@dataclass(frozen=True)
class Config:
    """One configuration of a replay (see the module doc)."""

    weights: str = "fp32"
    activations: str = "fp32"
    mac: MacSpec = None
    gradients: Union[str, None] = None
    rounding: str = "nearest_even"
    seed: int = 0
    name: str = ""
    storage: Union[str, None] = None
    fusion: str = "none"

    def __post_init__(self) -> None:
        for what in ("gradients", "storage"):        # "none", as the command line and TOML
            if getattr(self, what) == "none":         # say it, is None
                object.__setattr__(self, what, None)
        if self.fusion is None:
            object.__setattr__(self, "fusion", "none")
        _format_name(self.weights, "weights")
        _format_name(self.activations, "activations")
        for what in ("gradients", "storage"):
            if getattr(self, what) is not None:
                _format_name(getattr(self, what), what)
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.rounding not in MODES:
            raise ValueError(f"unknown rounding {self.rounding!r}; choose one of "
                             f"{', '.join(MODES)}")
        if self.rounding != "nearest_even":
            for f in (self.weights, self.activations):
                if isinstance(formats.get(f), ScaledFormat):
                    raise ValueError(f"rounding {self.rounding!r} applies to scalar formats; "
                                     f"{f} is scaled (its elements round to nearest even)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an integer, got {self.seed!r}")
        if isinstance(self.mac, Mapping):
            object.__setattr__(self, "mac", dict(self.mac))
        self.build_mac()                     # validates the MAC and the formats together
        if not self.name:
            object.__setattr__(self, "name", self.default_name())

    def _mac_name(self) -> str:
        """The ``mac`` column: the preset name, the spec table as JSON (rebuildable with
        :func:`mac_from_spec`), ``fp32acc`` for the default, or ``MAC:<name>`` for a MAC
        object."""
        if self.mac is None:
            return "fp32acc"
        if isinstance(self.mac, str):
            return self.mac
        if isinstance(self.mac, mm.MAC):
            return f"MAC:{self.mac.name}"
        return json.dumps(self.mac, sort_keys=True)

    def default_name(self) -> str:
        """``formats|accumulator`` (+ promotion, rounding and seed, gradients, storage and
        fusion where they matter; other MAC options are left out: see :mod:`simulator.sweep`
        for grid cells)."""
        fmt = self.weights if self.weights == self.activations else \
            f"w:{self.weights},a:{self.activations}"
        acc = self.accumulator_name()
        tail = "" if self.rounding == "nearest_even" else f",{self.rounding},seed{self.seed}"
        grad = f",grad:{self.gradients}" if self.gradients else ""
        store = f",store:{self.storage}" if self.storage else ""
        fuse = "" if self.fusion == "none" else f",fuse:{self.fusion}"
        return f"{fmt}|{acc}{tail}{grad}{store}{fuse}"

    def accumulator_name(self) -> str:
        """The accumulator of the MAC as built, with its promotion interval: ``fp32``,
        ``int32``, ``aligned32x14t_fp32+promote128``, ``quire_posit8_0``."""
        mac = self.build_mac()
        return mac.accumulator.name + (f"+promote{mac.promote_every}" if mac.promote_every
                                       else "")

    def build_mac(self) -> mm.MAC:
        """The MAC that multiplies activations (A) by weights (B) in this configuration."""
        if self.mac is None:
            base = mm.MAC("fp32", accumulator=mm.FloatAccumulator("fp32"))
        elif isinstance(self.mac, str):
            base = mm.preset(self.mac)
        elif isinstance(self.mac, mm.MAC):
            base = self.mac
        elif isinstance(self.mac, dict):
            base = mac_from_spec(self.mac)
        else:
            raise TypeError(f"mac must be a preset name, a MAC, a spec table or None, got "
                            f"{self.mac!r}")
        try:
            return replace(base, a_format=self.activations, b_format=self.weights, name="")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config {self.weights}/{self.activations} cannot run on MAC "
                             f"{base.name}: {exc}") from exc

    def key(self) -> str:
        """A stable identifier of what this config computes: the formats, the MAC as built
        (so a preset and the same MAC written out are one key), the gradients, the rounding and
        the seed where the rounding uses it, the storage format where there is one and the
        fusion where it is not "none" (so that keys of configs without them, and sweeps written
        before they existed, stay as they were); the name is left out."""
        seed = self.seed if self.rounding == "stochastic" else None
        blob = json.dumps([self.weights, self.activations, repr(self.build_mac()),
                           self.gradients, self.rounding, seed] +
                          ([self.storage] if self.storage else []) +
                          ([{"fusion": self.fusion}] if self.fusion != "none" else []))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def as_dict(self) -> dict:
        """The record columns that describe this config."""
        return {"config": self.name, "weights": self.weights, "activations": self.activations,
                "mac": self._mac_name(), "accumulator": self.accumulator_name(),
                "gradients": self.gradients, "rounding": self.rounding,
                "seed": self.seed, "storage": self.storage, "fusion": self.fusion}


def repeats(values: list[str]) -> list[str]:
    """The values that occur more than once, sorted: configuration keys (the same computation
    twice) or names (results tell configurations apart by name), refused before any work."""
    return sorted({v for v in values if values.count(v) > 1})
