# These commands do all the set-up on a fresh machine:
#   make bench     -- create .venv, install, run the default sweep, print the table
#   make test      -- create .venv, install with test extras, run the fast tier of the tests
#   make test-all  -- the same with every test (CI runs this one, then make docs)
#   make docs      -- create .venv if need be, install the docs extra, build, check, open
# Each creates its own virtual environment; nothing relies on what is installed by hand.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
SUITE  ?= resnet50
BATCH  ?= 1
OUT    ?= results/cpu/$(SUITE)-mb$(BATCH).jsonl

.PHONY: test test-all bench vs-onednn vs-cudnn jit-cost winograd-tiles winograd-points tune browser valgrind gpu gpu-wheels lint venv clean

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

# The fast tier deselects the tests marked slow (exhaustive grids, full-size fuzz, studies,
# runs of many processes) and keeps every kernel x direction x rank x backend against the
# float64 reference, every subcommand once and the bad-input refusals
# (tests/test_kernel_matrix.py and tests/test_cli_subcommands.py hold the first two).
FAST_TIER = -m "not slow"

# One Numba cache for the test processes and convbench check (tests/conftest.py says why).
NUMBA_CACHE ?= $(CURDIR)/.numba-cache
test test-all: export NUMBA_CACHE_DIR = $(NUMBA_CACHE)

test: $(STAMP) browser valgrind
	$(BIN)/python -m pytest -q $(FAST_TIER)
	$(BIN)/convbench check $(CHECK_SUBSET)
	$(BIN)/convbench check $(CHECK_SUBSET) --fill exact
	$(BIN)/ruff check convbench kernels tests benchmarks

test-all: $(STAMP) browser valgrind
	$(BIN)/python -m pytest -q
	$(BIN)/convbench check $(CHECK_SUBSET)
	$(BIN)/convbench check $(CHECK_SUBSET) --fill exact
	$(BIN)/ruff check convbench kernels tests benchmarks

bench: $(STAMP)
	mkdir -p $(dir $(OUT))
	$(BIN)/convbench run --suite $(SUITE) --batch $(BATCH) --backend cpu --algo all \
		--mode both --roof --out $(OUT) --table $(OUT:.jsonl=.md)

# Headless Chromium for the report's browser test. As root with apt-get (a fresh Debian
# machine, CI): Debian's package, no prompts. Otherwise, or if the install fails, this says
# so and the test skips, naming the command.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; \
	then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the report's browser test"; \
		{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium >/dev/null; } \
		|| echo "could not install chromium: the browser test will skip"; \
	else \
		echo "no chromium: the browser test will skip (as root: apt-get install chromium)"; \
	fi

# Valgrind (callgrind and its client-request header) for `convbench ab --count instructions`
# and its tests, installed as the browser is: Debian's package as root, else the tests skip.
valgrind:
	@if command -v valgrind >/dev/null 2>&1 && [ -f /usr/include/valgrind/callgrind.h ]; \
	then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's valgrind for convbench ab --count instructions"; \
		{ DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			valgrind >/dev/null; } \
		|| echo "could not install valgrind: the instruction-count tests will skip"; \
	else \
		echo "no valgrind: the instruction-count tests will skip (as root: apt-get install valgrind)"; \
	fi

# Plans for $(SUITE) at batch 1 and 8 within rel_l2 <= $(BUDGET) on this machine, their
# report, then the plan callables against oneDNN and best-of-convbench, interleaved
# (and FFT/Winograd through plan against their prepared calls).
BUDGET    ?= 1e-6
PLANS_DIR ?= results/cpu/plans
tune: $(STAMP)
	mkdir -p $(PLANS_DIR)
	# tune merges into a plan cache and appends records: start this committed run afresh
	rm -rf $(PLANS_DIR)/$(SUITE).json $(PLANS_DIR)/$(SUITE)-mb*.jsonl $(PLANS_DIR)/report
	for mb in 1 8; do \
		$(BIN)/convbench tune --suite $(SUITE) --batch $$mb --backend cpu --budget $(BUDGET) \
			--out $(PLANS_DIR)/$(SUITE).json --records $(PLANS_DIR)/$(SUITE)-mb$$mb.jsonl \
			--no-progress || exit 1; done
	$(BIN)/convbench report $(PLANS_DIR)/$(SUITE)-mb1.jsonl $(PLANS_DIR)/$(SUITE)-mb8.jsonl \
		-o $(PLANS_DIR)/report --error-budget $(BUDGET) \
		--title "$(SUITE): tuned plans within rel_l2 <= $(BUDGET)"
	$(BIN)/python benchmarks/plans_vs_onednn.py --plans $(PLANS_DIR)/$(SUITE).json \
		--suite $(SUITE) --batch 1,8 --out $(PLANS_DIR)/plans_vs_onednn

# Kernels vs oneDNN, interleaved in one process (QUICK=1: a subset, under 2 minutes).
vs-onednn: $(STAMP)
	$(BIN)/python benchmarks/vs_onednn.py --direction fwd,bwd_d,bwd_w $(if $(QUICK),--quick,--out results/cpu/vs_onednn)

# The Winograd family (F(2x2), F(4x4), F(6x6), both F(6x6) point sets) against direct, im2col,
# FFT and oneDNN on VGG-16's and ResNet-50's 3x3 layers: time, error, the picture.
winograd-tiles: $(STAMP)
	$(BIN)/python benchmarks/winograd_tiles.py $(if $(QUICK),--quick,--out results/cpu/winograd_tiles)

# The search behind convbench's F(6x6,3x3) interpolation points.
winograd-points: $(STAMP)
	$(BIN)/python benchmarks/winograd_points.py --out results/accuracy/winograd_points

# Numba compile time on an empty cache against load time on a full one, per kernel.
jit-cost: $(STAMP)
	$(BIN)/python benchmarks/jit_cost.py --out results/cpu/jit_cost

# On a machine with a GPU whose Python already has CuPy, numba, scipy and pytest (the lent
# H100 image plus carried wheels; no venv, the image's CuPy is the one built for its CUDA):
# everything a device session runs, in one call (benchmarks/device_job.sh): the GPU tests,
# benchmarks/vs_cudnn.py, the sweeps into results/gpu/, compute-sanitizer where present.
# OUT is where it leaves device-job.tar.gz and its summaries (default results/gpu/device-job).
GPU_PYTHON ?= python3
gpu:
	GPU_PYTHON=$(GPU_PYTHON) bash benchmarks/device_job.sh

# The cuDNN frontend wheel the lent H100's image lacks (it has no internet), into .whl/,
# which git ignores and a device call carries; device_job.sh unpacks it there.
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--platform manylinux_2_28_x86_64 -d .whl nvidia-cudnn-frontend==1.16.0

# convbench's GPU kernels vs cuDNN (cudnn, cudnn_best, torch_cudnn), interleaved on CUDA
# events, every math mode (QUICK=1: a subset, under 2 minutes).
vs-cudnn:
	PYTHONPATH=$(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH)) $(GPU_PYTHON) benchmarks/vs_cudnn.py \
		$(if $(QUICK),--quick,--out results/gpu/vs_cudnn)

lint: $(STAMP)
	$(BIN)/ruff check convbench kernels tests benchmarks

# The documentation. The docs extra gets a stamp of its own, so that make test never installs
# Sphinx and make docs never reinstalls the test extras; a make test after make docs (or the
# other way round) adds its extra to the same .venv.
DOCS_STAMP = $(VENV)/.docs-installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DOCS_OUT  ?= docs/_build/html

.PHONY: docs docs-venv

docs-venv: $(DOCS_STAMP)

$(DOCS_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	rm -f $(VENV)/.docs-installed-*
	touch $@

# Warnings are errors (-W; --keep-going lists them all first, -n: every cross-reference
# resolves), then the built pages' own links, the results extension's tests, and the front
# page, a results page and an algorithm page in headless Chromium. The extension's tests run
# without the tests' conftest, which needs the test extras that make docs does not install.
docs: $(DOCS_STAMP) browser
	rm -rf $(DOCS_OUT) docs/_build/doctrees
	$(BIN)/python -m sphinx -W --keep-going -n -q -b html -d docs/_build/doctrees docs $(DOCS_OUT)
	$(BIN)/python docs/check_links.py $(DOCS_OUT)
	$(BIN)/python -m pytest -q --noconftest -p no:cacheprovider tests/test_docs_results.py
	$(BIN)/python docs/open_in_browser.py $(DOCS_OUT)

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks docs/_build .numba-cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
