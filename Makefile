# The two set-up commands (README): `make demo` and `make test` each create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned CPU torch: an unpinned torch pulls several GB of CUDA wheels.
TORCH := torch==2.13.0

.PHONY: demo test venv lint bench clean

$(BIN)/acar-deploy: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,openvino]' $(TORCH)
	@touch $@

venv: $(BIN)/acar-deploy

demo: venv
	$(BIN)/acar-deploy demo $(DEMO_ARGS)

test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check acar_deploy tests benchmarks

bench: venv
	$(BIN)/python benchmarks/run_r50.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
