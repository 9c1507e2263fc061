"""The MAC kernels of ``mac.cu`` behind the call signatures of :mod:`mac_models.kernels`, so
:mod:`mac_models.ops` calls either engine the same way.

Arrays are the launcher's (``launch.xp``): operands C-contiguous float64 (int64 / int32 for the
integer kernels); ``stats`` (M, N_STATS) int64 and ``peak`` (M,) float64 arrive zeroed and are
accumulated in place, as the Numba kernels fill them.  A float plan (:func:`kernels.float_plan`)
travels as two small arrays, see :func:`_pack_plan`.
"""
from __future__ import annotations

import numpy as np

from formats import FloatFormat, gpu
from formats.gpu.adapter import CodecKernels
from formats.quire import _n_digits, quire_width
from formats.rounding import IEEE, NEAREST_EVEN, mode_id, resolve_sr_bits, seed_key

from ..kernels import float_plan

_SCRATCH_WORDS = 1 << 25            # int64 digits of Kulisch/quire registers held per launch


def _pack_plan(launch, plan: tuple) -> tuple:
    """(int64 array, float64 array) of a plan: descriptor, special codes, mode, key (its bits),
    sr_bits, saturates, odd_max; special values, overflow threshold (see mac.cuh)."""
    d, sp, spv, top, mode, key, sr_bits, saturates, odd_max = plan
    ints = np.concatenate([np.asarray(d, np.int64), np.asarray(sp, np.int64),
                           np.array([mode, np.uint64(key).view(np.int64), sr_bits,
                                     bool(saturates), bool(odd_max)], dtype=np.int64)])
    floats = np.concatenate([np.asarray(spv, np.float64), [float(top)]])
    if ints.size != 23 or floats.size != 10:
        raise ValueError("unexpected float plan layout")
    return gpu.to_backend(launch, ints), gpu.to_backend(launch, floats)


class MacKernels(CodecKernels):
    """The Numba functions of :mod:`mac_models.kernels` (and the quire's fused dot) on a
    launcher."""

    def __init__(self, launch):
        super().__init__(launch)
        self.xp = launch.xp

    def _values(self, x):
        """Operand values or scales as contiguous float64 on the backend."""
        return self._on(x, np.float64)

    def _float_matmul(self, fast, a, b, out, stats, peak, seg, fd, kahan, pf, use_pf, cd,
                      combine, sa, sb, direct) -> None:
        """``fast``: the CUDA kernel's nearest-even path from the round-to-odd sum, else its
        general exact rounding (every other mode: the same bits as the CPU's bitwise paths);
        ``direct`` (the CPU kernel's shortcut, which gives the same bits where it is allowed)
        is not needed there."""
        del direct
        m, kk = a.shape
        n = b.shape[1]
        sa = self._values(sa)
        self.launch("mac_float_matmul", m * n, self._values(a), self._values(b), out,
                    stats.view(np.uint64), peak.view(np.uint64), kk, n, seg,
                    *_pack_plan(self.launch, fd), bool(kahan), *_pack_plan(self.launch, pf),
                    bool(use_pf), *_pack_plan(self.launch, cd), bool(combine), sa, self._values(sb),
                    sa.shape[1], fast)

    def float_matmul_nearest(self, *args) -> None:
        """kernels.float_matmul_nearest (same arguments)."""
        self._float_matmul(True, *args)

    def float_matmul_bitwise(self, *args) -> None:
        """kernels.float_matmul_bitwise (same arguments): the CUDA kernel takes the exact
        rounding, which gives the same bits."""
        self._float_matmul(False, *args)

    float_matmul_bitwise_rest = float_matmul_bitwise

    def float32_matmul(self, a, b, out, stats, peak) -> None:
        """kernels.float32_matmul through the nearest-even kernel with an fp32 register: the
        same IEEE results and statistics.  (Native float32 arithmetic would flush subnormals:
        CuPy compiles every kernel with -ftz=true.)"""
        m, kk = a.shape
        fd = float_plan(FloatFormat(8, 23), NEAREST_EVEN, np.uint64(0), 32, IEEE)
        self.float_matmul_nearest(a, b, out, stats, peak, kk, fd, False, fd, False, fd, False,
                                  self.xp.ones((m, 1)), self.xp.ones((1, b.shape[1])), False)

    def float_pairwise_bitwise(self, a, b, out, stats, peak, fd, pf, use_pf) -> None:
        """kernels.float_pairwise_bitwise (same arguments)."""
        m, kk = a.shape
        self.launch("mac_float_pairwise", m * b.shape[1], self._values(a), self._values(b), out,
                    stats.view(np.uint64), peak.view(np.uint64), kk, b.shape[1],
                    *_pack_plan(self.launch, fd), *_pack_plan(self.launch, pf), bool(use_pf))

    # the CUDA kernel takes the exact rounding in every mode, which gives the same bits
    float_pairwise_nearest = float_pairwise_bitwise_rest = float_pairwise_bitwise

    def int_matmul(self, a, b, out, totals, stats, peak, seg, lo, hi, saturate, unit, cd,
                   combine, sa, sb) -> None:
        m, kk = a.shape
        n = b.shape[1]
        sa = self._values(sa)
        self.launch("mac_int_matmul", m * n, self._on(a, np.int64), self._on(b, np.int64), out,
                    totals, stats.view(np.uint64), peak.view(np.uint64), kk, n, seg, lo, hi,
                    bool(saturate), float(unit), *_pack_plan(self.launch, cd), bool(combine),
                    sa, self._values(sb), sa.shape[1])

    def int32_wrap_matmul(self, a, b, out, stats, peak) -> None:
        m, kk = a.shape
        self.launch("mac_int32_wrap_matmul", m * b.shape[1], self._on(a, np.int32),
                    self._on(b, np.int32), out, stats.view(np.uint64), peak.view(np.uint64), kk,
                    b.shape[1])

    def aligned_matmul(self, a, b, out, stats, peak, seg, group, p, rnd, fd, cd, combine, sa,
                       sb) -> None:
        m, kk = a.shape
        n = b.shape[1]
        sa = self._values(sa)
        self.launch("mac_aligned_matmul", m * n, self._values(a), self._values(b), out,
                    stats.view(np.uint64), peak.view(np.uint64), kk, n, seg, group, p,
                    bool(rnd), *_pack_plan(self.launch, fd), *_pack_plan(self.launch, cd),
                    bool(combine), sa, self._values(sb), sa.shape[1])

    def _per_register(self, n_out: int, nd: int, launch_part) -> None:
        """Run ``launch_part(e0, count, scratch)`` over outputs in pieces whose registers of
        ``nd`` digits fit the scratch budget (zeroed for each piece)."""
        step = max(1, _SCRATCH_WORDS // nd)
        scratch = self.xp.zeros(min(step, n_out) * nd, dtype=np.int64)
        for e0 in range(0, n_out, step):
            count = min(step, n_out - e0)
            scratch[:] = 0
            launch_part(e0, count, scratch)

    def exact_matmul(self, a, b, out, stats, n_digits, lsb, fd) -> None:
        m, kk = a.shape
        n = b.shape[1]
        a, b = self._values(a), self._values(b)
        fdi, fdv = _pack_plan(self.launch, fd)
        self._per_register(m * n, n_digits, lambda e0, count, q: self.launch(
            "mac_exact_matmul", count, e0, a, b, out, stats.view(np.uint64), q, kk, n, n_digits,
            lsb, fdi, fdv))

    def scale_all(self, x, t, cd) -> int:
        over = self.xp.zeros(1, dtype=np.uint64)
        self.launch("mac_scale_all", x.size, x, float(t), *_pack_plan(self.launch, cd), over)
        return int(over[0])

    def quire_matmul(self, fmt, a_codes, b_codes, rounding: str, seed) -> object:
        """The codes of ``a @ b`` through ``fmt``'s quire: what :func:`formats.quire.fused_dot`
        gives for ``a_codes[:, None, :]`` and ``b_codes.T[None, :, :]`` ((M, N), one rounding
        each, the stochastic index of output (i, j) being i * N + j)."""
        m, kk = a_codes.shape
        n = b_codes.shape[1]
        mode = mode_id(rounding)
        key = seed_key(seed, rounding)
        d = self._on(fmt._desc, np.int64)
        pa = self._pack(a_codes, d)
        pb = self._pack(b_codes.T, d)
        out = self.xp.zeros(m * n, dtype=np.int64)
        nd = _n_digits(fmt)
        self._per_register(m * n, nd, lambda e0, count, q: self.launch(
            "mac_quire_matmul", count, e0, pa, pb, out, q, kk, n, d, nd, quire_width(fmt), mode,
            np.uint64(key), resolve_sr_bits(None)))
        return out.astype(fmt.code_dtype).reshape(m, n)

    def _pack(self, codes, d):
        codes = self._on(codes, np.int64)
        out = self.xp.empty(codes.shape, dtype=np.int64)
        self.launch("mac_quire_pack", codes.size, codes, out, d)
        return out

