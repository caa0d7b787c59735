# Set-up and the jobs the README names. Every target installs what it needs itself.
#   make demo   - train a teacher on Fashion-MNIST, distil the student, print accuracies and speeds
#   make test   - the test suite (a few minutes on 2 CPU cores)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ARCH := $(shell uname -m)
# torch/torchvision that install and import together here; override with `make TORCH_SPEC=... install`.
ifeq ($(ARCH),aarch64)
TORCH_SPEC ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
endif
FMNIST_DIR := /usr/share/datasets/fashion-mnist
DEMO_DIR ?= runs/demo

.PHONY: install data test demo lint format clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev,all]'
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST from Debian's package when apt and root are there; otherwise point --data-root or $$CNN2GNN_DATA at it.
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then echo "Fashion-MNIST: $(FMNIST_DIR)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null && echo "Fashion-MNIST installed: $(FMNIST_DIR)"; \
	else echo "Fashion-MNIST not installed (needs root and apt); set CNN2GNN_DATA or pass --data-root"; fi

test: install data
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .

demo: install data
	bash scripts/demo.sh $(DEMO_DIR)

clean:
	rm -rf runs .pytest_cache
