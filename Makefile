# Two commands a user needs: `make demo` and `make test`. `.venv/bin/python` is the interpreter.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint gpu-check demo demo-upp clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python >= 3.10 is required, found " + sys.version.split()[0]) if sys.version_info < (3, 10) else None'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[test,lint,bench,broden,export,cityscapes,voc,serve,browser,hf]'
	touch $(STAMP)

# The whole suite in two pytest-xdist workers of one thread each, handed tests one by one in the order
# tests/conftest.py sorts them (the longest files first; a file marked xdist_group whole, its module fixtures are
# costly). Then, side by side in one worker each: the end-to-end tests again as on the other kind of CPU (TEST.precision
# auto is bf16 where bfloat16 is native, fp32 elsewhere: MIT_SEMSEG_CPU_FEATURES pretends the features this CPU
# lacks or has), and the numeric comparisons with the kernels of AVX2-only and of baseline x86 CPUs, which torch
# picks on many users' machines (ATEN_CPU_CAPABILITY caps what this CPU offers). Last, the ten slowest tests.
OTHER_CPU = $(shell $(PY) -c 'from mit_semseg.precision import cpu_has_native_bf16 as n; print("avx2" if n() else "avx2,avx512f,avx512_bf16")')
PYTEST := $(PY) -m pytest -q
REPORTS := .pytest-reports
RERUNS := test-other-cpu test-avx2 test-baseline
.PHONY: $(RERUNS)

test: install
	rm -rf $(REPORTS)
	$(PYTEST) -n 2 --dist loadgroup --no-loadscope-reorder --junitxml=$(REPORTS)/main.xml
	$(MAKE) --no-print-directory -j3 --output-sync=target $(RERUNS)
	$(PY) tests/slowest.py $(REPORTS)/*.xml

test-other-cpu:
	MIT_SEMSEG_CPU_FEATURES=$(OTHER_CPU) $(PYTEST) -n 1 -m end_to_end --junitxml=$(REPORTS)/other-cpu.xml
test-avx2:
	ATEN_CPU_CAPABILITY=avx2 $(PYTEST) -n 1 -m numeric --junitxml=$(REPORTS)/avx2.xml
test-baseline:
	ATEN_CPU_CAPABILITY=default $(PYTEST) -n 1 -m numeric --junitxml=$(REPORTS)/baseline.xml

# ruff's checks and formatting, as configured in pyproject.toml.
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Every CUDA path on one GPU, in a few minutes (bench/gpu_check.py --device cpu runs them on the CPU).
gpu-check: install
	$(PY) bench/gpu_check.py

demo: install
	$(PY) -m mit_semseg.demo

demo-upp: install
	$(PY) -m mit_semseg.demo --upp

clean:
	rm -rf $(VENV) build *.egg-info $(REPORTS)
