"""Replay and sweep speed on the built-in digits trace with the standard 20 configurations.

    .venv/bin/python benchmarks/bench_replay.py [--repeat 3]

Prints: the in-process replay time of the 20 configurations (propagated mode, warm kernels)
against a plain numpy float32 forward pass of the same network repeated 20 times in the same
process; then a sweep of the same cells with 1 worker and with 2 worker processes (each from an
empty results folder, so every cell runs) and the speed-up of 2 workers against 1.  Worker
start-up (a forkserver imports numsim, workers load the cached kernels) is included: that is
what a user waits for.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_formats import best_seconds, print_machine

from simulator.replay import replay
from simulator.standard import standard_configs
from simulator.sweep import Sweep, builtin_trace_path, run_sweep
from simulator.traces import load_trace


def numpy_forward(trace) -> None:
    """The network in plain numpy float32 (the reference)."""
    act = None
    for op in trace.ops:
        t = op.tensors
        if op.kind == "linear":
            x = t["input"] if act is None else act
            act = x @ t["weight"].T + t["bias"]
        else:
            act = np.maximum(act, np.float32(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print_machine()
    trace = load_trace(builtin_trace_path())
    for op in trace.ops:                      # read the tensors before timing
        dict(op.tensors.items())
    configs = standard_configs()
    t_replay = best_seconds(lambda: replay(trace, configs, "propagated"), args.repeat)
    t_numpy = best_seconds(lambda: [numpy_forward(trace) for _ in configs], args.repeat)
    print(f"replay of {len(trace.ops)} ops x {len(configs)} configs (propagated): "
          f"{t_replay:.3f} s; numpy float32 forward x {len(configs)}: {t_numpy * 1e3:.2f} ms "
          f"({t_replay / t_numpy:.0f}x)")
    times = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            sweep = Sweep("builtin:digits", configs, Path(tmp) / "out")
            t0 = time.perf_counter()
            run_sweep(sweep, workers=workers, progress=False)
            times[workers] = time.perf_counter() - t0
        print(f"sweep of {len(configs)} cells, {workers} worker(s): {times[workers]:.2f} s")
    print(f"speed-up with 2 workers against 1: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
