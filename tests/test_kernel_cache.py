"""Numba's on-disk kernel cache shared by processes that compile at the same time.

Numba saves a compiled overload by reading the function's index, taking the first free data-file
number, writing the index, then the data.  Two processes that do this at once for two overloads
of one function (two closures of a kernel factory, or two signatures) can take the same number:
the index of one then points at the machine code of the other.  The first test forces that
interleaving (a barrier after the compiles, delays at the writes); ``formats.kernel_cache.njit``
must keep each save whole (a file lock), so a later process loads the right code for both.
"""
from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
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

# argv: which (0 or 1), the barrier directory.  Both processes compile, then meet at the
# barrier before saving.  Process 0 writes its index 0.5 s later and its data 2 s after that;
# process 1 writes both 1.5 s after the barrier.  Unlocked, both read the empty index and take
# data file 1, and process 1's index names it while process 0's code ends up in it.
COMPILE = """
import sys, time
from pathlib import Path
import numba.core.caching as caching
import race_kernels

which, barrier = int(sys.argv[1]), Path(sys.argv[2])


def meet():
    (barrier / str(which)).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < 2:
        assert time.monotonic() < deadline, "the other process never came"
        time.sleep(0.01)


def delayed(name, seconds):
    def call(self, *args, _orig=getattr(caching.IndexDataCacheFile, name)):
        time.sleep(seconds)
        return _orig(self, *args)
    setattr(caching.IndexDataCacheFile, name, call)


def save_overload(self, *args, _orig=caching.Cache.save_overload):
    meet()
    return _orig(self, *args)


caching.Cache.save_overload = save_overload
delayed("_save_index", (0.5, 1.5)[which])
delayed("_save_data", (2.0, 0.0)[which])
race_kernels.SCALED[which](1.0)
"""

LOAD = """
import race_kernels
print([f(1.0) for f in race_kernels.SCALED],
      [sum(f.stats.cache_hits.values()) for f in race_kernels.SCALED])
"""


def test_concurrent_saves_of_one_kernel_keep_each_overload(tmp_path):
    (tmp_path / "race_kernels.py").write_text(KERNELS)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    procs = [subprocess.Popen([sys.executable, "-c", COMPILE, str(which), str(barrier)],
                              env=env, stderr=subprocess.PIPE, text=True) for which in (0, 1)]
    try:
        errors = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], errors
    out = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    assert out.split() == ["[2.0,", "3.0]", "[1,", "1]"], out     # right values, from the cache


def test_unlockable_cache_warns_and_saves_nothing(tmp_path):
    """Where ``<index>.lock`` cannot be opened (here: a directory of that name), a save warns and
    writes nothing, and a load goes on without the lock; once it can, both work."""
    cache = kernel_cache.LockedCacheFile(str(tmp_path), "kernel-1.py311", ("stamp", 1))
    (tmp_path / "kernel-1.py311.nbi.lock").mkdir()
    with pytest.warns(RuntimeWarning, match="cannot lock"):
        cache.save("key", b"code")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kernel-1.py311.nbi.lock"]
    assert cache.load("key") is None
    (tmp_path / "kernel-1.py311.nbi.lock").rmdir()
    cache.save("key", b"code")
    assert cache.load("key") == b"code"


def test_a_platform_without_flock_is_told_why_numsim_cannot_run():
    """Where ``fcntl`` is missing (Windows) importing numsim fails with the reason, not with
    the bare "No module named 'fcntl'"."""
    code = "import sys; sys.modules['fcntl'] = None; import formats"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300).stderr
    assert "ImportError: numsim needs a POSIX system" in err, err


def test_kernel_modules_use_the_locked_njit():
    """No module of formats or mac_models takes a jit decorator from Numba directly (a kernel
    made in a factory or held in a closure would escape a check of module attributes)."""
    direct = []
    for path in sorted(REPO.glob("formats/**/*.py")) + sorted(REPO.glob("mac_models/**/*.py")):
        if path.name == "kernel_cache.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("numba"):
                direct += [(path.name, a.name) for a in node.names if "jit" in a.name]
            if isinstance(node, ast.Attribute) and "jit" in node.attr and \
                    isinstance(node.value, ast.Name) and node.value.id == "numba":
                direct.append((path.name, node.attr))
    assert not direct


def _kernels():
    """The Numba dispatchers that modules of formats and mac_models hold, directly or in tuples
    (kernel factories' products)."""
    modules = [m for m in sys.modules.values()
               if m and m.__name__.split(".")[0] in ("formats", "mac_models")]
    for module in modules:
        for value in vars(module).values():
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, Dispatcher) and inspect.getmodule(item.py_func) is module:
                    yield item


def test_kernels_save_under_the_lock():
    kernels = list(_kernels())
    assert len(kernels) > 100
    assert all(type(k._cache._cache_file) is kernel_cache.LockedCacheFile for k in kernels)
