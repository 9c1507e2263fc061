"""``benchmarks/bench_gpu.py`` on ``cupy_stand_in`` (the host build of the CUDA sources behind
the CuPy launcher, with CuPy's array rules and a wall clock for its events): CI has no GPU, and a
benchmark that first fails on a lent GPU wastes that GPU's time.  It runs for real on tiny sizes
(its figures mean nothing and are not read); the sizing of each GEMM is checked with a fixed time
per call."""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

import mac_models as mm

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}


def test_every_quantize_format_and_preset_gets_a_rate(bench, stand_in, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench_gpu.py", "--n-log2", "12", "--size", "64",
                                      "--repeat", "1", "--seconds", "0.01"])
    bench.main()
    out = capsys.readouterr().out
    assert out.startswith("GPU: CuPy stand-in (host build), CuPy stand-in"), out
    rows = _rows(out)
    for name in bench.QUANTIZE:
        assert float(rows[name][0]) > 0, name
    for name in mm.preset_names():
        size, rate, _ = rows[name]
        assert int(size) == 64 and float(rate) > 0, name


def test_each_preset_runs_at_the_size_its_probe_allows(bench, stand_in, capsys, monkeypatch):
    """With every call taking 10 ms, the probe at 512 says 512**3 / 0.01 MAC/s, so a 0.5 s
    call holds 6.7e9 MACs: 1792**3 = 5.8e9 fits, 2048**3 = 8.6e9 does not."""
    monkeypatch.setattr(bench, "device_seconds", lambda cupy, fn, repeat: 0.01)
    bench.gemm_rates(stand_in, 2048, 1, 0.5)
    rows = _rows(capsys.readouterr().out)
    assert [rows[name][0] for name in mm.preset_names()] == ["1792"] * len(mm.preset_names())


def test_gemm_size_keeps_one_call_within_the_time_given(bench):
    assert bench.gemm_size(1e12, 2048, 0.5) == 2048          # 2048**3 MACs take 8.6 ms
    assert bench.gemm_size(1e9, 2048, 0.5) == 768            # 768**3 / 1e9 = 0.45 s
    assert bench.gemm_size(768 ** 3, 2048, 1.0) == 768       # exactly one second
    assert bench.gemm_size(1e9, 1000, 1.0) == 1000           # 1000**3 / 1e9 = 1 s: all of it
    assert bench.gemm_size(1e6, 2048, 0.5) == bench.PROBE    # never below the probe's size
    assert bench.gemm_size(1e6, 300, 0.5) == 300             # nor above the size asked for
