// numsim CUDA portability layer: the same source compiles three ways.
//
//   * NVRTC (CuPy RawModule, __CUDACC_RTC__): no system headers; device intrinsics.
//   * nvcc (device code, __CUDA_ARCH__): as NVRTC, plus the headers.
//   * a plain C++ compiler (g++): __host__/__device__/__global__ vanish and every kernel becomes an
//     ordinary extern "C" function whose loop runs serially; the tests load it with ctypes and
//     compare it bit for bit with the Numba kernels.
//
// Floating point must not be contracted (a*b + c fused into one rounding would change results):
// compile with --fmad=false (NVRTC, nvcc) and -ffp-contract=off (g++).  Values are IEEE binary64
// with round-to-nearest-even, as in Numba.
#pragma once

#if defined(__CUDACC_RTC__)
typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;
#else
#include <cmath>
#include <cstdint>
#include <cstring>
typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;
#endif

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define NS_HD __host__ __device__ __forceinline__
#define NS_KERNEL extern "C" __global__
#else
#define NS_HD static inline
#define NS_KERNEL extern "C"
#endif

#if defined(__CUDA_ARCH__)
#define NS_DEVICE_PASS 1
#else
#define NS_DEVICE_PASS 0
#endif

// Grid-stride loop over 0..n-1 on the device; a serial loop on the host.
#if NS_DEVICE_PASS
#define NS_FOR(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n); \
         i += (i64)gridDim.x * blockDim.x)
#else
#define NS_FOR(i, n) for (i64 i = 0; i < (i64)(n); ++i)
#endif

NS_HD u64 ns_f64_bits(double x) {
#if NS_DEVICE_PASS
    return (u64)__double_as_longlong(x);
#else
    u64 b;
    memcpy(&b, &x, sizeof b);
    return b;
#endif
}

NS_HD double ns_bits_f64(u64 b) {
#if NS_DEVICE_PASS
    return __longlong_as_double((long long)b);
#else
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
#endif
}

// Leading zeros of a 64-bit word, 64 for zero.
NS_HD i64 ns_clz64(u64 x) {
#if NS_DEVICE_PASS
    return (i64)__clzll((long long)x);
#else
    return x == 0 ? 64 : (i64)__builtin_clzll(x);
#endif
}

// float32 <-> double by integer operations only.  CuPy compiles every kernel with -ftz=true,
// which makes the compiler's float32 conversions and arithmetic flush subnormals to zero; these
// never touch the float unit, so subnormals survive as on the CPU.  NaNs convert as x86 does
// (quiet bit set, payload kept in the top bits).

// The float32 with bit pattern b (low 32 bits), widened exactly to double.
NS_HD double ns_bits_f32(u64 b) {
    u32 w = (u32)b;
    u64 sign = (u64)(w >> 31) << 63;
    u32 ex = (w >> 23) & 0xFFu, man = w & 0x7FFFFFu;
    if (ex == 0xFFu)
        return ns_bits_f64(sign | 0x7FF0000000000000ULL | (man ? (1ULL << 51) : 0ULL) |
                           ((u64)man << 29));
    if (ex == 0) {                                   // zero or subnormal: man * 2**-149, exact
        double v = (double)man * ns_bits_f64((u64)(1023 - 149) << 52);
        return ns_bits_f64(ns_f64_bits(v) | sign);
    }
    return ns_bits_f64(sign | ((u64)(ex - 127 + 1023) << 52) | ((u64)man << 29));
}

// The bit pattern of a double that float32 holds exactly (or +-Inf, NaN), as float32 bits.
NS_HD u32 ns_f32_bits_of(double v) {
    u64 b = ns_f64_bits(v);
    u32 sign = (u32)(b >> 63) << 31;
    i64 ex = (i64)((b >> 52) & 0x7FF);
    u64 man = b & ((1ULL << 52) - 1ULL);
    if (ex == 0x7FF) return sign | 0x7F800000u | (man ? 0x400000u | (u32)(man >> 29) : 0u);
    if (ex == 0) return sign;                        // zero (no double subnormal is a float32)
    i64 e = ex - 1023;
    if (e >= -126) return sign | ((u32)(e + 127) << 23) | (u32)(man >> 29);
    return sign | (u32)((man | (1ULL << 52)) >> (-97 - e));    // a float32 subnormal
}

NS_HD float ns_f32_from_bits(u32 w) {
#if NS_DEVICE_PASS
    return __uint_as_float(w);
#else
    float f;
    memcpy(&f, &w, sizeof f);
    return f;
#endif
}

NS_HD u32 ns_f32_word(float f) {
#if NS_DEVICE_PASS
    return __float_as_uint(f);
#else
    u32 w;
    memcpy(&w, &f, sizeof w);
    return w;
#endif
}

// Element i of a float32 or float64 array as a double, and a double (exact in the array's type)
// stored into one: the kernels' only reads and writes of real-valued arrays.
NS_HD double ns_load(const double* p, i64 i) { return p[i]; }
NS_HD double ns_load(const float* p, i64 i) { return ns_bits_f32(ns_f32_word(p[i])); }
NS_HD void ns_store(double* p, i64 i, double v) { p[i] = v; }
NS_HD void ns_store(float* p, i64 i, double v) { p[i] = ns_f32_from_bits(ns_f32_bits_of(v)); }


NS_HD i64 ns_min(i64 a, i64 b) { return a < b ? a : b; }
NS_HD i64 ns_max(i64 a, i64 b) { return a > b ? a : b; }
NS_HD bool ns_isnan(double x) { return x != x; }
NS_HD bool ns_isfinite(double x) { return ((ns_f64_bits(x) >> 52) & 0x7FF) != 0x7FF; }
NS_HD bool ns_signbit(double x) { return (ns_f64_bits(x) >> 63) != 0; }
NS_HD double ns_fabs(double x) { return ns_bits_f64(ns_f64_bits(x) & 0x7FFFFFFFFFFFFFFFULL); }
NS_HD double ns_copysign(double x, double s) {
    return ns_bits_f64((ns_f64_bits(x) & 0x7FFFFFFFFFFFFFFFULL) | (ns_f64_bits(s) & (1ULL << 63)));
}
NS_HD double ns_inf() { return ns_bits_f64(0x7FF0000000000000ULL); }
NS_HD double ns_nan() { return ns_bits_f64(0x7FF8000000000000ULL); }
NS_HD double ns_floor(double x) { return floor(x); }
NS_HD double ns_ceil(double x) { return ceil(x); }
NS_HD double ns_rint(double x) { return rint(x); }            // ties to even, as np.rint
NS_HD double ns_ldexp(double x, i64 e) { return ldexp(x, (int)e); }
NS_HD double ns_frexp(double x, i64* e) {                   // x = m * 2**e, 0.5 <= |m| < 1
    int k;
    double m = frexp(x, &k);
    *e = k;
    return m;
}

// counter += v: an atomic add on the device, a plain one on the (serial) host build.
NS_HD void ns_count(u64* counter, u64 v) {
    if (v == 0) return;
#if NS_DEVICE_PASS
    atomicAdd(counter, v);
#else
    *counter += v;
#endif
}

// *slot = max(*slot, v) for non-negative doubles (their bit patterns order as integers; NaN is
// larger than every number, so a NaN wins).
NS_HD void ns_max_abs(u64* slot, double v) {
    u64 b = ns_f64_bits(ns_fabs(v));
#if NS_DEVICE_PASS
    atomicMax(slot, b);
#else
    if (b > *slot) *slot = b;
#endif
}
