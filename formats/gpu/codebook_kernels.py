"""The codebook kernels of ``codebooks.cu`` behind the call signatures of the Numba kernels in
:mod:`formats.codebook`.  ``values``/``codes`` are the sorted distinct table values and their
codes, ``table`` the values in code order; codes are uint8 (at most 256 values)."""
from __future__ import annotations

import numpy as np

from .adapter import CodecKernels, as_values, value_suffix


class CodebookKernels(CodecKernels):
    """``encode_kernel``, ``decode_kernel``, ``arith_kernel`` of :mod:`formats.codebook` on a
    launcher."""

    def encode_kernel(self, x, out, values, codes, mode, key, offset, sr_bits) -> int:
        x = as_values(self.launch, x)
        nans = self._counters()
        self.launch(f"codebook_encode_{value_suffix(x)}", x.size, x, out,
                    self._on(values, np.float64), self._on(codes), len(values), mode,
                    np.uint64(key), offset, sr_bits, nans)
        return int(nans[0])

    def decode_kernel(self, codes, out, table) -> None:
        codes = self._codes(codes, np.uint8)
        self.launch("codebook_decode", codes.size, codes, out, self._on(table, np.float64))

    def arith_kernel(self, op, a, b, c, table, values, codes, out, mode, key, offset,
                     sr_bits) -> None:
        a, b, c = (self._codes(v, np.uint8) for v in (a, b, c))
        self.launch("codebook_arith", out.size, op, a, b, c, out, self._on(table, np.float64),
                    self._on(values, np.float64), self._on(codes), len(values), mode,
                    np.uint64(key), offset, sr_bits)
