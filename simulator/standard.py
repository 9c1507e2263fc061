"""The standard set of about 20 configurations the demo and the replay benchmark run.

fp32, bf16 and fp16 (fp32 accumulation); fp8 e4m3 and e5m2 with an ideal fp32 accumulator and
with the H100-like aligned adder promoted every 128 products; int8 (per-channel weights,
per-tensor activations) into int32; int4 per group of 128 into int32; MXFP8, MXFP6, MXFP4 and
NVFP4 with fp32 accumulation; posit8 and posit16 with their quires; NF4 weights (per 64) with
bf16 activations.
"""
from __future__ import annotations

from .configs import Config

_H100 = {"accumulator": "aligned", "n": 32, "p": 14, "format": "fp32", "promote_every": 128}


def standard_configs() -> list[Config]:
    """The standard configurations (see the module doc), in a fixed order."""
    return [
        Config("fp32", "fp32", name="fp32"),
        Config("bf16", "bf16", "bf16->fp32", name="bf16"),
        Config("fp16", "fp16", "fp16->fp32", name="fp16"),
        Config("fp16", "fp16", "fp16->fp16", name="fp16 (fp16 acc)"),
        Config("fp8_e4m3", "fp8_e4m3", "fp8_e4m3->fp32", name="fp8 e4m3"),
        Config("fp8_e4m3", "fp8_e4m3", _H100, name="fp8 e4m3 (H100-like)"),
        Config("fp8_e5m2", "fp8_e5m2", "fp8_e4m3->fp32", name="fp8 e5m2"),
        Config("fp8_e5m2", "fp8_e5m2", _H100, name="fp8 e5m2 (H100-like)"),
        Config("int8_channel", "int8_tensor", "int8->int32", name="int8 (int32 acc)"),
        Config("int4_g128", "int8_tensor", "int8->int32", name="w4a8 int4 g128"),
        Config("int4_g128", "int4_g128", "int8->int32", name="int4 g128"),
        Config("mxfp8_e4m3", "mxfp8_e4m3", "mxfp8->fp32", name="mxfp8"),
        Config("mxfp6_e3m2", "mxfp6_e3m2", "mxfp8->fp32", name="mxfp6 e3m2"),
        Config("mxfp6_e2m3", "mxfp6_e2m3", "mxfp8->fp32", name="mxfp6 e2m3"),
        Config("mxfp4", "mxfp4", "mxfp4->fp32", name="mxfp4"),
        Config("nvfp4", "nvfp4", "nvfp4->fp32", name="nvfp4"),
        Config("posit8_0", "posit8_0", {"accumulator": "quire", "format": "posit8_0"},
               name="posit8 (quire)"),
        Config("posit16_1", "posit16_1", "posit16_quire", name="posit16 (quire)"),
        Config("nf4_g64", "bf16", "bf16->fp32", name="nf4 g64 (bf16 act)"),
        Config("int8_channel", "int8_tensor", "int8->int16", name="int8 (int16 acc)"),
    ]
