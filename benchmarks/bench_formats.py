"""Quantize throughput of numsim's scalar formats, as ratios against references run in the same
process: ml_dtypes' round-trip cast (float32 -> format -> float32) and a Numba parallel copy of
the same float32 array into a new array (the memory-bandwidth ceiling for a function that returns
its result; the copy into a reused array is printed too).

    .venv/bin/python benchmarks/bench_formats.py [--n-log2 24] [--repeat 5]

Targets (issue 2, 2-core machine): quantize >= 10x ml_dtypes for fp8_e4m3 and fp4_e2m1;
>= 40% of the copy's throughput for every float format; bf16 stochastic rounding >= 0.5 G/s.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import ml_dtypes
import numba
import numpy as np
from numba import njit, prange

import formats

ML_DTYPES = {"bf16": ml_dtypes.bfloat16, "fp8_e4m3": ml_dtypes.float8_e4m3fn,
             "fp4_e2m1": ml_dtypes.float4_e2m1fn}


@njit(parallel=True, cache=True)
def parallel_copy(src: np.ndarray, dst: np.ndarray) -> None:
    """The reference: read and write every element once, in parallel."""
    for i in prange(src.shape[0]):
        dst[i] = src[i]


def fresh_copy(src: np.ndarray) -> np.ndarray:
    """The same copy into a newly allocated array, as quantize returns one (its first-touch page
    faults cost about as much as the copy itself)."""
    dst = np.empty_like(src)
    parallel_copy(src, dst)
    return dst


def best_seconds(fn, repeat: int) -> float:
    """Best wall time of ``repeat`` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def size_args(doc: str) -> argparse.Namespace:
    """The options every benchmark here takes: --n-log2 (array size) and --repeat."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--n-log2", type=int, default=24, help="array size is 2**N float32")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per measurement")
    return parser.parse_args()


def print_machine(**versions: str) -> None:
    """The machine line: CPU, cores, Numba threads and the versions of what was measured."""
    extra = "".join(f", {name} {version}" for name, version in versions.items())
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, numba threads {numba.get_num_threads()}"
          f", numpy {np.__version__}{extra}, numba {numba.__version__}")


def main() -> None:
    args = size_args(__doc__)
    n = 1 << args.n_log2
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    y = np.zeros_like(x)
    print_machine(ml_dtypes=ml_dtypes.__version__)
    print(f"input: {n:,} float32 standard normal values")
    float_formats = [f for f in map(formats.get, formats.names())
                     if isinstance(f, formats.FloatFormat)]
    for fmt in float_formats:               # compile every kernel before any timing
        fmt.quantize(x[:4096])
        fmt.quantize(x[:4096], rounding="stochastic", seed=1)
        fmt.quantize(x[:4096], rounding="toward_zero")
    # The reference is the copy into a reused array, timed before and after the formats (the
    # best of both): the most demanding ceiling.  A copy into a new array, which pays the same
    # first-touch page faults as quantize's result, is printed for context.
    t_copy = best_seconds(lambda: parallel_copy(x, y), args.repeat)
    t_fresh = best_seconds(lambda: fresh_copy(x), args.repeat)
    rows = []
    for fmt in float_formats:
        t_ours = best_seconds(lambda: fmt.quantize(x), args.repeat)
        t_ml = None
        if fmt.name in ML_DTYPES:
            t_ml = best_seconds(lambda: x.astype(ML_DTYPES[fmt.name]).astype(np.float32),
                                args.repeat)
        rows.append((fmt.name, t_ours, t_ml))
    t_copy = min(t_copy, best_seconds(lambda: parallel_copy(x, y), args.repeat))
    print(f"numba parallel copy into a reused array (reference): {n / t_copy / 1e9:.3f} "
          f"G elements/s (best of before and after); into a new array: "
          f"{n / t_fresh / 1e9:.3f} G elements/s")
    print(f"{'format':<16}{'numsim G/s':>11}{'vs copy':>9}{'ml_dtypes G/s':>15}{'numsim/ml_dtypes':>18}")
    for name, t_ours, t_ml in rows:
        line = f"{name:<16}{n / t_ours / 1e9:>11.3f}{t_copy / t_ours:>8.0%} "
        if t_ml is not None:
            line += f"{n / t_ml / 1e9:>14.3f}{t_ml / t_ours:>17.1f}x"
        print(line)
    # fp32 from float32 input discards nothing, but the kernel does the same work; stochastic
    # rounding with the default 32 random bits takes the path that reads below float64's bits
    for name in ("bf16", "fp8_e4m3", "fp32"):
        fmt = formats.get(name)
        for mode in ("stochastic", "toward_zero"):
            t = best_seconds(lambda: fmt.quantize(x, rounding=mode, seed=1), args.repeat)
            print(f"{name} {mode} rounding: {n / t / 1e9:.3f} G elements/s "
                  f"({t_copy / t:.0%} of copy)")


if __name__ == "__main__":
    main()
