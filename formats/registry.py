"""Format names: the named formats and the grammar for any other shape.

Grammar (case-sensitive):

* ``eXmY``            IEEE-style float, X exponent bits, Y mantissa bits (``e5m7``)
* ``eXmYfn``          no Inf, NaN at all-ones (``e4m3fn`` is OCP fp8_e4m3)
* ``eXmYfnuz``        no Inf, no -0, NaN at the -0 code, default bias 2**(X-1)
* ``eXmYfinite``      no Inf and no NaN (``e2m1finite`` is OCP fp4_e2m1)
* prefix ``u``        unsigned (``ue4m3fn`` is NVFP4's UE4M3 block scale)
* suffix ``_bN``      explicit bias (``e4m3fnuz_b11``; N may be negative: ``_b-3``)
* suffix ``_ftz``     subnormals flushed to zero (also on named formats: ``fp16_ftz``)
* ``intN`` / ``uintN``              integers of N = 1..32 bits
* ``fixN_F`` / ``ufixN_F``          fixed point: N total bits, F fraction bits (``fix8_4``)
* ``positN_E``        posit of N = 2..32 bits with E = 0..4 exponent bits (``posit16_1``)
* ``nf4``             QLoRA's NormalFloat-4 codebook

Scaled formats (:class:`formats.ScaledFormat`; :func:`scaled_names` lists the named ones):

* ``mxfp8_e4m3``, ``mxfp8_e5m2``, ``mxfp6_e3m2``, ``mxfp6_e2m3``, ``mxfp4``, ``mxint8``: OCP MX
  v1.0 (blocks of 32, E8M0 scale, ``floor`` rule); suffix ``_ceil``, ``_even`` or ``_rceil``
  for the other shared-exponent rules (``mxfp4_rceil``).
* ``nvfp4``: e2m1 in blocks of 16, UE4M3 scale rounded to nearest, FP32 tensor scale;
  ``nvfp4_up`` rounds the block scale up instead.
* ``bfpM_K``: block floating point, M-bit two's-complement mantissas (M = 2..32) sharing an
  E8M0 exponent per block of K (``bfp8_16``); the largest magnitude keeps its leading bit.
* ``intN_gK``, ``intN_channel``, ``intN_tensor`` (N = 2..32): symmetric integers with an FP32
  scale ``amax / qmax`` per group of K, per channel or per tensor; suffix ``_fp16``, ``_bf16``,
  ``_e8m0`` or ``_e4m3`` for another scale format (``int4_g128_fp16``).
* ``uintN_gK``, ``uintN_channel``, ``uintN_tensor``: asymmetric integers, a scale
  ``(hi - lo) / (2**N - 1)`` and an N-bit zero point per group (``uint4_g128``; same suffixes).
* ``nf4_gK``: NF4 with an FP32 absmax scale per block of K (QLoRA uses ``nf4_g64``).
* ``fp8_e4m3_1x128``, ``fp8_e4m3_128x128``: DeepSeek-V3's FP8 tiles, FP32 scales.

Named posits: ``posit8_0``, ``posit16_1``, ``posit32_2`` (SoftPosit's posit8/16/32),
``posit8_2``, ``posit16_2`` (the 2022 standard's es = 2) and ``posit4_1``.  A bare ``posit16``
is not a name: SoftPosit (es = 1) and the standard (es = 2) disagree on what it means.
"""
from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Callable

from .codebook import NF4, CodebookFormat
from .floats import FloatFormat
from .integers import IntFormat
from .posits import PositFormat
from .scalar import ScalarFormat
from .scaled import ScaledFormat

if TYPE_CHECKING:
    import pandas as pd

_NAMED: dict[str, Callable[[], ScalarFormat]] = {
    "fp32": lambda: FloatFormat(8, 23, name="fp32"),
    "tf32": lambda: FloatFormat(8, 10, name="tf32"),
    "fp16": lambda: FloatFormat(5, 10, name="fp16"),
    "bf16": lambda: FloatFormat(8, 7, name="bf16"),
    "fp8_e4m3": lambda: FloatFormat(4, 3, kind="fn", name="fp8_e4m3"),
    "fp8_e5m2": lambda: FloatFormat(5, 2, name="fp8_e5m2"),
    "fp8_e4m3fnuz": lambda: FloatFormat(4, 3, kind="fnuz", name="fp8_e4m3fnuz"),
    "fp8_e5m2fnuz": lambda: FloatFormat(5, 2, kind="fnuz", name="fp8_e5m2fnuz"),
    "fp8_e4m3b11fnuz": lambda: FloatFormat(4, 3, bias=11, kind="fnuz", name="fp8_e4m3b11fnuz"),
    "fp8_e3m4": lambda: FloatFormat(3, 4, name="fp8_e3m4"),
    "fp6_e3m2": lambda: FloatFormat(3, 2, kind="finite", name="fp6_e3m2"),
    "fp6_e2m3": lambda: FloatFormat(2, 3, kind="finite", name="fp6_e2m3"),
    "fp4_e2m1": lambda: FloatFormat(2, 1, kind="finite", name="fp4_e2m1"),
    "e8m0": lambda: FloatFormat(8, 0, kind="e8m0", signed=False, name="e8m0"),
}
for _n, _es in ((8, 0), (16, 1), (32, 2), (8, 2), (16, 2), (4, 1)):
    _NAMED[f"posit{_n}_{_es}"] = (lambda n=_n, e=_es: PositFormat(n, e))
_NAMED["nf4"] = lambda: CodebookFormat(NF4, name="nf4")
for _bits in (2, 4, 8, 16, 32):
    for _signed in (True, False):
        _n = f"{'' if _signed else 'u'}int{_bits}"
        _NAMED[_n] = (lambda b=_bits, s=_signed, n=_n: IntFormat(b, signed=s, name=n))

_FLOAT_RE = re.compile(r"^(u?)e(\d+)m(\d+)(fn|fnuz|finite)?(?:_b(-?\d+))?$")
_INT_RE = re.compile(r"^(u?)int(\d+)$")
_FIX_RE = re.compile(r"^(u?)fix(\d+)_(\d+)$")
_POSIT_RE = re.compile(r"^posit(\d+)_(\d+)$")
_MX_ELEMENTS = {"mxfp8_e4m3": "fp8_e4m3", "mxfp8_e5m2": "fp8_e5m2", "mxfp6_e3m2": "fp6_e3m2",
                "mxfp6_e2m3": "fp6_e2m3", "mxfp4": "fp4_e2m1", "mxint8": "fix8_6"}
_SCALED: dict[str, Callable[[], ScaledFormat]] = {
    **{n: (lambda n=n, e=e: ScaledFormat(e, "e8m0", 32, "floor", name=n))
       for n, e in _MX_ELEMENTS.items()},
    "nvfp4": lambda: ScaledFormat("fp4_e2m1", "ue4m3fn", 16, "amax", tensor_scale=True,
                                  name="nvfp4"),
    "nvfp4_up": lambda: ScaledFormat("fp4_e2m1", "ue4m3fn", 16, "amax",
                                     scale_rounding="toward_positive", tensor_scale=True,
                                     name="nvfp4_up"),
    "fp8_e4m3_1x128": lambda: ScaledFormat("fp8_e4m3", "fp32", 128, "amax",
                                           name="fp8_e4m3_1x128"),
    "fp8_e4m3_128x128": lambda: ScaledFormat("fp8_e4m3", "fp32", (128, 128), "amax",
                                             name="fp8_e4m3_128x128"),
    "nf4_g64": lambda: ScaledFormat("nf4", "fp32", 64, "amax", name="nf4_g64"),
}
_MX_RULE_RE = re.compile(r"^(mx\w+?)_(ceil|even|rceil)$")
_BFP_RE = re.compile(r"^bfp(\d+)_(\d+)$")
_INTQ_RE = re.compile(r"^(u?)int(\d+)_(g(\d+)|channel|tensor)(?:_(fp16|bf16|e8m0|e4m3))?$")
_NF4_RE = re.compile(r"^nf4_g(\d+)$")
_cache: dict[str, ScalarFormat | ScaledFormat] = {}
_FAMILY = {FloatFormat: "float", IntFormat: "int", PositFormat: "posit",
           CodebookFormat: "codebook"}


def names() -> list[str]:
    """The named scalar formats (the grammar in this module's docstring builds any other)."""
    return list(_NAMED)


def scaled_names() -> list[str]:
    """The named scaled formats (the grammar builds others: bfpM_K, intN_gK, ...)."""
    return list(_SCALED)


def _parse_scaled(name: str) -> ScaledFormat | None:
    if name in _SCALED:
        return _SCALED[name]()
    m = _MX_RULE_RE.match(name)
    if m and m.group(1) in _MX_ELEMENTS:
        return ScaledFormat(_MX_ELEMENTS[m.group(1)], "e8m0", 32, m.group(2), name=name)
    m = _BFP_RE.match(name)
    if m:
        bits = int(m.group(1))
        return ScaledFormat(IntFormat(bits, frac_bits=max(bits - 2, 0)), "e8m0",
                            int(m.group(2)), "floor", name=name)
    m = _INTQ_RE.match(name)
    if m:
        unsigned, bits, group, block, scale = m.groups()
        scale = {"e4m3": "fp8_e4m3", None: "fp32"}.get(scale, scale)
        return ScaledFormat(IntFormat(int(bits), signed=not unsigned), scale,
                            int(block) if block else group, "amax", name=name)
    m = _NF4_RE.match(name)
    if m:
        return ScaledFormat("nf4", "fp32", int(m.group(1)), "amax", name=name)
    return None


def _parse(name: str) -> ScalarFormat | ScaledFormat | None:
    if name in _NAMED:
        return _NAMED[name]()
    scaled = _parse_scaled(name)
    if scaled is not None:
        return scaled
    if name.endswith("_ftz"):
        base = get(name[:-4])
        if isinstance(base, FloatFormat) and base.subnormals:
            return FloatFormat(base.ebits, base.mbits, base.bias, base.kind, base.signed,
                               subnormals=False, name=name)
        return None
    m = _FLOAT_RE.match(name)
    if m:
        unsigned, e, mant, kind, bias = m.groups()
        return FloatFormat(int(e), int(mant), None if bias is None else int(bias),
                           kind or "ieee", signed=not unsigned, name=name)
    m = _INT_RE.match(name)
    if m:
        return IntFormat(int(m.group(2)), signed=not m.group(1), name=name)
    m = _FIX_RE.match(name)
    if m:
        return IntFormat(int(m.group(2)), signed=not m.group(1), frac_bits=int(m.group(3)),
                         name=name)
    m = _POSIT_RE.match(name)
    if m:
        return PositFormat(int(m.group(1)), int(m.group(2)), name=name)
    return None


def get(name: str | ScalarFormat | ScaledFormat) -> ScalarFormat | ScaledFormat:
    """The format called ``name`` (a format object is returned as is).

    Unknown names raise ValueError listing the close matches; a name that matches the grammar
    with out-of-range widths raises the format's own ValueError.
    """
    if isinstance(name, (ScalarFormat, ScaledFormat)):
        return name
    if not isinstance(name, str):
        raise TypeError(f"format name must be a string, got {type(name).__name__}")
    if name not in _cache:
        fmt = _parse(name)
        if fmt is None:
            close = difflib.get_close_matches(name, names() + scaled_names(), n=5, cutoff=0.5)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise ValueError(f"unknown format {name!r}{hint} (see formats.names() and the "
                             f"grammar in formats.registry)")
        _cache[name] = fmt
    return _cache[name]


def table(names_: list[str] | str | None = None) -> "pd.DataFrame":
    """Properties of the named scalar formats (or of ``names_``, a list or one name), one row
    per format.  Scaled formats are refused: ``reports.tables.property_table`` lists both."""
    import pandas as pd                      # only this function needs pandas

    rows = []
    for n in [names_] if isinstance(names_, str) else names_ or names():
        f = get(n)
        if not isinstance(f, ScalarFormat):
            raise TypeError(f"formats.table lists scalar formats; {f.name} is a scaled format "
                            f"(reports.tables.property_table lists both kinds)")
        rows.append({
            "name": f.name,
            "family": _FAMILY[type(f)],
            "kind": f.kind,
            "bits": f.bits,
            "signed": f.signed,
            "ebits": getattr(f, "ebits", None),
            "mbits": getattr(f, "mbits", None),
            "bias": getattr(f, "bias", None),
            "frac_bits": getattr(f, "frac_bits", None),
            "es": getattr(f, "es", None),
            "max": f.max,
            "min_normal": f.min_normal,
            "min_subnormal": f.min_subnormal,
            "epsilon": f.epsilon,
            "n_finite": f.n_finite,
            "has_inf": f.has_inf,
            "has_nan": f.has_nan,
            "default_overflow": f.default_overflow,
        })
    table_ = pd.DataFrame(rows)
    for column in ("ebits", "mbits", "bias", "frac_bits", "es"):   # absent in other families
        table_[column] = table_[column].astype("Int64")
    return table_
