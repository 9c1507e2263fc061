"""Numba kernels of the MAC models: C = A @ B with a modelled accumulator.

Layout and order.  ``a`` is (M, K), ``b`` is (K, N), both float64 values (or int64 integers for
integer accumulators).  Rows of the output run in parallel; inside a row the loop order is k then
j, so the work vectorises across the outputs of the row while each output still sees its products
in the order k = 0, 1, ..., K - 1: the order is part of the model.  K is cut into segments of
``seg`` products (promotion intervals, k-split chunks or scaled-format blocks); each segment is
summed from zero by the accumulator and its sum is then combined into the row's total by a second
accumulator step (see :mod:`mac_models.ops`).

Statistics, per row, columns ``ST_*``: overflow events (an integer register wrapped, or a float
register's rounding went beyond its largest finite value), saturation events (the same in a
register that clamps), swamped addends (a nonzero addend that left the register unchanged, or
that alignment truncated to nothing) and, in ``peak``, the largest |value| any register held.

Compile time: a float register's rounding is inlined into the loops (:func:`add_float`: the
nearest-even path or the bitwise one of the other modes, with or without the exact rest; one
compiled kernel each), as is the integer step; the rest of the exact rounding (``add_round``
and friends: products, segment sums, promotion) is compiled once, out of line, and called.

Stochastic rounding draws from :func:`formats.rounding.random_bits` keyed by the accumulator's
key (salted per batch entry or conv group by :mod:`mac_models.ops`) and the index
``(i * N + j) * K + k`` of the addition (times 4 plus the step for Kahan's four roundings; the
node number in a pairwise tree), so results do not depend on the thread count.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from formats import float_kernels as fk
from formats.bitcast import bits_to_f64, clz64, f64_to_bits, significand_exponent
from formats.kernel_cache import njit
from formats.quire import add_scaled, leading_bits, normalize, to_magnitude
from formats.rounding import NEAREST_EVEN, SATURATE, TOWARD_NEGATIVE

ST_OVERFLOW, ST_SATURATED, ST_SWAMPED = range(3)
N_STATS = 3
_U0 = np.uint64(0)
_U1 = np.uint64(1)
_MAG = np.uint64((1 << 63) - 1)
_SIGN = np.uint64(1 << 63)
_EXP = np.uint64(0x7FF << 52)
_DBL_MAX = np.finfo(np.float64).max
_TINY = 5e-324                             # float64's smallest subnormal
_BEYOND = 2.0 ** 600                       # beyond every register: float formats end below 2**512
_EXACT_PRODUCT = 2.0 ** -900               # two_product's error term is exact above this
#                                            (for operands below about 2**996; above, it is NaN)
_NO_BINADE = -100000                       # the binade of zero in the aligned adder
_OVF_POS, _OVF_NEG = -2, -3                # overflow markers in a plan's special codes


# ---- one rounded addition -------------------------------------------------------------------
@njit
def add_round(acc, x, fd, index):
    """``acc + x`` rounded once into the float register ``fd`` (see :func:`float_plan`); returns
    (value, overflowed): whether the rounding, in the register's mode, went beyond the largest
    finite value (the result is then the overflow policy's: Inf, NaN or the clamped max)."""
    s, e = fk.two_sum(acc, x)
    s = fk.exact_zero_sign(acc, x, s, fd[4])
    return finish(fk.round_pair(s, e, fd[0], fd[1], fd[4], fd[5], index, fd[6]), fd)


@njit(inline="always")
def finish(code, fd):
    """(value, overflowed) of a code from round_pair with the plan's specials, where the two
    overflow results are the markers _OVF_POS / _OVF_NEG (see :func:`float_plan`)."""
    v = fk.decode_one(max(code, 0), fd[0])
    if code < 0:
        v = np.nan
    if code == _OVF_POS:
        v = fd[2][fk.SP_OVF_POS]
    if code == _OVF_NEG:
        v = fd[2][fk.SP_OVF_NEG]
    return v, code <= _OVF_POS


@njit(inline="always")
def odd_sum(a, b):
    """a + b rounded to odd in float64, branch-free: the nearest float64 sum, moved to its odd
    neighbour when the TwoSum error says it was inexact.  Rounding that value into any format of
    <= 51 significant bits gives what rounding the exact sum would (and keeps its sign and
    whether it was zero)."""
    s = a + b
    bp = s - a
    e = (a - (s - bp)) + (b - bp)
    bits = f64_to_bits(s)
    fix = (e != 0.0) & ((bits & _U1) == np.uint64(0)) & np.isfinite(e)
    grow = (e > 0) == (s > 0)                           # the exact sum is farther from zero
    return bits_to_f64(bits + np.uint64(fix & grow) - np.uint64(fix & (not grow)))


@njit
def nearest_plan(fd):
    """What :func:`add_nearest_even` reads of the register plan ``fd``, as scalars, for kernels to
    take before their loops (see :func:`formats.float_kernels.nearest_even_params`)."""
    return fk.nearest_even_params(fd[0], fd[2]), fd[3], fd[8]


@njit(inline="always")
def add_nearest_even(acc, x, ne):
    """``add_round`` for nearest-even, branch-free: the round-to-odd sum (:func:`odd_sum`)
    rounded in the value domain; ``ne`` from :func:`nearest_plan`."""
    q, top, odd_max = ne
    odd = odd_sum(acc, x)
    big = abs(odd)
    return fk.quantize_nearest_even_value(odd, q), (big > top) | ((big == top) & odd_max)


@njit
def bitwise_plan(fd):
    """What :func:`add_bitwise` reads of the register plan ``fd``, as scalars: the parameters
    of :func:`formats.float_kernels.bitwise_params` and the random key."""
    return fk.bitwise_params(fd[0], fd[2], fd[4], fd[6]), fd[5]


@njit(inline="always")
def truncated_sum(a, b, rest):
    """``a + b`` as (t, r), branch-free: ``t`` the exact sum truncated toward zero to float64,
    ``r`` in [0, 1) the rest in units of t's float64 ulp, rounded down where it is at least
    2**-1022, else some value in (0, 2**-1022] (nonzero exactly when the sum is inexact): what
    :func:`formats.float_kernels.quantize_bitwise_value` takes.  With ``rest`` False (a
    literal: the kernels compile each case), ``r`` is only zero or not, all that rounding needs
    unless :func:`formats.float_kernels.bitwise_rest`.  An Inf or NaN operand, or a sum beyond
    float64's range, gives (a + b, 0)."""
    s = a + b
    bp = s - a
    e = (a - (s - bp)) + (b - bp)                       # TwoSum: s + e == a + b
    e = e if np.isfinite(e) else 0.0                    # an Inf or NaN operand: s is the sum
    shrink = (e != 0.0) & (np.signbit(e) != np.signbit(s))     # then t is s's lower neighbour
    tbits = f64_to_bits(s) - np.uint64(shrink)
    r = _TINY if e != 0.0 else 0.0      # (e != 0 and y == 1 cannot be: s + e would be t)
    if rest:
        exf = np.int64((tbits & _MAG) >> np.uint64(52))
        k = 1075 - (exf if exf > 1 else 1)              # ulp(t) = 2**-k, -971 <= k <= 1074
        y = abs(e) * fk.pow2(k >> 1) * fk.pow2(k - (k >> 1))    # |e| / ulp(t) < 1: exact, or
        y = r if y == 0.0 else y                        # too small to matter but nonzero
        d = 1.0 - y                                     # the rest below s, rounded down:
        dp = d - 1.0                                    # TwoSum's error says which way d went
        low = (1.0 - (d - dp)) + (-y - dp)
        d = bits_to_f64(f64_to_bits(d) - np.uint64(low < 0.0))
        r = d if shrink else y
    return bits_to_f64(tbits), r


@njit(inline="always")
def add_bitwise(acc, x, bp, index, rest):
    """``add_round`` for the modes of :func:`formats.float_kernels.quantize_bitwise_value`,
    branch-free: the truncated sum (:func:`truncated_sum` with ``rest``), signed -0 for an
    exact zero sum toward negative, rounded on its bits; ``bp`` from :func:`bitwise_plan`."""
    q, key = bp
    t, r = truncated_sum(acc, x, rest)
    t = -0.0 if fk.bitwise_toward_negative(q) & (t == 0.0) & (np.signbit(acc) | np.signbit(x)) \
        else t
    return fk.quantize_bitwise_value(t, r, q, fk.bitwise_random_bits(q, key, index), rest)


PATHS = ("nearest", "bitwise", "bitwise_rest")            # of add_float, by number
PATH_NEAREST, PATH_BITWISE, PATH_BITWISE_REST = range(len(PATHS))


def add_path(fd) -> int:
    """The path of :func:`add_float` for the float register plan ``fd``."""
    if fd[4] == NEAREST_EVEN:
        return PATH_NEAREST
    return PATH_BITWISE_REST if fk.bitwise_rest(fd[0], fd[4], fd[6]) else PATH_BITWISE


@njit(inline="always")
def add_float(acc, x, plans, index, path):
    """One addition into a float register by ``path`` (:func:`add_path`): the nearest-even or
    the bitwise rounding (``plans`` = (:func:`nearest_plan`, :func:`bitwise_plan`)).  Between
    them they serve every accumulator format (those have a zero) in every mode."""
    if path == PATH_NEAREST:
        return add_nearest_even(acc, x, plans[0])
    return add_bitwise(acc, x, plans[1], index, path == PATH_BITWISE_REST)


@njit
def round_value(x, fd, index):
    """``x`` (exact in float64) rounded into the format ``fd``; (value, beyond)."""
    return add_round(0.0, x, fd, index) if x == x else (x, False)


@njit(inline="always")
def exact_product(a, b):
    """``a * b`` as a pair (h, l) with h + l == a * b exactly, for any finite ``a`` and ``b``:
    TwoProduct of the significands (in [0.5, 1), so Veltkamp's split cannot overflow and the
    error term cannot underflow), then their powers of two.  With ``e`` the sum of the two
    frexp exponents (2**(e-2) <= |a * b| <= 2**e), the pair is exact for -898 <= e <= 600;
    beyond, it stands for the product: for e > 600 it is (+-2**600, 0), beyond every register
    (float formats end below 2**512), for e < -898 (+-2**-1074, 0), below every register's
    grid, where rounding reads only its sign and that it is nonzero.  Zero, infinite and NaN
    operands give (a * b, 0)."""
    if (a == 0.0) | (b == 0.0) | (not np.isfinite(a)) | (not np.isfinite(b)):
        return a * b, 0.0
    ma, ea = math.frexp(a)
    mb, eb = math.frexp(b)
    h, l = fk.two_product(ma, mb)                       # 0.25 <= |h| <= 1
    ex = ea + eb
    if ex > 600:
        return np.copysign(_BEYOND, h), 0.0
    if ex < -898:
        return np.copysign(_TINY, h), 0.0
    f = fk.pow2(ex)                                     # exact: h * f >= 2**-900, l on 2**-1004
    return h * f, l * f


@njit
def add_scaled_round(acc, part, scale, fd, index):
    """``acc + part * scale`` rounded once into ``fd``, exactly: the product as an exact pair
    (:func:`exact_product`), the three terms renormalised to (s, tail) where the tail is made
    round-to-odd, which keeps its sign, its zeroness and its leading bits - all that rounding
    ``s + tail`` reads.  Returns (value, beyond, x) with x the product's high word, as
    :func:`exact_product` gives it (for the statistics)."""
    h, l = exact_product(part, scale)
    if l == 0.0:                           # an exact product (the only way to an exact zero sum)
        v, beyond = add_round(acc, h, fd, index)
        return v, beyond, h
    s1, e1 = fk.two_sum(acc, h)                         # the sum is nonzero from here on
    s2, e2 = fk.two_sum(e1, l)
    s3 = s1 + s2
    e3 = s2 - (s3 - s1)                                 # FastTwoSum (|s1| >= |s2|)
    if not np.isfinite(s3):
        s3, e3, e2 = s1, 0.0, 0.0
    t = odd_sum(e3, e2)
    v, beyond = finish(fk.round_pair(s3, t, fd[0], fd[1], fd[4], fd[5], index, fd[6]), fd)
    return v, beyond, h


@njit(inline="always")
def _larger(x, y):
    """max(x, y) written as a select, which vectorises (Numba's max does not)."""
    return x if x > y else y


@njit(inline="always")
def _tally(st, j, beyond, saturates):
    """One rounding that went beyond the register's range: a saturation or an overflow."""
    st[ST_OVERFLOW, j] += beyond & (not saturates)
    st[ST_SATURATED, j] += beyond & saturates


@njit(inline="always")
def _count(st, j, old, new, x, beyond, saturates):
    """The statistics of one addition old + x -> new (events only from finite inputs)."""
    finite_in = np.isfinite(old) & np.isfinite(x)
    st[ST_SWAMPED, j] += (x != 0.0) & (new == old) & finite_in
    _tally(st, j, beyond & finite_in, saturates)


@njit(inline="always")
def _count_pair(st, j, x, y, new, beyond, saturates):
    """The statistics of one tree addition x + y -> new: swamped when either nonzero operand
    was lost (the sum equals the other), so the order of the two does not matter."""
    finite_in = np.isfinite(x) & np.isfinite(y)
    st[ST_SWAMPED, j] += (((y != 0.0) & (new == x)) | ((x != 0.0) & (new == y))) & finite_in
    _tally(st, j, beyond & finite_in, saturates)


@njit
def _combine(total, part, unit, sa, sb, i, seg_no, cd, st, top, base, kk):
    """total[j] += part[j] * unit * sa[i, seg_no] * sb[seg_no, j], each rounded once into
    ``cd`` (a segment's sum promoted, or a block's sum scaled and accumulated).  In a
    nearest-even register, an addend that is finite and exact in float64 (``two_product``'s
    error term zero: with power-of-two scales always, short of underflow) is added by
    :func:`add_nearest_even`; the rest by :func:`add_scaled_round`."""
    ne = nearest_plan(cd)
    nearest = cd[4] == NEAREST_EVEN
    for j in range(total.shape[0]):
        old = total[j]
        pv = np.float64(part[j])
        x_scale = unit * sa[i, seg_no] * sb[seg_no, j]           # exact: <= 48 bits
        h, low = fk.two_product(pv, x_scale)
        if nearest & (low == 0.0) & (abs(h) <= _DBL_MAX) & ((abs(h) >= _EXACT_PRODUCT)
                                                           | (pv == 0.0)):
            new, beyond = add_nearest_even(old, h, ne)
            x = h
        else:
            new, beyond, x = add_scaled_round(old, pv, x_scale, cd, (base + j) * kk + seg_no)
        _count(st, j, old, new, x, beyond, cd[7])
        total[j] = new
        top[j] = _larger(abs(new), top[j])


@njit(inline="always")
def _end_segment(total, part, combine, sa, sb, i, seg_no, cd, st, top, kk):
    """A float segment's sum into the row's totals: combined (scaled) or taken as it is."""
    if combine:
        _combine(total, part, 1.0, sa, sb, i, seg_no, cd, st, top, i * total.shape[0], kk)
    else:
        total[:] = part


@njit(inline="always")
def _end_row(out, stats, peak, i, total, st, top):
    out[i, :] = total
    stats[i, :] = st.sum(axis=1)
    peak[i] = top.max() if total.shape[0] else 0.0


# ---- floating-point accumulators -----------------------------------------------------------
@njit(inline="always")
def _product(av, bv, pf, use_pf, index, st, j):
    p = av * bv
    if use_pf:
        p, beyond = round_value(p, pf, index)
        _tally(st, j, beyond, pf[7])
    return p


@njit(inline="always")
def _float_row_step(part, comp, st, top, av, brow, i, k, kk, plans, saturates, pf, use_pf, kahan,
                    path):
    """One K step of one output row: ``part[j] += av * brow[j]`` rounded into the register for
    every column j, with the statistics.  Called with literal ``use_pf``/``kahan`` False for the
    plain case, so that loop has no call and no branch left in it (it vectorises)."""
    n = part.shape[0]
    for j in range(n):
        idx = (i * n + j) * kk + k
        p = _product(av, brow[j], pf, use_pf, idx, st, j)
        old = part[j]
        if kahan:
            y, by = add_float(p, -comp[j], plans, 4 * idx, path)
            t, bt = add_float(old, y, plans, 4 * idx + 1, path)
            d, bd = add_float(t, -old, plans, 4 * idx + 2, path)
            comp[j] = add_float(d, -y, plans, 4 * idx + 3, path)[0]
            new, beyond = t, by | bt | bd
        else:
            new, beyond = add_float(old, p, plans, idx, path)
        _count(st, j, old, new, p, beyond, saturates)
        part[j] = new
        top[j] = _larger(abs(new), top[j])


@njit(inline="always")
def _direct_row_step(part, av, brow, c_per_binade, c_min):
    """One K step of :func:`_direct_row`: ``part[j] = RNE(part[j] + av * brow[j])`` rounded from
    the float64 sum by the magic constant of :func:`formats.float_kernels.quantize_nearest_even_value`,
    less what a plain register (signed, with -0 and subnormals) and a finite result do not need:
    a too large sum becomes NaN or leaves the finite range, which the peak shows.  Returns
    (swamped addends, the bits of the largest |new value|: for non-NaN floats the bit patterns
    without sign order like the magnitudes, NaN above them all, and an integer maximum vectorises
    where a float one does not)."""
    swamped = 0
    top = _U0
    for j in range(part.shape[0]):
        p = av * brow[j]
        old = part[j]
        x = old + p
        bits = f64_to_bits(x)
        c = bits_to_f64(bits & _EXP) * c_per_binade
        c = c_min if c < c_min else c
        new = bits_to_f64(f64_to_bits(abs((x + c) - c)) | (bits & _SIGN))
        swamped += (p != 0.0) & (new == old)
        mag = f64_to_bits(new) & _MAG
        top = mag if mag > top else top
        part[j] = new
    return swamped, top


@njit
def _direct_row(a, b, i, seg, fd, part, total, st, top, combine, sa, sb, cd):
    """Row ``i`` of the nearest-even kernel with each sum ``register + product`` rounded from its
    float64 value, skipping the round-to-odd step: the caller has checked that the double
    rounding is innocuous for the register and operand formats (see
    ``mac_models.ops._direct_nearest``).  Its values and statistics hold only while every
    register value stays within the finite range (an overflow gives a non-finite value, which
    then stays), so it returns False, leaving the row half done, when a segment's peak is beyond
    it; the caller then redoes the row."""
    kk = a.shape[1]
    q = fk.nearest_even_params(fd[0], fd[2])
    c_per_binade, c_min, max_bits = q[0], q[1], f64_to_bits(q[8])
    swamped = 0
    top_bits = _U0
    for k0 in range(0, kk, seg):
        part[:] = 0.0
        for k in range(k0, min(kk, k0 + seg)):
            sw, tb = _direct_row_step(part, a[i, k], b[k], c_per_binade, c_min)
            swamped += sw
            top_bits = max(top_bits, tb)
        if top_bits > max_bits:
            return False
        _end_segment(total, part, combine, sa, sb, i, k0 // seg, cd, st, top, kk)
    st[ST_SWAMPED, 0] += swamped
    top[0] = _larger(bits_to_f64(top_bits), top[0])
    return True


def _make_float_matmul(path: int, extended: bool):
    """The sequential float kernel, compiled separately for each path of :func:`add_float`
    (none has a call in its loop, so it vectorises) and for plain or ``extended`` rows (Kahan
    or product rounding): with both row steps in one kernel, fp16->fp16's first call took
    about 68 s, with the plain one alone 45 s (benchmarks/RESULTS.md, "Cold start")."""
    @njit(parallel=True)
    def float_matmul(a, b, out, stats, peak, seg, fd, kahan, pf, use_pf, cd, combine, sa, sb,
                     direct):
        m, kk = a.shape
        n = b.shape[1]
        for i in prange(m):
            plans = (nearest_plan(fd), bitwise_plan(fd))   # per row: tuples cannot enter prange
            saturates = fd[7]
            part = np.zeros(n)
            comp = np.zeros(n)
            total = np.zeros(n)
            st = np.zeros((N_STATS, n), dtype=np.int64)
            top = np.zeros(n)
            done = (path == PATH_NEAREST and not extended and direct and n > 0
                    and _direct_row(a, b, i, seg, fd, part, total, st, top, combine, sa, sb, cd))
            if not done:
                total[:] = 0.0
                st[:] = 0
                top[:] = 0.0
                for k0 in range(0, kk, seg):
                    part[:] = 0.0
                    comp[:] = 0.0
                    for k in range(k0, min(kk, k0 + seg)):
                        if extended:
                            _float_row_step(part, comp, st, top, a[i, k], b[k], i, k, kk, plans,
                                            saturates, pf, use_pf, kahan, path)
                        else:
                            _float_row_step(part, comp, st, top, a[i, k], b[k], i, k, kk, plans,
                                            saturates, pf, False, False, path)
                    _end_segment(total, part, combine, sa, sb, i, k0 // seg, cd, st, top, kk)
            _end_row(out, stats, peak, i, total, st, top)

    return float_matmul


def _float_matmul_on(path: int):
    plain, extended = _make_float_matmul(path, False), _make_float_matmul(path, True)

    def float_matmul(a, b, out, stats, peak, seg, fd, kahan, pf, use_pf, cd, combine, sa, sb,
                     direct) -> None:
        """Sequential float accumulation with segments (see the module doc).  ``fd``: the
        register format; ``pf``/``use_pf``: the product's rounding (multiplier format);
        ``cd``/``combine``: the format segment sums are added into, times ``sa``/``sb``;
        ``direct``: rows go through :func:`_direct_row` first (nearest-even, plain rows only)."""
        (extended if kahan or use_pf else plain)(a, b, out, stats, peak, seg, fd, kahan, pf,
                                                 use_pf, cd, combine, sa, sb, direct)
    return float_matmul


float_matmul_nearest, float_matmul_bitwise, float_matmul_bitwise_rest = (
    _float_matmul_on(path) for path in range(len(PATHS)))


@njit(parallel=True)
def float32_matmul(a, b, out, stats, peak):
    """fp32 round-to-nearest-even sequential accumulation in native float32 arithmetic.  Valid
    only when every product is exact in float32 (the caller checks the operand formats)."""
    m, kk = a.shape
    n = b.shape[1]
    a32 = a.astype(np.float32)
    b32 = b.astype(np.float32)
    big = np.float32(np.finfo(np.float32).max)
    for i in prange(m):
        acc = np.zeros(n, dtype=np.float32)
        swamped = np.zeros(n, dtype=np.int32)
        over = np.zeros(n, dtype=np.int32)
        top = np.zeros(n, dtype=np.float32)
        for k in range(kk):
            av = a32[i, k]
            for j in range(n):
                p = av * b32[k, j]
                old = acc[j]
                new = old + p
                swamped[j] += np.int32((p != 0) & (new == old) & (abs(p) <= big)
                                       & (abs(old) <= big))
                over[j] += np.int32((abs(new) > big) & (abs(old) <= big) & (abs(p) <= big))
                acc[j] = new
                top[j] = _larger(abs(new), top[j])
        for j in range(n):
            out[i, j] = acc[j]
        stats[i, ST_OVERFLOW] = over.astype(np.int64).sum()
        stats[i, ST_SWAMPED] = swamped.astype(np.int64).sum()
        peak[i] = top.max() if n else 0.0


def _make_float_pairwise(path: int):
    """The pairwise kernel, compiled separately for each path of :func:`add_float` (as
    :func:`_make_float_matmul`)."""
    @njit(parallel=True)
    def float_pairwise(a, b, out, stats, peak, fd, pf, use_pf):
        """Pairwise (tree) summation of each output's products: level by level, neighbours
        (0, 1), (2, 3), ... are added and rounded into ``fd``; an odd last element moves up
        unchanged.  A lone product (K = 1) enters the register as ``0 + p``, rounded, as in
        the sequential order (so -0 gives +0; a tree of -0 products gives -0, as IEEE adds)."""
        m, kk = a.shape
        n = b.shape[1]
        for i in prange(m):
            plans = (nearest_plan(fd), bitwise_plan(fd))
            saturates = fd[7]
            buf = np.empty((kk, n))
            nxt = np.empty(((kk + 1) // 2, n))  # each level writes here, then the two swap
            st = np.zeros((N_STATS, n), dtype=np.int64)
            top = np.zeros(n)
            for k in range(kk):
                for j in range(n):
                    buf[k, j] = _product(a[i, k], b[k, j], pf, use_pf, (i * n + j) * kk + k, st,
                                         j)
            width = kk
            node = 0                            # additions so far in each output's tree
            while width > 1:
                half = width // 2
                for t in range(half):
                    r0, r1, dst = buf[2 * t], buf[2 * t + 1], nxt[t]   # distinct: vectorises
                    for j in range(n):
                        x, y = r0[j], r1[j]
                        new, beyond = add_float(x, y, plans, (i * n + j) * kk + node + t, path)
                        _count_pair(st, j, x, y, new, beyond, saturates)
                        dst[j] = new
                        top[j] = _larger(abs(new), top[j])
                if width % 2:
                    nxt[half, :] = buf[width - 1, :]
                buf, nxt = nxt, buf
                node += half
                width = half + width % 2
            if kk == 1:
                for j in range(n):
                    p = buf[0, j]
                    new, beyond = add_float(0.0, p, plans, i * n + j, path)
                    _count(st, j, 0.0, new, p, beyond, saturates)
                    buf[0, j] = new
                    top[j] = _larger(abs(new), top[j])
            _end_row(out, stats, peak, i, buf[0], st, top)
    return float_pairwise


float_pairwise_nearest, float_pairwise_bitwise, float_pairwise_bitwise_rest = (
    _make_float_pairwise(path) for path in range(len(PATHS)))


# ---- integer accumulators ------------------------------------------------------------------
@njit(inline="always")
def _int_add(acc, x, lo, hi, saturate):
    """acc + x (exact in int64) wrapped or clamped to [lo, hi]; (value, changed)."""
    s = acc + x
    out_of_range = (s > hi) | (s < lo)
    wrapped = ((s - lo) & (hi - lo)) + lo               # hi - lo = 2**bits - 1
    clamped = min(max(s, lo), hi)
    return (clamped if saturate else wrapped), out_of_range


@njit(parallel=True)
def int_matmul(a, b, out, totals, stats, peak, seg, lo, hi, saturate, unit, cd, combine, sa,
               sb):
    """Integer accumulation of int64 products into a [lo, hi] register, wrapping or saturating.
    With ``combine``, each segment's sum times ``unit`` (a power of two) and ``sa``/``sb`` is
    added into the float format ``cd`` (promotion, block scales) and ``totals`` receives the
    float results; else ``out`` receives the register's integers."""
    m, kk = a.shape
    n = b.shape[1]
    for i in prange(m):
        part = np.zeros(n, dtype=np.int64)
        total = np.zeros(n)
        events = np.zeros(n, dtype=np.int64)
        st = np.zeros((N_STATS, n), dtype=np.int64)
        top = np.zeros(n, dtype=np.int64)
        ftop = np.zeros(n)
        for k0 in range(0, kk, seg):
            part[:] = 0
            for k in range(k0, min(kk, k0 + seg)):
                av = a[i, k]
                for j in range(n):
                    new, changed = _int_add(part[j], av * b[k, j], lo, hi, saturate)
                    events[j] += changed
                    part[j] = new
                    top[j] = _larger(abs(new), top[j])
            if combine:
                _combine(total, part, unit, sa, sb, i, k0 // seg, cd, st, ftop, i * n, kk)
        if combine:
            totals[i, :] = total
        else:
            out[i, :] = part
        ev = events.sum()
        stats[i, ST_SATURATED if saturate else ST_OVERFLOW] = ev
        stats[i, ST_SWAMPED] = st[ST_SWAMPED].sum()
        stats[i, ST_OVERFLOW] += st[ST_OVERFLOW].sum()
        stats[i, ST_SATURATED] += st[ST_SATURATED].sum()
        peak[i] = max(top.max() * unit, ftop.max()) if n else 0.0


@njit(parallel=True)
def int32_wrap_matmul(a, b, out, stats, peak):
    """The int32 wrapping register in native 32-bit arithmetic (int32 operands whose products
    fit in int32, as int8 and int16 ones do).  A sum wrapped exactly when both operands' signs
    differ from the result's: ((acc ^ new) & (p ^ new)) < 0, counted by its sign bit.  The
    events and the extremes of the row's partial sums are int32 reductions over each K step
    (kept in vector registers, not stored per column); the events add up in int64 per step."""
    m, kk = a.shape
    n = b.shape[1]
    for i in prange(m):
        acc = np.zeros(n, dtype=np.int32)
        events = 0
        hi = np.int32(0)
        lo = np.int32(0)
        for k in range(kk):
            av = a[i, k]
            step_events = np.int32(0)
            for j in range(n):
                p = np.int32(av * b[k, j])
                old = acc[j]
                new = np.int32(old + p)
                step_events -= np.int32(((old ^ new) & (p ^ new)) >> 31)
                acc[j] = new
                hi = max(hi, new)
                lo = min(lo, new)
            events += np.int64(step_events)
        for j in range(n):
            out[i, j] = acc[j]
        stats[i, ST_OVERFLOW] = events
        peak[i] = max(np.int64(hi), -np.int64(lo))


# ---- the aligned (tensor-core) multi-term adder -----------------------------------------------
@njit(inline="always")
def _finite_larger(v, big):
    """max(|v|, big) over finite v only (a select, so it vectorises)."""
    x = abs(v)
    return x if (x > big) & (x <= _DBL_MAX) else big


@njit(inline="always")
def _binade(v):
    """floor(log2|v|) of a finite nonzero float64; _NO_BINADE for zero and non-finite values."""
    sig, ex = significand_exponent(f64_to_bits(v))
    return ex - (clz64(sig) - 11) if (v != 0.0) & np.isfinite(v) else _NO_BINADE


@njit(parallel=True)
def aligned_matmul(a, b, out, stats, peak, seg, group, p, rnd, fd, cd, combine, sa, sb):
    """Groups of ``group`` products, aligned to the largest binade E among them and the running
    sum, each kept to its bits >= 2**(E - p + 1) (``rnd``: rounded to nearest even, else
    truncated toward zero), summed exactly as integers in that unit (p + log2(group + 1) <= 62
    bits, checked by AlignedAccumulator) and rounded once into ``fd``.

    Per group and output, a first pass takes the largest finite |product| (E is its binade;
    non-finite terms do not set it) and the float64 sum (non-finite when a term is: the IEEE
    result); a second keeps and sums, counting as swamped the nonzero products that keep
    nothing, in groups whose terms and running sum are finite (as float registers count only
    steps with finite inputs)."""
    m, kk = a.shape
    n = b.shape[1]
    for i in prange(m):
        part = np.zeros(n)
        total = np.zeros(n)
        big = np.zeros(n)
        unit = np.zeros(n, dtype=np.int64)
        acc = np.zeros(n, dtype=np.int64)
        raw = np.zeros(n)
        swamped = np.zeros(n, dtype=np.int64)      # the count before the current group
        st = np.zeros((N_STATS, n), dtype=np.int64)
        top = np.zeros(n)
        for k0 in range(0, kk, seg):
            part[:] = 0.0
            k_end = min(kk, k0 + seg)
            for g0 in range(k0, k_end, group):
                g1 = min(k_end, g0 + group)
                for j in range(n):
                    big[j] = _finite_larger(part[j], 0.0)
                    raw[j] = part[j]
                for k in range(g0, g1):
                    av = a[i, k]
                    brow = b[k]
                    for j in range(n):
                        v = av * brow[j]
                        big[j] = _finite_larger(v, big[j])
                        raw[j] += v
                for j in range(n):
                    unit[j] = _binade(big[j]) - p + 1
                    acc[j] = _keep(part[j], unit[j], rnd)
                    swamped[j] = st[ST_SWAMPED, j]
                for k in range(g0, g1):
                    av = a[i, k]
                    brow = b[k]
                    for j in range(n):
                        v = av * brow[j]
                        t = _keep(v, unit[j], rnd)
                        st[ST_SWAMPED, j] += (v != 0.0) & (t == 0)
                        acc[j] += t
                for j in range(n):
                    if not np.isfinite(raw[j]) and _special(part[j], a, b, i, j, g0, g1):
                        st[ST_SWAMPED, j] = swamped[j]       # an Inf/NaN group counts none
                    new, beyond = _aligned_sum(acc[j], unit[j], raw[j], part[j], fd, a, b, i, j,
                                               g0, g1, (i * n + j) * kk + g0)
                    _tally(st, j, beyond, fd[7])
                    part[j] = new
                    top[j] = _larger(abs(new), top[j])
            _end_segment(total, part, combine, sa, sb, i, k0 // seg, cd, st, top, kk)
        _end_row(out, stats, peak, i, total, st, top)


@njit(inline="always")
def _special(part, a, b, i, j, g0, g1):
    """Whether the running sum ``part`` or a product of the group g0..g1 (output i, j) is Inf or
    NaN (the float64 sum of finite terms may overflow too: this tells the two apart)."""
    special = not np.isfinite(part)
    for k in range(g0, g1):
        special |= not np.isfinite(a[i, k] * b[k, j])
    return special


@njit(inline="always")
def _aligned_sum(acc, unit, raw, part, fd, a, b, i, j, g0, g1, index):
    """The kept sum ``acc * 2**unit`` (|acc| < 2**62) rounded once into ``fd``: (value, beyond).
    A non-finite float64 sum ``raw`` of the group means a non-finite product or running sum
    ``part`` (the IEEE result ``raw``, Inf or NaN, then goes through the register's rounding,
    which applies the format's rule for it) or an overflow of float64 itself (``part`` and the
    products are rescanned to tell).
    The common case needs no rounding: |acc| fits the significand of a plain register (signed,
    with zero and subnormals) and the unit its grid (always so for the H100 model: 14 + 6 <= 24
    bits), the value then being exact in every rounding mode."""
    if not np.isfinite(raw) and _special(part, a, b, i, j, g0, g1):
        return add_round(raw, 0.0, fd, index)
    d = fd[0]
    plain = (d[fk.SUBNORMALS] != 0) & (d[fk.NO_ZERO] == 0) & (d[fk.SIGN_BIT] != 0)
    if plain & (abs(acc) < (np.int64(1) << (d[fk.MBITS] + 1))) \
            & (unit >= max(d[fk.EMIN] - d[fk.MBITS], -1022)) & (unit <= 1023):
        v = np.float64(acc) * fk.pow2(unit)             # exact: on the register's grid
        if abs(v) <= fd[2][fk.SP_MAX_VALUE]:
            return v, False
    hi = np.float64(acc)
    lo = np.float64(acc - np.int64(hi))
    return add_round(math.ldexp(hi, unit), math.ldexp(lo, unit), fd, index)


@njit(inline="always")
def _keep(v, unit_exp, rnd):
    """``v`` in units of 2**unit_exp, rounded to an integer: to nearest even (``rnd``) or toward
    zero.  |v| < 2**(unit_exp + 48).  The quotient is two products by normal powers of two (a
    libm ldexp call here kept the aligned loops from vectorising): exact for every term whose
    quotient reaches 1/2 (the first product is then >= 2**-562); smaller ones may lose bits in
    a subnormal first product but still round to 0.  Exponents beyond +-2044 (clamped) only
    occur for all-zero groups."""
    e = min(max(-unit_exp, -2044), 2046)
    h = e // 2
    q = (v * fk.pow2(h)) * fk.pow2(e - h)
    q = np.rint(q) if rnd else np.trunc(q)
    return np.int64(q) if np.isfinite(v) else np.int64(0)


# ---- exact (Kulisch) accumulation -------------------------------------------------------------
@njit(inline="always")
def _kulisch_add(q, v, lsb):
    """q += v for a finite nonzero float64 v that is a multiple of 2**lsb."""
    sig, ex = significand_exponent(f64_to_bits(v))
    add_scaled(q, v < 0, sig, ex - 52 - lsb)


@njit
def kulisch_value(q, lsb, fd, index):
    """The value of the digits q (times 2**lsb) rounded once into ``fd`` (q is clobbered)."""
    neg = to_magnitude(q)
    if not q.any():
        return 0.0, False
    sig, top_bit = leading_bits(q)
    scale = top_bit - 63 + lsb                          # sig * 2**scale, sticky in bit 0
    hi = math.ldexp(np.float64(sig >> np.uint64(11)), scale + 11)
    lo = math.ldexp(np.float64(sig & np.uint64(0x7FF)), scale)
    s = hi + lo
    e = lo - (s - hi)                                   # FastTwoSum: s + e == hi + lo
    if neg:
        s, e = -s, -e
    return finish(fk.round_pair(s, e, fd[0], fd[1], fd[4], fd[5], index, fd[6]), fd)


@njit(parallel=True)
def exact_matmul(a, b, out, stats, n_digits, lsb, fd):
    """Kulisch accumulation: every product added exactly into digits of 32 bits (carries
    propagated every 2**29 additions), the sum rounded once into ``fd``.  Non-finite products
    follow IEEE: NaN, or Inf + -Inf, gives NaN; an Inf gives that Inf."""
    m, kk = a.shape
    n = b.shape[1]
    for i in prange(m):
        q = np.zeros((n, n_digits), dtype=np.int64)
        pinf = np.zeros(n, dtype=np.bool_)
        ninf = np.zeros(n, dtype=np.bool_)
        nan = np.zeros(n, dtype=np.bool_)
        signed = np.zeros(n, dtype=np.bool_)   # a product other than +0 was added
        for k in range(kk):
            av = a[i, k]
            for j in range(n):
                v = av * b[k, j]
                signed[j] |= (v != 0.0) | np.signbit(v)
                if np.isfinite(v):
                    if v != 0.0:
                        _kulisch_add(q[j], v, lsb)
                else:
                    nan[j] |= v != v
                    pinf[j] |= v > 0
                    ninf[j] |= v < 0
            if (k + 1) % (1 << 29) == 0:
                for j in range(n):
                    normalize(q[j])
        over = 0
        sat = 0
        for j in range(n):
            if nan[j] or (pinf[j] and ninf[j]):
                out[i, j] = np.nan
            elif pinf[j] or ninf[j]:
                out[i, j] = round_value(np.inf if pinf[j] else -np.inf, fd, 0)[0]
            else:
                v, beyond = kulisch_value(q[j], lsb, fd, i * n + j)
                if v == 0.0 and signed[j] and fd[4] == TOWARD_NEGATIVE:
                    v = -0.0                    # IEEE: an exact zero sum is -0 rounding down
                over += beyond & (not fd[7])
                sat += beyond & fd[7]
                out[i, j] = v
        stats[i, ST_OVERFLOW] = over
        stats[i, ST_SATURATED] = sat


def float_plan(fmt, rounding_mode: int, key: np.uint64, sr_bits: int, overflow: int) -> tuple:
    """The tuple the kernels take for a float register: (descriptor, special codes with the
    overflow results replaced by markers, special values, overflow threshold, mode, key,
    sr_bits, saturates, tie_overflows).  Nearest-even overflows when |x| exceeds the threshold
    (the midpoint between max and the next value an unbounded exponent would give), or equals it
    and max is odd.  The first three are arrays: Numba's parallel loops cannot take tuples
    nested in tuples."""
    d = fmt._desc
    sp = list(fk.special_codes(d, rounding_mode, overflow))
    sp[fk.SP_OVF_POS], sp[fk.SP_OVF_NEG] = _OVF_POS, _OVF_NEG
    top = float(fmt.max)
    ulp = 2.0 ** (math.floor(math.log2(top)) - fmt.mbits)
    odd_max = (int(d[fk.MAX_MAG]) & 1) == 1
    return (np.array(d, dtype=np.int64), np.array(sp, dtype=np.int64),
            np.array(fk.special_values(d, rounding_mode, overflow), dtype=np.float64),
            top + ulp / 2, np.int64(rounding_mode), np.uint64(key), np.int64(sr_bits),
            overflow == SATURATE, odd_max)


@njit(parallel=True)
def scale_all(x, t, cd):
    """x[i] = x[i] * t rounded once into ``cd`` (a per-tensor scale applied to the results);
    returns how many of those roundings overflowed."""
    over = 0
    for i in prange(x.shape[0]):
        v, beyond, _ = add_scaled_round(0.0, x[i], t, cd, i)
        x[i] = v
        over += beyond
    return over
