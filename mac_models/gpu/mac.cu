// Kernels of the MAC models (twins of mac_models/kernels.py): one thread per output element
// (i, j) = (e / n, e % n) running that output's K loop in the model's order.  a is (M, K), b is
// (K, N), row-major.  stats is (M, NS_N_STATS) int64 and peak (M,) float64, both zeroed by the
// caller; each output adds its counters into its row (ns_count) and its largest |register| into
// the row's peak (ns_max_abs on the bit pattern), so the sums and maxima equal the CPU's.  Plans
// are packed arrays (see mac.cuh, ns_plan_make).
#include "mac.cuh"

#define NS_PAIRWISE_LEVELS 64

// Per-thread closing of a float output: its value, its row's counters and peak.
NS_HD void ns_end_output(double* out, u64* stats, u64* peak, i64 e, i64 i, double total,
                         const ns_stats* st, double top) {
    out[e] = total;
    ns_stats_flush(st, stats, i);
    ns_max_abs(peak + i, top);
}

// kernels.float_matmul_nearest (fast != 0) and float_matmul_bitwise / _bitwise_rest (fast == 0:
// the general exact rounding, the same bits).
NS_KERNEL void mac_float_matmul(i64 n_el, const double* a, const double* b, double* out,
                                u64* stats, u64* peak, i64 kk, i64 n, i64 seg, const i64* fdi,
                                const double* fdv, i64 kahan, const i64* pfi, const double* pfv,
                                i64 use_pf, const i64* cdi, const double* cdv, i64 combine,
                                const double* sa, const double* sb, i64 n_seg, i64 fast) {
    ns_plan fd = ns_plan_make(fdi, fdv);
    ns_plan pf = ns_plan_make(pfi, pfv);
    ns_combine cb = {sa, sb, n_seg, ns_plan_make(cdi, cdv)};
    NS_FOR(e, n_el) {
        i64 i = e / n, j = e % n;
        ns_stats st;
        ns_stats_clear(&st);
        double total = 0.0, top = 0.0;
        for (i64 k0 = 0; k0 < kk; k0 += seg) {
            double part = 0.0, comp = 0.0;
            for (i64 k = k0; k < ns_min(kk, k0 + seg); ++k) {
                i64 idx = (i * n + j) * kk + k;
                double p = ns_product(a[i * kk + k], b[k * n + j], &pf, use_pf != 0, idx, &st);
                double old = part, nw;
                bool beyond;
                if (kahan) {
                    bool by, bt, bd, bc;
                    double y = ns_add_float(p, -comp, &fd, 4 * idx, fast != 0, &by);
                    double t = ns_add_float(old, y, &fd, 4 * idx + 1, fast != 0, &bt);
                    double dd = ns_add_float(t, -old, &fd, 4 * idx + 2, fast != 0, &bd);
                    comp = ns_add_float(dd, -y, &fd, 4 * idx + 3, fast != 0, &bc);
                    nw = t;
                    beyond = by || bt || bd;
                } else {
                    nw = ns_add_float(old, p, &fd, idx, fast != 0, &beyond);
                }
                ns_count_add(&st, old, nw, p, beyond, fd.saturates);
                part = nw;
                top = ns_larger(ns_fabs(nw), top);
            }
            if (combine)
                total = ns_combine_one(total, part, 1.0, &cb, i, j, n, k0 / seg, kk, &st, &top);
            else
                total = part;
        }
        ns_end_output(out, stats, peak, e, i, total, &st, top);
    }
}

// One addition of the pairwise tree: left + right at level lev, the left node starting at leaf
// start (kernels.float_pairwise's buf[2t] + buf[2t + 1], index node + t).
NS_HD double ns_pairwise_add(double left, double right, i64 lev, i64 start, const i64* node,
                             i64 base, const ns_plan* fd, ns_stats* st, double* top) {
    bool beyond;
    double nw = ns_add_round(left, right, fd, base + node[lev] + (start >> (lev + 1)), &beyond);
    ns_count_pair(st, left, right, nw, beyond, fd->saturates);
    *top = ns_larger(ns_fabs(nw), *top);
    return nw;
}

// kernels.float_pairwise, streamed: the level-by-level tree (an odd last node moves up) built
// with a stack of aligned subtrees, as a binary counter; each addition keeps the CPU's index.
NS_KERNEL void mac_float_pairwise(i64 n_el, const double* a, const double* b, double* out,
                                  u64* stats, u64* peak, i64 kk, i64 n, const i64* fdi,
                                  const double* fdv, const i64* pfi, const double* pfv,
                                  i64 use_pf) {
    ns_plan fd = ns_plan_make(fdi, fdv);
    ns_plan pf = ns_plan_make(pfi, pfv);
    i64 node[NS_PAIRWISE_LEVELS];                // additions before each level
    node[0] = 0;
    for (i64 lev = 0, width = kk; lev + 1 < NS_PAIRWISE_LEVELS; ++lev) {
        node[lev + 1] = node[lev] + width / 2;
        width = width / 2 + width % 2;
    }
    NS_FOR(e, n_el) {
        i64 i = e / n, j = e % n;
        i64 base = (i * n + j) * kk;
        ns_stats st;
        ns_stats_clear(&st);
        double top = 0.0;
        double val[NS_PAIRWISE_LEVELS];
        i64 lev[NS_PAIRWISE_LEVELS], start[NS_PAIRWISE_LEVELS];
        i64 sp = 0;
        for (i64 k = 0; k < kk; ++k) {
            val[sp] = ns_product(a[i * kk + k], b[k * n + j], &pf, use_pf != 0, base + k, &st);
            lev[sp] = 0;
            start[sp] = k;
            ++sp;
            while (sp >= 2 && lev[sp - 1] == lev[sp - 2]) {
                val[sp - 2] = ns_pairwise_add(val[sp - 2], val[sp - 1], lev[sp - 2],
                                              start[sp - 2], node, base, &fd, &st, &top);
                lev[sp - 2] += 1;
                --sp;
            }
        }
        for (; sp >= 2; --sp) {                  // the right edge: carried nodes join their left
            val[sp - 2] = ns_pairwise_add(val[sp - 2], val[sp - 1], lev[sp - 2], start[sp - 2],
                                          node, base, &fd, &st, &top);
            lev[sp - 2] += 1;
        }
        if (kk == 1)                             // a lone product enters the register as 0 + p
            val[0] = ns_pairwise_add(0.0, val[0], 0, 0, node, base, &fd, &st, &top);
        ns_end_output(out, stats, peak, e, i, val[0], &st, top);
    }
}

// kernels.int_matmul: integer register [lo, hi], wrapping or saturating; with combine, segment
// sums times unit and the scales go into the float register cd (totals), else out = integers.
NS_KERNEL void mac_int_matmul(i64 n_el, const i64* a, const i64* b, i64* out, double* totals,
                              u64* stats, u64* peak, i64 kk, i64 n, i64 seg, i64 lo, i64 hi,
                              i64 saturate, double unit, const i64* cdi, const double* cdv,
                              i64 combine, const double* sa, const double* sb, i64 n_seg) {
    ns_combine cb = {sa, sb, n_seg, ns_plan_make(cdi, cdv)};
    NS_FOR(e, n_el) {
        i64 i = e / n, j = e % n;
        ns_stats st;
        ns_stats_clear(&st);
        i64 part = 0, top = 0;
        u64 events = 0;
        double total = 0.0, ftop = 0.0;
        for (i64 k0 = 0; k0 < kk; k0 += seg) {
            part = 0;
            for (i64 k = k0; k < ns_min(kk, k0 + seg); ++k) {
                bool changed;
                part = ns_int_add(part, a[i * kk + k] * b[k * n + j], lo, hi, saturate != 0,
                                  &changed);
                events += (u64)changed;
                top = ns_max(part < 0 ? -part : part, top);
            }
            if (combine)
                total = ns_combine_one(total, (double)part, unit, &cb, i, j, n, k0 / seg, kk, &st,
                                       &ftop);
        }
        if (combine)
            totals[e] = total;
        else
            out[e] = part;
        st.c[saturate ? NS_ST_SATURATED : NS_ST_OVERFLOW] += events;
        ns_stats_flush(&st, stats, i);
        double itop = (double)top * unit;
        ns_max_abs(peak + i, itop >= ftop ? itop : ftop);
    }
}

// kernels.int32_wrap_matmul: the int32 wrapping register in native 32-bit arithmetic.
NS_KERNEL void mac_int32_wrap_matmul(i64 n_el, const int* a, const int* b, i64* out, u64* stats,
                                     u64* peak, i64 kk, i64 n) {
    NS_FOR(e, n_el) {
        i64 i = e / n, j = e % n;
        int acc = 0, hi = 0, lo = 0;
        u64 events = 0;
        for (i64 k = 0; k < kk; ++k) {
            int p = (int)((i64)a[i * kk + k] * (i64)b[k * n + j]);
            int old = acc;
            int nw = (int)(u32)((u32)old + (u32)p);
            events += (u64)(((old ^ nw) & (p ^ nw)) < 0);
            acc = nw;
            hi = nw > hi ? nw : hi;
            lo = nw < lo ? nw : lo;
        }
        out[e] = (i64)acc;
        ns_count(stats + i * NS_N_STATS + NS_ST_OVERFLOW, events);
        ns_max_abs(peak + i, (double)ns_max((i64)hi, -(i64)lo));
    }
}

// One group of kernels.aligned_matmul for one output: products g0..g1 and the running sum
// aligned to their largest binade, kept to p bits, summed exactly and rounded into fd.
NS_HD double ns_aligned_group(double part, const double* a, const double* b, i64 i, i64 j, i64 n,
                              i64 kk, i64 g0, i64 g1, i64 p, bool rnd, const ns_plan* fd,
                              ns_stats* st) {
    i64 big_e = ns_binade(part);
    double raw = part;
    bool bad = !ns_isfinite(part);
    for (i64 k = g0; k < g1; ++k) {
        double v = a[i * kk + k] * b[k * n + j];
        big_e = ns_max(big_e, ns_binade(v));
        raw += v;
        bad |= !ns_isfinite(v);
    }
    i64 unit = big_e - p + 1;
    i64 acc = ns_keep(part, unit, rnd);
    for (i64 k = g0; k < g1; ++k) {
        double v = a[i * kk + k] * b[k * n + j];
        i64 t = ns_keep(v, unit, rnd);
        st->c[NS_ST_SWAMPED] += (u64)((v != 0.0) && (t == 0) && !bad);
        acc += t;
    }
    double hi = (double)acc;
    double lo = (double)(acc - (i64)hi);
    hi = ldexp(hi, (int)unit);
    lo = ldexp(lo, (int)unit);
    if (bad) {
        hi = raw;
        lo = 0.0;
    }
    bool beyond;
    double nw = ns_add_round(hi, lo, fd, (i * n + j) * kk + g0, &beyond);
    ns_tally(st, beyond, fd->saturates);
    return nw;
}

// kernels.aligned_matmul: the tensor-core multi-term adder in groups of `group` products.
NS_KERNEL void mac_aligned_matmul(i64 n_el, const double* a, const double* b, double* out,
                                  u64* stats, u64* peak, i64 kk, i64 n, i64 seg, i64 group,
                                  i64 p, i64 rnd, const i64* fdi, const double* fdv,
                                  const i64* cdi, const double* cdv, i64 combine,
                                  const double* sa, const double* sb, i64 n_seg) {
    ns_plan fd = ns_plan_make(fdi, fdv);
    ns_combine cb = {sa, sb, n_seg, ns_plan_make(cdi, cdv)};
    NS_FOR(e, n_el) {
        i64 i = e / n, j = e % n;
        ns_stats st;
        ns_stats_clear(&st);
        double total = 0.0, top = 0.0;
        for (i64 k0 = 0; k0 < kk; k0 += seg) {
            double part = 0.0;
            i64 k_end = ns_min(kk, k0 + seg);
            for (i64 g0 = k0; g0 < k_end; g0 += group) {
                part = ns_aligned_group(part, a, b, i, j, n, kk, g0, ns_min(k_end, g0 + group),
                                        p, rnd != 0, &fd, &st);
                top = ns_larger(ns_fabs(part), top);
            }
            if (combine)
                total = ns_combine_one(total, part, 1.0, &cb, i, j, n, k0 / seg, kk, &st, &top);
            else
                total = part;
        }
        ns_end_output(out, stats, peak, e, i, total, &st, top);
    }
}

// kernels.exact_matmul for outputs e0 .. e0 + n_el - 1: Kulisch digits (nd per output, in the
// zeroed scratch q) rounded once into fd; IEEE for non-finite products.
NS_KERNEL void mac_exact_matmul(i64 n_el, i64 e0, const double* a, const double* b, double* out,
                                u64* stats, i64* q, i64 kk, i64 n, i64 nd, i64 lsb,
                                const i64* fdi, const double* fdv) {
    ns_plan fd = ns_plan_make(fdi, fdv);
    NS_FOR(local, n_el) {
        i64 e = e0 + local;
        i64 i = e / n, j = e % n;
        i64* qj = q + local * nd;
        bool pinf = false, ninf = false, nan = false, is_signed = false;
        for (i64 k = 0; k < kk; ++k) {
            double v = a[i * kk + k] * b[k * n + j];
            is_signed |= (v != 0.0) || ns_signbit(v);
            if (ns_isfinite(v)) {
                if (v != 0.0) ns_kulisch_add(qj, v, lsb);
            } else {
                nan |= v != v;
                pinf |= v > 0;
                ninf |= v < 0;
            }
            if ((k + 1) % (1LL << 29) == 0) ns_q_normalize(qj, nd);
        }
        bool beyond = false;
        double v;
        if (nan || (pinf && ninf)) {
            v = ns_nan();
        } else if (pinf || ninf) {
            v = ns_round_value(pinf ? ns_inf() : -ns_inf(), &fd, 0, &beyond);
            beyond = false;
        } else {
            v = ns_kulisch_value(qj, nd, lsb, &fd, i * n + j, &beyond);
            if (v == 0.0 && is_signed && fd.mode == NS_TOWARD_NEGATIVE) v = -0.0;
        }
        out[e] = v;
        ns_count(stats + i * NS_N_STATS + NS_ST_OVERFLOW, (u64)(beyond && !fd.saturates));
        ns_count(stats + i * NS_N_STATS + NS_ST_SATURATED, (u64)(beyond && fd.saturates));
    }
}

// kernels.scale_all: x[i] = x[i] * t rounded once into cd; over counts the overflows.
NS_KERNEL void mac_scale_all(i64 n_el, double* x, double t, const i64* cdi, const double* cdv,
                             u64* over) {
    ns_plan cd = ns_plan_make(cdi, cdv);
    NS_FOR(i, n_el) {
        bool beyond;
        double prod;
        x[i] = ns_add_scaled_round(0.0, x[i], t, &cd, i, &beyond, &prod);
        ns_count(over, (u64)beyond);
    }
}

// quire._pack_kernel: packed words of posit codes (widened to int64).
NS_KERNEL void mac_quire_pack(i64 n_el, const i64* codes, i64* out, const i64* d) {
    NS_FOR(i, n_el) out[i] = ns_quire_pack(codes[i], d);
}

// quire._fused_dot_kernel for C = A @ B on packed words: a (M, K), bt = B transposed (N, K);
// outputs e0 .. e0 + n_el - 1, each through its own quire of nd digits in the zeroed scratch q.
NS_KERNEL void mac_quire_matmul(i64 n_el, i64 e0, const i64* a, const i64* bt, i64* out, i64* q,
                                i64 kk, i64 n, const i64* d, i64 nd, i64 width, i64 mode,
                                u64 key, i64 sr_bits) {
    i64 base = 2 * ns_posit_emax(d) - 60 - 2 * NS_Q_E_BIAS;
    NS_FOR(local, n_el) {
        i64 e = e0 + local;
        i64 i = e / n, j = e % n;
        i64* qe = q + local * nd;
        i64 nar = 0, count = 0;
        for (i64 k = 0; k < kk; ++k) {
            i64 wa = a[i * kk + k], wb = bt[j * kk + k];
            u64 prod = (u64)((wa & NS_Q_M31) * (wb & NS_Q_M31));
            i64 pos = ((wa >> 32) & 0xFFFF) + ((wb >> 32) & 0xFFFF) + base;
            ns_q_add_scaled(qe, (((wa ^ wb) >> 31) & 1) != 0, prod, pos);
            nar |= wa | wb;
            if (++count == NS_Q_NORMALIZE_EVERY) {
                ns_q_normalize(qe, nd);
                count = 0;
            }
        }
        ns_q_normalize(qe, nd);
        out[e] = ns_quire_round(qe, nd, ((nar >> 48) & 1) != 0, d, width, mode, key, e, sr_bits);
    }
}
