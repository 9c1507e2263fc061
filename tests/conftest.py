"""Shared test fixtures.

``assert_same`` compares our output with an oracle's, element by element, and on
failure names the first few mismatching inputs (input hex, ours, theirs).
"""

import numpy as np
import pytest

_UINT_OF_WIDTH = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _show(v):
    """One array element as hex bits plus its value, for assertion messages."""
    a = np.asarray(v)
    if a.dtype.kind == "f":
        bits = a.view(_UINT_OF_WIDTH[a.dtype.itemsize])
        return f"0x{int(bits):0{2 * a.dtype.itemsize}x} ({float(a)!r})"
    if a.dtype.kind in "ui":
        return f"0x{int(a) & ((1 << (8 * a.dtype.itemsize)) - 1):0{2 * a.dtype.itemsize}x}"
    return repr(v)


def _same(what, inputs, ours, theirs, nan_ours=None, nan_theirs=None, limit=8):
    """Assert ``ours`` equals ``theirs`` exactly, NaN-aware.

    Positions where either side is NaN must be NaN on both sides (payload ignored);
    everywhere else floats are compared by bit pattern (so -0 != +0) and integers
    by value. ``nan_ours``/``nan_theirs`` give the NaN positions explicitly, which
    is how code arrays (whose NaN codes may differ) are compared.
    """
    inputs = np.asarray(inputs).ravel()
    ours = np.asarray(ours).ravel()
    theirs = np.asarray(theirs).ravel()
    assert ours.shape == theirs.shape == inputs.shape, (what, ours.shape, theirs.shape, inputs.shape)
    if nan_ours is None:
        nan_ours = np.isnan(ours) if ours.dtype.kind == "f" else np.zeros(ours.shape, bool)
    if nan_theirs is None:
        nan_theirs = np.isnan(theirs) if theirs.dtype.kind == "f" else np.zeros(theirs.shape, bool)
    nan_ours = np.asarray(nan_ours).ravel()
    nan_theirs = np.asarray(nan_theirs).ravel()

    if ours.dtype.kind == "f" and theirs.dtype.kind == "f":
        assert ours.dtype == theirs.dtype, (what, ours.dtype, theirs.dtype)
        ob = ours.view(_UINT_OF_WIDTH[ours.dtype.itemsize])
        tb = theirs.view(_UINT_OF_WIDTH[theirs.dtype.itemsize])
        differ = ob != tb
    else:
        differ = ours.astype(np.int64) != theirs.astype(np.int64)
    bad = (nan_ours != nan_theirs) | (~nan_ours & ~nan_theirs & differ)
    if not bad.any():
        return
    idx = np.flatnonzero(bad)
    lines = [f"{what}: {idx.size} of {inputs.size} differ (first {min(limit, idx.size)}):"]
    for i in idx[:limit]:
        o = _show(ours[i]) + (" NaN" if nan_ours[i] else "")
        t = _show(theirs[i]) + (" NaN" if nan_theirs[i] else "")
        lines.append(f"  input {_show(inputs[i])}: ours {o}  theirs {t}")
    raise AssertionError("\n".join(lines))


@pytest.fixture(scope="session")
def assert_same():
    """The ``_same`` comparison helper (see its docstring)."""
    return _same


class GpuEngine:
    """The engine a GPU test runs on: ``to(x)`` moves a NumPy array to it, ``back(y)`` returns a
    result as NumPy.  "host" is the CUDA source built as C++ (formats.gpu.host), "stand-in" that
    build behind the CuPy launcher on the arrays of ``cupy_stand_in``, "device" CuPy on a real
    GPU, where NaN payloads may differ from the CPU's (GPU arithmetic makes canonical NaNs):
    ``same`` compares NaN positions there, every bit elsewhere."""

    def __init__(self, name, to, back):
        self.name, self.to, self.back = name, to, back

    def random_count(self, n: int) -> int:
        """How many random values a test that takes ``n`` on the host build takes here: at least
        10**7 on a GPU (issue 9's bar); the host build runs each kernel as a serial loop, so CI
        keeps ``n``."""
        return max(n, 10 ** 7) if self.name == "device" else n

    def same(self, ours, ref, what: str = "") -> None:
        """``ours`` (moved back to NumPy) equals ``ref``: dtype, shape and bits."""
        ours, ref = np.asarray(self.back(ours)), np.asarray(ref)
        assert (ours.dtype, ours.shape) == (ref.dtype, ref.shape), (what, ours.dtype, ref.dtype)
        o, r = ours.ravel(), ref.ravel()
        if o.dtype.kind == "f":
            bits = np.dtype(f"u{o.dtype.itemsize}")
            differ = o.view(bits) != r.view(bits)
            if self.name == "device":
                differ &= ~(np.isnan(o) & np.isnan(r))
        else:
            differ = o != r
        bad = np.flatnonzero(differ)
        assert bad.size == 0, (f"{what}: {bad.size} of {r.size} differ, first at {bad[:4]}: "
                               f"ours {o[bad[:4]]}, cpu {r[bad[:4]]}")


@pytest.fixture
def stand_in(monkeypatch):
    """``formats.gpu.cupy_module()`` gives ``cupy_stand_in`` (so ``backend="gpu"`` runs the host
    build behind the CuPy launcher), and no launcher built on it outlives the test."""
    from formats import gpu
    from formats.gpu.host import compiler
    if compiler() is None:
        pytest.skip("no C++ compiler to build the CUDA sources for the host")
    import cupy_stand_in
    monkeypatch.setattr(gpu, "cupy_module", lambda: cupy_stand_in)
    monkeypatch.setattr(gpu, "_launchers", {})
    return cupy_stand_in


@pytest.fixture(params=["host", "stand-in", "device"])
def gpu_engine(request):
    """Run a test against the CUDA kernels: compiled for the host on NumPy arrays (needs a C++
    compiler); the same build behind the CuPy launcher on the arrays of ``cupy_stand_in``, which
    keep CuPy's rules (the GPU engine's CuPy-only Python code runs there); and on a GPU (needs
    CuPy and a device).  Each skips with its reason when unavailable."""
    from formats import gpu
    from formats.gpu.host import compiler
    if request.param == "host":
        if compiler() is None:
            pytest.skip("no C++ compiler to build the CUDA sources for the host")
        with gpu.use_host_build():
            yield GpuEngine("host", np.asarray, np.asarray)
        return
    if request.param == "stand-in":
        cupy = request.getfixturevalue("stand_in")
        yield GpuEngine("stand-in", cupy.asarray, cupy.asnumpy)
        return
    cupy = gpu.cupy_module()
    if cupy is None:
        pytest.skip("no CuPy with a GPU on this machine")
    yield GpuEngine("device", cupy.asarray,
                    lambda y: cupy.asnumpy(y) if gpu.is_device_array(y) else np.asarray(y))
