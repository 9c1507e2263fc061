"""``dot``, ``matmul`` and ``conv2d`` through a :class:`mac_models.MAC`, with event statistics.

Every function returns a :class:`MacResult`: the float64 results (exactly what the described
hardware would produce) and the statistics summed over all outputs:

* ``overflows``: integer wraps, or float roundings (sums, and unfused or ``product_format``
  products; the ``ieee`` policy) that went beyond the format's largest finite value - the
  result is then Inf (or NaN), or max in the directions that round toward it; counted on steps
  whose inputs were finite;
* ``saturations``: the same events in a saturating register (integer or float), clamped to
  its range;
* ``swamped``: nonzero addends that left the register unchanged (in a pairwise tree: either
  operand; in the aligned adder: products that alignment truncated to nothing), counted on
  steps (aligned groups) whose inputs were finite;
* ``max_abs_partial``: the largest |value| any register held (Inf once one overflowed; NaN for
  the exact and quire accumulators, whose partial sums are not rounded values);
* ``macs``: multiply-accumulates performed (M * N * K per matmul);
* ``integers``: an integer accumulator's register values as int64; None for float results and
  where a float register combines the partial sums (promotion, block-scaled operands).

Stochastic accumulators draw their random bits from the accumulator's seed and the position of
each addition (batch entry or conv group, output and k), so results do not depend on threads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Union

import numpy as np

from formats import (CodebookFormat, FloatFormat, IntFormat, ScaledFormat, fused_dot, get,
                     gpu)
from formats import float_kernels as fk
from formats.rounding import mix64, mode_id, overflow_id, resolve_sr_bits, seed_key
from formats.scalar import as_real_array

from . import kernels as mk
from .gpu.kernels import MacKernels
from .accumulators import (AlignedAccumulator, ExactAccumulator, FloatAccumulator,
                           IntAccumulator, QuireAccumulator)
from .mac import MAC, element_format
from .presets import preset

_FP32 = FloatFormat(8, 23)
_PROMOTE_KEY = np.uint64(0x5851F42D4C957F2D)          # separates the promotion register's stream


@dataclass
class MacResult:
    """Results and event statistics of one operation (see the module doc)."""

    values: np.ndarray
    overflows: int = 0
    saturations: int = 0
    swamped: int = 0
    max_abs_partial: float = 0.0
    macs: int = 0
    integers: Union[np.ndarray, None] = None     # see the module doc

    def _merge(self, other: "MacResult") -> None:
        self.overflows += other.overflows
        self.saturations += other.saturations
        self.swamped += other.swamped
        untracked = np.isnan(self.max_abs_partial) or np.isnan(other.max_abs_partial)
        self.max_abs_partial = np.nan if untracked else max(self.max_abs_partial,
                                                            other.max_abs_partial)
        self.macs += other.macs


def _mac(mac) -> MAC:
    if isinstance(mac, MAC):
        return mac
    if isinstance(mac, str):
        return preset(mac)
    raise TypeError(f"mac must be a MAC or a preset name, got {mac!r}")


def _float_plan(fmt: FloatFormat, rounding: str, seed, sr_bits, overflow, salt=0) -> tuple:
    key = seed_key(seed, rounding)
    if rounding == "stochastic" and salt:
        key = mix64(key ^ np.uint64(salt))
    ovf = overflow_id(overflow or fmt.default_overflow, fmt.overflow_policies)
    return mk.float_plan(fmt, mode_id(rounding), key, resolve_sr_bits(sr_bits), ovf)


def _acc_plan(acc: FloatAccumulator, salt=0) -> tuple:
    return _float_plan(acc.format, acc.rounding, acc.seed, acc.sr_bits, acc.overflow, salt)


# ---- operands ---------------------------------------------------------------------------------
@dataclass
class _Operand:
    values: np.ndarray            # element values (float64), (M, K) or (K, N)
    scales: np.ndarray            # block scales broadcast to (M, n_seg) or (n_seg, N)
    k_group: Union[int, None]     # block size along K, None when one scale spans K
    tensor_scale: float
    clipped: int = 0              # elements the scaled encoder clipped to the element range


def _backend(launch) -> str:
    """The formats' ``backend=`` for the engine ``launch`` (None: the CPU)."""
    return "cpu" if launch is None else "gpu"


def _operand(x: np.ndarray, fmt, k_axis: int, launch=None, rounding: str = "nearest_even",
             seed: int | None = None) -> _Operand:
    """Quantize one 2-D operand; ``k_axis`` is its summed axis (1 for A, 0 for B).  Arrays are
    ``launch``'s (NumPy for the CPU); ``rounding``/``seed``: the elements' rounding."""
    xp, backend = gpu.array_module(launch), _backend(launch)
    if not isinstance(fmt, ScaledFormat):
        if isinstance(fmt, IntFormat) and not bool(xp.isfinite(x).all()):
            raise ValueError(f"{fmt.name} cannot hold NaN or Inf, and an operand holds "
                             f"{int(xp.count_nonzero(~xp.isfinite(x)))} such value(s)")
        # float64 always: the kernels compute in their inputs' dtype (float32 operands would
        # round products and sums in float32)
        return _Operand(gpu.as_float64(launch, fmt.quantize(x, rounding, seed=seed,
                                                            backend=backend)),
                        xp.ones((1, 1)), None, 1.0)
    other = 1 - k_axis
    st = fmt.encode(x, axis=other if fmt.group == "channel" else k_axis, rounding=rounding,
                    seed=seed, backend=backend)
    reps = [x.shape[0], x.shape[1]]            # elements per group along each axis
    k_group = None
    if isinstance(fmt.group, tuple):            # tiles over this operand's two axes
        reps = list(fmt.group)
        k_group = fmt.group[k_axis]
    elif isinstance(fmt.group, int):
        reps[k_axis] = k_group = fmt.group
    elif fmt.group == "channel":
        reps[other] = 1
    elements = fmt.element.decode(st.elements, backend=backend)
    if st.zero_points is not None:
        zp = _expand(st.zero_points.astype(np.float64), reps, x.shape, xp)
        elements = elements - zp * fmt.element.epsilon
    scales = fmt.scale.decode(st.scales, backend=backend).astype(np.float64)
    scales = _expand(scales, [reps[0] if other == 0 else 1, reps[1] if other == 1 else 1],
                     tuple(x.shape[ax] if ax == other else scales.shape[ax] for ax in range(2)),
                     xp)
    return _Operand(elements, scales, k_group, float(st.tensor_scale), int(st.n_clipped))


def _tensor_wide(fmt) -> bool:
    """Whether ``fmt`` has a scale over the whole tensor (group "tensor", or a second-level
    tensor scale) that the 2-D slices of a batched or grouped operand share; tiles are kept
    per slice (a tile could straddle two)."""
    return isinstance(fmt, ScaledFormat) and (fmt.group == "tensor" or fmt.tensor_scale) and \
        not isinstance(fmt.group, tuple)


def _slice_operands(slices: list, fmt, k_axis: int, launch=None,
                    rounding: str = "nearest_even", seed: int | None = None) -> list:
    """The 2-D ``slices`` of one operand tensor (batch entries, conv groups) quantized as
    :func:`_operand` does, except that a tensor-wide scale (:func:`_tensor_wide`) is taken over
    all of them, as a per-tensor format means: they are encoded stacked along their non-summed
    axis, so blocks along K stay within a slice.  The clipped count goes to the first."""
    if not _tensor_wide(fmt) or len(slices) < 2:
        return [_operand(s, fmt, k_axis, launch, rounding, seed) for s in slices]
    other, xp = 1 - k_axis, gpu.array_module(launch)
    whole = _operand(xp.concatenate(slices, axis=other), fmt, k_axis, launch, rounding, seed)
    out, start = [], 0
    for s in slices:
        cut = (slice(None),) * other + (slice(start, start + s.shape[other]),)
        out.append(_Operand(xp.ascontiguousarray(whole.values[cut]),
                            xp.ascontiguousarray(whole.scales[cut]), whole.k_group,
                            whole.tensor_scale, whole.clipped if start == 0 else 0))
        start += s.shape[other]
    return out


def _expand(per_group: np.ndarray, reps, shape, xp=np) -> np.ndarray:
    """Per-group values repeated ``reps`` times along each axis, cut to ``shape`` (arrays of
    the module ``xp``)."""
    out = per_group
    for ax in range(2):
        if out.shape[ax] != shape[ax]:
            out = xp.repeat(out, reps[ax], axis=ax)[(slice(None),) * ax + (slice(shape[ax]),)]
    return out


def _segments(a: _Operand, b: _Operand, k: int, mac: MAC,
              xp=np) -> tuple[int, np.ndarray, np.ndarray]:
    """(segment length, A's scales (M, n_seg), B's scales (n_seg, N)), of the module ``xp``."""
    groups = {g for g in (a.k_group, b.k_group) if g is not None}
    if len(groups) > 1:
        raise ValueError(f"{mac.a_format.name} and {mac.b_format.name} have different block "
                         f"sizes along K ({a.k_group} and {b.k_group}); a MAC needs them equal")
    seg = groups.pop() if groups else k
    if mac.promote_every:
        if seg != k and mac.promote_every % seg:
            raise ValueError(f"promote_every={mac.promote_every} is not a multiple of the {seg} "
                             f"products each scale covers (a block along K, or a conv's "
                             f"kernel tap where a group's channels are fewer)")
        seg = min(seg, mac.promote_every) if seg != k else mac.promote_every
    if mac.chunks > 1:
        seg = -(-k // mac.chunks)
    seg = max(min(seg, k), 1)
    n_seg = -(-k // seg) if k else 1

    def per_segment(op: _Operand, k_axis: int, shape) -> np.ndarray:
        sc = op.scales if op.k_group is not None else xp.repeat(op.scales, n_seg, axis=k_axis)
        # always a new writeable array: a read-only view would compile the kernels once more
        return xp.array(xp.broadcast_to(sc, shape), order="C")

    return (seg, per_segment(a, 1, (a.values.shape[0], n_seg)),
            per_segment(b, 0, (n_seg, b.values.shape[1])))


def _integers(values: np.ndarray, fmt, xp=np) -> np.ndarray:
    """The integers k of fixed-point element values k * 2**-frac_bits."""
    return xp.rint(values * 2.0 ** element_format(fmt).frac_bits).astype(np.int64)


# ---- the 2-D engine -------------------------------------------------------------------------
def _empty_peak(mac: MAC) -> float:
    """``max_abs_partial`` of a MAC that added nothing: NaN where partial sums are not rounded
    values (exact and quire accumulators), else 0."""
    return np.nan if isinstance(mac.accumulator, (ExactAccumulator, QuireAccumulator)) else 0.0


def _gives_integers(mac: MAC) -> bool:
    """Whether ``mac``'s results come with the integers of its register: an integer accumulator
    whose sums no float register combines (no promotion, block scales or chunks, so that
    ``_matmul2d``'s segment is all of K and ``combine`` is false)."""
    return (isinstance(mac.accumulator, IntAccumulator) and mac.promote_every is None
            and mac.chunks == 1 and not isinstance(mac.a_format, ScaledFormat)
            and not isinstance(mac.b_format, ScaledFormat))


def _matmul2d(a: np.ndarray, b: np.ndarray, mac: MAC, stream: int, launch=None,
              opa: Union[_Operand, None] = None, opb: Union[_Operand, None] = None
              ) -> MacResult:
    """One (M, K) @ (K, N) product.  ``stream`` numbers the 2-D products of one call (batch
    entries, conv groups) so that their stochastic roundings draw different bits.  ``launch``:
    the GPU engine (arrays of ``launch.xp``), or None for the Numba kernels.  ``opa``/``opb``:
    the operands already quantized (see :func:`_products`), or None."""
    xp, backend = gpu.array_module(launch), _backend(launch)
    kern = mk if launch is None else MacKernels(launch)
    m, k = a.shape
    n = b.shape[1]
    acc = mac.accumulator
    macs = m * n * k
    salt = (stream * 0x9E3779B97F4A7C15) % (1 << 64)
    if isinstance(acc, QuireAccumulator):
        fmt = acc.format
        seed = None if acc.seed is None else (acc.seed + salt) % (1 << 64)
        ca, cb = fmt.encode(a, backend=backend), fmt.encode(b, backend=backend)
        if launch is None:
            codes = fused_dot(fmt, ca[:, None, :], cb.T[None, :, :], acc.rounding, seed)
        else:
            codes = kern.quire_matmul(fmt, ca, cb, acc.rounding, seed)
        return MacResult(fmt.decode(codes, backend=backend).reshape(m, n),
                         max_abs_partial=np.nan, macs=macs)
    if k == 0:                                        # empty sums are exactly zero
        zeros = xp.zeros((m, n))
        return MacResult(zeros, macs=0, max_abs_partial=_empty_peak(mac),
                         integers=zeros.astype(np.int64) if _gives_integers(mac) else None)
    opa = _operand(a, mac.a_format, 1, launch) if opa is None else opa
    opb = _operand(b, mac.b_format, 0, launch) if opb is None else opb
    seg, sa, sb = _segments(opa, opb, k, mac, xp)
    scaled = isinstance(mac.a_format, ScaledFormat) or isinstance(mac.b_format, ScaledFormat)
    combine = seg < k or scaled or mac.promote_every is not None   # the last piece is promoted too
    cd = _acc_plan(mac.promotion, _PROMOTE_KEY ^ salt)
    if mac.chunks > 1 and isinstance(acc, FloatAccumulator):
        cd = _acc_plan(acc, _PROMOTE_KEY ^ salt)           # chunks combine in the same register
    out = xp.zeros((m, n))
    stats = xp.zeros((m, mk.N_STATS), dtype=np.int64)
    peak = xp.zeros(m)
    integers = None
    if isinstance(acc, IntAccumulator):
        ia, ib = _integers(opa.values, mac.a_format, xp), _integers(opb.values, mac.b_format, xp)
        unit = 2.0 ** -(element_format(mac.a_format).frac_bits
                        + element_format(mac.b_format).frac_bits)
        ints = xp.zeros((m, n), dtype=np.int64)
        if acc.bits == 32 and acc.overflow == "wrap" and not combine and _fits_int32(ia, ib):
            kern.int32_wrap_matmul(ia.astype(np.int32), ib.astype(np.int32), ints, stats, peak)
            peak *= unit
        else:
            kern.int_matmul(ia, ib, ints, out, stats, peak, seg, acc.lo, acc.hi,
                          acc.overflow == "saturate", unit, cd, combine, sa, sb)
        if not combine:
            out = ints * unit
        integers = ints if _gives_integers(mac) else None
    elif isinstance(acc, FloatAccumulator):
        fd = _acc_plan(acc, salt)
        prf = mac.product_rounding_format
        pf = _float_plan(prf or _FP32, mac.product_rounding if mac.product_format else
                         acc.rounding, acc.seed, acc.sr_bits,   # unfused: the register's rules
                         None if mac.product_format else acc.overflow, 0x9E37 ^ salt)
        if _native_fp32(mac, combine):
            kern.float32_matmul(opa.values, opb.values, out, stats, peak)
        else:
            path = mk.PATHS[mk.add_path(fd)]
            if mac.order == "pairwise":
                getattr(kern, f"float_pairwise_{path}")(opa.values, opb.values, out, stats,
                                                        peak, fd, pf, prf is not None)
            else:
                getattr(kern, f"float_matmul_{path}")(
                    opa.values, opb.values, out, stats, peak, seg, fd, acc.kahan, pf,
                    prf is not None, cd, combine, sa, sb, _direct_nearest(mac, fd))
    elif isinstance(acc, AlignedAccumulator):
        fd = _float_plan(acc.format, acc.rounding, None, None, None)
        kern.aligned_matmul(opa.values, opb.values, out, stats, peak, seg, acc.n, acc.p,
                          acc.alignment == "round", fd, cd, combine, sa, sb)
    else:
        assert isinstance(acc, ExactAccumulator)
        fd = _float_plan(acc.format, acc.rounding, acc.seed, acc.sr_bits, None, salt)
        lsb, digits = _kulisch_layout(mac, k)
        kern.exact_matmul(opa.values, opb.values, out, stats, digits, lsb, fd)
        peak[:] = np.nan
    t = opa.tensor_scale * opb.tensor_scale
    if t != 1.0 and out.size:
        beyond = kern.scale_all(out.reshape(-1), t, cd)
        stats[0, mk.ST_SATURATED if cd[7] else mk.ST_OVERFLOW] += beyond
    # NaN payloads follow the compiler's operand order in NaN + NaN: results carry the canonical one
    out[xp.isnan(out)] = np.nan
    return MacResult(out, int(stats[:, mk.ST_OVERFLOW].sum()),
                     int(stats[:, mk.ST_SATURATED].sum()), int(stats[:, mk.ST_SWAMPED].sum()),
                     float(peak.max()) if m else _empty_peak(mac), macs, integers)


def _fits_int32(ia: np.ndarray, ib: np.ndarray) -> bool:
    """Every product of the two integer operands fits in int32 (operands within +-2**15)."""
    return all(x.size == 0 or (int(x.max()) <= 1 << 15 and int(x.min()) >= -(1 << 15))
               for x in (ia, ib))


def _native_fp32(mac: MAC, combine: bool) -> bool:
    """fp32 nearest-even, sequential, with every product exact in float32: native arithmetic."""
    acc = mac.accumulator
    if not (acc.format == _FP32 and acc.rounding == "nearest_even" and not acc.kahan
            and acc.overflow in (None, "ieee") and mac.product_rounding_format is None
            and mac.order == "sequential" and not combine):
        return False
    (sa, la), (sb, lb) = mac.a_format.precision, mac.b_format.precision
    return sa + sb <= 24 and la + lb >= -149 and mac.a_format.max * mac.b_format.max <= _FP32.max


def _direct_nearest(mac: MAC, fd: tuple) -> bool:
    """Whether the nearest-even kernel may round ``register + product`` from its float64 sum
    (``kernels._direct_row``) instead of the round-to-odd sum: the double rounding is then
    innocuous.  With pa the register's significand bits, pp the product's (the operands' summed),
    qa its smallest quantum's exponent and E its top binade, a float64 sum that is inexact rounds
    onto one of the register's midpoints only if the register value is so small against the sum
    that its bits reach below the sum's float64 ulp and pa >= 27, or the product spans >= 53 - pa
    bits, or the product is itself a midpoint (pp > pa) and the register value lies 53 binades
    below it.  So: pa <= 26 (today's formats have at most 24), pa + pp <= 52, and pp <= pa or
    E - qa <= 52 (fp16 register with fp16 or
    narrower operands; fp32 with bf16, fp16 or fp8 operands).  Also needs no product rounding,
    no Kahan, a plain register (signed, with -0 and subnormals) and an overflow that gives a
    non-finite value (how the kernel notices it)."""
    acc = mac.accumulator
    d = fd[0]
    plain = d[fk.SUBNORMALS] and d[fk.NEG_ZERO] and d[fk.SIGN_BIT]
    if (acc.rounding != "nearest_even" or acc.kahan or mac.product_rounding_format is not None
            or not plain or np.isfinite(fd[2][fk.SP_OVF_POS])):
        return False
    pa, qa = acc.format.precision
    pp = element_format(mac.a_format).precision[0] + element_format(mac.b_format).precision[0]
    top_binade = math.floor(math.log2(acc.format.max))
    return pa <= 26 and pa + pp <= 52 and (pp <= pa or top_binade - qa <= 52)


def _magnitude(fmt) -> float:
    """The largest magnitude of a scalar format's values (an integer's or a codebook's most
    negative value may be the largest: int1 holds -1 and 0)."""
    if isinstance(fmt, IntFormat):
        return max(fmt.max, -fmt.min)
    if isinstance(fmt, CodebookFormat):
        return float(np.max(np.abs(fmt.table)))
    return fmt.max


def _kulisch_layout(mac: MAC, k: int) -> tuple[int, int]:
    """(lsb exponent, number of 32-bit digits) of a Kulisch register for K products."""
    (_, la), (_, lb) = mac.a_format.precision, mac.b_format.precision
    lsb = la + lb
    biggest = _magnitude(mac.a_format) * _magnitude(mac.b_format)
    top = int(np.ceil(np.log2(biggest))) + 1 if biggest else lsb
    return lsb, (top - lsb + max(k, 1).bit_length() + 2) // 32 + 4


# ---- public operations -----------------------------------------------------------------------
def _engine(backend: str, *arrays) -> tuple:
    """(launcher or None, the inputs as arrays of its module) for ``backend`` (see
    :func:`formats.gpu.resolve`)."""
    launch = gpu.resolve(backend, *arrays)
    return launch, [gpu.to_backend(launch, x) for x in arrays]


def _to_caller(launch, r: MacResult, inputs) -> MacResult:
    """``r`` with its arrays in the kind the caller passed: CuPy if an input was CuPy."""
    r.values = gpu.to_caller(launch, r.values, *inputs)
    if r.integers is not None:
        r.integers = gpu.to_caller(launch, r.integers, *inputs)
    return r


def matmul(a, b, mac: Union[MAC, str], backend: str = "auto") -> MacResult:
    """``a @ b`` through ``mac``: 2-D (M, K) @ (K, N), or batched (..., M, K) @ (..., K, N) with
    broadcasting of the leading axes, as numpy.matmul.  ``backend``: "auto" (the GPU for CuPy
    input), "cpu" or "gpu" (see :mod:`formats.gpu`); CuPy input gives CuPy values."""
    a, b = as_real_array(a, "a"), as_real_array(b, "b")   # ml_dtypes arrays before the GPU
    launch, (da, db) = _engine(backend, a, b)
    return _to_caller(launch, _matmul(da, db, _mac(mac), launch), (a, b))


def _products(a_slices: list, b_slices: list, mac: MAC, launch=None) -> Iterator[MacResult]:
    """The 2-D products ``a_slices[i] @ b_slices[i]`` (numbered i, see :func:`_matmul2d`); an
    operand whose format has a tensor-wide scale is quantized over all its slices at once."""
    n = len(a_slices)
    shared = (not isinstance(mac.accumulator, QuireAccumulator) and n > 1
              and a_slices[0].size > 0 and b_slices[0].size > 0)
    opas = _slice_operands(a_slices, mac.a_format, 1, launch) \
        if shared and _tensor_wide(mac.a_format) else [None] * n
    opbs = _slice_operands(b_slices, mac.b_format, 0, launch) \
        if shared and _tensor_wide(mac.b_format) else [None] * n
    return (_matmul2d(a, b, mac, i, launch, pa, pb)
            for i, (a, b, pa, pb) in enumerate(zip(a_slices, b_slices, opas, opbs)))


def _matmul(a, b, mac: MAC, launch=None) -> MacResult:
    """matmul on the engine ``launch`` (None: the CPU)."""
    xp = gpu.array_module(launch)
    a = as_real_array(a, "a")
    b = as_real_array(b, "b")
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul needs arrays of at least 2 dimensions, got {a.shape} and "
                         f"{b.shape}; use dot for vectors")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"shapes {a.shape} and {b.shape} do not match: {a.shape[-1]} "
                         f"(a's last axis) != {b.shape[-2]} (b's second-to-last axis)")
    try:
        lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"the batch axes of shapes {a.shape} and {b.shape} do not broadcast: "
                         f"{a.shape[:-2]} against {b.shape[:-2]}") from None
    a = xp.broadcast_to(a, lead + a.shape[-2:])
    b = xp.broadcast_to(b, lead + b.shape[-2:])
    total = MacResult(xp.empty(lead + (a.shape[-2], b.shape[-1])),
                      max_abs_partial=-np.inf)
    ints = []
    index = list(np.ndindex(*lead))
    results = _products([xp.ascontiguousarray(a[idx]) for idx in index],
                        [xp.ascontiguousarray(b[idx]) for idx in index], mac, launch)
    for idx, r in zip(index, results):
        total.values[idx] = r.values
        total._merge(r)
        ints.append(r.integers)
    if total.max_abs_partial == -np.inf:              # an empty batch
        total.max_abs_partial = _empty_peak(mac)
    if _gives_integers(mac):
        total.integers = xp.stack(ints).reshape(total.values.shape) if ints else \
            xp.zeros(total.values.shape, dtype=np.int64)
    return total


def dot(a, b, mac: Union[MAC, str], backend: str = "auto") -> MacResult:
    """The dot product of two vectors through ``mac``; ``values`` is a 0-d array (``backend``:
    see :func:`matmul`)."""
    a = as_real_array(a, "a")
    b = as_real_array(b, "b")
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"dot takes two vectors, got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise ValueError(f"dot: lengths differ ({a.shape[0]} and {b.shape[0]})")
    r = matmul(a[None, :], b[:, None], mac, backend)
    r.values = r.values.reshape(())
    if r.integers is not None:
        r.integers = r.integers.reshape(())
    return r


def conv2d(x, w, mac: Union[MAC, str], stride=1, padding=0, dilation=1,
           groups: int = 1, backend: str = "auto") -> MacResult:
    """2-D convolution (cross-correlation, as in PyTorch) of ``x`` (N, C, H, W) with ``w``
    (O, C / groups, kh, kw) through ``mac``, as an NHWC implicit GEMM: each output sums its
    products in the order (kernel row, kernel column, channel).  The operands are quantized as
    stored tensors (:func:`conv_pixels`, :func:`conv_weights`): a scaled format's blocks run
    along the channels of each pixel of ``x`` (of its group, or all of them:
    :func:`conv_input_whole`) and of each kernel tap of ``w``, and a per-tensor scale covers
    all of ``x``.  A group's channels that divide the block (a depthwise conv's one) are one
    block per kernel tap, unless the weights are 2-D tiles; other ragged channels are
    zero-padded to a multiple of the block
    (:func:`conv_tap_width`; the padding's zero products are added but not counted in
    ``macs``).  ``stride``, ``padding`` and ``dilation`` are ints or
    (h, w) pairs; zero padding.  ``backend``: see :func:`matmul`."""
    mac = _mac(mac)
    x_in, w_in = as_real_array(x, "x"), as_real_array(w, "w")   # ml_dtypes arrays before the GPU
    launch, (x, w) = _engine(backend, x_in, w_in)
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d takes x (N, C, H, W) and w (O, C/groups, kh, kw), got shapes "
                         f"{x.shape} and {w.shape}")
    geometry = (w.shape[2:], pair_arg(stride, "stride", 1), pair_arg(padding, "padding", 0),
                pair_arg(dilation, "dilation", 1))
    nb, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if c % groups or o % groups or c // groups != cg:
        raise ValueError(f"channels do not match: x has {c}, w expects {cg} per group with "
                         f"groups={groups} and {o} outputs (both must divide by groups)")
    ho, wo = conv_output_size((h, wd), *geometry)
    if ho < 1 or wo < 1:
        (dh, dw), (ph, pw) = geometry[3], geometry[2]
        raise ValueError(f"the kernel ({kh}x{kw}, dilation {dh}x{dw}) does not fit the padded "
                         f"input ({h + 2 * ph}x{wd + 2 * pw})")
    xp = gpu.array_module(launch)
    exact = gpu.as_float64(launch, x) if x.dtype.kind == "f" else x      # integers stay so
    block = conv_block(mac.a_format, mac.b_format, cg)
    width = conv_tap_width(mac.a_format, mac.b_format, cg)
    per_pixel = isinstance(mac.a_format, ScaledFormat) and mac.a_format.group == "channel"
    if per_pixel and cg and mac.promote_every and mac.promote_every % cg:
        raise ValueError(f"{mac.a_format.name} gives each input pixel one scale, so a conv's "
                         f"products are scaled kernel tap by kernel tap, in blocks of the {cg} "
                         f"channels of a group: promote_every={mac.promote_every} must be a "
                         f"multiple of {cg}")
    for f, k_axis, what in ((mac.a_format, 1, "input pixel"), (mac.b_format, 0, "kernel tap")):
        stored = c if k_axis and conv_input_whole(f, c, cg) else cg
        if _k_block(f, k_axis, cg) and not f.pad and stored % block:
            raise ValueError(f"{f.name} does not pad (pad=False), and this conv stores {stored} "
                             f"channels per {what}, not a multiple of its block of {block}")
    ws = conv_weights(w, groups, width)
    taps = xp.asarray(_tap_rows((nb, h, wd), *geometry))
    quantize = not isinstance(mac.accumulator, QuireAccumulator) and x.size and ws[0].size
    if quantize and conv_input_whole(mac.a_format, c, cg):
        xs = None                                    # the quantized operands are all it needs
        opas = _whole_input(exact, mac.a_format, groups, width, launch)
    else:
        xs = conv_pixels(exact, groups, width)
        opas = [_tap_blocks(op, width) for op in _slice_operands(xs, mac.a_format, 1, launch)] \
            if quantize and isinstance(mac.a_format, ScaledFormat) else [None] * groups
    if not (quantize and isinstance(mac.b_format, ScaledFormat)):
        opbs = [None] * groups
    elif width < block and _k_block(mac.b_format, 0, cg):
        opbs = _tap_weights(ws, mac.b_format, width, launch)
    else:
        opbs = _slice_operands(ws, mac.b_format, 0, launch)
    total = MacResult(xp.empty((nb, o, ho, wo)), max_abs_partial=-np.inf)
    og = o // groups

    def nchw(rows):                        # a group's (N * Ho * Wo, og) results as (N, og, Ho, Wo)
        return rows.reshape(nb, ho, wo, og).transpose(0, 3, 1, 2)

    for g in range(groups):
        pa = None if opas[g] is None else _patches(opas[g], taps, mac.a_format)
        a = _gather(xs[g], taps) if pa is None else pa.values
        r = _matmul2d(a, ws[g], mac, g, launch, pa, opbs[g])
        outputs = slice(g * og, (g + 1) * og)
        total.values[:, outputs] = nchw(r.values)
        if r.integers is not None:          # the same MAC in every group: all or none
            if total.integers is None:
                total.integers = xp.empty(total.values.shape, dtype=np.int64)
            total.integers[:, outputs] = nchw(r.integers)
        total._merge(r)
    total.macs = nb * o * ho * wo * cg * kh * kw        # padded channels' products not counted
    return _to_caller(launch, total, (x_in, w_in))


def _k_block(fmt, k_axis: int, channels: int) -> Union[int, None]:
    """The block length along a conv operand's channels (``k_axis`` 1: x, 0: w) of ``fmt``: an
    int group, a tile's side along K, or, for x, all ``channels`` when the scale is per pixel
    ("channel"); None for scalar formats and scales that do not run along K."""
    if not isinstance(fmt, ScaledFormat):
        return None
    if isinstance(fmt.group, int):
        return fmt.group
    if isinstance(fmt.group, tuple):
        return fmt.group[k_axis]
    if fmt.group == "channel" and k_axis == 1 and channels:
        return channels
    return None


def conv_block(a_format, b_format, channels: int) -> int:
    """The block length that :func:`conv2d` pads each pixel's and kernel tap's ``channels``
    (C / groups) to: the block along the channels of the input's or the weight's scaled format
    (see :func:`_k_block`), 1 where neither has one.  Formats are objects or names."""
    a_format, b_format = get(a_format), get(b_format)
    blocks = {b for b in (_k_block(a_format, 1, channels), _k_block(b_format, 0, channels)) if b}
    if len(blocks) > 1:
        raise ValueError(f"{a_format.name} and {b_format.name} have different blocks along a "
                         f"conv's {channels} channels ({' and '.join(map(str, sorted(blocks)))});"
                         f" a MAC needs them equal")
    return blocks.pop() if blocks else 1


def padded_channels(channels: int, block: int) -> int:
    """``channels`` (a group's, at one pixel or kernel tap) zero-padded to a multiple of
    ``block``."""
    return -(-channels // block) * block


def conv_tap_width(a_format, b_format, channels: int) -> int:
    """The products per kernel tap :func:`conv2d` runs for a group of ``channels`` (C / groups)
    through formats ``a_format``, ``b_format`` (objects or names): the channels alone, as one
    block per tap, where they divide the block along them (:func:`conv_block`: a depthwise
    conv's one channel, say) and the weights are not 2-D tiles; else the channels zero-padded
    to a multiple of the block (:func:`padded_channels`)."""
    block, b_format = conv_block(a_format, b_format, channels), get(b_format)
    tiled = isinstance(b_format, ScaledFormat) and isinstance(b_format.group, tuple)
    if channels and block > channels and not block % channels and not tiled:
        return channels
    return padded_channels(channels, block)


def conv_input_whole(fmt, channels: int, group_channels: int) -> bool:
    """Whether :func:`conv2d` quantizes its input's pixels over all ``channels`` at once, as
    the tensor is stored, rather than group by group (``group_channels`` = C / groups each):
    for a scale per pixel ("channel") and for blocks along the channels that hold whole groups
    (no group crosses a block's edge: a depthwise conv's, say).  Blocks that whole groups fill
    give the same either way; groups that cross blocks' edges are quantized group by group,
    each padded."""
    fmt, cg = get(fmt), group_channels
    if not isinstance(fmt, ScaledFormat) or not cg or cg == channels:
        return False
    block = _k_block(fmt, 1, channels)
    if fmt.group == "channel":
        return True
    return block is not None and block > cg and all(
        g * cg // block == ((g + 1) * cg - 1) // block for g in range(channels // cg))


def _tap_blocks(op: _Operand, width: int) -> _Operand:
    """A group's quantized pixel matrix (N·H·W, ``width``) whose channels are narrower than
    the format's block: one block of ``width`` per kernel tap."""
    if op.k_group is None or op.k_group <= width:
        return op
    return _Operand(op.values, op.scales, width, op.tensor_scale, op.clipped)


def _tap_weights(ws: list, fmt: ScaledFormat, width: int, launch=None) -> list:
    """The weights of each group (kh·kw·``width``, O / groups), ``width`` channels a tap being
    fewer than ``fmt``'s block, quantized as stored: a block of each kernel tap's channels of
    each output channel (a tensor-wide scale over all groups), as the MAC's B operand with one
    block of ``width`` per tap."""
    xp = gpu.array_module(launch)
    kk, og = ws[0].shape[0] // width, ws[0].shape[1]
    views = [xp.ascontiguousarray(m.reshape(kk, width, og).transpose(1, 0, 2)
                                  .reshape(width, kk * og)) for m in ws]
    out = []
    for op in _slice_operands(views, fmt, 0, launch):          # rows: a tap's channels
        values = op.values.reshape(width, kk, og).transpose(1, 0, 2).reshape(kk * width, og)
        out.append(_Operand(xp.ascontiguousarray(values), op.scales.reshape(kk, og), width,
                            op.tensor_scale, op.clipped))
    return out


def _whole_input(x: np.ndarray, fmt: ScaledFormat, groups: int, width: int,
                 launch=None) -> list:
    """conv2d's operands of each group for an input ``x`` (N, C, H, W) quantized over all its
    channels (:func:`conv_input_whole`): a group's channels, zero-padded to ``width``
    (:func:`conv_tap_width`), under the scale of the block or pixel that holds them, one block
    of ``width`` per kernel tap."""
    xp = gpu.array_module(launch)
    c = x.shape[1]
    whole = _operand(conv_pixels(x, 1, 1)[0], fmt, 1, launch)
    cg, block = c // groups, whole.k_group or c
    out = []
    for g in range(groups):
        values = xp.pad(whole.values[:, g * cg:(g + 1) * cg], ((0, 0), (0, width - cg)))
        col = g * cg // block
        out.append(_Operand(xp.ascontiguousarray(values),
                            xp.ascontiguousarray(whole.scales[:, col:col + 1]), width,
                            whole.tensor_scale, whole.clipped if g == 0 else 0))
    return out


def conv_pixels(x: np.ndarray, groups: int, block: int) -> list:
    """The input ``x`` (N, C, H, W) of :func:`conv2d` as stored, per group: (N·H·W, Cp)
    matrices, a row per pixel (NHWC order), Cp being C / groups zero-padded to a multiple of
    ``block``.  Arrays keep their module and dtype."""
    xp = gpu.cupy_module() if gpu.is_device_array(x) else np
    nb, c, h, wd = x.shape
    cg = c // groups
    pad = padded_channels(cg, block) - cg
    return [xp.ascontiguousarray(xp.pad(x[:, g * cg:(g + 1) * cg].transpose(0, 2, 3, 1)
                                        .reshape(nb * h * wd, cg), ((0, 0), (0, pad))))
            for g in range(groups)]


def conv_weights(w: np.ndarray, groups: int, block: int) -> list:
    """The weights ``w`` (O, C / groups, kh, kw) of :func:`conv2d` as stored, per group:
    (kh·kw·Cp, O / groups) matrices, a row per (kernel row, kernel column, channel), Cp as in
    :func:`conv_pixels`.  Arrays keep their module and dtype."""
    xp = gpu.cupy_module() if gpu.is_device_array(w) else np
    o, cg, kh, kw = w.shape
    pad, og = padded_channels(cg, block) - cg, o // groups
    return [xp.ascontiguousarray(xp.pad(w[g * og:(g + 1) * og].transpose(2, 3, 1, 0),
                                        ((0, 0), (0, 0), (0, pad), (0, 0)))
                                 .reshape(kh * kw * (cg + pad), og))
            for g in range(groups)]


def _tap_rows(shape: tuple[int, int, int], kernel: tuple[int, int], stride: tuple[int, int],
              padding: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """(N·Ho·Wo, kh·kw) rows of :func:`conv_pixels`' pixel matrix, for an input of ``shape``
    (N, H, W), that each output's kernel taps read, kernel row major; N·H·W (one past the last
    pixel) for taps in the zero padding."""
    nb, h, wd = shape
    ho, wo = conv_output_size((h, wd), kernel, stride, padding, dilation)
    y = (np.arange(ho) * stride[0] - padding[0])[:, None] + np.arange(kernel[0]) * dilation[0]
    z = (np.arange(wo) * stride[1] - padding[1])[:, None] + np.arange(kernel[1]) * dilation[1]
    y, z = y[:, None, :, None], z[None, :, None, :]               # (Ho, Wo, kh, kw)
    inside = (y >= 0) & (y < h) & (z >= 0) & (z < wd)
    rows = (np.arange(nb) * h * wd)[:, None, None, None, None] + y * wd + z
    return np.where(inside, rows, nb * h * wd).reshape(nb * ho * wo, kernel[0] * kernel[1])


def _gather(pixels: np.ndarray, taps: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Rows ``taps`` (see :func:`_tap_rows`) of ``pixels`` (N·H·W, n) side by side, as
    (N·Ho·Wo, kh·kw·n); the padding's rows are ``fill``."""
    xp = gpu.cupy_module() if gpu.is_device_array(pixels) else np
    extra = xp.full((1, pixels.shape[1]), fill, dtype=pixels.dtype)
    return xp.concatenate([pixels, extra])[taps].reshape(taps.shape[0],
                                                         taps.shape[1] * pixels.shape[1])


def _patches(op: _Operand, taps: np.ndarray, fmt: ScaledFormat) -> _Operand:
    """The quantized pixel matrix ``op`` of conv2d's input gathered into patches as the MAC's A
    operand: values and block scales per tap (padding: zeros of scale 1); a scale per pixel
    ("channel") becomes a block of the pixel's channels; one scale per tensor stays one."""
    values = _gather(op.values, taps)
    if fmt.group == "tensor":
        return _Operand(values, op.scales[:1, :1], None, op.tensor_scale, op.clipped)
    k_group = op.k_group or op.values.shape[1]
    return _Operand(values, _gather(op.scales, taps, 1.0), k_group, op.tensor_scale, op.clipped)


def beyond_range(x: np.ndarray, fmt) -> int:
    """Finite elements of ``x`` beyond the scalar format's largest finite magnitude."""
    return int(np.count_nonzero(np.isfinite(x) & (np.abs(x) > fmt.max)))


def quantized_operand(x, fmt, k_axis: int, rounding: str = "nearest_even",
                      seed: int | None = None) -> tuple[np.ndarray, int]:
    """The values a MAC multiplies for the 2-D operand ``x`` of format ``fmt`` (``k_axis`` is
    the summed axis: 1 for A (M, K), 0 for B (K, N)): elements times block and tensor scales,
    as float64, and the count of elements clipped to the format's range (scaled formats: the
    encoder's count; scalar formats: finite inputs beyond the largest finite value).
    ``rounding``/``seed``: the elements' rounding (a MAC's operands are rounded to nearest even)."""
    (values,), clipped = quantized_slices([x], fmt, k_axis, rounding, seed)
    return values, clipped


def quantized_slices(slices, fmt, k_axis: int, rounding: str = "nearest_even",
                     seed: int | None = None) -> tuple[list, int]:
    """:func:`quantized_operand` of the 2-D slices of one operand tensor, as ``matmul`` and
    ``conv2d`` quantize batch entries and conv groups: a format's tensor-wide scale (group
    "tensor", ``tensor_scale``) is taken over all the slices.  Returns the values of each slice
    and the clipped count over all."""
    fmt = get(fmt)
    slices = [as_real_array(x, "x") for x in slices]
    for x in slices:
        if x.ndim != 2 or k_axis not in (0, 1):
            raise ValueError(f"quantized_operand takes a 2-D operand and k_axis 0 or 1, got "
                             f"shape {x.shape} and k_axis {k_axis!r}")
    ops = _slice_operands(slices, fmt, k_axis, rounding=rounding, seed=seed)
    if not isinstance(fmt, ScaledFormat):
        return [op.values for op in ops], sum(beyond_range(x, fmt) for x in slices)
    out = []
    for x, op in zip(slices, ops):
        n = x.shape[k_axis]
        seg = op.k_group or n
        idx = np.minimum(np.arange(n) // seg, (op.scales.shape[k_axis]) - 1)
        scales = op.scales[:, idx] if k_axis == 1 else op.scales[idx, :]
        out.append(op.values * scales * op.tensor_scale)
    return out, sum(op.clipped for op in ops)


def conv_output_size(hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                     padding: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """(Ho, Wo) of a convolution of an (H, W) input (PyTorch's formula)."""
    return tuple((hw[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
                 for i in range(2))


def pair_arg(v, name: str, lo: int) -> tuple[int, int]:
    """An int or an (h, w) pair of ints >= ``lo``, as a pair; a clear error otherwise."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        pair = (v, v)
    else:
        try:
            pair = tuple(v)
        except TypeError:
            pair = ()
    if len(pair) != 2 or any(isinstance(p, bool) or not isinstance(p, (int, np.integer))
                             or p < lo for p in pair):
        raise ValueError(f"{name} must be an integer >= {lo} or a pair of them, got {v!r}")
    return int(pair[0]), int(pair[1])
