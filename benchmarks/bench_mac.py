"""Emulated GEMM throughput of every MAC preset, against numpy's BLAS float32 matmul run in the
same process (and APyTypes' accumulator-context matmul where it is installed: it is not a numsim
dependency; ``pip install apytypes`` into the environment to include it).

    .venv/bin/python benchmarks/bench_mac.py [--size 512] [--repeat 3] [--presets a b ...]
        [--modes m ...] [--orders o ...]

Each line: the preset, G MAC/s of ``mac_models.matmul`` on size x size x size (random normal
operands, integers for the integer presets; the time includes quantizing them into the preset's
formats, O(size^2) against the O(size^3) MACs), and the ratio to BLAS; then an fp16 register
(fp8_e4m3 operands) in each rounding mode of ``--modes`` (stochastic also in fp32 with 32 random
bits, whose thresholds reach below float64's bits of the sum), in each summation order of
``--orders``.

Targets (issue 5, 2-core machine): int8->int32 >= 10 G MAC/s, fp16 accumulation rounded after
every add >= 3 G MAC/s, fp32-RNE sequential >= 5 G MAC/s, aligned >= 1 G MAC/s.
"""
from __future__ import annotations

import argparse

import numpy as np
from bench_formats import best_seconds, print_machine

import mac_models as mm
from formats.rounding import MODES
from mac_models.mac import ORDERS


def operands(name: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random operands in a range suited to the preset (integers for integer presets)."""
    a = rng.standard_normal((size, size))
    b = rng.standard_normal((size, size))
    if name.startswith("int8"):
        return np.rint(np.clip(a * 30, -127, 127)), np.rint(np.clip(b * 30, -127, 127))
    if name.startswith("int16"):
        return np.rint(a * 3000), np.rint(b * 3000)
    return a, b


def apytypes_rate(size: int, repeat: int) -> str:
    """APyTypes fp16 x fp16 -> fp16 accumulator-context matmul on at most 128^3, in G MAC/s (it
    rounds each product into the accumulator format too, like our fused=False)."""
    try:
        import apytypes as apy
    except ImportError:
        return "APyTypes not installed (pip install apytypes to compare)"
    n = min(size, 128)
    rng = np.random.default_rng(0)
    a = apy.APyFloatArray.from_float(rng.standard_normal((n, n)), 5, 10)
    b = apy.APyFloatArray.from_float(rng.standard_normal((n, n)), 5, 10)

    def run():
        with apy.APyFloatAccumulatorContext(exp_bits=5, man_bits=10):
            return a @ b
    sec = best_seconds(run, repeat)
    return f"APyTypes fp16 accumulator context ({n}^3): {n ** 3 / sec / 1e9:.3f} G MAC/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="M = N = K")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per measurement")
    parser.add_argument("--presets", nargs="*", default=mm.preset_names())
    parser.add_argument("--modes", nargs="*", default=list(MODES),
                        help="rounding modes of an fp16 register (fp8_e4m3 operands) to time")
    parser.add_argument("--orders", nargs="*", default=list(ORDERS),
                        help="summation orders to time the rounding modes in")
    args = parser.parse_args()
    print_machine()
    rng = np.random.default_rng(0)
    n = args.size
    macs = n ** 3
    a32 = rng.standard_normal((n, n)).astype(np.float32)
    b32 = rng.standard_normal((n, n)).astype(np.float32)
    blas = macs / best_seconds(lambda: a32 @ b32, args.repeat) / 1e9
    print(f"numpy float32 matmul (BLAS): {blas:.1f} G MAC/s")
    print(apytypes_rate(n, args.repeat))
    print(f"{'preset':46s} {'G MAC/s':>8s} {'/ BLAS':>8s}")
    for name in args.presets:
        a, b = operands(name, n, rng)
        mac = mm.preset(name)
        rate = macs / best_seconds(lambda: mm.matmul(a, b, mac), args.repeat) / 1e9
        print(f"{name:46s} {rate:8.3f} {rate / blas:8.4f}", flush=True)
    a, b = operands("fp", n, rng)
    for mode in args.modes:
        for reg, sr_bits in (("fp16", None), ("fp32", 32)) if mode == "stochastic" else \
                (("fp16", None),):
            for order in args.orders:
                acc = mm.FloatAccumulator(reg, mode, seed=1 if mode == "stochastic" else None,
                                          sr_bits=sr_bits)
                mac = mm.MAC("fp8_e4m3", accumulator=acc, order=order)
                rate = macs / best_seconds(lambda: mm.matmul(a, b, mac), args.repeat) / 1e9
                label = (f"fp8_e4m3->{reg} {mode}" + (f" sr_bits={sr_bits}" if sr_bits else "")
                         + (f" {order}" if order != "sequential" else ""))
                print(f"{label:46s} {rate:8.3f} {rate / blas:8.4f}", flush=True)


if __name__ == "__main__":
    main()
