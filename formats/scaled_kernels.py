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
``codebook.round_table_index``.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from . import float_kernels as fk
from .bitcast import bits_to_f32, bits_to_f64, f64_to_bits, significand_exponent
from .codebook import round_table_index
from .kernel_cache import njit

RULES = {"floor": 0, "ceil": 1, "even": 2, "rceil": 3, "amax": 4}
RULE_FLOOR, RULE_CEIL, RULE_EVEN, RULE_RCEIL, RULE_AMAX = range(5)
ELEM_FLOAT, ELEM_INT, ELEM_CODEBOOK = range(3)
FLAG_CLAMPED, FLAG_NAN = 1, 2            # per-group flags

# plan: the integer parameters of a call
PLAN = ("rule", "elem_kind", "elem_emax", "elem_prec", "int_bits", "int_qmin", "int_qmax",
        "zero_point", "scale_nan", "scale_min", "scale_mode", "scale_lo_exp", "scale_hi_exp",
        "fast_nearest", "fast_scale")
(P_RULE, P_ELEM_KIND, P_ELEM_EMAX, P_ELEM_PREC, P_INT_BITS, P_INT_QMIN, P_INT_QMAX,
 P_ZERO_POINT, P_SCALE_NAN, P_SCALE_MIN, P_SCALE_MODE, P_SCALE_LO, P_SCALE_HI,
 P_FAST, P_FAST_SCALE) = range(len(PLAN))
CHUNK = 256                               # groups per parallel task of group_loop, at most,
MIN_TASKS = 256                           # ... fewer where that leaves under MIN_TASKS tasks,
CHUNK_MIN = 16                            # ... but at least this many (pairs of groups, calls)
CHANNELS = 64                             # columns per parallel task of channel_loop

_U1 = np.uint64(1)
_MANT52 = np.uint64((1 << 52) - 1)
_TINY = 5e-324                            # float64's smallest subnormal
_UNDERFLOW_GUARD = 2.0 ** -900            # pair_quotient: Dekker's product is exact above this
_FAR_BELOW = 2.0 ** -1000                 # stands for the quotient of a dividend below the guard
_SHIFT_UP = 2.0 ** 64                     # _rounds_below: far enough up, still in e8m0's range


@njit(inline="always")
def pair_quotient(h: np.float64, low: np.float64, s: np.float64):
    """(q, t): q = fl((h + low) / s) and t approximating the rest, so that q + t is the quotient
    of the exact pair h + low (|low| <= ulp(h)/2, e.g. a TwoSum) to about 100 bits with its sign
    exact: enough for one correct rounding to any format here (h - q*s is exact).

    Dekker's product is exact only far above the underflow threshold.  The divisors here (units,
    element maxima) are at least 2**-298 (a scale no smaller than float32's least subnormal, times
    a tensor scale no smaller), so a dividend below 2**-900 gives a quotient below 2**-600: beneath
    the smallest positive value of every element and scale format (floats and codebooks keep
    above 2**-537, integer grids step >= 2**-32).  It comes back as +-2**-1000 with
    t = 0, which rounds as the true quotient does in every mode (a stochastic threshold of at
    most 32 bits sees zero in both).  Selects, not branches: loops vectorise."""
    q = h / s
    p, pe = fk.two_product(q, s)
    t = (((h - p) - pe) + low) / s
    tiny = (abs(h) < _UNDERFLOW_GUARD) & (h != 0.0)
    no_rest = tiny | (q == 0.0) | (not np.isfinite(q))
    return (np.copysign(_FAR_BELOW, q) if tiny else q), (0.0 if no_rest else t)


@njit(inline="always")
def exact_quotient(x: np.float64, s: np.float64):
    """(q, t) for x / s: see :func:`pair_quotient`."""
    return pair_quotient(x, 0.0, s)


@njit
def round_quotient(a: np.float64, b: np.float64, d, sp) -> np.float64:
    """a / b rounded once, to nearest even, into the float format ``d`` (specials ``sp``)."""
    q, t = exact_quotient(a, b)
    return fk.decode_one(fk.round_pair(q, t, d, sp, 0, np.uint64(0), 0, 32), d)


@njit(inline="always")
def shared_exponent(amax: np.float64, rule: np.int64, elem_emax: np.int64, elem_prec: np.int64,
                    elem_max: np.float64) -> np.int64:
    """Unclamped power-of-two scale exponent of a group with max |x| = amax > 0 (finite)."""
    bits = f64_to_bits(amax)
    sig, ex = significand_exponent(bits)               # amax = sig * 2**(ex - 52)
    if rule == RULE_CEIL:
        ex += np.int64((sig & _MANT52) != 0)
    elif rule == RULE_EVEN and elem_prec < 53:         # amax rounded to the element precision
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


@njit(inline="always")
def group_extent(ip: np.int64, iq: np.int64, ir: np.int64, dims, groups):
    """Flat-index geometry of group (ip, iq, ir) of the (P, Q, R) view cut into (gp, gq, gr)
    groups: (first flat index, outer count and stride, middle count and stride, inner count and
    stride).  The inner loop runs along R when the group spans more than one R index
    (contiguous), else along Q, else along P."""
    big_p, big_q, big_r = dims
    gp, gq, gr = groups
    p0, q0, r0 = ip * gp, iq * gq, ir * gr
    n_p = min(gp, big_p - p0)
    n_q = min(gq, big_q - q0)
    n_r = min(gr, big_r - r0)
    start = (p0 * big_q + q0) * big_r + r0
    if n_r > 1:
        return start, n_p, big_q * big_r, n_q, big_r, n_r, 1
    if n_q > 1:
        return start, n_p, big_q * big_r, 1, 1, n_q, big_r
    return start, 1, 0, 1, 1, n_p, big_q * big_r              # a column (channels along -1)


@njit(inline="always")
def _next_group(ip: np.int64, iq: np.int64, ir: np.int64, nq: np.int64, nr: np.int64):
    """The group after (ip, iq, ir) in C order, with nq and nr groups along Q and R."""
    ir += 1
    if ir == nr:
        ir = 0
        iq += 1
        if iq == nq:
            iq = 0
            ip += 1
    return ip, iq, ir


@njit(inline="always")
def _bits_info(xb):
    """(is32, sign shift, |x| mask, order key of Inf) of IEEE bits ``xb`` (uint32 or uint64)."""
    is32 = xb.itemsize == 4
    sign_shift = np.uint64(31 if is32 else 63)
    return (is32, sign_shift, (np.uint64(1) << sign_shift) - np.uint64(1),
            np.int64(0x7F800000) if is32 else np.int64(0x7FF0000000000000))


@njit(inline="always")
def _key(bits, sign_shift: np.uint64, absmask: np.uint64) -> np.int64:
    """The order key of a value given as its IEEE bits: the bits of |x|, negated for x < 0."""
    b = np.uint64(bits)
    mag = np.int64(b & absmask)
    return -mag if (b >> sign_shift) != 0 else mag


@njit(inline="always")
def _calibrated(lo: np.float64, hi: np.float64, clip, g: np.int64):
    """[lo, hi] narrowed to group ``g``'s calibrated range, if ``clip`` has one (keeping 0)."""
    if clip.shape[0] > 0:
        return min(max(lo, clip[g, 0]), 0.0), max(min(hi, clip[g, 1]), 0.0)
    return lo, hi


@njit(inline="always")
def _scale_from_keys(k_lo: np.int64, k_hi: np.int64, g: np.int64, bits, clip, plan,
                     elem_max: np.float64, tensor_scale: np.float64, ed, esp, sd, ssp, sspv,
                     key: np.uint64, to_value: bool):
    """:func:`_group_scale` of group ``g`` from the order keys of its range (calibrated by
    ``clip``), and whether the group holds NaN or Inf: (scode, flag, unit, inv, zp, bad)."""
    is32, _, _, inf_key = bits
    bad = max(k_hi, -k_lo) >= inf_key
    lo, hi = _calibrated(_key_value(k_lo, is32), _key_value(k_hi, is32), clip, g)
    scode, flag, unit, inv, zp = _group_scale(lo, hi, bad, plan, elem_max, tensor_scale, ed,
                                              esp, sd, ssp, sspv, key, to_value)
    return scode, flag, unit, inv, zp, bad


@njit(inline="always")
def _run_keys(xb, sign_shift: np.uint64, absmask: np.uint64):
    """(min, max) of 0 and the order keys of one run of a group's values, read as IEEE bits
    ``xb``: the bits of |x|, negated for negative x.  Integer reductions, which vectorise (float
    min/max reductions do not without fast-math, which would drop the NaN checks)."""
    lo = np.int64(0)
    hi = np.int64(0)
    for i in range(xb.shape[0]):
        k = _key(xb[i], sign_shift, absmask)
        lo = min(lo, k)
        hi = max(hi, k)
    return lo, hi


@njit(inline="always")
def _key_value(k: np.int64, is32: bool) -> np.float64:
    """The value whose order key (see :func:`_run_keys`) is ``k``."""
    v = bits_to_f32(abs(k)) if is32 else bits_to_f64(abs(k))
    return -v if k < 0 else v


@njit(inline="always")
def _kept_nonzero(sv: np.float64, xv: np.float64) -> np.float64:
    """``sv``, or the smallest float64 of x's sign where scaling a nonzero x underflowed to 0:
    far below every element format's grid, only its sign (and nonzero-ness, for the directed
    modes) matters."""
    return np.copysign(_TINY, xv) if (sv == 0.0) & (xv != 0.0) else sv


@njit
def _general_run(xs, vs, cs, base: np.int64, step: np.int64, pow2: bool, inv: np.float64,
                 unit: np.float64, lo_v: np.float64, hi_v: np.float64, zp: np.int64,
                 to_value: bool, plan, ed, esp, table, tcodes, mode: np.int64, key: np.uint64,
                 sr_bits: np.int64) -> np.int64:
    """Round one run of a group's elements (``xs``, flat index of ``xs[i]`` = ``base + i *
    step``) exactly, in any mode, into values ``vs`` or codes ``cs``.  ``[lo_v, hi_v]`` is the
    element range in element units (after the zero point); returns the count of elements
    outside it.  Compiled once per array layout (not inlined into the per-mode loops).  Floats
    with power-of-two scales, table searches (codebooks) and the rest each have a loop of their
    own (a branch or an inner loop in a loop keeps it from vectorising)."""
    kind = plan[P_ELEM_KIND]
    frac = ed[fk.MBITS] - ed[fk.EMIN]                # integer grids: k * 2**-frac
    to_steps, step_value = np.ldexp(1.0, frac), np.ldexp(1.0, -frac)
    n_clip = 0
    if kind == ELEM_FLOAT and pow2:                  # the common case (branch-free)
        for i in range(xs.shape[0]):
            sv, _ = _element_units(np.float64(xs[i]), True, inv, unit)
            n_clip += (sv < lo_v) | (sv > hi_v)
            c = fk.round_pair(sv, 0.0, ed, esp, mode, key, base + i * step, sr_bits)
            if to_value:
                vs[i] = fk.decode_one(c, ed) * unit
            else:
                cs[i] = c
        return n_clip
    if kind == ELEM_CODEBOOK:
        for i in range(xs.shape[0]):
            sv, t = _element_units(np.float64(xs[i]), pow2, inv, unit)
            n_clip += (sv < lo_v) | (sv > hi_v)
            j = round_table_index(sv, t, table, tcodes, mode, key, base + i * step, sr_bits)
            if to_value:
                vs[i] = table[j] * unit
            else:
                cs[i] = tcodes[j]
        return n_clip
    for i in range(xs.shape[0]):
        sv, t = _element_units(np.float64(xs[i]), pow2, inv, unit)
        n_clip += (sv < lo_v) | (sv > hi_v)
        c = fk.round_pair(sv, t, ed, esp, mode, key, base + i * step, sr_bits)
        v = fk.decode_one(c, ed)
        if kind == ELEM_INT:                         # grid value -> clamped integer code
            k = np.int64(v * to_steps) + zp
            k = min(max(k, plan[P_INT_QMIN]), plan[P_INT_QMAX])
            v = np.float64(k - zp) * step_value
            c = k & ((np.int64(1) << plan[P_INT_BITS]) - 1)
        if to_value:
            vs[i] = v * unit
        else:
            cs[i] = c
    return n_clip


@njit(inline="always")
def _element_units(xv: np.float64, pow2: bool, inv: np.float64, unit: np.float64):
    """``x`` in element units as an exact pair (high, low): ``x * 2**-E`` (exact unless it
    underflows: a nonzero x is then kept as the tiniest float64 of its sign) or the quotient
    ``x / scale`` with its remainder term."""
    if pow2:
        sv, t = xv * inv, 0.0
    else:
        sv, t = exact_quotient(xv, unit)
    return _kept_nonzero(sv, xv), t


@njit(inline="always")
def _grid_int(sv: np.float64, lo_v: np.float64, hi_v: np.float64, grid: np.float64):
    """``sv`` (element units) rounded to nearest-even on the integer grid of spacing ``grid``
    and clamped to [lo_v, hi_v], as a float count of grid steps (powers of two: exact)."""
    per_grid = 1.0 / grid
    return min(max(np.rint(sv * per_grid), lo_v * per_grid), hi_v * per_grid)


@njit(inline="always")
def _fast_value(xv: np.float64, pow2: bool, inv: np.float64, unit: np.float64,
                lo_v: np.float64, hi_v: np.float64, is_int: bool, grid: np.float64, q):
    """(nearest-even value, whether outside [lo_v, hi_v]) of one element, from the float64
    ``x * 2**-E`` or ``x / scale`` (see :func:`group_loop`): ``rint`` on integer grids, then
    clamped; ``quantize_nearest_even_value`` for floats, ``q`` the element's
    ``nearest_even_params`` (taken before the loop: read inside it, they stop it vectorising)."""
    sv = xv * inv if pow2 else xv / unit
    out = (sv < lo_v) | (sv > hi_v)
    if is_int:
        k = _grid_int(sv, lo_v, hi_v, grid) + 0.0               # integers have no -0
        return (k * grid) * unit, out
    return fk.quantize_nearest_even_value(sv, q) * unit, out


@njit(inline="always")
def _fast_code(xv: np.float64, pow2: bool, inv: np.float64, unit: np.float64,
               lo_v: np.float64, hi_v: np.float64, zp: np.int64, is_int: bool,
               grid: np.float64, int_mask: np.int64, ed, esp):
    """(code, whether outside [lo_v, hi_v]) of one element, as :func:`_fast_value` rounds it:
    integers the clamped ``rint`` plus the zero point, floats ``round_pair`` of the float64."""
    sv = xv * inv if pow2 else xv / unit
    out = (sv < lo_v) | (sv > hi_v)
    if is_int:
        return (np.int64(_grid_int(sv, lo_v, hi_v, grid)) + zp) & int_mask, out
    return fk.round_pair(sv, 0.0, ed, esp, 0, np.uint64(0), 0, 32), out


@njit(inline="always")
def _fast_run(xs, vs, cs, to_value: bool, pow2: bool, inv: np.float64, unit: np.float64,
              lo_v: np.float64, hi_v: np.float64, zp: np.int64, is_int: bool, grid: np.float64,
              int_mask: np.int64, ed, esp, espv) -> np.int64:
    """Nearest-even values (``vs``) or codes (``cs``) of one run; returns the count of elements
    outside ``[lo_v, hi_v]``.  Codes go through :func:`_fast_codes`, compiled on its own."""
    if not to_value:
        return _fast_codes(xs, cs, pow2, inv, unit, lo_v, hi_v, zp, is_int, grid, int_mask, ed,
                           esp)
    n_clip = 0
    q = fk.nearest_even_params(ed, espv)
    if is_int:                                   # literal flags: each loop compiled for its case
        for i in range(xs.shape[0]):
            v, out = _fast_value(np.float64(xs[i]), pow2, inv, unit, lo_v, hi_v, True, grid, q)
            n_clip += out
            vs[i] = v
    else:
        for i in range(xs.shape[0]):
            v, out = _fast_value(np.float64(xs[i]), pow2, inv, unit, lo_v, hi_v, False, grid, q)
            n_clip += out
            vs[i] = v
    return n_clip


@njit
def _fast_codes(xs, cs, pow2: bool, inv: np.float64, unit: np.float64, lo_v: np.float64,
                hi_v: np.float64, zp: np.int64, is_int: bool, grid: np.float64,
                int_mask: np.int64, ed, esp) -> np.int64:
    """The codes of :func:`_fast_run`: one loop per case, its flags literal (a flag read inside
    the loop, the division of a non-power-of-two scale above all, slows it about sixfold)."""
    args = (lo_v, hi_v, zp, grid, int_mask, ed, esp)
    if pow2:
        if is_int:
            return _code_loop(xs, cs, True, inv, unit, True, args)
        return _code_loop(xs, cs, True, inv, unit, False, args)
    if is_int:
        return _code_loop(xs, cs, False, inv, unit, True, args)
    return _code_loop(xs, cs, False, inv, unit, False, args)


@njit(inline="always")
def _code_loop(xs, cs, pow2: bool, inv: np.float64, unit: np.float64, is_int: bool,
               args) -> np.int64:
    """The loop of :func:`_fast_codes` for one (pow2, is_int) case."""
    lo_v, hi_v, zp, grid, int_mask, ed, esp = args
    n_clip = 0
    for i in range(xs.shape[0]):
        c, out = _fast_code(np.float64(xs[i]), pow2, inv, unit, lo_v, hi_v, zp, is_int, grid,
                            int_mask, ed, esp)
        n_clip += out
        cs[i] = c
    return n_clip


@njit(inline="always")
def _element_bounds(plan, zp: np.int64, grid: np.float64, elem_max: np.float64):
    """The element range [lo_v, hi_v] in element units: +-elem_max, or for integers the code
    range less the zero point."""
    if plan[P_ELEM_KIND] == ELEM_INT:
        return (plan[P_INT_QMIN] - zp) * grid, (plan[P_INT_QMAX] - zp) * grid
    return -elem_max, elem_max


@njit(inline="always")
def _group_scale(lo: np.float64, hi: np.float64, bad: bool, plan, elem_max: np.float64,
                 tensor_scale: np.float64, ed, esp, sd, ssp, sspv, key: np.uint64,
                 to_value: bool):
    """(scale code, flags, unit = the scale's value times the tensor scale, 1 / unit when it is
    a power of two, zero point) of a group whose values span [lo, hi] (lo <= 0 <= hi).  With
    ``to_value`` and ``plan[P_FAST_SCALE]`` the scale is rounded in the value domain from the
    float64 quotient (see ScaledFormat._fast_scale) and its code is not computed."""
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
    if amax > 0.0 and to_value and plan[P_FAST_SCALE] == 1:
        # sspv: nearest-even with the ieee overflow policy (Inf or NaN past the largest scale)
        v = fk.quantize_nearest_even_one(amax / (elem_max * tensor_scale), sd, sspv)
        if v == 0.0:
            return scode, FLAG_CLAMPED, fk.decode_one(scode, sd) * tensor_scale, 1.0, 0
        if not np.isfinite(v):
            return scode, FLAG_CLAMPED, sspv[fk.SP_MAX_VALUE] * tensor_scale, 1.0, 0
        return scode, 0, v * tensor_scale, 1.0, 0
    return _exact_scale(lo, hi, plan, elem_max, tensor_scale, ed, esp, sd, ssp, key)


@njit(inline="always")
def _rounds_below(sq: np.float64, st: np.float64, held: np.float64, sd, ssp,
                  mode: np.int64) -> bool:
    """Whether the quotient sq + st, below ``held``, the smallest value of a format without
    zero (e8m0: powers of two), would round below it if the format went on downwards: the
    same rounding of the quotient times 2**64 lands below held * 2**64.  A power-of-two grid
    looks the same at every scale, and an even shift keeps each code's parity, on which
    nearest-even ties turn (scales round to nearest even or up: no random draw)."""
    up = fk.round_pair(sq * _SHIFT_UP, st * _SHIFT_UP, sd, ssp, mode, np.uint64(0), 0, 32)
    return fk.decode_one(up, sd) < held * _SHIFT_UP


@njit
def _exact_scale(lo: np.float64, hi: np.float64, plan, elem_max: np.float64,
                 tensor_scale: np.float64, ed, esp, sd, ssp, key: np.uint64):
    """The ``amax``-rule scale of :func:`_group_scale` rounded exactly, and the zero point
    (compiled on its own: the group loop inlines the rest)."""
    amax = max(hi, -lo)
    scode = plan[P_SCALE_MIN]
    flag = 0
    if amax > 0.0:
        if plan[P_ZERO_POINT]:
            rh, rl = fk.two_sum(hi, -lo)                       # the range, exactly
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
        elif sd[fk.NO_ZERO] and sq < held and _rounds_below(sq, st, held, sd, ssp,
                                                             plan[P_SCALE_MODE]):
            flag = FLAG_CLAMPED                       # e8m0: held at its smallest value
    unit = fk.decode_one(scode, sd) * tensor_scale              # exact: <= 24 x 24 bits
    zp = 0
    if plan[P_ZERO_POINT] and lo < 0.0:
        zq, zt = exact_quotient(-lo, unit)
        zv = fk.decode_one(fk.round_pair(zq, zt, ed, esp, 0, np.uint64(0), 0, 32), ed)
        zp = min(np.int64(zv), plan[P_INT_QMAX])                # the grid saturates anyway
    return scode, flag, unit, 1.0, zp


@njit(inline="always")
def _run_elements(xs, vs, cs, fast: bool, base: np.int64, step: np.int64, to_value: bool,
                  pow2: bool, inv: np.float64, unit: np.float64, lo_v: np.float64,
                  hi_v: np.float64, zp: np.int64, is_int: bool, grid: np.float64,
                  int_mask: np.int64, plan, ed, esp, espv, table, tcodes, mode: np.int64,
                  key: np.uint64, sr_bits: np.int64) -> np.int64:
    """One run of a group's elements (flat index of ``xs[i]`` = ``base + i * step``) into
    values ``vs`` or codes ``cs`` (the other a placeholder): by :func:`_fast_run` where
    ``fast``, else by :func:`_general_run`.  Returns the count outside ``[lo_v, hi_v]``."""
    if fast:
        return _fast_run(xs, vs, cs, to_value, pow2, inv, unit, lo_v, hi_v, zp, is_int, grid,
                         int_mask, ed, esp, espv)
    return _general_run(xs, vs, cs, base, step, pow2, inv, unit, lo_v, hi_v, zp, to_value, plan,
                        ed, esp, table, tcodes, mode, key, sr_bits)


@njit(inline="always")
def _one_group(g, extent, x, xb, bits, clip, plan, elem_max, tensor_scale, ed, esp, espv, sd,
               ssp, sspv, table, tcodes, mode, key, sr_bits, to_value, outs, one_run):
    """Group ``g``, whose elements are the runs ``extent`` (see :func:`group_extent`): range,
    scale (and zero point), elements.  ``bits`` = (is32, sign shift, |x| mask, key of Inf)
    describes ``xb``; ``outs`` = (codes, scales, zps, values, clipped, flags).  ``one_run``, a
    literal, says the group is one contiguous run: the strided code is then left out.
    (Arguments are packed in tuples: Python passes more than 30 as *args, which Numba cannot
    inline.)"""
    start, n_o, s_o, n_m, s_m, n_i, s_i = extent
    step = np.int64(s_i)        # _general_run's argument: a literal 1 would compile it again
    codes, scales, zps, values, clipped, flags = outs
    _, sign_shift, absmask, _ = bits
    pow2 = plan[P_RULE] != RULE_AMAX
    fast = mode == 0 and plan[P_FAST] == 1
    is_int = plan[P_ELEM_KIND] == ELEM_INT
    grid = np.ldexp(1.0, ed[fk.EMIN] - ed[fk.MBITS])           # integer grids: 2**-frac
    int_mask = (np.int64(1) << plan[P_INT_BITS]) - 1
    k_lo = np.int64(0)
    k_hi = np.int64(0)
    for o in range(n_o):
        for m in range(n_m):
            base = start + o * s_o + m * s_m
            if one_run or s_i == 1:
                r_lo, r_hi = _run_keys(xb[base:base + n_i], sign_shift, absmask)
            else:
                r_lo, r_hi = _run_keys(xb[base:base + n_i * s_i:s_i], sign_shift, absmask)
            k_lo = min(k_lo, r_lo)
            k_hi = max(k_hi, r_hi)
    scode, flag, unit, inv, zp, bad = _scale_from_keys(k_lo, k_hi, g, bits, clip, plan,
                                                       elem_max, tensor_scale, ed, esp, sd,
                                                       ssp, sspv, key, to_value)
    lo_v, hi_v = _element_bounds(plan, zp, grid, elem_max)
    if not to_value:
        scales[g] = scode
        zps[g] = zp
    flags[g] = flag
    clipped[g] = 0              # (an array element: a local += here would become a reduction
    #                             of the enclosing prange once this function is inlined)
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
            elif one_run or s_i == 1:             # contiguous slices, which vectorise
                clipped[g] += _run_elements(
                    x[base:stop], values[base:stop] if to_value else values[0:1],
                    codes[0:1] if to_value else codes[base:stop], fast, base, step, to_value,
                    pow2, inv, unit, lo_v, hi_v, zp, is_int, grid, int_mask, plan, ed, esp, espv,
                    table, tcodes, mode, key, sr_bits)
            else:
                clipped[g] += _run_elements(
                    x[base:stop:s_i], values[base:stop:s_i] if to_value else values[0:1:1],
                    codes[0:1:1] if to_value else codes[base:stop:s_i], fast, base, step,
                    to_value, pow2, inv, unit, lo_v, hi_v, zp, is_int, grid, int_mask, plan, ed,
                    esp, espv, table, tcodes, mode, key, sr_bits)


@njit(inline="always")
def _pair_bounds(g, start, n0, n1, xb, bits, clip, plan, elem_max, tensor_scale, ed, esp, sd,
                 ssp, sspv, key, flags):
    """(unit, 1 / unit or 1) of groups ``g`` and ``g + 1``, adjacent contiguous runs of ``n0``
    and ``n1`` float elements, for nearest-even values; their flags are written, and a NaN
    group gets NaN units.  (A loop of two, so that the scale code is inlined once.)"""
    _, sign_shift, absmask, _ = bits
    u0 = i0 = u1 = i1 = 1.0
    for h in range(2):
        s0 = start + h * n0
        k_lo, k_hi = _run_keys(xb[s0:s0 + (n1 if h else n0)], sign_shift, absmask)
        _, flag, unit, inv, _, _ = _scale_from_keys(k_lo, k_hi, g + h, bits, clip, plan,
                                                    elem_max, tensor_scale, ed, esp, sd, ssp,
                                                    sspv, key, True)
        flags[g + h] = flag
        if h == 0:
            u0, i0 = unit, inv
        else:
            u1, i1 = unit, inv
    return u0, i0, u1, i1


@njit(inline="always")
def _pair_groups(g, start, n0, n1, x, xb, bits, clip, plan, elem_max, tensor_scale, ed, esp,
                 espv, sd, ssp, sspv, key, values, clipped, flags):
    """Nearest-even values of two adjacent one-run float groups ``g`` and ``g + 1`` of at most
    32 elements each, in one loop over both (selecting each element's scale): the compiler
    vectorises short runs poorly (NVFP4's blocks are 16, MX's 32; one loop over two MX blocks
    is 1.2x faster).  A NaN group has NaN
    units, which make its values NaN and count nothing as clipped."""
    u0, inv0, u1, inv1 = _pair_bounds(g, start, n0, n1, xb, bits, clip, plan, elem_max,
                                      tensor_scale, ed, esp, sd, ssp, sspv, key, flags)
    pow2 = plan[P_RULE] != RULE_AMAX
    xs = x[start:start + n0 + n1]
    vs = values[start:start + n0 + n1]
    q = fk.nearest_even_params(ed, espv)
    c0 = 0
    c1 = 0
    for i in range(xs.shape[0]):
        first = i < n0
        v, out = _fast_value(np.float64(xs[i]), pow2, inv0 if first else inv1,
                             u0 if first else u1, -elem_max, elem_max, False, 1.0, q)
        c0 += out & first
        c1 += out & (not first)
        vs[i] = v
    clipped[g] = c0
    clipped[g + 1] = c1


@njit(error_model="numpy")
def _group_chunk(g, g_end, x, xb, dims, groups, fmt, mode, key, sr_bits, clip, to_value, outs):
    """Groups ``g`` .. ``g_end - 1`` of :func:`group_loop` (one parallel task).  ``fmt`` = (plan,
    elem_max, tensor_scale, ed, esp, espv, sd, ssp, sspv, table, tcodes).  Compiled on its own:
    inlined into the parallel loop, its body made the parallel compile several times slower."""
    plan, elem_max, tensor_scale, ed, esp, espv, sd, ssp, sspv, table, tcodes = fmt
    _, _, _, values, clipped, flags = outs
    bits = _bits_info(xb)
    big_p, big_q, big_r = dims
    gp, gq, gr = groups
    nq = -(-big_q // gq)
    nr = -(-big_r // gr)
    pairs = (to_value and mode == 0 and plan[P_FAST] == 1
             and plan[P_ELEM_KIND] == ELEM_FLOAT)
    ip = g // (nq * nr)
    iq = (g // nr) % nq
    ir = g % nr
    while g < g_end:
        extent = group_extent(ip, iq, ir, dims, groups)
        start, n_o, s_o, n_m, s_m, n_i, s_i = extent
        ip, iq, ir = _next_group(ip, iq, ir, nq, nr)
        one_run = n_o == 1 and n_m == 1 and s_i == 1
        if pairs and one_run and n_i <= 32 and g + 1 < g_end:
            nxt = group_extent(ip, iq, ir, dims, groups)
            if nxt[1] == 1 and nxt[3] == 1 and nxt[6] == 1 and nxt[0] == start + n_i:
                ip, iq, ir = _next_group(ip, iq, ir, nq, nr)
                _pair_groups(g, start, n_i, nxt[5], x, xb, bits, clip, plan, elem_max,
                             tensor_scale, ed, esp, espv, sd, ssp, sspv, key, values,
                             clipped, flags)
                g += 2
                continue
        if one_run:                                         # literal 1s: specialised
            _one_group(g, (start, 1, 0, 1, 0, n_i, 1), x, xb, bits, clip, plan, elem_max,
                       tensor_scale, ed, esp, espv, sd, ssp, sspv, table, tcodes, mode, key,
                       sr_bits, to_value, outs, True)
        else:
            _one_group(g, extent, x, xb, bits, clip, plan, elem_max, tensor_scale, ed, esp,
                       espv, sd, ssp, sspv, table, tcodes, mode, key, sr_bits, to_value,
                       outs, False)
        g += 1


@njit(parallel=True)
def group_loop(x, xb, dims, groups, plan, elem_max, tensor_scale, ed, esp, espv, sd, ssp, sspv,
               table, tcodes, mode, key, sr_bits, clip, to_value, codes, scales, zps, values,
               clipped, flags):
    """One pass over the groups: range, scale (and zero point), elements; writes codes, scales
    and zero points, or values (``to_value``).  ``x`` (float32 or float64) and the outputs are
    flat; ``xb`` is ``x``'s bits (uint32 or uint64); ``dims`` is the (P, Q, R) view and
    ``groups`` the group shape; ``clip`` is empty or holds each group's calibrated range [lo, hi]
    (used instead of a wider measured one).  Parallel tasks take CHUNK_MIN to CHUNK consecutive
    groups (fewer than CHUNK where that would leave under MIN_TASKS tasks for many threads).
    Groups that are one contiguous run (blocks along the last axis) take a code path of their
    own, compiled for that shape (about twice as fast); runs with unit stride are passed on as
    contiguous slices, which the compiler vectorises.  Nearest-even (quantize and encode) rounds
    in the value domain (``float_kernels.quantize_nearest_even_one``, ``round_pair`` of the
    float64, or ``rint`` on integer grids) ``x * 2**-E``, or the float64 quotient ``x / scale``
    where ``plan[P_FAST]`` says that quotient cannot land on a rounding midpoint unless the
    exact one does (see ScaledFormat._fast_nearest); every other case rounds exactly per element."""
    n_groups = scales.shape[0]
    per_task = min(CHUNK, max(CHUNK_MIN, n_groups // MIN_TASKS))
    for task in prange(-(-n_groups // per_task)):
        g = task * per_task
        _group_chunk(g, min(g + per_task, n_groups), x, xb, dims, groups,
                     (plan, elem_max, tensor_scale, ed, esp, espv, sd, ssp, sspv, table, tcodes),
                     mode, key, sr_bits, clip, to_value,
                     (codes, scales, zps, values, clipped, flags))


@njit(parallel=True)
def channel_loop(x, xb, n_rows, n_cols, plan, elem_max, tensor_scale, ed, esp, espv, sd, ssp,
                 sspv, clip, to_value, codes, scales, zps, values, clipped, flags):
    """Nearest-even values or codes with one scale per column of an (n_rows, n_cols) array
    (channels along the last axis), where the fast path applies (``plan[P_FAST]``).  Each
    parallel task takes CHANNELS adjacent columns and streams the rows twice: per-column
    ranges, then elements with per-column scales: contiguous reads, unlike a walk down each
    column.  Same results as :func:`group_loop` (a NaN column: NaN values, codes 0)."""
    bits = _bits_info(xb)
    _, sign_shift, absmask, _ = bits
    pow2 = plan[P_RULE] != RULE_AMAX
    is_int = plan[P_ELEM_KIND] == ELEM_INT
    grid = np.ldexp(1.0, ed[fk.EMIN] - ed[fk.MBITS])
    int_mask = (np.int64(1) << plan[P_INT_BITS]) - 1
    for blk in prange(-(-n_cols // CHANNELS)):
        c0 = blk * CHANNELS
        w = min(CHANNELS, n_cols - c0)
        k_lo = np.zeros(w, dtype=np.int64)
        k_hi = np.zeros(w, dtype=np.int64)
        for p in range(n_rows):
            row = xb[p * n_cols + c0:p * n_cols + c0 + w]
            for j in range(w):
                k = _key(row[j], sign_shift, absmask)
                k_lo[j] = min(k_lo[j], k)
                k_hi[j] = max(k_hi[j], k)
        prm = np.empty((4, w))                  # per column: unit, inv, lo_v, hi_v (one array:
        zpv = np.empty(w, dtype=np.int64)       # few runtime alias checks, so it vectorises)
        bad = np.empty(w, dtype=np.bool_)
        for j in range(w):
            g = c0 + j
            scode, flag, unit, inv, zp, bad[j] = _scale_from_keys(
                k_lo[j], k_hi[j], g, bits, clip, plan, elem_max, tensor_scale, ed, esp, sd, ssp,
                sspv, np.uint64(0), to_value)
            lo_v, hi_v = _element_bounds(plan, zp, grid, elem_max)
            flags[g] = flag
            prm[0, j], prm[1, j], prm[2, j], prm[3, j], zpv[j] = unit, inv, lo_v, hi_v, zp
            if not to_value:
                scales[g] = scode
                zps[g] = zpv[j]
        n_clip = np.zeros(w, dtype=np.int64)
        q = fk.nearest_even_params(ed, espv)
        for p in range(n_rows):
            base = p * n_cols + c0
            xs = x[base:base + w]
            if to_value:
                vs = values[base:base + w]
                for j in range(w):
                    vs[j] = _fast_value(np.float64(xs[j]), pow2, prm[1, j], prm[0, j], prm[2, j],
                                        prm[3, j], is_int, grid, q)[0]
            else:
                cs = codes[base:base + w]
                for j in range(w):
                    cs[j] = _fast_code(np.float64(xs[j]), pow2, prm[1, j], prm[0, j], prm[2, j],
                                       prm[3, j], zpv[j], is_int, grid, int_mask, ed, esp)[0]
            for j in range(w):                  # the clip count, in a loop of its own
                sv = np.float64(xs[j]) * prm[1, j] if pow2 else np.float64(xs[j]) / prm[0, j]
                n_clip[j] += (sv < prm[2, j]) | (sv > prm[3, j])
        for j in range(w):
            clipped[c0 + j] = 0 if bad[j] else n_clip[j]
            if bad[j]:
                for p in range(n_rows):
                    if to_value:
                        values[p * n_cols + c0 + j] = np.nan
                    else:
                        codes[p * n_cols + c0 + j] = 0


@njit(parallel=True)
def finite_amax(xb) -> np.float64:
    """max |x| over the finite elements of a flat float32 or float64 array given as its bits
    ``xb`` (uint32 or uint64; an integer reduction, which vectorises); 0 when there are none."""
    is32, _, absmask, inf_key = _bits_info(xb)
    m = np.int64(0)
    for i in prange(xb.shape[0]):
        b = np.int64(np.uint64(xb[i]) & absmask)
        m = max(m, b if b < inf_key else np.int64(0))
    return _key_value(m, is32)


@njit(parallel=True)
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
