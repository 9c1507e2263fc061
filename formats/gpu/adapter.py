"""What the kernel adapters (``float_kernels.py``, ``int_kernels.py``, …) share: each puts the
CUDA kernels of one ``.cu`` file behind the call signatures of the matching Numba kernels, so a
format calls either engine the same way."""
from __future__ import annotations

import numpy as np

from . import is_device_array, to_backend

_CODE_SUFFIX = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}


def code_suffix(codes) -> str:
    """The kernel-name suffix for an unsigned code array."""
    if codes.dtype.kind != "u":
        raise TypeError(f"GPU kernels take unsigned code arrays, got {codes.dtype}")
    return _CODE_SUFFIX[codes.dtype.itemsize]


def value_suffix(x) -> str:
    """The kernel-name suffix for a float32 or float64 array."""
    return "f32" if x.dtype == np.float32 else "f64"


def as_values(launch, x, allowed: tuple = ("float32", "float64")):
    """``x`` as a float array the kernels read: float32 and float64 as they are, anything else
    converted to float64 on the backend (exact: the front end splits 64-bit integers first)."""
    x = to_backend(launch, x)
    if x.dtype.name not in allowed:
        x = x.astype(np.float64)
    return launch.xp.ascontiguousarray(x)


class CodecKernels:
    """An adapter's launcher plus the small arrays its kernels take."""

    def __init__(self, launch):
        self.launch = launch

    def _on(self, values, dtype=np.int64):
        """``values`` (a descriptor tuple, a NumPy or a backend array) as a contiguous array of
        ``dtype`` on the backend."""
        if not is_device_array(values):
            values = np.asarray(values, dtype=dtype)
        return self.launch.xp.ascontiguousarray(to_backend(self.launch, values), dtype=dtype)

    def _counters(self, n: int = 1):
        return self.launch.xp.zeros(n, dtype=np.uint64)

    def _codes(self, codes, dtype=None):
        """Codes (range-checked by the front end, so the cast is exact) as a contiguous array of
        ``dtype`` on the backend; by default the unsigned dtype of the codes' width."""
        codes = to_backend(self.launch, codes)
        dtype = np.dtype(f"u{codes.dtype.itemsize}") if dtype is None else dtype
        return self.launch.xp.ascontiguousarray(codes.astype(dtype, copy=False))
