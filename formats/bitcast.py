"""Bit-casts between float64 and uint64 inside Numba kernels (no temporary arrays)."""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def f64_to_bits(typingctx, x):
    """The IEEE binary64 bit pattern of float64 ``x`` as uint64."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, signature, args):
        val = context.cast(builder, args[0], x, types.float64)
        return builder.bitcast(val, ir.IntType(64))

    return types.uint64(x), codegen


@intrinsic
def bits_to_f64(typingctx, b):
    """The float64 whose IEEE binary64 bit pattern is the integer ``b``."""
    if not isinstance(b, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        val = context.cast(builder, args[0], b, types.uint64)
        return builder.bitcast(val, ir.DoubleType())

    return types.float64(b), codegen
