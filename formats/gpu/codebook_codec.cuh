// Codebook (lookup-table) formats: the CUDA/C++ twin of the kernels in formats/codebook.py.
// `values` are the table's distinct values sorted ascending (nv of them) and `codes` their codes
// (CodebookFormat._sorted, _sorted_codes); `table` maps a code to its value.
#pragma once
#include "rounding.cuh"

// np.searchsorted(values, s, side="right") as Numba computes it: the number of values <= s
// (every value when s is NaN).
NS_HD i64 ns_codebook_search(double s, const double* values, i64 nv) {
    i64 lo = 0, hi = nv;
    while (lo < hi) {
        i64 mid = lo + ((hi - lo) >> 1);
        if (ns_isnan(s) || values[mid] <= s)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

// codebook.round_table_index: index in `values` of the rounded exact value s + e (e the low word
// of a pair, or 0).
NS_HD i64 ns_codebook_round_index(double s, double e, const double* values, const i64* codes,
                                  i64 nv, i64 mode, u64 key, i64 index, i64 sr_bits) {
    i64 i = ns_codebook_search(s, values, nv);
    if (i == 0) return 0;
    if (i == nv) return nv - 1;
    double lo = values[i - 1];
    double hi = values[i];
    double below = s - lo + e;
    double above = hi - s - e;
    if (below == 0.0) return i - 1;
    if (below < 0.0) {                          // s == lo and a negative tail
        if (i == 1) return 0;
        hi = lo;
        lo = values[i - 2];
        i -= 1;
        above = hi - s - e;
        below = s - lo + e;
    }
    bool up = false;
    if (mode == NS_NEAREST_EVEN) {
        bool even_hi = codes[i] % 2 == 0;
        bool tie_up = even_hi != (codes[i - 1] % 2 == 0) ? even_hi : ns_fabs(hi) < ns_fabs(lo);
        up = above < below || (above == below && tie_up);
    } else if (mode == NS_NEAREST_AWAY) {
        up = above < below || (above == below && ns_fabs(hi) >= ns_fabs(lo));
    } else if (mode == NS_TOWARD_POSITIVE) {
        up = true;
    } else if (mode == NS_TOWARD_ZERO) {
        up = s + e < 0.0;
    } else if (mode == NS_STOCHASTIC) {
        double frac = below / (hi - lo);
        up = ns_random_bits(key, index, sr_bits) < (u64)ns_floor(frac * ns_pow2(sr_bits));
    }
    return up ? i : i - 1;
}

// codebook.round_table: the code of that value.
NS_HD i64 ns_codebook_round_table(double s, double e, const double* values, const i64* codes,
                                  i64 nv, i64 mode, u64 key, i64 index, i64 sr_bits) {
    return codes[ns_codebook_round_index(s, e, values, codes, nv, mode, key, index, sr_bits)];
}

// The sum (*s, *e) of codebook.arith_kernel: table values x op y [+ z], products exact in float64
// for float32-like tables, sums as TwoSum pairs.
NS_HD void ns_codebook_exact_op(i64 op, double x, double y, double z, double* s, double* e) {
    *e = 0.0;
    if (op == NS_OP_MUL || op == NS_OP_FMA) {
        *s = x * y;
        if (op == NS_OP_FMA) ns_two_sum(*s, z, s, e);
    } else {
        if (op == NS_OP_SUB) y = -y;
        ns_two_sum(x, y, s, e);
    }
}
