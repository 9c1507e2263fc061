"""``benchmarks/bench_gpu.py`` on the host build of the CUDA sources, with NumPy and a wall clock
standing in for CuPy and its events: CI has no GPU, and a benchmark that first fails on a lent
GPU wastes that GPU's time.  Its measuring functions run for real on tiny sizes (their figures
mean nothing and are not read); the sizing of each GEMM is checked with a fixed time per call."""
from __future__ import annotations

import importlib.util
import time
import types
from pathlib import Path

import numpy as np
import pytest

import mac_models as mm
from formats import gpu
from formats.gpu.host import compiler

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_gpu.py"


class _Event:
    """cupy.cuda.Event's record/synchronize, on the wall clock."""

    def record(self) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass


NUMPY_AS_CUPY = types.SimpleNamespace(
    asarray=np.asarray, rint=np.rint, clip=np.clip, ascontiguousarray=np.ascontiguousarray,
    cuda=types.SimpleNamespace(
        Device=lambda: types.SimpleNamespace(synchronize=lambda: None), Event=_Event,
        get_elapsed_time=lambda start, stop: (stop.t - start.t) * 1e3))


@pytest.fixture(scope="module")
def bench() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}


def test_every_quantize_format_and_preset_gets_a_rate(bench, capsys):
    if compiler() is None:
        pytest.skip("no C++ compiler to build the CUDA sources for the host")
    with gpu.use_host_build():
        bench.quantize_rates(NUMPY_AS_CUPY, 4096, 1)
        bench.gemm_rates(NUMPY_AS_CUPY, 64, 1, 0.01)
    rows = _rows(capsys.readouterr().out)
    for name in bench.QUANTIZE:
        assert float(rows[name][0]) > 0, name
    for name in mm.preset_names():
        size, rate, _ = rows[name]
        assert int(size) == 64 and float(rate) > 0, name


def test_each_preset_runs_at_the_size_its_probe_allows(bench, capsys, monkeypatch):
    """With every call taking 10 ms, the probe at 512 says 512**3 / 0.01 MAC/s, so a 0.5 s
    call holds 6.7e9 MACs: 1792**3 = 5.8e9 fits, 2048**3 = 8.6e9 does not."""
    monkeypatch.setattr(bench, "device_seconds", lambda cupy, fn, repeat: 0.01)
    bench.gemm_rates(NUMPY_AS_CUPY, 2048, 1, 0.5)
    rows = _rows(capsys.readouterr().out)
    assert [rows[name][0] for name in mm.preset_names()] == ["1792"] * len(mm.preset_names())


def test_gemm_size_keeps_one_call_within_the_time_given(bench):
    assert bench.gemm_size(1e12, 2048, 0.5) == 2048          # 2048**3 MACs take 8.6 ms
    assert bench.gemm_size(1e9, 2048, 0.5) == 768            # 768**3 / 1e9 = 0.45 s
    assert bench.gemm_size(768 ** 3, 2048, 1.0) == 768       # exactly one second
    assert bench.gemm_size(1e9, 1000, 1.0) == 1000           # 1000**3 / 1e9 = 1 s: all of it
    assert bench.gemm_size(1e6, 2048, 0.5) == bench.PROBE    # never below the probe's size
    assert bench.gemm_size(1e6, 300, 0.5) == 300             # nor above the size asked for
