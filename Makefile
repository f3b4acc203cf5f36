# Developer commands. Every target installs first, so each works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; on a CUDA machine set TORCH="torch" (or a CUDA wheel) before `make install`.
TORCH ?= torch==2.13.0

# DeepSpeed for the ZeRO tests (tests/test_deepspeed.py), kept beside the venv rather than in it: the venv
# stays without DeepSpeed so that its "not installed" errors are tested too. DS_BUILD_OPS=0: nothing is
# compiled at install; on a CPU, DeepSpeed builds its one shared-memory op on first use (needs g++).
DEEPSPEED ?= deepspeed==0.19.8

.PHONY: install run test test-fast lint bench gpu-pack gpu-check clean

install: $(VENV)/.installed .deepspeed/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

.deepspeed/.installed: $(VENV)/.installed
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet --no-deps --target .deepspeed "$(DEEPSPEED)" hjson ninja py-cpuinfo msgpack einops
	touch $@

run: install
	$(PY) run.py recipes/quickstart.yaml --overwrite

# Ends with the 15 slowest tests: where the suite's time goes, in every CI log.
# Two workers, one thread each, a test file per worker (its session fixtures stay in one process), the files
# with the most slow tests dealt first (tests/conftest.py orders them; xdist's own reorder would deal them last).
XDIST := -n 2 --dist loadfile --no-loadscope-reorder
test: install
	$(PY) -m pytest $(XDIST) --durations=15

# The fast layer: contract and unit tests and short tiny-model runs.
test-fast: install
	$(PY) -m pytest $(XDIST) -m "not slow and not gpu" --durations=15

# ruff, then the import layers declared in pyproject.toml: no module imports one that imports it back.
lint: install
	$(VENV)/bin/ruff check recipekit tests run.py bench
	$(VENV)/bin/lint-imports

bench: install
	$(PY) bench/bench_data.py
	$(PY) bench/bench_speed.py

# Here: the wheels the GPU machine lacks, MiniLM in bf16 and the data, into gpu-pack/ (git-ignored; ~55 MiB).
gpu-pack: install
	$(PY) bench/gpu_pack.py --out gpu-pack

# There, the one command (it has no venv and no network: its own python3 plus the pack), under 8 minutes:
# tests marked gpu, MiniLM on full SST-2, the speed table. Writes to $$OUT, else runs/gpu-check/.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) bench/gpu_check.py --pack gpu-pack

clean:
	rm -rf runs .pytest_cache
