"""Cold-start cost: how long the first call of each common operation takes with an empty kernel
cache, and which Numba kernels it compiles (the top-level compiles, each with the kernels it pulls
in; shares are of that first call's wall time).  A rerun with the cache filled takes milliseconds,
so this is the one-time cost a new user and each CI run pay.

    .venv/bin/python benchmarks/bench_compile.py [--only NAME ...]

It compiles into a temporary cache directory (``XDG_CACHE_HOME`` set before numsim is imported),
so the user's cache is neither used nor touched.  Compiles from one operation that a later one
reuses count for the first only.
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


def compiles(buffer) -> list[tuple[str, float]]:
    """(kernel, seconds) of the top-level compiles in a numba:compile event buffer."""
    stack, out = [], []
    for ts, ev in buffer:
        fn = ev.data["dispatcher"].py_func
        if ev.is_start:
            stack.append(ts)
        else:
            start = stack.pop()
            if not stack:
                out.append((f"{fn.__module__}.{fn.__qualname__}".replace(".<locals>", ""),
                            ts - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=list(OPERATIONS),
                        help="operations to time, e.g. 'quantize fp8_e4m3' 'matmul fp16->fp16'")
    args = parser.parse_args()
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="numsim-bench-compile-")
    from bench_formats import print_machine       # imports numsim: after the cache moved
    from numba.core import event
    print_machine(python=sys.version.split()[0])
    print(f"{'operation':30s} {'first call s':>12s}  kernels compiled (s, share)")
    for operation in args.only:
        with event.install_recorder("numba:compile") as rec:
            start = time.perf_counter()
            run(operation)
            wall = time.perf_counter() - start
        parts = sorted(compiles(rec.buffer), key=lambda p: -p[1])
        shown = ", ".join(f"{k.split('.')[-1]} {s:.1f} ({s / wall:.0%})"
                          for k, s in parts if s >= 0.5)
        print(f"{operation:30s} {wall:12.1f}  {shown}", flush=True)


if __name__ == "__main__":
    main()
