"""Where Numba caches the compiled kernels: a directory keyed on this package's sources.

Numba's on-disk cache checks only the file that defines a function, but the kernels inline
helpers from sibling modules (``rounding.py``, ``bitcast.py``): an edit there would leave stale
machine code in the cache (wrong results, or a crash).  Unless the user set ``NUMBA_CACHE_DIR``,
the cache therefore lives in ``$XDG_CACHE_HOME/numsim/numba-<hash of every module here>``
(``~/.cache`` by default), so any edit starts a fresh cache.

Numba's cache is also not safe for processes that compile at the same time (pytest-xdist
workers, a sweep's worker pool): see :class:`LockedCacheFile`.  Every kernel here is therefore
decorated with this module's :func:`njit`, which puts its cache under a file lock.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Callable

try:
    import fcntl
except ImportError:                                  # Windows: no flock
    raise ImportError("numsim needs a POSIX system (Linux, macOS): its kernel cache is locked "
                      "with fcntl.flock, which this platform lacks") from None

import numba
from numba.core.caching import IndexDataCacheFile
from numba.core.dispatcher import Dispatcher


def use_source_keyed_cache(*packages: Path) -> None:
    """Point numba.config.CACHE_DIR at the directory keyed on this package's sources and those of
    ``packages`` (folders of modules, or single modules, whose kernels inline these helpers, e.g.
    ``mac_models/kernels.py``).
    Call it before the kernels are defined: Numba fixes a kernel's cache directory when it is
    decorated.  A NUMBA_CACHE_DIR chosen by the user wins."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    sources = sorted(Path(__file__).parent.glob("*.py"))
    for package in map(Path, packages):
        sources += sorted(package.glob("*.py")) if package.is_dir() else [package]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    numba.config.CACHE_DIR = str(base / "numsim" / f"numba-{digest}")


class LockedCacheFile(IndexDataCacheFile):
    """Numba's index and data files of one function, read and written under a lock.

    Numba saves an overload by reading the index, taking the first free data-file number,
    writing the index, then the data.  Two processes saving two overloads of one function at
    once (two signatures, or two closures of one kernel factory) can take the same number, and
    the index of one then names the machine code of the other: wrong results or a crash, from
    every later process that loads it.  Here a save holds an exclusive ``fcntl.flock`` on
    ``<index>.lock`` from reading the index to writing the data, and a load a shared one.
    """

    def _acquire(self, operation: int) -> BinaryIO | None:
        """The open ``<index>.lock``, holding ``flock(operation)``; None where no lock can be
        taken (no cache directory yet, one we may not write, a file system without locks)."""
        try:
            lock = open(self._index_path + ".lock", "ab")
        except OSError:
            return None
        try:
            fcntl.flock(lock, operation)            # released when the file closes
        except OSError:
            lock.close()
            return None
        return lock

    def save(self, key, data) -> None:
        """Save under the exclusive lock; where it cannot be taken, warn and leave it unsaved."""
        lock = self._acquire(fcntl.LOCK_EX)
        if lock is None:
            warnings.warn(f"numsim: cannot lock {self._index_path}.lock; kernels compiled in "
                          "this process stay out of the on-disk cache", RuntimeWarning)
            return
        with lock:
            super().save(key, data)

    def load(self, key) -> object:
        """Load under the shared lock.  Without one (no cache directory yet, or one where no
        process can lock, so none of ours saves) load as Numba does."""
        lock = self._acquire(fcntl.LOCK_SH)
        if lock is None:
            return super().load(key)
        with lock:
            return super().load(key)


def njit(func: Callable | None = None, **options) -> Dispatcher | Callable[[Callable], Dispatcher]:
    """``numba.njit(cache=True, **options)``, as ``@njit`` or ``@njit(**options)``, whose
    on-disk cache is a :class:`LockedCacheFile`."""
    if func is None:
        return lambda f: njit(f, **options)
    kernel = numba.njit(cache=True, **options)(func)
    cache = kernel._cache
    if type(getattr(cache, "_cache_file", None)) is not IndexDataCacheFile:
        raise RuntimeError(f"numba {numba.__version__} keeps its cache files in a way "
                           "formats.kernel_cache does not know; its kernels cannot be locked")
    cache._cache_file = LockedCacheFile(cache._cache_path, cache._impl.filename_base,
                                        cache._impl.locator.get_source_stamp())
    return kernel
