# Two commands do everything on a fresh machine (see README.md):
#   make score IMAGES="photo.jpg folder/" [ARGS="--model ... --json"]
#   make test
# Both create .venv and install llmiqa into it on first use. `make test-ray` adds the
# llmiqa[ray] extra and runs the tests that start a real two-node Ray cluster.

VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.14.1 torchvision==0.29.1

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(TORCH)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

$(VENV)/.ray: $(VENV)/.installed
	$(VENV)/bin/pip install -q -e '.[ray,test]'
	touch $@

install: $(VENV)/.installed

score: $(VENV)/.installed
	$(VENV)/bin/llmiqa score $(IMAGES) $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q -m "not ray"

test-ray: $(VENV)/.ray
	$(VENV)/bin/pytest -q -m ray tests/test_distributed.py

.PHONY: install score test test-ray
