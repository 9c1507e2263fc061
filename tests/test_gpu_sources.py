"""The CUDA sources compile cleanly: as C++ with every warning an error (the host build the
other ``test_gpu_host_*`` tests run), and with NVIDIA's compiler to PTX for the H100
(``sm_90``) with the options the CuPy launcher gives NVRTC, where ``nvcc`` is installed.
A GPU run (``make test`` on a machine with CuPy and a GPU) proves the kernels themselves."""
from __future__ import annotations

import shutil
import subprocess

import pytest

import mac_models  # noqa: F401  (registers mac_models/gpu)
from formats import gpu
from formats.gpu import device, host

SOURCES = gpu.sources()
FOLDERS = sorted({str(p.parent) for p in SOURCES})


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
          *(f"-I{f}" for f in FOLDERS), "-x", "c++", str(source)])


@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_nvcc_compiles_for_sm90(source, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc (the CUDA toolkit) is not installed")
    _run([nvcc, "--ptx", "-arch=sm_90", "-Werror", "all-warnings", *device.NVRTC_OPTIONS,
          *(f"-I{f}" for f in FOLDERS), str(source), "-o", str(tmp_path / "out.ptx")])
    assert (tmp_path / "out.ptx").stat().st_size > 0
