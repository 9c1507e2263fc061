# numsim developer commands. `make demo` and `make test` set up .venv on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

STAMP  := $(VENV)/.installed

.PHONY: venv demo test bench clean distclean

venv: $(STAMP)

# Re-installs only when pyproject.toml changes; an existing .venv is reused.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $@

demo: venv
	$(VENV)/bin/numsim demo

# pytest exits 5 when it collects no tests; that is not a failure here.
test: venv
	$(PY) -m pytest -q -n auto tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

bench: venv
	$(PY) benchmarks/bench_formats.py
	$(PY) benchmarks/bench_posits.py
	$(PY) benchmarks/bench_scaled.py
	$(PY) benchmarks/bench_mac.py
	$(PY) benchmarks/bench_replay.py

# Removes build outputs and caches; keeps .venv (see distclean).
clean:
	rm -rf build dist *.egg-info .pytest_cache numsim-report
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also removes the venv and numsim's Numba cache (~/.cache/numsim, see README).
distclean: clean
	rm -rf $(VENV) "$${XDG_CACHE_HOME:-$$HOME/.cache}/numsim"
