"""The posit kernels of ``posits.cu`` behind the call signatures of :mod:`formats.posit_kernels`,
so :class:`formats.PositFormat` calls either engine the same way."""
from __future__ import annotations

import numpy as np

from .adapter import CodecKernels, as_values, code_suffix, value_suffix
from ..posit_kernels import NBITS
from ..scalar import code_dtype


class PositKernels(CodecKernels):
    """``encode_kernel`` … ``arith_kernel`` of :mod:`formats.posit_kernels` on a launcher."""

    def encode_kernel(self, x, out, d, mode, key, offset, sr_bits) -> None:
        x = as_values(self.launch, x)
        self.launch(f"posit_encode_{value_suffix(x)}_{code_suffix(out)}", x.size, x, out,
                    self._on(d), mode, np.uint64(key), offset, sr_bits)

    def encode_int_kernel(self, x, out, d, mode, key, offset, sr_bits) -> None:
        """``x``: int64 or uint64 (passed as their bit patterns, with the signedness)."""
        signed = x.dtype.kind == "i"
        raw = self._codes(x, x.dtype).view(np.uint64)
        self.launch(f"posit_encode_int_{code_suffix(out)}", raw.size, raw, signed, out,
                    self._on(d), mode, np.uint64(key), offset, sr_bits)

    def quantize_kernel(self, x, out, d, mode, key, offset, sr_bits) -> None:
        x = as_values(self.launch, x)
        self.launch(f"posit_quantize_{value_suffix(x)}_{value_suffix(out)}", x.size, x, out,
                    self._on(d), mode, np.uint64(key), offset, sr_bits)

    def decode_kernel(self, codes, out, d) -> None:
        codes = self._codes(codes, code_dtype(d[NBITS]))
        self.launch(f"posit_decode_{code_suffix(codes)}", codes.size, codes, out, self._on(d))

    def arith_kernel(self, op, a, b, c, d, out, mode, key, offset, sr_bits) -> None:
        a, b, c = (self._codes(v, out.dtype) for v in (a, b, c))
        self.launch(f"posit_arith_{code_suffix(out)}", out.size, op, a, b, c, out, self._on(d),
                    mode, np.uint64(key), offset, sr_bits)
