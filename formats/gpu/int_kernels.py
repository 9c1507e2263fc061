"""The integer/fixed-point kernels of ``ints.cu`` behind the call signatures of
:mod:`formats.int_kernels`, so :class:`formats.IntFormat` calls either engine the same way."""
from __future__ import annotations

import numpy as np

from .adapter import CodecKernels, as_values, code_suffix, value_suffix
from ..int_kernels import BITS
from ..scalar import code_dtype


class IntKernels(CodecKernels):
    """``encode_kernel`` … ``arith_kernel`` of :mod:`formats.int_kernels` on a launcher."""

    def encode_kernel(self, x, out, d, mode, overflow, key, offset, sr_bits) -> tuple[int, int]:
        x = as_values(self.launch, x)
        counts = self._counters(2)
        self.launch(f"int_encode_{value_suffix(x)}_{code_suffix(out)}", x.size, x, out,
                    self._on(d), mode, overflow, np.uint64(key), offset, sr_bits, counts)
        return int(counts[0]), int(counts[1])

    def encode_int_kernel(self, x, out, d, overflow) -> None:
        x = self._codes(x, np.int64)         # every integer dtype but uint64 widens exactly
        self.launch(f"int_encode_int_{code_suffix(out)}", x.size, x, out, self._on(d), overflow)

    def decode_kernel(self, codes, out, d) -> None:
        codes = self._codes(codes, code_dtype(d[BITS]))
        self.launch(f"int_decode_{code_suffix(codes)}", codes.size, codes, out, self._on(d))

    def arith_kernel(self, op, a, b, c, d, out, mode, overflow, key, offset, sr_bits) -> None:
        a, b, c = (self._codes(v, out.dtype) for v in (a, b, c))
        self.launch(f"int_arith_{code_suffix(out)}", out.size, op, a, b, c, out, self._on(d),
                    mode, overflow, np.uint64(key), offset, sr_bits)
