# Two commands do everything on a fresh machine (see README.md):
#   make score IMAGES="photo.jpg folder/" [ARGS="--model ... --json"]
#   make test
# Both create .venv and install llmiqa into it on first use.
# `make try IMAGES=photo.jpg` scores offline with tiny random models (scores mean nothing).

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

try: $(VENV)/.installed
	$(VENV)/bin/llmiqa tiny .tiny
	$(VENV)/bin/llmiqa score $(or $(IMAGES),../shared/data/images) --regions \
		--model .tiny/qwen2-vl --segmenter .tiny/sam2 $(shell $(VENV)/bin/python -c \
		"from llmiqa.tiny import PERMISSIVE_MASK_FLAGS; print(PERMISSIVE_MASK_FLAGS)")

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q

.PHONY: install score try test
