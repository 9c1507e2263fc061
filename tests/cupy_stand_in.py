"""A stand-in for CuPy, for running the GPU engine's Python side where no GPU is.

The host build (:mod:`formats.gpu.host`) proves the CUDA arithmetic without a GPU, but on NumPy
arrays, so the code that only runs with CuPy (the ``CupyLauncher``, every ``xp is not np``
branch, copies back to the caller) would first run on a lent GPU.  This module plays CuPy's
part with the host build's kernels and CuPy's rules, as strictly as we know them:

* its arrays are not NumPy arrays: ``np.asarray`` refuses them (CuPy's ``__array__`` raises),
  and arithmetic refuses to mix them with NumPy arrays (only scalars mix);
* only the NumPy functions CuPy has work on them (a list: see ``_FUNCTIONS``), and only CuPy's
  array attributes (``flags`` has no ``writeable``);
* reductions and indexing give 0-d arrays, not scalars; ``ascontiguousarray`` gives a 0-d array
  shape (1,); a basic index cannot be filled from a NumPy array;
* ``empty`` gives memory that is not zero;
* CuPy compiles its own kernels with ``-ftz=true`` (cupy/cupy#8382), so every float32 operand
  of its arithmetic, comparisons, reductions and casts reads as zero when subnormal, and a
  float32 result that would be subnormal is zero;
* ``RawModule`` takes the launcher's translation unit (``#include`` lines and ``-I`` options)
  and runs its kernels from the host build, with CuPy's launch arguments: arrays of this
  module, NumPy scalars, nothing else.

It proves nothing about NVRTC or the GPU; the tests' "device" variant does that where one is.
"""
from __future__ import annotations

import re
import time
import types
from pathlib import Path

import numpy as np

from formats.gpu.host import HostLauncher
from formats.scalar import is_ml_dtype

__version__ = "stand-in"

# NumPy functions and methods that move or reshape data without arithmetic: CuPy's versions
# copy bits, so float32 subnormals survive them.  Everything else flushes.
_MOVES = frozenset({
    "array_split", "atleast_1d", "atleast_2d", "atleast_3d", "broadcast_arrays", "broadcast_to",
    "concatenate", "copy", "expand_dims", "fill", "flatten", "flip", "get", "item", "moveaxis",
    "may_share_memory", "pad", "ravel", "repeat", "reshape", "shares_memory", "split", "squeeze",
    "stack", "swapaxes", "take", "tile", "tobytes", "tolist", "transpose", "view",
    "where"})
# What CuPy has of NumPy's functions and ufuncs, as far as the library and its benchmark might
# reach (CuPy refuses the rest: NumPy then raises TypeError).  Add a name here only after
# checking that ``cupy.<name>`` exists.
_FUNCTIONS = _MOVES | frozenset({
    "abs", "absolute", "add", "all", "amax", "amin", "any", "arange", "argmax", "argmin",
    "array_equal", "bitwise_and", "bitwise_or", "bitwise_xor", "ceil", "clip", "copysign",
    "count_nonzero", "cumsum", "divide", "empty_like", "equal", "exp", "exp2", "floor",
    "floor_divide", "fmax", "fmin", "frexp", "full", "full_like", "greater", "greater_equal",
    "invert", "isfinite", "isinf", "isnan", "ldexp", "left_shift", "less", "less_equal", "log2",
    "logical_and", "logical_not", "logical_or", "matmul", "max", "maximum", "mean", "min",
    "minimum", "multiply", "negative", "nextafter", "nonzero", "not_equal", "ones", "ones_like",
    "power", "prod", "remainder", "right_shift", "rint", "sign", "signbit", "sqrt", "square",
    "subtract", "sum", "trunc", "zeros", "zeros_like"})
_COMPARISONS = frozenset({"equal", "not_equal", "less", "less_equal", "greater",
                          "greater_equal"})
_ATTRIBUTES = frozenset({"T", "base", "dtype", "imag", "itemsize", "nbytes", "ndim", "real",
                         "shape", "size", "strides"})
_METHODS = _FUNCTIONS & frozenset(dir(np.ndarray)) | {"astype", "dot", "round"}
# NumPy's types and constants that CuPy shares; other non-functions (submodules such as
# ``random``, ``errstate``, dunders) are refused.
_NAMES = frozenset({"bool_", "complex64", "complex128", "dtype", "e", "float16", "float32",
                    "float64", "inf", "int8", "int16", "int32", "int64", "intp", "nan",
                    "newaxis", "pi", "uint8", "uint16", "uint32", "uint64"})
_TINY32 = np.float32(np.finfo(np.float32).tiny)


def _flush(a):
    """``a`` with float32 subnormals replaced by zeros of their sign (other arrays as they are)."""
    if isinstance(a, np.ndarray) and a.dtype == np.float32:
        return np.where(np.abs(a) < _TINY32, np.copysign(np.float32(0), a), a)
    return a


def _unwrap(obj, flush: bool):
    """``obj`` with this module's arrays replaced by their NumPy storage; NumPy arrays refused."""
    if isinstance(obj, ndarray):
        return _flush(obj._a) if flush else obj._a
    if isinstance(obj, np.ndarray):
        raise TypeError(f"Unsupported type {type(obj)}: CuPy does not mix with NumPy arrays")
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o, flush) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v, flush) for k, v in obj.items()}
    return obj


def _wrap(obj, flush: bool):
    """NumPy results as arrays of this module (scalars as 0-d arrays, as CuPy returns them)."""
    if isinstance(obj, np.generic):
        obj = np.asarray(obj)
    if isinstance(obj, np.ndarray):
        return ndarray(_flush(obj) if flush else obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_wrap(o, flush) for o in obj)
    return obj


def _refuse(name: str) -> None:
    if name not in _FUNCTIONS:
        raise TypeError(f"the CuPy stand-in does not know cupy.{name}; check that CuPy has it, "
                        "then add it to _FUNCTIONS")


def _key(key):
    """An index with this module's arrays (alone or in a tuple) as NumPy arrays."""
    if isinstance(key, tuple):
        return tuple(map(_key, key))
    return key._a if isinstance(key, ndarray) else key


def _advanced(key) -> bool:
    """Whether an index holds an integer or boolean array (CuPy's scatter path)."""
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, (ndarray, np.ndarray, list)) for k in keys)


class ndarray(np.lib.mixins.NDArrayOperatorsMixin):
    """An array "on the device": NumPy storage that NumPy code cannot read implicitly."""

    __module__ = "cupy.stand_in"      # formats.gpu.is_device_array tells arrays by their module

    def __init__(self, a: np.ndarray):
        self._a = a

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse(ufunc.__name__)
        if method == "at":              # would write into a flushed copy of its operand
            raise TypeError("the CuPy stand-in has no ufunc.at")
        if ufunc.__name__ in _COMPARISONS:        # CuPy takes 0-d NumPy arrays here, as scalars
            inputs = tuple(i.item() if isinstance(i, np.ndarray) and i.ndim == 0 else i
                           for i in inputs)
        if "out" in kwargs:
            outs = kwargs["out"]
            if not all(isinstance(o, ndarray) for o in outs):
                raise TypeError("CuPy ufuncs write only into CuPy arrays")
            kwargs["out"] = tuple(o._a for o in outs)
        result = getattr(ufunc, method)(*_unwrap(inputs, True), **kwargs)
        if "out" in kwargs:
            for o in outs:
                o._a[...] = _flush(o._a)
            return outs[0] if len(outs) == 1 else outs
        return _wrap(result, True)

    def __array_function__(self, func, types_, args, kwargs):
        _refuse(func.__name__)
        if "out" in kwargs:             # would write into a flushed copy of ``out``
            raise TypeError(f"the CuPy stand-in's {func.__name__} takes no out=")
        flush = func.__name__ not in _MOVES
        result = func(*_unwrap(args, flush), **_unwrap(kwargs, flush))
        if func.__name__ == "array_equal":
            result = np.asarray(result)                      # CuPy: a 0-d array
        elif func.__name__ == "broadcast_arrays":
            result = list(result)
        return _wrap(result, flush)

    def __getattr__(self, name):
        if name in _ATTRIBUTES:
            attr = getattr(self._a, name)
            return _wrap(attr, False) if isinstance(attr, np.ndarray) else attr
        if name not in _METHODS:
            raise AttributeError(f"the CuPy stand-in's ndarray has no {name!r}")
        flush = name not in _MOVES

        def method(*args, **kwargs):
            if "out" in kwargs:
                raise TypeError(f"the CuPy stand-in's {name} takes no out=")
            own = getattr(_flush(self._a) if flush else self._a, name)
            return _wrap(own(*_unwrap(args, flush), **_unwrap(kwargs, flush)), flush)
        return method

    @property
    def flags(self) -> types.SimpleNamespace:
        """CuPy's flags: these three only (no ``writeable``)."""
        f = self._a.flags
        return types.SimpleNamespace(c_contiguous=f.c_contiguous, f_contiguous=f.f_contiguous,
                                     owndata=f.owndata)

    def astype(self, dtype, copy: bool = True, **kwargs):
        dtype = np.dtype(dtype)
        if dtype == self._a.dtype:
            return ndarray(self._a.astype(dtype, copy=copy))
        return ndarray(_flush(_flush(self._a).astype(dtype, **kwargs)))

    def get(self) -> np.ndarray:
        return self._a.copy()

    def __getitem__(self, key):
        return _wrap(self._a[_key(key)], False)

    def __setitem__(self, key, value):
        """CuPy fills a basic index from scalars and its own arrays only, and casts through a
        kernel (so a float32 side flushes)."""
        if isinstance(value, np.ndarray) and value.ndim > 0 and not _advanced(key):
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        value = value._a if isinstance(value, ndarray) else np.asarray(value)
        if value.dtype != self._a.dtype:
            value = _flush(_flush(value).astype(self._a.dtype))
        self._a[_key(key)] = value

    def __len__(self) -> int:
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (ndarray(np.asarray(v)) for v in self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __format__(self, spec: str) -> str:
        return format(self._a, spec)

    def __repr__(self) -> str:
        return f"stand-in {self._a!r}"


def _from_host(a, **kw) -> ndarray:
    """NumPy data "on the device"; ml_dtypes arrays are refused (CuPy 13 has no bfloat16,
    float8 or int4 dtypes)."""
    host = np.array(a, **kw)
    if is_ml_dtype(host.dtype):
        raise TypeError(f"Unsupported dtype {host.dtype}")
    return ndarray(host)


def asarray(a, dtype=None):
    """Copies NumPy data "to the device"; this module's arrays pass through (cast if asked)."""
    if isinstance(a, ndarray):
        return a if dtype is None else a.astype(dtype, copy=False)
    return _from_host(a, dtype=dtype)


def array(a, dtype=None, copy: bool = True, order: str = "K", ndmin: int = 0):
    """CuPy's ``array``: a copy unless ``copy=False``, which refuses to copy (CuPy 14)."""
    if isinstance(a, ndarray):
        out = a.astype(a.dtype if dtype is None else dtype, copy=copy)
        out = ndarray(np.array(out._a, copy=copy or None, order=order, ndmin=ndmin))
        if copy is False and not np.may_share_memory(out._a, a._a):
            raise ValueError("Unable to avoid copy while creating an array as requested.")
        return out
    return _from_host(a, dtype=dtype, order=order, ndmin=ndmin)


def ascontiguousarray(a, dtype=None):
    """CuPy's: takes its own arrays only, and gives a 0-d array shape (1,) as NumPy does."""
    if not isinstance(a, ndarray):
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy.ndarray, got "
                        f"{type(a).__name__})")
    out = a if dtype is None else a.astype(dtype, copy=False)
    if out._a.ndim == 0:
        return ndarray(out._a.reshape(1))
    return out if out._a.flags.c_contiguous else ndarray(np.ascontiguousarray(out._a))


def asnumpy(a) -> np.ndarray:
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def empty(shape, dtype=np.float64):
    """Uninitialised like CuPy's: every byte 0xA5 (a small negative float, a large integer),
    never zeros."""
    out = np.empty(shape, dtype=dtype)
    out.reshape(-1).view(np.uint8)[:] = 0xA5
    return ndarray(out)


def __getattr__(name: str):
    """The other names CuPy shares with NumPy: types and constants as they are, functions on
    this module's arrays (NumPy's dispatch brings them back here)."""
    if name in _NAMES:
        return getattr(np, name)
    if name.startswith("__"):
        raise AttributeError(name)
    _refuse(name)
    attr = getattr(np, name)

    def function(*args, **kwargs):
        _unwrap((args, kwargs), False)                      # refuses NumPy array arguments
        return _wrap(attr(*args, **kwargs), name not in _MOVES)
    return function


class _Kernel:
    """A kernel of the host build with CuPy's ``kernel(grid, block, args)`` call."""

    def __init__(self, launcher: HostLauncher, name: str):
        self._launcher, self._name = launcher, name

    def __call__(self, grid: tuple, block: tuple, args: tuple) -> None:
        if not (all(isinstance(g, int) and g > 0 for g in grid + block)
                and np.prod(block) <= 1024):
            raise ValueError(f"bad launch shape grid={grid} block={block}")
        host_args = []
        for a in args:
            if isinstance(a, ndarray):
                host_args.append(a._a)
            elif isinstance(a, (np.int64, np.uint64, np.float64)):
                host_args.append(a)
            else:
                raise TypeError(f"{self._name}: a {type(a).__name__} argument; the launcher "
                                "passes arrays and 64-bit NumPy scalars only")
        self._launcher(self._name, *host_args)


class RawModule:
    """Builds the sources that ``code`` includes, found on its ``-I`` folders, for the host."""

    def __init__(self, code: str, options: tuple = ()):
        folders = [Path(o[2:]) for o in options if o.startswith("-I")]
        found = []
        for name in re.findall(r'^#include "([^"]+)"$', code, re.MULTILINE):
            paths = [f / name for f in folders if (f / name).is_file()]
            if len(paths) != 1:
                raise RuntimeError(f"{name} found {len(paths)} times on {folders}")
            found.append(paths[0])
        self._launcher = HostLauncher(tuple(found))

    def get_function(self, name: str) -> _Kernel:
        return _Kernel(self._launcher, name)


class _Event:
    def record(self) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass


class _Device:
    attributes = {"MultiProcessorCount": 4}

    def synchronize(self) -> None:
        pass


cuda = types.SimpleNamespace(
    Device=_Device, Event=_Event,
    get_elapsed_time=lambda start, stop: (stop.t - start.t) * 1e3,
    runtime=types.SimpleNamespace(
        getDeviceCount=lambda: 1, runtimeGetVersion=lambda: 0,
        getDeviceProperties=lambda device: {"name": b"CuPy stand-in (host build)"}))
