# The two set-up commands (README): `make demo` and `make test` each create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned CPU torch: an unpinned torch pulls several GB of CUDA wheels.
TORCH := torch==2.13.0

.PHONY: demo test test-trt-api venv serve-runtime lint imports bench bench-gpu bench-triton clean

$(BIN)/acar-deploy: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,openvino]' $(TORCH)
	@touch $@

venv: $(BIN)/acar-deploy

demo: venv
	$(BIN)/acar-deploy demo $(DEMO_ARGS)

# The live Triton tests need the bundled server: `acar-deploy serve --install` pip-installs
# nvidia-pytriton==0.7.0 (--no-deps) and a numpy<2 stub environment into ~/.cache/acar-deploy/triton
# (or $$ACAR_DEPLOY_CACHE/triton), once; later runs find it there and return at once.
serve-runtime: venv
	$(BIN)/acar-deploy serve --install

test: venv serve-runtime
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The TensorRT API conformance suite alone (also part of `make test`); downloads the bindings once.
test-trt-api: venv
	$(BIN)/python -m pytest -q -m trt_api tests/tensorrt_api

lint: venv imports
	$(BIN)/ruff check acar_deploy tests benchmarks

# The layer contract in pyproject.toml ([tool.importlinter]): no import cycles, data flows one way.
imports: venv
	$(BIN)/lint-imports

bench: venv
	$(BIN)/python benchmarks/run_r50.py

# One NVIDIA GPU, < 10 min: pytest -m gpu, eager GPU baseline, TensorRT builds/bench where tensorrt imports.
bench-gpu: venv
	PY=$(BIN)/python benchmarks/gpu.sh

bench-triton: serve-runtime
	$(BIN)/python benchmarks/triton_load.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
