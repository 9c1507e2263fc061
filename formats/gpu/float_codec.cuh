// Floating-point formats of any exponent/mantissa width: the CUDA/C++ twin of
// formats/float_kernels.py.  `d` is the int64 descriptor (field order float_kernels.FIELDS), `sp`
// the special codes (float_kernels.special_codes) and `spv` their values
// (float_kernels.special_values).
#pragma once
#include "rounding.cuh"

enum { NS_F_MBITS, NS_F_EMIN, NS_F_MAX_MAG, NS_F_SIGN_BIT, NS_F_NAN_CODE, NS_F_INF_MAG,
       NS_F_SUBNORMALS, NS_F_NO_ZERO, NS_F_NEG_ZERO, NS_F_FNUZ_NAN };
enum { NS_SP_NAN, NS_SP_INF_POS, NS_SP_INF_NEG, NS_SP_OVF_POS, NS_SP_OVF_NEG, NS_SP_ZERO_POS,
       NS_SP_ZERO_NEG, NS_SP_UNSIGNED_NEG, NS_SP_MAX_VALUE };

// Round the exact value s + e (e = 0, or the low word of a TwoSum pair) to a code; -1 is NaN in
// a format without NaN (the caller counts it).
NS_HD i64 ns_float_round_pair(double s, double e, const i64* d, const i64* sp, i64 mode, u64 key,
                              i64 index, i64 sr_bits) {
    u64 bits = ns_f64_bits(s);
    bool neg = (bits >> 63) != 0;
    i64 exf = (i64)((bits >> 52) & 0x7FF);
    u64 mant = bits & ((1ULL << 52) - 1ULL);
    u64 sig;
    i64 ex;
    ns_significand_exponent(bits, &sig, &ex);
    i64 mb = d[NS_F_MBITS];
    i64 big_e = ns_max(ex, d[NS_F_EMIN]);
    i64 sh = 52 - mb + (big_e - ex);
    ns_jam(&sig, &sh);
    u64 q = sig >> sh;
    u64 rem = sig & ((1ULL << sh) - 1ULL);
    u64 ebits = ns_f64_bits(e);
    bool has_tail = (ebits << 1) != 0;
    bool tail_up = has_tail && (((ebits >> 63) != 0) == neg);
    bool tail_down = has_tail && !tail_up;
    i64 tail = (i64)tail_up - (i64)tail_down;
    bool borrow = tail_down && rem == 0;
    rem |= (u64)borrow << sh;
    i64 code = ((big_e - d[NS_F_EMIN]) << mb) + (i64)q - (d[NS_F_NO_ZERO] << mb) - (i64)borrow;
    u64 threshold = 0, rnd = 0;
    if (mode == NS_STOCHASTIC) {
        threshold = ns_sr_threshold(rem, sh, tail_down, sr_bits);
        if (tail != 0 && sh < sr_bits) {
            i64 unit_ex = ex - (i64)(borrow && mant == 0 && ex > d[NS_F_EMIN]);
            double v = ns_fabs(e) * ns_pow2(52 - unit_ex + sr_bits - sh);
            if (tail > 0)
                threshold += (u64)ns_floor(v);
            else
                threshold -= (u64)(ns_ceil(v) > 1.0 ? ns_ceil(v) : 1.0);
        }
        rnd = ns_random_bits(key, index, sr_bits);
    }
    code += (i64)ns_round_away(mode, neg, (code & 1) == 1, rem, 1ULL << (sh - 1), tail, threshold,
                               rnd);
    i64 sign = d[NS_F_SIGN_BIT] * (i64)neg;
    i64 small = ns_max(code, 0);
    if (d[NS_F_SUBNORMALS] == 0 && d[NS_F_NO_ZERO] == 0) small = 0;
    bool small_is_zero = (small == 0) && (d[NS_F_NO_ZERO] == 0);
    i64 small_code = small_is_zero ? (d[NS_F_NEG_ZERO] ? d[NS_F_SIGN_BIT] : 0) * (i64)neg
                                   : (small | sign);
    i64 res = code < (1LL << mb) ? small_code : (code | sign);
    bool is_zero_result = (code < (1LL << mb)) && small_is_zero;
    if (neg && d[NS_F_SIGN_BIT] == 0 && !is_zero_result) res = sp[NS_SP_UNSIGNED_NEG];
    if (code > d[NS_F_MAX_MAG]) res = neg ? sp[NS_SP_OVF_NEG] : sp[NS_SP_OVF_POS];
    if ((bits << 1) == 0) res = neg ? sp[NS_SP_ZERO_NEG] : sp[NS_SP_ZERO_POS];
    if (exf == 0x7FF)
        res = mant != 0 ? sp[NS_SP_NAN] : (neg ? sp[NS_SP_INF_NEG] : sp[NS_SP_INF_POS]);
    return res;
}

// Exact value of one code (NaN for NaN codes; subnormals read as 0 when flushed).
NS_HD double ns_float_decode_one(i64 code, const i64* d) {
    i64 sign_bit = d[NS_F_SIGN_BIT];
    i64 mag = code & ~sign_bit;
    i64 mb = d[NS_F_MBITS];
    i64 exp_field = mag >> mb;
    i64 frac = mag & ((1LL << mb) - 1);
    double v;
    if (d[NS_F_NO_ZERO]) {
        v = ns_pow2(mag + d[NS_F_EMIN]);
    } else {
        i64 hidden = (i64)(exp_field != 0);
        double scale = ns_pow2(d[NS_F_EMIN] + ns_max(exp_field, 1) - 1 - mb);
        v = (double)(frac + (hidden << mb)) * scale;
        if (d[NS_F_SUBNORMALS] == 0 && !hidden) v = 0.0;
    }
    if (mag > d[NS_F_MAX_MAG]) v = mag == d[NS_F_INF_MAG] ? ns_inf() : ns_nan();
    if (d[NS_F_FNUZ_NAN] && code == sign_bit) v = ns_nan();
    return (code & sign_bit) != 0 ? -v : v;
}

// Nearest-even quantize in the value domain for formats with mbits >= 1
// (see float_kernels.quantize_nearest_even_one).
NS_HD double ns_float_quantize_ne_one(double x, const i64* d, const double* spv) {
    u64 bits = ns_f64_bits(x);
    bool neg = (bits >> 63) != 0;
    double c = ns_bits_f64(bits & 0x7FF0000000000000ULL) * (1.5 * ns_pow2(52 - d[NS_F_MBITS]));
    double c_min = 1.5 * ns_pow2(d[NS_F_EMIN] - d[NS_F_MBITS] + 52);
    if (c < c_min) c = c_min;
    double c_max = 1.5 * ns_pow2(1022);
    if (c > c_max) c = c_max;
    double y = ns_fabs((x + c) - c);
    if (d[NS_F_SUBNORMALS] == 0 && y < ns_pow2(d[NS_F_EMIN])) y = 0.0;
    double res = (neg && (d[NS_F_NEG_ZERO] != 0 || y != 0.0)) ? -y : y;
    if (neg && d[NS_F_SIGN_BIT] == 0 && y != 0.0) res = spv[NS_SP_UNSIGNED_NEG];
    if (y > spv[NS_SP_MAX_VALUE]) res = neg ? spv[NS_SP_OVF_NEG] : spv[NS_SP_OVF_POS];
    return res;
}

// The exact a op b [+ c] of three codes as a pair (s, e), s + e exact
// (see float_kernels.arith_kernel).
NS_HD void ns_float_exact_op(i64 op, double x, double y, double z, i64 mode, double* s, double* e) {
    *e = 0.0;
    if (op == NS_OP_MUL || op == NS_OP_FMA) {
        double p = x * y;                // exact: formats lie within 2**-537..2**512
        if (op == NS_OP_MUL) {
            *s = p;
        } else {
            ns_two_sum(p, z, s, e);
            *s = ns_exact_zero_sign(p, z, *s, mode);
        }
    } else {
        if (op == NS_OP_SUB) y = -y;
        ns_two_sum(x, y, s, e);
        *s = ns_exact_zero_sign(x, y, *s, mode);
    }
}
