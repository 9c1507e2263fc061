// Two's-complement and unsigned integers and fixed point: the CUDA/C++ twin of
// formats/int_kernels.py.  `d` is the int64 descriptor (field order int_kernels.FIELDS); a code
// holds the bits-wide two's-complement pattern of the integer k, whose value is k * 2**-frac_bits.
#pragma once
#include "rounding.cuh"

enum { NS_I_BITS, NS_I_SIGNED, NS_I_FRAC, NS_I_QMIN, NS_I_QMAX };
enum { NS_INT_ERR_NAN = -1, NS_INT_ERR_INF_WRAP = -2 };

// int_kernels._mask
NS_HD u64 ns_int_mask(const i64* d) { return (1ULL << (u64)d[NS_I_BITS]) - 1ULL; }

// int_kernels.finish: code of (-1)**neg * mag, saturated or wrapped (huge: |value| >= 2**64).
NS_HD i64 ns_int_finish(u64 mag, bool huge, bool neg, const i64* d, i64 overflow) {
    if (overflow == NS_SATURATE) {
        if (neg) {
            u64 limit = (u64)(-d[NS_I_QMIN]);
            if (huge || mag > limit) mag = limit;
        } else if (huge || mag > (u64)d[NS_I_QMAX]) {
            mag = (u64)d[NS_I_QMAX];
        }
    }
    u64 val = neg ? (0ULL - mag) : mag;
    return (i64)(val & ns_int_mask(d));
}

// int_kernels.shift_round: mag / 2**shift (shift >= 0) rounded to an integer in mode.
NS_HD u64 ns_int_shift_round(u64 mag, i64 shift, bool neg, i64 mode, u64 key, i64 index,
                             i64 sr_bits) {
    if (shift == 0) return mag;
    ns_jam(&mag, &shift);
    u64 q = mag >> (u64)shift;
    u64 rem = mag & ((1ULL << (u64)shift) - 1ULL);
    u64 threshold = 0, rnd = 0;
    if (mode == NS_STOCHASTIC) {
        threshold = ns_sr_threshold(rem, shift, false, sr_bits);
        rnd = ns_random_bits(key, index, sr_bits);
    }
    if (ns_round_away(mode, neg, (q & 1ULL) == 1ULL, rem, 1ULL << (u64)(shift - 1), 0, threshold,
                      rnd))
        q += 1ULL;
    return q;
}

// int_kernels.round_real: code of the real s; negative returns are NS_INT_ERR_* codes.
NS_HD i64 ns_int_round_real(double s, const i64* d, i64 mode, i64 overflow, u64 key, i64 index,
                            i64 sr_bits) {
    if (s != s) return NS_INT_ERR_NAN;
    bool neg = s < 0.0;
    if (!ns_isfinite(s)) {
        if (overflow != NS_SATURATE) return NS_INT_ERR_INF_WRAP;
        return ns_int_finish(0ULL, true, neg, d, overflow);
    }
    double a = ns_fabs(s) * ns_pow2(d[NS_I_FRAC]);   // = np.ldexp(abs(s), frac): exact or +inf
    if (!ns_isfinite(a)) return ns_int_finish(0ULL, true, neg, d, overflow);
    if (a == 0.0) return 0;
    u64 sig;
    i64 ex;
    ns_significand_exponent(ns_f64_bits(a), &sig, &ex);
    i64 shift = 52 - ex;
    if (shift > 0)
        return ns_int_finish(ns_int_shift_round(sig, shift, neg, mode, key, index, sr_bits), false,
                             neg, d, overflow);
    bool huge = ex >= 64;
    u64 mag = -shift < 64 ? sig << (u64)(-shift) : 0ULL;
    return ns_int_finish(mag, huge, neg, d, overflow);
}

// int_kernels.encode_int_kernel (one element): the int64 v times 2**frac_bits, exact.
NS_HD i64 ns_int_encode_int_one(i64 v, const i64* d, i64 overflow) {
    u64 f = (u64)d[NS_I_FRAC];
    bool neg = v < 0;
    u64 mag = neg ? (0ULL - (u64)v) : (u64)v;
    bool huge = f > 0ULL && (mag >> (64ULL - f)) != 0ULL;
    return ns_int_finish(mag << f, huge, neg, d, overflow);
}

// int_kernels.to_int: the integer k a code holds.
NS_HD i64 ns_int_to_int(i64 code, const i64* d) {
    if (d[NS_I_SIGNED] && ((code >> (d[NS_I_BITS] - 1)) & 1)) return code - (1LL << d[NS_I_BITS]);
    return code;
}

// int_kernels.decode_kernel (one element): k * 2**-frac_bits, exact (= np.ldexp).
NS_HD double ns_int_decode_one(i64 code, const i64* d) {
    return (double)ns_int_to_int(code, d) * ns_pow2(-d[NS_I_FRAC]);
}

// int_kernels._signed_mag: |k| as uint64, *neg = k < 0.
NS_HD u64 ns_int_signed_mag(i64 k, bool* neg) {
    *neg = k < 0;
    return *neg ? (0ULL - (u64)k) : (u64)k;
}

// int_kernels.arith_kernel (one element): round(a op b [+ c]) on codes.
NS_HD i64 ns_int_arith_one(i64 op, i64 a, i64 b, i64 c, const i64* d, i64 mode, i64 overflow,
                           u64 key, i64 index, i64 sr_bits) {
    i64 x = ns_int_to_int(a, d);
    i64 y = ns_int_to_int(b, d);
    bool neg, ny, nz;
    if (op == NS_OP_ADD || op == NS_OP_SUB) {
        u64 mag = ns_int_signed_mag(op == NS_OP_ADD ? x + y : x - y, &neg);
        return ns_int_finish(mag, false, neg, d, overflow);
    }
    u64 mx = ns_int_signed_mag(x, &neg);
    u64 my = ns_int_signed_mag(y, &ny);
    neg = neg != ny;
    u64 mag = mx * my;
    bool huge = false;
    if (op == NS_OP_FMA) {
        u64 mz = ns_int_signed_mag(ns_int_to_int(c, d), &nz) << (u64)d[NS_I_FRAC];
        if (mag == 0ULL) neg = nz;
        if (nz == neg) {
            u64 total = mag + mz;
            huge = total < mag;
            mag = total;
        } else if (mag >= mz) {
            mag = mag - mz;
        } else {
            mag = mz - mag;
            neg = nz;
        }
    }
    if (mag == 0ULL) neg = false;
    u64 q = ns_int_shift_round(mag, d[NS_I_FRAC], neg, mode, key, index, sr_bits);
    return ns_int_finish(q, huge, neg, d, overflow);
}
