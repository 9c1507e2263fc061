"""What every scalar format shares: input checks, chunked kernel calls and the public interface.

Subclasses (:class:`formats.FloatFormat`, :class:`formats.IntFormat`) provide a descriptor and
the kernel calls; this module turns user arrays into flat chunks, passes each chunk's global flat
index offset to the kernels (so stochastic rounding is independent of the chunking) and raises
clear errors for bad input.
"""
from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from typing import Any, Iterator

import numpy as np

from . import gpu
from .opcodes import OP_ADD, OP_FMA, OP_MUL, OP_SUB
from .rounding import mode_id, overflow_id, resolve_sr_bits, seed_key

_chunk_size = 1 << 22     # elements per kernel call: few parallel launches, bounded temporaries


def set_chunk_size(n: int) -> None:
    """Set how many elements the kernels process per call (memory stays O(chunk) beyond output)."""
    global _chunk_size
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"chunk size must be a positive integer, got {n!r}")
    _chunk_size = int(n)


def get_chunk_size() -> int:
    """The number of elements processed per kernel call."""
    return _chunk_size


@contextlib.contextmanager
def chunk_size(n: int) -> Iterator[None]:
    """Temporarily set the chunk size: ``with formats.chunk_size(1000): ...``."""
    old = _chunk_size
    set_chunk_size(n)
    try:
        yield
    finally:
        set_chunk_size(old)


def check_int(name: str, v, lo: int, hi: int) -> int:
    """``v`` as an int in ``lo..hi``, else a TypeError/ValueError naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got {v}")
    return int(v)


def check_bool(name: str, v) -> bool:
    """``v`` if it is a bool (or numpy bool), else a TypeError naming ``name``."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {v!r}")
    return bool(v)


def is_ml_dtype(dtype) -> bool:
    """Whether ``dtype`` is one of ml_dtypes' types (bfloat16, float8/6/4, int4, ...), which
    NumPy reads through ml_dtypes and CuPy cannot hold."""
    return np.dtype(dtype).type.__module__ == "ml_dtypes"


def as_real_array(x, what: str = "input") -> np.ndarray:
    """``x`` as a NumPy array (CuPy arrays stay CuPy) of a real dtype that float64 reads exactly,
    or a clear TypeError.  ml_dtypes arrays (bfloat16, float8/6/4, int4, ...) come back as
    float64, which holds every one of their values."""
    arr = x if gpu.is_device_array(x) else np.asarray(x)
    if is_ml_dtype(arr.dtype):
        arr = arr.astype(np.float64)
    kind = arr.dtype.kind
    if kind == "f" and arr.dtype.itemsize > 8:
        raise TypeError(f"{what}: {arr.dtype} has more precision than float64; cast it first")
    if kind not in "fiu":
        raise TypeError(f"{what} must be a real float or integer array, got dtype {arr.dtype}")
    return arr


def checked_out(out: Any, shape: tuple, dtype: np.dtype, x: Any) -> None:
    """Refuse, with a clear TypeError/ValueError, an ``out`` that cannot receive a result of
    ``shape`` and ``dtype`` for the input ``x``: it must be an array of the kind the caller gets
    back (a CuPy array for CuPy input, else exactly ``numpy.ndarray``: subclasses such as
    ``np.matrix`` reshape differently), C-contiguous, writeable, native byte order."""
    device = gpu.is_device_array(x)
    if gpu.is_device_array(out) != device or not (device or type(out) is np.ndarray):
        kind = "a CuPy" if device else "a NumPy"
        raise TypeError(f"out must be {kind} array (not a subclass) for this input, got "
                        f"{type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"out must have shape {tuple(shape)} (the input's), got "
                         f"{tuple(out.shape)}")
    if out.dtype != dtype:
        order = " (in native byte order)" if out.dtype.newbyteorder("=") == dtype else ""
        raise ValueError(f"out must have dtype {np.dtype(dtype)} (what quantize returns for this "
                         f"input), got {out.dtype}{order}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not getattr(out.flags, "writeable", True):
        raise ValueError("out must be writeable")


def writes_directly(out: Any, launch: Any, src: Any) -> bool:
    """Whether kernels on ``launch`` may write into ``out`` itself: it lives where they run and
    shares no memory with their input ``src`` (else the result is copied into it afterwards)."""
    xp = gpu.array_module(launch)
    return gpu.is_device_array(out) == (xp is not np) and not xp.may_share_memory(out, src)


def deliver(out: Any, result: Any) -> Any:
    """``result``, or ``out`` holding a copy of it (when the kernels did not write into ``out``)."""
    if out is None or out is result:
        return result
    out[...] = result
    return out


def as_code_array(codes, bits: int, name: str) -> np.ndarray:
    """Integer codes checked to lie in ``0 .. 2**bits - 1``."""
    arr = codes if gpu.is_device_array(codes) else np.asarray(codes)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} codes must be an integer array, got dtype {arr.dtype}")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= (1 << bits):
            bad = lo if lo < 0 else hi
            raise ValueError(f"code {bad} is outside the {bits}-bit format {name} "
                             f"(valid codes are 0..{(1 << bits) - 1})")
    return arr


def code_dtype(bits: int) -> np.dtype:
    """The smallest unsigned integer dtype holding ``bits``-bit codes."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if bits <= 8 * np.dtype(dt).itemsize:
            return np.dtype(dt)
    raise ValueError(f"no unsigned dtype holds {bits} bits")


def flat_chunks(n: int, launch=None) -> Iterator[tuple[int, int]]:
    """(start, stop) flat index ranges of at most the current chunk size covering ``0..n`` (one
    range on the GPU, whose kernels take any size in one launch)."""
    step = _chunk_size if launch is None else max(n, 1)
    for start in range(0, n, step):
        yield start, min(start + step, n)


def chunk_of(arr: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Flat elements ``start:stop`` of ``arr`` in a dtype the kernels take, read-only: a view when
    possible, else a copy of the chunk (non-contiguous, byte-swapped or float16 arrays, which
    Numba cannot read; float16 widens to float32 exactly)."""
    if gpu.is_device_array(arr):
        chunk = arr.reshape(-1)[start:stop]
        return chunk.astype(np.float32) if arr.dtype == np.float16 else chunk
    chunk = arr.reshape(-1)[start:stop] if arr.flags.c_contiguous else arr.flat[start:stop]
    native = arr.dtype.newbyteorder("=")
    return read_only(np.asarray(chunk, dtype=np.float32 if native == np.float16 else native))


def read_only(arr):
    """``arr`` as a read-only view (CuPy arrays as they are): a kernel's input then has one
    Numba type whether the caller's array was writeable or not (each type compiles anew)."""
    if gpu.is_device_array(arr) or not arr.flags.writeable:
        return arr
    view = arr.view()
    view.flags.writeable = False
    return view


def _on(launch, arr):
    """``arr`` moved to the launcher's backend, C-contiguous there, in its shape (0-d stays
    0-d, which ``ascontiguousarray`` alone would make 1-d)."""
    if launch is None:
        return arr
    return launch.xp.ascontiguousarray(gpu.to_backend(launch, arr)).reshape(arr.shape)


class ScalarFormat(ABC):
    """A number format whose elements are independent codes of ``bits`` bits.

    Rounding modes: nearest_even (default), nearest_away, toward_zero, toward_positive,
    toward_negative, stochastic (see :mod:`formats.rounding`).  ``overflow=None`` uses
    :attr:`default_overflow`.
    """

    name: str
    bits: int
    default_overflow: str
    _desc: tuple          # the plain integer descriptor the kernels take
    overflow_policies: tuple[str, ...]

    # ---- what subclasses provide -------------------------------------------------------
    # Each chunk method runs on the Numba kernels when ``launch`` is None, else on the CUDA
    # kernels through that launcher (see formats.gpu), with arrays of ``launch.xp``.
    @abstractmethod
    def _encode_chunk(self, x, out, mode: int, overflow: int, key: np.uint64, offset: int,
                      sr_bits: int, launch=None) -> None:
        """Encode one flat chunk of reals into ``out`` (raising on unrepresentable input)."""

    @abstractmethod
    def _decode_chunk(self, codes, out, launch=None) -> None:
        """Decode one flat chunk of codes into float64 ``out``."""

    @abstractmethod
    def _arith_chunk(self, op: int, a, b, c, out, mode: int, overflow: int, key: np.uint64,
                     offset: int, sr_bits: int, launch=None) -> None:
        """One flat chunk of add/sub/mul/fma on codes."""

    @property
    @abstractmethod
    def max(self) -> float:
        """Largest finite value."""

    @abstractmethod
    def _precision(self) -> tuple[int, int]:
        """(significant bits, exponent of the smallest quantum) of the value set."""

    @property
    @abstractmethod
    def n_finite(self) -> int:
        """Number of distinct finite values (+0 and -0 count once)."""

    # ---- shared interface --------------------------------------------------------------
    @property
    def code_dtype(self) -> np.dtype:
        """The unsigned dtype codes are returned in."""
        return code_dtype(self.bits)

    def _options(self, rounding: str, overflow: str | None, seed: int | None,
                 sr_bits: int | None) -> tuple[int, int, np.uint64, int]:
        mode = mode_id(rounding)
        ovf = overflow_id(self.default_overflow if overflow is None else overflow,
                          self.overflow_policies)
        sr = resolve_sr_bits(sr_bits)
        return mode, ovf, seed_key(seed, rounding), sr

    def encode(self, x, rounding: str = "nearest_even", overflow: str | None = None,
               seed: int | None = None, sr_bits: int | None = None,
               backend: str = "auto") -> np.ndarray:
        """Round real values to codes (same shape as ``x``, dtype :attr:`code_dtype`).
        ``backend``: "auto" (the GPU for CuPy input), "cpu" or "gpu" (see :mod:`formats.gpu`)."""
        launch = gpu.resolve(backend, x)
        arr = _on(launch, as_real_array(x))
        opts = self._options(rounding, overflow, seed, sr_bits)
        out = gpu.array_module(launch).empty(arr.shape, dtype=self.code_dtype)
        flat = out.reshape(-1)
        for start, stop in flat_chunks(arr.size, launch):
            self._encode_chunk(chunk_of(arr, start, stop), flat[start:stop], *opts[:3], start,
                               opts[3], launch)
        return gpu.to_caller(launch, out, x)

    def decode(self, codes, backend: str = "auto") -> np.ndarray:
        """Exact float64 values of ``codes``."""
        launch = gpu.resolve(backend, codes)
        arr = _on(launch, as_code_array(codes, self.bits, self.name))
        out = gpu.array_module(launch).empty(arr.shape, dtype=np.float64)
        flat = out.reshape(-1)
        for start, stop in flat_chunks(arr.size, launch):
            self._decode_chunk(chunk_of(arr, start, stop), flat[start:stop], launch)
        return gpu.to_caller(launch, out, codes)

    def quantize(self, x, rounding: str = "nearest_even", overflow: str | None = None,
                 seed: int | None = None, sr_bits: int | None = None,
                 backend: str = "auto", out: Any = None) -> np.ndarray:
        """``decode(encode(x))``, returned in ``x``'s float dtype when that dtype holds every value
        of this format exactly (e.g. float32 in, fp8 format), else in float64.  ``out``: an array
        of that shape and dtype to write the values into and return; the kernels write into it
        directly unless it overlaps ``x`` or lives on the other engine's side (then a new result
        is copied into it).  If quantize raises after its checks (NaN into a format without NaN,
        Inf into a wrapping integer), ``out`` may have been partly written."""
        launch = gpu.resolve(backend, x)
        arr = _on(launch, as_real_array(x))
        opts = self._options(rounding, overflow, seed, sr_bits)
        exact_in_input = arr.dtype.kind == "f" and self.fits_in(arr.dtype)
        out_dtype = arr.dtype.newbyteorder("=") if exact_in_input else np.dtype(np.float64)
        xp = gpu.array_module(launch)
        if out is not None:
            checked_out(out, arr.shape, out_dtype, x)
        direct = out is not None and writes_directly(out, launch, arr)
        result = out if direct else xp.empty(arr.shape, dtype=out_dtype)
        flat = result.reshape(-1)
        for start, stop in flat_chunks(arr.size, launch):
            target = flat[start:stop]
            if target.dtype == np.float16:          # the kernels cannot write float16: via float32
                wide = xp.empty(target.shape, dtype=np.float32)
                self._quantize_chunk(chunk_of(arr, start, stop), wide, *opts[:3], start, opts[3],
                                     launch)
                target[...] = wide                  # exact: every value fits in float16
            else:
                self._quantize_chunk(chunk_of(arr, start, stop), target, *opts[:3], start,
                                     opts[3], launch)
        return deliver(out, gpu.to_caller(launch, result, x))

    def _quantize_chunk(self, x, out, mode, overflow, key, offset, sr_bits, launch=None) -> None:
        """One flat chunk of quantize; formats with a fused kernel override this."""
        xp = gpu.array_module(launch)
        codes = xp.empty(x.shape, dtype=self.code_dtype)
        self._encode_chunk(x, codes, mode, overflow, key, offset, sr_bits, launch)
        values = xp.empty(x.shape, dtype=np.float64)
        self._decode_chunk(codes, values, launch)
        gpu.store_exact(launch, values, out)

    @property
    def precision(self) -> tuple[int, int]:
        """(sig_bits, lsb_exp): every value has at most ``sig_bits`` significant bits and is a
        multiple of ``2**lsb_exp`` (what bounds the exactness of sums and products)."""
        return self._precision()

    def fits_in(self, dtype) -> bool:
        """True when every value of this format is exactly representable in float ``dtype``."""
        try:
            info = np.finfo(dtype)                 # NumPy's floats and ml_dtypes' (bfloat16, ...)
        except ValueError:
            raise TypeError(f"fits_in takes a float dtype, got {np.dtype(dtype)}") from None
        sig_bits, lsb_exp = self._precision()
        return (sig_bits <= info.nmant + 1 and 2.0 ** lsb_exp >= float(info.smallest_subnormal)
                and self.max <= float(info.max))

    def _arith(self, op: int, operands: tuple, rounding: str, overflow: str | None,
               seed: int | None, sr_bits: int | None, backend: str = "auto") -> np.ndarray:
        launch = gpu.resolve(backend, *operands)
        xp = gpu.array_module(launch)
        arrays = [_on(launch, as_code_array(a, self.bits, self.name)) for a in operands]
        shaped = xp.broadcast_arrays(*arrays)
        opts = self._options(rounding, overflow, seed, sr_bits)
        out = xp.empty(shaped[0].shape, dtype=self.code_dtype)
        flat = out.reshape(-1)
        for start, stop in flat_chunks(out.size, launch):
            parts = [chunk_of(xp.ascontiguousarray(a) if launch else a, start, stop)
                     for a in shaped]
            c = parts[2] if len(parts) == 3 else None
            self._arith_chunk(op, parts[0], parts[1], c, flat[start:stop], *opts[:3], start,
                              opts[3], launch)
        return gpu.to_caller(launch, out, *operands)

    def add(self, a, b, rounding: str = "nearest_even", overflow: str | None = None,
            seed: int | None = None, sr_bits: int | None = None,
            backend: str = "auto") -> np.ndarray:
        """Correctly rounded ``a + b`` on codes (arrays broadcast)."""
        return self._arith(OP_ADD, (a, b), rounding, overflow, seed, sr_bits,
                           backend)

    def sub(self, a, b, rounding: str = "nearest_even", overflow: str | None = None,
            seed: int | None = None, sr_bits: int | None = None,
            backend: str = "auto") -> np.ndarray:
        """Correctly rounded ``a - b`` on codes."""
        return self._arith(OP_SUB, (a, b), rounding, overflow, seed, sr_bits,
                           backend)

    def mul(self, a, b, rounding: str = "nearest_even", overflow: str | None = None,
            seed: int | None = None, sr_bits: int | None = None,
            backend: str = "auto") -> np.ndarray:
        """Correctly rounded ``a * b`` on codes."""
        return self._arith(OP_MUL, (a, b), rounding, overflow, seed, sr_bits,
                           backend)

    def fma(self, a, b, c, rounding: str = "nearest_even", overflow: str | None = None,
            seed: int | None = None, sr_bits: int | None = None,
            backend: str = "auto") -> np.ndarray:
        """Fused ``a * b + c`` on codes with a single rounding."""
        return self._arith(OP_FMA, (a, b, c), rounding, overflow, seed, sr_bits,
                           backend)

    def convert(self, codes, other: "ScalarFormat | str", rounding: str = "nearest_even",
                overflow: str | None = None, seed: int | None = None,
                sr_bits: int | None = None, backend: str = "auto") -> np.ndarray:
        """Codes of ``other`` (a scalar format or its name) for the values of ``codes`` (one
        rounding; decoding is exact)."""
        from .registry import get                  # the registry builds the scalar formats
        other = get(other)
        if not isinstance(other, ScalarFormat):
            raise TypeError(f"convert goes into a scalar format; {other.name} is not one (for a "
                            f"scaled format, encode the decoded values)")
        launch = gpu.resolve(backend, codes)
        xp = gpu.array_module(launch)
        arr = _on(launch, as_code_array(codes, self.bits, self.name))
        opts = other._options(rounding, overflow, seed, sr_bits)
        out = xp.empty(arr.shape, dtype=other.code_dtype)
        flat = out.reshape(-1)
        values = xp.empty(min(arr.size, _chunk_size) if launch is None else arr.size,
                          dtype=np.float64)
        for start, stop in flat_chunks(arr.size, launch):
            v = values[:stop - start]
            self._decode_chunk(chunk_of(arr, start, stop), v, launch)
            other._encode_chunk(v, flat[start:stop], *opts[:3], start, opts[3], launch)
        return gpu.to_caller(launch, out, codes)

    def values(self) -> np.ndarray:
        """Every distinct finite value, sorted, as float64 (only for formats of <= 16 bits)."""
        if self.bits > 16:
            raise ValueError(f"values() lists formats of at most 16 bits; {self.name} has "
                             f"{self.bits}")
        v = self.decode(np.arange(1 << self.bits, dtype=self.code_dtype))
        return np.unique(v[np.isfinite(v)] + 0.0)          # + 0.0 merges -0 into +0

    @property
    def dynamic_range_binades(self) -> float:
        """log2(max / smallest positive value)."""
        return math.log2(self.max / self.min_subnormal)

    def __eq__(self, other: object) -> bool:
        """Formats are equal when they hold the same values with the same codes, whatever their
        names (``get("fp8_e4m3") == get("e4m3fn")``)."""
        return type(other) is type(self) and other._desc == self._desc

    def __hash__(self) -> int:
        return hash((type(self), self._desc))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
