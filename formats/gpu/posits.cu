// Kernels of the posit formats (twins of formats/posit_kernels.py), one thread per element; the
// per-element logic lives in posit_codec.cuh.  Suffixes name the array types: f32/f64 values,
// u8/u16/u32 codes (posits of at most 32 bits).
#include "posit_codec.cuh"

#define NS_POSIT_ENCODE(SUFFIX, TIN, TOUT)                                                       \
    NS_KERNEL void posit_encode_##SUFFIX(i64 n, const TIN* x, TOUT* out, const i64* d, i64 mode, \
                                         u64 key, i64 offset, i64 sr_bits) {                     \
        NS_FOR(i, n) {                                                                           \
            out[i] = (TOUT)ns_posit_round_real(ns_load(x, i), d, mode, key, offset + i, sr_bits); \
        }                                                                                        \
    }

NS_POSIT_ENCODE(f32_u8, float, unsigned char)
NS_POSIT_ENCODE(f32_u16, float, unsigned short)
NS_POSIT_ENCODE(f32_u32, float, u32)
NS_POSIT_ENCODE(f64_u8, double, unsigned char)
NS_POSIT_ENCODE(f64_u16, double, unsigned short)
NS_POSIT_ENCODE(f64_u32, double, u32)

// Exact encode of 64-bit integers: x holds their bit patterns, int64 when is_signed else uint64.
#define NS_POSIT_ENCODE_INT(SUFFIX, TOUT)                                                        \
    NS_KERNEL void posit_encode_int_##SUFFIX(i64 n, const u64* x, i64 is_signed, TOUT* out,      \
                                             const i64* d, i64 mode, u64 key, i64 offset,        \
                                             i64 sr_bits) {                                      \
        NS_FOR(i, n) {                                                                           \
            out[i] = (TOUT)ns_posit_encode_int_one(x[i], is_signed != 0, d, mode, key,           \
                                                   offset + i, sr_bits);                         \
        }                                                                                        \
    }

NS_POSIT_ENCODE_INT(u8, unsigned char)
NS_POSIT_ENCODE_INT(u16, unsigned short)
NS_POSIT_ENCODE_INT(u32, u32)

// Fused decode(encode(x)).
#define NS_POSIT_QUANTIZE(SUFFIX, TIN, TOUT)                                                     \
    NS_KERNEL void posit_quantize_##SUFFIX(i64 n, const TIN* x, TOUT* out, const i64* d,         \
                                           i64 mode, u64 key, i64 offset, i64 sr_bits) {         \
        NS_FOR(i, n) {                                                                           \
            i64 c = ns_posit_round_real(ns_load(x, i), d, mode, key, offset + i, sr_bits);       \
            ns_store(out, i, ns_posit_decode_one(c, d));                                         \
        }                                                                                        \
    }

NS_POSIT_QUANTIZE(f32_f32, float, float)
NS_POSIT_QUANTIZE(f32_f64, float, double)
NS_POSIT_QUANTIZE(f64_f64, double, double)

#define NS_POSIT_DECODE(SUFFIX, TIN)                                                             \
    NS_KERNEL void posit_decode_##SUFFIX(i64 n, const TIN* codes, double* out, const i64* d) {   \
        NS_FOR(i, n) out[i] = ns_posit_decode_one((i64)codes[i], d);                             \
    }

NS_POSIT_DECODE(u8, unsigned char)
NS_POSIT_DECODE(u16, unsigned short)
NS_POSIT_DECODE(u32, u32)

// out = round(a op b [+ c]) on codes of one format (c may be a when op is not FMA).
#define NS_POSIT_ARITH(SUFFIX, T)                                                                \
    NS_KERNEL void posit_arith_##SUFFIX(i64 n, i64 op, const T* a, const T* b, const T* c,       \
                                        T* out, const i64* d, i64 mode, u64 key, i64 offset,     \
                                        i64 sr_bits) {                                           \
        NS_FOR(i, n) {                                                                           \
            out[i] = (T)ns_posit_arith_one(op, (i64)a[i], (i64)b[i], (i64)c[i], d, mode, key,    \
                                           offset + i, sr_bits);                                 \
        }                                                                                        \
    }

NS_POSIT_ARITH(u8, unsigned char)
NS_POSIT_ARITH(u16, unsigned short)
NS_POSIT_ARITH(u32, u32)
