# ptyscope developer entry points. `make demo` and `make test` each create or update the
# local virtual environment first (tools/setup_env.sh picks a CPU or CUDA build of torch).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ptyscope-installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-all lint typecheck docs clean

$(STAMP): pyproject.toml tools/setup_env.sh
	bash tools/setup_env.sh $(VENV) dev,fft
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ptyscope demo --output ptyscope-demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks validation docs/conf.py docs/figures docs/tutorials
	$(PY) -m ruff format --check src tests benchmarks validation docs/conf.py docs/figures docs/tutorials

typecheck: $(STAMP)
	$(PY) -m mypy src/ptyscope

# The documentation site (Sphinx + MyST); -W: any warning fails the build, and `make test`
# (CI) runs it. -E re-reads every page, so warnings of unchanged pages are reported too.
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -E -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

test: $(STAMP) lint typecheck docs
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) ptyscope-demo .pytest_cache .mypy_cache .ruff_cache docs/_build
