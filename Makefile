# Two commands do all the set-up on a fresh machine:
#   make bench   -- create .venv, install, run the default sweep, print the table
#   make test    -- create .venv, install with test extras, run the tests
# Both create their own virtual environment; nothing relies on what is installed by hand.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SUITE  ?= resnet50
BATCH  ?= 1
OUT    ?= results/cpu/$(SUITE)-mb$(BATCH).jsonl

.PHONY: test bench vs-onednn jit-cost gpu lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# The accuracy check on a fast subset: every convbench kernel on LeNet-5 and AlexNet,
# float32 and float64, random and exact fills, against results/accuracy/.
CHECK_SUBSET = --suite lenet5,alexnet --algo direct,im2col,fft,winograd --no-progress

test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/convbench check $(CHECK_SUBSET)
	$(BIN)/convbench check $(CHECK_SUBSET) --fill exact
	$(BIN)/ruff check convbench kernels tests benchmarks

bench: $(STAMP)
	mkdir -p $(dir $(OUT))
	$(BIN)/convbench run --suite $(SUITE) --batch $(BATCH) --backend cpu --algo all \
		--mode both --roof --out $(OUT) --table $(OUT:.jsonl=.md)

# Kernels vs oneDNN, interleaved in one process (QUICK=1: a subset, under 2 minutes).
vs-onednn: $(STAMP)
	$(BIN)/python benchmarks/vs_onednn.py $(if $(QUICK),--quick,--out results/cpu/vs_onednn)

# Numba compile time on an empty cache against load time on a full one, per kernel.
jit-cost: $(STAMP)
	$(BIN)/python benchmarks/jit_cost.py --out results/cpu/jit_cost

# On a machine with a GPU whose Python already has CuPy, numba, scipy and pytest (the lent
# H100 image plus carried wheels; no venv, the image's CuPy is the one built for its CUDA):
# the GPU tests, then ResNet-50 at batch 1 and 32 in fp32 and fp16, every kernel and cuDNN plan.
GPU_PYTHON ?= python3
GPU_RUN = PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -m convbench run --backend gpu --suite resnet50 \
	--algo all --mode both --no-progress
gpu:
	mkdir -p results/gpu
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -m pytest -q -p no:cacheprovider \
		tests/test_gpu_device.py tests/test_gpu_sources.py
	for dt in f32 f16; do for mb in 1 32; do \
		$(GPU_RUN) --batch $$mb --dtype $$dt --out results/gpu/resnet50-mb$$mb-$$dt.jsonl \
			--table results/gpu/resnet50-mb$$mb-$$dt.md || exit 1; done; done

lint: $(STAMP)
	$(BIN)/ruff check convbench kernels tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
