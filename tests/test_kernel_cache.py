"""Numba's on-disk kernel cache shared by processes that compile at the same time.

Numba saves a compiled overload by reading the function's index, taking the first free data-file
number, writing the index, then the data.  Two processes that do this at once for two overloads
of one function (two closures of a kernel factory, or two signatures) can take the same number:
the index of one then points at the machine code of the other.  The test forces that
interleaving with delays at the two writes; ``formats.kernel_cache.njit`` must keep each save
whole (a file lock), so a later process loads the right code for both.
"""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from numba.core.caching import IndexDataCacheFile
from numba.core.dispatcher import Dispatcher

import mac_models  # noqa: F401  (defines the MAC kernels)
from formats import kernel_cache

REPO = Path(__file__).resolve().parents[1]

KERNELS = """
from formats.kernel_cache import njit

def scale_by(k):
    @njit
    def scaled(x):
        return x * k
    return scaled

SCALED = (scale_by(2.0), scale_by(3.0))
"""

# argv: which (0 or 1), the barrier directory.  Process 0 writes its index at once and its
# data 2 s later; process 1 reads the index at the same time as 0 but writes its index 1.5 s
# later.  Unlocked, that leaves process 1's index naming the data file that holds process 0's
# code.
COMPILE = """
import sys, time
from pathlib import Path
import numba.core.caching as caching
import race_kernels

which, barrier = int(sys.argv[1]), Path(sys.argv[2])
delay = {"_save_index": (0.5, 1.5), "_save_data": (2.0, 0.0)}
for name, seconds in delay.items():
    def delayed(self, *args, _orig=getattr(caching.IndexDataCacheFile, name),
                _s=seconds[which]):
        time.sleep(_s)
        return _orig(self, *args)
    setattr(caching.IndexDataCacheFile, name, delayed)
(barrier / str(which)).touch()
deadline = time.monotonic() + 120
while len(list(barrier.iterdir())) < 2:
    assert time.monotonic() < deadline, "the other process never started"
    time.sleep(0.01)
race_kernels.SCALED[which](1.0)
"""

LOAD = """
import race_kernels
print([f(1.0) for f in race_kernels.SCALED], [sum(f.stats.cache_hits.values()) for f in race_kernels.SCALED])
"""


def test_concurrent_saves_of_one_kernel_keep_each_overload(tmp_path):
    (tmp_path / "race_kernels.py").write_text(KERNELS)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    procs = [subprocess.Popen([sys.executable, "-c", COMPILE, str(which), str(barrier)],
                              env=env, stderr=subprocess.PIPE, text=True) for which in (0, 1)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    out = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    assert out.split() == ["[2.0,", "3.0]", "[1,", "1]"], out     # right values, from the cache


def _kernels():
    """Every Numba dispatcher the kernel modules of formats and mac_models define, including
    those held in tuples (kernel factories' products)."""
    modules = [m for m in sys.modules.values()
               if m and m.__name__.split(".")[0] in ("formats", "mac_models")]
    for module in modules:
        for value in vars(module).values():
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, Dispatcher) and inspect.getmodule(item.py_func) is module:
                    yield item


def test_every_kernel_saves_under_the_lock():
    kernels = list(_kernels())
    assert len(kernels) > 100
    plain = [k.py_func.__qualname__ for k in kernels
             if type(k._cache._cache_file) is IndexDataCacheFile]
    assert not plain, f"use formats.kernel_cache.njit, not numba.njit: {plain}"
    assert all(isinstance(k._cache._cache_file, kernel_cache.LockedCacheFile) for k in kernels)
