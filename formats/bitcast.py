"""Bit-casts between floats and integers inside Numba kernels (no temporary arrays), a count
of leading zeros, and the split of a float64 into its integer significand and exponent."""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .kernel_cache import njit


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


@intrinsic
def bits_to_f32(typingctx, b):
    """The float32 whose IEEE binary32 bit pattern is the low 32 bits of integer ``b``, widened
    to float64 (exact)."""
    if not isinstance(b, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        val = context.cast(builder, args[0], b, types.uint32)
        return builder.fpext(builder.bitcast(val, ir.FloatType()), ir.DoubleType())

    return types.float64(b), codegen


@intrinsic
def clz64(typingctx, x):
    """Number of leading zero bits of the 64-bit integer ``x`` (64 for 0), as int64."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        val = context.cast(builder, args[0], x, types.uint64)
        count = builder.ctlz(val, ir.Constant(ir.IntType(1), 0))    # defined for 0
        return count

    return types.int64(x), codegen


@njit(inline="always")
def significand_exponent(bits: np.uint64):
    """(sig, ex) with ``|x| = sig * 2**(ex - 52)`` for the finite float64 whose bits are ``bits``:
    the 53-bit significand (hidden bit included for normals) and the unbiased exponent (-1022 for
    subnormals and zero).  Branch-free."""
    exf = np.int64((bits >> np.uint64(52)) & np.uint64(0x7FF))
    sig = (bits & np.uint64((1 << 52) - 1)) | (np.uint64(exf != 0) << np.uint64(52))
    return sig, max(exf, 1) - 1023
