"""The CUDA sources compile cleanly: as C++ with every warning an error (the host build the
other ``test_gpu_host_*`` tests run), and with NVIDIA's compiler to PTX for the H100
(``sm_90``), where ``nvcc`` is installed: each file alone, and all of them as the one
translation unit the CuPy launcher builds, with its options plus the ``-ftz=true`` CuPy always
adds; and that unit through NVRTC itself, the compiler CuPy runs (``cuda-bindings`` and
``nvidia-cuda-nvrtc-cu12``, in the test extra), down to the H100's machine code.  Those builds
must hold no flush-to-zero instruction: the kernels do no float32 arithmetic or conversion
(``ns_load``/``ns_store`` in ``numsim.cuh``), so float32 subnormals survive.  A GPU run
(``make gpu-check`` on a machine with CuPy and a GPU) proves the kernels themselves."""
from __future__ import annotations

import shutil
import subprocess
import sys
import types
from typing import Callable

import pytest

import mac_models  # noqa: F401  (registers mac_models/gpu)
from formats import gpu
from formats.gpu import device, host

SOURCES = gpu.sources()


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_every_source_folder_is_registered():
    names = {p.name for p in SOURCES}
    assert {"floats.cu", "ints.cu", "posits.cu", "codebooks.cu", "scaled.cu",
            "mac.cu"} <= names


@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_host_build_has_no_warnings(source):
    cxx = host.compiler()
    if cxx is None:
        pytest.skip("no C++ compiler (g++) on this machine")
    flags = [f for f in host.CXX_FLAGS if f not in ("-shared", "-fPIC")]
    _run([cxx, *flags, "-Wextra", "-Werror", "-fsyntax-only",
          *(f"-I{f}" for f in gpu.source_folders(SOURCES)), "-x", "c++", str(source)])


@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_nvcc_compiles_for_sm90(source, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc (the CUDA toolkit) is not installed")
    _run([nvcc, "--ptx", "-arch=sm_90", "-Werror", "all-warnings",
          *device.compile_options(SOURCES), str(source), "-o", str(tmp_path / "out.ptx")])
    assert (tmp_path / "out.ptx").stat().st_size > 0


def test_launcher_build_has_no_flush_to_zero(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc (the CUDA toolkit) is not installed")
    unit = tmp_path / "unit.cu"
    unit.write_text(device.unit_source(SOURCES))
    ptx = tmp_path / "unit.ptx"
    _run([nvcc, "--ptx", "-arch=sm_90", "-Werror", "all-warnings",
          *device.compile_options(SOURCES), "-ftz=true", str(unit), "-o", str(ptx)])
    _check_launcher_ptx(ptx.read_text())


def _check_launcher_ptx(text: str) -> None:
    """The launcher's PTX holds the kernels, and no flush-to-zero instruction."""
    assert ".entry float_quantize_ne_f32_f32" in text and ".entry mac_float_matmul" in text
    flushing = [line.strip() for line in text.splitlines() if ".ftz" in line]
    assert not flushing, flushing[:5]


def _nvrtc() -> types.ModuleType:
    """NVIDIA's Python bindings of NVRTC (``cuda-bindings``) with its library loaded.  The test
    extra installs both on Linux, so there a missing one fails the test; elsewhere it skips."""
    try:
        from cuda.bindings import nvrtc
        nvrtc.nvrtcVersion()
    except (ImportError, RuntimeError) as error:    # RuntimeError: the pathfinder found no libnvrtc
        if sys.platform == "linux":
            pytest.fail(f"NVRTC unusable although the test extra installs it on Linux: {error}")
        pytest.skip(f"no NVRTC on {sys.platform}: {error}")
    return nvrtc


def _nvrtc_output(prog, size_of: Callable, read: Callable) -> bytes:
    """A program's log, PTX or cubin through NVRTC's size/read pair of calls (into a
    bytearray: NVRTC writes into the buffer it is given)."""
    _, size = size_of(prog)
    buf = bytearray(size)
    read(prog, buf)
    return bytes(buf)


def test_nvrtc_compiles_the_launcher_unit():
    """The launcher's text and options through NVRTC, the compiler CuPy runs on the device,
    with what CuPy adds for an H100 (``-ftz=true``, ``-arch=sm_90``, so ptxas runs too, and
    ``--device-as-default-execution-space``) but not its include paths, so a source that
    needs a CUDA or C++ header fails here: no error, an empty log (no warning), a cubin, and
    the PTX checks of nvcc's build."""
    nvrtc = _nvrtc()
    options = [o.encode() for o in (*device.compile_options(SOURCES), "-ftz=true",
                                    "-arch=sm_90", "--device-as-default-execution-space")]
    _, prog = nvrtc.nvrtcCreateProgram(device.unit_source(SOURCES).encode(), b"unit.cu", 0,
                                       [], [])
    try:
        (status,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
        log = _nvrtc_output(prog, nvrtc.nvrtcGetProgramLogSize, nvrtc.nvrtcGetProgramLog)
        assert status == nvrtc.nvrtcResult.NVRTC_SUCCESS and not log.strip(b"\0 \n"), log
        ptx = _nvrtc_output(prog, nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
        cubin = _nvrtc_output(prog, nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    assert cubin.startswith(b"\x7fELF"), cubin[:8]
    _check_launcher_ptx(ptx.rstrip(b"\0").decode())
