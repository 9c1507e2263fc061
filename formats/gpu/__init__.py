"""The GPU engine: CuPy launches of the CUDA kernels in ``formats/gpu/*.cu`` (and any other source
folder registered with :func:`register_sources`, such as ``mac_models/gpu``).

Backend choice (the ``backend=`` argument of the public functions):

* ``"cpu"``: the Numba kernels.
* ``"gpu"``: the CUDA kernels; NumPy inputs are copied to the device and the result comes back as
  NumPy, CuPy inputs give CuPy results.
* ``"auto"`` (default): ``"gpu"`` when an input is a CuPy array, else ``"cpu"``.

:func:`resolve` turns a backend and the input arrays into a *launcher* (None for the CPU): a
callable ``launcher(kernel_name, n, *args)`` with an ``xp`` attribute (the array module its arrays
live in).  Kernel arguments: arrays, ``np.uint64`` (unsigned 64-bit), other ints (signed 64-bit),
floats (double) and None (a null pointer).

Without a GPU, :func:`use_host_build` makes ``"gpu"`` run the same CUDA sources compiled as plain
C++ (see :mod:`formats.gpu.host`) on NumPy arrays: that is how the tests prove the GPU arithmetic
bit for bit on machines without one.
"""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Iterator

import numpy as np

BACKENDS = ("auto", "cpu", "gpu")
THREADS = 256                              # threads per block of every launch

_sources: list[Path] = [Path(__file__).parent]
_host_override = False
_launchers: dict = {}


def register_sources(folder: Path) -> None:
    """Add a folder of ``.cu`` files (with their ``.cuh`` headers) to the kernels the launchers
    build.  Called by packages above ``formats`` (``mac_models``) at import."""
    folder = Path(folder).resolve()
    if folder not in _sources:
        _sources.append(folder)
        _launchers.clear()


def sources() -> tuple[Path, ...]:
    """Every registered ``.cu`` file, in a fixed order."""
    return tuple(p for folder in _sources for p in sorted(folder.glob("*.cu")))


def source_folders(sources: tuple[Path, ...]) -> list[Path]:
    """The folders of ``sources``, sorted: the include path of every build."""
    return sorted({Path(s).resolve().parent for s in sources})


def source_digest(sources: tuple[Path, ...], *extra: str) -> str:
    """A hex digest of the ``.cu`` files, every ``.cuh`` header beside them and ``extra`` strings
    (compiler and options): the key of a compiled build, which changes with any source."""
    digest = hashlib.sha256()
    headers = sorted(h for d in source_folders(sources) for h in d.glob("*.cuh"))
    for path in list(map(Path, sources)) + headers:
        digest.update(path.read_bytes())
    digest.update("\0".join(extra).encode())
    return digest.hexdigest()


def cupy_module():
    """The ``cupy`` module if it imports and sees a GPU, else None."""
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:              # not installed, no driver, no device: all mean "no GPU"
        return None
    return cupy


def is_device_array(x) -> bool:
    """True for a CuPy array (checked without importing CuPy)."""
    return type(x).__module__.split(".")[0] == "cupy"


@contextlib.contextmanager
def use_host_build() -> Iterator[None]:
    """While active, ``backend="gpu"`` runs the CUDA sources compiled as C++ on the host."""
    global _host_override
    old, _host_override = _host_override, True
    try:
        yield
    finally:
        _host_override = old


def resolve(backend: str, *arrays):
    """The launcher for ``backend`` given the input arrays, or None for the Numba kernels."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "cpu" or (backend == "auto" and not any(map(is_device_array, arrays))):
        if any(map(is_device_array, arrays)):
            raise ValueError("backend='cpu' was asked for CuPy arrays; pass NumPy arrays "
                             "(cupy.asnumpy) or use backend='gpu'")
        return None
    return _launcher()


def _launcher():
    kind = "host" if _host_override else "cupy"
    key = (kind, sources())
    if key not in _launchers:
        if kind == "host":
            from .host import HostLauncher
            _launchers[key] = HostLauncher(key[1])
        else:
            from .device import CupyLauncher
            cupy = cupy_module()
            if cupy is None:
                raise RuntimeError("backend='gpu' needs CuPy and an NVIDIA GPU; neither was found "
                                   "(pip install cupy-cuda12x), or use backend='cpu'")
            _launchers[key] = CupyLauncher(cupy, key[1])
    return _launchers[key]


def array_module(launcher):
    """The array module of a launcher: NumPy for the CPU (None) and the host build, else CuPy."""
    return np if launcher is None else launcher.xp


def to_backend(launcher, x):
    """``x`` as an array of the launcher's module (a device copy of a NumPy array for CuPy)."""
    if launcher is None or is_device_array(x):
        return x
    x = np.asarray(x)
    if not x.dtype.isnative:                   # CuPy would read the bytes in the wrong order
        x = x.astype(x.dtype.newbyteorder("="))
    return launcher.xp.asarray(x) if launcher.xp is not np else x


def as_float64(launcher, x):
    """``x`` (an array of the launcher's module) as float64, exactly.  float32 on the GPU widens
    through a numsim kernel: CuPy's own conversion flushes float32 subnormals to zero (it
    compiles its kernels with -ftz=true)."""
    xp = array_module(launcher)
    if x.dtype != np.float32 or xp is np:
        return x.astype(np.float64, copy=False)
    out = xp.empty(x.shape, dtype=np.float64)
    launcher("widen_f32", x.size, xp.ascontiguousarray(x), out)
    return out


def store_exact(launcher, values, out) -> None:
    """``out[...] = values``: float64 ``values`` that ``out``'s float dtype holds exactly (both
    arrays of the launcher's module; on a GPU ``out`` is C-contiguous).  A float32 ``out`` on
    the GPU is written by a numsim kernel, as :func:`as_float64` reads one: CuPy's own cast
    flushes float32 subnormals."""
    xp = array_module(launcher)
    if out.dtype != np.float32 or xp is np:
        out[...] = values
        return
    launcher("narrow_f64", values.size, xp.ascontiguousarray(values, dtype=np.float64), out)


def to_caller(launcher, result, *inputs):
    """``result`` in the kind of array the caller passed: CuPy when any of ``inputs`` is a CuPy
    array, else NumPy (a host copy of a device result)."""
    if launcher is not None and launcher.xp is not np and not any(map(is_device_array, inputs)):
        return launcher.xp.asnumpy(result)
    return result
