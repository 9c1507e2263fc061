// Rounding modes, the counter-based random bits and the shared rounding decision: the CUDA/C++
// twin of formats/rounding.py and formats/bitcast.py (same names, same conventions).
#pragma once
#include "numsim.cuh"

enum { NS_NEAREST_EVEN, NS_NEAREST_AWAY, NS_TOWARD_ZERO, NS_TOWARD_POSITIVE, NS_TOWARD_NEGATIVE,
       NS_STOCHASTIC };
enum { NS_SATURATE, NS_IEEE, NS_WRAP };
enum { NS_OP_ADD, NS_OP_SUB, NS_OP_MUL, NS_OP_FMA };

#define NS_JAM_SHIFT 62

// SplitMix64's finalizer (Steele, Lea, Flood 2014).
NS_HD u64 ns_mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// nbits (1..64) uniform random bits for element index under key.
NS_HD u64 ns_random_bits(u64 key, i64 index, i64 nbits) {
    return ns_mix64(key + (u64)index * 0x9E3779B97F4A7C15ULL) >> (64 - nbits);
}

// floor(f * 2**sr_bits) for the discarded fraction f = rem / 2**shift (see rounding.sr_threshold).
NS_HD u64 ns_sr_threshold(u64 rem, i64 shift, bool below, i64 sr_bits) {
    u64 up = (u64)ns_max(sr_bits - shift, 0);
    u64 drop = (u64)ns_max(shift - sr_bits, 0);
    bool low_zero = (rem & ((1ULL << drop) - 1ULL)) == 0;
    return ((rem << up) >> drop) - (u64)(below && low_zero && shift >= sr_bits);
}

// Does a truncated magnitude move one unit away from zero? (see rounding.round_away)
NS_HD bool ns_round_away(i64 mode, bool neg, bool odd, u64 rem, u64 half, i64 tail,
                         u64 threshold, u64 rnd) {
    if (mode == NS_STOCHASTIC) return rnd < threshold;
    bool at_half = (rem == half) && (tail == 0);
    bool above = (rem > half) || ((rem == half) && (tail > 0));
    if (mode == NS_NEAREST_EVEN) return above || (at_half && odd);
    if (mode == NS_NEAREST_AWAY) return above || at_half;
    bool inexact = (rem != 0) || (tail != 0);
    if (mode == NS_TOWARD_POSITIVE) return inexact && !neg;
    if (mode == NS_TOWARD_NEGATIVE) return inexact && neg;
    return false;
}

// Shift sig right so at most NS_JAM_SHIFT discarded bits remain, the rest OR-ed into a sticky bit.
NS_HD void ns_jam(u64* sig, i64* shift) {
    i64 kept = ns_min(*shift, NS_JAM_SHIFT);
    u64 drop = (u64)ns_min(*shift - kept, 63);
    *sig = (*sig >> drop) | (u64)((*sig & ((1ULL << drop) - 1ULL)) != 0);
    *shift = kept;
}

// |x| = sig * 2**(ex - 52) for the finite double with bits `bits`
// (see bitcast.significand_exponent).
NS_HD void ns_significand_exponent(u64 bits, u64* sig, i64* ex) {
    i64 exf = (i64)((bits >> 52) & 0x7FF);
    *sig = (bits & ((1ULL << 52) - 1ULL)) | ((u64)(exf != 0) << 52);
    *ex = ns_max(exf, 1) - 1023;
}

// 2**k for -1022 <= k <= 1023.
NS_HD double ns_pow2(i64 k) { return ns_bits_f64((u64)(k + 1023) << 52); }

// Knuth's TwoSum: *s = fl(a + b), *e the exact error (0 when the sum is not finite).
NS_HD void ns_two_sum(double a, double b, double* s, double* e) {
    *s = a + b;
    if (!ns_isfinite(*s)) { *e = 0.0; return; }
    double bp = *s - a;
    double ap = *s - bp;
    *e = (a - ap) + (b - bp);
}

// Dekker's TwoProduct (float_kernels.two_product): *p = fl(a * b), *e the exact error.
NS_HD void ns_two_product(double a, double b, double* p, double* e) {
    *p = a * b;
    double t = 134217729.0 * a;                 // 2**27 + 1, Veltkamp's splitter
    double ah = t - (t - a);
    double al = a - ah;
    t = 134217729.0 * b;
    double bh = t - (t - b);
    double bl = b - bh;
    *e = ((ah * bh - *p) + ah * bl + al * bh) + al * bl;
}

// IEEE sign of an exact zero sum u + v: -0 when rounding toward negative (unless both are +0).
NS_HD double ns_exact_zero_sign(double u, double v, double s, i64 mode) {
    if (s == 0.0 && mode == NS_TOWARD_NEGATIVE &&
        !(u == 0.0 && v == 0.0 && !ns_signbit(u) && !ns_signbit(v)))
        return -0.0;
    return s;
}
