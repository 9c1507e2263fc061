"""``benchmarks/bench_compile.py``'s reading of Numba's compile events: nested compiles belong
to the top-level compile that started them.  (Its timings need an empty cache and minutes, so
CI does not run the script itself.)"""
from __future__ import annotations

import importlib.util
import types
from pathlib import Path

from numba.core.event import Event, EventStatus

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_compile.py"


def _bench() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("bench_compile", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _events(*steps: tuple[float, str, str]) -> list:
    """(time, "start" or "end", kernel name) steps as a numba:compile recorder's buffer."""
    def event(status, name):
        kernel = types.SimpleNamespace(py_func=types.SimpleNamespace(__name__=name))
        return Event("numba:compile", status, data={"dispatcher": kernel})
    return [(t, event(EventStatus.START if s == "start" else EventStatus.END, name))
            for t, s, name in steps]


def test_nested_compiles_count_for_the_top_level_one():
    buffer = _events((0.0, "start", "group_loop"), (1.0, "start", "_group_chunk"),
                     (2.0, "start", "_general_run"), (3.0, "end", "_general_run"),
                     (9.0, "end", "_group_chunk"), (10.0, "end", "group_loop"),
                     (10.5, "start", "decode_kernel"), (12.0, "end", "decode_kernel"))
    assert _bench().compiles(buffer) == [("group_loop", 10.0), ("decode_kernel", 1.5)]
