"""Cost of a whole layer: its MACs through a MAC design plus its tensors' memory traffic.

A layer is a :class:`Matmul` or a :class:`Conv2d` shape.  Traffic model: each operand tensor is
read once and the output written once, at one memory level (DRAM by default), in the formats
given (by default the MAC's operand formats, and for the output the register the sums end in:
the promotion register where sums are promoted or block-scaled, else the accumulator's format).
Perfect reuse inside the array is assumed: a lower bound on traffic, the usual first-order
proxy.  Tensors a fused kernel keeps on chip (``on_chip``) move nothing.  Energies in pJ.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Collection, Mapping, Union

from formats import IntFormat, ScaledFormat, get
from formats.scalar import check_bool

from .accumulators import IntAccumulator
from .costs import as_mac, cost
from .mac import MAC, element_format
from .memory import MemoryCost, memory_cost
from .ops import conv_block, conv_input_whole, conv_output_size, conv_tap_width, pair_arg
from .technology import TechLike


def _positive(op, *names: str) -> None:
    """Check that each named field of ``op`` is a positive integer (NumPy's included) and
    store it as an int."""
    for name in names:
        v = getattr(op, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
        object.__setattr__(op, name, int(v))


@dataclass(frozen=True)
class Matmul:
    """``(batch, m, k) @ (k, n)``; ``b_batched=True`` when B has the batch too (attention's
    score and value products), else one B is shared by the batch (a Linear layer's weights)."""

    m: int
    k: int
    n: int
    batch: int = 1
    b_batched: bool = False

    def __post_init__(self) -> None:
        _positive(self, "m", "k", "n", "batch")
        check_bool("b_batched", self.b_batched)

    @property
    def macs(self) -> int:
        return self.batch * self.m * self.k * self.n

    @property
    def dot_length(self) -> int:
        return self.k

    def sizes(self) -> dict:
        """Elements of A, B and the output."""
        return {"a": self.batch * self.m * self.k,
                "b": (self.batch if self.b_batched else 1) * self.k * self.n,
                "out": self.batch * self.m * self.n}

    def rows(self) -> dict:
        """Rows along which block scales run: A's rows (groups along K), B's columns (B stored
        as (N, K), groups along K), the output's rows (groups along N)."""
        return {"a": self.batch * self.m, "b": (self.batch if self.b_batched else 1) * self.n,
                "out": self.batch * self.m}

    def matrices(self) -> dict:
        """(height, width) of the matrices 2-D tiles cover, as the MAC multiplies them: A
        (M, K), B (K, N), the output (M, N)."""
        return {"a": (self.m, self.k), "b": (self.k, self.n), "out": (self.m, self.n)}


@dataclass(frozen=True)
class Conv2d:
    """A 2-D convolution of an (batch, in_channels, height, width) input with
    (out_channels, in_channels / groups, kernel) weights, as :func:`mac_models.conv2d`."""

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel: Union[int, tuple] = 3
    stride: Union[int, tuple] = 1
    padding: Union[int, tuple] = 0
    dilation: Union[int, tuple] = 1
    groups: int = 1
    _out: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _positive(self, "batch", "in_channels", "height", "width", "out_channels", "groups")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups={self.groups} must divide in_channels={self.in_channels} "
                             f"and out_channels={self.out_channels}")
        kh, kw = pair_arg(self.kernel, "kernel", 1)
        sh, sw = pair_arg(self.stride, "stride", 1)
        ph, pw = pair_arg(self.padding, "padding", 0)
        dh, dw = pair_arg(self.dilation, "dilation", 1)
        ho, wo = conv_output_size((self.height, self.width), (kh, kw), (sh, sw), (ph, pw),
                                  (dh, dw))
        if ho < 1 or wo < 1:
            raise ValueError(f"a {kh}x{kw} kernel (dilation {dh}x{dw}) does not fit the padded "
                             f"{self.height}x{self.width} input")
        object.__setattr__(self, "_out", (ho, wo, kh * kw))

    @property
    def dot_length(self) -> int:
        return self.in_channels // self.groups * self._out[2]

    @property
    def macs(self) -> int:
        ho, wo, _ = self._out
        return self.batch * self.out_channels * ho * wo * self.dot_length

    def sizes(self) -> dict:
        ho, wo, kk = self._out
        return {"a": self.batch * self.in_channels * self.height * self.width,
                "b": self.out_channels * self.in_channels // self.groups * kk,
                "out": self.batch * self.out_channels * ho * wo}

    def rows(self, a_format=None) -> dict:
        """Rows along which block scales run, as :func:`mac_models.conv2d` stores the operands
        (NHWC): each input pixel's C / groups channels of a group (all C channels where the
        input's format ``a_format`` is read over all channels, see
        :func:`mac_models.ops.conv_input_whole`), each kernel tap's C / groups channels of an
        output channel's weights, each output pixel's channels."""
        ho, wo, kk = self._out
        pixels = self.batch * self.height * self.width
        return {"a": pixels * (1 if self._whole_input(a_format) else self.groups),
                "b": self.out_channels * kk, "out": self.batch * ho * wo}

    def matrices(self, a_format=None) -> dict:
        """(height, width) of the matrices 2-D tiles cover, as ``conv2d`` stores them: the
        input's (pixels, C / groups) per group (or (pixels, C), see :meth:`rows`), per group
        and kernel tap the weights' (C / groups, out_channels / groups) (each tap's channels
        are padded on their own), the output's (pixels, out_channels)."""
        ho, wo, kk = self._out
        cg = self.in_channels // self.groups
        return {"a": (self.batch * self.height * self.width,
                      self.in_channels if self._whole_input(a_format) else cg),
                "b": (cg, self.out_channels // self.groups),
                "out": (self.batch * ho * wo, self.out_channels)}

    def _whole_input(self, a_format) -> bool:
        return a_format is not None and conv_input_whole(a_format, self.in_channels,
                                                         self.in_channels // self.groups)

    def padded_dot_length(self, mac: Union[MAC, str]) -> int:
        """Products per output as :func:`mac_models.conv2d` runs them through ``mac`` (a MAC
        or a preset name): each kernel tap's C / groups channels, zero-padded to the block along
        them where they do not divide it (:func:`mac_models.ops.conv_tap_width`)."""
        mac = as_mac(mac)
        return self._out[2] * conv_tap_width(mac.a_format, mac.b_format,
                                             self.in_channels // self.groups)

    def tap_segment(self, mac: Union[MAC, str]) -> Union[int, None]:
        """Products per block-scale step where :func:`mac_models.conv2d` runs each kernel
        tap's channels as a block of their own, shorter than the formats' block (a depthwise
        conv's one channel); None where the formats' blocks set the steps."""
        mac = as_mac(mac)
        cg = self.in_channels // self.groups
        width = conv_tap_width(mac.a_format, mac.b_format, cg)
        return width if width < conv_block(mac.a_format, mac.b_format, cg) else None


@dataclass(frozen=True)
class LayerCost:
    """MACs, compute and memory energy (pJ) of one layer, and the area of one MAC unit."""

    op: Union[Matmul, Conv2d]
    mac: str
    macs: int
    compute_pj: float
    memory: Mapping[str, MemoryCost]
    area_um2: float

    @property
    def memory_pj(self) -> float:
        return sum(m.energy_pj for m in self.memory.values())

    @property
    def total_pj(self) -> float:
        return self.compute_pj + self.memory_pj

    def as_dict(self) -> dict:
        """A flat record for a table row."""
        row = {"mac": self.mac, "macs": self.macs, "compute_pj": self.compute_pj,
               "memory_pj": self.memory_pj, "total_pj": self.total_pj,
               "area_um2_per_mac_unit": self.area_um2}
        for name, m in self.memory.items():
            row[f"{name}_format"] = m.format
            row[f"{name}_bits"] = m.bits
            row[f"{name}_pj"] = m.energy_pj
        return row


def output_format(mac: MAC):
    """The format a MAC's sums end in: the promotion register's when sums are promoted or
    block-scaled, else the accumulator's (for integer accumulators int<bits> with the operands'
    fraction bits added: fixed-point products)."""
    acc = mac.accumulator
    if mac.promote_every or any(isinstance(f, ScaledFormat) for f in (mac.a_format,
                                                                      mac.b_format)):
        return mac.promotion.format
    if isinstance(acc, IntAccumulator):
        frac = sum(element_format(f).frac_bits for f in (mac.a_format, mac.b_format))
        if acc.bits > 32 or frac > 32:
            raise ValueError(f"{acc.name} sums ({frac} fraction bits) have no stored format here "
                             f"(integer formats go up to 32 bits and 32 fraction bits): give "
                             f"formats={{'out': ...}}")
        return IntFormat(acc.bits, frac_bits=frac)
    return acc.format


def layer_cost(op: Union[Matmul, Conv2d], mac: Union[MAC, str],
               formats: Union[Mapping[str, object], None] = None, *, level: str = "dram",
               kilobytes: Union[float, None] = None, tech: TechLike = None,
               on_chip: Collection[str] = ()) -> LayerCost:
    """MACs, compute energy, memory energy and total (pJ) of ``op`` through ``mac``.
    ``formats`` may name the stored format of ``"a"`` (activations / input), ``"b"`` (weights)
    and ``"out"``; block scales are counted per row (see ``Matmul.rows``, ``Conv2d.rows``), 2-D
    tiles per tile of each matrix (``Matmul.matrices``, ``Conv2d.matrices``), per-channel scales
    once per row of A (a conv's input pixel), column of B or output channel.  A conv's compute
    is charged for the products ``conv2d`` runs, padded channels included
    (``Conv2d.padded_dot_length``), with a block-scale step per kernel tap where each tap is a
    block of its own (``Conv2d.tap_segment``); ``macs`` counts the real ones.  A per-pixel
    input scale is charged as one output scale, not as a block-scale step per kernel tap.
    ``on_chip`` names the tensors (of ``"a"``, ``"b"``, ``"out"``) that never go to memory, as
    inside a fused kernel: they move nothing and are left out of ``memory``."""
    mac = as_mac(mac)
    if not isinstance(op, (Matmul, Conv2d)):
        raise TypeError(f"op must be a Matmul or a Conv2d, got {op!r}")
    if not isinstance(formats, (Mapping, type(None))):
        raise TypeError(f"formats must be a mapping of 'a', 'b', 'out' to formats, got "
                        f"{formats!r}")
    chosen = dict(formats or {})
    for what, keys in (("formats", chosen), ("on_chip", on_chip)):
        if isinstance(keys, str):
            raise TypeError(f"{what} must be a collection of 'a', 'b', 'out', got {keys!r}")
        unknown = set(keys) - {"a", "b", "out"}
        if unknown:
            raise ValueError(f"{what} takes the keys 'a', 'b' and 'out', got {sorted(unknown)}")
    fmts = {"a": get(chosen.get("a", mac.a_format)), "b": get(chosen.get("b", mac.b_format)),
            "out": get(chosen["out"]) if "out" in chosen else output_format(mac)}
    if isinstance(op, Matmul):
        rows, matrices, k = op.rows(), op.matrices(), op.dot_length
        channels = {"a": rows["a"], "b": rows["b"], "out": op.n}
        segment = None
    else:
        rows, matrices = op.rows(fmts["a"]), op.matrices(fmts["a"])
        k = op.padded_dot_length(mac)         # the unit also multiplies the padding's zeros
        channels = {"a": rows["a"], "b": op.out_channels, "out": op.out_channels}
        segment = op.tap_segment(mac)
    sizes = op.sizes()
    memory = {name: memory_cost(fmts[name], sizes[name], level, kilobytes=kilobytes, tech=tech,
                                channels=channels[name], rows=rows[name],
                                matrix=matrices[name])
              for name in ("a", "b", "out") if name not in on_chip}
    unit = cost(mac, tech, k=k, segment=segment)
    outputs = op.macs // op.dot_length
    return LayerCost(op, mac.name, op.macs, outputs * k * unit.energy_pj, memory, unit.area_um2)
