"""Numba kernels for scaled formats: element codes plus one scale per group of elements.

The input is viewed as a 3-D array (P, Q, R) (a free reshape for C-contiguous input) cut into
groups of (gp, gq, gr) elements; groups at the ends may be smaller (ragged; padding is
conceptual: padded elements would be zeros, which change nothing).  One parallel pass over the
groups does, per group: amax = max |x|, the scale, then every element rounded to the element
format.  Blocks of k along an axis are groups (1, k, 1) of the view (before, axis, after);
channels, tensors and 2-D tiles are other group shapes of the same kernel.

Scales:

* power-of-two rules (``floor``, ``ceil``, ``even``, ``rceil``): the shared exponent comes from
  amax's float64 bits, clamped to the E8M0 range -127..127; elements are ``x * 2**-E``, exact.
* ``amax`` rule: the scale is ``amax / (elem_max * tensor_scale)`` rounded once into the scale
  format (nearest-even or up); a result that rounds to 0 or past the largest value is held at
  the smallest positive value or the largest value (and counted as clamped); elements are the exact quotient ``x / (scale * tensor_scale)`` (float64 division plus
  the exact residual from Dekker's product) rounded once.

A group holding NaN or +-Inf gets the scale format's NaN and decodes to NaN throughout; an
all-zero group gets the smallest scale.  Element formats: floats (and integers/fixed point,
expressed as an all-subnormal float with the same grid) through ``float_kernels.round_pair``,
and codebooks through ``codebook.round_table``.
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
PLAN = ("rule", "elem_kind", "elem_emax", "elem_prec", "int_bits", "int_qmax", "scale_nan",
        "scale_min", "scale_mode", "scale_lo_exp", "scale_hi_exp", "fast_nearest")
(P_RULE, P_ELEM_KIND, P_ELEM_EMAX, P_ELEM_PREC, P_INT_BITS, P_INT_QMAX, P_SCALE_NAN,
 P_SCALE_MIN, P_SCALE_MODE, P_SCALE_LO, P_SCALE_HI, P_FAST) = range(len(PLAN))

_U1 = np.uint64(1)
_MANT52 = np.uint64((1 << 52) - 1)
_SPLIT = 134217729.0                      # 2**27 + 1, Veltkamp's splitter


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
def exact_quotient(x: np.float64, s: np.float64):
    """(q, t): q = fl(x / s) and t approximating the rest (x - q*s) / s, so that q + t is the
    quotient to about 100 bits and has its sign exactly: enough for one correct rounding to any
    format here (the residual x - q*s is exact)."""
    q = x / s
    if q == 0.0 or not np.isfinite(q):
        return q, 0.0
    p, pe = _two_product(q, s)
    return q, ((x - p) - pe) / s


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
def element(s: np.float64, t: np.float64, plan, ed, esp, table, tcodes, mode: np.int64,
            key: np.uint64, index: np.int64, sr_bits: np.int64):
    """(stored code, value in element units) of the exact value s + t."""
    kind = plan[P_ELEM_KIND]
    if kind == ELEM_CODEBOOK:
        c = round_table(s, t, table, tcodes, mode, key, index, sr_bits)
        return c, table[c]
    c = fk.round_pair(s, t, ed, esp, mode, key, index, sr_bits)
    v = fk.decode_one(c, ed)
    if kind == ELEM_INT:                 # sign-magnitude grid code -> two's complement integer
        k = np.int64(abs(v) * 2.0 ** (ed[fk.MBITS] - ed[fk.EMIN]))
        k = min(k, plan[P_INT_QMAX]) if v > 0 else -k
        v = np.ldexp(np.float64(k), ed[fk.EMIN] - ed[fk.MBITS])
        c = k & ((1 << plan[P_INT_BITS]) - 1)
    return c, v


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
def _run_amax(xs):
    """(max |x|, whether any x is NaN or +-Inf) over one run of a group."""
    amax = 0.0
    bad = False
    for i in range(xs.shape[0]):
        v = np.float64(xs[i])
        bad |= not np.isfinite(v)
        amax = max(amax, abs(v))
    return amax, bad


@njit(cache=True, inline="always")
def _run_elements(xs, vs, cs, base, step, bad, pow2, inv, unit, fast, to_value, plan, elem_max,
                  ed, esp, espv, table, tcodes, mode, key, sr_bits) -> np.int64:
    """Round one run of a group's elements (``xs``) into values ``vs`` or codes ``cs``; the
    flat index of ``xs[i]`` is ``base + i * step``.  Returns the count of clipped elements."""
    n_clip = 0
    if bad:
        for i in range(xs.shape[0]):
            if to_value:
                vs[i] = np.nan
            else:
                cs[i] = 0
    elif fast:                                        # value-domain nearest-even (see plan)
        for i in range(xs.shape[0]):
            sv = np.float64(xs[i]) * inv if pow2 else np.float64(xs[i]) / unit
            n_clip += abs(sv) > elem_max
            vs[i] = fk.quantize_nearest_even_one(sv, ed, espv) * unit
    else:
        for i in range(xs.shape[0]):
            xv = np.float64(xs[i])
            if pow2:
                sv, t = xv * inv, 0.0             # exact: a power of two, normal range
            else:
                sv, t = exact_quotient(xv, unit)
            n_clip += abs(sv) > elem_max
            c, v = element(sv, t, plan, ed, esp, table, tcodes, mode, key, base + i * step,
                           sr_bits)
            if to_value:
                vs[i] = v * unit
            else:
                cs[i] = c
    return n_clip


def _make_group_loop(mode: int, to_value: bool):
    """A loop over groups for one rounding mode, writing codes and scales, or values.  ``x``
    and the outputs are flat; ``dims`` is the (P, Q, R) view and ``groups`` the group shape;
    ``clip`` is empty or holds each group's calibrated range (used instead of a larger amax).
    Runs of a group with unit stride are passed on as contiguous slices, which the compiler
    vectorises (several times faster than strided indexing).  Quantize to nearest-even uses
    the value-domain rounding of ``float_kernels.quantize_nearest_even_one`` on ``x * 2**-E``,
    or on the float64 quotient ``x / scale`` where ``plan[P_FAST]`` says that quotient cannot
    land on a rounding midpoint unless the exact one does (see ScaledFormat._fast_nearest)."""
    nearest = to_value and mode == 0

    @njit(cache=True, parallel=True)
    def group_loop(x, dims, groups, plan, elem_max, tensor_scale, ed, esp, espv, sd, ssp, table,
                   tcodes, key, sr_bits, clip, codes, scales, values, clipped, flags):
        pow2 = plan[P_RULE] != RULE_AMAX
        fast = nearest and plan[P_FAST] == 1
        for g in prange(scales.shape[0]):
            start, n_o, s_o, n_m, s_m, n_i, s_i = group_extent(g, dims, groups)
            amax = 0.0
            bad = False
            for o in range(n_o):
                for m in range(n_m):
                    base = start + o * s_o + m * s_m
                    if s_i == 1:
                        run_amax, run_bad = _run_amax(x[base:base + n_i])
                    else:
                        run_amax, run_bad = _run_amax(x[base:base + n_i * s_i:s_i])
                    amax = max(amax, run_amax)
                    bad |= run_bad
            if clip.shape[0] > 0:                         # a calibrated clipping range
                amax = min(amax, clip[g])
            flag = 0
            inv = 1.0                                     # 1 / scale when it is a power of two
            unit = 1.0                                    # the value of one element unit
            if bad:
                flag = FLAG_NAN
                scode = plan[P_SCALE_NAN]
                unit = np.nan
            elif pow2:
                exp = plan[P_SCALE_LO]
                if amax > 0.0:
                    exp = shared_exponent(amax, plan[P_RULE], plan[P_ELEM_EMAX],
                                          plan[P_ELEM_PREC], elem_max)
                if exp < plan[P_SCALE_LO] or exp > plan[P_SCALE_HI]:
                    flag = FLAG_CLAMPED
                    exp = min(max(exp, plan[P_SCALE_LO]), plan[P_SCALE_HI])
                scode = exp - plan[P_SCALE_LO]            # E8M0: code = E + 127
                unit = fk.pow2(exp)
                inv = fk.pow2(-exp)
            else:
                scode = plan[P_SCALE_MIN]
                if amax > 0.0:
                    sq, st = exact_quotient(amax, elem_max * tensor_scale)
                    # ssp has the ieee overflow policy: a rounding past the largest scale
                    # gives Inf or NaN, which is then held at the largest scale
                    scode = fk.round_pair(sq, st, sd, ssp, plan[P_SCALE_MODE], key, 0, 32)
                    held = fk.decode_one(scode, sd)
                    if held == 0.0:
                        scode = plan[P_SCALE_MIN]
                        flag = FLAG_CLAMPED
                    elif not np.isfinite(held):
                        scode = sd[fk.MAX_MAG]
                        flag = FLAG_CLAMPED
                unit = fk.decode_one(scode, sd) * tensor_scale   # exact: <= 24 x 24 bits
            if not to_value:
                scales[g] = scode
            flags[g] = flag
            n_clip = 0
            for o in range(n_o):
                for m in range(n_m):
                    base = start + o * s_o + m * s_m
                    stop = base + n_i * s_i
                    if s_i == 1:
                        n_clip += _run_elements(
                            x[base:stop], values[base:stop] if to_value else values[0:1],
                            codes[0:1] if to_value else codes[base:stop], base, 1, bad, pow2,
                            inv, unit, fast, to_value, plan, elem_max, ed, esp, espv, table,
                            tcodes, mode, key, sr_bits)
                    else:
                        n_clip += _run_elements(
                            x[base:stop:s_i],
                            values[base:stop:s_i] if to_value else values[0:1:s_i],
                            codes[0:1:s_i] if to_value else codes[base:stop:s_i], base, s_i,
                            bad, pow2, inv, unit, fast, to_value, plan, elem_max, ed, esp, espv,
                            table, tcodes, mode, key, sr_bits)
            clipped[g] = n_clip

    return group_loop


_LOOPS: dict[tuple[int, bool], object] = {}


def group_kernel(mode: int, to_value: bool):
    """The compiled group loop for a rounding mode (built on first use)."""
    key = (mode, to_value)
    if key not in _LOOPS:
        _LOOPS[key] = _make_group_loop(mode, to_value)
    return _LOOPS[key]


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
def decode_groups(codes, scales, gp, gq, gr, plan, tensor_scale, ed, sd, table, out):
    """Values of element codes with their group scales (the inverse of the group loop)."""
    big_p, big_q, big_r = codes.shape
    for p in prange(big_p):
        for q in range(big_q):
            for r in range(big_r):
                scode = np.int64(scales[p // gp, q // gq, r // gr])
                if scode == plan[P_SCALE_NAN]:
                    out[p, q, r] = np.nan
                    continue
                if plan[P_RULE] != RULE_AMAX:
                    unit = np.ldexp(1.0, scode + plan[P_SCALE_LO])
                else:
                    unit = fk.decode_one(scode, sd) * tensor_scale
                c = np.int64(codes[p, q, r])
                kind = plan[P_ELEM_KIND]
                if kind == ELEM_CODEBOOK:
                    v = table[c]
                elif kind == ELEM_INT:
                    bits = plan[P_INT_BITS]
                    k = c - ((c >> (bits - 1)) & 1) * (np.int64(1) << bits)
                    v = np.ldexp(np.float64(k), ed[fk.EMIN] - ed[fk.MBITS])
                else:
                    v = fk.decode_one(c, ed)
                out[p, q, r] = v * unit
