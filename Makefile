# The two set-up commands of the README: `make demo` (the quickstart study on the embedded data) and `make test`.
# Each creates .venv and installs what it needs when missing.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1

.PHONY: demo test test-all test-kernels venv clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/symscale study examples/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# The model and data tests again under a second kernel configuration (CI runs it after `make test`): AVX2
# instead of AVX-512 kernels in torch (ATen, MKL, oneDNN), numpy and OpenBLAS, and two threads. A test that
# only passes bit for bit on one CPU fails here. For x86-64 with AVX2 (without AVX-512: the usual kernels).
KERNEL_ENV := ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
	OPENBLAS_CORETYPE=Haswell NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR" OMP_NUM_THREADS=2

test-kernels: $(STAMP)
	$(KERNEL_ENV) $(BIN)/python -m pytest -m "not slow" -q -p no:cacheprovider tests/models tests/data

clean:
	rm -rf runs build *.egg-info
