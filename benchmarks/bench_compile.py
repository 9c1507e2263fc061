"""Cold start: each common operation's first call with an empty kernel cache against its second
call in the same process (the ratio is the one-time cost a new user and each CI run pay), and
the Numba kernels the first call compiles (top-level compiles, each with the kernels it pulls
in, in seconds and as a share of the first call; those under 0.5 s are left out).

    .venv/bin/python benchmarks/bench_compile.py [--only OPERATION ...]

Inputs are small float64 arrays (64 x 256).  It compiles into a temporary cache directory
(``XDG_CACHE_HOME`` set and ``NUMBA_CACHE_DIR`` unset before numsim is imported, the directory
removed at the end), so the user's cache is neither read nor written.  A kernel one operation
compiles and a later one reuses counts for the first only.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

OPERATIONS = ("quantize fp8_e4m3", "quantize mxfp8_e4m3", "quantize nvfp4",
              "quantize posit16_1", "matmul int8->int32", "matmul fp16->fp16",
              "matmul fp8_e4m3->fp32_h100", "matmul posit16_quire")
SHOWN = 0.5                     # seconds: shorter compiles are left out of the listing


def run(operation: str) -> None:
    """One call of ``operation`` ("quantize FORMAT" or "matmul PRESET") on small data."""
    import formats
    import mac_models as mm
    verb, name = operation.split()
    x = np.random.default_rng(0).standard_normal((64, 256))
    if verb == "quantize":
        formats.get(name).quantize(x)
    else:
        scale = 30.0 if name.startswith("int") else 1.0
        mm.matmul(np.rint(x * scale), np.rint(x.T * scale), name)


def compiles(buffer: list) -> list[tuple[str, float]]:
    """(kernel name, seconds) of the top-level compiles in the (time, event) pairs a
    ``numba:compile`` recorder collected: compiles nest, and a nested one is part of the
    compile that started it."""
    stack: list[float] = []
    out = []
    for ts, ev in buffer:
        if ev.is_start:
            stack.append(ts)
            continue
        start = stack.pop()
        if not stack:
            out.append((ev.data["dispatcher"].py_func.__name__, ts - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=list(OPERATIONS), choices=OPERATIONS,
                        metavar="OPERATION", help=f"operations to time: {', '.join(OPERATIONS)}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="numsim-bench-compile-") as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        os.environ.pop("NUMBA_CACHE_DIR", None)     # it would win over XDG_CACHE_HOME
        from bench_formats import print_machine     # the first import of numsim and Numba
        from numba.core import event

        import mac_models  # noqa: F401  (imported here, so the first call does not time it)
        print_machine(python=sys.version.split()[0])
        print(f"{'operation':28s} {'first s':>8s} {'second s':>9s} {'ratio':>7s}  "
              f"kernels compiled: s (share of the first call)")
        for operation in args.only:
            with event.install_recorder("numba:compile") as rec:
                start = time.perf_counter()
                run(operation)
                first = time.perf_counter() - start
            start = time.perf_counter()
            run(operation)
            second = time.perf_counter() - start
            parts = sorted(compiles(rec.buffer), key=lambda p: -p[1])
            shown = ", ".join(f"{name} {s:.1f} ({s / first:.0%})" for name, s in parts
                              if s >= SHOWN)
            print(f"{operation:28s} {first:8.1f} {second:9.3f} {first / second:6.0f}x  {shown}",
                  flush=True)


if __name__ == "__main__":
    main()
