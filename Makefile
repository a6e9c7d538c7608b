# zephyr-tgi: `make demo` runs the quick start, `make test` runs everything CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint typecheck unit docker-setup emulator-image integration bench clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(INSTALLED)
	$(PY) examples/quickstart.py

lint: $(INSTALLED)
	$(VENV)/bin/ruff check zephyr_tgi tests examples benchmarks
	$(VENV)/bin/ruff format --check zephyr_tgi tests examples benchmarks

typecheck: $(INSTALLED)
	$(VENV)/bin/mypy

unit: $(INSTALLED)
	$(PY) -m pytest -m "not docker and not gpu" -q

docker-setup:
	bash scripts/ci/docker-setup.sh

emulator-image: docker-setup $(INSTALLED)
	bash docker/emulator/build.sh

integration: emulator-image
	ZEPHYR_TGI_REQUIRE_DOCKER=1 $(PY) -m pytest -m docker -q -rs

# Everything: lint, types, unit + HTTP tests, then the Docker integration tests against the emulator image.
test: lint typecheck docker-setup emulator-image
	ZEPHYR_TGI_REQUIRE_DOCKER=1 $(PY) -m pytest -q -rs

# Client overhead against bare huggingface_hub and raw httpx2 (writes benchmarks/results/ and docs/benchmarks.md).
bench: $(INSTALLED)
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist *.egg-info
