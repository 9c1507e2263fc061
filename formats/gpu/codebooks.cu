// Kernels of the codebook formats (twins of the kernels in formats/codebook.py), one thread per
// element; the per-element logic lives in codebook_codec.cuh.  Codes are u8 (tables of at most
// 256 values); suffixes f32/f64 name the input values.
#include "codebook_codec.cuh"

// nans[0] += NaN inputs (their codes are 0).
#define NS_CODEBOOK_ENCODE(SUFFIX, TIN)                                                          \
    NS_KERNEL void codebook_encode_##SUFFIX(i64 n, const TIN* x, unsigned char* out,             \
                                            const double* values, const i64* codes, i64 nv,      \
                                            i64 mode, u64 key, i64 offset, i64 sr_bits,          \
                                            u64* nans) {                                         \
        NS_FOR(i, n) {                                                                           \
            double v = ns_load(x, i);                                                            \
            ns_count(nans, (u64)(v != v));                                                       \
            out[i] = (unsigned char)(v == v ? ns_codebook_round_table(v, 0.0, values, codes, nv, \
                                                                      mode, key, offset + i,     \
                                                                      sr_bits)                   \
                                            : 0);                                                \
        }                                                                                        \
    }

NS_CODEBOOK_ENCODE(f32, float)
NS_CODEBOOK_ENCODE(f64, double)

NS_KERNEL void codebook_decode(i64 n, const unsigned char* codes, double* out,
                               const double* table) {
    NS_FOR(i, n) out[i] = table[codes[i]];
}

// out = round(a op b [+ c]) on codes of one table (c may be a when op is not FMA).
NS_KERNEL void codebook_arith(i64 n, i64 op, const unsigned char* a, const unsigned char* b,
                              const unsigned char* c, unsigned char* out, const double* table,
                              const double* values, const i64* codes, i64 nv, i64 mode, u64 key,
                              i64 offset, i64 sr_bits) {
    NS_FOR(i, n) {
        double s, e;
        ns_codebook_exact_op(op, table[a[i]], table[b[i]], table[c[i]], &s, &e);
        out[i] = (unsigned char)ns_codebook_round_table(s, e, values, codes, nv, mode, key,
                                                        offset + i, sr_bits);
    }
}
