// Scaled and block formats, per group: the CUDA/C++ twin of formats/scaled_kernels.py (same
// names without the leading underscore, prefixed ns_sc_).  A group's range comes from the order
// keys of its values (their IEEE bits), its scale from one of the rules (floor, ceil, even,
// rceil: E8M0 exponents; amax: a scale rounded into a float format, with a zero point for
// unsigned integers), and each element is rounded once into the element format: floats through
// float_codec.cuh, integers as the all-subnormal float grid of the same spacing then clamped,
// codebooks through codebook_codec.cuh.  The plan array `plan` has the field order of
// scaled_kernels.PLAN (indices NS_SCP_*).
#pragma once
#include "codebook_codec.cuh"
#include "float_codec.cuh"

enum { NS_SC_FLOOR, NS_SC_CEIL, NS_SC_EVEN, NS_SC_RCEIL, NS_SC_AMAX };
enum { NS_SC_FLOAT, NS_SC_INT, NS_SC_CODEBOOK };
enum { NS_SC_CLAMPED = 1, NS_SC_NAN = 2 };
enum { NS_SCP_RULE, NS_SCP_ELEM_KIND, NS_SCP_ELEM_EMAX, NS_SCP_ELEM_PREC, NS_SCP_INT_BITS,
       NS_SCP_INT_QMIN, NS_SCP_INT_QMAX, NS_SCP_ZERO_POINT, NS_SCP_SCALE_NAN, NS_SCP_SCALE_MIN,
       NS_SCP_SCALE_MODE, NS_SCP_SCALE_LO, NS_SCP_SCALE_HI, NS_SCP_FAST, NS_SCP_FAST_SCALE };

// The format side of one call: element and scale descriptors, special codes/values, the
// codebook's sorted values and their codes.
struct NsScFormat {
    const i64* plan;
    double elem_max;
    double tensor_scale;
    const i64* ed;
    const i64* esp;
    const double* espv;
    const i64* sd;
    const i64* ssp;
    const double* sspv;
    const double* table;
    const i64* tcodes;
    i64 n_table;
};

// One group's scale: code, flags (NS_SC_NAN: the group holds NaN or Inf), unit (scale value times
// tensor scale), 1 / unit for power-of-two scales (else 1), zero point.
struct NsScScale {
    i64 scode;
    i64 flag;
    double unit;
    double inv;
    i64 zp;
};

NS_HD double ns_sc_fmin(double a, double b) { return b < a ? b : a; }
NS_HD double ns_sc_fmax(double a, double b) { return b > a ? b : a; }

// (q, t) with q = fl((h + low) / s) and q + t the quotient to about 100 bits (pair_quotient: a
// nonzero dividend below 2**-900 gives +-2**-1000 and t = 0).
NS_HD void ns_sc_pair_quotient(double h, double low, double s, double* q, double* t) {
    *q = h / s;
    *t = 0.0;
    if (ns_fabs(h) < ns_ldexp(1.0, -900) && h != 0.0) {
        *q = ns_copysign(ns_ldexp(1.0, -1000), *q);
        return;
    }
    if (*q == 0.0 || !ns_isfinite(*q)) return;
    double p, pe;
    ns_two_product(*q, s, &p, &pe);
    *t = (((h - p) - pe) + low) / s;
}

// Whether sq + st, below held, the smallest value of a format without zero (e8m0), would round
// below it if the format went on downwards: rounded 2**64 higher (an even shift keeps the codes'
// parity), below held * 2**64 (rounds_below).
NS_HD bool ns_sc_rounds_below(double sq, double st, double held, const i64* sd, const i64* ssp,
                              i64 mode) {
    const double up = ns_ldexp(1.0, 64);
    return ns_float_decode_one(ns_float_round_pair(sq * up, st * up, sd, ssp, mode, 0, 0, 32),
                               sd) < held * up;
}

// Unclamped power-of-two scale exponent of a group with max |x| = amax > 0 (shared_exponent).
NS_HD i64 ns_sc_shared_exponent(double amax, i64 rule, i64 elem_emax, i64 elem_prec,
                                double elem_max) {
    u64 sig;
    i64 ex;
    ns_significand_exponent(ns_f64_bits(amax), &sig, &ex);
    if (rule == NS_SC_CEIL) {
        ex += (i64)((sig & ((1ULL << 52) - 1ULL)) != 0);
    } else if (rule == NS_SC_EVEN && elem_prec < 53) {
        u64 drop = (u64)(53 - elem_prec);
        u64 half = 1ULL << (drop - 1ULL);
        u64 rem = sig & ((1ULL << drop) - 1ULL);
        u64 q = sig >> drop;
        q += (u64)((rem > half) || ((rem == half) && ((q & 1ULL) == 1ULL)));
        ex += (i64)(q >> (u64)elem_prec);
    } else if (rule == NS_SC_RCEIL) {
        u64 msig;
        i64 mex;
        ns_significand_exponent(ns_f64_bits(elem_max), &msig, &mex);   // floor(log2(elem_max))
        i64 e = ex - mex - 1;
        while (ns_ldexp(elem_max, e) < amax) e += 1;
        return e;
    }
    return ex - elem_emax;
}

// The order key of a value given by its IEEE bits: the bits of |x|, negated for x < 0.
NS_HD i64 ns_sc_key(u64 bits, bool is32) {
    u64 shift = is32 ? 31 : 63;
    i64 mag = (i64)(bits & ((1ULL << shift) - 1ULL));
    return (bits >> shift) != 0 ? -mag : mag;
}

// The value whose order key is k.
NS_HD double ns_sc_key_value(i64 k, bool is32) {
    u64 mag = (u64)(k < 0 ? -k : k);
    double v = is32 ? ns_bits_f32(mag) : ns_bits_f64(mag);
    return k < 0 ? -v : v;
}

NS_HD i64 ns_sc_inf_key(bool is32) { return is32 ? 0x7F800000LL : 0x7FF0000000000000LL; }

// The exactly rounded amax-rule scale and the zero point (exact_scale).
NS_HD NsScScale ns_sc_exact_scale(double lo, double hi, const NsScFormat& f) {
    const i64* plan = f.plan;
    double amax = ns_sc_fmax(hi, -lo);
    NsScScale r = {plan[NS_SCP_SCALE_MIN], 0, 0.0, 1.0, 0};
    if (amax > 0.0) {
        double sq, st;
        if (plan[NS_SCP_ZERO_POINT]) {
            double rh, rl;
            ns_two_sum(hi, -lo, &rh, &rl);
            ns_sc_pair_quotient(rh, rl, f.elem_max, &sq, &st);
        } else {
            ns_sc_pair_quotient(amax, 0.0, f.elem_max * f.tensor_scale, &sq, &st);
        }
        r.scode = ns_float_round_pair(sq, st, f.sd, f.ssp, plan[NS_SCP_SCALE_MODE], 0, 0, 32);
        double held = ns_float_decode_one(r.scode, f.sd);
        if (held == 0.0) {
            r.scode = plan[NS_SCP_SCALE_MIN];
            r.flag = NS_SC_CLAMPED;
        } else if (!ns_isfinite(held)) {
            r.scode = f.sd[NS_F_MAX_MAG];
            r.flag = NS_SC_CLAMPED;
        } else if (f.sd[NS_F_NO_ZERO] && sq < held &&
                   ns_sc_rounds_below(sq, st, held, f.sd, f.ssp, plan[NS_SCP_SCALE_MODE])) {
            r.flag = NS_SC_CLAMPED;                   // e8m0: held at its smallest value
        }
    }
    r.unit = ns_float_decode_one(r.scode, f.sd) * f.tensor_scale;
    if (plan[NS_SCP_ZERO_POINT] && lo < 0.0) {
        double zq, zt;
        ns_sc_pair_quotient(-lo, 0.0, r.unit, &zq, &zt);
        double zv = ns_float_decode_one(ns_float_round_pair(zq, zt, f.ed, f.esp, 0, 0, 0, 32),
                                        f.ed);
        r.zp = ns_min((i64)zv, plan[NS_SCP_INT_QMAX]);
    }
    return r;
}

// The scale of a group whose values span [lo, hi] (group_scale); with to_value and fast_scale
// the amax scale is rounded in the value domain and its code is not computed.
NS_HD NsScScale ns_sc_group_scale(double lo, double hi, bool bad, const NsScFormat& f,
                                  bool to_value) {
    const i64* plan = f.plan;
    double amax = ns_sc_fmax(hi, -lo);
    if (bad) return {plan[NS_SCP_SCALE_NAN], NS_SC_NAN, ns_nan(), ns_nan(), 0};
    if (plan[NS_SCP_RULE] != NS_SC_AMAX) {
        i64 ex = plan[NS_SCP_SCALE_LO];
        i64 flag = 0;
        if (amax > 0.0)
            ex = ns_sc_shared_exponent(amax, plan[NS_SCP_RULE], plan[NS_SCP_ELEM_EMAX],
                                       plan[NS_SCP_ELEM_PREC], f.elem_max);
        if (ex < plan[NS_SCP_SCALE_LO] || ex > plan[NS_SCP_SCALE_HI]) {
            flag = NS_SC_CLAMPED;
            ex = ns_min(ns_max(ex, plan[NS_SCP_SCALE_LO]), plan[NS_SCP_SCALE_HI]);
        }
        return {ex - plan[NS_SCP_SCALE_LO], flag, ns_pow2(ex), ns_pow2(-ex), 0};
    }
    i64 scode = plan[NS_SCP_SCALE_MIN];
    if (amax > 0.0 && to_value && plan[NS_SCP_FAST_SCALE] == 1) {
        double v = ns_float_quantize_ne_one(amax / (f.elem_max * f.tensor_scale), f.sd, f.sspv);
        if (v == 0.0)
            return {scode, NS_SC_CLAMPED, ns_float_decode_one(scode, f.sd) * f.tensor_scale, 1.0,
                    0};
        if (!ns_isfinite(v))
            return {scode, NS_SC_CLAMPED, f.sspv[NS_SP_MAX_VALUE] * f.tensor_scale, 1.0, 0};
        return {scode, 0, v * f.tensor_scale, 1.0, 0};
    }
    return ns_sc_exact_scale(lo, hi, f);
}

// The scale of group g from the order keys of its range, narrowed to the calibrated range
// clip[g] = (lo, hi) when clip is not null (scale_from_keys).
NS_HD NsScScale ns_sc_scale_from_keys(i64 k_lo, i64 k_hi, i64 g, bool is32, const double* clip,
                                      const NsScFormat& f, bool to_value) {
    bool bad = ns_max(k_hi, -k_lo) >= ns_sc_inf_key(is32);
    double lo = ns_sc_key_value(k_lo, is32);
    double hi = ns_sc_key_value(k_hi, is32);
    if (clip) {
        lo = ns_sc_fmin(ns_sc_fmax(lo, clip[2 * g]), 0.0);
        hi = ns_sc_fmax(ns_sc_fmin(hi, clip[2 * g + 1]), 0.0);
    }
    return ns_sc_group_scale(lo, hi, bad, f, to_value);
}

// 2**-frac, the spacing of an integer element grid (any float descriptor otherwise).
NS_HD double ns_sc_grid(const i64* ed) { return ns_ldexp(1.0, ed[NS_F_EMIN] - ed[NS_F_MBITS]); }

// The element range [*lo_v, *hi_v] in element units (element_bounds).
NS_HD void ns_sc_element_bounds(const NsScFormat& f, i64 zp, double grid, double* lo_v,
                                double* hi_v) {
    if (f.plan[NS_SCP_ELEM_KIND] == NS_SC_INT) {
        *lo_v = (double)(f.plan[NS_SCP_INT_QMIN] - zp) * grid;
        *hi_v = (double)(f.plan[NS_SCP_INT_QMAX] - zp) * grid;
    } else {
        *lo_v = -f.elem_max;
        *hi_v = f.elem_max;
    }
}

// x / scale in element units: x * 2**-E (power-of-two scales) or the exact quotient (q, *t),
// with a nonzero x that underflowed to 0 kept as the smallest float64 of its sign.
NS_HD double ns_sc_scaled(double xv, bool pow2, const NsScScale& s, double* t) {
    double sv;
    *t = 0.0;
    if (pow2) sv = xv * s.inv; else ns_sc_pair_quotient(xv, 0.0, s.unit, &sv, t);
    return (sv == 0.0) && (xv != 0.0) ? ns_copysign(ns_bits_f64(1), xv) : sv;  // 5e-324
}

// One element rounded exactly in any mode (general_run): *code and *value (element value times
// unit); returns whether its scaled value lay outside [lo_v, hi_v].
NS_HD bool ns_sc_general_one(double xv, i64 index, const NsScFormat& f, const NsScScale& s,
                             double lo_v, double hi_v, i64 mode, u64 key, i64 sr_bits,
                             i64* code, double* value) {
    const i64* plan = f.plan;
    i64 kind = plan[NS_SCP_ELEM_KIND];
    double t;
    double sv = ns_sc_scaled(xv, plan[NS_SCP_RULE] != NS_SC_AMAX, s, &t);
    bool out = (sv < lo_v) || (sv > hi_v);
    i64 c;
    double v;
    if (kind == NS_SC_CODEBOOK) {
        i64 j = ns_codebook_round_index(sv, t, f.table, f.tcodes, f.n_table, mode, key, index,
                                        sr_bits);
        c = f.tcodes[j];
        v = f.table[j];
    } else {
        c = ns_float_round_pair(sv, t, f.ed, f.esp, mode, key, index, sr_bits);
        v = ns_float_decode_one(c, f.ed);
        if (kind == NS_SC_INT) {
            i64 frac = f.ed[NS_F_MBITS] - f.ed[NS_F_EMIN];
            i64 k = (i64)ns_ldexp(v, frac) + s.zp;
            k = ns_min(ns_max(k, plan[NS_SCP_INT_QMIN]), plan[NS_SCP_INT_QMAX]);
            v = ns_ldexp((double)(k - s.zp), -frac);
            c = k & ((1LL << plan[NS_SCP_INT_BITS]) - 1);
        }
    }
    *code = c;
    *value = v * s.unit;
    return out;
}

// sv rounded to nearest-even on the integer grid of spacing grid, clamped to [lo_v, hi_v], as a
// float count of grid steps (grid_int).
NS_HD double ns_sc_grid_int(double sv, double lo_v, double hi_v, double grid) {
    double per_grid = 1.0 / grid;
    return ns_sc_fmin(ns_sc_fmax(ns_rint(sv * per_grid), lo_v * per_grid), hi_v * per_grid);
}

// Nearest-even value or code of one element from the float64 x * 2**-E or x / scale
// (fast_value and fast_code); returns whether it lay outside [lo_v, hi_v].
NS_HD bool ns_sc_fast_one(double xv, const NsScFormat& f, const NsScScale& s, double lo_v,
                          double hi_v, double grid, bool to_value, i64* code, double* value) {
    bool pow2 = f.plan[NS_SCP_RULE] != NS_SC_AMAX;
    double sv = pow2 ? xv * s.inv : xv / s.unit;
    bool out = (sv < lo_v) || (sv > hi_v);
    if (f.plan[NS_SCP_ELEM_KIND] == NS_SC_INT) {
        double k = ns_sc_grid_int(sv, lo_v, hi_v, grid);
        *value = ((k + 0.0) * grid) * s.unit;
        *code = ((i64)k + s.zp) & ((1LL << f.plan[NS_SCP_INT_BITS]) - 1);
    } else if (to_value) {
        *value = ns_float_quantize_ne_one(sv, f.ed, f.espv) * s.unit;
    } else {
        *code = ns_float_round_pair(sv, 0.0, f.ed, f.esp, 0, 0, 0, 32);
    }
    return out;
}

// One element (flat index `index`) of a group with the given flags, unit, 1 / unit and zero
// point: its code and value (a NaN group: code 0, value NaN), nearest-even in the value domain
// where the plan allows (fast), else exactly; returns whether it lay outside the element range.
NS_HD bool ns_sc_element(double xv, i64 index, const NsScFormat& f, i64 flag, double unit,
                         double inv, i64 zp, i64 mode, u64 key, i64 sr_bits, bool to_value,
                         i64* code, double* value) {
    *code = 0;
    *value = ns_nan();
    if (flag & NS_SC_NAN) return false;
    NsScScale s = {0, flag, unit, inv, zp};
    double grid = ns_sc_grid(f.ed);
    double lo_v, hi_v;
    ns_sc_element_bounds(f, zp, grid, &lo_v, &hi_v);
    if (mode == NS_NEAREST_EVEN && f.plan[NS_SCP_FAST] == 1)
        return ns_sc_fast_one(xv, f, s, lo_v, hi_v, grid, to_value, code, value);
    return ns_sc_general_one(xv, index, f, s, lo_v, hi_v, mode, key, sr_bits, code, value);
}

// The value of one element code with its group's scale code and zero point (decode_groups).
NS_HD double ns_sc_decode_one(i64 c, i64 scode, i64 zp, const i64* plan, double tensor_scale,
                              const i64* ed, const i64* sd, const double* table) {
    if (scode == plan[NS_SCP_SCALE_NAN]) return ns_nan();
    double unit = plan[NS_SCP_RULE] != NS_SC_AMAX ? ns_ldexp(1.0, scode + plan[NS_SCP_SCALE_LO])
                                                : ns_float_decode_one(scode, sd) * tensor_scale;
    double v;
    i64 kind = plan[NS_SCP_ELEM_KIND];
    if (kind == NS_SC_CODEBOOK) {
        v = table[c];
    } else if (kind == NS_SC_INT) {
        i64 bits = plan[NS_SCP_INT_BITS];
        i64 k = plan[NS_SCP_INT_QMIN] < 0 ? c - ((c >> (bits - 1)) & 1) * (1LL << bits) : c;
        v = ns_ldexp((double)(k - zp), -(ed[NS_F_MBITS] - ed[NS_F_EMIN]));
    } else {
        v = ns_float_decode_one(c, ed);
    }
    return v * unit;
}
