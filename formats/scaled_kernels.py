"""Numba kernels for scaled formats: element codes plus one scale (and, for asymmetric integers,
one zero point) per group of elements.

The input is viewed as a 3-D array (P, Q, R) (a free reshape for C-contiguous input) cut into
groups of (gp, gq, gr) elements; groups at the ends may be smaller (ragged; padding is
conceptual: padded elements would be zeros, which change nothing).  One parallel pass over the
groups does, per group: the range (min and max of x), the scale, then every element rounded to
the element format.  Blocks of k along an axis are groups (1, k, 1) of the view (before, axis,
after); channels, tensors and 2-D tiles are other group shapes of the same kernel.

Scales:

* power-of-two rules (``floor``, ``ceil``, ``even``, ``rceil``): the shared exponent comes from
  amax's float64 bits, clamped to the E8M0 range -127..127; elements are ``x * 2**-E``, exact.
* ``amax`` rule: the scale is ``amax / (elem_max * tensor_scale)`` rounded once into the scale
  format (nearest-even or up); a result that rounds to 0 or past the largest value is held at
  the smallest positive value or the largest value (and counted as clamped); elements are the
  exact quotient ``x / (scale * tensor_scale)`` (float64 division plus the exact residual from
  Dekker's product) rounded once.
* zero point (unsigned integer elements, ``amax`` rule): with ``lo = min(min x, 0)`` and
  ``hi = max(max x, 0)``, the scale is ``(hi - lo) / qmax`` rounded once into the scale format
  (same holding), the zero point ``zp = clamp(RNE(-lo / scale), 0, qmax)`` exactly, and the
  element ``clamp(round(x / scale) + zp, 0, qmax)``; it decodes to ``(k - zp) * scale``.

A group holding NaN or +-Inf gets the scale format's NaN and decodes to NaN throughout; an
all-zero group gets the smallest scale.  Element formats: floats through
``float_kernels.round_pair``; integers/fixed point as an all-subnormal float with the same grid
(wide enough for the zero-point shift) then clamped to their code range; codebooks through
``codebook.round_table``.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import float_kernels as fk
from .bitcast import f64_to_bits, significand_exponent
from .codebook import round_table

RULES = {"floor": 0, "ceil": 1, "even": 2, "rceil": 3, "amax": 4}
RULE_FLOOR, RULE_CEIL, RULE_EVEN, RULE_RCEIL, RULE_AMAX = range(5)
ELEM_FLOAT, ELEM_INT, ELEM_CODEBOOK = range(3)
FLAG_CLAMPED, FLAG_NAN = 1, 2            # per-group flags

# plan: the integer parameters of a call
PLAN = ("rule", "elem_kind", "elem_emax", "elem_prec", "int_bits", "int_qmin", "int_qmax",
        "zero_point", "scale_nan", "scale_min", "scale_mode", "scale_lo_exp", "scale_hi_exp",
        "fast_nearest")
(P_RULE, P_ELEM_KIND, P_ELEM_EMAX, P_ELEM_PREC, P_INT_BITS, P_INT_QMIN, P_INT_QMAX,
 P_ZERO_POINT, P_SCALE_NAN, P_SCALE_MIN, P_SCALE_MODE, P_SCALE_LO, P_SCALE_HI,
 P_FAST) = range(len(PLAN))

_U1 = np.uint64(1)
_MANT52 = np.uint64((1 << 52) - 1)
_SPLIT = 134217729.0                      # 2**27 + 1, Veltkamp's splitter
_TINY = 5e-324                            # float64's smallest subnormal


@njit(cache=True, inline="always")
def _two_product(a: np.float64, b: np.float64):
    """Dekker: p = fl(a * b) and the exact error, p + e == a * b (no overflow/underflow)."""
    p = a * b
    t = _SPLIT * a
    ah = t - (t - a)
    al = a - ah
    t = _SPLIT * b
    bh = t - (t - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


@njit(cache=True, inline="always")
def pair_quotient(h: np.float64, low: np.float64, s: np.float64):
    """(q, t): q = fl((h + low) / s) and t approximating the rest, so that q + t is the quotient
    of the exact pair h + low (|low| <= ulp(h)/2, e.g. a TwoSum) to about 100 bits with its sign
    exact: enough for one correct rounding to any format here (h - q*s is exact)."""
    q = h / s
    if q == 0.0 or not np.isfinite(q):
        return q, 0.0
    p, pe = _two_product(q, s)
    return q, (((h - p) - pe) + low) / s


@njit(cache=True, inline="always")
def exact_quotient(x: np.float64, s: np.float64):
    """(q, t) for x / s: see :func:`pair_quotient`."""
    return pair_quotient(x, 0.0, s)


@njit(cache=True)
def round_quotient(a: np.float64, b: np.float64, d, sp) -> np.float64:
    """a / b rounded once, to nearest even, into the float format ``d`` (specials ``sp``)."""
    q, t = exact_quotient(a, b)
    return fk.decode_one(fk.round_pair(q, t, d, sp, 0, np.uint64(0), 0, 32), d)


@njit(cache=True, inline="always")
def shared_exponent(amax: np.float64, rule: np.int64, elem_emax: np.int64, elem_prec: np.int64,
                    elem_max: np.float64) -> np.int64:
    """Unclamped power-of-two scale exponent of a group with max |x| = amax > 0 (finite)."""
    bits = f64_to_bits(amax)
    sig, ex = significand_exponent(bits)               # amax = sig * 2**(ex - 52)
    if rule == RULE_CEIL:
        ex += np.int64((sig & _MANT52) != 0)
    elif rule == RULE_EVEN:                            # amax rounded to the element precision
        drop = np.uint64(53 - elem_prec)
        half = _U1 << (drop - _U1)
        rem = sig & ((_U1 << drop) - _U1)
        q = sig >> drop
        q += np.uint64((rem > half) | ((rem == half) & ((q & _U1) == _U1)))
        ex += np.int64(q >> np.uint64(elem_prec))      # carried into the next binade
    elif rule == RULE_RCEIL:                           # smallest E with elem_max * 2**E >= amax
        e0 = ex - np.int64(np.floor(np.log2(elem_max)))
        e = e0 - 1
        while np.ldexp(elem_max, e) < amax:
            e += 1
        return e
    return ex - elem_emax


@njit(cache=True, inline="always")
def group_extent(g: np.int64, dims, groups):
    """Flat-index geometry of group ``g`` of the (P, Q, R) view cut into (gp, gq, gr) groups:
    (first flat index, outer count and stride, middle count and stride, inner count and stride).
    The inner loop runs along the longer of the group's Q and R extents (contiguous along R)."""
    big_p, big_q, big_r = dims
    gp, gq, gr = groups
    nq = -(-big_q // gq)
    nr = -(-big_r // gr)
    ip = g // (nq * nr)
    iq = (g // nr) % nq
    ir = g % nr
    p0, q0, r0 = ip * gp, iq * gq, ir * gr
    n_p = min(gp, big_p - p0)
    n_q = min(gq, big_q - q0)
    n_r = min(gr, big_r - r0)
    start = (p0 * big_q + q0) * big_r + r0
    if n_r > 1:
        return start, n_p, big_q * big_r, n_q, big_r, n_r, 1
    return start, n_p, big_q * big_r, 1, 1, n_q, big_r


@njit(cache=True, inline="always")
def _run_range(xs):
    """(min x, max x, whether any x is NaN or +-Inf) over one run of a group."""
    lo = 0.0
    hi = 0.0
    bad = False
    for i in range(xs.shape[0]):
        v = np.float64(xs[i])
        bad |= not np.isfinite(v)
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi, bad


@njit(cache=True)
def _general_run(xs, vs, cs, base: np.int64, step: np.int64, pow2: bool, inv: np.float64,
                 unit: np.float64, lo_v: np.float64, hi_v: np.float64, zp: np.int64,
                 to_value: bool, plan, ed, esp, table, tcodes, mode: np.int64, key: np.uint64,
                 sr_bits: np.int64) -> np.int64:
    """Round one run of a group's elements (``xs``, flat index of ``xs[i]`` = ``base + i *
    step``) exactly, in any mode, into values ``vs`` or codes ``cs``.  ``[lo_v, hi_v]`` is the
    element range in element units (after the zero point); returns the count of elements
    outside it.  Compiled once per array layout (not inlined into the per-mode loops)."""
    kind = plan[P_ELEM_KIND]
    frac = ed[fk.MBITS] - ed[fk.EMIN]                # integer grids: k * 2**-frac
    n_clip = 0
    for i in range(xs.shape[0]):
        xv = np.float64(xs[i])
        if pow2:
            sv, t = xv * inv, 0.0                    # exact unless it underflows (see below)
        else:
            sv, t = exact_quotient(xv, unit)
        if sv == 0.0 and xv != 0.0:                  # underflowed: far below every element
            sv = np.copysign(_TINY, xv)              # format's grid, only its sign matters
        n_clip += (sv < lo_v) | (sv > hi_v)
        index = base + i * step
        if kind == ELEM_CODEBOOK:
            c = round_table(sv, t, table, tcodes, mode, key, index, sr_bits)
            v = table[c]
        else:
            c = fk.round_pair(sv, t, ed, esp, mode, key, index, sr_bits)
            v = fk.decode_one(c, ed)
            if kind == ELEM_INT:                     # grid value -> clamped integer code
                k = np.int64(np.ldexp(v, frac)) + zp
                k = min(max(k, plan[P_INT_QMIN]), plan[P_INT_QMAX])
                v = np.ldexp(np.float64(k - zp), -frac)
                c = k & ((np.int64(1) << plan[P_INT_BITS]) - 1)
        if to_value:
            vs[i] = v * unit
        else:
            cs[i] = c
    return n_clip


@njit(cache=True, inline="always")
def _fast_run(xs, vs, pow2: bool, inv: np.float64, unit: np.float64, lo_v: np.float64,
              hi_v: np.float64, is_int: bool, grid: np.float64, ed, espv) -> np.int64:
    """Nearest-even values of one run in the value domain (see :func:`group_loop`); returns
    the count of elements outside ``[lo_v, hi_v]``."""
    n_clip = 0
    if is_int:                                       # rint on the integer grid, then clamp
        per_grid = 1.0 / grid                        # powers of two: exact
        lo_k = lo_v * per_grid
        hi_k = hi_v * per_grid
        for i in range(xs.shape[0]):
            y = (np.float64(xs[i]) * inv if pow2 else np.float64(xs[i]) / unit) * per_grid
            n_clip += (y < lo_k) | (y > hi_k)
            k = min(max(np.rint(y), lo_k), hi_k) + 0.0          # integers have no -0
            vs[i] = (k * grid) * unit
    else:
        for i in range(xs.shape[0]):
            sv = np.float64(xs[i]) * inv if pow2 else np.float64(xs[i]) / unit
            n_clip += (sv < lo_v) | (sv > hi_v)
            vs[i] = fk.quantize_nearest_even_one(sv, ed, espv) * unit
    return n_clip


@njit(cache=True, inline="always")
def _group_scale(lo: np.float64, hi: np.float64, bad: bool, plan, elem_max: np.float64,
                 tensor_scale: np.float64, ed, esp, sd, ssp, key: np.uint64):
    """(scale code, flags, unit = the scale's value times the tensor scale, 1 / unit when it is
    a power of two, zero point) of a group whose values span [lo, hi] (lo <= 0 <= hi)."""
    rule = plan[P_RULE]
    amax = max(hi, -lo)
    if bad:
        return plan[P_SCALE_NAN], FLAG_NAN, np.nan, np.nan, 0
    if rule != RULE_AMAX:
        exp = plan[P_SCALE_LO]
        flag = 0
        if amax > 0.0:
            exp = shared_exponent(amax, rule, plan[P_ELEM_EMAX], plan[P_ELEM_PREC], elem_max)
        if exp < plan[P_SCALE_LO] or exp > plan[P_SCALE_HI]:
            flag = FLAG_CLAMPED
            exp = min(max(exp, plan[P_SCALE_LO]), plan[P_SCALE_HI])
        return exp - plan[P_SCALE_LO], flag, fk.pow2(exp), fk.pow2(-exp), 0   # E8M0: E + 127
    scode = plan[P_SCALE_MIN]
    flag = 0
    if amax > 0.0:
        if plan[P_ZERO_POINT]:
            rh, rl = fk._two_sum(hi, -lo)                       # the range, exactly
            sq, st = pair_quotient(rh, rl, elem_max)
        else:
            sq, st = exact_quotient(amax, elem_max * tensor_scale)
        # ssp has the ieee overflow policy: a rounding past the largest scale gives Inf or
        # NaN, which is then held at the largest scale
        scode = fk.round_pair(sq, st, sd, ssp, plan[P_SCALE_MODE], key, 0, 32)
        held = fk.decode_one(scode, sd)
        if held == 0.0:
            scode = plan[P_SCALE_MIN]
            flag = FLAG_CLAMPED
        elif not np.isfinite(held):
            scode = sd[fk.MAX_MAG]
            flag = FLAG_CLAMPED
    unit = fk.decode_one(scode, sd) * tensor_scale              # exact: <= 24 x 24 bits
    zp = 0
    if plan[P_ZERO_POINT] and lo < 0.0:
        zq, zt = exact_quotient(-lo, unit)
        zv = fk.decode_one(fk.round_pair(zq, zt, ed, esp, 0, np.uint64(0), 0, 32), ed)
        zp = min(np.int64(zv), plan[P_INT_QMAX])                # the grid saturates anyway
    return scode, flag, unit, 1.0, zp


@njit(cache=True, parallel=True)
def group_loop(x, dims, groups, plan, elem_max, tensor_scale, ed, esp, espv, sd, ssp, table,
               tcodes, mode, key, sr_bits, clip, to_value, codes, scales, zps, values, clipped,
               flags):
    """One pass over the groups: range, scale (and zero point), elements; writes codes, scales
    and zero points, or values (``to_value``).  ``x`` and the outputs are flat; ``dims`` is the
    (P, Q, R) view and ``groups`` the group shape; ``clip`` is empty or holds each group's
    calibrated range [lo, hi] (used instead of a wider measured one).  Runs of a group with
    unit stride are passed on as contiguous slices, which the compiler vectorises.  Quantize to
    nearest-even rounds in the value domain (``float_kernels.quantize_nearest_even_one``, or
    ``rint`` on integer grids) ``x * 2**-E``, or the float64 quotient ``x / scale`` where
    ``plan[P_FAST]`` says that quotient cannot land on a rounding midpoint unless the exact
    one does (see ScaledFormat._fast_nearest); every other case rounds exactly per element."""
    pow2 = plan[P_RULE] != RULE_AMAX
    fast = to_value and mode == 0 and plan[P_FAST] == 1
    is_int = plan[P_ELEM_KIND] == ELEM_INT
    grid = np.ldexp(1.0, ed[fk.EMIN] - ed[fk.MBITS])           # integer grids: 2**-frac
    for g in prange(scales.shape[0]):
        start, n_o, s_o, n_m, s_m, n_i, s_i = group_extent(g, dims, groups)
        lo = 0.0
        hi = 0.0
        bad = False
        for o in range(n_o):
            for m in range(n_m):
                base = start + o * s_o + m * s_m
                if s_i == 1:
                    r_lo, r_hi, r_bad = _run_range(x[base:base + n_i])
                else:
                    r_lo, r_hi, r_bad = _run_range(x[base:base + n_i * s_i:s_i])
                lo = min(lo, r_lo)
                hi = max(hi, r_hi)
                bad |= r_bad
        if clip.shape[0] > 0:                                  # a calibrated clipping range
            lo = min(max(lo, clip[g, 0]), 0.0)                # the range keeps 0
            hi = max(min(hi, clip[g, 1]), 0.0)
        scode, flag, unit, inv, zp = _group_scale(lo, hi, bad, plan, elem_max, tensor_scale,
                                                  ed, esp, sd, ssp, key)
        if is_int:
            lo_v = (plan[P_INT_QMIN] - zp) * grid
            hi_v = (plan[P_INT_QMAX] - zp) * grid
        else:
            lo_v = -elem_max
            hi_v = elem_max
        if not to_value:
            scales[g] = scode
            zps[g] = zp
        flags[g] = flag
        n_clip = 0
        for o in range(n_o):
            for m in range(n_m):
                base = start + o * s_o + m * s_m
                stop = base + n_i * s_i
                if bad:
                    for i in range(base, stop, s_i):
                        if to_value:
                            values[i] = np.nan
                        else:
                            codes[i] = 0
                elif fast and s_i == 1:
                    n_clip += _fast_run(x[base:stop], values[base:stop], pow2, inv, unit,
                                        lo_v, hi_v, is_int, grid, ed, espv)
                elif fast:
                    n_clip += _fast_run(x[base:stop:s_i], values[base:stop:s_i], pow2, inv,
                                        unit, lo_v, hi_v, is_int, grid, ed, espv)
                else:
                    n_clip += _general_run(
                        x[base:stop:s_i], values[base:stop:s_i] if to_value else values[0:1:1],
                        codes[0:1:1] if to_value else codes[base:stop:s_i], base, s_i, pow2,
                        inv, unit, lo_v, hi_v, zp, to_value, plan, ed, esp, table, tcodes,
                        mode, key, sr_bits)
        clipped[g] = n_clip


@njit(cache=True, parallel=True)
def finite_amax(x) -> np.float64:
    """max |x| over the finite elements of a flat array (0 when there are none)."""
    amax = 0.0
    for i in prange(x.shape[0]):
        v = abs(np.float64(x[i]))
        if np.isfinite(v):
            amax = max(amax, v)
    return amax


@njit(cache=True, parallel=True)
def decode_groups(codes, scales, zps, gp, gq, gr, plan, tensor_scale, ed, sd, table, out):
    """Values of element codes with their group scales and zero points (the inverse of the
    group loop)."""
    big_p, big_q, big_r = codes.shape
    kind = plan[P_ELEM_KIND]
    bits = plan[P_INT_BITS]
    signed = plan[P_INT_QMIN] < 0
    frac = ed[fk.MBITS] - ed[fk.EMIN]
    for pq in prange(big_p * big_q):
        p = pq // big_q
        q = pq % big_q
        for r in range(big_r):
            gi = (p // gp, q // gq, r // gr)
            scode = np.int64(scales[gi])
            if scode == plan[P_SCALE_NAN]:
                out[p, q, r] = np.nan
                continue
            if plan[P_RULE] != RULE_AMAX:
                unit = np.ldexp(1.0, scode + plan[P_SCALE_LO])
            else:
                unit = fk.decode_one(scode, sd) * tensor_scale
            c = np.int64(codes[p, q, r])
            if kind == ELEM_CODEBOOK:
                v = table[c]
            elif kind == ELEM_INT:
                k = c - ((c >> (bits - 1)) & 1) * (np.int64(1) << bits) if signed else c
                v = np.ldexp(np.float64(k - np.int64(zps[gi])), -frac)
            else:
                v = fk.decode_one(c, ed)
            out[p, q, r] = v * unit
