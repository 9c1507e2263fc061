// Kernels of the integer and fixed-point formats (twins of formats/int_kernels.py), one thread per
// element; the per-element logic lives in int_codec.cuh.  Suffixes name the array types: f32/f64
// values, u8/u16/u32 codes (formats of at most 32 bits).
#include "int_codec.cuh"

// counts[0] += NaN inputs, counts[1] += infinite inputs under wrap (their codes are 0).
#define NS_INT_ENCODE(SUFFIX, TIN, TOUT)                                                         \
    NS_KERNEL void int_encode_##SUFFIX(i64 n, const TIN* x, TOUT* out, const i64* d, i64 mode,   \
                                       i64 overflow, u64 key, i64 offset, i64 sr_bits,           \
                                       u64* counts) {                                            \
        NS_FOR(i, n) {                                                                           \
            i64 c = ns_int_round_real(ns_load(x, i), d, mode, overflow, key, offset + i, sr_bits); \
            ns_count(&counts[0], (u64)(c == NS_INT_ERR_NAN));                                    \
            ns_count(&counts[1], (u64)(c == NS_INT_ERR_INF_WRAP));                               \
            out[i] = (TOUT)ns_max(c, 0);                                                         \
        }                                                                                        \
    }

NS_INT_ENCODE(f32_u8, float, unsigned char)
NS_INT_ENCODE(f32_u16, float, unsigned short)
NS_INT_ENCODE(f32_u32, float, u32)
NS_INT_ENCODE(f64_u8, double, unsigned char)
NS_INT_ENCODE(f64_u16, double, unsigned short)
NS_INT_ENCODE(f64_u32, double, u32)

// Exact encode of int64 inputs.
#define NS_INT_ENCODE_INT(SUFFIX, TOUT)                                                          \
    NS_KERNEL void int_encode_int_##SUFFIX(i64 n, const i64* x, TOUT* out, const i64* d,         \
                                           i64 overflow) {                                       \
        NS_FOR(i, n) out[i] = (TOUT)ns_int_encode_int_one(x[i], d, overflow);                    \
    }

NS_INT_ENCODE_INT(u8, unsigned char)
NS_INT_ENCODE_INT(u16, unsigned short)
NS_INT_ENCODE_INT(u32, u32)

#define NS_INT_DECODE(SUFFIX, TIN)                                                               \
    NS_KERNEL void int_decode_##SUFFIX(i64 n, const TIN* codes, double* out, const i64* d) {     \
        NS_FOR(i, n) out[i] = ns_int_decode_one((i64)codes[i], d);                               \
    }

NS_INT_DECODE(u8, unsigned char)
NS_INT_DECODE(u16, unsigned short)
NS_INT_DECODE(u32, u32)

// out = round(a op b [+ c]) on codes of one format (c may be a when op is not FMA).
#define NS_INT_ARITH(SUFFIX, T)                                                                  \
    NS_KERNEL void int_arith_##SUFFIX(i64 n, i64 op, const T* a, const T* b, const T* c,         \
                                      T* out, const i64* d, i64 mode, i64 overflow, u64 key,     \
                                      i64 offset, i64 sr_bits) {                                 \
        NS_FOR(i, n) {                                                                           \
            out[i] = (T)ns_int_arith_one(op, (i64)a[i], (i64)b[i], (i64)c[i], d, mode, overflow, \
                                         key, offset + i, sr_bits);                              \
        }                                                                                        \
    }

NS_INT_ARITH(u8, unsigned char)
NS_INT_ARITH(u16, unsigned short)
NS_INT_ARITH(u32, u32)
