// Posits of n = 2..32 bits with es = 0..4: the CUDA/C++ twin of formats/posit_kernels.py.  `d` is
// the int64 descriptor (nbits, es).  A nonzero value is unpacked as (neg, e, sig) with
// |x| = sig * 2**(e - 63) and the top bit of sig set.  Signed right shifts are arithmetic, as in
// Numba (g++ and nvcc both define them so).
#pragma once
#include "rounding.cuh"

enum { NS_P_NBITS, NS_P_ES };
enum { NS_P_ZERO, NS_P_FINITE, NS_P_NAR };   // posit_kernels.ZERO, FINITE, NAR

#define NS_P_TOP (1ULL << 63)

// posit_kernels.unpack's result (e and sig are meaningful for kind NS_P_FINITE only).
struct ns_posit_val {
    i64 kind;
    bool neg;
    i64 e;
    u64 sig;
};

// posit_kernels.emax: log2(maxpos).
NS_HD i64 ns_posit_emax(const i64* d) { return (d[NS_P_NBITS] - 2) << d[NS_P_ES]; }

// posit_kernels._shl: x << s for any s >= 0 (0 from 64 on).
NS_HD u64 ns_posit_shl(u64 x, i64 s) {
    return (x << (u64)ns_min(s, 63)) & (0ULL - (u64)(s < 64));
}

// posit_kernels._shr: x >> s for any s >= 0 (0 from 64 on).
NS_HD u64 ns_posit_shr(u64 x, i64 s) {
    return (x >> (u64)ns_min(s, 63)) & (0ULL - (u64)(s < 64));
}

// posit_kernels.unpack
NS_HD ns_posit_val ns_posit_unpack(i64 code, const i64* d) {
    i64 n = d[NS_P_NBITS];
    i64 es = d[NS_P_ES];
    u64 ucode = (u64)code;
    ns_posit_val r;
    r.neg = ((ucode >> (u64)(n - 1)) & 1ULL) != 0ULL;
    u64 mask = (1ULL << (u64)n) - 1ULL;
    u64 mag = r.neg ? ((0ULL - ucode) & mask) : ucode;
    u64 body = mag << (u64)(65 - n);
    bool ones = (body >> 63) != 0ULL;
    i64 run = ns_clz64(ones ? ~body : body);
    i64 k = ones ? run - 1 : -run;
    u64 rest = ns_posit_shl(body, run + 1);
    i64 e = (i64)(((rest >> 1) >> (u64)(63 - es)) & ((1ULL << (u64)es) - 1ULL));
    r.sig = NS_P_TOP | ((rest << (u64)es) >> 1);
    r.e = (i64)((u64)k << (u64)es) + e;               // k * 2**es (k may be negative)
    r.kind = NS_P_FINITE;
    if (mag == 0ULL) r.kind = NS_P_ZERO;
    if (ucode == (1ULL << (u64)(n - 1))) r.kind = NS_P_NAR;
    return r;
}

// posit_kernels.decode_one: exact value of a code (NaN for NaR).
NS_HD double ns_posit_decode_one(i64 code, const i64* d) {
    ns_posit_val u = ns_posit_unpack(code, d);
    u64 bits = ((u64)(u.e + 1023) << 52) | ((u.sig << 1) >> 12);
    double v = ns_bits_f64(bits | ((u64)u.neg << 63));
    if (u.kind == NS_P_ZERO) v = 0.0;
    if (u.kind == NS_P_NAR) v = ns_nan();
    return v;
}

// posit_kernels.round_unpacked: code of the nonzero (-1)**neg * sig * 2**(e - 63).
NS_HD i64 ns_posit_round_unpacked(bool neg, i64 big_e, u64 sig, const i64* d, i64 mode, u64 key,
                                  i64 index, i64 sr_bits) {
    i64 n = d[NS_P_NBITS];
    i64 es = d[NS_P_ES];
    i64 top = ns_posit_emax(d);
    i64 e_in = ns_min(ns_max(big_e, -top), top - 1);
    i64 k = e_in >> es;
    u64 e = (u64)(e_in & ((1LL << es) - 1));
    bool pos = k >= 0;
    i64 run_len = pos ? k + 2 : 1 - k;
    u64 regime = pos ? (u64)((1LL << ns_max(k + 2, 1)) - 2) : 1ULL;
    i64 avail = ns_max(n - 1 - run_len, 0);
    u64 frac = sig << 1;
    u64 tail = ((e << (u64)(63 - es)) << 1) | (frac >> (u64)es);
    tail |= (u64)((frac & ((1ULL << (u64)es) - 1ULL)) != 0ULL);
    u64 kept = (tail >> 1) >> (u64)(63 - avail);
    u64 rem = tail << (u64)avail;
    u64 mag = (regime << (u64)avail) | kept;
    u64 threshold = 0, rnd = 0;
    if (mode == NS_STOCHASTIC) {
        threshold = ns_sr_threshold(rem, 64, false, sr_bits);
        rnd = ns_random_bits(key, index, sr_bits);
    }
    mag += (u64)ns_round_away(mode, neg, (mag & 1ULL) == 1ULL, rem, NS_P_TOP, 0, threshold, rnd);
    if (big_e >= top) mag = (1ULL << (u64)(n - 1)) - 1ULL;
    if (big_e < -top) mag = 1ULL;
    u64 mask = (1ULL << (u64)n) - 1ULL;
    return (i64)(neg ? ((0ULL - mag) & mask) : mag);
}

// posit_kernels.round_real: code of a double (NaN and +-Inf give NaR, +-0 gives 0).
NS_HD i64 ns_posit_round_real(double x, const i64* d, i64 mode, u64 key, i64 index,
                              i64 sr_bits) {
    u64 bits = ns_f64_bits(x);
    bool neg = (bits >> 63) != 0ULL;
    u64 sig53;
    i64 ex;
    ns_significand_exponent(bits, &sig53, &ex);
    i64 code = ns_posit_round_unpacked(neg, ex, (sig53 << 11) | NS_P_TOP, d, mode, key, index,
                                       sr_bits);
    if (x == 0.0) code = 0;
    if (!ns_isfinite(x)) code = 1LL << (d[NS_P_NBITS] - 1);
    return code;
}

// posit_kernels.encode_int_kernel (one element): the 64-bit integer with bit pattern raw (read as
// int64 when is_signed, else as uint64), exact before its one rounding.
NS_HD i64 ns_posit_encode_int_one(u64 raw, bool is_signed, const i64* d, i64 mode, u64 key,
                                  i64 index, i64 sr_bits) {
    bool neg = is_signed && (raw >> 63) != 0ULL;
    u64 mag = neg ? (0ULL - raw) : raw;
    i64 lz = ns_clz64(mag);
    i64 code = ns_posit_round_unpacked(neg, 63 - lz, ns_posit_shl(mag, lz), d, mode, key, index,
                                       sr_bits);
    return mag != 0ULL ? code : 0;
}

// posit_kernels.mul_exact: the exact product of two unpacked magnitudes (in *e, *sig).
NS_HD void ns_posit_mul_exact(i64 ea, u64 sa, i64 eb, u64 sb, i64* e, u64* sig) {
    u64 p = (sa >> 33) * (sb >> 33);
    i64 carry = (i64)(p >= (1ULL << 61));
    *e = ea + eb + carry;
    *sig = p << (u64)(3 - carry);
}

// posit_kernels.add_exact: the exact sum of two nonzero unpacked values, cut to 64 bits with a
// sticky lowest bit (kind NS_P_ZERO when it cancels).
NS_HD ns_posit_val ns_posit_add_exact(ns_posit_val a, ns_posit_val b) {
    if (b.e > a.e || (b.e == a.e && b.sig > a.sig)) {
        ns_posit_val t = a;
        a = b;
        b = t;
    }
    u64 ahi = a.sig >> 1, alo = a.sig << 63;
    u64 bhi = b.sig >> 1, blo = b.sig << 63;
    i64 dist = a.e - b.e;
    bool lost = dist < 64 ? ns_posit_shl(blo, 64 - dist) != 0ULL : true;
    if (dist >= 64) {
        lost = (blo != 0ULL) | (ns_posit_shl(bhi, ns_max(128 - dist, 0)) != 0ULL);
        blo = ns_posit_shr(bhi, dist - 64);
        bhi = 0ULL;
    } else if (dist > 0) {
        blo = (blo >> (u64)dist) | (bhi << (u64)(64 - dist));
        bhi = bhi >> (u64)dist;
    }
    blo |= (u64)(lost & (dist > 0));
    u64 lo, hi;
    if (a.neg == b.neg) {
        lo = alo + blo;
        hi = ahi + bhi + (u64)(lo < alo);
    } else {
        lo = alo - blo;
        hi = ahi - bhi - (u64)(alo < blo);
    }
    ns_posit_val r = {NS_P_ZERO, false, 0, 0ULL};
    if (hi == 0ULL && lo == 0ULL) return r;
    i64 lz = hi != 0ULL ? ns_clz64(hi) : 64 + ns_clz64(lo);
    u64 top = lz < 64 ? (ns_posit_shl(hi, lz) | ns_posit_shr(lo, 64 - lz))
                      : ns_posit_shl(lo, lz - 64);
    u64 rest = ns_posit_shl(lo, lz);
    r.kind = NS_P_FINITE;
    r.neg = a.neg;
    r.e = a.e + 1 - lz;
    r.sig = top | (u64)(rest != 0ULL);
    return r;
}

// posit_kernels.exact_op: the exact a op b [+ c] on codes.
NS_HD ns_posit_val ns_posit_exact_op(i64 op, i64 a, i64 b, i64 c, const i64* d) {
    ns_posit_val x = ns_posit_unpack(a, d);
    ns_posit_val y = ns_posit_unpack(b, d);
    ns_posit_val z = ns_posit_unpack(c, d);
    if (x.kind == NS_P_NAR || y.kind == NS_P_NAR || (op == NS_OP_FMA && z.kind == NS_P_NAR)) {
        ns_posit_val nar = {NS_P_NAR, false, 0, 0ULL};
        return nar;
    }
    if (op == NS_OP_MUL || op == NS_OP_FMA) {
        if (x.kind == NS_P_ZERO || y.kind == NS_P_ZERO) {
            x.kind = NS_P_ZERO;
        } else {
            ns_posit_mul_exact(x.e, x.sig, y.e, y.sig, &x.e, &x.sig);
            x.neg = x.neg != y.neg;
        }
        if (op == NS_OP_MUL) return x;
        y = z;                                     // the addend
    } else if (op == NS_OP_SUB) {
        y.neg = !y.neg;
    }
    if (x.kind == NS_P_ZERO) return y;
    if (y.kind == NS_P_ZERO) return x;
    return ns_posit_add_exact(x, y);
}

// posit_kernels.arith_kernel (one element): round(a op b [+ c]) on codes, one rounding.
NS_HD i64 ns_posit_arith_one(i64 op, i64 a, i64 b, i64 c, const i64* d, i64 mode, u64 key,
                             i64 index, i64 sr_bits) {
    ns_posit_val r = ns_posit_exact_op(op, a, b, c, d);
    i64 code = ns_posit_round_unpacked(r.neg, r.e, r.sig, d, mode, key, index, sr_bits);
    if (r.kind == NS_P_ZERO) code = 0;
    if (r.kind == NS_P_NAR) code = 1LL << (d[NS_P_NBITS] - 1);
    return code;
}
