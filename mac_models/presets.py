"""Named MAC designs: the common ones, ready to run (``mac_models.preset(name)``).

Sources of the non-obvious ones: the H100-like FP8 design follows the DeepSeek-V3 report (arXiv
2412.19437, sections 3.3.2 and 3.5.2): products aligned to the largest exponent and kept to about
14 bits, truncated, in groups of 32 (one WGMMA K-step), with partial sums promoted into FP32
every N_C = 128 products; Fasi et al. (2021) for the truncating multi-term adder.  The integer
training design (INT16 products into INT32) follows "Mixed Precision Training of CNNs using
Integer Operations".
"""
from __future__ import annotations

import difflib
from dataclasses import replace

from .accumulators import (AlignedAccumulator, FloatAccumulator, IntAccumulator,
                           QuireAccumulator)
from .mac import MAC


def _h100(promote: bool) -> MAC:
    return MAC("fp8_e4m3", accumulator=AlignedAccumulator(n=32, p=14, format="fp32"),
               promote_every=128 if promote else None,
               name="fp8_e4m3->fp32_h100" + ("" if promote else "_nopromote"))


_PRESETS = {
    "int8->int32": lambda: MAC("int8", accumulator=IntAccumulator(32, "wrap")),
    "int16->int32_wrap": lambda: MAC("int16", accumulator=IntAccumulator(32, "wrap")),
    "int16->int32_sat": lambda: MAC("int16", accumulator=IntAccumulator(32, "saturate")),
    "int8->int16": lambda: MAC("int8", accumulator=IntAccumulator(16, "wrap")),
    "fp16->fp32": lambda: MAC("fp16", accumulator=FloatAccumulator("fp32")),
    "fp16->fp16": lambda: MAC("fp16", accumulator=FloatAccumulator("fp16")),
    "bf16->fp32": lambda: MAC("bf16", accumulator=FloatAccumulator("fp32")),
    "fp8_e4m3->fp32": lambda: MAC("fp8_e4m3", accumulator=FloatAccumulator("fp32")),
    "fp8_e4m3->fp32_h100": lambda: _h100(True),
    "fp8_e4m3->fp32_h100_nopromote": lambda: _h100(False),
    "mxfp8->fp32": lambda: MAC("mxfp8_e4m3", accumulator=FloatAccumulator("fp32")),
    "mxfp4->fp32": lambda: MAC("mxfp4", accumulator=FloatAccumulator("fp32")),
    "nvfp4->fp32": lambda: MAC("nvfp4", accumulator=FloatAccumulator("fp32")),
    "posit16_quire": lambda: MAC("posit16_1", accumulator=QuireAccumulator("posit16_1")),
}


def preset_names() -> list[str]:
    """The names :func:`preset` knows."""
    return list(_PRESETS)


def preset(name: str) -> MAC:
    """The named MAC design (see :func:`preset_names`)."""
    if not isinstance(name, str):
        raise TypeError(f"a MAC preset is named by a string, got {name!r}")
    if name not in _PRESETS:
        close = difflib.get_close_matches(name, list(_PRESETS), n=3, cutoff=0.4)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown MAC preset {name!r}{hint} (see mac_models.preset_names())")
    mac = _PRESETS[name]()
    return mac if mac.name == name else replace(mac, name=name)
