# zephyr-tgi: `make demo` runs the quick start, `make test` runs everything CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint typecheck unit tools-setup docker-setup emulator-image integration bench guidellm-setup soak docs docs-blocks notebook kubernetes clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade 'pip>=25.1'
	$(PY) -m pip install --quiet -e '.[docker,tokenizer,testing,langchain,bench,otel]' --group dev
	touch $@

demo: $(INSTALLED)
	$(PY) examples/quickstart.py

lint: $(INSTALLED)
	$(VENV)/bin/ruff check zephyr_tgi tests examples benchmarks scripts
	$(VENV)/bin/ruff format --check zephyr_tgi tests examples benchmarks scripts

typecheck: $(INSTALLED)
	$(VENV)/bin/mypy

unit: $(INSTALLED)
	$(PY) -m pytest -m "not docker and not gpu" -q

tools-setup:
	bash scripts/ci/tools-setup.sh

docker-setup:
	bash scripts/ci/docker-setup.sh

emulator-image: docker-setup $(INSTALLED)
	bash docker/emulator/build.sh

integration: emulator-image
	ZEPHYR_TGI_REQUIRE_DOCKER=1 $(PY) -m pytest -m docker -q -rs

# Everything: lint, types, the unit and HTTP tests, then (named one by one in the log) the Docker integration
# tests against the emulator image; the GPU tests run only where a GPU is, and say why they skip elsewhere.
test: lint typecheck tools-setup docker-setup emulator-image
	$(PY) -m pytest -q -rs -m "not docker"
	ZEPHYR_TGI_REQUIRE_DOCKER=1 $(PY) -m pytest -v -rs -m docker

# Client overhead against bare huggingface_hub and raw httpx2 (writes benchmarks/results/ and docs/benchmarks.md),
# then what the load generator of `zephyr-tgi bench` can generate, beside GuideLLM when `make guidellm-setup` ran.
bench: $(INSTALLED)
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.generator

# GuideLLM in a venv of its own (it brings torch and transformers, about 6 GB), for the comparison in `make bench`.
guidellm-setup:
	$(PYTHON) -m venv .venv-guidellm
	.venv-guidellm/bin/python -m pip install --quiet guidellm

# The full fault-injection soak: 1,000 requests per scenario, in process and in the emulator container.
soak: emulator-image
	$(PY) -m tests.reliability.soak --requests 1000 --container \
	    --json tests/reliability/results/soak.json --markdown tests/reliability/results/soak.md

docs: $(INSTALLED)
	$(VENV)/bin/mkdocs build --strict

# The notebook, run against the emulator and saved with its outputs and plots (tests/examples checks it is current).
notebook: $(INSTALLED)
	$(PY) scripts/notebook.py

# Every Python block of docs/ and the README, run against an emulator (tests/docs/test_docs_blocks.py runs the same).
docs-blocks: $(INSTALLED)
	$(PY) -m pytest -q -p no:recording -p tests.docs.markdown_env --markdown-docs --markdown-docs-syntax=superfences \
	    README.md docs

# The Kubernetes manifests under deploy/kubernetes/, one per engine and GPTQ branch, rendered from the launcher's
# own flags (tests/deploy/test_rendered_files.py checks the committed ones are current).
kubernetes: $(INSTALLED)
	$(PY) scripts/render_kubernetes.py

clean:
	rm -rf $(VENV) .venv-guidellm .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist *.egg-info
