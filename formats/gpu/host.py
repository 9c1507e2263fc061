"""The CUDA sources built as plain C++ with the system compiler, for machines without a GPU.

``formats/gpu/*.cu`` compile under g++ (see ``numsim.cuh``): each ``__global__`` kernel becomes an
``extern "C"`` function whose grid-stride loop runs serially.  :func:`host_library` builds them
into a shared library (cached under ``~/.cache/numsim``, keyed on the sources) and
:class:`HostLauncher` calls its kernels through ctypes on NumPy arrays, with the same arguments
the CuPy launcher takes.  The tests use it to check the GPU arithmetic bit for bit against the
Numba kernels where no GPU is present; it is not meant to be fast.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import source_digest, source_folders

CXX_FLAGS = ("-O2", "-std=c++14", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared",
             "-Wall")


def compiler() -> str | None:
    """The C++ compiler to use ($CXX, else g++ or c++ on PATH), or None."""
    cxx = os.environ.get("CXX")
    if cxx:
        return cxx
    return shutil.which("g++") or shutil.which("c++")


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "numsim" / "host-cuda"


def host_library(sources: tuple[Path, ...]) -> ctypes.CDLL:
    """Compile ``sources`` (``.cu`` files, with the ``.cuh`` headers beside them) into one shared
    library as C++ and load it.  Rebuilt only when a source or header changes.  Raises
    RuntimeError naming the compiler's complaint."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    target = _cache_dir() / f"numsim-host-{source_digest(sources, cxx, *CXX_FLAGS)[:16]}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            out = Path(tmp) / target.name
            cmd = [cxx, *CXX_FLAGS, *(f"-I{d}" for d in source_folders(sources)), "-x", "c++",
                   *map(str, sources), "-o", str(out)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{cxx} could not build the host kernels:\n{done.stderr}")
            os.replace(out, target)                  # atomic: concurrent builders agree
    return ctypes.CDLL(str(target))


def _c_arg(a):
    if a is None:
        return ctypes.c_void_p(None)
    if isinstance(a, np.ndarray):
        if not a.flags.c_contiguous:
            raise ValueError("host kernels take C-contiguous arrays")
        return ctypes.c_void_p(a.ctypes.data)
    if isinstance(a, np.uint64):
        return ctypes.c_ulonglong(int(a))
    if isinstance(a, (float, np.floating)):
        return ctypes.c_double(float(a))
    if isinstance(a, (bool, int, np.integer)):
        return ctypes.c_longlong(int(a))
    raise TypeError(f"cannot pass {type(a).__name__} to a host kernel")


class HostLauncher:
    """Calls kernels of the host build: ``launcher("float_decode_u8", n, codes, out, desc)``.

    Arrays are NumPy (C-contiguous; passed as pointers), ``np.uint64`` scalars pass as unsigned
    64-bit, other integers as signed 64-bit, floats as double, None as a null pointer."""

    xp = np
    name = "host"

    def __init__(self, sources: tuple[Path, ...]):
        self._lib = host_library(sources)

    def __call__(self, kernel: str, n: int, *args) -> None:
        fn = getattr(self._lib, kernel)
        fn.restype = None
        fn(ctypes.c_longlong(int(n)), *map(_c_arg, args))
