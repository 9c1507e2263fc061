// Kernels of the scaled formats.  The input is the IEEE bits of a flat float32 (u32) or float64
// (u64) array viewed as (P, Q, R) and cut into groups of (gp, gq, gr) elements, numbered in C
// order (see formats/scaled_kernels.py).  Encode and quantize take three launches, each fully
// parallel: the range of every group (one thread per element, integer atomic min/max of the
// order keys), the scale of every group (one thread per group), then the elements (one thread
// per element, clip counts by atomic add).  Integer atomics keep every result independent of
// the thread order.  The per-group and per-element logic lives in scaled_codec.cuh.
#include "scaled_codec.cuh"

NS_HD double ns_sc_value(const u32* xb, i64 i) { return ns_bits_f32(xb[i]); }
NS_HD double ns_sc_value(const u64* xb, i64 i) { return ns_bits_f64(xb[i]); }

// *slot = min(*slot, v) and max: atomic on the device, plain in the (serial) host build.
NS_HD void ns_sc_min_i64(i64* slot, i64 v) {
#if NS_DEVICE_PASS
    atomicMin((long long*)slot, (long long)v);
#else
    if (v < *slot) *slot = v;
#endif
}

NS_HD void ns_sc_max_i64(i64* slot, i64 v) {
#if NS_DEVICE_PASS
    atomicMax((long long*)slot, (long long)v);
#else
    if (v > *slot) *slot = v;
#endif
}

// The group of flat element i of the (P, Q, R) view dims cut into groups of shape `groups`.
NS_HD i64 ns_sc_group_of(i64 i, const i64* dims, const i64* groups) {
    i64 nq = (dims[1] + groups[1] - 1) / groups[1];
    i64 nr = (dims[2] + groups[2] - 1) / groups[2];
    i64 r = i % dims[2], q = i / dims[2] % dims[1], p = i / (dims[1] * dims[2]);
    return (p / groups[0] * nq + q / groups[1]) * nr + r / groups[2];
}

// Pass 1: k_lo[g] = min(0, keys of group g), k_hi[g] = max(0, keys) (both start at 0).
#define NS_SCALED_RANGE(SUFFIX, B)                                                               \
    NS_KERNEL void scaled_range_##SUFFIX(i64 n, const B* xb, const i64* dims, const i64* groups, \
                                         i64* k_lo, i64* k_hi) {                                 \
        NS_FOR(i, n) {                                                                           \
            i64 g = ns_sc_group_of(i, dims, groups);                                             \
            i64 k = ns_sc_key(xb[i], sizeof(B) == 4);                                            \
            if (k < 0) ns_sc_min_i64(&k_lo[g], k);                                               \
            if (k > 0) ns_sc_max_i64(&k_hi[g], k);                                               \
        }                                                                                        \
    }

NS_SCALED_RANGE(u32, u32)
NS_SCALED_RANGE(u64, u64)

// The format arguments every pass takes after its arrays, and the struct they fill.
#define NS_SC_FORMAT_PARAMS                                                                      \
    const i64 *plan, double elem_max, double tensor_scale, const i64 *ed, const i64 *esp,       \
        const double *espv, const i64 *sd, const i64 *ssp, const double *sspv,                  \
        const double *table, const i64 *tcodes, i64 n_table
#define NS_SC_FORMAT                                                                             \
    {plan, elem_max, tensor_scale, ed, esp, espv, sd, ssp, sspv, table, tcodes, n_table}

// Pass 2: the scale of each of n groups from its key range (clip: null or calibrated ranges):
// scale code (written unless to_value), zero point, flags, unit and 1 / unit.
NS_KERNEL void scaled_scales(i64 n, const i64* k_lo, const i64* k_hi, i64 is32,
                             const double* clip, NS_SC_FORMAT_PARAMS, i64 to_value, i64* scales,
                             i64* zps, signed char* flags, double* units, double* invs) {
    NsScFormat f = NS_SC_FORMAT;
    NS_FOR(g, n) {
        NsScScale s = ns_sc_scale_from_keys(k_lo[g], k_hi[g], g, is32 != 0, clip, f,
                                            to_value != 0);
        if (!to_value) scales[g] = s.scode;
        zps[g] = s.zp;
        flags[g] = (signed char)s.flag;
        units[g] = s.unit;
        invs[g] = s.inv;
    }
}

// Pass 3: codes (u32) or values of n elements with their group's scale; clipped[g] (starting
// at 0) counts the elements outside the element range.  A NaN group gives NaN values, codes 0.
#define NS_SCALED_ELEMENTS(SUFFIX, B)                                                            \
    NS_KERNEL void scaled_elements_##SUFFIX(                                                     \
        i64 n, const B* xb, const i64* dims, const i64* groups, NS_SC_FORMAT_PARAMS, i64 mode,   \
        u64 key, i64 sr_bits, i64 to_value, const i64* zps_in, const signed char* flags,        \
        const double* units, const double* invs, u32* codes, double* values, i64* clipped) {     \
        NsScFormat f = NS_SC_FORMAT;                                                             \
        NS_FOR(i, n) {                                                                           \
            i64 g = ns_sc_group_of(i, dims, groups);                                             \
            i64 c;                                                                               \
            double v;                                                                            \
            bool out = ns_sc_element(ns_sc_value(xb, i), i, f, flags[g], units[g], invs[g],      \
                                     zps_in[g], mode, key, sr_bits, to_value != 0, &c, &v);      \
            ns_count((u64*)&clipped[g], (u64)out);                                               \
            if (to_value) values[i] = v; else codes[i] = (u32)c;                                 \
        }                                                                                        \
    }

NS_SCALED_ELEMENTS(u32, u32)
NS_SCALED_ELEMENTS(u64, u64)

// Values of n element codes of a (P, Q, R) view with their group scales and zero points (int64
// arrays of the groups).
NS_KERNEL void scaled_decode(i64 n, const i64* codes, const i64* scales, const i64* zps,
                             const i64* dims, const i64* groups, const i64* plan,
                             double tensor_scale, const i64* ed, const i64* sd,
                             const double* table, double* out) {
    NS_FOR(i, n) {
        i64 g = ns_sc_group_of(i, dims, groups);
        out[i] = ns_sc_decode_one(codes[i], scales[g], zps[g], plan, tensor_scale, ed, sd, table);
    }
}

// amax[0] = the bits of max |x| over the finite elements (0 when none); amax[0] starts at 0.
#define NS_SCALED_AMAX(SUFFIX, B)                                                                \
    NS_KERNEL void scaled_finite_amax_##SUFFIX(i64 n, const B* xb, u64* amax) {                  \
        NS_FOR(i, n) {                                                                           \
            double v = ns_sc_value(xb, i);                                                       \
            ns_max_abs(amax, ns_isfinite(v) ? v : 0.0);                                          \
        }                                                                                        \
    }

NS_SCALED_AMAX(u32, u32)
NS_SCALED_AMAX(u64, u64)
