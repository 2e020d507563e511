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

.PHONY: test bench vs-onednn vs-cudnn jit-cost gpu lint venv clean

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
# everything a device session runs, in one call (benchmarks/device_job.sh): the GPU tests,
# benchmarks/vs_cudnn.py, the sweeps into results/gpu/, compute-sanitizer where present.
# OUT is where the job writes (default results/gpu/device-job).
GPU_PYTHON ?= python3
gpu:
	GPU_PYTHON=$(GPU_PYTHON) bash benchmarks/device_job.sh

# convbench's GPU kernels vs cuDNN (cudnn, cudnn_best, torch_cudnn), interleaved on CUDA
# events, every math mode (QUICK=1: a subset, under 2 minutes).
vs-cudnn:
	PYTHONPATH=$(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH)) $(GPU_PYTHON) benchmarks/vs_cudnn.py \
		$(if $(QUICK),--quick,--out results/gpu/vs_cudnn)

lint: $(STAMP)
	$(BIN)/ruff check convbench kernels tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
