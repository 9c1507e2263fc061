# numsim developer commands. `make demo` and `make test` set up .venv on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

STAMP  := $(VENV)/.installed

.PHONY: venv demo test bench gpu-check clean distclean

venv: $(STAMP)

# Re-installs only when pyproject.toml changes; an existing .venv is reused.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $@

demo: venv
	$(VENV)/bin/numsim demo

# Two passes on both cores: the command-line tests start numsim in subprocesses, which load
# the Numba kernels the first pass compiled instead of compiling them again (a cold run saves
# minutes).  pytest exits 5 when it collects no tests; that is not a failure here.
SUBPROCESS_TESTS := tests/test_cli.py
test: venv
	@rc=0; \
	$(PY) -m pytest -q -n auto tests --ignore=$(SUBPROCESS_TESTS); r=$$?; \
	if [ $$r -ne 0 ] && [ $$r -ne 5 ]; then rc=$$r; fi; \
	$(PY) -m pytest -q -n auto $(SUBPROCESS_TESTS); r=$$?; \
	if [ $$r -ne 0 ] && [ $$r -ne 5 ]; then rc=$$r; fi; \
	exit $$rc

bench: venv
	$(PY) benchmarks/bench_formats.py
	$(PY) benchmarks/bench_posits.py
	$(PY) benchmarks/bench_scaled.py
	$(PY) benchmarks/bench_mac.py
	$(PY) benchmarks/bench_replay.py
	$(PY) benchmarks/bench_compile.py
	$(PY) benchmarks/bench_gpu.py

# The GPU engine on a machine with CuPy and an NVIDIA GPU: the GPU sources through nvcc and
# NVRTC, the device variant of every test that takes the gpu_engine fixture (each compares the
# GPU with the CPU engine bit for bit; the host variants are CI's) and the GPU benchmark.  Fails,
# rather than skipping, where CuPy sees no GPU.  `make gpu-check PY=python3` runs it with another
# interpreter that has numsim's dependencies, CuPy, pytest and pytest-xdist (numsim itself need
# not be installed: the checkout goes on PYTHONPATH).  Four workers: each holds a CUDA context.
GPU_ENGINE_TESTS = $(shell grep -l gpu_engine tests/test_*.py)
gpu-check: export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
gpu-check: $(if $(filter $(VENV)/bin/python,$(PY)),venv)
	$(PY) -c "import sys; from formats import gpu; sys.exit(gpu.cupy_module() is None and 'gpu-check: no CuPy with a GPU here')"
	$(PY) -m pytest -q -rs -n 4 tests/test_gpu_sources.py
	$(PY) -m pytest -q -rs -n 4 -k device $(GPU_ENGINE_TESTS)
	$(PY) benchmarks/bench_gpu.py

# Removes build outputs and caches; keeps .venv (see distclean).
clean:
	rm -rf build dist *.egg-info .pytest_cache numsim-report
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also removes the venv and numsim's Numba cache (~/.cache/numsim, see README).
distclean: clean
	rm -rf $(VENV) "$${XDG_CACHE_HOME:-$$HOME/.cache}/numsim"
