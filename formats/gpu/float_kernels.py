"""The float-format kernels of ``floats.cu`` behind the call signatures of
:mod:`formats.float_kernels`, so :class:`formats.FloatFormat` calls either engine the same way."""
from __future__ import annotations

import numpy as np

from .adapter import CodecKernels, as_values, code_suffix, value_suffix


class FloatKernels(CodecKernels):
    """``encode_kernel`` … ``arith_kernel`` of :mod:`formats.float_kernels` on a launcher."""

    def encode_kernel(self, x, lo, out, d, sp, mode, key, offset, sr_bits) -> int:
        x = as_values(self.launch, x) if lo is None else as_values(self.launch, x, ("float64",))
        lo = None if lo is None else as_values(self.launch, lo, ("float64",))
        bad = self._counters()
        self.launch(f"float_encode_{value_suffix(x)}_{code_suffix(out)}", x.size, x, lo, out,
                    self._on(d), self._on(sp), mode, np.uint64(key), offset, sr_bits, bad)
        return int(bad[0])

    def quantize_kernel(self, x, out, d, sp, mode, key, offset, sr_bits) -> int:
        x = as_values(self.launch, x)
        bad = self._counters()
        self.launch(f"float_quantize_{value_suffix(x)}_{value_suffix(out)}", x.size, x, out,
                    self._on(d), self._on(sp), mode, np.uint64(key), offset, sr_bits, bad)
        return int(bad[0])

    def quantize_nearest_even_kernel(self, x, out, d, spv) -> int:
        x = as_values(self.launch, x)
        bad = self._counters()
        self.launch(f"float_quantize_ne_{value_suffix(x)}_{value_suffix(out)}", x.size, x, out,
                    self._on(d), self._on(spv, np.float64), bad)
        return int(bad[0])

    def decode_kernel(self, codes, out, d) -> None:
        codes = self._codes(codes)
        self.launch(f"float_decode_{code_suffix(codes)}", codes.size, codes, out, self._on(d))

    def arith_kernel(self, op, a, b, c, da, db, dc, out, d, sp, mode, key, offset,
                     sr_bits) -> int:
        if not da == db == dc == d:
            raise NotImplementedError("the GPU float arithmetic takes operands of one format")
        a, b, c = (self._codes(v, out.dtype) for v in (a, b, c))
        bad = self._counters()
        self.launch(f"float_arith_{code_suffix(out)}", out.size, op, a, b, c, out, self._on(d),
                    self._on(sp), mode, np.uint64(key), offset, sr_bits, bad)
        return int(bad[0])
