"""Launching the CUDA kernels on an NVIDIA GPU through CuPy's ``RawModule``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import THREADS, is_device_array, source_digest, source_folders

NVRTC_OPTIONS = ("--std=c++14", "--fmad=false")   # no contraction of a*b + c: see numsim.cuh


def unit_source(sources: tuple[Path, ...]) -> str:
    """The one translation unit the launcher compiles: an ``#include`` of every source, after
    a comment holding their digest (CuPy's kernel cache keys on this text, not on the files it
    includes, so an edited source makes a new entry)."""
    return f"// numsim sources {source_digest(sources)}\n" + "".join(
        f'#include "{p.name}"\n' for p in sources)


def compile_options(sources: tuple[Path, ...]) -> tuple[str, ...]:
    """NVRTC options of :func:`unit_source`.  CuPy adds ``-ftz=true``, the device's
    ``-arch=sm_XX`` (a cubin), ``--device-as-default-execution-space`` and include paths of
    its own and of the CUDA toolkit."""
    return NVRTC_OPTIONS + tuple(f"-I{f}" for f in source_folders(sources))


class CupyLauncher:
    """Compiles every registered ``.cu`` file into one CuPy ``RawModule`` and launches its
    kernels over ``n`` elements with a grid-stride loop (``THREADS`` per block, at most 32 blocks
    per multiprocessor)."""

    name = "cupy"

    def __init__(self, cupy, sources: tuple[Path, ...]):
        self.xp = cupy
        self._module = cupy.RawModule(code=unit_source(sources),
                                      options=compile_options(sources))
        self._sm = cupy.cuda.Device().attributes["MultiProcessorCount"]
        self._kernels: dict = {}

    def __call__(self, kernel: str, n: int, *args) -> None:
        if n <= 0:
            return
        fn = self._kernels.get(kernel)
        if fn is None:
            fn = self._kernels[kernel] = self._module.get_function(kernel)
        blocks = int(min((n + THREADS - 1) // THREADS, 32 * self._sm))
        fn((blocks,), (THREADS,), (np.int64(n), *map(self._arg, args)))

    def _arg(self, a):
        if a is None:
            return np.uint64(0)                      # a null pointer
        if is_device_array(a):
            if not a.flags.c_contiguous:
                raise ValueError("GPU kernels take C-contiguous arrays")
            return a
        if isinstance(a, (np.uint64, np.int64, np.float64)):
            return a
        if isinstance(a, np.ndarray):
            raise TypeError("GPU kernels take CuPy arrays; copy NumPy arrays with to_backend()")
        if isinstance(a, (bool, int, np.integer)):
            return np.int64(a)
        if isinstance(a, (float, np.floating)):
            return np.float64(a)
        raise TypeError(f"cannot pass {type(a).__name__} to a GPU kernel")
