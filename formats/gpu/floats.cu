// Kernels of the scalar formats: one thread per element (grid-stride on the device, a serial loop
// in the host build).  Each takes the element count n, the arrays, the format descriptor and the
// rounding options, and counts inputs the format cannot hold in bad[0].  The per-element logic
// lives in the .cuh files; this file only loops.  Suffixes name the array types: f32/f64 values,
// u8/u16/u32/u64 codes.
#include "float_codec.cuh"

// ---- floats --------------------------------------------------------------------------------

#define NS_FLOAT_ENCODE(SUFFIX, TIN, TOUT)                                                       \
    NS_KERNEL void float_encode_##SUFFIX(i64 n, const TIN* x, const double* lo, TOUT* out,       \
                                         const i64* d, const i64* sp, i64 mode, u64 key,        \
                                         i64 offset, i64 sr_bits, u64* bad) {                   \
        NS_FOR(i, n) {                                                                           \
            double e = lo ? lo[i] : 0.0;                                                         \
            i64 c = ns_float_round_pair(ns_load(x, i), e, d, sp, mode, key, offset + i, sr_bits); \
            ns_count(bad, (u64)(c < 0));                                                         \
            out[i] = (TOUT)ns_max(c, 0);                                                         \
        }                                                                                        \
    }

NS_FLOAT_ENCODE(f32_u8, float, unsigned char)
NS_FLOAT_ENCODE(f32_u16, float, unsigned short)
NS_FLOAT_ENCODE(f32_u32, float, u32)
NS_FLOAT_ENCODE(f32_u64, float, u64)
NS_FLOAT_ENCODE(f64_u8, double, unsigned char)
NS_FLOAT_ENCODE(f64_u16, double, unsigned short)
NS_FLOAT_ENCODE(f64_u32, double, u32)
NS_FLOAT_ENCODE(f64_u64, double, u64)

#define NS_FLOAT_QUANTIZE(SUFFIX, TIN, TOUT)                                                     \
    NS_KERNEL void float_quantize_##SUFFIX(i64 n, const TIN* x, TOUT* out, const i64* d,         \
                                           const i64* sp, i64 mode, u64 key, i64 offset,        \
                                           i64 sr_bits, u64* bad) {                             \
        NS_FOR(i, n) {                                                                           \
            i64 c = ns_float_round_pair(ns_load(x, i), 0.0, d, sp, mode, key, offset + i,        \
                                        sr_bits);                                               \
            ns_count(bad, (u64)(c < 0));                                                         \
            ns_store(out, i, ns_float_decode_one(ns_max(c, 0), d));                              \
        }                                                                                        \
    }

NS_FLOAT_QUANTIZE(f32_f32, float, float)
NS_FLOAT_QUANTIZE(f32_f64, float, double)
NS_FLOAT_QUANTIZE(f64_f64, double, double)

// Nearest-even quantize in the value domain (formats with mbits >= 1); bad counts NaN inputs.
#define NS_FLOAT_QUANTIZE_NE(SUFFIX, TIN, TOUT)                                                  \
    NS_KERNEL void float_quantize_ne_##SUFFIX(i64 n, const TIN* x, TOUT* out, const i64* d,      \
                                              const double* spv, u64* bad) {                    \
        NS_FOR(i, n) {                                                                           \
            double v = ns_load(x, i);                                                            \
            ns_count(bad, (u64)ns_isnan(v));                                                     \
            ns_store(out, i, ns_float_quantize_ne_one(v, d, spv));                               \
        }                                                                                        \
    }

NS_FLOAT_QUANTIZE_NE(f32_f32, float, float)
NS_FLOAT_QUANTIZE_NE(f32_f64, float, double)
NS_FLOAT_QUANTIZE_NE(f64_f64, double, double)

#define NS_FLOAT_DECODE(SUFFIX, TIN)                                                             \
    NS_KERNEL void float_decode_##SUFFIX(i64 n, const TIN* codes, double* out, const i64* d) {   \
        NS_FOR(i, n) out[i] = ns_float_decode_one((i64)codes[i], d);                             \
    }

NS_FLOAT_DECODE(u8, unsigned char)
NS_FLOAT_DECODE(u16, unsigned short)
NS_FLOAT_DECODE(u32, u32)
NS_FLOAT_DECODE(u64, u64)

// out = round(a op b [+ c]) on codes of one format (c may be a when op is not FMA).
#define NS_FLOAT_ARITH(SUFFIX, T)                                                                \
    NS_KERNEL void float_arith_##SUFFIX(i64 n, i64 op, const T* a, const T* b, const T* c,       \
                                        T* out, const i64* d, const i64* sp, i64 mode, u64 key,  \
                                        i64 offset, i64 sr_bits, u64* bad) {                    \
        NS_FOR(i, n) {                                                                           \
            double s, e;                                                                         \
            ns_float_exact_op(op, ns_float_decode_one((i64)a[i], d),                             \
                              ns_float_decode_one((i64)b[i], d),                                 \
                              ns_float_decode_one((i64)c[i], d), mode, &s, &e);                  \
            i64 code = ns_float_round_pair(s, e, d, sp, mode, key, offset + i, sr_bits);         \
            ns_count(bad, (u64)(code < 0));                                                      \
            out[i] = (T)ns_max(code, 0);                                                         \
        }                                                                                        \
    }

NS_FLOAT_ARITH(u8, unsigned char)
NS_FLOAT_ARITH(u16, unsigned short)
NS_FLOAT_ARITH(u32, u32)
NS_FLOAT_ARITH(u64, u64)

// float32 -> float64, exactly (gpu.as_float64): CuPy's own conversion flushes subnormals.
NS_KERNEL void widen_f32(i64 n, const float* x, double* out) {
    NS_FOR(i, n) out[i] = ns_load(x, i);
}

// float64 values that float32 holds exactly -> float32 (gpu.store_exact), for the same reason.
NS_KERNEL void narrow_f64(i64 n, const double* x, float* out) {
    NS_FOR(i, n) ns_store(out, i, x[i]);
}
