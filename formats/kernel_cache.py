"""Where Numba caches the compiled kernels: a directory keyed on this package's sources.

Numba's on-disk cache checks only the file that defines a function, but the kernels inline
helpers from sibling modules (``rounding.py``, ``bitcast.py``): an edit there would leave stale
machine code in the cache (wrong results, or a crash).  Unless the user set ``NUMBA_CACHE_DIR``,
the cache therefore lives in ``$XDG_CACHE_HOME/numsim/numba-<hash of every module here>``
(``~/.cache`` by default), so any edit starts a fresh cache.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numba


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
