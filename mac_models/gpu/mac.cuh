// Per-MAC arithmetic of the accumulator models: the CUDA/C++ twin of mac_models/kernels.py (same
// names without the leading underscore, same operations in the same order).  Each function works
// on one output element; the kernels in mac.cu loop over K.
//
// A float register is described by a plan (kernels.float_plan) packed by the adapter into two
// arrays: pi = descriptor (NS_PLAN_D fields), special codes with the overflow markers, mode, key,
// sr_bits, saturates, odd_max; pv = special values, overflow threshold.
#pragma once
#include "float_codec.cuh"
#include "posit_codec.cuh"

enum { NS_ST_OVERFLOW, NS_ST_SATURATED, NS_ST_SWAMPED, NS_N_STATS };
#define NS_NO_BINADE (-100000)
#define NS_OVF_POS (-2)
#define NS_OVF_NEG (-3)
// Offsets in the packed plan arrays (see mac_models/gpu/kernels.py, _pack_plan).
#define NS_PLAN_D 10
#define NS_PLAN_SP 8
#define NS_PLAN_SPV 9

struct ns_plan {
    const i64* d;
    const i64* sp;
    const double* spv;
    double top;          // the nearest-even overflow threshold
    i64 mode;
    u64 key;
    i64 sr_bits;
    bool saturates;
    bool odd_max;
};

NS_HD ns_plan ns_plan_make(const i64* pi, const double* pv) {
    ns_plan p;
    p.d = pi;
    p.sp = pi + NS_PLAN_D;
    p.mode = pi[NS_PLAN_D + NS_PLAN_SP];
    p.key = (u64)pi[NS_PLAN_D + NS_PLAN_SP + 1];
    p.sr_bits = pi[NS_PLAN_D + NS_PLAN_SP + 2];
    p.saturates = pi[NS_PLAN_D + NS_PLAN_SP + 3] != 0;
    p.odd_max = pi[NS_PLAN_D + NS_PLAN_SP + 4] != 0;
    p.spv = pv;
    p.top = pv[NS_PLAN_SPV];
    return p;
}

// Event counters of one output (kernels' st[:, j]).
struct ns_stats {
    u64 c[NS_N_STATS];
};

NS_HD void ns_stats_clear(ns_stats* st) {
    for (int s = 0; s < NS_N_STATS; ++s) st->c[s] = 0;
}

// Adds one output's counters into its row's (stats is (M, NS_N_STATS) int64, read as u64).
NS_HD void ns_stats_flush(const ns_stats* st, u64* stats, i64 row) {
    for (int s = 0; s < NS_N_STATS; ++s) ns_count(stats + row * NS_N_STATS + s, st->c[s]);
}

NS_HD double ns_larger(double x, double y) { return x > y ? x : y; }

// kernels.finish: the value of a round_pair code with the plan's specials; *beyond = overflowed.
NS_HD double ns_mac_finish(i64 code, const ns_plan* fd, bool* beyond) {
    double v = ns_float_decode_one(ns_max(code, 0), fd->d);
    if (code < 0) v = ns_nan();
    if (code == NS_OVF_POS) v = fd->spv[NS_SP_OVF_POS];
    if (code == NS_OVF_NEG) v = fd->spv[NS_SP_OVF_NEG];
    *beyond = code <= NS_OVF_POS;
    return v;
}

NS_HD i64 ns_mac_round_pair(double s, double e, const ns_plan* fd, i64 index) {
    return ns_float_round_pair(s, e, fd->d, fd->sp, fd->mode, fd->key, index, fd->sr_bits);
}

// kernels.add_round: acc + x rounded once into fd.
NS_HD double ns_add_round(double acc, double x, const ns_plan* fd, i64 index, bool* beyond) {
    double s, e;
    ns_two_sum(acc, x, &s, &e);
    s = ns_exact_zero_sign(acc, x, s, fd->mode);
    return ns_mac_finish(ns_mac_round_pair(s, e, fd, index), fd, beyond);
}

// kernels.odd_sum: a + b rounded to odd in float64.
NS_HD double ns_odd_sum(double a, double b) {
    double s = a + b;
    double bp = s - a;
    double e = (a - (s - bp)) + (b - bp);
    u64 bits = ns_f64_bits(s);
    bool fix = (e != 0.0) && (bits & 1ULL) == 0ULL && ns_isfinite(e);
    bool grow = (e > 0) == (s > 0);
    return ns_bits_f64(bits + (u64)(fix && grow) - (u64)(fix && !grow));
}

// kernels.add_nearest_even
NS_HD double ns_add_nearest_even(double acc, double x, const ns_plan* fd, bool* beyond) {
    double odd = ns_odd_sum(acc, x);
    double big = ns_fabs(odd);
    *beyond = (big > fd->top) || ((big == fd->top) && fd->odd_max);
    return ns_float_quantize_ne_one(odd, fd->d, fd->spv);
}

NS_HD double ns_add_float(double acc, double x, const ns_plan* fd, i64 index, bool fast,
                          bool* beyond) {
    if (fast) return ns_add_nearest_even(acc, x, fd, beyond);
    return ns_add_round(acc, x, fd, index, beyond);
}

// kernels.round_value: x (exact in float64) rounded into fd; NaN passes through.
NS_HD double ns_round_value(double x, const ns_plan* fd, i64 index, bool* beyond) {
    if (x == x) return ns_add_round(0.0, x, fd, index, beyond);
    *beyond = false;
    return x;
}

// kernels.exact_product: a * b as an exact pair h + l (TwoProduct of the significands, then
// their powers of two), for e = the sum of the frexp exponents in [-898, 600]; for e > 600 it
// is (+-2**600, 0), for e < -898 (+-2**-1074, 0); zero, infinite and NaN operands give (a * b, 0).
NS_HD void ns_exact_product(double a, double b, double* h, double* l) {
    *l = 0.0;
    if (a == 0.0 || b == 0.0 || !ns_isfinite(a) || !ns_isfinite(b)) {
        *h = a * b;
        return;
    }
    i64 ea, eb;
    double ma = ns_frexp(a, &ea);
    double mb = ns_frexp(b, &eb);
    ns_two_product(ma, mb, h, l);                       // 0.25 <= |h| <= 1
    i64 ex = ea + eb;
    if (ex > 600 || ex < -898) {
        *h = ns_copysign(ex > 600 ? ns_pow2(600) : ns_bits_f64(1), *h);   // 2**600 or 5e-324
        *l = 0.0;
        return;
    }
    double f = ns_pow2(ex);                             // exact: h * f >= 2**-900
    *h *= f;
    *l *= f;
}

// kernels.add_scaled_round: acc + part * scale rounded once into fd; *x = the product's high
// word as ns_exact_product gives it.
NS_HD double ns_add_scaled_round(double acc, double part, double scale, const ns_plan* fd,
                                 i64 index, bool* beyond, double* x) {
    double h, l;
    ns_exact_product(part, scale, &h, &l);
    if (l == 0.0) {                 // an exact product (the only way to an exact zero sum)
        *x = h;
        return ns_add_round(acc, h, fd, index, beyond);
    }
    double s1, e1, s2, e2;
    ns_two_sum(acc, h, &s1, &e1);   // the sum is nonzero from here on
    ns_two_sum(e1, l, &s2, &e2);
    double s3 = s1 + s2;
    double e3 = s2 - (s3 - s1);
    if (!ns_isfinite(s3)) {
        s3 = s1;
        e3 = 0.0;
        e2 = 0.0;
    }
    double t = ns_odd_sum(e3, e2);
    *x = h;
    return ns_mac_finish(ns_mac_round_pair(s3, t, fd, index), fd, beyond);
}

// kernels._tally
NS_HD void ns_tally(ns_stats* st, bool beyond, bool saturates) {
    st->c[NS_ST_OVERFLOW] += (u64)(beyond && !saturates);
    st->c[NS_ST_SATURATED] += (u64)(beyond && saturates);
}

// kernels._count: the statistics of one addition old + x -> new.
NS_HD void ns_count_add(ns_stats* st, double old, double nw, double x, bool beyond,
                        bool saturates) {
    bool finite_in = ns_isfinite(old) && ns_isfinite(x);
    st->c[NS_ST_SWAMPED] += (u64)((x != 0.0) && (nw == old) && finite_in);
    ns_tally(st, beyond && finite_in, saturates);
}

// kernels._count_pair: the statistics of one tree addition x + y -> nw (either operand lost).
NS_HD void ns_count_pair(ns_stats* st, double x, double y, double nw, bool beyond,
                         bool saturates) {
    bool finite_in = ns_isfinite(x) && ns_isfinite(y);
    bool lost = (y != 0.0 && nw == x) || (x != 0.0 && nw == y);
    st->c[NS_ST_SWAMPED] += (u64)(lost && finite_in);
    ns_tally(st, beyond && finite_in, saturates);
}

// Segment scales and the promotion register (kernels._combine's arguments).
struct ns_combine {
    const double* sa;    // (M, n_seg)
    const double* sb;    // (n_seg, N)
    i64 n_seg;
    ns_plan cd;
};

// One output of kernels._combine: total += part * unit * sa[i, seg] * sb[seg, j], rounded once.
NS_HD double ns_combine_one(double total, double part, double unit, const ns_combine* cb, i64 i,
                            i64 j, i64 n, i64 seg_no, i64 kk, ns_stats* st, double* top) {
    double x_scale = unit * cb->sa[i * cb->n_seg + seg_no] * cb->sb[seg_no * n + j];
    bool beyond;
    double x;
    double nw = ns_add_scaled_round(total, part, x_scale, &cb->cd, (i * n + j) * kk + seg_no,
                                    &beyond, &x);
    ns_count_add(st, total, nw, x, beyond, cb->cd.saturates);
    *top = ns_larger(ns_fabs(nw), *top);
    return nw;
}

// kernels._product: one product, rounded into pf when use_pf.
NS_HD double ns_product(double av, double bv, const ns_plan* pf, bool use_pf, i64 index,
                        ns_stats* st) {
    double p = av * bv;
    if (use_pf) {
        bool beyond;
        p = ns_round_value(p, pf, index, &beyond);
        ns_tally(st, beyond, pf->saturates);
    }
    return p;
}

// kernels._int_add: acc + x wrapped or clamped to [lo, hi]; *changed = it left the range.
NS_HD i64 ns_int_add(i64 acc, i64 x, i64 lo, i64 hi, bool saturate, bool* changed) {
    i64 s = acc + x;
    *changed = (s > hi) || (s < lo);
    i64 wrapped = ((s - lo) & (hi - lo)) + lo;
    i64 clamped = ns_min(ns_max(s, lo), hi);
    return saturate ? clamped : wrapped;
}

// kernels._binade: floor(log2|v|), NS_NO_BINADE for zero and non-finite values.
NS_HD i64 ns_binade(double v) {
    u64 sig;
    i64 ex;
    ns_significand_exponent(ns_f64_bits(v), &sig, &ex);
    return (v != 0.0 && ns_isfinite(v)) ? ex - (ns_clz64(sig) - 11) : NS_NO_BINADE;
}

// kernels._keep: v in units of 2**unit_exp, rounded to nearest even (rnd) or toward zero.
NS_HD i64 ns_keep(double v, i64 unit_exp, bool rnd) {
    if (!ns_isfinite(v)) return 0;
    double q = ns_ldexp(v, -unit_exp);
    q = rnd ? ns_rint(q) : trunc(q);
    return (i64)q;
}

// ---- Kulisch digits (formats/quire.py) ------------------------------------------------------
// quire.add_scaled: q += (-1)**neg * m * 2**pos.
NS_HD void ns_q_add_scaled(i64* q, bool neg, u64 m, i64 pos) {
    if (pos < 0) {
        m >>= (u64)(-pos);
        pos = 0;
    }
    i64 j = pos >> 5;
    u64 b = (u64)(pos & 31);
    i64 lo = (i64)((m << b) & 0xFFFFFFFFULL);
    i64 mid = (i64)((m >> (32 - b)) & 0xFFFFFFFFULL);
    i64 hi = (i64)((m >> 32) >> (32 - b));
    if (neg) {
        lo = -lo;
        mid = -mid;
        hi = -hi;
    }
    q[j] += lo;
    q[j + 1] += mid;
    q[j + 2] += hi;
}

// quire.normalize: propagate carries.
NS_HD void ns_q_normalize(i64* q, i64 nd) {
    i64 carry = 0;
    for (i64 i = 0; i < nd - 1; ++i) {
        i64 v = q[i] + carry;
        q[i] = v & 0xFFFFFFFFLL;
        carry = v >> 32;
    }
    q[nd - 1] += carry;
}

// quire.to_magnitude: normalise and negate a negative value; true if it was negative.
NS_HD bool ns_q_to_magnitude(i64* q, i64 nd) {
    ns_q_normalize(q, nd);
    bool neg = q[nd - 1] < 0;
    if (neg) {
        for (i64 i = 0; i < nd; ++i) q[i] = -q[i];
        ns_q_normalize(q, nd);
    }
    return neg;
}

NS_HD bool ns_q_any(const i64* q, i64 nd) {
    for (i64 i = 0; i < nd; ++i)
        if (q[i] != 0) return true;
    return false;
}

// quire.leading_bits: the 64 leading bits (sticky in bit 0) and the leading bit's position.
NS_HD u64 ns_q_leading_bits(const i64* q, i64 nd, i64* top_bit) {
    i64 t = nd - 1;
    while (q[t] == 0) t -= 1;
    t = ns_max(t, 1);
    u64 hi = ((u64)q[t] << 32) | (u64)q[t - 1];
    u64 lo = t >= 2 ? ((u64)q[t - 2] << 32) : 0ULL;
    lo |= t >= 3 ? (u64)q[t - 3] : 0ULL;
    bool sticky = false;
    for (i64 i = 0; i < t - 3; ++i) sticky |= q[i] != 0;
    i64 lz = ns_clz64(hi);
    u64 sig = (hi << lz) | ((lo >> 1) >> (63 - lz));
    sticky |= (lo << lz) != 0ULL;
    *top_bit = 32 * (t - 1) - lz + 63;
    return sig | (u64)sticky;
}

// kernels._kulisch_add: q += v for a finite nonzero multiple v of 2**lsb.
NS_HD void ns_kulisch_add(i64* q, double v, i64 lsb) {
    u64 sig;
    i64 ex;
    ns_significand_exponent(ns_f64_bits(v), &sig, &ex);
    ns_q_add_scaled(q, v < 0, sig, ex - 52 - lsb);
}

// kernels.kulisch_value: the digits' value (times 2**lsb) rounded once into fd (q clobbered).
NS_HD double ns_kulisch_value(i64* q, i64 nd, i64 lsb, const ns_plan* fd, i64 index,
                              bool* beyond) {
    bool neg = ns_q_to_magnitude(q, nd);
    *beyond = false;
    if (!ns_q_any(q, nd)) return 0.0;
    i64 top_bit;
    u64 sig = ns_q_leading_bits(q, nd, &top_bit);
    i64 scale = top_bit - 63 + lsb;
    double hi = ns_ldexp((double)(sig >> 11), scale + 11);
    double lo = ns_ldexp((double)(sig & 0x7FFULL), scale);
    double s = hi + lo;
    double e = lo - (s - hi);
    if (neg) {
        s = -s;
        e = -e;
    }
    return ns_mac_finish(ns_mac_round_pair(s, e, fd, index), fd, beyond);
}

// ---- the posit quire (formats/quire.py) -------------------------------------------------------
#define NS_Q_M31 ((1LL << 31) - 1)
#define NS_Q_E_BIAS 1024
#define NS_Q_NORMALIZE_EVERY (1LL << 30)

// quire._pack_kernel (one code): the packed int64 word of a posit code.
NS_HD i64 ns_quire_pack(i64 code, const i64* d) {
    ns_posit_val u = ns_posit_unpack(code, d);
    bool finite = u.kind == NS_P_FINITE;
    i64 m = finite ? (i64)(u.sig >> 33) : 0;
    return m | ((i64)u.neg << 31) | (((finite ? u.e : 0) + NS_Q_E_BIAS) << 32) |
           ((i64)(u.kind == NS_P_NAR) << 48);
}

// quire._round_quire: the code of the quire's value rounded once (q normalised, clobbered).
NS_HD i64 ns_quire_round(i64* q, i64 nd, bool nar, const i64* d, i64 width, i64 mode, u64 key,
                         i64 index, i64 sr_bits) {
    i64 nar_code = 1LL << (d[NS_P_NBITS] - 1);
    if (nar) return nar_code;
    bool neg = ns_q_to_magnitude(q, nd);
    if (!ns_q_any(q, nd)) return 0;
    i64 top_bit;
    u64 sig = ns_q_leading_bits(q, nd, &top_bit);
    if (top_bit > width - 2) return nar_code;
    return ns_posit_round_unpacked(neg, top_bit - 2 * ns_posit_emax(d), sig, d, mode, key, index,
                                   sr_bits);
}
