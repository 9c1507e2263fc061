"""Posit throughput, as ratios against references run in the same process: a SoftPosit
per-element loop on the same values (double -> posit -> double) and numsim's own fp16 quantize of
the same array; the quire's fused dot product against SoftPosit's quire loop.

    .venv/bin/python benchmarks/bench_posits.py [--n-log2 24] [--repeat 5]

Target (issue 3, 2-core machine): posit16 quantize >= 0.3 G elements/s.
"""
from __future__ import annotations

import time
from importlib import metadata

import numpy as np
import softposit as sp
from bench_formats import best_seconds, print_machine, size_args

import formats


def softposit_quantize16(values: np.ndarray) -> np.ndarray:
    """SoftPosit's posit16 round trip, one Python call pair per element."""
    return np.array([sp.convertP16ToDouble(sp.convertDoubleToP16(v)) for v in values.tolist()])


def softposit_dot16(a: np.ndarray, b: np.ndarray) -> int:
    """SoftPosit's quire16 fused dot product of two code vectors."""
    q = sp.q16Clr()
    pa, pb = sp.posit16_t(), sp.posit16_t()
    for x, y in zip(a.tolist(), b.tolist()):
        pa.v, pb.v = x, y
        q = sp.q16_fdp_add(q, pa, pb)
    return sp.q16_to_p16(q).v


def main() -> None:
    args = size_args(__doc__)
    n = 1 << args.n_log2
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    print_machine(softposit=metadata.version("softposit"))
    print(f"input: {n:,} float32 standard normal values")
    p16, fp16 = formats.get("posit16_1"), formats.get("fp16")
    names = ("posit8_0", "posit16_1", "posit16_2", "posit32_2")
    for name in names:                     # compile every kernel before any timing
        formats.get(name).quantize(x[:4096])
        formats.get(name).quantize(x[:4096], rounding="stochastic", seed=1)
    fp16.quantize(x[:4096])

    # SoftPosit is ~1 M elements/s: time it on a slice, and check it agrees on that slice
    m = min(n, 1 << 17)
    t0 = time.perf_counter()
    ref = softposit_quantize16(x[:m])
    t_sp = (time.perf_counter() - t0) / m
    assert np.array_equal(ref, p16.quantize(x[:m]).astype(np.float64)), "SoftPosit disagrees"
    t_fp16 = best_seconds(lambda: fp16.quantize(x), args.repeat) / n

    print(f"SoftPosit posit16 loop: {1e-9 / t_sp:.4f} G elements/s; numsim fp16 quantize: "
          f"{1e-9 / t_fp16:.3f} G elements/s")
    print(f"{'format':<12}{'rounding':<14}{'numsim G/s':>11}{'vs SoftPosit':>14}{'vs fp16':>9}")
    for name in names:
        for rounding in ("nearest_even", "stochastic"):
            fmt = formats.get(name)
            t = best_seconds(lambda: fmt.quantize(x, rounding=rounding, seed=1), args.repeat) / n
            print(f"{name:<12}{rounding:<14}{1e-9 / t:>11.3f}{t_sp / t:>13.0f}x{t_fp16 / t:>8.2f}x")

    # fused dot products: rows of length 1024 through the quire
    k = 1024
    codes = p16.encode(x).reshape(-1, k)
    a, b = codes[: codes.shape[0] // 2], codes[codes.shape[0] // 2:]
    formats.fused_dot(p16, a[:2], b[:2])
    t_dot = best_seconds(lambda: formats.fused_dot(p16, a, b), args.repeat) / a.size
    t0 = time.perf_counter()
    ref_code = softposit_dot16(a[0], b[0])
    t_spdot = (time.perf_counter() - t0) / k
    assert ref_code == int(formats.fused_dot(p16, a[0], b[0])), "SoftPosit quire disagrees"
    print(f"posit16 fused dot (quire, rows of {k}): {1e-9 / t_dot:.3f} G MAC/s; "
          f"SoftPosit quire loop {1e-9 / t_spdot:.4f} G MAC/s ({t_spdot / t_dot:.0f}x)")


if __name__ == "__main__":
    main()
