"""Energy of the work between the MACs: the elementwise and reduction steps of a vector unit.

A vector unit computes in one float format (fp32 by default: GPUs' and most accelerators'
vector units compute in fp32 on bf16 or fp8 stored values) and each step is priced from the FP
adder and multiplier of :mod:`mac_models.components` at that format's widths (at fp32, 0.9 pJ an
add and 3.7 pJ a multiply, Horowitz's), then scaled to the node.  Steps (:data:`STEPS`):

* ``add`` (a subtraction too) and ``mul``: one FP add, one FP multiply;
* ``compare`` (a max, a ReLU, one bound of a clamp): one FP add (the sign of a subtraction);
* ``recip`` (1 / x) and ``rsqrt`` (1 / sqrt x): Newton–Raphson from a seed of about 4 correct
  bits made by an integer subtraction on the format's bits (one integer adder of its width);
  each iteration doubles the correct bits, so a format of p significant bits takes
  ceil(log2(p / 4)) of them (3 for fp32, 1 for bf16); a reciprocal iteration is 2 multiplies
  and an add, an rsqrt iteration 3 multiplies and an add;
* ``div`` (x / y): a ``recip`` and a multiply; ``sqrt``: an ``rsqrt`` and a multiply;
* ``exp``, ``log``, ``tanh``, ``erf``: a range reduction (a multiply, an add, an integer adder
  of the exponent's width) and a Horner polynomial of degree ceil(p / 4) + 1 (a multiply and an
  add per degree: 7 for fp32, 3 for bf16).

The seed tables, the control and the data movement inside the unit are left out, as in
:mod:`mac_models.costs`.  Energies in pJ.

Quantizing (:func:`quantize_work`) a tensor the vector unit holds into a format takes, per
element, an ``add`` (the rounding increment) and a ``compare`` (the range: saturate or
overflow); a codebook's element takes ceil(log2 levels) compares instead (a binary search for
the nearest level).  Nothing, into the vector format itself.  A scaled format adds its scales'
work: the amax of each group (a compare per element; a zero point's minimum, another), then per
scale either an ``add`` (a power-of-two scale: the amax's exponent less the element's largest)
or a ``div`` (amax / the element's largest), an ``add`` (its rounding into the scale format)
and a ``recip`` (the multiplier the elements take), and per element an ``add`` (a power-of-two
scale applied to the exponent) or a ``mul``, and an ``add`` for a zero point; a two-level
format's tensor scale, one more compare per element, a ``div`` and a ``mul`` per block scale.
"""
from __future__ import annotations

import math
import numbers
from collections import Counter
from typing import Mapping, Union

from formats import CodebookFormat, FloatFormat, ScaledFormat, get

from .components import adder, fp_adder, fp_multiplier
from .memory import scale_count
from .technology import TechLike, technology

SEED_BITS = 4                      # correct bits of an integer-subtraction seed
FUNCTIONS = ("exp", "log", "tanh", "erf")
STEPS = ("add", "mul", "compare", "recip", "rsqrt", "div", "sqrt") + FUNCTIONS


def _vector_format(fmt) -> FloatFormat:
    f = get(fmt)
    if not isinstance(f, FloatFormat):
        raise ValueError(f"a vector unit computes in a float format, got {f.name}")
    return f


def _iterations(p: int) -> int:
    """Newton–Raphson iterations from a SEED_BITS-bit seed to ``p`` significant bits."""
    return max(0, math.ceil(math.log2(p / SEED_BITS)))


def _at_45nm(step: str, f: FloatFormat) -> float:
    """Energy (pJ, 45 nm) of one ``step`` in ``f``."""
    e, p = f.ebits, f.mbits + 1
    add = sum(x.energy_pj for x in fp_adder(e, p))
    mul = sum(x.energy_pj for x in fp_multiplier(e, p, p, round_to=p))
    if step in ("add", "compare"):
        return add
    if step == "mul":
        return mul
    seed = adder(f.bits).energy_pj
    if step in ("recip", "div"):
        return seed + _iterations(p) * (2 * mul + add) + (mul if step == "div" else 0.0)
    if step in ("rsqrt", "sqrt"):
        return seed + _iterations(p) * (3 * mul + add) + (mul if step == "sqrt" else 0.0)
    if step in FUNCTIONS:
        return mul + add + adder(e).energy_pj + (math.ceil(p / 4) + 1) * (mul + add)
    raise ValueError(f"no vector step {step!r}; the steps are {', '.join(STEPS)}")


def step_energy_pj(step: str, fmt="fp32", tech: TechLike = None) -> float:
    """Energy (pJ) of one ``step`` (one of :data:`STEPS`) computed in the float format
    ``fmt``, at ``tech`` (a node in nm or a Technology; 45 nm by default)."""
    return _at_45nm(step, _vector_format(fmt)) * technology(tech).energy_scale


def vector_energy_pj(counts: Mapping[str, Union[int, float]], fmt="fp32",
                     tech: TechLike = None) -> float:
    """Energy (pJ) of ``counts`` steps (step name: how many) computed in ``fmt`` at ``tech``."""
    f, scale = _vector_format(fmt), technology(tech).energy_scale
    total = 0.0
    for step, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, numbers.Real) or not n >= 0:
            raise ValueError(f"the count of {step!r} steps must be a number >= 0, got {n!r}")
        total += n * _at_45nm(step, f)
    return total * scale


def quantize_work(fmt, shape: tuple, vector="fp32") -> dict:
    """The steps (step name: count) that quantize a tensor of ``shape`` held in the ``vector``
    format into ``fmt`` (see the module doc), a scaled format's groups along the last axis and
    its tiles over the last two, as a store makes them."""
    f, n = get(fmt), math.prod(shape)
    if f == _vector_format(vector) or not n:
        return {}
    element = f.element if isinstance(f, ScaledFormat) else f
    work = Counter({"compare": n * math.ceil(math.log2(element.n_finite))} if isinstance(
        element, CodebookFormat) else {"add": n, "compare": n})
    if isinstance(f, ScaledFormat):
        last = shape[-1] if shape else 1
        scales = scale_count(f, n, channels=last, rows=n // last,
                             matrix=(shape[-2] if len(shape) > 1 else 1, last))
        work.update(compare=n * (1 + f.zero_point + f.tensor_scale), add=f.zero_point * n)
        if f.scale.kind == "e8m0":
            work.update(add=scales + n)
        else:
            work.update(div=scales, add=scales, recip=scales, mul=n)
        if f.tensor_scale:
            work.update(div=1, mul=scales)
    return {step: count for step, count in work.items() if count}
