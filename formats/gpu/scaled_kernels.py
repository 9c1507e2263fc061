"""The scaled-format kernels of ``scaled.cu`` behind the call signatures of
:mod:`formats.scaled_kernels` (``group_loop``, ``channel_loop``, ``finite_amax``,
``decode_groups``), so :class:`formats.ScaledFormat` calls either engine the same way.

Outputs are the caller's buffers, in the Numba kernels' dtypes (uint32 codes, float64 values,
int64 scales, zero points and clip counts, int8 flags).
"""
from __future__ import annotations

import numpy as np

from .adapter import CodecKernels


class ScaledKernels(CodecKernels):
    """The :mod:`formats.scaled_kernels` functions on a launcher (see :mod:`formats.gpu`)."""

    @staticmethod
    def _suffix(xb) -> str:
        return "u32" if xb.dtype.itemsize == 4 else "u64"

    def group_loop(self, x, xb, dims, groups, plan, elem_max, tensor_scale, ed, esp, espv, sd,
                   ssp, sspv, table, tcodes, mode, key, sr_bits, clip, to_value, codes, scales,
                   zps, values, clipped, flags) -> None:
        """Range, scale (and zero point) and elements of every group (see the Numba kernel), in
        three launches; ``x`` is unused: the kernels read ``xb``, the bits of ``x``."""
        xp, i64, f64 = self.launch.xp, np.int64, np.float64
        xb = xp.ascontiguousarray(xb)
        n_groups = scales.shape[0]
        dims, groups, clip = self._on(dims, i64), self._on(groups, i64), self._on(clip, f64)
        fmt = (self._on(plan, i64), float(elem_max), float(tensor_scale), self._on(ed, i64),
               self._on(esp, i64), self._on(espv, f64), self._on(sd, i64),
               self._on(ssp, i64), self._on(sspv, f64), self._on(table, f64),
               self._on(tcodes, i64), int(np.size(table)))
        k_lo, k_hi = xp.zeros(n_groups, dtype=i64), xp.zeros(n_groups, dtype=i64)
        units, invs = xp.empty(n_groups, dtype=f64), xp.empty(n_groups, dtype=f64)
        zp_work = xp.empty(n_groups, dtype=i64) if to_value else zps    # zps: codes only
        suffix = self._suffix(xb)
        self.launch(f"scaled_range_{suffix}", xb.size, xb, dims, groups, k_lo, k_hi)
        self.launch("scaled_scales", n_groups, k_lo, k_hi, int(xb.dtype.itemsize == 4),
                    clip if clip.size else None, *fmt, int(bool(to_value)), scales, zp_work,
                    flags, units, invs)
        self.launch(f"scaled_elements_{suffix}", xb.size, xb, dims, groups, *fmt, int(mode),
                    np.uint64(key), int(sr_bits), int(bool(to_value)), zp_work, flags, units,
                    invs, codes, values, clipped)

    def channel_loop(self, x, xb, n_rows, n_cols, plan, elem_max, tensor_scale, ed, esp, espv,
                     sd, ssp, sspv, clip, to_value, codes, scales, zps, values, clipped,
                     flags) -> None:
        """One scale per column of an (n_rows, n_cols) array, nearest-even: the group kernel
        with column groups (the Numba kernel's results are those of its group loop)."""
        self.group_loop(x, xb, (n_rows, n_cols, 1), (n_rows, 1, 1), plan, elem_max,
                        tensor_scale, ed, esp, espv, sd, ssp, sspv, np.zeros(1),
                        np.zeros(1, np.int64), 0, np.uint64(0), 32, clip, to_value, codes,
                        scales, zps, values, clipped, flags)

    def finite_amax(self, xb) -> float:
        """max |x| over the finite elements of the flat array whose bits are ``xb``; 0 if none."""
        slot = self.launch.xp.zeros(1, dtype=np.uint64)
        xb = self.launch.xp.ascontiguousarray(xb)
        self.launch(f"scaled_finite_amax_{self._suffix(xb)}", xb.size, xb, slot)
        return float(np.uint64(int(slot[0])).view(np.float64))

    def decode_groups(self, codes, scales, zps, gp, gq, gr, plan, tensor_scale, ed, sd, table,
                      out) -> None:
        """Values of element codes (a (P, Q, R) array) with their group scales and zero points
        into the float64 array ``out`` of the same shape."""
        i64 = np.int64
        self.launch("scaled_decode", codes.size, self._on(codes, i64), self._on(scales, i64),
                    self._on(zps, i64), self._on(codes.shape, i64), self._on((gp, gq, gr), i64),
                    self._on(plan, i64), float(tensor_scale), self._on(ed, i64),
                    self._on(sd, i64), self._on(table, np.float64), out)
