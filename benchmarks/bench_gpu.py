"""GPU engine throughput (``backend="gpu"``), as ratios against references run in the same
process on the same GPU: a device-to-device copy of the same float32 array (the memory-bandwidth
ceiling for quantize) and ``cupy.matmul`` in float32 (cuBLAS) for the emulated GEMMs.

    .venv/bin/python benchmarks/bench_gpu.py [--n-log2 26] [--size 2048] [--repeat 5]
                                             [--seconds 0.5]

Needs CuPy and an NVIDIA GPU (``pip install cupy-cuda12x``); without them it says so and exits 0,
so ``make bench`` runs on any machine.  Arrays stay on the device: the times exclude host
transfers but include the result allocation, as a user calling ``fmt.quantize(cupy_array)`` sees.
Targets (issue 9, one H100): quantize >= 70% of the copy's throughput; emulated int8 -> int32
GEMM >= 1 T MAC/s; fp16 accumulation rounded after every add (``fp16->fp16``) >= 100 G MAC/s.
"""
from __future__ import annotations

import argparse
import functools
import numpy as np

import formats
import mac_models as mm
from formats import gpu

PROBE = 512                     # the GEMM size that sizes each preset's timed run
QUANTIZE = ("fp8_e4m3", "fp8_e5m2", "bf16", "fp4_e2m1", "fp6_e2m3", "posit16_2", "int8",
            "mxfp4", "mxfp8_e4m3", "nvfp4")


def device_seconds(cupy, fn, repeat: int) -> float:
    """Best time of ``repeat`` calls after one warm-up (which also compiles), each bracketed by
    CUDA events so it measures the device's work."""
    fn()
    cupy.cuda.Device().synchronize()
    best = float("inf")
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return best


def quantize_rates(cupy, n: int, repeat: int) -> None:
    x = cupy.asarray(np.random.default_rng(0).standard_normal(n, dtype=np.float32))
    copy = n / device_seconds(cupy, lambda: x.copy(), repeat) / 1e9
    print(f"device-to-device copy of {n} float32: {copy:.1f} G elements/s")
    print(f"{'format':16s} {'G elem/s':>9s} {'/ copy':>7s}")
    for name in QUANTIZE:
        fmt = formats.get(name)
        rate = n / device_seconds(cupy, lambda: fmt.quantize(x, backend="gpu"), repeat) / 1e9
        print(f"{name:16s} {rate:9.3g} {rate / copy:7.3g}", flush=True)


def preset_operands(cupy, name: str, a32, b32) -> tuple:
    """The float32 operands as the preset's operand format expects them: integers for the
    integer presets (int8 within +-127, int16 within about +-12000), else unchanged."""
    if name.startswith("int8"):
        return tuple(cupy.rint(cupy.clip(v * 30, -127, 127)) for v in (a32, b32))
    if name.startswith("int16"):
        return tuple(cupy.rint(v * 3000) for v in (a32, b32))
    return a32, b32


def gemm_size(rate: float, most: int, seconds: float) -> int:
    """The GEMM size for a preset that runs ``rate`` MAC/s: ``most`` where one call of
    ``most**3`` MACs takes at most ``seconds``, else the largest multiple of 256 whose call
    does, but not below ``min(PROBE, most)``."""
    budget = rate * seconds
    if most ** 3 <= budget:
        return most
    n = min(PROBE, most)
    while (n + 256) ** 3 <= budget:
        n += 256
    return n


def gemm_rates(cupy, size: int, repeat: int, seconds: float) -> None:
    """Each preset timed at ``size``, or at a smaller :func:`gemm_size` judged from a call at
    PROBE, against cuBLAS's float32 matmul at the same size."""
    rng = np.random.default_rng(1)
    full = tuple(cupy.asarray(rng.standard_normal((size, size), dtype=np.float32))
                 for _ in range(2))

    def rate(fn, operands: tuple, n: int, calls: int) -> float:
        """G MAC/s of ``fn(a, b)`` on the leading n x n blocks of ``operands``."""
        a, b = (cupy.ascontiguousarray(v[:n, :n]) for v in operands)
        return n ** 3 / device_seconds(cupy, lambda: fn(a, b), calls) / 1e9

    blas = functools.cache(lambda n: rate(lambda a, b: a @ b, full, n, repeat))
    print(f"cupy float32 matmul (cuBLAS) {size}^3: {blas(size):.0f} G MAC/s")
    print(f"{'preset':34s} {'size':>5s} {'G MAC/s':>9s} {'/ cuBLAS':>9s}  (cuBLAS at that size)")
    for name in mm.preset_names():
        mac = mm.preset(name)
        operands = preset_operands(cupy, name, *full)

        def emulated(a, b):
            return mm.matmul(a, b, mac, backend="gpu")

        n = min(PROBE, size)
        n = gemm_size(rate(emulated, operands, n, 1) * 1e9, size, seconds)
        got = rate(emulated, operands, n, repeat)
        print(f"{name:34s} {n:5d} {got:9.3g} {got / blas(n):9.3g}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-log2", type=int, default=26, help="quantize array size, log2")
    parser.add_argument("--size", type=int, default=2048, help="GEMM M = N = K")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--seconds", type=float, default=0.5,
                        help="longest GEMM call: slower presets run at a smaller size")
    args = parser.parse_args()
    cupy = gpu.cupy_module()
    if cupy is None:
        print("bench_gpu: no CuPy with an NVIDIA GPU here; nothing measured")
        return
    props = cupy.cuda.runtime.getDeviceProperties(0)
    print(f"GPU: {props['name'].decode()}, CuPy {cupy.__version__}, "
          f"CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}")
    quantize_rates(cupy, 1 << args.n_log2, args.repeat)
    gemm_rates(cupy, args.size, args.repeat, args.seconds)


if __name__ == "__main__":
    main()
